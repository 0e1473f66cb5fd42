"""Descriptors of every region of every segmentation of one session: the call a Dagster asset makes.

:func:`describe_session` fits the session's chips once, builds each region's whole and core chip
sets, quantifies all of them in one exspy call, bootstraps them over chips, measures each region's
lattice (with its tile bootstrap), assigns roles (:mod:`mmlake.roles`) and computes the
ordered-vs-disordered shift with intervals (:mod:`mmlake.descriptors.shift`).
:func:`region_descriptors` does the same for one segmentation, without roles by rule.

Labels < 0 mean "unassigned" and form no region.
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from mmlake.chips import ChipGrid
from mmlake.descriptors.bootstrap import DEFAULT_LEVEL, DEFAULT_N_BOOT, rng_for
from mmlake.descriptors.composition import EXTRANEOUS, QUANTIFY_KWARGS, chip_set_compositions
from mmlake.descriptors.frames import COMPOSITION_SCHEMA, REGION_SCHEMA, DescriptorTables, RegionFrames
from mmlake.descriptors.geometry import core_mask
from mmlake.descriptors.spacing import CRYSTALLINITY_WINDOW_PX, SquareRule, chip_crystallinity, region_spacing

METHOD_VERSION = "2"
FIT_KWARGS = ("kfactor_table", "include_extraneous", "min_energy_kev", "families")


def _check_inputs(labels, grid, haadf, eds_sums, pixel_size_nm):
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != grid.n_chips:
        raise ValueError(f"labels must be 1-D with one label per chip ({grid.n_chips}), got shape {lab.shape}")
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if haadf is not None:
        h = np.asarray(haadf)
        need = (grid.origin_y + grid.n_rows * grid.chip_px, grid.origin_x + grid.n_cols * grid.chip_px)
        if h.ndim != 2 or h.shape[0] < need[0] or h.shape[1] < need[1]:
            raise ValueError(f"haadf must be a 2-D image of at least {need[0]}x{need[1]} px for this grid, "
                             f"got shape {h.shape}")
    if eds_sums is not None:
        e = np.asarray(eds_sums)
        if e.ndim != 2 or e.shape[0] != grid.n_chips:
            raise ValueError(f"eds_sums must be (n_chips={grid.n_chips}, n_channels), got shape {e.shape}")
    if not (isinstance(pixel_size_nm, (int, float, np.floating)) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
    return lab.astype(np.int64)


def _validate_common(grid, haadf, eds_sums, energy, square, chip_cryst, quant_kwargs):
    if eds_sums is not None and energy is None:
        raise ValueError("energy: give (offset_kev, scale_kev) of the EDS channels with eds_sums")
    if not isinstance(square, SquareRule):
        raise ValueError(f"square must be a SquareRule, got {square!r}")
    bad = set(quant_kwargs or {}) - set(FIT_KWARGS) - set(QUANTIFY_KWARGS)
    if bad:
        raise ValueError(f"quant_kwargs: {sorted(bad)} not supported for region descriptors (they use the "
                         f"shared line fit); allowed: {sorted(FIT_KWARGS + QUANTIFY_KWARGS)}")
    if haadf is not None and chip_cryst is None:
        chip_cryst = chip_crystallinity(grid, haadf)
    if chip_cryst is not None and np.asarray(chip_cryst).shape != (grid.n_chips,):
        raise ValueError(f"chip_cryst must be (n_chips={grid.n_chips},), got {np.asarray(chip_cryst).shape}")
    return chip_cryst


def _nan_none(v):
    if v is None:
        return None
    v = float(v)
    return v if np.isfinite(v) else None


def _describe_all(segs, grid, haadf, eds_sums, energy, beam_kv, elements, kfactors, pixel_size_nm, class_names,
                  session_id, chip_cryst, square, lattice_kwargs, quant_kwargs, energy_resolution_mnka_ev,
                  core_erosion, n_boot, level, seed):
    """Region rows, composition rows and the per-region compositions/spacings of every segmentation."""
    chip_area = (grid.chip_px * float(pixel_size_nm)) ** 2
    rows, sets, spacings = [], [], {}
    for (m, mod), lab in sorted(segs.items()):
        names = (class_names or {}).get((m, mod), (class_names or {}).get(m))
        lab2d = grid.chip_map(lab)
        for reg in sorted(int(v) for v in np.unique(lab) if v >= 0):
            sel = lab == reg
            core = core_mask(lab2d, reg, core_erosion).ravel()
            n, n_core = int(sel.sum()), int(core.sum())
            rng = rng_for(seed, session_id, m, mod, str(reg), "d")
            sp = region_spacing(grid.chip_map(sel), n, grid, haadf, pixel_size_nm, square, lattice_kwargs,
                                rng=rng, n_boot=n_boot, level=level)
            spacings[(m, mod, reg)] = sp
            role = str(names[reg]) if names is not None and 0 <= reg < len(names) else None
            rows.append({
                "session_id": session_id, "method": m, "modality": mod, "region": reg,
                "role": role, "role_source": "class_names" if role is not None else None, "role_reason": None,
                "n_chips": n, "area_nm2": n * chip_area, "eds_counts": None,
                **sp.columns(),
                "crystallinity": float(np.mean(np.asarray(chip_cryst)[sel])) if chip_cryst is not None else None,
                "n_core_chips": n_core, "boundary_share": 1.0 - n_core / n, "core_eds_counts": None,
            })
            sets.append(((m, mod, reg), np.flatnonzero(sel), np.flatnonzero(core)))
    comps: dict[tuple, dict] = {}
    comp_rows = []
    if eds_sums is not None and sets:
        from mmlake.eds import fit_chips

        qk = dict(quant_kwargs or {})
        chipfit = fit_chips(eds_sums, float(energy[0]), float(energy[1]), list(elements), beam_energy_kev=float(beam_kv),
                            energy_resolution_mnka_ev=energy_resolution_mnka_ev, kfactors=kfactors,
                            session=session_id, **{k: v for k, v in qk.items() if k in FIT_KWARGS})
        rng = rng_for(seed, session_id, "composition")
        chip_sets = [s for _, whole, core in sets for s in (whole, core)]
        res = chip_set_compositions(chipfit, chip_sets, elements, rng=rng, n_boot=n_boot, level=level,
                                    quant_kwargs={k: v for k, v in qk.items() if k in QUANTIFY_KWARGS})
        names = [*dict.fromkeys(elements), EXTRANEOUS]
        for i, (key, _, _) in enumerate(sets):
            whole, core = res[2 * i], res[2 * i + 1]
            comps[key] = {"whole": whole, "core": core}
            for j, el in enumerate(names):
                comp_rows.append({
                    "session_id": session_id, "method": key[0], "modality": key[1], "region": key[2], "element": el,
                    "atomic_percent": _nan_none(whole.at[j]), "counting_se": _nan_none(whole.se[j]),
                    "ci_low": _nan_none(whole.ci_low[j]), "ci_high": _nan_none(whole.ci_high[j]),
                    "atomic_percent_core": _nan_none(core.at[j]) if core else None,
                    "counting_se_core": _nan_none(core.se[j]) if core else None,
                    "ci_low_core": _nan_none(core.ci_low[j]) if core else None,
                    "ci_high_core": _nan_none(core.ci_high[j]) if core else None,
                })
        for r, (key, _, _) in zip(rows, sets):
            r["eds_counts"] = comps[key]["whole"].counts
            r["core_eds_counts"] = comps[key]["core"].counts if comps[key]["core"] else 0.0
    return rows, comp_rows, comps, spacings


def region_descriptors(
    labels: np.ndarray,
    grid: ChipGrid,
    haadf: np.ndarray | None,
    eds_sums: np.ndarray | None,
    energy: tuple[float, float] | None,
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    pixel_size_nm: float,
    class_names: Sequence[str] | None = None,
    *,
    session_id: str = "?",
    method: str = "?",
    modality: str = "?",
    chip_cryst: np.ndarray | None = None,
    energy_resolution_mnka_ev: float = 130.0,
    square: SquareRule = SquareRule(),
    lattice_kwargs: Mapping[str, Any] | None = None,
    quant_kwargs: Mapping[str, Any] | None = None,
    core_erosion: int = 1,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> RegionFrames:
    """Descriptors of every region of one segmentation (see :mod:`mmlake.descriptors`).

    ``labels`` (n_chips,) ints in chip_index order (< 0: unassigned); ``haadf`` the (H, W) image
    the grid was cut from, or None; ``eds_sums`` (n_chips, C) counts, or None; ``energy`` =
    ``(offset_kev, scale_kev)`` of the EDS channels; ``elements`` the session's declared elements;
    ``kfactors`` ``{line: k}`` (None: the default table). ``class_names[label]`` (few-shot, ground
    truth) becomes the region's role; otherwise ``role`` stays NULL until
    :func:`mmlake.roles.assign_roles`."""
    lab = _check_inputs(labels, grid, haadf, eds_sums, pixel_size_nm)
    chip_cryst = _validate_common(grid, haadf, eds_sums, energy, square, chip_cryst, quant_kwargs)
    rows, comp_rows, _, _ = _describe_all(
        {(method, modality): lab}, grid, haadf, eds_sums, energy, beam_kv, elements, kfactors, pixel_size_nm,
        {(method, modality): class_names} if class_names is not None else None, session_id, chip_cryst, square,
        lattice_kwargs, quant_kwargs, energy_resolution_mnka_ev, core_erosion, n_boot, level, seed)
    return RegionFrames(pl.DataFrame(rows, schema=REGION_SCHEMA), pl.DataFrame(comp_rows, schema=COMPOSITION_SCHEMA))


def describe_session(
    labels: pl.DataFrame | Mapping[tuple[str, str], np.ndarray],
    grid: ChipGrid,
    haadf: np.ndarray | None,
    eds_sums: np.ndarray | None,
    energy: tuple[float, float] | None,
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    pixel_size_nm: float,
    *,
    session_id: str,
    class_names: Mapping[str, Sequence[str]] | None = None,
    role_overrides: Mapping[str, str] | None = None,
    role_rule=None,
    shift_elements: Sequence[str] = ("La", "Fe", "O"),
    chip_cryst: np.ndarray | None = None,
    energy_resolution_mnka_ev: float = 130.0,
    square: SquareRule = SquareRule(),
    lattice_kwargs: Mapping[str, Any] | None = None,
    quant_kwargs: Mapping[str, Any] | None = None,
    core_erosion: int = 1,
    n_boot: int = DEFAULT_N_BOOT,
    level: float = DEFAULT_LEVEL,
    seed: int = 0,
) -> DescriptorTables:
    """Descriptors, roles and ordered-vs-disordered shifts of every segmentation of one session.

    ``labels``: the session's ``segment_labels`` rows (columns method, modality, chip_index, label)
    or ``{(method, modality): labels (n_chips,)}``. ``class_names``: ``{method: class names}`` or
    ``{(method, modality): class names}`` for labellings whose labels index named classes (few-shot:
    the support classes in support order, i.e. ``segment_runs.class_names``; ``"truth"``: the
    manifest's truth_classes). ``role_overrides``: the manifest's ``roles:`` mapping, ``role_rule`` a
    :class:`mmlake.roles.RoleRule`. ``core_erosion``: chips of erosion for the core figures;
    ``n_boot``, ``level``, ``seed``: the bootstrap (deterministic for a given seed). ``quant_kwargs``:
    the chip fit's options (``families``, ``kfactor_table``, ``include_extraneous``,
    ``min_energy_kev``) and the absorption correction's (``thickness_nm``, ``density_g_cm3``, ...)."""
    from mmlake.descriptors.lake import labels_by_segmentation
    from mmlake.descriptors.pairs import fill_pair_columns
    from mmlake.descriptors.shift import shift_table
    from mmlake.roles import RoleRule, assign_roles

    segs = labels_by_segmentation(labels, grid.n_chips) if isinstance(labels, pl.DataFrame) else {
        (str(k[0]), str(k[1])): _check_inputs(v, grid, None, None, pixel_size_nm) for k, v in labels.items()}
    for v in segs.values():
        _check_inputs(v, grid, haadf, eds_sums, pixel_size_nm)
    chip_cryst = _validate_common(grid, haadf, eds_sums, energy, square,
                                  chip_cryst if segs else np.zeros(grid.n_chips), quant_kwargs)
    rows, comp_rows, comps, spacings = _describe_all(
        segs, grid, haadf, eds_sums, energy, beam_kv, elements, kfactors, pixel_size_nm, class_names, session_id,
        chip_cryst, square, lattice_kwargs, quant_kwargs, energy_resolution_mnka_ev, core_erosion, n_boot, level,
        seed)
    regions_df = pl.DataFrame(rows, schema=REGION_SCHEMA)
    comp = pl.DataFrame(comp_rows, schema=COMPOSITION_SCHEMA)
    regions_df = assign_roles(regions_df, comp, overrides=role_overrides, rule=role_rule)
    shift, reps = shift_table(session_id, regions_df.to_dicts(), comps, elements, shift_elements, level)
    params = {
        "method": "region_descriptors", "method_version": METHOD_VERSION,
        "segmentations": [f"{m}/{d}" for m, d in sorted(segs)],
        "square": square.as_dict(), "crystallinity_window_px": CRYSTALLINITY_WINDOW_PX,
        "lattice_kwargs": dict(lattice_kwargs or {}), "quant_kwargs": dict(quant_kwargs or {}),
        "energy_resolution_mnka_ev": float(energy_resolution_mnka_ev),
        "elements": list(elements), "kfactors": dict(kfactors or {}),
        "class_names": {"/".join(k) if isinstance(k, tuple) else str(k): list(v)
                        for k, v in (class_names or {}).items()},
        "role_rule": (role_rule or RoleRule()).as_dict(), "role_overrides": dict(role_overrides or {}),
        "shift_elements": list(shift_elements),
        "core_erosion_chips": int(core_erosion), "bootstrap": {"n_boot": int(n_boot), "level": float(level),
                                                               "seed": int(seed), "over": "chips"},
    }
    reps["spacing"] = spacings
    reps["elements"] = [*dict.fromkeys(elements), EXTRANEOUS]
    out = DescriptorTables(regions_df, comp, shift, params, reps)
    fill_pair_columns([out], seed=seed, n_boot=n_boot, level=level)  # one acquisition: its own figures
    return out
