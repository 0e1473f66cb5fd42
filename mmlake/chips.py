"""Chipping: non-overlapping square tiles of the registered grid (preprint section IV.C).

chip_index = row * n_cols + col, row = y (down), col = x (right) — one convention everywhere (the
preprint's public scripts swapped it between two chipping paths). The EDS cube is summed per chip in
row bands of `chip_px` scan lines, so a 512x512x4096 spectrum image never has to be dense in memory:
peak memory is one band (chip_px x W x channels), not the cube.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmlake.errors import SessionError


@dataclass(frozen=True)
class ChipGrid:
    chip_px: int
    n_rows: int
    n_cols: int
    origin_y: int = 0
    origin_x: int = 0

    @classmethod
    def fit(cls, shape: tuple[int, int], chip_px: int, session_id: str = "?") -> "ChipGrid":
        """The largest grid of chip_px tiles inside an image of `shape` (remainder dropped)."""
        h, w = shape
        if not isinstance(chip_px, (int, np.integer)) or chip_px < 2:
            raise SessionError(session_id, f"chip size {chip_px!r} px is invalid; it must be an integer >= 2")
        if chip_px > min(h, w):
            raise SessionError(session_id, f"chip size {chip_px} px is larger than the image ({h}x{w} px); "
                                           "set a smaller chip_px in session.yaml")
        return cls(int(chip_px), h // chip_px, w // chip_px)

    @property
    def n_chips(self) -> int:
        return self.n_rows * self.n_cols

    def rows_cols(self) -> tuple[np.ndarray, np.ndarray]:
        idx = np.arange(self.n_chips)
        return idx // self.n_cols, idx % self.n_cols

    def index(self, row: int, col: int) -> int:
        return row * self.n_cols + col

    def crop(self, image: np.ndarray) -> np.ndarray:
        """The part of a (H, W, ...) array the grid covers."""
        p = self.chip_px
        return image[self.origin_y:self.origin_y + self.n_rows * p, self.origin_x:self.origin_x + self.n_cols * p]

    def tiles(self, image: np.ndarray) -> np.ndarray:
        """(H, W) image -> (n_chips, chip_px, chip_px) stack, chip order row-major."""
        p = self.chip_px
        cropped = self.crop(image)
        return (cropped.reshape(self.n_rows, p, self.n_cols, p).swapaxes(1, 2)
                .reshape(self.n_chips, p, p))

    def untile(self, stack: np.ndarray) -> np.ndarray:
        """(n_chips, chip_px, chip_px) stack -> the covered image (inverse of `tiles`)."""
        p = self.chip_px
        return (np.asarray(stack).reshape(self.n_rows, self.n_cols, p, p).swapaxes(1, 2)
                .reshape(self.n_rows * p, self.n_cols * p))

    def chip_map(self, values: np.ndarray) -> np.ndarray:
        """Per-chip values -> (n_rows, n_cols) map."""
        return np.asarray(values).reshape(self.n_rows, self.n_cols)

    def upsample(self, labels: np.ndarray, shape: tuple[int, int], fill: int = -1) -> np.ndarray:
        """Per-chip labels -> label map at pixel resolution (uncovered margin = fill)."""
        out = np.full(shape, fill, dtype=np.asarray(labels).dtype if np.asarray(labels).dtype.kind in "iu" else np.int32)
        block = np.kron(self.chip_map(labels), np.ones((self.chip_px, self.chip_px), dtype=out.dtype))
        out[self.origin_y:self.origin_y + block.shape[0], self.origin_x:self.origin_x + block.shape[1]] = block
        return out


def centred_windows(image: np.ndarray, grid: ChipGrid, window_px: int):
    """Square windows of max(window_px, chip_px) centred on each chip, image edges mirrored.

    Returns (w, get): `get(slice)` gives the (k, w, w) float64 windows of those chips. Used where a
    chip is smaller than the few lattice periods an FFT needs (the fft encoder, region crystallinity).
    """
    img = grid.crop(np.asarray(image, dtype=np.float64))
    p = grid.chip_px
    w = pad = max(int(window_px), p)
    padded = np.pad(img, pad, mode="reflect" if min(img.shape) > pad else "wrap")
    rows, cols = grid.rows_cols()
    top = rows * p + (p - w) // 2 + pad
    left = cols * p + (p - w) // 2 + pad
    ar = np.arange(w)

    def get(sl: slice) -> np.ndarray:
        t, l = top[sl], left[sl]
        return padded[(t[:, None] + ar)[:, :, None], (l[:, None] + ar)[:, None, :]]

    return w, get


def check_support(support: dict[str, tuple[tuple[int, int], ...]], grid: ChipGrid, session_id: str) -> None:
    """Few-shot support chips must lie on the grid; say which one does not and how big the grid is."""
    for cls, chips in support.items():
        for r, c in chips:
            if not (0 <= r < grid.n_rows and 0 <= c < grid.n_cols):
                raise SessionError(session_id, f"support chip [{r}, {c}] of class {cls!r} is outside the "
                                               f"chip grid ({grid.n_rows} rows x {grid.n_cols} cols, "
                                               f"{grid.chip_px} px chips); fix 'support' in session.yaml")


def majority_labels(label_map: np.ndarray, grid: ChipGrid) -> np.ndarray:
    """Majority label of each chip of an integer label map; ties go to the smaller label.

    Vectorised: one np.bincount over (chip, label) pairs of all pixels.
    """
    tiles = grid.tiles(np.asarray(label_map)).reshape(grid.n_chips, -1).astype(np.int64)
    offset = int(tiles.min())
    tiles -= offset
    n_labels = int(tiles.max()) + 1
    flat = (np.arange(grid.n_chips, dtype=np.int64)[:, None] * n_labels + tiles).reshape(-1)
    counts = np.bincount(flat, minlength=grid.n_chips * n_labels).reshape(grid.n_chips, n_labels)
    return counts.argmax(axis=1) + offset


def sum_eds_chips(
    cube: Any,
    grid: ChipGrid,
    session_id: str = "?",
    progress: Callable[[int, int], None] | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum a (H, W, C) spectrum image per chip, streaming one band of chip rows at a time.

    `cube` may be a numpy array, a dask array or anything sliceable that returns numpy on
    `np.asarray` (HyperSpy lazy data is a dask array). Returns (sums (n_chips, C) float32,
    per-pixel total counts (H', W') float32 over the covered area).
    """
    p, nc = grid.chip_px, grid.n_cols
    channels = cube.shape[2]
    sums = np.empty((grid.n_chips, channels), dtype=np.float32)
    totals = np.empty((grid.n_rows * p, nc * p), dtype=np.float32)
    for r in range(grid.n_rows):
        y0 = grid.origin_y + r * p
        band = cube[y0:y0 + p, grid.origin_x:grid.origin_x + nc * p]
        try:
            band = band.compute() if hasattr(band, "compute") else np.asarray(band)
        except Exception as exc:
            raise SessionError(session_id, f"cannot read EDS rows {y0}-{y0 + p}: {type(exc).__name__}: {exc}. "
                                           "The spectrum image may be truncated or corrupt") from exc
        if band.dtype.kind == "f" and not np.all(np.isfinite(band)):
            raise SessionError(session_id, f"the EDS spectrum image has NaN or infinite counts in rows {y0}-{y0 + p}")
        sums[r * nc:(r + 1) * nc] = band.reshape(p, nc, p, channels).sum(axis=(0, 2), dtype=np.float64)
        totals[r * p:(r + 1) * p] = band.sum(axis=2, dtype=np.float64)
        if progress:
            progress(r + 1, grid.n_rows)
    if not totals.sum() > 0:
        raise SessionError(session_id, "the EDS spectrum image has zero counts everywhere; check the "
                                       "acquisition or drop 'eds' from session.yaml to ingest HAADF only")
    return sums, totals
