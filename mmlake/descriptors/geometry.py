"""Region geometry on the chip grid: the largest square inside a region (for its FFT) and the region's
core (the chips that do not touch another label, for a composition that does not bleed)."""

from __future__ import annotations

import numpy as np


def largest_square(mask: np.ndarray) -> tuple[int, int, int]:
    """Largest all-True square of a 2-D boolean mask: ``(side, row, col)`` of its top-left cell.

    Vectorised dynamic programme over the side length: ``S_1 = mask``; ``S_{k+1}[i, j] = S_k[i, j]
    & S_k[i+1, j] & S_k[i, j+1] & S_k[i+1, j+1]`` (a (k+1)-square is four overlapping k-squares),
    each step one numpy expression over the whole grid; it stops at the first empty ``S``. Ties go
    to the first top-left cell in row-major (chip_index) order. ``(0, -1, -1)`` for an empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (n_rows, n_cols), got shape {m.shape}")
    if not m.any():
        return 0, -1, -1
    cur, side = m, 1
    while min(cur.shape) > 1:
        nxt = cur[:-1, :-1] & cur[1:, :-1] & cur[:-1, 1:] & cur[1:, 1:]
        if not nxt.any():
            break
        cur, side = nxt, side + 1
    r, c = np.unravel_index(int(np.argmax(cur)), cur.shape)
    return side, int(r), int(c)


def core_mask(labels2d: np.ndarray, label: int, erosion: int = 1) -> np.ndarray:
    """Chips of ``label`` whose 8 neighbours (repeated ``erosion`` times) all carry ``label`` too.

    The region is eroded by its boundary with every other label, unassigned chips (< 0) included;
    the image edge does not erode (beyond it there is nothing to bleed in). A chip straddling an
    interface -- the chips that carry the neighbour's signal into a region's summed spectrum --
    always touches a chip of the other label, so the core holds none of them."""
    lab = np.asarray(labels2d)
    if lab.ndim != 2:
        raise ValueError(f"labels2d must be 2-D (n_rows, n_cols), got shape {lab.shape}")
    if not (isinstance(erosion, (int, np.integer)) and erosion >= 0):
        raise ValueError(f"erosion must be an integer >= 0, got {erosion!r}")
    m = lab == label
    for _ in range(int(erosion)):
        p = np.pad(m, 1, mode="edge")
        out = m.copy()
        for dy in (-1, 0, 1):
            for dx in (-1, 0, 1):
                out &= p[1 + dy:1 + dy + m.shape[0], 1 + dx:1 + dx + m.shape[1]]
        m = out
    return m
