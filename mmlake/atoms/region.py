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
    for region in np.unique(lab[lab >= 0]):
        in_r = lab == region
        for par in parameters:
            v = order[par].cast(pl.Float64).fill_null(np.nan).to_numpy()
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
