"""Scan-line jitter: each STEM scan line (image row, the fast-scan axis x) is displaced in x by its own
random offset (drift, line-sync jitter). Columns then look torn into horizontal slivers; a 2-D fit
averages the slivers but detection sees several maxima per column.

:func:`row_jitter` estimates every row's x offset at once: each row is cross-correlated (FFT along x,
all rows in one call) with a reference, the image smoothed across rows (a Gaussian along y averages
the independent offsets of neighbouring lines); the offset is the sub-pixel (parabolic) maximum
within ``+-max_shift_px``; rows without structure (normalised correlation below ``min_corr``) get 0.
Three rounds, each against the reference of the image corrected so far; the median offset is
removed (a global shift is not jitter). :func:`correct_rows` applies the offsets by Fourier shift.
"""

from __future__ import annotations

import numpy as np


def _shift_rows(img: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift row i by ``shifts[i]`` px in +x (Fourier shift on the edge-padded row)."""
    h, w = img.shape
    pad = int(np.ceil(np.max(np.abs(shifts)))) + 2 if shifts.size else 2
    a = np.pad(img, ((0, 0), (pad, pad)), mode="edge")
    n = a.shape[1]
    k = np.fft.rfftfreq(n)
    F = np.fft.rfft(a, axis=1) * np.exp(-2j * np.pi * k[None, :] * shifts[:, None])
    return np.fft.irfft(F, n=n, axis=1)[:, pad:pad + w]


def row_jitter(
    image: np.ndarray, *, max_shift_px: float = 3.0, sigma_y_px: float = 1.0, min_corr: float = 0.3,
    rounds: int = 4,
) -> np.ndarray:
    """Per-row x offsets (px, float64 (H,)) such that ``correct_rows(image, offsets)`` undoes them."""
    from scipy.ndimage import gaussian_filter1d

    img = np.asarray(image, dtype=np.float64)
    h, w = img.shape
    total = np.zeros(h)
    m = int(np.floor(max_shift_px))
    if m < 1 or h < 3:
        return total
    cur = img
    for _ in range(rounds):
        ref = gaussian_filter1d(cur, sigma_y_px, axis=0, mode="nearest")
        a = cur - cur.mean(axis=1, keepdims=True)
        b = ref - ref.mean(axis=1, keepdims=True)
        n = w + m + 1  # zero-padded: linear, not circular, correlation for lags up to m
        cc = np.fft.irfft(np.fft.rfft(a, n=n, axis=1) * np.conj(np.fft.rfft(b, n=n, axis=1)), n=n, axis=1)
        lags = np.r_[0:m + 1, -m:0]
        win = np.concatenate([cc[:, :m + 1], cc[:, -m:]], axis=1)  # lags 0..m, -m..-1
        order = np.argsort(lags)
        lags, win = lags[order], win[:, order]
        norm = np.sqrt((a * a).sum(axis=1) * (b * b).sum(axis=1)) + 1e-300
        j = np.argmax(win, axis=1)
        peak = win[np.arange(h), j] / norm
        jj = np.clip(j, 1, len(lags) - 2)
        y0, y1, y2 = (win[np.arange(h), jj - 1], win[np.arange(h), jj], win[np.arange(h), jj + 1])
        den = y0 - 2 * y1 + y2
        off = np.where(den < 0, 0.5 * (y0 - y2) / np.where(den < 0, den, -1.0), 0.0)
        est = lags[jj] + np.clip(off, -0.5, 0.5)
        est = np.where((peak >= min_corr) & (j > 0) & (j < len(lags) - 1), est, 0.0)
        # a row shifted by +d correlates best at lag +d: shift it by -d
        step = -est
        step -= np.median(step)
        total += step
        total = np.clip(total, -max_shift_px, max_shift_px)
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
