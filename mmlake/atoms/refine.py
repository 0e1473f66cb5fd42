"""Sub-pixel column positions: batched 2-D Gaussian fits with neighbour subtraction.

Every column is fitted at once (numpy, no per-column Python loop): the pixels of a square patch
around each candidate form an ``(n, m)`` float32 array, and Levenberg-Marquardt iterations solve
``n`` independent 5x5 normal equations per step (batched ``matmul`` + ``np.linalg.solve``).
Coordinates inside the fit are relative to each patch's centre pixel.

Model per column: ``c + A exp(-|r - r0|^2 / (2 s^2))`` (amplitude ``A``, centre ``r0``, width
``s``, local offset ``c``), fitted to the pixels within a disk of radius ``radius_sigma x s0``.

Neighbours (atomap's one-fit-per-column approach masks them; here they are subtracted): in the
first pass the disk is at most half the distance to the nearest other candidate and the width is
held at ``s0``; then every fitted Gaussian is rendered into a model image and each later pass fits
its column to ``data - (model - own Gaussian)``. Two such passes are a block-coordinate
approximation of fitting all columns jointly; tails of bright neighbours no longer drag faint
columns' centres. By default every column keeps the image's width ``s0`` (over a disk of 1.5 s0 on
overlapping columns, width, amplitude and offset are nearly degenerate: a free width makes the
intensity meaningless); ``free_sigma_z`` frees it for columns at least that many standard errors
bright (used on a crop to measure ``s0`` itself); ``Fit.free`` says which accepted fits had it free.

A fit is accepted when ``A > 0``, a fitted width stays inside ``[0.35, 3] x s0`` and the centre
stays within ``max_shift`` of the candidate; a column that fitted in an earlier pass keeps that
fit when a later pass fails; a column that never fitted keeps the intensity-weighted centroid of
its disk (``ok = False``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

_F = np.float32


@dataclass
class Fit:
    """Per-column fit results (arrays of length n, pixel coordinates)."""

    y: np.ndarray
    x: np.ndarray
    amplitude: np.ndarray
    sigma: np.ndarray
    offset: np.ndarray
    ok: np.ndarray
    rms: np.ndarray  # RMS residual of the fit over its disk (image units)
    amp_se: np.ndarray  # amplitude standard error for unit white noise, offset known (x noise)
    free: np.ndarray | None = None  # the accepted fit had a free width (``free_sigma_z``)

    @property
    def volume(self) -> np.ndarray:
        """Integrated Gaussian intensity ``2 pi A s^2`` (background excluded)."""
        return 2.0 * np.pi * self.amplitude * self.sigma ** 2


def _grid(h: int) -> tuple[np.ndarray, np.ndarray]:
    ar = np.arange(-h, h + 1)
    dy, dx = np.meshgrid(ar, ar, indexing="ij")
    return dy.ravel(), dx.ravel()


def _patches(img_p: np.ndarray, cy: np.ndarray, cx: np.ndarray, dy: np.ndarray, dx: np.ndarray, pad: int):
    """(n, m) values of a padded image around integer centres."""
    return img_p[(cy + pad)[:, None] + dy[None, :], (cx + pad)[:, None] + dx[None, :]]


def _lm(D, Wt, dy, dx, p, s_lo, s_hi, free_sigma, n_iter: int = 12, tol: float = 1e-3):
    """Levenberg-Marquardt on all columns at once.

    D, Wt: (n, m) float32 data and weights; dy, dx: (m,) float32 offsets of the patch pixels from
    the patch centre; p: (n, 5) float64 [A, y0, x0, s, c] with y0, x0 relative to the centre.
    Returns (p, cost, amplitude standard error for unit noise).
    """
    n = len(p)
    fs = np.asarray(free_sigma, dtype=bool)
    fix = (~fs).astype(_F)[:, None, None] * np.diag(np.array([0, 0, 0, 1, 0], dtype=_F))[None]
    eye = np.eye(5, dtype=_F)[None]
    lam = np.full(n, 1e-2, dtype=_F)
    dyf, dxf = dy[None, :].astype(_F), dx[None, :].astype(_F)

    def model(q):
        q32 = q.astype(_F)
        ey = dyf - q32[:, 1:2]
        ex = dxf - q32[:, 2:3]
        r2 = ey * ey + ex * ex
        inv = _F(1.0) / (q32[:, 3:4] * q32[:, 3:4])
        g = np.exp(-_F(0.5) * r2 * inv)
        return D - (q32[:, 4:5] + q32[:, 0:1] * g), g, ey, ex, r2, inv

    def jac(q, g, ey, ex, r2, inv):
        q32 = q.astype(_F)
        Ag = q32[:, 0:1] * g
        J = np.empty(D.shape + (5,), dtype=_F)
        J[..., 0] = g
        J[..., 1] = Ag * ey * inv
        J[..., 2] = Ag * ex * inv
        J[..., 3] = np.where(fs[:, None], Ag * r2 * inv / q32[:, 3:4], _F(0.0))
        J[..., 4] = 1.0
        return J

    r, g, ey, ex, r2, inv = model(p)
    cost = (Wt * r * r).sum(axis=1, dtype=np.float64)
    for _ in range(n_iter):
        J = jac(p, g, ey, ex, r2, inv)
        JWt = (J * Wt[..., None]).transpose(0, 2, 1)
        Hm = JWt @ J + fix
        b = (JWt @ r[..., None])[..., 0]
        dH = np.einsum("nii->ni", Hm)
        Hd = Hm + lam[:, None, None] * (dH[:, :, None] * eye + _F(1e-9) * eye)
        try:
            step = np.linalg.solve(Hd.astype(np.float64), b[..., None].astype(np.float64))[..., 0]
        except np.linalg.LinAlgError:
            step = np.zeros((n, 5))
            for i in range(n):
                try:
                    step[i] = np.linalg.solve(Hd[i].astype(np.float64), b[i].astype(np.float64))
                except np.linalg.LinAlgError:
                    pass
        step[~fs, 3] = 0.0
        q = p + step
        q[:, 3] = np.clip(q[:, 3], s_lo, s_hi)
        rq, gq, eyq, exq, r2q, invq = model(q)
        cq = (Wt * rq * rq).sum(axis=1, dtype=np.float64)
        better = np.isfinite(cq) & (cq < cost)
        p = np.where(better[:, None], q, p)
        bm = better[:, None]
        r, g = np.where(bm, rq, r), np.where(bm, gq, g)
        ey, ex, r2, inv = np.where(bm, eyq, ey), np.where(bm, exq, ex), np.where(bm, r2q, r2), np.where(bm, invq, inv)
        cost = np.where(better, cq, cost)
        lam = np.clip(np.where(better, lam / 3.0, lam * 4.0), 1e-7, 1e7).astype(_F)
        if np.all(np.abs(step[:, 1:3]) < tol) or not better.any():
            break
    # amplitude standard error for unit white noise with the other parameters known (the matched
    # filter's): 1 / sqrt(sum w g^2). The full covariance would charge the amplitude for its
    # correlation with the local offset over a small disk, which the background does not deserve.
    se = 1.0 / np.sqrt(np.maximum((Wt * g * g).sum(axis=1, dtype=np.float64), 1e-300))
    return p, cost, se


def render(shape: tuple[int, int], y, x, amplitude, sigma, half: int) -> np.ndarray:
    """Sum of Gaussians ``A exp(-r^2 / 2 s^2)`` on an image of ``shape`` (each cut at +-half px)."""
    H, W = shape
    y, x = np.asarray(y, float), np.asarray(x, float)
    amplitude, sigma = np.asarray(amplitude, float), np.asarray(sigma, float)
    if y.size == 0:
        return np.zeros(shape)
    # render into a canvas padded by `half` so no patch needs bounds checks, then crop
    cy = np.clip(np.rint(y).astype(np.int64), -half, H - 1 + half)
    cx = np.clip(np.rint(x).astype(np.int64), -half, W - 1 + half)
    Wp = W + 4 * half + 1
    ar = np.arange(-half, half + 1)
    inv = (-0.5 / sigma ** 2).astype(np.float32)[:, None]
    gy = np.exp(((cy[:, None] + ar[None, :]) - y[:, None]).astype(np.float32) ** 2 * inv)
    gx = np.exp(((cx[:, None] + ar[None, :]) - x[:, None]).astype(np.float32) ** 2 * inv)
    vals = (amplitude.astype(np.float32)[:, None, None] * gy[:, :, None]) * gx[:, None, :]
    base = (cy + 2 * half) * Wp + (cx + 2 * half)
    flat = base[:, None, None] + (ar[:, None] * Wp + ar[None, :])[None]
    out = np.bincount(flat.ravel(), weights=vals.ravel(), minlength=(H + 4 * half + 1) * Wp)
    return out[:(H + 4 * half + 1) * Wp].reshape(H + 4 * half + 1, Wp)[2 * half:2 * half + H, 2 * half:2 * half + W]


def fit_columns(
    image: np.ndarray,
    rc: np.ndarray,
    sigma0: float,
    *,
    passes: int = 2,
    max_shift_px: float | None = None,
    radius_sigma: float = 1.5,
    noise: float = 0.0,
    free_sigma_z: float = float("inf"),
    prune: tuple[float, float] | None = None,
    batch: int | None = None,
    threads: int = 2,
) -> Fit:
    """Refine integer candidates ``rc`` (n, 2) to sub-pixel Gaussian centres (see module docstring).

    ``prune = (k, rel)``: after the first pass, candidates whose amplitude is below ``k`` standard
    errors (``noise`` x unit error) or below ``rel`` x the 99th-percentile amplitude are dropped from
    the neighbour model and from later passes (``ok = False``)."""
    from scipy.spatial import cKDTree

    img = np.asarray(image, dtype=np.float64)
    H, W = img.shape
    n = len(rc)
    if n == 0:
        z = np.zeros(0)
        return Fit(z, z, z, z, z, np.zeros(0, bool), z, z, np.zeros(0, bool))
    s0 = float(sigma0)
    h = max(2, int(np.ceil(radius_sigma * s0)))  # fit patch half-size: the disk fits inside
    h_render = max(2, int(np.ceil(3.0 * s0)))  # neighbour model: +-3 sigma
    pad = max(h, h_render) + 2
    img_p = np.pad(img, pad, mode="edge").astype(_F)
    valid_p = np.pad(np.ones((H, W), dtype=bool), pad, mode="constant", constant_values=False)
    dy, dx = _grid(h)
    r2grid = (dy * dy + dx * dx).astype(_F)
    cy, cx = rc[:, 0].astype(np.int64), rc[:, 1].astype(np.int64)
    dnn = cKDTree(rc).query(rc, k=2)[0][:, 1] if n > 1 else np.full(1, np.inf)
    max_shift = float(max_shift_px) if max_shift_px is not None else max(1.0, 1.2 * s0)
    max_shift = np.minimum(max_shift, np.maximum(0.75, 0.5 * dnn))
    s_lo, s_hi = 0.35 * s0, 3.0 * s0

    y, x = cy.astype(np.float64), cx.astype(np.float64)
    A = np.zeros(n)
    s = np.full(n, s0)
    c = np.zeros(n)
    ok = np.zeros(n, dtype=bool)
    rms = np.full(n, np.nan)
    se = np.full(n, np.inf)
    was_free = np.zeros(n, dtype=bool)
    centre = len(dy) // 2
    active = np.ones(n, dtype=bool)
    if batch is None:  # batches of 1000-8192 columns, at least one per thread
        batch = int(np.clip(np.ceil(n / max(threads, 1)), 1000, 8192))
    model_p = None
    for it in range(passes + 1):
        if it == 1 and prune is not None and ok.any():
            k_z, rel = prune
            ref = float(np.percentile(A[ok], 99))
            active = ok & (A >= k_z * noise * se) & (A >= rel * ref)
            ok &= active
        if it == 0:
            radius = np.clip(0.5 * dnn, 1.5, radius_sigma * s0)
        else:
            radius = np.clip(np.full(n, radius_sigma * s0), 1.5, h)
            good = ok & (A > 0)
            model_p = np.pad(render((H, W), y[good], x[good], A[good], s[good], h_render), pad).astype(_F)
        py = np.clip(np.rint(y).astype(np.int64), 0, H - 1)  # patches follow the current centres
        px = np.clip(np.rint(x).astype(np.int64), 0, W - 1)
        idx_all = np.flatnonzero(active)

        def run(sl, it=it, radius=radius, py=py, px=px, model_p=(model_p if it > 0 else None)):
            k = len(sl)
            D = _patches(img_p, py[sl], px[sl], dy, dx, pad)
            V = _patches(valid_p, py[sl], px[sl], dy, dx, pad)
            ry, rx = y[sl] - py[sl], x[sl] - px[sl]  # current centre relative to the patch centre
            if it > 0:
                M = _patches(model_p, py[sl], px[sl], dy, dx, pad)
                a_own = np.where(ok[sl] & (A[sl] > 0), A[sl], 0.0).astype(_F)[:, None]
                own = a_own * np.exp(-((dy[None, :] - ry[:, None]) ** 2 + (dx[None, :] - rx[:, None]) ** 2)
                                     / (2 * s[sl, None] ** 2)).astype(_F)
                D = D - (M - own)
            Wt = (V & (r2grid[None, :] <= (radius[sl, None] ** 2).astype(_F))).astype(_F)
            lo = np.where(Wt > 0, D, np.inf).min(axis=1)
            lo = np.where(np.isfinite(lo), lo, 0.0)
            if it == 0:
                free = np.zeros(k, dtype=bool)
                p0 = np.stack([np.maximum(D[:, centre] - lo, 1e-12), ry, rx, np.full(k, s0), lo], axis=1)
            else:
                free = ok[sl] & (A[sl] >= free_sigma_z * max(noise, 1e-300) * se[sl])
                p0 = np.stack([np.where(ok[sl], A[sl], np.maximum(D[:, centre] - lo, 1e-12)), ry, rx,
                               np.where(free, s[sl], s0), np.where(ok[sl], c[sl], lo)], axis=1)
            p, cost, se_b = _lm(D, Wt, dy, dx, p0.astype(np.float64), s_lo, s_hi, free,
                                n_iter=12 if it == 0 else 8)
            fy, fx = p[:, 1] + py[sl], p[:, 2] + px[sl]
            shift = np.hypot(fy - cy[sl], fx - cx[sl])
            good = (p[:, 0] > 0) & (shift <= max_shift[sl]) & np.all(np.isfinite(p), axis=1)
            good &= ~free | ((p[:, 3] > s_lo * 1.0001) & (p[:, 3] < s_hi * 0.9999))
            npx = np.maximum(Wt.sum(axis=1, dtype=np.float64), 1.0)
            # centroid fallback (background-subtracted disk)
            w = np.clip(D - lo[:, None], 0, None) * Wt
            ws = w.sum(axis=1, dtype=np.float64)
            with np.errstate(invalid="ignore", divide="ignore"):
                ycom = np.where(ws > 0, (w * dy[None, :]).sum(axis=1) / ws, 0.0) + py[sl]
                xcom = np.where(ws > 0, (w * dx[None, :]).sum(axis=1) / ws, 0.0) + px[sl]
            keep_prev = ~good & ok[sl]  # a column that fitted before keeps that fit
            new = good | ~keep_prev
            y[sl] = np.where(good, fy, np.where(keep_prev, y[sl], ycom))
            x[sl] = np.where(good, fx, np.where(keep_prev, x[sl], xcom))
            A[sl] = np.where(good, p[:, 0], np.where(keep_prev, A[sl], np.maximum(ws / npx, 0.0)))
            s[sl] = np.where(good, p[:, 3], np.where(keep_prev, s[sl], s0))
            c[sl] = np.where(good, p[:, 4], np.where(keep_prev, c[sl], lo))
            rms[sl] = np.where(new, np.sqrt(cost / npx), rms[sl])
            se[sl] = np.where(good, se_b, np.where(keep_prev, se[sl], np.inf))
            was_free[sl] = np.where(good, free, keep_prev & was_free[sl])
            ok[sl] = good | keep_prev

        chunks = [idx_all[b0:b0 + batch] for b0 in range(0, len(idx_all), batch)]
        if threads > 1 and len(chunks) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as ex:
                list(ex.map(run, chunks))
        else:
            for ch in chunks:
                run(ch)
    return Fit(y, x, A, s, c, ok, rms, se, was_free)
