"""A STEM session opened through RosettaSciIO/HyperSpy: calibrated HAADF image + lazy EDS cube.

The HAADF image is small (512x512 floats) and read eagerly; the EDS spectrum image can be GBs and
stays a lazy (dask-backed) HyperSpy signal that `mmlake.chips` streams through in row bands.
Calibrations travel with the data: pixel size in nm and the energy axis in keV, converted from
whatever units the file declares. A file without a calibration (a JPEG, an ImageJ TIFF saved without
scale, an MRC without a unit cell) takes `pixel_size_nm` / `energy_scale_kev` / `energy_offset_kev`
from session.yaml; a value given there overrides the file's (with a warning naming both), and
`Session.calibration` / `calibration_source` record where each came from ('file' or 'manifest').

Formats are whatever RosettaSciIO reads (see `mmlake.formats`): multi-file formats (TIA .emi + .ser,
JEOL .asw + its view files) are laid out again beside each other when the lake reopens them from its
sha256-addressed object folder. What the reader gives is checked, not trusted: RGB images become
one intensity channel (with a warning), a file holding several images or views says which it used.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np

from mmlake.errors import SessionError
from mmlake.formats import (EAGER_SUFFIXES, MULTI_FILE_SUFFIXES, companions as find_companions,
                            energy_calibration, is_rgb, rgb_to_intensity, spatial_calibration)
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
    calibration: dict[str, str] = field(default_factory=dict)   # {"pixel": "file", "energy": "manifest"}
    warnings: list[str] = field(default_factory=list)          # manifest + reading warnings, for metadata
    companions: dict[str, tuple[str, Path]] = field(default_factory=dict)  # "data+1" -> (rel, file)

    @property
    def session_id(self) -> str:
        return self.manifest.session_id

    @property
    def calibration_source(self) -> str:
        """'manifest' when any calibration (pixel size, energy axis) came from session.yaml, else 'file'."""
        return "manifest" if "manifest" in self.calibration.values() else "file"

    @property
    def shape(self) -> tuple[int, int]:
        if self.haadf is not None:
            return tuple(self.haadf.shape)
        return tuple(self.eds.data.shape[:2])

    def fail(self, problem: str) -> SessionError:
        return SessionError(self.session_id, problem)


def open_session(folder: str | os.PathLike, strict: bool = False) -> Session:
    """Open a session folder (session.yaml + data files); `strict`: unknown session.yaml keys are errors."""
    folder = Path(folder)
    manifest = load_manifest(folder, strict=strict)
    comp = {role: find_companions(folder, rel) for role, rel in manifest.files().items()
            if Path(rel).suffix.lower() in MULTI_FILE_SUFFIXES}
    return open_manifest(manifest, lambda rel: folder / rel, comp)


def session_files(folder: str | os.PathLike, manifest: Manifest) -> dict[str, str]:
    """Role -> session-relative path of every file a session consists of: the manifest's files plus
    the companions of multi-file formats as roles '<role>+1', '<role>+2', ... (hash, store and stage
    these; `manifest.files()` alone misses a TIA .emi's .ser files)."""
    files = dict(manifest.files())
    for role, rel in manifest.files().items():
        if Path(rel).suffix.lower() in MULTI_FILE_SUFFIXES:
            for i, c in enumerate(find_companions(folder, rel), 1):
                files[f"{role}+{i}"] = c
    return files


def open_manifest(manifest: Manifest, resolve: Callable[[str], Path],
                  companions: dict[str, list[str]] | None = None) -> Session:
    """Open the files a manifest names; `resolve` maps session-relative paths to files (folder or
    lake). `companions`: role -> session-relative paths of the files a multi-file format (.emi,
    .asw) reads beside the named one (`session_files`); they are resolved the same way and, where
    they do not already lie beside it under their own names, linked into a temporary folder."""
    sid = manifest.session_id
    notes: list[str] = list(manifest.warnings)
    paths = {role: Path(resolve(rel)) for role, rel in manifest.files().items()}
    comp_paths: dict[str, tuple[str, Path]] = {}
    read_paths = dict(paths)
    for role, rels in (companions or {}).items():
        if role not in paths or not rels:
            continue
        found = {c: Path(resolve(c)) for c in rels}
        for i, c in enumerate(rels, 1):
            comp_paths[f"{role}+{i}"] = (c, found[c])
        read_paths[role] = _beside(manifest.files()[role], paths[role], found)
    calib: dict[str, str] = {}
    haadf_sig = eds_sig = None
    if "data" in paths:
        haadf_sig, eds_sig = _split_signals(_load(sid, read_paths["data"], "data"), sid, paths["data"].name, notes)
    if "haadf" in paths:
        haadf_sig, _ = _split_signals(_load(sid, read_paths["haadf"], "haadf"), sid, paths["haadf"].name, notes)
        if haadf_sig is None:
            raise SessionError(sid, f"haadf file {paths['haadf'].name} holds no 2-D image")
    if "eds" in paths:
        _, eds_sig = _split_signals(_load(sid, read_paths["eds"], "eds"), sid, paths["eds"].name, notes)
        if eds_sig is None:
            raise SessionError(sid, f"eds file {paths['eds'].name} holds no spectrum image "
                                    "(expected 2 navigation axes and an energy axis)")
    if haadf_sig is None and eds_sig is None:
        raise SessionError(sid, "no HAADF image and no EDS spectrum image found in the session files")

    haadf = pixel = None
    if haadf_sig is not None:
        try:
            from mmlake.lazyread import materialize

            data = materialize(haadf_sig.data)
            if is_rgb(data.dtype):
                haadf = rgb_to_intensity(data)
                notes.append(f"HAADF image is RGB ({', '.join(data.dtype.names)}); converted to intensity "
                             "0.299 R + 0.587 G + 0.114 B (alpha ignored); store the detector's single "
                             "channel where you have it")
            elif data.dtype.names:
                raise SessionError(sid, f"the HAADF image has channels {data.dtype.names}, not an "
                                        "intensity or RGB image; save one channel")
            else:
                haadf = np.asarray(data, dtype=np.float32)
        except SessionError:
            raise
        except Exception as exc:  # truncated/corrupt chunk
            raise SessionError(sid, f"cannot read the HAADF image: {exc}. The file may be truncated or "
                                    "corrupt; export it again from the microscope software") from exc
        if not np.all(np.isfinite(haadf)):
            raise SessionError(sid, "the HAADF image contains NaN or infinite pixels")
        pixel, calib["pixel"] = _pixel_nm(haadf_sig, haadf_sig.axes_manager.signal_axes, sid, "HAADF",
                                          manifest.pixel_size_nm, notes)
    energy = None
    if eds_sig is not None:
        energy, calib["energy"] = _energy_axis(eds_sig, sid, manifest, notes)
        if pixel is None:
            pixel, calib["pixel"] = _pixel_nm(eds_sig, eds_sig.axes_manager.navigation_axes, sid, "EDS",
                                              manifest.pixel_size_nm, notes)
        else:  # the HAADF image gives the pixel; the EDS grid only has to register with it
            _eds_pixel_consistent(eds_sig, haadf.shape, pixel, sid, notes)
    haadf, eds_sig, pixel, hb, eb = _register(haadf, eds_sig, pixel, sid)

    truth = None
    if "truth" in paths:
        truth = load_label_map(paths["truth"], sid)
        if truth.shape != (haadf.shape if haadf is not None else eds_sig.data.shape[:2]):
            raise SessionError(sid, f"truth label map has shape {truth.shape}, but the image grid is "
                                    f"{haadf.shape if haadf is not None else eds_sig.data.shape[:2]}")
        truth = truth.astype(np.int16)
    for note in notes:
        if note not in manifest.warnings:
            warnings.warn(f"session {sid}: {note}", stacklevel=2)
    return Session(manifest=manifest, haadf=haadf, eds=eds_sig, pixel_size_nm=float(pixel),
                   energy=energy, eds_binning=eb, haadf_binning=hb, truth=truth, paths=paths,
                   calibration=calib, warnings=notes, companions=comp_paths)


def eds_count_map(session: Session) -> np.ndarray:
    """One streamed pass over the (lazy) EDS cube: the per-pixel count map (float64). Refuses a cube
    that is not X-ray counts (float data with negative values: background-subtracted, normalised or
    otherwise processed), NaN/infinite values and a cube without a single count, each with its
    reason and what to do."""
    sid, eds = session.session_id, session.eds
    data = eds.data
    floating = np.issubdtype(data.dtype, np.floating)
    low = None
    try:
        if data.dtype.kind in "iu":
            # integer counts (the usual case): mmlake.chips' streaming reducer, HDF5 chunks read
            # directly where it applies (~20x faster than dask's sum over a 512x512x4096 cube)
            from mmlake.chips import pixel_totals

            count_map = pixel_totals(data, sid)
        else:
            total = data.sum(axis=-1, dtype=np.float64)
            low = data.min() if floating else None
            if hasattr(total, "compute"):
                from mmlake.lazyread import materialize_all

                total, low = materialize_all(total, low)
            count_map = np.asarray(total, dtype=np.float64)
    except SessionError:
        raise
    except Exception as exc:
        raise SessionError(sid, f"cannot read the EDS spectrum image: {type(exc).__name__}: {exc}. "
                                "The file may be truncated or corrupt; export it again") from exc
    if not np.all(np.isfinite(count_map)):
        raise SessionError(sid, "the EDS spectrum image contains NaN or infinite counts")
    if floating and low is not None and float(low) < 0:
        raise SessionError(sid, f"the EDS spectrum image is not X-ray counts: it is {data.dtype} with "
                                f"negative values (min {float(low):.4g}), as background-subtracted or "
                                "normalised data are; mmlake quantifies raw counts (Poisson statistics) — "
                                "export the unprocessed spectrum image, or drop 'eds' from session.yaml "
                                "to ingest the HAADF only")
    if not count_map.sum() > 0:
        raise SessionError(sid, "the EDS spectrum image has zero counts everywhere; check the "
                                "acquisition, or drop 'eds' from session.yaml to ingest the HAADF only")
    return count_map


def _beside(rel: str, path: Path, found: dict[str, Path]) -> Path:
    """`path` itself when the companions lie beside it under their session-relative names, else a
    link to it in a temporary folder that mirrors the session layout (links to each companion)."""
    base = Path(rel).parent
    if path.name == Path(rel).name and all(
            (path.parent / Path(c).relative_to(base)).resolve() == p.resolve() for c, p in found.items()):
        return path
    import atexit
    import shutil
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix="mmlake-stage-"))
    atexit.register(shutil.rmtree, tmp, ignore_errors=True)
    for r, p in [(rel, path), *found.items()]:
        dst = tmp / r
        dst.parent.mkdir(parents=True, exist_ok=True)
        os.symlink(Path(p).resolve(), dst)
    return tmp / rel


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
    """hs.load (lazy where the reader can) with errors that name the session and file."""
    import hyperspy.api as hs

    suffix = path.suffix.lower()
    if suffix == ".asw":
        from mmlake.formats import asw_spectrum_images

        try:
            pts = asw_spectrum_images(path)
        except Exception as exc:
            raise SessionError(sid, f"cannot read {role} file {path.name}: {type(exc).__name__}: {exc}") from exc
        if len(pts) > 1:
            raise SessionError(sid, f"{role} file {path.name} is a JEOL workspace holding {len(pts)} spectrum "
                                    f"images ({', '.join(pts[:4])}); a session is one acquisition: name "
                                    "its .pts as 'eds' (with pixel_size_nm if needed) instead of the .asw")

    if path.suffix.lower() == ".npy":
        load_npy(path, sid, role)
        raise SessionError(sid, f"{role} file {path.name}: a bare .npy carries no calibration; save "
                                "images and spectrum images as .hspy with calibrated axes (see README)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            kwargs = {"reader": "JEOL"} if suffix in (".img", ".map") else {}
            out = hs.load(str(path), lazy=suffix not in EAGER_SUFFIXES, **kwargs)
    except Exception as exc:
        raise SessionError(sid, f"cannot read {role} file {path.name}: {type(exc).__name__}: {exc}. "
                                "The file may be truncated or corrupt, or not a format RosettaSciIO "
                                "reads; export it again") from exc
    return out if isinstance(out, list) else [out]


def _split_signals(signals: list, sid: str, name: str, notes: list[str] | None = None):
    """Pick the HAADF image and the EDS spectrum image out of what a file holds: the image titled
    HAADF, else the first image (a note names the others); the largest EDS spectrum image."""
    haadf = eds = None
    images = []
    for s in signals:
        nav, sig = s.axes_manager.navigation_dimension, s.axes_manager.signal_dimension
        kind = s.metadata.get_item("Signal.signal_type", "") or ""
        if sig == 2 and nav == 0:
            images.append(s)
            title = (s.metadata.get_item("General.title", "") or "").upper()
            if haadf is None or ("HAADF" in title and "HAADF" not in _title(haadf).upper()):
                haadf = s
        elif sig == 1 and nav == 2 and ("EDS" in kind.upper() or kind == ""):
            if eds is None or np.prod(s.data.shape) > np.prod(eds.data.shape):
                eds = s
    if len(images) > 1 and notes is not None and "HAADF" not in _title(haadf).upper():
        others = [_title(s) for s in images if s is not haadf]
        notes.append(f"{name} holds {len(images)} images and none is titled HAADF; used {_title(haadf)!r} "
                     f"as the HAADF image (others: {', '.join(repr(o) for o in others[:6])}); name the "
                     "HAADF image's own file as 'haadf' to choose another")
    if eds is not None and "EDS" not in (eds.metadata.get_item("Signal.signal_type", "") or ""):
        eds.set_signal_type("EDS_TEM")
    return haadf, eds


def _title(s) -> str:
    if s is None:
        return ""
    return (s.metadata.get_item("General.title", "") or
            s.metadata.get_item("General.original_filename", "") or "untitled")


def _pixel_nm(sig, axes, sid: str, what: str, override: float | None = None,
              notes: list[str] | None = None) -> tuple[float, str]:
    """(pixel size in nm, 'file' | 'manifest'). The file's calibration unless session.yaml gives
    `pixel_size_nm` (an override, noted, when the file has one); a file without one needs it."""
    notes = notes if notes is not None else []
    if not spatial_calibration(sig, axes):
        if override is not None:
            return float(override), "manifest"
        desc = ", ".join(f"'{ax.name}' in {ax.units!r} (scale {ax.scale:g})" for ax in axes)
        raise SessionError(sid, f"{what} axes {desc} carry no spatial calibration (common for JPEG, PNG, "
                                "plain or ImageJ TIFF without scale, MRC without a unit cell); give the "
                                "pixel size in session.yaml, e.g. `pixel_size_nm: 0.05`")
    scales = [abs(float(ax.scale)) * _LENGTH_TO_NM[str(ax.units).strip().lower()] for ax in axes]
    if len(scales) != 2 or not np.isclose(scales[0], scales[1], rtol=1e-3):
        if override is not None:
            notes.append(f"{what} pixels in the file are not square ({scales} nm); used pixel_size_nm "
                         f"{override:g} from session.yaml")
            return float(override), "manifest"
        raise SessionError(sid, f"{what} pixels are not square ({scales} nm); mmlake chips need square pixels")
    if override is not None:
        if not np.isclose(override, scales[0], rtol=1e-3):
            notes.append(f"session.yaml pixel_size_nm {override:g} overrides the {what} file's "
                         f"calibration {scales[0]:.6g} nm")
        return float(override), "manifest"
    return scales[0], "file"


def _eds_pixel_consistent(eds, haadf_shape, pixel: float, sid: str, notes: list[str]) -> None:
    """Note (never refuse) when the EDS file's own pixel size disagrees with the HAADF image's
    once binning is accounted for; registration goes by the scan grids."""
    axes = eds.axes_manager.navigation_axes
    if not spatial_calibration(eds, axes):
        return
    own = abs(float(axes[0].scale)) * _LENGTH_TO_NM[str(axes[0].units).strip().lower()]
    factor = haadf_shape[0] / eds.data.shape[0] if eds.data.shape[0] else 1.0
    if not np.isclose(own, pixel * factor, rtol=0.02):
        notes.append(f"EDS pixel {own:.6g} nm differs from the HAADF pixel x grid ratio "
                     f"({pixel:.6g} nm x {factor:g}); the HAADF calibration is used")


def _energy_axis(eds, sid: str, manifest: Manifest | None = None,
                 notes: list[str] | None = None) -> tuple[EnergyAxis, str]:
    """(energy axis in keV, 'file' | 'manifest'); session.yaml's energy_scale_kev (and
    energy_offset_kev, default 0) override the file's or stand in for a missing one."""
    notes = notes if notes is not None else []
    ax = eds.axes_manager.signal_axes[0]
    scale = manifest.energy_scale_kev if manifest is not None else None
    offset = (manifest.energy_offset_kev if manifest is not None else None) or 0.0
    if not energy_calibration(ax):
        if scale is None:
            raise SessionError(sid, f"EDS energy axis has units {ax.units!r} (scale {ax.scale:g}): no energy "
                                    "calibration; give it in session.yaml, e.g. `energy_scale_kev: 0.01` "
                                    "and `energy_offset_kev: 0.0`")
        return EnergyAxis(float(offset), float(scale), int(ax.size)), "manifest"
    f = _ENERGY_TO_KEV[str(ax.units).strip().lower()]
    own = EnergyAxis(float(ax.offset) * f, float(ax.scale) * f, int(ax.size))
    if scale is None:
        return own, "file"
    if not (np.isclose(scale, own.scale_kev, rtol=1e-6) and np.isclose(offset, own.offset_kev, atol=1e-6)):
        notes.append(f"session.yaml energy axis (offset {offset:g} keV, {scale:g} keV/channel) overrides "
                     f"the file's (offset {own.offset_kev:.6g} keV, {own.scale_kev:.6g} keV/channel)")
    return EnergyAxis(float(offset), float(scale), int(ax.size)), "manifest"


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
