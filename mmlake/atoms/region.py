"""Region order: per segmented region, the mean of each chip order parameter with a bootstrap interval.

``region_order(labels, order)``: ``labels`` (n_chips,) integer region ids of a segmentation (one per
chip, chip_index order; negative = unlabelled), ``order`` the ``chip_order`` frame. Per region and
parameter:

- ``mean`` over the region's chips that have the parameter (nulls skipped), ``n_chips`` of them;
- ``ci_low``, ``ci_high``: percentile bootstrap (``n_boot`` resamples of the region's chips with
  replacement, ``numpy.random.default_rng(seed)``, one generator for the whole call so the result
  is a pure function of the inputs), at ``level`` (default 0.95). With ``groups`` (one acquisition
  id per chip, for a sample x dose that holds several), each replicate first resamples the
  acquisitions, then chips within each drawn acquisition (two-stage bootstrap);
- intervals are null when fewer than ``min_chips`` (default 3) chips carry the parameter.

``ratio(region_a, region_b, parameter)`` is what "the disordered film has N times the column
displacement of the ordered film" reads from: the ratio of means with its bootstrap interval (the
two regions resampled independently, same rule).
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

DEFAULT_PARAMETERS = ("disorder", "lattice_fraction", "rms_displacement_nm", "rms_displacement_rel",
                      "nn_distance_cv", "intensity_cv_a", "intensity_cv_b", "strain_exx", "strain_eyy",
                      "strain_exy", "rotation_deg", "strain_spread")


def _check(labels, n: int, level: float, n_boot: int):
    lab = np.asarray(labels)
    if lab.shape != (n,):
        raise ValueError(f"labels must have one entry per chip ({n}), got shape {lab.shape}")
    if not np.issubdtype(lab.dtype, np.integer):
        raise ValueError(f"labels must be integer region ids, got dtype {lab.dtype}")
    if not 0 < level < 1:
        raise ValueError(f"level must be in (0, 1), got {level!r}")
    if not isinstance(n_boot, (int, np.integer)) or n_boot < 10:
        raise ValueError(f"n_boot must be an integer >= 10, got {n_boot!r}")
    return lab


def _boot_means(values: np.ndarray, groups: np.ndarray | None, rng: np.random.Generator, n_boot: int) -> np.ndarray:
    """Bootstrap replicate means of ``values`` (chips), two-stage when ``groups`` is given."""
    n = len(values)
    if groups is None or len(np.unique(groups)) < 2:
        idx = rng.integers(0, n, size=(n_boot, n))
        return values[idx].mean(axis=1)
    ug = np.unique(groups)
    members = [np.flatnonzero(groups == g) for g in ug]
    out = np.empty(n_boot)
    for b in range(n_boot):
        pick = rng.integers(0, len(ug), size=len(ug))
        parts = [values[members[g][rng.integers(0, len(members[g]), size=len(members[g]))]] for g in pick]
        out[b] = np.concatenate(parts).mean()
    return out


def region_order(
    labels: np.ndarray,
    order,
    *,
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    groups: np.ndarray | None = None,
    n_boot: int = 1000,
    level: float = 0.95,
    seed: int = 0,
    min_chips: int = 3,
):
    """Long frame: region, parameter, n_chips, mean, ci_low, ci_high, level, n_boot, seed."""
    import polars as pl

    n = len(order)
    lab = _check(labels, n, level, n_boot)
    if "chip_index" in order.columns and not np.array_equal(order["chip_index"].to_numpy(), np.arange(n)):
        raise ValueError("order must hold one row per chip in chip_index order 0..n-1")
    grp = None if groups is None else np.asarray(groups)
    if grp is not None and grp.shape != (n,):
        raise ValueError(f"groups must have one entry per chip ({n}), got shape {grp.shape}")
    missing = [p for p in parameters if p not in order.columns]
    if missing:
        raise ValueError(f"parameters not in the order frame: {missing}")
    rng = np.random.default_rng(seed)
    q = (0.5 * (1 - level), 1 - 0.5 * (1 - level))
    rows = []
    values = {par: order[par].cast(pl.Float64).fill_null(np.nan).to_numpy() for par in parameters}  # once, not per region
    for region in np.unique(lab[lab >= 0]):
        in_r = lab == region
        for par in parameters:
            v = values[par]
            m = in_r & np.isfinite(v)
            k = int(m.sum())
            mean = float(v[m].mean()) if k else None
            lo = hi = None
            if k >= min_chips:
                reps = _boot_means(v[m], None if grp is None else grp[m], rng, n_boot)
                lo, hi = (float(x) for x in np.quantile(reps, q))
            rows.append({"region": int(region), "parameter": par, "n_chips": k, "mean": mean, "ci_low": lo,
                         "ci_high": hi})
    schema = {"region": pl.Int64, "parameter": pl.Utf8, "n_chips": pl.Int64, "mean": pl.Float64,
              "ci_low": pl.Float64, "ci_high": pl.Float64}
    return pl.DataFrame(rows, schema=schema).with_columns(
        pl.lit(level).alias("level"), pl.lit(int(n_boot)).alias("n_boot"), pl.lit(int(seed)).alias("seed"))


def ratio(labels: np.ndarray, order, region_a: int, region_b: int, parameter: str, *, n_boot: int = 1000,
          level: float = 0.95, seed: int = 0) -> dict:
    """mean(parameter | region_a) / mean(parameter | region_b) with a percentile bootstrap interval."""
    import polars as pl

    lab = _check(labels, len(order), level, n_boot)
    v = order[parameter].cast(pl.Float64).fill_null(np.nan).to_numpy()
    va, vb = v[(lab == region_a) & np.isfinite(v)], v[(lab == region_b) & np.isfinite(v)]
    if len(va) < 3 or len(vb) < 3 or not vb.mean() != 0:
        return {"ratio": None, "ci_low": None, "ci_high": None, "n_a": len(va), "n_b": len(vb)}
    rng = np.random.default_rng(seed)
    ra, rb = _boot_means(va, None, rng, n_boot), _boot_means(vb, None, rng, n_boot)
    with np.errstate(divide="ignore", invalid="ignore"):
        reps = ra / rb
    reps = reps[np.isfinite(reps)]
    q = (0.5 * (1 - level), 1 - 0.5 * (1 - level))
    lo, hi = np.quantile(reps, q)
    return {"ratio": float(va.mean() / vb.mean()), "ci_low": float(lo), "ci_high": float(hi),
            "n_a": int(len(va)), "n_b": int(len(vb)), "level": level, "n_boot": int(n_boot), "seed": int(seed)}


#: the order parameters compared between the disordered and the ordered film (order_contrast)
CONTRAST_PARAMETERS = ("disorder", "rms_displacement_nm", "rms_displacement_rel", "nn_distance_cv",
                       "lattice_fraction", "intensity_cv_a", "strain_spread")


def segmentation_order(
    segmentations: dict,
    roles,
    order,
    *,
    parameters: Sequence[str] = DEFAULT_PARAMETERS,
    contrast: Sequence[str] = CONTRAST_PARAMETERS,
    disordered: str = "film_disordered",
    ordered: str = "film_ordered",
    n_boot: int = 400,
    level: float = 0.95,
    seed: int = 0,
):
    """Region order of every segmentation of one session, and the disordered/ordered contrast.

    ``segmentations``: ``{(method, modality): labels (n_chips,)}`` (-1 = unassigned);
    ``roles``: frame with method, modality, region, role (the ``regions`` table); ``order``: the
    session's ``chip_order`` frame. Returns ``(regions, contrast)``:

    - ``regions``: :func:`region_order` per segmentation, with method, modality and the region's role;
    - ``contrast``: per segmentation that has both roles and parameter of ``contrast``, the chips of
      every ``disordered`` region against those of every ``ordered`` region (regions of one role
      pooled, as the composition shift does): :func:`ratio` of the means with its interval, both
      means, and ``significant`` = the interval excludes 1. Same seed and n_boot for every row.
    """
    import polars as pl

    role_of = {(r["method"], r["modality"], int(r["region"])): r["role"] for r in roles.iter_rows(named=True)}
    region_frames, contrast_rows = [], []
    for (method, modality), lab in segmentations.items():
        lab = np.asarray(lab, dtype=np.int64)
        if lab.shape != (len(order),) or not (lab >= 0).any():
            continue
        rf = region_order(lab, order, parameters=parameters, n_boot=n_boot, level=level, seed=seed)
        rf = rf.with_columns(pl.lit(method).alias("method"), pl.lit(modality).alias("modality"),
                             pl.Series("role", [role_of.get((method, modality, int(g))) for g in rf["region"]],
                                       dtype=pl.Utf8))
        region_frames.append(rf)
        role_lab = np.full(len(lab), -1, dtype=np.int64)
        for g in np.unique(lab[lab >= 0]):
            role = role_of.get((method, modality, int(g)))
            if role == disordered:
                role_lab[lab == g] = 1
            elif role == ordered:
                role_lab[lab == g] = 0
        if not ((role_lab == 1).any() and (role_lab == 0).any()):
            continue
        for par in contrast:
            v = order[par].cast(pl.Float64).fill_null(np.nan).to_numpy()
            q = ratio(role_lab, order, 1, 0, par, n_boot=n_boot, level=level, seed=seed)
            a, b = v[(role_lab == 1) & np.isfinite(v)], v[(role_lab == 0) & np.isfinite(v)]
            sig = None if q["ci_low"] is None else bool(q["ci_low"] > 1 or q["ci_high"] < 1)
            contrast_rows.append({
                "method": method, "modality": modality, "parameter": par,
                "disordered_mean": float(a.mean()) if len(a) else None,
                "ordered_mean": float(b.mean()) if len(b) else None,
                "ratio": q["ratio"], "ci_low": q["ci_low"], "ci_high": q["ci_high"], "significant": sig,
                "n_disordered": int(q["n_a"]), "n_ordered": int(q["n_b"])})
    regions = (pl.concat(region_frames, how="diagonal_relaxed") if region_frames else pl.DataFrame())
    schema = {"method": pl.Utf8, "modality": pl.Utf8, "parameter": pl.Utf8, "disordered_mean": pl.Float64,
              "ordered_mean": pl.Float64, "ratio": pl.Float64, "ci_low": pl.Float64, "ci_high": pl.Float64,
              "significant": pl.Boolean, "n_disordered": pl.Int64, "n_ordered": pl.Int64}
    contrast_frame = pl.DataFrame(contrast_rows, schema=schema).with_columns(
        pl.lit(level).alias("level"), pl.lit(int(n_boot)).alias("n_boot"), pl.lit(int(seed)).alias("seed"))
    return regions, contrast_frame
