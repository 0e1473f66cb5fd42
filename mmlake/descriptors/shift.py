"""Role compositions and the preprint's ordered-vs-disordered shift, with bootstrap intervals.

A role's composition (per session x method x modality) is the chip-weighted mean of the summed-
spectrum compositions of its regions, ``sum(n * at%) / sum(n)``, with ``n`` the region's chips for
the whole figure and its core chips for the core figure (regions without a core drop out of the
core figure). The shift of element X is ``100 * (disordered - ordered) / ordered``; the renormalised
shift compares La + Fe + O = 100 stoichiometries (see :mod:`mmlake.roles`).

Intervals: each bootstrap replicate combines the same replicate index of every region (chips are
resampled within each region independently), so a replicate of the shift is the shift of one
resampled data set; ``significant`` = the interval at ``level`` excludes 0. Rows exist only where a
segmentation has both roles (never zero-filled).
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np
import polars as pl

from mmlake.descriptors.bootstrap import DEFAULT_LEVEL, interval
from mmlake.roles import FILM_DISORDERED, FILM_ORDERED, SHIFT_SCHEMA

BASES = ("whole", "core")

SHIFT_COLUMNS: dict = {
    **SHIFT_SCHEMA,
    "ci_low": pl.Float64, "ci_high": pl.Float64, "significant": pl.Boolean,
    "renorm_ci_low": pl.Float64, "renorm_ci_high": pl.Float64,
    "ordered_at_pct_core": pl.Float64, "disordered_at_pct_core": pl.Float64, "percent_diff_core": pl.Float64,
    "ci_low_core": pl.Float64, "ci_high_core": pl.Float64, "significant_core": pl.Boolean,
    "ordered_renorm_pct_core": pl.Float64, "disordered_renorm_pct_core": pl.Float64,
    "percent_diff_renorm_core": pl.Float64, "renorm_ci_low_core": pl.Float64, "renorm_ci_high_core": pl.Float64,
    "ordered_n_core_chips": pl.Int32, "disordered_n_core_chips": pl.Int32, "ci_level": pl.Float64,
    "pair_percent_diff": pl.Float64, "pair_ci_low": pl.Float64, "pair_ci_high": pl.Float64,
    "pair_significant": pl.Boolean, "pair_n_acquisitions": pl.Int32, "pair_basis": pl.Utf8,
}


def role_compositions(regions: Sequence[dict], comps: Mapping[tuple, Mapping[str, object]], basis: str):
    """``{(method, modality, role): dict(at, reps, n_chips, n_regions)}`` of every role (``comps``:
    ``{(method, modality, region): {"whole": Composition, "core": Composition | None}}``)."""
    if basis not in BASES:
        raise ValueError(f"basis must be one of {BASES}, got {basis!r}")
    acc: dict[tuple, list] = {}
    for r in regions:
        c = comps.get((r["method"], r["modality"], r["region"]), {}).get(basis)
        if c is None or r.get("role") is None or not np.isfinite(c.at).any():
            continue
        n = r["n_chips"] if basis == "whole" else r["n_core_chips"]
        if not n:
            continue
        acc.setdefault((r["method"], r["modality"], r["role"]), []).append((n, c))
    out = {}
    for key, items in acc.items():
        w = np.array([n for n, _ in items], dtype=np.float64)
        at = np.stack([c.at for _, c in items])
        ok = np.isfinite(at)
        wsum = (w[:, None] * ok).sum(axis=0)
        point = np.where(wsum > 0, np.nansum(w[:, None] * at, axis=0) / np.maximum(wsum, 1e-300), np.nan)
        reps = None
        if all(c.replicates is not None for _, c in items):
            R = np.stack([c.replicates for _, c in items])  # (k, B, E)
            reps = np.nansum(w[:, None, None] * R, axis=0) / np.maximum(wsum[None, :], 1e-300)
        out[key] = {"at": point, "reps": reps, "n_chips": int(w.sum()), "n_regions": len(items)}
    return out


def _renorm(x: np.ndarray, idx: list[int]) -> np.ndarray:
    sub = x[..., idx]
    return 100.0 * sub / sub.sum(axis=-1, keepdims=True)


def _pdiff(o, d):
    with np.errstate(all="ignore"):
        return np.where(np.abs(o) > 0, 100.0 * (d - o) / o, np.nan)


def shift_table(
    session_id: str,
    regions: Sequence[dict],
    comps: Mapping[tuple, Mapping[str, object]],
    elements: Sequence[str],
    shift_elements: Sequence[str] = ("La", "Fe", "O"),
    level: float = DEFAULT_LEVEL,
) -> tuple[pl.DataFrame, dict]:
    """The ``ordered_disordered_shift`` rows of one session and the replicates of each shift
    ``{(method, modality, element, basis): (point, replicates | None)}`` (for pooling)."""
    names = [*dict.fromkeys(elements), "Extraneous"]
    sel = [e for e in shift_elements if e in names]
    idx = [names.index(e) for e in sel]
    roles = {b: role_compositions(regions, comps, b) for b in BASES}
    rows, reps_out = [], {}
    segs = sorted({(m, d) for (m, d, _) in roles["whole"]})
    for m, d in segs:
        o, q = roles["whole"].get((m, d, FILM_ORDERED)), roles["whole"].get((m, d, FILM_DISORDERED))
        if o is None or q is None:
            continue
        oc, qc = roles["core"].get((m, d, FILM_ORDERED)), roles["core"].get((m, d, FILM_DISORDERED))
        fig = {}
        for b, (ro, rd) in {"whole": (o, q), "core": (oc, qc)}.items():
            if ro is None or rd is None:
                continue
            pd_ = _pdiff(ro["at"][idx], rd["at"][idx])
            pr = _pdiff(_renorm(ro["at"], idx), _renorm(rd["at"], idx))
            lo = hi = rlo = rhi = np.full(len(idx), np.nan)
            rep = None
            if ro["reps"] is not None and rd["reps"] is not None:
                rep = _pdiff(ro["reps"][:, idx], rd["reps"][:, idx])
                lo, hi = interval(pd_, rep, level)
                rlo, rhi = interval(pr, _pdiff(_renorm(ro["reps"], idx), _renorm(rd["reps"], idx)), level)
            fig[b] = dict(o=ro, d=rd, pd=pd_, pr=pr, lo=lo, hi=hi, rlo=rlo, rhi=rhi, rep=rep)
        w = fig["whole"]
        for j, el in enumerate(sel):
            row = {
                "session_id": session_id, "method": m, "modality": d, "element": el,
                "ordered_at_pct": w["o"]["at"][idx[j]], "disordered_at_pct": w["d"]["at"][idx[j]],
                "percent_diff": w["pd"][j], "ordered_renorm_pct": _renorm(w["o"]["at"], idx)[j],
                "disordered_renorm_pct": _renorm(w["d"]["at"], idx)[j], "percent_diff_renorm": w["pr"][j],
                "ordered_n_chips": w["o"]["n_chips"], "disordered_n_chips": w["d"]["n_chips"],
                "ordered_n_regions": w["o"]["n_regions"], "disordered_n_regions": w["d"]["n_regions"],
                "ci_low": w["lo"][j], "ci_high": w["hi"][j], "significant": _sig(w["lo"][j], w["hi"][j]),
                "renorm_ci_low": w["rlo"][j], "renorm_ci_high": w["rhi"][j], "ci_level": level,
            }
            reps_out[(m, d, el, "whole")] = (w["pd"][j], None if w["rep"] is None else w["rep"][:, j])
            c = fig.get("core")
            if c is not None:
                row.update({
                    "ordered_at_pct_core": c["o"]["at"][idx[j]], "disordered_at_pct_core": c["d"]["at"][idx[j]],
                    "percent_diff_core": c["pd"][j], "ci_low_core": c["lo"][j], "ci_high_core": c["hi"][j],
                    "significant_core": _sig(c["lo"][j], c["hi"][j]), "percent_diff_renorm_core": c["pr"][j],
                    "ordered_renorm_pct_core": _renorm(c["o"]["at"], idx)[j],
                    "disordered_renorm_pct_core": _renorm(c["d"]["at"], idx)[j],
                    "renorm_ci_low_core": c["rlo"][j], "renorm_ci_high_core": c["rhi"][j],
                    "ordered_n_core_chips": c["o"]["n_chips"], "disordered_n_core_chips": c["d"]["n_chips"]})
                reps_out[(m, d, el, "core")] = (c["pd"][j], None if c["rep"] is None else c["rep"][:, j])
            rows.append({k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in
                         ((k, float(v) if isinstance(v, (np.floating,)) else v) for k, v in row.items())})
    frame = pl.DataFrame(rows, schema=SHIFT_COLUMNS) if rows else pl.DataFrame(schema=SHIFT_COLUMNS)
    return frame, {"roles": roles, "shift": reps_out}


def _sig(lo, hi):
    if lo is None or hi is None or not (np.isfinite(lo) and np.isfinite(hi)):
        return None
    return bool(lo > 0 or hi < 0)
