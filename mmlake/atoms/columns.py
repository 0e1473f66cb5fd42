"""Atomic columns of a HAADF image: detection, sub-pixel refinement, intensity (one entry point).

:func:`locate_columns` returns the raw arrays; :func:`find_columns` adds the local lattice
(:mod:`mmlake.atoms.lattice`) and sublattices (:mod:`mmlake.atoms.sublattice`) and returns the
polars frame (one row per column, pixels and nm) that the ``atom_columns`` table stores.

Steps of :func:`locate_columns`:

1. scan-line jitter (``scan_correction``): per-row x offsets against the image smoothed across
   rows (:mod:`mmlake.atoms.scan`), rows shifted back;
2. sigma: ``sigma_px`` if given, else the LoG estimate (:func:`mmlake.atoms.detect.estimate_sigma_px`)
   refined by the median width of the bright columns of a 512 px central crop fitted with free width
   (only fits whose free width was accepted count; repeated with the new width, candidates and
   disks, until it changes by <= 2 %, at most ``sigma_rounds`` rounds);
3. candidates: local maxima of ``-LoG`` at ``log_scale x sigma`` above ``k_candidate`` x its noise,
   at least ``min_separation_px`` apart (default ``max(2, sigma)``): generous, resolution first;
4. batched Gaussian fits (:mod:`mmlake.atoms.refine`, width fixed at sigma); a candidate is a
   column when its fitted amplitude is at least ``k_noise`` matched-filter standard errors and
   ``rel_threshold`` of the 99th-percentile amplitude;
5. with scan correction, the fitted columns rendered are a jitter-free model of the image: the row
   offsets are refined against it (each row against its own model row), and candidates and fits
   (``passes`` rounds of neighbour subtraction) are redone on the re-corrected image;
5b. (``lattice_jitter``) what that leaves, the band average of the offsets over the rows a column
   spans, from the crystal's translations (:func:`mmlake.atoms.scan.lattice_band_offsets`, ridge
   ``lattice_ridge``); when a lattice is found, candidates and fits are redone once more;
6. fitted centres closer than ``0.5 sigma`` are merged (the brighter kept); columns whose centre left
   the image are dropped.

Coordinates are those of the scan-corrected image (the sample's frame): pixel centres at integers,
``y`` = row (down), ``x`` = column (right).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mmlake.atoms import detect
from mmlake.atoms.refine import Fit, fit_columns

METHOD_VERSION = "3"


@dataclass
class Located:
    """Columns found in one image (arrays of length n; pixel coordinates, row = y, col = x)."""

    y: np.ndarray
    x: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    intensity: np.ndarray  # integrated Gaussian 2 pi A s^2 (image units x px^2)
    background: np.ndarray  # local background level under the column (image units)
    fit_ok: np.ndarray
    params: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.y)


def _as_image(image) -> np.ndarray:
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"image must be a 2-D HAADF image of at least 8x8 px, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    return img


def locate_columns(
    image: np.ndarray,
    *,
    sigma_px: float | None = None,
    min_separation_px: float | None = None,
    k_noise: float = 5.0,
    k_candidate: float = 2.5,
    rel_threshold: float = 0.01,
    log_scale: float = 0.6,
    passes: int = 2,
    scan_correction: bool = True,
    max_jitter_px: float = 3.0,
    radius_sigma: float = 1.5,
    sigma_rounds: int = 3,
    lattice_jitter: bool = True,
    lattice_ridge: float = 3.0,
) -> Located:
    """Detect and refine atomic columns (see module docstring). ``log_scale``: scale of the
    candidate Laplacian in units of sigma; ``sigma_rounds``: at most this many rounds of the width
    estimate (step 2) when ``sigma_px`` is not given."""
    img = _as_image(image)
    if not isinstance(sigma_rounds, (int, np.integer)) or sigma_rounds < 1:
        raise ValueError(f"sigma_rounds must be an integer >= 1, got {sigma_rounds!r}")
    for nm, v in (("k_noise", k_noise), ("rel_threshold", rel_threshold), ("log_scale", log_scale),
                  ("max_jitter_px", max_jitter_px), ("radius_sigma", radius_sigma)):
        if not (isinstance(v, (int, float, np.floating, np.integer)) and np.isfinite(v) and v >= 0):
            raise ValueError(f"{nm} must be a finite number >= 0, got {v!r}")
    if sigma_px is not None and not (np.isfinite(sigma_px) and 0.3 <= sigma_px <= 50):
        raise ValueError(f"sigma_px must be in [0.3, 50] px, got {sigma_px!r}")
    if min_separation_px is not None and not (np.isfinite(min_separation_px) and min_separation_px >= 1):
        raise ValueError(f"min_separation_px must be >= 1 px, got {min_separation_px!r}")
    if not isinstance(passes, (int, np.integer)) or passes < 0:
        raise ValueError(f"passes must be an integer >= 0, got {passes!r}")

    img0 = img
    offsets = np.zeros(img.shape[0])
    if scan_correction:
        from mmlake.atoms.scan import correct_rows, row_jitter

        offsets = row_jitter(img, max_shift_px=max_jitter_px)
        img = correct_rows(img, offsets)
    estimated = sigma_px is None
    s = float(sigma_px) if sigma_px is not None else detect.estimate_sigma_px(img)
    noise = detect.noise_sigma(img)
    sep = float(min_separation_px) if min_separation_px is not None else max(2.0, 1.0 * s)
    prune = (k_noise, rel_threshold)

    def candidates(im, s_, sep_):
        # generous (resolution first); whether a candidate is a column is decided on its fit
        return detect.find_peaks(im, scale_px=max(0.5, log_scale * s_), min_separation_px=sep_, noise=noise,
                                 k_noise=k_candidate, rel_threshold=0.5 * rel_threshold)[0]

    if estimated:  # the LoG scale is a start: the median width of bright fitted columns decides
        h0, w0 = img.shape
        cy0, cx0 = max(0, h0 // 2 - 256), max(0, w0 // 2 - 256)
        crop = img[cy0:cy0 + 512, cx0:cx0 + 512]
        # iterated (candidates, disks and the start width depend on s); only fits whose width was
        # free and accepted vote: a fit that fell back to the start width would vote for the start
        for _ in range(sigma_rounds):
            fc = fit_columns(crop, candidates(crop, s, sep), s, passes=1, radius_sigma=radius_sigma, noise=noise,
                             prune=prune, free_sigma_z=20.0)
            bright = fc.ok & fc.free & (fc.amplitude >= 20.0 * max(noise, 1e-300) * fc.amp_se)
            if bright.sum() < 10:
                break
            s_new = float(np.median(fc.sigma[bright]))
            done = abs(s_new - s) <= 0.02 * s
            s = s_new
            if min_separation_px is None:
                sep = max(2.0, 1.0 * s)
            if done:
                break
    rc = candidates(img, s, sep)
    # with scan correction this fit only models the image for the row-offset refinement: no
    # neighbour-subtraction passes needed there
    fit = fit_columns(img, rc, s, passes=0 if scan_correction else passes, radius_sigma=radius_sigma,
                      noise=noise, prune=prune)
    keep = _significant(fit, noise, k_noise, rel_threshold)
    if scan_correction and keep.sum() >= 10:
        # refine the row offsets against the fitted columns (a jitter-free model), then refit
        from mmlake.atoms.refine import render
        from mmlake.atoms.scan import correct_rows, row_jitter

        model = render(img0.shape, fit.y[keep], fit.x[keep], fit.amplitude[keep], fit.sigma[keep],
                       max(2, int(np.ceil(3 * s))))
        new_offsets = row_jitter(img0, max_shift_px=max_jitter_px, reference=model, start=offsets)
        img = correct_rows(img0, new_offsets)
        rc = candidates(img, s, sep)  # fresh candidates and fits on the corrected image
        offsets = new_offsets
        fit = fit_columns(img, rc, s, passes=passes, radius_sigma=radius_sigma, noise=noise, prune=prune)
        keep = _significant(fit, noise, k_noise, rel_threshold)
    lattice_info = None
    if scan_correction and lattice_jitter and keep.sum() >= 30:
        # the band average of the row offsets, from the crystal's translations (scan.py)
        from mmlake.atoms.scan import correct_rows, lattice_band_offsets

        band = lattice_band_offsets(fit.y[keep], fit.x[keep], img0.shape[0], s, ridge=lattice_ridge)
        if band is not None:
            offsets = np.clip(offsets + band[0], -max_jitter_px, max_jitter_px)
            lattice_info = {"vectors": band[1], "pairs": band[2], "ridge": round(band[3], 4)}
            img = correct_rows(img0, offsets)
            rc = candidates(img, s, sep)
            fit = fit_columns(img, rc, s, passes=passes, radius_sigma=radius_sigma, noise=noise, prune=prune)
            keep = _significant(fit, noise, k_noise, rel_threshold)
    keep &= _merge(fit, 0.5 * s) & (fit.y >= -0.5) & (fit.y <= img.shape[0] - 0.5) \
        & (fit.x >= -0.5) & (fit.x <= img.shape[1] - 0.5)
    params = {"method": "peaks+batched_gauss_lm", "method_version": METHOD_VERSION,
              "sigma_px": round(s, 4), "sigma_estimated": estimated, "min_separation_px": round(sep, 4),
              "k_noise": k_noise, "k_candidate": k_candidate, "rel_threshold": rel_threshold,
              "log_scale": log_scale, "passes": int(passes), "sigma_rounds": int(sigma_rounds),
              "radius_sigma": radius_sigma, "noise": noise, "scan_correction": bool(scan_correction),
              "row_jitter_rms_px": float(np.sqrt(np.mean(offsets ** 2))), "lattice_jitter": lattice_info}
    return Located(fit.y[keep], fit.x[keep], fit.amplitude[keep], fit.sigma[keep], fit.volume[keep],
                   fit.offset[keep], fit.ok[keep], params)


def _significant(fit: Fit, noise: float, k_noise: float, rel_threshold: float) -> np.ndarray:
    """Columns whose fit converged with an amplitude ``k_noise`` standard errors above zero and at
    least ``rel_threshold`` of the 99th-percentile amplitude."""
    n = len(fit.y)
    if n == 0:
        return np.zeros(0, dtype=bool)
    amp = fit.amplitude
    ref = float(np.percentile(amp[fit.ok], 99)) if fit.ok.any() else float(np.max(amp))
    z = amp / np.maximum(noise * fit.amp_se, 1e-300)
    sig = fit.ok & (z >= k_noise)
    return sig & (amp >= rel_threshold * ref) & (amp > 0)


def _merge(fit: Fit, dmin: float) -> np.ndarray:
    """Keep-mask dropping the fainter of two fitted centres closer than dmin."""
    from scipy.spatial import cKDTree

    n = len(fit.y)
    keep = np.ones(n, dtype=bool)
    if n < 2:
        return keep
    pts = np.column_stack([fit.y, fit.x])
    pairs = cKDTree(pts).query_pairs(dmin, output_type="ndarray")
    if len(pairs):
        score = np.where(fit.ok, fit.volume, -1.0)
        for i, j in pairs[np.argsort(-np.maximum(score[pairs[:, 0]], score[pairs[:, 1]]))]:
            if keep[i] and keep[j]:
                keep[j if score[i] >= score[j] else i] = False
    return keep


@dataclass
class ColumnResult:
    """Everything :func:`analyse_columns` computed; ``frame`` is the ``atom_columns`` table."""

    frame: Any  # polars.DataFrame
    located: Located
    lattice: Any  # mmlake.atoms.lattice.LocalLattice
    sublattices: Any  # mmlake.atoms.sublattice.Sublattices
    pixel_size_nm: float | None
    params: dict[str, Any]


#: Columns of the ``atom_columns`` frame, in order (see :func:`analyse_columns`).
COLUMN_FIELDS = (
    "column_index", "y_px", "x_px", "y_nm", "x_nm", "chip_index", "amplitude", "sigma_px", "intensity",
    "background", "fit_ok", "sublattice", "sublattice_contrast", "nn_distance_px", "nn_distance_nm",
    "lattice_fit", "n_neighbours", "lattice_residual_px", "displacement_y_px", "displacement_x_px",
    "displacement_px", "displacement_nm", "a1_y_px", "a1_x_px", "a2_y_px", "a2_x_px", "strain_exx",
    "strain_eyy", "strain_exy", "rotation_deg",
)


def analyse_columns(
    image: np.ndarray,
    pixel_size_nm: float | None = None,
    *,
    grid=None,
    lattice_kw: dict[str, Any] | None = None,
    sublattice_kw: dict[str, Any] | None = None,
    **locate_kw: Any,
) -> ColumnResult:
    """Columns, their local lattice and sublattices as one frame (one row per column).

    Pixel coordinates: ``y_px`` row (down), ``x_px`` column (right), pixel centres at integers (the
    scan-line-corrected frame when ``scan_correction`` is on). ``*_nm`` = px x ``pixel_size_nm``
    (null when no pixel size is given). ``chip_index`` (row * n_cols + col of ``grid``, a
    :class:`mmlake.chips.ChipGrid`) is null for columns outside the grid or without a grid.
    ``intensity`` = integrated Gaussian ``2 pi A s^2`` above the local background.
    """
    import polars as pl

    from mmlake.atoms.lattice import local_lattice
    from mmlake.atoms.sublattice import assign_sublattices

    if pixel_size_nm is not None and not (np.isfinite(pixel_size_nm) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number of nm, got {pixel_size_nm!r}")
    loc = locate_columns(image, **locate_kw)
    order = np.lexsort((loc.x, loc.y))
    loc = Located(*(getattr(loc, f)[order] for f in ("y", "x", "amplitude", "sigma", "intensity", "background",
                                                     "fit_ok")), params=loc.params)
    pts = np.column_stack([loc.y, loc.x])
    lat = local_lattice(pts, shape=np.shape(image), **(lattice_kw or {}))
    sub = assign_sublattices(loc.intensity, lat.first_shell, **(sublattice_kw or {}))
    n = len(loc)
    p = float(pixel_size_nm) if pixel_size_nm is not None else None

    def nm(v):
        return v * p if p is not None else np.full(np.shape(v), np.nan)

    chip = np.full(n, -1, dtype=np.int64)
    if grid is not None:
        r = np.floor((loc.y + 0.5 - grid.origin_y) / grid.chip_px).astype(np.int64)
        c = np.floor((loc.x + 0.5 - grid.origin_x) / grid.chip_px).astype(np.int64)
        inside = (r >= 0) & (r < grid.n_rows) & (c >= 0) & (c < grid.n_cols)
        chip = np.where(inside, r * grid.n_cols + c, -1)
    dmag = np.hypot(lat.displacement[:, 0], lat.displacement[:, 1])
    data = {
        "column_index": np.arange(n, dtype=np.int64), "y_px": loc.y, "x_px": loc.x, "y_nm": nm(loc.y),
        "x_nm": nm(loc.x), "chip_index": chip, "amplitude": loc.amplitude, "sigma_px": loc.sigma,
        "intensity": loc.intensity, "background": loc.background, "fit_ok": loc.fit_ok,
        "sublattice": np.asarray(sub.label, dtype=str), "sublattice_contrast": sub.contrast,
        "nn_distance_px": lat.nn_distance, "nn_distance_nm": nm(lat.nn_distance), "lattice_fit": lat.fits,
        "n_neighbours": lat.n_neighbours.astype(np.int64), "lattice_residual_px": lat.residual,
        "displacement_y_px": lat.displacement[:, 0], "displacement_x_px": lat.displacement[:, 1],
        "displacement_px": dmag, "displacement_nm": nm(dmag), "a1_y_px": lat.a1[:, 0], "a1_x_px": lat.a1[:, 1],
        "a2_y_px": lat.a2[:, 0], "a2_x_px": lat.a2[:, 1], "strain_exx": lat.strain[:, 0],
        "strain_eyy": lat.strain[:, 1], "strain_exy": lat.strain[:, 2], "rotation_deg": lat.rotation_deg,
    }
    frame = pl.DataFrame(data).with_columns(
        pl.when(pl.col("chip_index") >= 0).then(pl.col("chip_index")).otherwise(None).alias("chip_index"))
    frame = frame.fill_nan(None).select(COLUMN_FIELDS)
    params = {**loc.params, "pixel_size_nm": p, "n_columns": n,
              "basis_px": np.round(lat.basis, 4).tolist() if np.all(np.isfinite(lat.basis)) else None,
              "lattice": {"k": 12, "index_tol": 0.3, "fit_tol": 0.15, "disp_tol": 0.3, **(lattice_kw or {})},
              "two_sublattices": sub.two, "sublattice_separation": _finite(sub.separation),
              "sublattice_alternation": _finite(sub.alternation)}
    return ColumnResult(frame, loc, lat, sub, p, params)


def find_columns(image: np.ndarray, pixel_size_nm: float | None = None, **kw: Any):
    """The ``atom_columns`` frame of an image (see :func:`analyse_columns`)."""
    return analyse_columns(image, pixel_size_nm, **kw).frame


def _finite(v: float) -> float | None:
    return float(v) if v is not None and np.isfinite(v) else None
