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
model, not a blur of its jittered neighbours. That leaves the band average of the offsets over the
few rows a column spans (the fitted centres carry it): :func:`lattice_band_offsets` recovers it from
the crystal's translations (:func:`translations`). :func:`correct_rows` applies the offsets by
Fourier shift.
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


def lattice_band_offsets(
    y: np.ndarray, x: np.ndarray, n_rows: int, sigma_px: float, *, tol_px: float = 1.5, max_vectors: int = 12,
    ridge: float = 3.0, min_pairs_share: float = 0.05, knn: int = 25, max_spread_px: float = 0.5,
    min_pairs_per_column: float = 1.0, max_pairs_per_row: float = 48.0,
) -> tuple[np.ndarray, int, int, float] | None:
    """Row offsets of the jitter a column fit cannot see row by row, from the crystal's
    translations. A fitted centre averages the few rows its column spans, so it carries their mean
    offset, and rows matched against a model of the fits (:func:`row_jitter` with ``reference``)
    keep that band average: for a band of rows that only one line of columns crosses, "the rows
    moved" and "the columns sit there" look the same. A lattice tells them apart: for a repeated
    neighbour vector ``t`` (a mode of the neighbour-vector histogram with a vertical component of
    at least 1 px, at least ``max(15, min_pairs_share x n)`` pairs within ``tol_px``, and pair
    vectors that agree in y to ``max_spread_px`` (robust), so a translation of the structure, not
    an amorphous neighbourhood), each pair (i, j = i + t) gives ``x_j - x_i - t_x = J_j - J_i``, ``J``
    the row offsets averaged over the rows each column spans (Gaussian weights, width
    ``sigma_px``), ``t`` the median pair vector (a uniform shear stays the lattice's). Sparse least
    squares over all pairs of up to ``max_vectors`` vectors with a ridge on ``J`` (white jitter
    prior; the pairs also carry the columns' own displacements, which the ridge keeps out of ``J``),
    solved by the banded normal equations. More than ``max_pairs_per_row x n_rows`` pairs (a large
    image: 12 vectors x 20,000 columns) are thinned to that many, every k-th of each vector, and the
    ridge is scaled by the share kept (the same estimate in expectation; 2048 rows: ~98,000 pairs,
    still ~50 per row). Returns (offsets to add to the row offsets,
    ``correct_rows`` convention; vectors used; pairs used; ridge), or None with fewer than
    ``min_pairs_per_column x n`` pairs (no lattice found: amorphous, too few columns)."""
    from scipy.sparse import csr_matrix, identity
    from scipy.sparse.linalg import spsolve

    pts = np.column_stack([y, x]).astype(np.float64)
    n = len(pts)
    if n < 30:
        return None
    tr = translations(pts, tol_px=tol_px, max_vectors=max_vectors, min_pairs_share=min_pairs_share, knn=knn,
                      max_spread_px=max_spread_px, min_dy_px=1.0)
    eqs = [(ii, jj, dev[:, 1]) for t, ii, jj, dev in tr]
    if not eqs or sum(len(e[0]) for e in eqs) < min_pairs_per_column * n:
        return None
    ii = np.concatenate([e[0] for e in eqs])
    jj = np.concatenate([e[1] for e in eqs])
    dv = np.concatenate([e[2] for e in eqs])
    m_all = len(ii)
    cap = int(max(1.0, max_pairs_per_row) * n_rows)
    if m_all > cap:  # thin (every k-th pair of each vector, as the pairs come sorted by column)
        keep = np.concatenate([np.arange(len(e[0])) % int(np.ceil(m_all / cap)) == 0 for e in eqs])
        ii, jj, dv = ii[keep], jj[keep], dv[keep]
        ridge = ridge * len(ii) / m_all
    h = max(1, int(np.ceil(2.0 * sigma_px)))
    off = np.arange(-h, h + 1)
    r = np.rint(pts[:, 0]).astype(np.int64)[:, None] + off[None, :]
    w = np.exp(-0.5 * ((r - pts[:, 0:1]) / max(sigma_px, 0.5)) ** 2)
    w = np.where((r >= 0) & (r < n_rows), w, 0.0)
    w /= np.maximum(w.sum(axis=1, keepdims=True), 1e-300)
    r = np.clip(r, 0, n_rows - 1)
    m = len(ii)
    cols = np.concatenate([r[jj], r[ii]], axis=1)
    vals = np.concatenate([w[jj], -w[ii]], axis=1)
    A = csr_matrix((vals.ravel(), (np.repeat(np.arange(m), cols.shape[1]), cols.ravel())), shape=(m, n_rows))
    # normal equations: A^T A is banded (pairs couple rows at most |t_y| + 2 sigma apart)
    J = spsolve((A.T @ A + ridge * identity(n_rows, format="csr")).tocsc(), A.T @ dv)
    return -(J - np.median(J)), len(eqs), int(m), float(ridge)


def translations(
    pts: np.ndarray, *, tol_px: float = 1.5, max_vectors: int = 12, min_pairs_share: float = 0.05, knn: int = 25,
    max_spread_px: float = 0.5, min_dy_px: float = 0.0, hist_points: int = 4000,
) -> list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Repeated neighbour vectors of a point set (column centres (n, 2), (y, x)): modes of the
    vectors to the ``knn`` nearest neighbours (0.5 px histogram smoothed by 0.75 px), one of each
    +-pair (``t_y > 0``, or ``t_y = 0`` and ``t_x > 0``; ``t_y >= min_dy_px`` when that is > 0), kept
    when at least ``max(15, min_pairs_share x n)`` points have a partner at ``r + t`` within
    ``tol_px`` and the pair vectors agree to ``max_spread_px`` (robust spread of their y component,
    which row jitter does not touch). ``t`` is the median pair vector. The histogram takes the
    neighbours of at most ``hist_points`` points (every k-th; the modes of a translation-invariant
    set do not need all), the pairs all points. Returns up to ``max_vectors`` of
    (t, i, j, r_j - r_i - t), the most frequent first."""
    from scipy.ndimage import gaussian_filter, maximum_filter
    from scipy.spatial import cKDTree

    pts = np.asarray(pts, dtype=np.float64)
    n = len(pts)
    if n < 30:
        return []
    tree = cKDTree(pts)
    sub = pts[::max(1, int(np.ceil(n / max(hist_points, 30))))]
    _, j = tree.query(sub, k=min(knn, n))
    vec = (pts[j[:, 1:]] - sub[:, None, :]).reshape(-1, 2)
    R = float(np.max(np.abs(vec))) + 1.0
    nb = int(np.ceil(2 * R / 0.5))
    H, ey, ex = np.histogram2d(vec[:, 0], vec[:, 1], bins=nb, range=[[-R, R], [-R, R]])
    Hs = gaussian_filter(H, 1.5)
    peak = (Hs == maximum_filter(Hs, size=5)) & (Hs > 0)
    pi, pj = np.nonzero(peak)
    o = np.argsort(-Hs[pi, pj])[:80]
    seen, out = [], []
    for a, b in zip(pi[o], pj[o]):
        v = np.array([0.5 * (ey[a] + ey[a + 1]), 0.5 * (ex[b] + ex[b + 1])])
        upper = v[0] > 0.25 or (abs(v[0]) <= 0.25 and v[1] > 0)
        if not upper or (min_dy_px > 0 and v[0] < min_dy_px) or np.hypot(*v) < 1.0:
            continue
        if any(np.hypot(*(v - c)) < tol_px for c in seen):
            continue
        seen.append(v)
        for _ in range(2):
            dd, jj = tree.query(pts + v, k=1, distance_upper_bound=tol_px)
            ok = np.isfinite(dd)
            if ok.sum() < max(15, min_pairs_share * n):
                break
            ii, jj = np.flatnonzero(ok), jj[ok]
            dv = pts[jj] - pts[ii]
            v = np.median(dv, axis=0)
        else:
            dev = dv - v
            if 1.4826 * np.median(np.abs(dev[:, 0])) <= max_spread_px:
                out.append((v, ii, jj, dev))
        if len(out) >= max_vectors:
            break
    return out

