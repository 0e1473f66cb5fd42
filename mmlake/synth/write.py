"""Session folders on disk: haadf.hspy, eds.hspy (streamed, pre-compressed HDF5 chunks), truth.npy
and session.yaml, written atomically; the demo campaign."""

from __future__ import annotations

import os
import shutil
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

from mmlake.synth.eds import _eds_band, _eds_model, _EdsModel
from mmlake.synth.geometry import Geometry, make_geometry
from mmlake.synth.haadf import make_haadf
from mmlake.synth.spec import BAND_ROWS, DEMO_CAMPAIGN, EDS_CHUNK_COLS, EDS_GZIP_LEVEL, QUANT_LINES, SessionSpec
from mmlake.synth.truth import manifest

def _haadf_signal(spec: SessionSpec, img: np.ndarray):
    import hyperspy.api as hs

    p = spec.pixel_size_nm
    s = hs.signals.Signal2D(
        img,
        axes=[
            {"name": "y", "units": "nm", "scale": p, "offset": 0.0, "size": img.shape[0], "navigate": False},
            {"name": "x", "units": "nm", "scale": p, "offset": 0.0, "size": img.shape[1], "navigate": False},
        ],
    )
    s.metadata.General.title = f"HAADF {spec.session_id} (synthetic)"
    s.metadata.Signal.quantity = "Intensity (counts)"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(spec.beam_kv))
    s.metadata.set_item("Acquisition_instrument.TEM.microscope", spec.instrument)
    s.metadata.set_item("General.date", spec.acquired_at[:10])
    s.metadata.set_item("General.time", spec.acquired_at[11:19])
    return s


def _eds_signal(spec: SessionSpec, data):
    from exspy.signals import EDSTEMSpectrum, LazyEDSTEMSpectrum

    p = spec.pixel_size_nm
    n = spec.image_px
    axes = [
        {"name": "y", "units": "nm", "scale": p, "offset": 0.0, "size": n, "navigate": True},
        {"name": "x", "units": "nm", "scale": p, "offset": 0.0, "size": n, "navigate": True},
        {"name": "Energy", "units": "keV", "scale": spec.energy_scale_kev, "offset": spec.energy_offset_kev,
         "size": spec.n_channels, "navigate": False},
    ]
    cls = EDSTEMSpectrum if isinstance(data, np.ndarray) else LazyEDSTEMSpectrum
    s = cls(data, axes=axes)
    s.metadata.General.title = f"EDS {spec.session_id} (synthetic)"
    s.metadata.Signal.signal_type = "EDS_TEM"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(spec.beam_kv))
    s.metadata.set_item("Acquisition_instrument.TEM.microscope", spec.instrument)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa",
                        float(spec.energy_resolution_mnka_ev))
    s.metadata.set_item("General.date", spec.acquired_at[:10])
    s.metadata.set_item("General.time", spec.acquired_at[11:19])
    s.metadata.set_item("Sample.elements", spec.elements)
    s.metadata.set_item("Sample.xray_lines", sorted(QUANT_LINES[e] for e in spec.elements))
    return s


def _compressed_chunks(model: _EdsModel, regions: np.ndarray, band: int, shape: tuple, chunks: tuple, level: int):
    """Generate one band and return its HDF5 chunks as (offset, bytes) after the shuffle + deflate
    filters, exactly as h5py would store them (edge chunks zero-padded to the full chunk shape)."""
    h, w, nch = shape
    ch_r, ch_c, _ = chunks
    r0 = band * ch_r
    data = _eds_band(model, regions[r0:r0 + ch_r], band)
    out = []
    for c0 in range(0, w, ch_c):
        blk = data[:, c0:c0 + ch_c]
        if blk.shape[:2] != (ch_r, ch_c):
            pad = np.zeros((ch_r, ch_c, nch), dtype=np.uint16)
            pad[: blk.shape[0], : blk.shape[1]] = blk
            blk = pad
        shuffled = np.ascontiguousarray(blk, dtype="<u2").view(np.uint8).reshape(-1, 2).T.tobytes()
        out.append(((r0, c0, 0), zlib.compress(shuffled, level)))
    return out


def _write_eds_hspy(spec: SessionSpec, geom: Geometry, path: Path, workers: int = 2) -> None:
    """eds.hspy: HyperSpy/RosettaSciIO writes the file (axes, metadata: everything but the data), then
    the uint16 cube is streamed into its ``data`` dataset band by band as pre-compressed HDF5 chunks
    (shuffle + gzip, chunks (BAND_ROWS, <=EDS_CHUNK_COLS, n_channels)). Bands are generated and
    compressed in ``workers`` threads (numpy and zlib release the GIL); peak memory ~ workers x 2 bands."""
    import dask.array as da
    import h5py

    n, nch = spec.image_px, spec.n_channels
    shape = (n, n, nch)
    chunks = (BAND_ROWS, min(EDS_CHUNK_COLS, n), nch)
    skeleton = _eds_signal(spec, da.zeros(shape, dtype=np.uint16, chunks=chunks))
    skeleton.save(path, overwrite=True, write_dataset=False)  # opens in mode "a"
    model = _eds_model(spec)
    n_bands = -(-n // BAND_ROWS)
    with h5py.File(path, "r+") as f:
        (group,) = f["Experiments"].values()
        dset = group.create_dataset("data", shape=shape, dtype="<u2", chunks=chunks, compression="gzip",
                                    compression_opts=EDS_GZIP_LEVEL, shuffle=True)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending = []
            for b in range(n_bands):
                pending.append(pool.submit(_compressed_chunks, model, geom.regions, b, shape, chunks, EDS_GZIP_LEVEL))
                if len(pending) > workers:  # bounded look-ahead keeps memory flat
                    for offset, blob in pending.pop(0).result():
                        dset.id.write_direct_chunk(offset, blob)
            for fut in pending:
                for offset, blob in fut.result():
                    dset.id.write_direct_chunk(offset, blob)


def write_session(spec: SessionSpec, out_dir: str | os.PathLike, workers: int = 2) -> Path:
    """Write one session into ``out_dir / spec.folder_name`` (e.g. ``pristine_0.1dpa``) and return that
    folder. Built in a temporary sibling folder and renamed into place (replacing an old one), so a
    watcher never sees a half-written session; session.yaml is written last."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / spec.folder_name
    tmp = out_dir / f".{spec.folder_name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        geom = make_geometry(spec)
        np.save(tmp / "truth.npy", geom.truth.astype(np.int8), allow_pickle=False)
        _haadf_signal(spec, make_haadf(spec, geom)).save(tmp / "haadf.hspy", overwrite=True, compression="gzip")
        _write_eds_hspy(spec, geom, tmp / "eds.hspy", workers=workers)
        text = yaml.safe_dump(manifest(spec, geom), sort_keys=False, default_flow_style=None, width=110)
        (tmp / "session.yaml").write_text(text)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_demo_campaign(
    out_dir: str | os.PathLike,
    specs: Iterable[SessionSpec] = DEMO_CAMPAIGN,
    progress: Callable[[str], object] | None = print,
) -> list[Path]:
    """Write every spec's session under ``out_dir``; returns the session folders."""
    paths = []
    t0 = time.perf_counter()
    for spec in specs:
        t = time.perf_counter()
        path = write_session(spec, out_dir)
        paths.append(path)
        if progress:
            size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
            progress(f"{spec.session_id}: {path} ({size:.1f} MB, {time.perf_counter() - t:.1f} s)")
    if progress:
        progress(f"built {len(paths)} sessions in {time.perf_counter() - t0:.1f} s")
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m mmlake.synth OUT_DIR   (builds the demo campaign)", file=sys.stderr)
        return 2
    build_demo_campaign(argv[0])
    return 0
