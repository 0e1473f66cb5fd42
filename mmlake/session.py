"""A STEM session opened through RosettaSciIO/HyperSpy: calibrated HAADF image + lazy EDS cube.

The HAADF image is small (512x512 floats) and read eagerly; the EDS spectrum image can be GBs and
stays a lazy (dask-backed) HyperSpy signal that `mmlake.chips` streams through in row bands.
Calibrations travel with the data: pixel size in nm and the energy axis in keV, converted from
whatever units the file declares.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmlake.errors import SessionError
from mmlake.manifest import Manifest, load_manifest

_LENGTH_TO_NM = {"nm": 1.0, "pm": 1e-3, "å": 0.1, "a": 0.1, "angstrom": 0.1, "µm": 1e3, "um": 1e3,
                 "μm": 1e3, "mm": 1e6, "m": 1e9}
_ENERGY_TO_KEV = {"kev": 1.0, "ev": 1e-3}


@dataclass(frozen=True)
class EnergyAxis:
    """Energy of channel i = offset_kev + scale_kev * i."""

    offset_kev: float
    scale_kev: float
    n_channels: int

    def values(self) -> np.ndarray:
        return self.offset_kev + self.scale_kev * np.arange(self.n_channels)


@dataclass
class Session:
    """An opened session on its registered navigation grid (HAADF and EDS share (rows, cols))."""

    manifest: Manifest
    haadf: np.ndarray | None           # float32 (H, W), registered grid
    eds: Any | None                    # lazy HyperSpy EDS_TEM signal, nav (H, W), registered grid
    pixel_size_nm: float
    energy: EnergyAxis | None
    eds_binning: int                   # nav binning applied to the EDS cube to register it (1 = none)
    haadf_binning: int                 # nav binning applied to the HAADF image (1 = none)
    truth: np.ndarray | None
    paths: dict[str, Path]

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    @property
    def shape(self) -> tuple[int, int]:
        if self.haadf is not None:
            return tuple(self.haadf.shape)
        return tuple(self.eds.data.shape[:2])

    def fail(self, problem: str) -> SessionError:
        return SessionError(self.session_id, problem)


def open_session(folder: str | os.PathLike) -> Session:
    """Open a session folder (session.yaml + data files)."""
    folder = Path(folder)
    manifest = load_manifest(folder)
    return open_manifest(manifest, lambda rel: folder / rel)


def open_manifest(manifest: Manifest, resolve: Callable[[str], Path]) -> Session:
    """Open the files a manifest names; `resolve` maps manifest paths to files (folder or lake)."""
    sid = manifest.session_id
    paths = {role: Path(resolve(rel)) for role, rel in manifest.files().items()}
    haadf_sig = eds_sig = None
    if "data" in paths:
        haadf_sig, eds_sig = _split_signals(_load(sid, paths["data"], "data"), sid, paths["data"].name)
    if "haadf" in paths:
        haadf_sig, _ = _split_signals(_load(sid, paths["haadf"], "haadf"), sid, paths["haadf"].name)
        if haadf_sig is None:
            raise SessionError(sid, f"haadf file {paths['haadf'].name} holds no 2-D image")
    if "eds" in paths:
        _, eds_sig = _split_signals(_load(sid, paths["eds"], "eds"), sid, paths["eds"].name)
        if eds_sig is None:
            raise SessionError(sid, f"eds file {paths['eds'].name} holds no spectrum image "
                                    "(expected 2 navigation axes and an energy axis)")
    if haadf_sig is None and eds_sig is None:
        raise SessionError(sid, "no HAADF image and no EDS spectrum image found in the session files")

    haadf = pixel = None
    if haadf_sig is not None:
        try:
            haadf = np.asarray(haadf_sig.data, dtype=np.float32)
            if hasattr(haadf_sig.data, "compute"):
                haadf = np.asarray(haadf_sig.data.compute(), dtype=np.float32)
        except Exception as exc:  # truncated/corrupt chunk
            raise SessionError(sid, f"cannot read the HAADF image: {exc}. The file may be truncated or "
                                    "corrupt; export it again from the microscope software") from exc
        if not np.all(np.isfinite(haadf)):
            raise SessionError(sid, "the HAADF image contains NaN or infinite pixels")
        pixel = _pixel_nm(haadf_sig.axes_manager.signal_axes, sid, "HAADF")
    energy = None
    if eds_sig is not None:
        energy = _energy_axis(eds_sig, sid)
        eds_pixel = _pixel_nm(eds_sig.axes_manager.navigation_axes, sid, "EDS")
        pixel = pixel if pixel is not None else eds_pixel
    haadf, eds_sig, pixel, hb, eb = _register(haadf, eds_sig, pixel, sid)

    truth = None
    if "truth" in paths:
        truth = load_label_map(paths["truth"], sid)
        if truth.shape != (haadf.shape if haadf is not None else eds_sig.data.shape[:2]):
            raise SessionError(sid, f"truth label map has shape {truth.shape}, but the image grid is "
                                    f"{haadf.shape if haadf is not None else eds_sig.data.shape[:2]}")
        truth = truth.astype(np.int16)
    return Session(manifest=manifest, haadf=haadf, eds=eds_sig, pixel_size_nm=float(pixel),
                   energy=energy, eds_binning=eb, haadf_binning=hb, truth=truth, paths=paths)


def load_label_map(path: Path, sid: str) -> np.ndarray:
    """A ground-truth label map: .npy (never unpickled), or any image RosettaSciIO reads (.hspy, .tif,
    .png, ...). Labels must be whole numbers >= 0; an error says what is wrong with the file."""
    if path.suffix.lower() == ".npy":
        data = load_npy(path, sid, "truth")
    else:
        import hyperspy.api as hs

        try:
            sig = hs.load(path)
        except Exception as exc:
            raise SessionError(sid, f"cannot read truth label map {path.name}: {type(exc).__name__}: {exc}; "
                                    "give it as .npy or a format RosettaSciIO reads (.hspy, .tif, .png)") from exc
        if isinstance(sig, list):
            raise SessionError(sid, f"truth label map {path.name} holds {len(sig)} signals; save one 2-D label image")
        data = np.asarray(sig.data)
    if data.dtype.names:  # an RGB(A) image read as a structured array
        raise SessionError(sid, f"truth label map {path.name} is a colour image; save one channel of integer labels")
    if data.ndim != 2:
        raise SessionError(sid, f"truth label map {path.name} has {data.ndim} dimensions {data.shape}; "
                                "it must be a 2-D image of integer labels")
    if not np.issubdtype(data.dtype, np.integer):
        if not np.all(np.isfinite(data)) or not np.all(data == np.round(data)):
            raise SessionError(sid, f"truth label map {path.name} holds non-integer values ({data.dtype}); "
                                    "labels must be whole numbers 0, 1, 2, ...")
    if data.size and data.min() < 0:
        raise SessionError(sid, f"truth label map {path.name} has negative labels (min {data.min()})")
    return data.astype(np.int16)


def load_npy(path: Path, sid: str, role: str) -> np.ndarray:
    """Load an .npy without ever unpickling (a pickled array is refused, not executed)."""
    try:
        return np.load(path, allow_pickle=False)
    except ValueError as exc:
        if "pickle" in str(exc).lower():
            raise SessionError(sid, f"{role} file {path.name} is a pickled .npy (object array); mmlake "
                                    "refuses to unpickle data files — save it with a numeric dtype") from exc
        raise SessionError(sid, f"cannot read {role} file {path.name}: {exc}") from exc
    except (OSError, EOFError) as exc:
        raise SessionError(sid, f"cannot read {role} file {path.name}: {exc} (truncated?)") from exc


def _load(sid: str, path: Path, role: str) -> list:
    """hs.load(lazy=True) with errors that name the session and file."""
    import hyperspy.api as hs

    if path.suffix.lower() == ".npy":
        load_npy(path, sid, role)
        raise SessionError(sid, f"{role} file {path.name}: a bare .npy carries no calibration; save "
                                "images and spectrum images as .hspy with calibrated axes (see README)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            out = hs.load(str(path), lazy=True)
    except Exception as exc:
        raise SessionError(sid, f"cannot read {role} file {path.name}: {type(exc).__name__}: {exc}. "
                                "The file may be truncated or corrupt, or not a format RosettaSciIO "
                                "reads; export it again") from exc
    return out if isinstance(out, list) else [out]


def _split_signals(signals: list, sid: str, name: str):
    """Pick the HAADF image and the EDS spectrum image out of what a file holds."""
    haadf = eds = None
    for s in signals:
        nav, sig = s.axes_manager.navigation_dimension, s.axes_manager.signal_dimension
        kind = s.metadata.get_item("Signal.signal_type", "") or ""
        if sig == 2 and nav == 0:
            title = (s.metadata.get_item("General.title", "") or "").upper()
            if haadf is None or "HAADF" in title:
                haadf = s
        elif sig == 1 and nav == 2 and ("EDS" in kind.upper() or kind == ""):
            if eds is None or np.prod(s.data.shape) > np.prod(eds.data.shape):
                eds = s
    if eds is not None and "EDS" not in (eds.metadata.get_item("Signal.signal_type", "") or ""):
        eds.set_signal_type("EDS_TEM")
    return haadf, eds


def _pixel_nm(axes, sid: str, what: str) -> float:
    scales = []
    for ax in axes:
        units = str(ax.units or "").strip().lower()
        if units not in _LENGTH_TO_NM:
            raise SessionError(sid, f"{what} axis '{ax.name}' has units {ax.units!r}, not a length; "
                                    "the file must carry a spatial calibration")
        scales.append(float(ax.scale) * _LENGTH_TO_NM[units])
    if len(scales) != 2 or not np.isclose(scales[0], scales[1], rtol=1e-3):
        raise SessionError(sid, f"{what} pixels are not square ({scales} nm); mmlake chips need square pixels")
    return scales[0]


def _energy_axis(eds, sid: str) -> EnergyAxis:
    ax = eds.axes_manager.signal_axes[0]
    units = str(ax.units or "").strip().lower()
    if units not in _ENERGY_TO_KEV:
        raise SessionError(sid, f"EDS energy axis has units {ax.units!r}; expected keV or eV")
    f = _ENERGY_TO_KEV[units]
    return EnergyAxis(float(ax.offset) * f, float(ax.scale) * f, int(ax.size))


def _register(haadf, eds, pixel, sid):
    """Put HAADF and EDS on one grid: equal shapes pass; an integer factor bins the finer one."""
    if haadf is None or eds is None:
        return haadf, eds, pixel, 1, 1
    hs_, es = tuple(haadf.shape), tuple(eds.data.shape[:2])
    if hs_ == es:
        return haadf, eds, pixel, 1, 1
    for a, b in ((hs_, es), (es, hs_)):
        if all(x % y == 0 for x, y in zip(a, b)) and a[0] // b[0] == a[1] // b[1]:
            f = a[0] // b[0]
            if a == hs_:  # HAADF finer: mean-bin the image
                binned = haadf.reshape(es[0], f, es[1], f).mean(axis=(1, 3), dtype=np.float64)
                return binned.astype(np.float32), eds, pixel * f, f, 1
            eds_b = eds.rebin(scale=(f, f, 1))  # lazy sum-binning of the cube
            return haadf, eds_b, pixel, 1, f
    raise SessionError(sid, f"HAADF grid {hs_} and EDS grid {es} cannot be registered: they are "
                            "neither equal nor an integer binning factor apart; crop or re-bin one of "
                            "them so the scan grids match")
