"""The lattice around every column: a local affine lattice fitted to its neighbours.

1. **Global basis** (:func:`global_basis`): the vectors from each column to its 6 nearest neighbours,
   folded into a half plane (``v`` and ``-v`` are the same lattice direction), histogrammed; the two
   shortest non-collinear modes holding at least 25 % (``a1``: 40 %) of the largest mode's count,
   refined as the mean of the vectors within 20 % of them, Lagrange-reduced.
2. **Local fit** (:func:`local_lattice`), all columns at once: each column's ``k`` nearest
   neighbours within ``1.75 max(|a1|, |a2|)`` get integer indices ``n = round(B^-1 (r_j - r_i))``;
   those within ``index_tol x |a|min`` of the lattice point they index are used to fit, by least
   squares, ``r_j - r_i = B_i n - u_i`` (a local basis ``B_i`` and the column's displacement ``u_i``
   from the ideal lattice point its neighbours define; the column itself is not used for its own
   ideal position). Indexing is redone once with ``B_i``, so rotated or strained domains index
   against their own lattice, not the image's.
3. A column **fits a lattice** when at least ``max(4, 0.75 x expected)`` neighbours index (expected:
   the lattice points of the search disk, those outside the image not counted when ``shape`` is given), their
   RMS residual is below ``0.15 |a|min`` and ``|u_i| < 0.3 |a|min``.
4. **Strain**: ``F = B_i B_ref^-1`` with ``B_ref`` the median local basis of the columns that fit
   (the image's own reference lattice); ``e = (F + F^T) / 2 - I`` in image axes x (right), y (down);
   rotation = ``(F_xy - F_yx) / 2`` in degrees (positive: counter-clockwise on screen, where y
   points down).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class LocalLattice:
    basis: np.ndarray  # (2, 2) reference basis, rows a1, a2 as (dy, dx) px
    a1: np.ndarray  # (n, 2) local basis vector 1 (dy, dx) px, NaN where no fit
    a2: np.ndarray  # (n, 2)
    displacement: np.ndarray  # (n, 2) observed - ideal (dy, dx) px, NaN where no fit
    n_neighbours: np.ndarray  # (n,) neighbours that index
    residual: np.ndarray  # (n,) RMS residual of the neighbours (px), NaN where no fit
    fits: np.ndarray  # (n,) bool
    nn_distance: np.ndarray  # (n,) distance to the nearest other column (px)
    strain: np.ndarray  # (n, 3) exx, eyy, exy
    rotation_deg: np.ndarray  # (n,)
    first_shell: np.ndarray  # (n, k) indices of neighbours at n = +-(1,0), +-(0,1); -1 = none


def _fold(v: np.ndarray) -> np.ndarray:
    """Vectors (dy, dx) mapped into the half plane dy > 0 or (dy == 0 and dx >= 0)."""
    flip = (v[:, 0] < 0) | ((v[:, 0] == 0) & (v[:, 1] < 0))
    out = v.copy()
    out[flip] *= -1
    return out


def global_basis(points: np.ndarray) -> np.ndarray | None:
    """Reference basis (2, 2) rows (dy, dx) of the dominant lattice, or None (fewer than 8 columns,
    or no two non-collinear directions)."""
    from scipy import ndimage as ndi
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64)
    if len(pts) < 8:
        return None
    k = min(7, len(pts))
    d, idx = cKDTree(pts).query(pts, k=k)
    v = (pts[idx[:, 1:]] - pts[:, None, :]).reshape(-1, 2)
    dist = d[:, 1:].ravel()
    ok = np.isfinite(dist) & (dist > 0)
    v, dist = v[ok], dist[ok]
    d0 = float(np.median(d[:, 1]))
    if not d0 > 0:
        return None
    lim = 2.2 * d0
    bw = 0.06 * d0
    nb = int(np.ceil(2 * lim / bw))
    fv = _fold(v)
    Hh, ey, ex = np.histogram2d(fv[:, 0], fv[:, 1], bins=[nb // 2 + 1, nb], range=[[-bw, lim], [-lim, lim]])
    Hh = ndi.gaussian_filter(Hh, 1.0)
    peaks = (Hh == ndi.maximum_filter(Hh, size=3)) & (Hh > 0.25 * Hh.max())
    py, px = np.nonzero(peaks)
    cy = 0.5 * (ey[py] + ey[py + 1])
    cx = 0.5 * (ex[px] + ex[px + 1])
    cnt = Hh[py, px]
    modes = np.column_stack([cy, cx])
    lens = np.hypot(cy, cx)
    good = lens > 0.3 * d0
    modes, cnt, lens = modes[good], cnt[good], lens[good]
    if len(modes) < 2:
        return None

    def refine(m):
        for _ in range(2):
            near = np.hypot(*(fv - m).T) < 0.2 * np.hypot(*m)
            if near.sum() < 3:
                break
            m = fv[near].mean(axis=0)
        return m

    order = np.argsort(lens)
    a1 = None
    for i in order:
        if cnt[i] >= 0.4 * cnt.max():
            a1 = refine(modes[i])
            break
    if a1 is None:
        return None
    a2 = None
    for i in order:
        m = modes[i]
        sin = abs(a1[0] * m[1] - a1[1] * m[0]) / (np.hypot(*a1) * np.hypot(*m) + 1e-300)
        if sin > 0.3 and cnt[i] >= 0.25 * cnt.max():
            a2 = refine(m)
            break
    if a2 is None:
        return None
    return _reduce(np.vstack([a1, a2]))


def _reduce(B: np.ndarray) -> np.ndarray:
    """Lagrange-Gauss reduction of a 2-D basis (rows): shortest, most orthogonal pair."""
    a, b = B[0].copy(), B[1].copy()
    for _ in range(20):
        if a @ a > b @ b:
            a, b = b, a
        mu = np.round((a @ b) / (a @ a))
        if mu == 0:
            break
        b = b - mu * a
    if a @ a > b @ b:
        a, b = b, a
    return np.vstack([a, b])


def _solve_local(d, nidx, w):
    """Batched weighted least squares ``d = n1 a1 + n2 a2 - u`` per column (d, nidx: (n, k, 2);
    w: (n, k) 0/1). Returns a1, a2, u (n, 2), RMS residual, neighbour count, solvable, dof."""
    n = d.shape[0]
    X = np.concatenate([nidx, np.ones(nidx.shape[:2] + (1,))], axis=2)  # (n, k, 3)
    Xw = X * w[..., None]
    XtX = Xw.transpose(0, 2, 1) @ X  # (n, 3, 3)
    XtY = Xw.transpose(0, 2, 1) @ d  # (n, 3, 2)
    cnt = w.sum(axis=1)
    det = np.linalg.det(XtX[:, :2, :2]) if n else np.zeros(0)
    solvable = (cnt >= 3) & (np.abs(det) > 1e-6)
    coef = np.full((n, 3, 2), np.nan)
    if solvable.any():
        coef[solvable] = np.linalg.solve(XtX[solvable] + 1e-12 * np.eye(3), XtY[solvable])
    pred = X @ np.nan_to_num(coef)
    res = ((d - pred) ** 2).sum(axis=2)
    dof = np.maximum(cnt - 3, 1)
    rms = np.where(solvable, np.sqrt((res * w).sum(axis=1) / np.maximum(cnt, 1)), np.nan)
    # d = a1 * n1 + a2 * n2 + t, t = -u
    return coef[:, 0, :], coef[:, 1, :], -coef[:, 2, :], rms, cnt, solvable, dof


def local_lattice(
    points: np.ndarray,
    *,
    basis: np.ndarray | None = None,
    shape: tuple[int, int] | None = None,
    k: int = 12,
    index_tol: float = 0.3,
    fit_tol: float = 0.15,
    disp_tol: float = 0.3,
) -> LocalLattice:
    """Local lattice around every column (see module docstring). ``points``: (n, 2) (y, x) px."""
    from scipy.spatial import cKDTree

    pts = np.asarray(points, dtype=np.float64).reshape(-1, 2)
    n = len(pts)
    nan2 = np.full((n, 2), np.nan)
    nn = cKDTree(pts).query(pts, k=2)[0][:, 1] if n > 1 else np.full(n, np.nan)
    B = global_basis(pts) if basis is None else np.asarray(basis, dtype=np.float64)
    empty = LocalLattice(np.full((2, 2), np.nan) if B is None else B, nan2, nan2.copy(), nan2.copy(),
                         np.zeros(n, int), np.full(n, np.nan), np.zeros(n, bool), nn,
                         np.full((n, 3), np.nan), np.full(n, np.nan), np.full((n, 4), -1))
    if B is None or n < 5:
        return empty
    amin = float(min(np.hypot(*B[0]), np.hypot(*B[1])))
    amax = float(max(np.hypot(*B[0]), np.hypot(*B[1])))
    kk = min(k + 1, n)
    dist, idx = cKDTree(pts).query(pts, k=kk, distance_upper_bound=1.75 * amax)
    dist, idx = dist[:, 1:], idx[:, 1:]
    have = np.isfinite(dist)
    idx_safe = np.where(have, idx, 0)
    d = pts[idx_safe] - pts[:, None, :]  # (n, k, 2) (dy, dx)
    d[~have] = 0.0

    # first indexing with the global basis
    Binv = np.linalg.inv(B.T)  # d = B^T n  (B rows a1, a2)
    nidx = np.rint(d @ Binv.T)
    e = d - nidx @ B
    w = (have & (np.hypot(e[..., 0], e[..., 1]) < index_tol * amin) & (np.abs(nidx).sum(axis=2) > 0)).astype(float)
    a1, a2, u, rms, cnt, solv, _ = _solve_local(d, nidx, w)
    # re-index against each column's own lattice
    Bl = np.stack([a1, a2], axis=1)  # (n, 2, 2) rows
    okB = solv & np.all(np.isfinite(Bl), axis=(1, 2))
    Bl_use = np.where(okB[:, None, None], Bl, B[None])
    det = np.linalg.det(Bl_use)
    okB &= np.abs(det) > 0.25 * abs(np.linalg.det(B))
    Bl_use = np.where(okB[:, None, None], Bl_use, B[None])
    u_use = np.where(okB[:, None], u, 0.0)
    Binv_l = np.linalg.inv(Bl_use.transpose(0, 2, 1))  # (n, 2, 2)
    nidx = np.rint(np.einsum("nij,nkj->nki", Binv_l, d + u_use[:, None, :]))
    e = d + u_use[:, None, :] - np.einsum("nki,nij->nkj", nidx, Bl_use)
    amin_l = np.minimum(np.hypot(*Bl_use[:, 0].T), np.hypot(*Bl_use[:, 1].T))
    w = (have & (np.hypot(e[..., 0], e[..., 1]) < index_tol * amin_l[:, None])
         & (np.abs(nidx).sum(axis=2) > 0)).astype(float)
    a1, a2, u, rms, cnt, solv, _ = _solve_local(d, nidx, w)

    # expected neighbour count within the search radius for the local lattice
    ar = np.arange(-3, 4)
    g1, g2 = np.meshgrid(ar, ar, indexing="ij")
    G = np.stack([g1.ravel(), g2.ravel()], axis=1).astype(float)
    G = G[np.abs(G).sum(axis=1) > 0]
    vec = G @ B  # (m, 2)
    vec = vec[np.hypot(*vec.T) <= 1.75 * amax]
    if shape is not None:  # neighbours that would lie outside the image cannot be expected
        tgt = pts[:, None, :] + vec[None, :, :]
        inside = ((tgt[..., 0] >= -0.5) & (tgt[..., 0] <= shape[0] - 0.5)
                  & (tgt[..., 1] >= -0.5) & (tgt[..., 1] <= shape[1] - 0.5))
        expected = np.minimum(inside.sum(axis=1), kk - 1)
    else:
        expected = np.full(n, min(len(vec), kk - 1))
    umag = np.hypot(u[:, 0], u[:, 1])
    fits = solv & (cnt >= np.maximum(4, 0.75 * expected)) & (rms < fit_tol * amin) & (umag < disp_tol * amin)

    # reference lattice and strain
    Bl = np.stack([a1, a2], axis=1)
    if fits.sum() >= 3:
        Bref = np.median(Bl[fits], axis=0)
    else:
        Bref = B
    strain = np.full((n, 3), np.nan)
    rot = np.full(n, np.nan)
    if solv.any():
        # in (x, y) coordinates: columns of M are the basis vectors
        def xy(Bm):
            return np.stack([Bm[..., 1], Bm[..., 0]], axis=-1).swapaxes(-1, -2)  # (.., 2[x,y], 2[a1,a2])

        Mref_inv = np.linalg.inv(xy(Bref))
        F = xy(Bl[solv]) @ Mref_inv
        strain[solv, 0] = F[:, 0, 0] - 1.0
        strain[solv, 1] = F[:, 1, 1] - 1.0
        strain[solv, 2] = 0.5 * (F[:, 0, 1] + F[:, 1, 0])
        # y points down on screen: a counter-clockwise rotation on screen is F_xy > 0
        rot[solv] = np.degrees(0.5 * (F[:, 0, 1] - F[:, 1, 0]))

    # first-shell neighbours (index +-(1,0), +-(0,1)) for the sublattice test
    first = (np.abs(nidx).sum(axis=2) == 1) & (w > 0)
    fs = np.full((n, 4), -1)
    for j in range(first.shape[1]):
        col = np.where(first[:, j], idx_safe[:, j], -1)
        slot = np.argmax(fs < 0, axis=1)
        put = (col >= 0) & (fs[np.arange(n), slot] < 0)
        fs[np.arange(n)[put], slot[put]] = col[put]
    disp = np.where(solv[:, None], u, np.nan)
    return LocalLattice(Bref, np.where(solv[:, None], a1, np.nan), np.where(solv[:, None], a2, np.nan), disp,
                        cnt.astype(int), rms, fits, nn, strain, rot, fs)
