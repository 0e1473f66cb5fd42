"""One sample x dose, several acquisitions: descriptors pooled over them.

A partition (sample x dose) may hold several sessions (maps acquired on the same specimen). For each
method x modality, the pooled figure of a role's composition, a role's d-spacing and the
ordered-vs-disordered shift is the mean over the acquisitions that have it, and its interval comes
from a two-stage bootstrap (acquisitions with replacement, then chips within each:
:func:`mmlake.descriptors.bootstrap.pool_replicates`). With one acquisition the pooled figure is the
session's own role figure with its chip interval. The figures are written into every session's rows
(``pair_*`` columns, ``pair_n_acquisitions``; ``pair_basis`` says whether the core or the whole
figures were pooled: core wherever every acquisition has one).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
import polars as pl

from mmlake.descriptors.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, pool_replicates, rng_for


def _role_spacing(tables) -> dict:
    """{(method, modality, role): (point, replicates)} of one session: chip-weighted mean of the role's
    regions with a d-spacing (regions without a tile bootstrap contribute their point only)."""
    sp = tables.replicates.get("spacing", {})
    acc: dict[tuple, list] = {}
    for r in tables.regions.iter_rows(named=True):
        s = sp.get((r["method"], r["modality"], r["region"]))
        if s is None or s.d_nm is None or r["role"] is None:
            continue
        acc.setdefault((r["method"], r["modality"], r["role"]), []).append((r["n_chips"], s))
    out = {}
    for key, items in acc.items():
        w = np.array([n for n, _ in items], dtype=np.float64)
        point = float((w * np.array([s.d_nm for _, s in items])).sum() / w.sum())
        B = max((len(s.replicates) for _, s in items if s.replicates is not None), default=0)
        reps = None
        if B:
            R = np.stack([s.replicates if s.replicates is not None else np.full(B, s.d_nm) for _, s in items])
            reps = (w[:, None] * R).sum(axis=0) / w.sum()
        out[key] = (point, reps)
    return out


def fill_pair_columns(tables: Sequence, *, seed: int = 0, n_boot: int = DEFAULT_N_BOOT,
                      level: float = DEFAULT_LEVEL) -> list:
    """Pool the sessions of ONE sample x dose (``tables``: their :class:`DescriptorTables`) and write
    the pooled figures into each session's frames, in place; returns ``tables``."""
    tables = list(tables)
    if not tables:
        return tables
    names = tables[0].replicates.get("elements", [])
    n_acq = len(tables)

    def basis_for(getter, key):
        have = [getter(t, "core", key) for t in tables]
        have_w = [getter(t, "whole", key) for t in tables]
        present = [i for i, w in enumerate(have_w) if w is not None]
        return "core" if present and all(have[i] is not None for i in present) else "whole"

    # role compositions
    def role_get(t, basis, key):
        return t.replicates.get("roles", {}).get(basis, {}).get(key)

    role_keys = sorted({k for t in tables for k in t.replicates.get("roles", {}).get("whole", {})})
    comp_pair = {}
    for key in role_keys:
        b = basis_for(role_get, key)
        got = [role_get(t, b, key) for t in tables]
        got = [g for g in got if g is not None]
        rng = rng_for(seed, "pair-composition", *map(str, key))
        for j, el in enumerate(names):
            pts = [g["at"][j] for g in got]
            reps = [g["reps"][:, j] if g["reps"] is not None else np.array([g["at"][j]]) for g in got]
            comp_pair[(*key, el)] = (*pool_replicates(pts, reps, rng, n_boot, level), len(got), b)
    # role d-spacings
    spacings = [_role_spacing(t) for t in tables]
    d_pair = {}
    for key in sorted({k for s in spacings for k in s}):
        got = [s[key] for s in spacings if key in s]
        rng = rng_for(seed, "pair-spacing", *map(str, key))
        d_pair[key] = (*pool_replicates([g[0] for g in got], [g[1] if g[1] is not None else np.array([g[0]])
                                                                for g in got], rng, n_boot, level), len(got))

    # shifts
    def shift_get(t, basis, key):
        return t.replicates.get("shift", {}).get((*key, basis))

    shift_keys = sorted({k[:3] for t in tables for k in t.replicates.get("shift", {})})
    s_pair = {}
    for key in shift_keys:
        b = basis_for(shift_get, key)
        got = [shift_get(t, b, key) for t in tables]
        got = [g for g in got if g is not None and g[0] is not None and np.isfinite(g[0])]
        if not got:
            continue
        rng = rng_for(seed, "pair-shift", *map(str, key))
        est, lo, hi = pool_replicates([g[0] for g in got], [g[1] if g[1] is not None else np.array([g[0]])
                                                            for g in got], rng, n_boot, level)
        s_pair[key] = (est, lo, hi, len(got), b)

    def clean(v):
        return None if v is None or not np.isfinite(v) else float(v)

    for t in tables:
        role = {(r["method"], r["modality"], r["region"]): r["role"] for r in t.regions.iter_rows(named=True)}
        if len(t.region_composition):
            c = t.region_composition.to_dicts()
            for r in c:
                p = comp_pair.get((r["method"], r["modality"], role.get((r["method"], r["modality"], r["region"])),
                                   r["element"]))
                r.update({"pair_atomic_percent": clean(p[0]), "pair_ci_low": clean(p[1]), "pair_ci_high": clean(p[2]),
                          "pair_n_acquisitions": p[3], "pair_basis": p[4]} if p else {})
            t.region_composition = pl.DataFrame(c, schema=t.region_composition.schema)
        if len(t.regions):
            rr = t.regions.to_dicts()
            for r in rr:
                p = d_pair.get((r["method"], r["modality"], r["role"]))
                r.update({"pair_d_spacing_nm": clean(p[0]), "pair_d_ci_low": clean(p[1]), "pair_d_ci_high": clean(p[2]),
                          "pair_n_acquisitions": p[3]} if p else {"pair_n_acquisitions": None})
            t.regions = pl.DataFrame(rr, schema=t.regions.schema)
        if len(t.composition_shift):
            ss = t.composition_shift.to_dicts()
            for r in ss:
                p = s_pair.get((r["method"], r["modality"], r["element"]))
                if p:
                    lo, hi = clean(p[1]), clean(p[2])
                    r.update({"pair_percent_diff": clean(p[0]), "pair_ci_low": lo, "pair_ci_high": hi,
                              "pair_significant": None if lo is None or hi is None else bool(lo > 0 or hi < 0),
                              "pair_n_acquisitions": p[3], "pair_basis": p[4]})
            t.composition_shift = pl.DataFrame(ss, schema=t.composition_shift.schema)
        t.params["pair"] = {"n_acquisitions": n_acq, "bootstrap": "acquisitions, then chips"}
    return tables


pool_acquisitions = fill_pair_columns
