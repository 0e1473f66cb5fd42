"""The file formats a session may name, and what each needs beyond `hs.load`.

Every format is read through RosettaSciIO (HyperSpy's `hs.load`); this module holds the few facts
mmlake needs on top of the readers:

- which suffixes are accepted (`SUFFIXES`, also `mmlake.manifest.DATA_SUFFIXES`),
- which formats are multi-file: a TIA `.emi` reads its `<name>_N.ser` files, a JEOL `.asw` reads the
  `.pts`/`.img`/`.map` files of its views (paths stored inside it). `companions` lists them so the
  lake can store, hash and lay them out again next to the main file,
- which readers cannot read lazily (the image reader for `.jpg`/`.png`/`.bmp`/`.gif`: small images,
  read eagerly),
- whether a signal's axes carry a real spatial calibration (`spatial_calibration`): an MRC file
  without a unit cell reports 1 nm pixels, an uncalibrated TIFF or JPEG reports units `<undefined>`
  and scale 1, an Olympus TIFF reports metres with scale 0: all of these count as *no calibration*,
- RGB(A) images (structured dtype fields R, G, B[, A]) to one intensity channel (`rgb_to_intensity`).

No heavy import at module level.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

# suffix -> what it is (README "Session folders" lists the same)
SUFFIXES: dict[str, str] = {
    ".emd": "Velox / Berkeley EMD (HDF5)",
    ".bcf": "Bruker Esprit",
    ".hspy": "HyperSpy HDF5",
    ".zspy": "HyperSpy zarr",
    ".dm3": "Gatan DigitalMicrograph 3",
    ".dm4": "Gatan DigitalMicrograph 4",
    ".ser": "FEI TIA series (one data set)",
    ".emi": "FEI TIA experiment (reads its <name>_N.ser files)",
    ".pts": "JEOL Analysis Station spectrum image",
    ".asw": "JEOL Analysis Station workspace (reads the .pts/.img/.map files of its view)",
    ".mrc": "MRC (CCP-EM / FEI)",
    ".tif": "TIFF (Velox/TIA/FEI exports, ImageJ, DigitalMicrograph, plain)",
    ".tiff": "TIFF",
    ".jpg": "JPEG image (no calibration: give pixel_size_nm)",
    ".jpeg": "JPEG image (no calibration: give pixel_size_nm)",
    ".png": "PNG image (no calibration: give pixel_size_nm)",
    ".bmp": "BMP image (no calibration: give pixel_size_nm)",
    ".npy": "NumPy array (ground-truth label maps only)",
}
EAGER_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".gif"}  # RosettaSciIO's image reader fails lazily
MULTI_FILE_SUFFIXES = {".emi", ".asw"}
RGB_WEIGHTS = {"R": 0.299, "G": 0.587, "B": 0.114}  # ITU-R BT.601 luma (PIL's "L" conversion)


def companions(folder: str | os.PathLike, rel: str) -> list[str]:
    """Session-relative paths of the other files a multi-file format reads, in a stable order.

    `.emi`: every `<stem>_N.ser` beside it (TIA's naming). `.asw`: the files its views name (JEOL
    stores Windows paths relative to the .asw's folder). Files that are not there are left out (the
    reader then says what is missing); other formats have none."""
    folder = Path(folder)
    main = folder / rel
    suffix = main.suffix.lower()
    base = Path(rel).parent
    found: list[str] = []
    if suffix == ".emi":
        import glob

        for p in sorted(glob.glob(glob.escape(str(main.with_suffix(""))) + "_[0-9].ser")
                        + glob.glob(glob.escape(str(main.with_suffix(""))) + "_[0-9][0-9].ser")):
            found.append((base / Path(p).name).as_posix())
    elif suffix == ".asw":
        for name in _asw_files(main):
            if (main.parent / name).is_file():
                found.append((base / name).as_posix())
    root = folder.resolve()
    out = []
    for c in found:
        target = (folder / c).resolve()
        if root in target.parents and c not in out:
            out.append(c)
    return out


def _asw_files(path: Path) -> list[str]:
    """The data files a JEOL .asw names (relative to its folder, '/' separated)."""
    from rsciio.jeol._api import _parsejeol

    with open(path, "rb") as fd:
        if int(np.fromfile(fd, "<I", 1)[0]) != 0:
            return []
        fd.seek(12)
        tree = _parsejeol(fd)
    names = []
    for sample in (tree.get("SampleInfo") or {}).values():
        for view in (sample.get("ViewInfo") or {}).values():
            for item in (view.get("ViewData") or {}).values():
                fn = item.get("Filename")
                if isinstance(fn, str):
                    names.append("/".join(p for p in fn.split("\\") if p and p != "."))
    return names


def asw_spectrum_images(path: Path) -> list[str]:
    """The .pts spectrum images a JEOL .asw names (one per acquisition)."""
    return [n for n in _asw_files(path) if n.lower().endswith(".pts")]


def spatial_calibration(sig, axes) -> bool:
    """Whether these axes of `sig` carry a real length calibration (see the module docstring)."""
    from mmlake.session import _LENGTH_TO_NM

    for ax in axes:
        units = str(ax.units or "").strip().lower()
        if units not in _LENGTH_TO_NM or not float(ax.scale) or not np.isfinite(float(ax.scale)):
            return False
    plugin = sig.metadata.get_item("General.FileIO.0.io_plugin", "") or ""
    if plugin.endswith(".mrc"):  # no unit cell in the header: the reader reports 1 nm per pixel
        om = sig.original_metadata
        if om.get_item("fei_header", None) is None and om.get_item("std_header", None) is not None:
            if not float(np.ravel(om.get_item("std_header.Xlen", 0))[0]):
                return False
    return True


def energy_calibration(ax) -> bool:
    """Whether an energy axis carries a calibration in eV or keV."""
    from mmlake.session import _ENERGY_TO_KEV

    units = str(ax.units or "").strip().lower()
    return units in _ENERGY_TO_KEV and bool(float(ax.scale)) and np.isfinite(float(ax.scale))


def is_rgb(dtype) -> bool:
    return bool(dtype.names) and set("RGB") <= set(dtype.names)


def rgb_to_intensity(data) -> np.ndarray:
    """An RGB(A) image (structured dtype R, G, B[, A]) as float32 luma 0.299 R + 0.587 G + 0.114 B;
    alpha is ignored. A grey image saved as RGB (R == G == B) keeps its values exactly."""
    data = np.asarray(data)
    out = np.zeros(data.shape, dtype=np.float64)
    for ch, w in RGB_WEIGHTS.items():
        out += w * data[ch].astype(np.float64)
    if all(np.array_equal(data["R"], data[c]) for c in "GB"):
        out = data["R"].astype(np.float64)
    return out.astype(np.float32)
