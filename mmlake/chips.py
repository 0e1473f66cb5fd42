"""Chipping: non-overlapping square tiles of the registered grid (preprint section IV.C).

chip_index = row * n_cols + col, row = y (down), col = x (right) — one convention everywhere (the
preprint's public scripts swapped it between two chipping paths). The EDS cube is summed per chip
streaming, so a 512x512x4096 spectrum image is never dense in memory: an HDF5-backed cube (.hspy)
chunk by chunk straight from the file in several threads (peak: a few chunks per thread), any other
cube in row bands of `chip_px` scan lines (peak: one band, chip_px x W x channels).
"""

from __future__ import annotations

import math
import os
import sys
import threading
import zlib
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from mmlake.errors import SessionError
from mmlake.lazyread import materialize


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
    workers: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Sum a (H, W, C) spectrum image per chip, streaming: never the whole cube in memory.

    `cube` may be a numpy array, an h5py dataset, a dask array or anything sliceable that returns
    numpy on `np.asarray` (HyperSpy lazy data is a dask array). Returns (sums (n_chips, C) float32,
    per-pixel total counts (H', W') float32 over the covered area).

    When the cube is a plain view of an HDF5 dataset (HyperSpy's lazy .hspy, or an h5py dataset)
    stored uncompressed or with HyperSpy's default filters (shuffle + deflate), the chunks are read
    straight from the file with `os.pread` and inflated (libdeflate where present, else zlib:
    `_Inflate`) in `workers` threads (default: the cores this process may use; reads, inflate and
    numpy sums release the GIL), chunk-major in file order: one pass over the file whatever the chunk
    shape, a few chunks in memory per thread. A shuffled chunk is summed per byte plane (value =
    sum of plane_k * 256**k), which skips un-shuffling and the all-zero high bytes of small counts.
    Other cubes go band by band (one chip row of scan lines at a time, the dask scheduler reading it).
    """
    p = grid.chip_px
    n_workers = max(1, int(workers) if workers else _cores())
    plan = _hdf5_plan(cube)
    if plan is not None and cube.shape[0] >= grid.origin_y + grid.n_rows * p and \
            cube.shape[1] >= grid.origin_x + grid.n_cols * p:
        acc = _Accumulator(grid, cube.shape[2], plan.dtype)
        _reduce_hdf5(plan, acc, session_id, progress, n_workers)
    else:
        acc = _Accumulator(grid, cube.shape[2], np.dtype(getattr(cube, "dtype", np.float64)))
        _reduce_bands(cube, acc, session_id, progress)
    sums, totals = acc.result()
    if not totals.sum(dtype=np.float64) > 0:
        raise SessionError(session_id, "the EDS spectrum image has zero counts everywhere; check the "
                                       "acquisition or drop 'eds' from session.yaml to ingest HAADF only")
    return sums, totals


def pixel_totals(cube: Any, session_id: str = "?", workers: int | None = None) -> np.ndarray:
    """Total counts per pixel (H, W) float64 of a (H, W, C) spectrum image, streaming like
    `sum_eds_chips` (the fast HDF5 path where it applies). Raises SessionError for unreadable
    chunks or NaN/infinite counts (float cubes); zero counts are the caller's to judge."""
    h, w = int(cube.shape[0]), int(cube.shape[1])
    grid = ChipGrid(1, h, w)
    plan = _hdf5_plan(cube)
    acc = _Accumulator(grid, cube.shape[2], plan.dtype if plan is not None else
                       np.dtype(getattr(cube, "dtype", np.float64)), chip_sums=False)
    if plan is not None:
        _reduce_hdf5(plan, acc, session_id, None, max(1, int(workers) if workers else _cores()))
    else:
        step = max(1, min(h, (64 << 20) // max(1, w * cube.shape[2] * 8)))
        for y0 in range(0, h, step):
            band = cube[y0:y0 + step]
            try:
                band = materialize(band)
            except Exception as exc:
                raise SessionError(session_id, f"cannot read EDS rows {y0}-{y0 + step}: {type(exc).__name__}: "
                                               f"{exc}. The spectrum image may be truncated or corrupt") from exc
            acc.add(band.view(np.uint8) if band.dtype.kind == "b" else band, y0, 0, session_id=session_id)
    return acc.totals.astype(np.float64)


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


_U16, _U32 = 1 << 16, 1 << 32


def _acc_dtype(bound: int) -> np.dtype:
    """Smallest unsigned accumulator that holds sums up to `bound` exactly (numpy adds without a
    cast when the accumulator has the input's type: uint16 sums of uint8/uint16 run 3-5x faster)."""
    return np.dtype(np.uint16 if bound < _U16 else np.uint32 if bound < _U32 else np.uint64)


class _Accumulator:
    """Chip sums and per-pixel totals over the covered area, filled block by block.

    A block is any (rows, cols, channels) box of the cube given with its offset; it may straddle chip
    boundaries (HDF5 chunks need not be aligned with chips). Integer cubes are summed exactly in
    integers (uint16 accumulation where the bounds allow it, checked), float cubes in float64.
    Blocks may be added from several threads: each chip row has its own lock.
    """

    def __init__(self, grid: ChipGrid, channels: int, dtype: np.dtype, chip_sums: bool = True):
        self.grid, self.channels, self.chip_sums = grid, int(channels), chip_sums
        self.kind = "f" if dtype.kind not in "iub" else ("i" if dtype.kind == "i" else "u")
        p = grid.chip_px
        vmax = (1 << (8 * dtype.itemsize)) - 1 if self.kind == "u" else None
        if self.kind == "f":
            self.sums_dtype = self.tot_dtype = np.dtype(np.float64)
        elif self.kind == "i":
            self.sums_dtype = self.tot_dtype = np.dtype(np.int64)
        else:
            self.sums_dtype = _acc_dtype(p * p * vmax) if p * p * vmax < _U32 else np.dtype(np.uint64)
            self.tot_dtype = _acc_dtype(self.channels * vmax) if self.channels * vmax < _U32 else np.dtype(np.uint64)
            self.sums_dtype = np.dtype(np.uint32) if self.sums_dtype.itemsize < 4 else self.sums_dtype
            self.tot_dtype = np.dtype(np.uint32) if self.tot_dtype.itemsize < 4 else self.tot_dtype
        self.sums = np.zeros((grid.n_chips if chip_sums else 0, self.channels), dtype=self.sums_dtype)
        self.totals = np.zeros((grid.n_rows * p, grid.n_cols * p), dtype=self.tot_dtype)
        self.locks = [threading.Lock() for _ in range(grid.n_rows)]
        self._col_cache: dict = {}

    def _cols(self, x0: int, width: int):
        """Column layout of a block: covered columns [xa, xb), its chip columns k0..k1-1 and the
        (start, end) of each chip's share relative to xa. Cached: blocks repeat the same few layouts."""
        key = (x0, width)
        hit = self._col_cache.get(key)
        if hit is None:
            g, p = self.grid, self.grid.chip_px
            xa, xb = max(x0, g.origin_x), min(x0 + width, g.origin_x + g.n_cols * p)
            if xa >= xb:
                hit = (xa, xb, 0, 0, [], np.zeros(0, dtype=np.intp))
            else:
                k0, k1 = (xa - g.origin_x) // p, (xb - 1 - g.origin_x) // p + 1
                cuts = [0] + [g.origin_x + k * p - xa for k in range(k0 + 1, k1)] + [xb - xa]
                hit = (xa, xb, k0, k1, list(zip(cuts[:-1], cuts[1:])), np.array(cuts[:-1], dtype=np.intp))
            self._col_cache[key] = hit
        return hit

    def add(self, block: np.ndarray, y0: int, x0: int, c0: int = 0, weight: int = 1, vmax: int | None = None,
            session_id: str = "?") -> None:
        """Add `block` (rows, cols, channels) whose first element is cube[y0, x0, c0], times `weight`
        (a byte plane of a shuffled chunk counts 256**k). `vmax` bounds its values if known."""
        g, p = self.grid, self.grid.chip_px
        ya, yb = max(y0, g.origin_y), min(y0 + block.shape[0], g.origin_y + g.n_rows * p)
        xa, xb, k0, k1, segs, starts = self._cols(x0, block.shape[1])
        cb = min(block.shape[2], self.channels - c0)
        if ya >= yb or xa >= xb or cb <= 0:
            return
        block = block[ya - y0:yb - y0, xa - x0:xb - x0, :cb]
        floats = self.kind == "f" or block.dtype.kind == "f"
        signed = not floats and block.dtype.kind == "i" and block.size and int(block.min()) < 0
        if not floats and not signed and vmax is None:
            vmax = int(block.max()) if block.size else 0
        if not self.chip_sums:  # per-pixel totals only
            tot = block.sum(axis=2, dtype=np.float64 if floats else np.int64 if signed else _acc_dtype(cb * vmax))
            if floats and not np.all(np.isfinite(tot)):
                raise SessionError(session_id, f"the EDS spectrum image has NaN or infinite counts in rows {ya}-{yb}")
            ty, tx = ya - g.origin_y, xa - g.origin_x
            with self.locks[(ya - g.origin_y) // p]:
                self.totals[ty:ty + tot.shape[0], tx:tx + tot.shape[1]] += (
                    tot if weight == 1 else tot.astype(self.tot_dtype) * self.tot_dtype.type(weight))
            return
        for r in range((ya - g.origin_y) // p, (yb - 1 - g.origin_y) // p + 1):
            ra, rb = max(ya, g.origin_y + r * p) - ya, min(yb, g.origin_y + (r + 1) * p) - ya
            blk = block[ra:rb]
            if floats or signed:
                wide = np.float64 if floats else np.int64
                cs = np.add.reduceat(blk.sum(axis=0, dtype=wide), starts, axis=0)
                tot = blk.sum(axis=2, dtype=wide)
                if floats and not (np.all(np.isfinite(cs)) and np.all(np.isfinite(tot))):
                    raise SessionError(session_id, f"the EDS spectrum image has NaN or infinite counts in rows "
                                                   f"{ya + ra}-{ya + rb}")
            else:
                # exact unsigned sums in the narrowest accumulator (uint16 when a chip's sum fits: no cast)
                cs = np.empty((len(segs), cb), dtype=_acc_dtype((rb - ra) * p * vmax))
                for i, (a, b) in enumerate(segs):
                    blk[:, a:b].sum(axis=(0, 1), dtype=cs.dtype, out=cs[i])
                tot = blk.sum(axis=2, dtype=np.uint16)
                # uint16 totals wrap only where a pixel reaches 65536 (then their sum falls short)
                if cb * vmax >= _U16 and int(tot.sum(dtype=np.uint64)) != int(cs.sum(dtype=np.uint64)):
                    tot = blk.sum(axis=2, dtype=_acc_dtype(cb * vmax))
            ty, tx = ya + ra - g.origin_y, xa - g.origin_x
            with self.locks[r]:
                dst = self.sums[r * g.n_cols + k0:r * g.n_cols + k1, c0:c0 + cb]
                tdst = self.totals[ty:ty + tot.shape[0], tx:tx + tot.shape[1]]
                if weight == 1:
                    dst += cs
                    tdst += tot
                else:
                    dst += cs.astype(self.sums_dtype) * self.sums_dtype.type(weight)
                    tdst += tot.astype(self.tot_dtype) * self.tot_dtype.type(weight)

    def result(self) -> tuple[np.ndarray, np.ndarray]:
        return self.sums.astype(np.float32), self.totals.astype(np.float32)


def _reduce_bands(cube: Any, acc: _Accumulator, session_id: str, progress) -> None:
    """Band by band: one chip row of scan lines (chip_px x W x C) at a time."""
    g, p = acc.grid, acc.grid.chip_px
    for r in range(g.n_rows):
        y0 = g.origin_y + r * p
        band = cube[y0:y0 + p, g.origin_x:g.origin_x + g.n_cols * p]
        try:
            band = materialize(band)
        except Exception as exc:
            raise SessionError(session_id, f"cannot read EDS rows {y0}-{y0 + p}: {type(exc).__name__}: {exc}. "
                                           "The spectrum image may be truncated or corrupt") from exc
        band = np.asarray(band)
        if band.dtype.kind == "f" and not np.all(np.isfinite(band)):
            raise SessionError(session_id, f"the EDS spectrum image has NaN or infinite counts in rows {y0}-{y0 + p}")
        if band.dtype.kind == "b":
            band = band.astype(np.uint8)
        acc.add(band, y0, g.origin_x, session_id=session_id)
        if progress:
            progress(r + 1, g.n_rows)


# --- HDF5 fast path -----------------------------------------------------------------------------

_H5Z_DEFLATE, _H5Z_SHUFFLE = 1, 2


@dataclass
class _Hdf5Plan:
    """Where every stored chunk of an HDF5 dataset lies in its file, and how it is encoded."""

    path: str
    shape: tuple[int, ...]
    dtype: np.dtype
    chunk: tuple[int, ...]
    filters: tuple[int, ...]          # pipeline order (HDF5 applies them in this order when writing)
    chunks: list[tuple[tuple[int, ...], int, int, int]]  # (offset, filter mask, byte offset, stored bytes)


def _h5py_dataset(cube: Any):
    """The h5py dataset behind `cube` when it is one, or a dask array that only reads one (HyperSpy's
    lazy signals: `da.from_array(dataset)`, nothing applied on top); else None."""
    if type(cube).__module__.startswith("h5py"):
        return cube
    graph = getattr(cube, "__dask_graph__", None)
    if graph is None:
        return None
    try:
        layers = getattr(graph(), "layers", None)
    except Exception:
        return None
    if not layers or len(layers) != 2:
        return None
    for name, layer in layers.items():
        if str(name).startswith("original-array-"):
            try:
                values = list(dict(layer).values())
            except Exception:
                return None
            if len(values) == 1 and type(values[0]).__module__.startswith("h5py") and \
                    tuple(values[0].shape) == tuple(cube.shape) and values[0].dtype == cube.dtype:
                return values[0]
    return None


def _hdf5_plan(cube: Any) -> _Hdf5Plan | None:
    """A read plan for the fast path, or None where it does not apply (other filters, compact or
    external storage, a non-zero fill value with unwritten chunks, a userblock, a float cube with
    shuffle, a non-file driver)."""
    dset = _h5py_dataset(cube)
    if dset is None or len(dset.shape) != 3:
        return None
    try:
        import h5py

        f = dset.file
        if f.driver != "sec2" or f.userblock_size or dset.external or dset.dtype.kind not in "uif" \
                or dset.dtype.itemsize > 8:
            return None
        plist = dset.id.get_create_plist()
        filters = tuple(plist.get_filter(i)[0] for i in range(plist.get_nfilters()))
        if not set(filters) <= {_H5Z_DEFLATE, _H5Z_SHUFFLE}:
            return None
        if _H5Z_SHUFFLE in filters and dset.dtype.kind == "f":
            return None
        layout = plist.get_layout()
        entries: list = []
        if layout == h5py.h5d.CONTIGUOUS:
            offset = dset.id.get_offset()
            if offset is None or filters:
                return None
            chunk = tuple(dset.shape)
            entries.append(((0, 0, 0), 0, int(offset), int(dset.id.get_storage_size())))
        elif layout == h5py.h5d.CHUNKED:
            chunk = tuple(dset.chunks)
            dset.id.chunk_iter(lambda ci: entries.append((tuple(ci.chunk_offset), int(ci.filter_mask),
                                                          int(ci.byte_offset), int(ci.size))))
            n_total = int(np.prod([-(-s // c) for s, c in zip(dset.shape, chunk)]))
            if len(entries) < n_total and np.asarray(dset.fillvalue).any():
                return None
        else:
            return None
        entries.sort(key=lambda e: e[2])
        return _Hdf5Plan(str(f.filename), tuple(dset.shape), dset.dtype, chunk, filters, entries)
    except Exception:
        return None


class _Inflate:
    """zlib-format inflate into a reused buffer, with the fastest library at hand: libdeflate through
    imagecodecs, else the system's libdeflate through ctypes, else Python's zlib (all exact; the first
    two are ~10x faster on EDS chunks, which are mostly runs of zeros). One instance per thread.
    MMLAKE_INFLATE=zlib|ctypes|imagecodecs forces one (benchmarks, tests)."""

    _lib = None

    @classmethod
    def implementation(cls) -> str:
        want = os.environ.get("MMLAKE_INFLATE", "")
        if want in ("", "imagecodecs"):
            try:
                import imagecodecs

                if imagecodecs.DEFLATE.available:
                    return "imagecodecs"
            except Exception:
                pass
        if want in ("", "ctypes", "imagecodecs") and cls._libdeflate() is not None:
            return "ctypes"
        return "zlib"

    @classmethod
    def describe(cls) -> str:
        impl = cls.implementation()
        if impl == "imagecodecs":
            import imagecodecs

            return f"libdeflate {imagecodecs.deflate_version().split()[-1]} (imagecodecs)"
        if impl == "ctypes":
            return "libdeflate (system library, ctypes)"
        return f"zlib {zlib.ZLIB_RUNTIME_VERSION} (Python)"

    @classmethod
    def _libdeflate(cls):
        if cls._lib is None:
            import ctypes

            lib = False
            for name in ("libdeflate.so.0", "libdeflate.so", "libdeflate.dylib"):
                try:
                    lib = ctypes.CDLL(name)
                    break
                except OSError:
                    continue
            if lib:
                lib.libdeflate_alloc_decompressor.restype = ctypes.c_void_p
                lib.libdeflate_alloc_decompressor.argtypes = []
                lib.libdeflate_free_decompressor.argtypes = [ctypes.c_void_p]
                lib.libdeflate_free_decompressor.restype = None
                lib.libdeflate_zlib_decompress.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t,
                                                           ctypes.c_void_p, ctypes.c_size_t,
                                                           ctypes.POINTER(ctypes.c_size_t)]
                lib.libdeflate_zlib_decompress.restype = ctypes.c_int
            cls._lib = lib
        return cls._lib or None

    def __init__(self):
        self.impl = self.implementation()
        self.buf = np.empty(0, dtype=np.uint8)
        self._dec = None
        if self.impl == "ctypes":
            import ctypes

            self._ctypes = ctypes
            self._got = ctypes.c_size_t()
            self._dec = self._libdeflate().libdeflate_alloc_decompressor()
            if not self._dec:
                self.impl = "zlib"

    def __call__(self, src: bytes, nbytes: int):
        """The inflated bytes of `src` (exactly `nbytes` expected), valid until the next call."""
        if self.impl == "zlib":
            return zlib.decompress(src, bufsize=nbytes)
        if self.buf.nbytes < nbytes:
            self.buf = np.empty(nbytes, dtype=np.uint8)
        out = self.buf[:nbytes]
        if self.impl == "imagecodecs":
            import imagecodecs

            try:
                return imagecodecs.deflate_decode(src, out=out)
            except imagecodecs.DeflateError as exc:
                raise ValueError(f"deflate: {exc}") from None
        ret = self._libdeflate().libdeflate_zlib_decompress(self._dec, bytes(src), len(src), out.ctypes.data,
                                                             nbytes, self._ctypes.byref(self._got))
        if ret != 0:
            raise ValueError(f"deflate: libdeflate_zlib_decompress returned {ret} (corrupt or short chunk)")
        return out[: self._got.value]

    def close(self) -> None:
        if self._dec:
            self._libdeflate().libdeflate_free_decompressor(self._dec)
            self._dec = None


def _decode(raw, plan: _Hdf5Plan, mask: int, shape: tuple[int, ...], inflate: "_Inflate | None" = None) -> list:
    """Undo the filter pipeline of one chunk: [(weight, array, value bound)], one array unless the
    chunk is shuffled, where each non-zero byte plane comes back as a uint8 array with weight
    256**(its significance)."""
    shuffled = False
    n = math.prod(shape)
    size = plan.dtype.itemsize
    for i in reversed(range(len(plan.filters))):
        if mask & (1 << i):
            continue  # this filter was skipped for this chunk
        if plan.filters[i] == _H5Z_DEFLATE:
            raw = (inflate or _Inflate())(raw, n * size)
        else:
            shuffled = True
    if len(raw) < n * size:
        raise ValueError(f"chunk holds {len(raw)} bytes, expected {n * size}")
    if not shuffled or size == 1:
        return [(1, np.frombuffer(raw, dtype=plan.dtype, count=n).reshape(shape), None)]
    flat = np.frombuffer(raw, dtype=np.uint8, count=n * size)
    planes = flat.reshape(size, *shape)
    little = plan.dtype.byteorder in ("<", "|") or (plan.dtype.byteorder == "=" and sys.byteorder == "little")
    out = []
    for k in range(size):
        shift = k if little else size - 1 - k
        if plan.dtype.kind == "i" and shift == size - 1:
            return [(1, _unshuffle(planes, plan.dtype, shape), None)]  # a sign byte: no plane arithmetic
        plane = flat[k * n:(k + 1) * n]
        words = plane[: n - n % 8].view(np.uint64) if (k * n) % 8 == 0 else plane
        if words.any() or plane[n - n % 8:].any():  # the high planes of small counts are all zero
            out.append((1 << (8 * shift), planes[k], 255))
    return out


def _unshuffle(planes: np.ndarray, dtype: np.dtype, shape: tuple[int, ...]) -> np.ndarray:
    out = np.empty(int(np.prod(shape)), dtype=dtype)
    view = out.view(np.uint8).reshape(-1, dtype.itemsize)
    for k in range(dtype.itemsize):
        view[:, k] = planes[k].reshape(-1)
    return out.reshape(shape)


def _reduce_hdf5(plan: _Hdf5Plan, acc: _Accumulator, session_id: str, progress, n_workers: int) -> None:
    """Read, decode and add every stored chunk, in `n_workers` threads (os.pread, zlib and numpy
    release the GIL), grouped by chunk row so progress can be told in scan lines."""
    from concurrent.futures import ThreadPoolExecutor, as_completed

    g, p = acc.grid, acc.grid.chip_px
    covered = (g.origin_y + g.n_rows * p, g.origin_x + g.n_cols * p)
    work = [e for e in plan.chunks if e[0][0] < covered[0] and e[0][1] < covered[1]]
    if len(plan.chunks) == 1 and plan.chunk == plan.shape and not plan.filters:
        # contiguous (or one uncompressed chunk): read it in pieces of scan lines
        base = plan.chunks[0][2]
        h, w, c = plan.shape
        line = w * c * plan.dtype.itemsize
        step = max(1, min(p, (16 << 20) // max(1, line)))
        work = [((y, 0, 0), 0, base + y * line, min(step, covered[0] - y) * line)
                for y in range(0, covered[0], step)]
        shape_of = {e[0]: (e[3] // line, w, c) for e in work}
    else:
        shape_of = None
    rows: dict[int, list] = {}
    for e in work:
        rows.setdefault(e[0][0], []).append(e)
    local = threading.local()
    inflaters: list[_Inflate] = []
    fd = os.open(plan.path, os.O_RDONLY)

    def run(entries: list) -> int:
        for offset, mask, where, size in entries:
            shape = shape_of[offset] if shape_of else plan.chunk
            y0 = offset[0]
            try:
                if mask == 0 and not plan.filters:  # stored as is: read into a reused buffer
                    buf = getattr(local, "buf", None)
                    if buf is None or buf.nbytes < size:
                        buf = local.buf = np.empty(size, dtype=np.uint8)
                    got = os.preadv(fd, [memoryview(buf)[:size]], where)
                    if got != size:
                        raise OSError(f"read {got} of {size} bytes at offset {where} (file truncated?)")
                    parts = _decode(memoryview(buf)[:size], plan, mask, shape)
                else:
                    raw = os.pread(fd, size, where)
                    if len(raw) != size:
                        raise OSError(f"read {len(raw)} of {size} bytes at offset {where} (file truncated?)")
                    inflate = getattr(local, "inflate", None)
                    if inflate is None:
                        inflate = local.inflate = _Inflate()
                        inflaters.append(inflate)
                    parts = _decode(raw, plan, mask, shape, inflate)
            except (OSError, ValueError, zlib.error) as exc:
                raise SessionError(session_id, f"cannot read EDS rows {y0}-{y0 + shape[0]}: {type(exc).__name__}: "
                                               f"{exc}. The spectrum image may be truncated or corrupt") from exc
            for weight, arr, vmax in parts:
                if arr.dtype.kind == "b":
                    arr = arr.view(np.uint8)
                acc.add(arr, offset[0], offset[1], offset[2], weight=weight, vmax=vmax, session_id=session_id)
        return len(entries)

    try:
        ordered = sorted(rows.values(), key=lambda es: es[0][2])
        done_chunks, total_chunks = 0, max(1, len(work))
        told = [0]

        def tell() -> None:
            rows_done = g.n_rows * done_chunks // total_chunks
            if progress and rows_done > told[0]:
                told[0] = rows_done
                progress(rows_done, g.n_rows)
        if n_workers == 1 or len(ordered) == 1:
            for es in ordered:
                done_chunks += run(es)
                tell()
        else:
            with ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="mmlake-chips") as pool:
                futures = [pool.submit(run, es) for es in ordered]
                try:
                    for fut in as_completed(futures):
                        done_chunks += fut.result()
                        tell()
                finally:
                    for fut in futures:
                        fut.cancel()
    finally:
        os.close(fd)
        for inflate in inflaters:
            inflate.close()
