"""Column candidates in a HAADF image: scale, background, noise and local maxima.

- **Scale** (:func:`estimate_sigma_px`): the column's Gaussian sigma from scale-normalised
  Laplacian-of-Gaussian responses (``-s^2 LoG_s``) at their local maxima; an isolated Gaussian
  column of sigma ``s`` answers most strongly at ``s``. Columns closer than ~3 sigma pull the answer
  down by up to ~25 %, so :func:`mmlake.atoms.columns.find_columns` uses it only as a start and
  re-detects with the median sigma the Gaussian fits return.
- **Background** (:func:`background`): grey opening (square of ``~6 sigma``) of the image smoothed
  at ``sigma``, smoothed again: the local floor between columns; slow gradients (thickness,
  ``blbk`` background) drop out of peak heights and intensities.
- **Noise** (:func:`noise_sigma`): robust (MAD) standard deviation of the finest-scale diagonal Haar
  coefficients, ``(a - b - c + d) / 2`` over 2x2 blocks: white noise passes with its full variance,
  a column of sigma >= 1.5 px almost not at all.
- **Candidates** (:func:`find_peaks`): local maxima of ``-LoG`` at ``~0.6 sigma`` above a noise
  and a relative threshold, thinned so no two lie closer than ``min_separation_px`` (stronger
  first). Generous on purpose: whether a candidate is a column is decided on its fitted amplitude.
"""

from __future__ import annotations

import numpy as np


def _ndi():
    from scipy import ndimage

    return ndimage


def estimate_sigma_px(image: np.ndarray, lo: float = 0.7, hi: float = 8.0, n: int = 16) -> float:
    """Column Gaussian sigma (px) from scale-normalised LoG responses (see module docstring).

    The response at each scale is the mean of the strongest 10 % of its local maxima; the answer is
    the first scale whose response is a local maximum over scales and at least 0.8 of the largest
    (speckle or grains at larger scales do not win over the columns).
    """
    ndi = _ndi()
    img = np.asarray(image, dtype=np.float64)
    img = img - img.mean()
    if max(img.shape) > 512:  # the scale is a property of the columns, not of the field of view
        cy, cx = max(0, img.shape[0] // 2 - 256), max(0, img.shape[1] // 2 - 256)
        img = img[cy:cy + 512, cx:cx + 512]
    scales = np.geomspace(lo, hi, n)
    resp = np.zeros(n)
    for i, s in enumerate(scales):
        L = -s * s * ndi.gaussian_laplace(img, s)
        mx = (L == ndi.maximum_filter(L, 3)) & (L > 0)
        v = L[mx]
        if v.size:
            k = max(10, v.size // 10)
            resp[i] = np.partition(v, v.size - min(k, v.size))[-min(k, v.size):].mean()
    if not resp.max() > 0:
        return float(np.sqrt(lo * hi))
    ok = resp >= 0.8 * resp.max()
    for i in range(n):
        left = resp[i - 1] if i > 0 else -np.inf
        right = resp[i + 1] if i < n - 1 else -np.inf
        if ok[i] and resp[i] >= left and resp[i] >= right:
            if 0 < i < n - 1:  # parabolic interpolation in log-scale
                y0, y1, y2 = resp[i - 1], resp[i], resp[i + 1]
                den = y0 - 2 * y1 + y2
                off = 0.5 * (y0 - y2) / den if den < 0 else 0.0
                step = np.log(scales[1] / scales[0])
                return float(np.exp(np.log(scales[i]) + np.clip(off, -0.5, 0.5) * step))
            return float(scales[i])
    return float(scales[int(np.argmax(resp))])


def noise_sigma(image: np.ndarray) -> float:
    """Robust white-noise standard deviation (diagonal Haar coefficients, MAD)."""
    a = np.asarray(image, dtype=np.float64)
    h, w = (a.shape[0] // 2) * 2, (a.shape[1] // 2) * 2
    a = a[:h, :w]
    d = (a[0::2, 0::2] - a[0::2, 1::2] - a[1::2, 0::2] + a[1::2, 1::2]) / 2.0
    return float(1.4826 * np.median(np.abs(d - np.median(d))))


def background(image: np.ndarray, sigma_px: float) -> np.ndarray:
    """Local floor between columns (see module docstring)."""
    ndi = _ndi()
    s = max(float(sigma_px), 0.5)
    sm = ndi.gaussian_filter(np.asarray(image, dtype=np.float64), s)
    size = 2 * int(np.ceil(3.0 * s)) + 1
    return ndi.gaussian_filter(ndi.grey_opening(sm, size=(size, size)), 2.0 * s)


def log_noise_gain(t: float) -> float:
    """Standard deviation of ``-LoG_t`` applied to unit white noise (L2 norm of the kernel)."""
    ndi = _ndi()
    n = 2 * int(np.ceil(5 * max(t, 0.5))) + 1
    d = np.zeros((n, n))
    d[n // 2, n // 2] = 1.0
    return float(np.sqrt((ndi.gaussian_laplace(d, t) ** 2).sum()))


def find_peaks(
    image: np.ndarray,
    *,
    scale_px: float,
    min_separation_px: float,
    noise: float,
    k_noise: float = 3.0,
    rel_threshold: float = 0.01,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Candidate column centres ``(n, 2)`` as integer (row, col) and their ``-LoG`` responses.

    Candidates are the local maxima of ``-LoG`` at ``scale_px`` (about 0.6 sigma: the Laplacian
    separates columns closer than the ~2 sigma at which their summed intensity stops showing two
    maxima, and ignores slow background) above ``max(k_noise x its noise, rel_threshold x the 99th
    percentile response)``, thinned to ``min_separation_px`` (stronger first). ``exclude``: ``(m, 2)``
    positions already known; candidates within ``min_separation_px`` of one are dropped.
    """
    ndi = _ndi()
    img = np.asarray(image, dtype=np.float64)
    L = -ndi.gaussian_laplace(img, scale_px)
    mx = (L == ndi.maximum_filter(L, size=3)) & (L > 0)
    vals = L[mx]
    ref = float(np.percentile(vals, 99)) if vals.size else 0.0
    # floor: numerical ripples of a flat image are not columns
    span = float(np.ptp(img)) if img.size else 0.0
    if not span > 1e-12 * float(np.abs(img).max(initial=0.0)):
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    floor = 1e-6 * span * log_noise_gain(scale_px)
    thr = max(k_noise * noise * log_noise_gain(scale_px), rel_threshold * ref, floor, 1e-300)
    keep = mx & (L > thr)
    rc = np.argwhere(keep)
    hts = L[keep]
    if rc.size == 0:
        return np.zeros((0, 2), dtype=np.int64), np.zeros(0)
    order = np.argsort(-hts, kind="stable")
    rc, hts = rc[order], hts[order]
    return _thin(rc, hts, min_separation_px, exclude)


def _thin(rc: np.ndarray, hts: np.ndarray, dmin: float, exclude: np.ndarray | None):
    """Greedy non-maximum suppression by distance (``rc`` sorted by decreasing height)."""
    from scipy.spatial import cKDTree

    n = len(rc)
    alive = np.ones(n, dtype=bool)
    if exclude is not None and len(exclude):
        d, _ = cKDTree(exclude).query(rc, k=1)
        alive &= d >= dmin
    if dmin > 1.0 and n > 1:
        pairs = cKDTree(rc).query_pairs(dmin, output_type="ndarray")
        if len(pairs):
            # pairs (i < j): i is the brighter (sorted); walk in order of the brighter member
            pairs = pairs[np.lexsort((pairs[:, 1], pairs[:, 0]))]
            starts = np.searchsorted(pairs[:, 0], np.arange(n + 1))
            for i in range(n):
                if alive[i]:
                    js = pairs[starts[i]:starts[i + 1], 1]
                    alive[js] = False
    return rc[alive], hts[alive]
