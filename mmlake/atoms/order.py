"""Per-chip order parameters from the columns around each chip (table ``chip_order``).

Chips are 1-3 lattice periods (10-20 px on the demo), i.e. one to nine columns: too few for a
spread. As the ``fft`` encoder does (:func:`mmlake.chips.centred_windows`), each chip is described by
the columns inside a ``max(window_px, chip_px)`` square centred on it; ``window_px`` defaults to
``4.5`` lattice periods (the longer reference basis vector), at least 24 px.

Per chip (all computed in one pass over (column, chip) pairs, ``np.bincount``):

- ``n_columns``, ``n_lattice``: columns in the window, and those whose local lattice fits
  (:mod:`mmlake.atoms.lattice`); ``lattice_fraction`` = their ratio (0 when the window holds no
  column);
- ``rms_displacement_px`` / ``_nm``: RMS distance of the columns (every column with a local fit,
  fitting or not) from the ideal position their neighbours' lattice gives; ``rms_displacement_rel``
  = the same over the reference lattice spacing ``|a|min`` (a Lindemann-like ratio, pixel size free);
- ``nn_distance_mean_px`` / ``_nm`` and ``nn_distance_cv`` (standard deviation / mean of the
  nearest-neighbour distances);
- ``intensity_cv_a``, ``intensity_cv_b``: robust coefficient of variation (1.4826 MAD / median) of
  the column intensities of each sublattice (null where the window holds < 3 such columns);
- ``strain_exx``, ``strain_eyy``, ``strain_exy``, ``rotation_deg``: means over the fitting columns
  (:mod:`mmlake.atoms.lattice`, relative to the image's reference lattice); ``strain_spread``: standard
  deviation of the dilatation ``(exx + eyy) / 2`` over them;
- ``disorder``: one number for "how far from a perfect lattice", ``sqrt((1 - f) + f * min(1, (rms_rel /
  0.25))^2)`` with ``f`` = lattice_fraction: 0 for a perfect lattice, 1 where no column fits (or the
  window is empty), and between the two it grows with the displacement of the columns that do fit
  (0.25 |a| is the displacement at which a column stops indexing).
"""

from __future__ import annotations

import numpy as np

#: Columns of the ``chip_order`` frame (after ``chip_index``), in order.
ORDER_FIELDS = (
    "chip_index", "row", "col", "n_columns", "n_lattice", "lattice_fraction", "rms_displacement_px",
    "rms_displacement_nm", "rms_displacement_rel", "nn_distance_mean_px", "nn_distance_mean_nm", "nn_distance_cv",
    "intensity_cv_a", "intensity_cv_b", "strain_exx", "strain_eyy", "strain_exy", "rotation_deg", "strain_spread",
    "disorder",
)
DISORDER_RMS_REF = 0.25


def _col(frame, name: str) -> np.ndarray:
    import polars as pl

    return frame[name].cast(pl.Float64).fill_null(np.nan).to_numpy()


def _pairs(y: np.ndarray, x: np.ndarray, grid, window_px: float) -> tuple[np.ndarray, np.ndarray]:
    """(column index, chip index) for every column inside every chip's centred window."""
    p = grid.chip_px
    half = 0.5 * max(float(window_px), float(p))
    # chip (r, c) window: rows [r p + p/2 - half, r p + p/2 + half) in pixel-edge coordinates
    yy, xx = y + 0.5 - grid.origin_y, x + 0.5 - grid.origin_x
    r_lo = np.ceil((yy - half - p / 2) / p).astype(np.int64)
    r_hi = np.floor((yy + half - p / 2) / p).astype(np.int64)
    c_lo = np.ceil((xx - half - p / 2) / p).astype(np.int64)
    c_hi = np.floor((xx + half - p / 2) / p).astype(np.int64)
    r_lo, c_lo = np.maximum(r_lo, 0), np.maximum(c_lo, 0)
    r_hi, c_hi = np.minimum(r_hi, grid.n_rows - 1), np.minimum(c_hi, grid.n_cols - 1)
    nr, nc = np.maximum(r_hi - r_lo + 1, 0), np.maximum(c_hi - c_lo + 1, 0)
    cnt = nr * nc
    col_idx = np.repeat(np.arange(len(y)), cnt)
    if col_idx.size == 0:
        return col_idx, col_idx.copy()
    start = np.repeat(np.cumsum(cnt) - cnt, cnt)
    k = np.arange(col_idx.size) - start
    ncr = np.repeat(nc, cnt)
    rr = np.repeat(r_lo, cnt) + k // np.maximum(ncr, 1)
    cc = np.repeat(c_lo, cnt) + k % np.maximum(ncr, 1)
    return col_idx, rr * grid.n_cols + cc


def _grouped_robust_cv(values: np.ndarray, groups: np.ndarray, n_groups: int, min_n: int = 3) -> np.ndarray:
    """1.4826 MAD / median of ``values`` per group (NaN below ``min_n`` values)."""
    out = np.full(n_groups, np.nan)
    if values.size == 0:
        return out
    order = np.lexsort((values, groups))
    g, v = groups[order], values[order]
    starts = np.searchsorted(g, np.arange(n_groups))
    ends = np.searchsorted(g, np.arange(n_groups), side="right")
    for gi in np.flatnonzero(ends - starts >= min_n):  # one median pair per chip with data
        seg = v[starts[gi]:ends[gi]]
        med = seg[len(seg) // 2] if len(seg) % 2 else 0.5 * (seg[len(seg) // 2 - 1] + seg[len(seg) // 2])
        if med > 0:
            out[gi] = 1.4826 * np.median(np.abs(seg - med)) / med
    return out


def chip_order(columns, grid, pixel_size_nm: float | None = None, *, window_px: float | None = None,
               basis_px: np.ndarray | None = None):
    """Order parameters per chip of ``grid`` (a :class:`mmlake.chips.ChipGrid`) from an
    ``atom_columns`` frame (see module docstring). Returns a polars frame, one row per chip."""
    import polars as pl

    n_chips = grid.n_chips
    y, x = _col(columns, "y_px"), _col(columns, "x_px")
    amin = _reference_spacing(columns, basis_px)
    if window_px is not None and not (np.isfinite(window_px) and window_px > 0):
        raise ValueError(f"window_px must be a positive number of pixels, got {window_px!r}")
    window_px = effective_window_px(columns, grid, window_px, basis_px)
    ci, chip = _pairs(y, x, grid, window_px)

    def s(v, m=None):
        w = np.ones(ci.size) if m is None else m[ci].astype(float)
        vv = np.where(np.isfinite(v[ci]), v[ci], 0.0) * w
        return np.bincount(chip, weights=vv, minlength=n_chips)

    def cnt(m):
        return np.bincount(chip, weights=m[ci].astype(float), minlength=n_chips)

    fit = _col(columns, "lattice_fit") > 0
    n_col = np.bincount(chip, minlength=n_chips).astype(np.int64)
    n_fit = cnt(fit).astype(np.int64)
    with np.errstate(invalid="ignore", divide="ignore"):
        frac = np.where(n_col > 0, n_fit / np.maximum(n_col, 1), 0.0)
        dpx = _col(columns, "displacement_px")
        has_d = np.isfinite(dpx)
        n_d = cnt(has_d)
        rms = np.where(n_d > 0, np.sqrt(s(dpx ** 2, has_d) / np.maximum(n_d, 1)), np.nan)
        nn = _col(columns, "nn_distance_px")
        has_nn = np.isfinite(nn)
        n_nn = cnt(has_nn)
        nn_mean = np.where(n_nn > 0, s(nn, has_nn) / np.maximum(n_nn, 1), np.nan)
        nn_var = np.where(n_nn > 1, s(nn ** 2, has_nn) / np.maximum(n_nn, 1) - nn_mean ** 2, np.nan)
        nn_cv = np.sqrt(np.clip(nn_var, 0, None)) / nn_mean
        strains = {}
        for f in ("strain_exx", "strain_eyy", "strain_exy", "rotation_deg"):
            v = _col(columns, f)
            m = fit & np.isfinite(v)
            k = cnt(m)
            strains[f] = np.where(k > 0, s(v, m) / np.maximum(k, 1), np.nan)
        dil = 0.5 * (_col(columns, "strain_exx") + _col(columns, "strain_eyy"))
        m = fit & np.isfinite(dil)
        k = cnt(m)
        dm = s(dil, m) / np.maximum(k, 1)
        spread = np.where(k > 1, np.sqrt(np.clip(s(dil ** 2, m) / np.maximum(k, 1) - dm ** 2, 0, None)), np.nan)
    inten = _col(columns, "intensity")
    sub = columns["sublattice"].to_numpy()
    cv = {}
    for lab in ("A", "B"):
        m = (sub[ci] == lab) & np.isfinite(inten[ci])
        cv[lab] = _grouped_robust_cv(inten[ci][m], chip[m], n_chips)
    rel = rms / amin if np.isfinite(amin) else np.full(n_chips, np.nan)
    rel_c = np.clip(np.nan_to_num(rel, nan=DISORDER_RMS_REF) / DISORDER_RMS_REF, 0, 1)  # no fit at all: 1
    disorder = np.sqrt((1.0 - frac) + frac * rel_c ** 2)
    p = pixel_size_nm
    rows, cols = grid.rows_cols()
    data = {
        "chip_index": np.arange(n_chips, dtype=np.int64), "row": rows.astype(np.int64), "col": cols.astype(np.int64),
        "n_columns": n_col, "n_lattice": n_fit, "lattice_fraction": frac, "rms_displacement_px": rms,
        "rms_displacement_nm": rms * p if p else np.full(n_chips, np.nan), "rms_displacement_rel": rel,
        "nn_distance_mean_px": nn_mean, "nn_distance_mean_nm": nn_mean * p if p else np.full(n_chips, np.nan),
        "nn_distance_cv": nn_cv, "intensity_cv_a": cv["A"], "intensity_cv_b": cv["B"],
        "strain_exx": strains["strain_exx"], "strain_eyy": strains["strain_eyy"], "strain_exy": strains["strain_exy"],
        "rotation_deg": strains["rotation_deg"], "strain_spread": spread, "disorder": disorder,
    }
    return pl.DataFrame(data).fill_nan(None).select(ORDER_FIELDS)


def effective_window_px(columns, grid, window_px: float | None = None, basis_px=None) -> float:
    """The side of the chip-centred window :func:`chip_order` uses: ``max(window_px, chip_px)``,
    ``window_px`` defaulting to ``max(24, 4.5 x the longer reference basis vector)``."""
    if window_px is None:
        a = _reference_spacing(columns, basis_px, longest=True)
        window_px = max(24.0, 4.5 * a) if np.isfinite(a) else 24.0
    return float(max(float(window_px), float(grid.chip_px)))


def _reference_spacing(columns, basis_px=None, longest: bool = False) -> float:
    """|a|min (or |a|max) of the reference basis: given, else the median local basis of fitting columns."""
    if basis_px is not None:
        B = np.asarray(basis_px, dtype=np.float64)
        lens = np.hypot(B[:, 0], B[:, 1])
        return float(lens.max() if longest else lens.min())
    fit = _col(columns, "lattice_fit") > 0
    if fit.sum() < 3:
        return float("nan")
    l1 = np.hypot(_col(columns, "a1_y_px")[fit], _col(columns, "a1_x_px")[fit])
    l2 = np.hypot(_col(columns, "a2_y_px")[fit], _col(columns, "a2_x_px")[fit])
    a, b = float(np.median(l1)), float(np.median(l2))
    return max(a, b) if longest else min(a, b)


