"""Chip-binning throughput of a 512x512x4096 EDS spectrum image: mmlake streaming vs HyperSpy vs numpy.

Writes one uint16 cube (sparse counts, ~40 per pixel, as real EDS maps) to an .hspy file, then runs
each method in its own process so peak RSS figures do not mix:

  numpy-in-memory   the whole cube loaded dense, then one reshape-sum (the compute-only ceiling)
  hyperspy-rebin    hs.load(lazy=True).rebin(scale=(p, p, 1)) computed with dask
  mmlake-stream     mmlake.chips.sum_eds_chips over the lazy cube, one chip row band at a time

Throughput = cube bytes / wall seconds of the binning (reading the lazy file's chunks included;
the one-off hs.load start-up is not).
Usage: python bench/chips.py [--size 512] [--channels 4096] [--chip 16] [--dir /tmp/mmlake-bench]
"""

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import numpy as np


def write_cube(path: Path, size: int, channels: int, seed: int = 0) -> int:
    """Write the cube band by band through a lazy (dask) HyperSpy signal; returns its dense bytes."""
    import dask
    import dask.array as da
    import hyperspy.api as hs

    band = 16

    def make(i):
        rng = np.random.default_rng(seed + i)
        counts = rng.poisson(40, size=(band, size))
        out = np.zeros((band, size, channels), dtype=np.uint16)
        idx = np.repeat(np.arange(band * size), counts.ravel())
        ch = rng.integers(0, channels, size=idx.size)
        np.add.at(out.reshape(-1, channels), (idx, ch), 1)
        return out

    blocks = [da.from_delayed(dask.delayed(make)(i), (band, size, channels), np.uint16) for i in range(size // band)]
    s = hs.signals.Signal1D(da.concatenate(blocks, axis=0)).as_lazy()
    s.set_signal_type("EDS_TEM")
    s.axes_manager.signal_axes[0].units = "keV"
    s.axes_manager.signal_axes[0].scale = 0.005
    for ax in s.axes_manager.navigation_axes:
        ax.units, ax.scale = "nm", 0.05
    s.save(path, overwrite=True, chunks=(band, 128, channels), compression=None)
    return size * size * channels * 2


def run_method(method: str, path: str, chip: int) -> dict:
    """Executed in a child process: time one binning method and report its peak RSS."""
    import warnings

    warnings.filterwarnings("ignore")
    import hyperspy.api as hs

    from mmlake.chips import ChipGrid, sum_eds_chips

    t0 = time.perf_counter()
    if method == "numpy-in-memory":
        cube = np.asarray(hs.load(path, lazy=True).data.compute())
        t0 = time.perf_counter()  # compute only: the load is not part of this baseline
        h, w, c = cube.shape
        n_r, n_c = h // chip, w // chip
        out = cube[: n_r * chip, : n_c * chip].reshape(n_r, chip, n_c, chip, c).sum(axis=(1, 3), dtype=np.float32)
    elif method == "hyperspy-rebin":
        s = hs.load(path, lazy=True)
        t0 = time.perf_counter()  # the one-off ~2 s of hs.load (signal registry) is not binning
        out = s.rebin(scale=(chip, chip, 1)).data.compute()
    else:
        s = hs.load(path, lazy=True)
        t0 = time.perf_counter()
        grid = ChipGrid.fit(s.data.shape[:2], chip)
        out, _ = sum_eds_chips(s.data, grid)
    wall = time.perf_counter() - t0
    return {"method": method, "seconds": wall, "checksum": float(np.asarray(out, dtype=np.float64).sum()),
            "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--size", type=int, default=512)
    ap.add_argument("--channels", type=int, default=4096)
    ap.add_argument("--chip", type=int, default=16)
    ap.add_argument("--dir", default="/tmp/mmlake-bench")
    ap.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        print(json.dumps(run_method(args.child[0], args.child[1], args.chip)))
        return
    path = Path(args.dir) / f"cube_{args.size}x{args.size}x{args.channels}.hspy"
    path.parent.mkdir(parents=True, exist_ok=True)
    nbytes = args.size * args.size * args.channels * 2
    if not path.exists():
        print(f"writing {nbytes / 1e9:.2f} GB cube to {path} ...", flush=True)
        write_cube(path, args.size, args.channels)
    rows = []
    for method in ("numpy-in-memory", "hyperspy-rebin", "mmlake-stream"):
        out = subprocess.run([sys.executable, __file__, "--chip", str(args.chip), "--child", method, str(path)],
                             capture_output=True, text=True, check=True)
        rows.append(json.loads(out.stdout.strip().splitlines()[-1]))
        print(f"  {method:16s} done in {rows[-1]['seconds']:.2f} s", flush=True)
    assert len({round(r["checksum"]) for r in rows}) == 1, "methods disagree on the chip sums"
    base = {r["method"]: r for r in rows}
    print(f"\ncube {args.size}x{args.size}x{args.channels} uint16 = {nbytes / 1e9:.2f} GB, chips {args.chip} px")
    print(f"{'method':18s} {'seconds':>8s} {'GB/s':>7s} {'peak RSS MB':>12s} {'vs hyperspy':>12s} {'vs numpy':>9s}")
    for r in rows:
        gbs = nbytes / 1e9 / r["seconds"]
        print(f"{r['method']:18s} {r['seconds']:8.2f} {gbs:7.2f} {r['peak_rss_mb']:12.0f} "
              f"{base['hyperspy-rebin']['seconds'] / r['seconds']:11.2f}x "
              f"{base['numpy-in-memory']['seconds'] / r['seconds']:8.2f}x")


if __name__ == "__main__":
    main()
