"""Synthetic column images with known truth, for the bench and the tests (not the demo campaign:
that is :mod:`mmlake.synth`).

:func:`lattice_image` renders Gaussian columns of a two-sublattice square lattice (A at ``(i, j) a``,
B at the cell centres, as the [001] projection of an ABO3 perovskite without its O columns), with
per-column Gaussian position jitter, an optional amorphous disk (columns at random positions with the
same density), Poisson noise and optional scan-line x jitter. Returns the image and the truth.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Truth:
    y: np.ndarray
    x: np.ndarray
    sublattice: np.ndarray  # "A" / "B" / "amorphous"
    ideal_y: np.ndarray  # lattice position before jitter (NaN for amorphous columns)
    ideal_x: np.ndarray


def lattice_image(
    shape: tuple[int, int] = (256, 256),
    *,
    a_px: float = 16.0,
    sigma_px: float = 2.0,
    amp_a: float = 400.0,
    amp_b: float = 160.0,
    background: float = 20.0,
    jitter_px: float = 0.0,
    rotation_deg: float = 0.0,
    amorphous_radius_px: float = 0.0,
    row_jitter_px: float = 0.0,
    poisson: bool = True,
    seed: int = 0,
) -> tuple[np.ndarray, Truth]:
    from mmlake.atoms.refine import render

    rng = np.random.default_rng(seed)
    H, W = shape
    th = np.deg2rad(rotation_deg)
    R = np.array([[np.cos(th), -np.sin(th)], [np.sin(th), np.cos(th)]])
    span = int(np.ceil(np.hypot(H, W) / a_px)) + 2
    i, j = np.meshgrid(np.arange(-span, span + 1), np.arange(-span, span + 1), indexing="ij")
    base = np.stack([i.ravel(), j.ravel()], axis=1).astype(float)
    pts, sub = [], []
    for off, lab in (((0.0, 0.0), "A"), ((0.5, 0.5), "B")):
        if lab == "B" and amp_b <= 0:
            continue
        p = ((base + off) * a_px) @ R.T + np.array([H / 2.0, W / 2.0])
        pts.append(p)
        sub.append(np.full(len(p), lab, dtype=object))
    P = np.vstack(pts)
    S = np.concatenate(sub)
    inside = (P[:, 0] > -3 * sigma_px) & (P[:, 0] < H + 3 * sigma_px) & (P[:, 1] > -3 * sigma_px) & (P[:, 1] < W + 3 * sigma_px)
    P, S = P[inside], S[inside]
    ideal = P.copy()
    if amorphous_radius_px > 0:
        c = np.array([H / 2.0, W / 2.0])
        gone = np.hypot(*(P - c).T) < amorphous_radius_px
        n_am = int(gone.sum())
        r = amorphous_radius_px * np.sqrt(rng.uniform(0, 1, n_am))
        t = rng.uniform(0, 2 * np.pi, n_am)
        Q = c + np.stack([r * np.sin(t), r * np.cos(t)], axis=1)
        P, S, ideal = P[~gone], S[~gone], ideal[~gone]
        P = np.vstack([P, Q])
        S = np.concatenate([S, np.full(n_am, "amorphous", dtype=object)])
        ideal = np.vstack([ideal, np.full((n_am, 2), np.nan)])
    if jitter_px > 0:
        lat = S != "amorphous"
        P[lat] += rng.normal(0.0, jitter_px, size=(int(lat.sum()), 2))
    amp = np.where(S == "A", amp_a, np.where(S == "B", amp_b, 0.5 * (amp_a + amp_b)))
    img = render(shape, P[:, 0], P[:, 1], amp, np.full(len(P), sigma_px), int(np.ceil(4 * sigma_px))) + background
    if row_jitter_px > 0:
        from mmlake.atoms.scan import correct_rows

        img = correct_rows(img, rng.normal(0.0, row_jitter_px, size=H))
    if poisson:
        img = rng.poisson(np.clip(img, 0, None)).astype(np.float64)
    keep = (P[:, 0] >= 0) & (P[:, 0] <= H - 1) & (P[:, 1] >= 0) & (P[:, 1] <= W - 1)
    return img.astype(np.float32), Truth(P[keep, 0], P[keep, 1], S[keep], ideal[keep, 0], ideal[keep, 1])
