"""Scan-line jitter: each STEM scan line (image row, the fast-scan axis x) is displaced in x by its own
random offset (drift, line-sync jitter). Columns then look torn into horizontal slivers; a 2-D fit
averages the slivers but detection sees several maxima per column.

:func:`row_jitter` estimates every row's x offset at once: each row is cross-correlated (FFT along x,
all rows in one call) with a reference, the image smoothed across rows (a Gaussian along y averages
the independent offsets of neighbouring lines); the offset is the sub-pixel (parabolic) maximum
within ``+-max_shift_px``; rows without structure (normalised correlation below ``min_corr``) get 0.
Up to three rounds, each against the reference of the image corrected so far; the median offset is
removed (a global shift is not jitter). Given a jitter-free model of the image instead (the fitted
columns rendered), one round against it refines the offsets: each row then meets its own row of the
model, not a blur of its jittered neighbours. :func:`correct_rows` applies the offsets by Fourier
shift.
"""

from __future__ import annotations

import numpy as np


_WORKERS = 2  # scipy.fft threads (the machines this runs on have two cores to spare)


def _shift_rows(img: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift row i by ``shifts[i]`` px in +x (Fourier shift on the edge-padded row)."""
    from scipy import fft

    h, w = img.shape
    pad = int(np.ceil(np.max(np.abs(shifts)))) + 2 if shifts.size else 2
    a = np.pad(img, ((0, 0), (pad, pad)), mode="edge")
    n = a.shape[1]
    k = np.fft.rfftfreq(n)
    F = fft.rfft(a, axis=1, workers=_WORKERS) * np.exp(-2j * np.pi * k[None, :] * shifts[:, None])
    return fft.irfft(F, n=n, axis=1, workers=_WORKERS)[:, pad:pad + w]


def _row_lags(a: np.ndarray, b: np.ndarray, m: int, min_corr: float) -> np.ndarray:
    """Per row, the sub-pixel lag (within +-m) at which row a best matches row b (0 if no match)."""
    h, w = a.shape
    a = a - a.mean(axis=1, keepdims=True)
    b = b - b.mean(axis=1, keepdims=True)
    from scipy import fft

    n = fft.next_fast_len(w + m + 1, real=True)  # zero-padded: linear, not circular, correlation
    cc = fft.irfft(fft.rfft(a.astype(np.float32), n=n, axis=1, workers=_WORKERS)
                   * np.conj(fft.rfft(b.astype(np.float32), n=n, axis=1, workers=_WORKERS)),
                   n=n, axis=1, workers=_WORKERS)
    lags = np.arange(-m, m + 1)
    win = np.concatenate([cc[:, -m:], cc[:, :m + 1]], axis=1)  # lags -m..-1, 0..m
    norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1)) + 1e-300
    j = np.argmax(win, axis=1)
    rows = np.arange(h)
    peak = win[rows, j] / norm
    jj = np.clip(j, 1, len(lags) - 2)
    y0, y1, y2 = win[rows, jj - 1], win[rows, jj], win[rows, jj + 1]
    den = y0 - 2 * y1 + y2
    off = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
    est = lags[jj] + np.clip(off, -0.5, 0.5)
    return np.where((peak >= min_corr) & (j > 0) & (j < len(lags) - 1), est, 0.0)


def row_jitter(
    image: np.ndarray, *, max_shift_px: float = 3.0, sigma_y_px: float = 1.0, min_corr: float = 0.3,
    rounds: int = 3, reference: np.ndarray | None = None, start: np.ndarray | None = None,
) -> np.ndarray:
    """Per-row x offsets (px, float64 (H,)) such that ``correct_rows(image, offsets)`` undoes them.

    ``reference``: a jitter-free model of the image (e.g. the fitted columns rendered, see
    :func:`mmlake.atoms.columns.locate_columns`); each row is then matched against its own row of the
    model, once, starting from ``start`` offsets. Without it, against the image smoothed across rows.
    """
    from scipy.ndimage import gaussian_filter1d

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    total = np.zeros(h) if start is None else np.asarray(start, dtype=np.float64).copy()
    m = int(np.floor(max_shift_px))
    if m < 1 or h < 3:
        return total
    cur = _shift_rows(img, total) if np.any(total) else img
    for _ in range(1 if reference is not None else rounds):
        ref = reference if reference is not None else gaussian_filter1d(cur, sigma_y_px, axis=0, mode="nearest")
        # a row shifted by +d correlates best at lag +d: shift it by -d
        step = -_row_lags(cur, ref, m, min_corr)
        step -= np.median(step)
        total = np.clip(total + step, -max_shift_px, max_shift_px)
        cur = _shift_rows(img, total)
        if np.max(np.abs(step)) < 0.02:
            break
    return total


def correct_rows(image: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """The image with row i shifted by ``offsets[i]`` px in x."""
    img = np.asarray(image, dtype=np.float64)
    off = np.asarray(offsets, dtype=np.float64)
    if off.shape != (img.shape[0],):
        raise ValueError(f"offsets must have one value per image row ({img.shape[0]}), got shape {off.shape}")
    if not np.any(off):
        return img.copy()
    return _shift_rows(img, off)
