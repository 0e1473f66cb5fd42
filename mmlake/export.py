"""Export a session's label maps as calibrated HyperSpy signals, to open next to the raw data.

For every segmentation of the session in the lake (``segment_labels``: method x modality) and the
ground truth where the session has one (``chips.truth_label``, exported as ``truth/truth``), the
per-chip labels are upsampled to pixel resolution (the chip grid's origin and size; pixels outside
the grid, and unassigned chips, are -1) and written as a ``Signal2D`` with the session's calibration:
axes ``y`` and ``x`` in nm with the pixel size as scale, so the map overlays the HAADF image and the
EDS navigation grid in HyperSpy (``hs.load``; ``plot`` or ``add_marker``). Metadata:
``General.title``, ``Signal.quantity = "label"``, and ``mmlake.*``: session, campaign, sample, dose,
method, modality, chip grid, the materialization that wrote the labels and ``roles`` (``{label:
role}`` from the ``regions`` table where descriptors exist).

File names: ``<session_id>_<method>_<modality>_labels.hspy`` in ``out_dir``.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mmlake.errors import LakeError

FORMATS = ("hspy",)  # zspy needs zarr, which this environment does not ship


def _has_table(lake, name: str) -> bool:
    return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                           [name])["n"][0])


def _safe(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9@._-]+", "_", str(text))


def label_maps(lake, session_id: str) -> tuple[dict, dict, dict]:
    """``({(method, modality): (H, W) int32 map}, session row, grid row)`` from the lake tables
    ``sessions``, ``chip_grids``, ``segment_labels`` (and ``chips.truth_label``)."""
    from mmlake.chips import ChipGrid

    sess = lake.query("select * from sessions where session_id = ?", [session_id]).to_dicts()
    if not sess:
        raise LakeError(f"no session {session_id!r} in the lake at {lake.home}; ingest it first "
                        "(`mmlake ingest FOLDER`), or check the id (sample@dose, e.g. pristine@0.1)")
    grid_rows = lake.query("select * from chip_grids where session_id = ?", [session_id]).to_dicts()
    if not grid_rows:
        raise LakeError(f"session {session_id}: no chip grid in the lake; materialize `chips` first")
    s, g = sess[0], grid_rows[0]
    grid = ChipGrid(int(g["chip_px"]), int(g["n_rows"]), int(g["n_cols"]), int(g["origin_y"]), int(g["origin_x"]))
    shape = s.get("haadf_shape") or (s.get("eds_shape") or [])[:2]
    if not shape or len(shape) < 2:
        shape = (grid.origin_y + grid.n_rows * grid.chip_px, grid.origin_x + grid.n_cols * grid.chip_px)
    shape = (int(shape[0]), int(shape[1]))
    frames = {}
    if _has_table(lake, "segment_labels"):
        lab = lake.query("select method, modality, chip_index, label, materialization_id from segment_labels "
                         "where session_id = ? order by method, modality, chip_index", [session_id])
        for (m, d), part in lab.group_by(["method", "modality"], maintain_order=True):
            frames[(str(m), str(d))] = part
    truth = lake.query("select chip_index, truth_label as label, materialization_id from chips "
                       "where session_id = ? and truth_label is not null order by chip_index", [session_id])
    if len(truth) == grid.n_chips:
        frames[("truth", "truth")] = truth
    maps = {}
    for key, part in frames.items():
        labels = np.full(grid.n_chips, -1, dtype=np.int32)
        labels[part["chip_index"].to_numpy()] = part["label"].fill_null(-1).to_numpy().astype(np.int32)
        maps[key] = (grid.upsample(labels, shape, fill=-1).astype(np.int32), part["materialization_id"][0])
    return maps, s, g


def export_session(lake, session_id: str, out_dir: str | Path, fmt: str = "hspy") -> list[Path]:
    """Write every label map of ``session_id`` as a calibrated HyperSpy ``Signal2D``; returns the
    paths (see the module docstring). ``fmt``: ``"hspy"`` (HDF5, HyperSpy's own format)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    maps, s, g = label_maps(lake, session_id)
    if not maps:
        raise LakeError(f"session {session_id}: no segmentation labels in the lake (table segment_labels) "
                        "and no ground truth; materialize the segmentation assets first")
    import hyperspy.api as hs

    roles: dict = {}
    if _has_table(lake, "regions"):
        for r in lake.query("select method, modality, region, role from regions where session_id = ?",
                            [session_id]).iter_rows(named=True):
            roles.setdefault((r["method"], r["modality"]), {})[str(r["region"])] = r["role"]
    pixel = float(g.get("pixel_size_nm") or s.get("pixel_size_nm") or 1.0)
    units = "nm" if (g.get("pixel_size_nm") or s.get("pixel_size_nm")) else "px"
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for (method, modality), (arr, mid) in sorted(maps.items()):
        sig = hs.signals.Signal2D(arr, axes=[
            {"name": "y", "units": units, "scale": pixel, "offset": 0.0, "size": arr.shape[0], "navigate": False},
            {"name": "x", "units": units, "scale": pixel, "offset": 0.0, "size": arr.shape[1], "navigate": False},
        ])
        sig.metadata.General.title = f"{method} {modality} labels {session_id}"
        sig.metadata.Signal.quantity = "label"
        md = {
            "session_id": session_id, "campaign": s.get("campaign"), "sample": s.get("sample"),
            "dose_dpa": s.get("dose_dpa"), "method": method, "modality": modality,
            "chip_px": int(g["chip_px"]), "grid_rows": int(g["n_rows"]), "grid_cols": int(g["n_cols"]),
            "grid_origin_yx": [int(g["origin_y"]), int(g["origin_x"])], "unassigned_label": -1,
            "labels_materialization_id": mid,
        }
        for k, v in md.items():
            if v is not None:
                sig.metadata.set_item(f"mmlake.{k}", v)
        for lab, role in roles.get((method, modality), {}).items():
            if role is not None:
                sig.metadata.set_item(f"mmlake.roles.label_{lab}", role)
        path = out / f"{_safe(session_id)}_{_safe(method)}_{_safe(modality)}_labels.{fmt}"
        sig.save(path, overwrite=True)
        paths.append(path)
    return paths
