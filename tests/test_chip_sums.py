"""EDS chip sums (mmlake.chips.sum_eds_chips): the HDF5 fast path (chunks read with pread, inflated in
threads, summed per byte plane) gives exactly the numbers of a dense numpy reshape-sum, whatever the
chunk layout, filters, dtype, byte order, decoder and thread count; bad data fail with a SessionError."""

import subprocess
import sys
import zlib
from pathlib import Path

import h5py
import numpy as np
import pytest

from mmlake import chips
from mmlake.chips import ChipGrid, pixel_totals, sum_eds_chips
from mmlake.errors import SessionError


def dense(cube, grid):
    p = grid.chip_px
    c = np.asarray(cube[: grid.n_rows * p, : grid.n_cols * p], dtype=np.float64)
    sums = c.reshape(grid.n_rows, p, grid.n_cols, p, -1).sum(axis=(1, 3)).reshape(grid.n_chips, -1)
    return sums.astype(np.float32), c.sum(axis=2).astype(np.float32)


def write(path, cube, **kw):
    with h5py.File(path, "w") as f:
        f.create_dataset("data", data=cube, **kw)
    return h5py.File(path, "r")["data"]


LAYOUTS = [
    # dtype, shape, chunks, filters, chip px
    ("<u2", (37, 41, 50), (11, 11, 50), {"compression": "gzip", "shuffle": True}, 8),  # HyperSpy-like, unaligned
    ("<u2", (37, 41, 50), (11, 11, 50), {"compression": "gzip", "shuffle": True}, 5),
    (">u2", (37, 41, 50), (7, 9, 16), {"compression": "gzip", "shuffle": True}, 6),  # channels split too
    ("<u2", (32, 32, 64), None, {}, 8),  # contiguous
    ("<u2", (32, 32, 64), (16, 32, 64), {}, 8),  # uncompressed chunks
    ("<u2", (32, 32, 64), (5, 32, 64), {"compression": "gzip"}, 8),
    ("<u2", (32, 32, 64), (5, 32, 64), {"shuffle": True}, 8),
    ("<u4", (30, 30, 20), (4, 7, 20), {"compression": "gzip", "shuffle": True}, 7),
    ("<i2", (30, 30, 20), (4, 7, 20), {"compression": "gzip", "shuffle": True}, 7),
    ("u1", (30, 30, 20), (4, 7, 20), {"compression": "gzip", "shuffle": True}, 7),
    ("<f4", (30, 30, 20), (4, 7, 20), {"compression": "gzip"}, 7),
    ("<u2", (40, 40, 300), (20, 20, 300), {"compression": "lzf"}, 20),  # no fast path: band by band
]


@pytest.mark.parametrize("dtype,shape,chunks,filters,p", LAYOUTS)
@pytest.mark.parametrize("big", [False, True], ids=["sparse", "large-counts"])
def test_fast_path_equals_dense_sum(tmp_path, dtype, shape, chunks, filters, p, big):
    rng = np.random.default_rng(zlib.crc32(repr((dtype, shape, p, big)).encode()))
    kind = np.dtype(dtype).kind
    if kind == "f":
        cube = (rng.random(shape) * 10).astype(dtype)
    else:
        hi = (250 if np.dtype(dtype).itemsize == 1 else 60000) if big else 6
        cube = rng.integers(0, hi, size=shape).astype(dtype)
        if big:
            cube[rng.random(shape) < 0.9] = 0  # per-pixel totals past 65535 in places: the uint16 check
    if kind == "i" and big:
        cube[0, 0, 0] = -5
    dset = write(tmp_path / "c.h5", cube, chunks=chunks, **filters)
    grid = ChipGrid.fit(shape[:2], p)
    want_sums, want_totals = dense(cube, grid)
    import dask.array as da

    for src in (dset, da.from_array(dset, chunks=chunks or shape), cube):
        for workers in (1, 2):
            sums, totals = sum_eds_chips(src, grid, workers=workers)
            assert sums.dtype == np.float32 and sums.shape == (grid.n_chips, shape[2])
            np.testing.assert_array_equal(sums, want_sums)
            np.testing.assert_array_equal(totals, want_totals)
    np.testing.assert_array_equal(pixel_totals(dset), cube.astype(np.float64).sum(axis=2))


@pytest.mark.parametrize("decoder", ["zlib", "ctypes", "imagecodecs"])
def test_every_inflate_library_gives_the_same_sums(tmp_path, monkeypatch, decoder):
    monkeypatch.setenv("MMLAKE_INFLATE", decoder)
    rng = np.random.default_rng(1)
    cube = rng.poisson(0.05, size=(33, 35, 256)).astype(np.uint16)
    dset = write(tmp_path / "c.h5", cube, chunks=(11, 11, 256), compression="gzip", shuffle=True)
    grid = ChipGrid.fit(cube.shape[:2], 16)
    sums, _ = sum_eds_chips(dset, grid)
    np.testing.assert_array_equal(sums, dense(cube, grid)[0])
    assert chips._Inflate.implementation() in ("zlib", "ctypes", "imagecodecs")


def test_hyperspy_lazy_signal_takes_the_fast_path(tmp_path):
    import hyperspy.api as hs

    rng = np.random.default_rng(2)
    cube = rng.poisson(0.1, size=(24, 24, 128)).astype(np.uint16)
    s = hs.signals.Signal1D(cube)
    s.save(tmp_path / "eds.hspy")  # HyperSpy's defaults: gzip + shuffle
    lazy = hs.load(tmp_path / "eds.hspy", lazy=True)
    assert chips._hdf5_plan(lazy.data) is not None
    assert chips._hdf5_plan(lazy.rebin(scale=(2, 2, 1)).data) is None  # anything on top: band by band
    grid = ChipGrid.fit((24, 24), 8)
    np.testing.assert_array_equal(sum_eds_chips(lazy.data, grid)[0], dense(cube, grid)[0])


def test_nan_counts_and_corrupt_chunks_name_the_rows(tmp_path):
    cube = np.ones((16, 16, 8), dtype=np.float32)
    cube[9, 3, 2] = np.nan
    dset = write(tmp_path / "nan.h5", cube, chunks=(4, 16, 8), compression="gzip")
    with pytest.raises(SessionError, match="NaN or infinite counts in rows 8-12"):
        sum_eds_chips(dset, ChipGrid.fit((16, 16), 4), "s@0")
    good = np.ones((16, 16, 8), dtype=np.uint16)
    path = tmp_path / "bad.h5"
    write(path, good, chunks=(4, 16, 8), compression="gzip").file.close()
    plan = chips._hdf5_plan(h5py.File(path, "r")["data"])
    raw = bytearray(path.read_bytes())
    offset = next(e[2] for e in plan.chunks if e[0] == (4, 0, 0))
    raw[offset:offset + 16] = b"\xff" * 16  # a damaged deflate stream in the second chunk
    path.write_bytes(bytes(raw))
    with pytest.raises(SessionError, match="cannot read EDS rows 4-8.*truncated or corrupt"):
        sum_eds_chips(h5py.File(path, "r")["data"], ChipGrid.fit((16, 16), 4), "s@0")


def test_zero_counts_are_refused():
    with pytest.raises(SessionError, match="zero counts everywhere"):
        sum_eds_chips(np.zeros((8, 8, 4), dtype=np.uint16), ChipGrid.fit((8, 8), 4), "s@0")


def test_lazy_reads_run_on_this_process_threads_whatever_dasks_default_scheduler(tmp_path):
    """Inside a Dask worker the default scheduler is the cluster's: two runs reading identical files
    shared one task there and one run's read was cancelled (tests/test_engine.py, under load). The
    session reads (HAADF image, EDS bands, pixel totals) must compute in this process."""
    import dask
    import dask.array as da

    from mmlake.lazyread import materialize, materialize_all

    def refuse(*args, **kwargs):
        raise AssertionError("a session read was sent to dask's default scheduler")

    with dask.config.set(scheduler=refuse):
        with pytest.raises(AssertionError):  # the guard works: the default scheduler is refused
            da.ones((4, 4), chunks=2).sum().compute()
        assert materialize(da.ones((4, 4), chunks=2)).sum() == 16
        assert isinstance(materialize(np.arange(3)), np.ndarray)
        total, low = materialize_all(da.ones(6, chunks=2).sum(), da.arange(6, chunks=2).min())
        assert (float(total), int(low)) == (6.0, 0)
        # a real session: opening it reads the HAADF image from its lazy signal
        from mmlake.session import open_session
        from tests.sessions import make_tiny_session

        session = open_session(make_tiny_session(tmp_path / "s", haadf_shape=(24, 32), eds_shape=(24, 32)))
        assert session.haadf.shape == (24, 32)


def test_lazy_reads_do_not_import_distributed():
    """Naming the scheduler ("threads") makes dask import `distributed` to look for a client: ~0.1 s
    of every ingest's start-up for a package the in-process run never uses."""
    code = ("import sys, dask.array as da; from mmlake.lazyread import materialize, materialize_all; "
            "materialize(da.ones(4, chunks=2)); materialize_all(da.ones(4, chunks=2).sum()); "
            "print('distributed' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         cwd=Path(__file__).resolve().parent.parent)
    assert out.stdout.strip() == "False", out.stderr
