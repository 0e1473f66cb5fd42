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

File names: ``<session_id>_<method>_<modality>_labels.<hspy|zspy>`` in ``out_dir``.

``fmt="nxs"`` writes one NeXus/HDF5 file per session, ``<session_id>.nxs``, following the FAIRmat
NXem application definition (the one NOMAD Oasis reads; `export_nxs` documents the layout): the HAADF
image (NXem_img / NXimage), the EDS spectrum image with its energy axis (NXspectrum) and one
element map per X-ray line with its IUPAC name (NXem_eds), every label map with its method and
modality, the region descriptors, and the provenance (materialization, code and data version,
parameters, raw-file sha256) of each. `validate_nxs` checks a file with nexusformat's NXem validator.
"""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np

from mmlake.errors import LakeError
from mmlake.lazyread import materialize

FORMATS = ("hspy", "zspy", "nxs")


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
                        "(`mmlake ingest FOLDER`), or check the id (`mmlake sql \"select session_id from sessions\"`)")
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
    paths (see the module docstring). ``fmt``: ``"hspy"`` (HDF5, HyperSpy's own format), ``"zspy"``
    (HyperSpy's zarr format, a folder per map) or ``"nxs"`` (one NeXus NXem file, `export_nxs`)."""
    if fmt not in FORMATS:
        raise ValueError(f"fmt must be one of {FORMATS}, got {fmt!r}")
    if fmt == "nxs":
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        return [export_nxs(lake, session_id, out / f"{_safe(session_id)}.nxs")]
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


# ------------------------------------------------------------------------------------ NeXus NXem

# Siegbahn names (exspy's line database) -> IUPAC notation (IUPAC 1991, as NXem's iupac_line_candidates)
SIEGBAHN_TO_IUPAC = {
    "Ka": "K-L2,3", "Kb": "K-M2,3", "La": "L3-M4,5", "Lb1": "L2-M4", "Lb2": "L3-N4,5", "Lb3": "L1-M3",
    "Lb4": "L1-M2", "Lg1": "L2-N4", "Lg3": "L1-N3", "Ll": "L3-M1", "Ln": "L2-M1", "Ma": "M5-N6,7",
    "Mb": "M4-N6", "Mg": "M3-N5", "Mz": "M4,5-N2,3", "M2N4": "M2-N4", "M3O4": "M3-O4", "M3O5": "M3-O5",
}
NXEM_VERSION = "NXem (NeXus definitions v2026.01, as shipped with nexusformat 2.1)"


def iupac_line(line: str) -> str:
    """'Fe_Ka' -> 'Fe K-L2,3' (IUPAC); unknown Siegbahn names pass through as 'Fe <name>'."""
    el, ln = line.split("_", 1)
    return f"{el} {SIEGBAHN_TO_IUPAC.get(ln, ln)}"


def _main_lines(elements, energy, beam_kv: float) -> list[tuple[str, float]]:
    """The strongest line of each shell (Ka, La, Ma) of each element inside the energy axis."""
    from mmlake.eds.lines import element_lines, known_element

    e_lo = energy.offset_kev + 0.1
    e_hi = min(energy.offset_kev + energy.scale_kev * (energy.n_channels - 1), beam_kv)
    out = []
    for el in elements:
        if not known_element(el):
            continue
        for name, (e, w) in sorted(element_lines(el).items(), key=lambda t: t[1][0]):
            if w >= 1.0 and e_lo <= e <= e_hi:
                out.append((name, e))
    return out


def _group(parent, name: str, nx_class: str, **attrs):
    g = parent.require_group(name)
    g.attrs["NX_class"] = nx_class
    for k, v in attrs.items():
        g.attrs[k] = v
    return g


def _field(parent, name: str, value, units: str | None = None, **attrs):
    import h5py

    if isinstance(value, str):
        d = parent.create_dataset(name, data=value, dtype=h5py.string_dtype())
    elif isinstance(value, (list, tuple)) and value and all(isinstance(v, str) for v in value):
        d = parent.create_dataset(name, data=list(value), dtype=h5py.string_dtype())
    else:
        d = parent.create_dataset(name, data=value)
    if units:
        d.attrs["units"] = units
    for k, v in attrs.items():
        d.attrs[k] = v
    return d


def _note(parent, name: str, *, data: str | None = None, type_: str = "application/json",
          file_name: str | None = None, checksum: str | None = None, context: str | None = None):
    g = _group(parent, name, "NXnote")
    _field(g, "type", type_)
    if file_name is not None:
        _field(g, "file_name", file_name)
    if checksum is not None:
        _field(g, "checksum", checksum)
        _field(g, "algorithm", "sha256")
    if context is not None:
        _field(g, "context", context)
    if data is not None:
        _field(g, "data", data)
    return g


def _nxdata(parent, name: str, signal: str, values, axes: list[tuple[str, np.ndarray, str, str]],
            long_name: str, units: str | None = None, title: str | None = None, **dskw):
    """An NXdata: `signal` field plus one axis field per dimension, with NXem's long_name attributes."""
    import h5py

    g = _group(parent, name, "NXdata", signal=signal, axes=[a[0] for a in axes])
    for i, (ax, _, _, _) in enumerate(axes):
        g.attrs[f"{ax}_indices"] = np.uint32(i)
    if title:
        _field(g, "title", title)
    if isinstance(values, h5py.Dataset) or values is None:
        d = values
    else:
        d = g.create_dataset(signal, data=values, **dskw)
    if d is not None:
        d.attrs["long_name"] = long_name
        if units:
            d.attrs["units"] = units
    for ax, coords, u, ln in axes:
        _field(g, ax, np.asarray(coords), units=u, long_name=ln)
    return g


def _materialization(lake, mid: str | None) -> dict:
    if not mid:
        return {}
    rows = lake.query("select * from materializations where materialization_id = ?", [mid]).to_dicts()
    return rows[0] if rows else {"materialization_id": mid}


def _provenance(parent, lake, mid: str | None, name: str = "provenance"):
    """An NXnote holding the lake's materialization row (JSON) that wrote these data."""
    import json

    row = _materialization(lake, mid)
    return _note(parent, name, data=json.dumps(row, default=str, sort_keys=True),
                 context=f"mmlake materialization {mid} ({row.get('asset_key', '?')}, code "
                         f"{row.get('code_version', '?')}, data version {row.get('data_version', '?')})")


def export_nxs(lake, session_id: str, path: str | Path, band_bytes: int = 64 << 20) -> Path:
    """One NeXus NXem file (HDF5) of a session. Layout (`/entry1`, NX_class in brackets):

    - ``definition = "NXem"``, ``start_time``/``end_time`` (acquired_at), ``identifier_experiment``
      (the session id), ``experiment_description``; ``manifest`` and ``raw_file_<role>`` [NXnote]:
      session.yaml (JSON) and every raw file's name + sha256; ``provenance`` [NXnote]: the
      raw_session materialization;
    - ``sampleID`` [NXsample]: name, identifier_sample (sample key), atom_types (the session's
      elements), is_simulation (the manifest's ``synthetic`` record), preparation_date (acquired_at);
    - ``measurement`` [NXem_measurement] / ``instrument`` [NXem_instrument] (name, beam voltage) and
      ``eventID`` [NXem_event_data] holding ``imageID`` [NXimage] / ``image_2d`` [NXdata]: the
      HAADF image (``real``, axes ``axis_j`` = y, ``axis_i`` = x in nm, pixel i at i * pixel size),
      and ``spectrumID`` [NXspectrum] / ``spectrum_2d`` [NXdata]: the EDS spectrum image
      (``intensity`` counts (y, x, energy), ``axis_energy`` in keV = offset + scale * channel),
      each with a ``process`` [NXprocess] whose ``input`` [NXnote] names the raw file and sha256;
    - ``roiID`` [NXroi_process]: ``img`` [NXem_img] (imaging_mode HAADF, linked to the image) and
      ``eds`` [NXem_eds] / ``indexing`` [NXprocess]: atom_types, ``summary`` [NXdata] (summed
      spectrum) and one [NXimage] per X-ray line, ``<element>_<line>`` (e.g. ``fe_ka``), with
      ``iupac_line_candidates`` ('Fe K-L2,3'), ``energy_range`` (line +- 1 FWHM of the detector,
      exspy's integration window) and ``image_2d`` [NXdata] (counts in that window per pixel);
    - ``segmentation_<method>_<modality>`` [NXprocess] (truth: ``segmentation_truth_truth``):
      method, modality, ``label_map`` [NXdata] (int32 at pixel resolution, -1 = unassigned / outside
      the chip grid), the chip grid, ``regions`` [NXcollection] with one array per `regions` column
      (region, role, n_chips, area_nm2, d_spacing_nm, ...) and ``composition`` [NXdata]
      (atomic_percent (region, element)), ``parameters`` (segment_runs.params JSON) and
      ``provenance`` [NXnote] for the labels and ``provenance_descriptors`` for the regions.

    The EDS cube is copied from the lake's raw file in row bands of about `band_bytes` (gzip-4
    compressed, never dense in memory as a whole). Returns `path`."""
    import datetime as dt
    import json

    import h5py

    from mmlake.chips import ChipGrid
    from mmlake.eds.lines import fwhm_kev
    from mmlake.store import open_stored_session

    maps, s, g = label_maps(lake, session_id)
    session = open_stored_session(lake, session_id)
    grid = ChipGrid(int(g["chip_px"]), int(g["n_rows"]), int(g["n_cols"]), int(g["origin_y"]), int(g["origin_x"]))
    pixel = float(session.pixel_size_nm)
    manifest = json.loads(s.get("manifest") or "{}")
    files = lake.query("select role, file_name, sha256, bytes from session_files where session_id = ? order by role",
                       [session_id]).to_dicts()
    by_role = {f["role"]: f for f in files}
    acquired = s.get("acquired_at")
    when = (acquired.isoformat() if isinstance(acquired, dt.datetime) else str(acquired or ""))
    elements = list(s.get("elements") or [])
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    H, W = session.shape
    yy = np.arange(H) * pixel
    xx = np.arange(W) * pixel
    img_axes = [("axis_j", yy, "nm", "y (nm)"), ("axis_i", xx, "nm", "x (nm)")]
    from importlib.metadata import version

    with h5py.File(tmp, "w") as f:
        f.attrs["NX_class"] = "NXroot"
        f.attrs["default"] = "entry1"
        f.attrs["creator"] = f"mmlake {version('mmlake')}"
        f.attrs["file_name"] = path.name
        f.attrs["file_time"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
        f.attrs["HDF5_Version"] = h5py.version.hdf5_version
        e = _group(f, "entry1", "NXentry")
        _field(e, "definition", "NXem", version=NXEM_VERSION)
        _field(e, "start_time", when)
        _field(e, "end_time", when)
        _field(e, "identifier_experiment", session_id)
        _field(e, "experiment_alias", f"{s.get('campaign')} / {s.get('sample')} / {s.get('dose_dpa')} dpa")
        _field(e, "experiment_description",
               f"STEM HAADF + EDS session {session_id} exported from the mmlake lake: campaign "
               f"{s.get('campaign')}, sample {s.get('sample')}, dose {s.get('dose_dpa')} dpa, acquisition "
               f"{s.get('acquisition')}; calibration from the {s.get('calibration_source') or 'file'}")
        prog = _group(e, "profiling", "NXcs_profiling")
        _field(_group(prog, "program1", "NXprogram"), "program", "mmlake", version=version("mmlake"))
        _note(e, "manifest", data=json.dumps(manifest, default=str, sort_keys=True), file_name="session.yaml",
              checksum=(by_role.get("manifest") or {}).get("sha256"))
        for fr in files:
            if fr["role"] != "manifest":
                _note(e, f"raw_file_{_safe(fr['role']).replace('+', '_')}", type_="application/octet-stream",
                      file_name=fr["file_name"], checksum=fr["sha256"])
        _provenance(e, lake, s.get("materialization_id"))

        # NXem's sampleID, eventID, imageID, spectrumID, roiID are written literally: nexusformat 2.1's
        # NXem validator matches application-definition names literally, so only these names get checked
        smp = _group(e, "sampleID", "NXsample")
        _field(smp, "name", str(s.get("sample")))
        _field(smp, "identifier_sample", str(s.get("sample_key") or s.get("sample")), type="mmlake sample key")
        _field(smp, "atom_types", ", ".join(elements))
        _field(smp, "is_simulation", bool(manifest.get("synthetic")))
        _field(smp, "preparation_date", when)
        _field(smp, "description", f"campaign {s.get('campaign')}, dose {s.get('dose_dpa')} dpa")

        meas = _group(e, "measurement", "NXem_measurement")
        ins = _group(meas, "instrument", "NXem_instrument")
        _field(ins, "name", str(s.get("instrument") or "unknown"))
        fab = _group(ins, "fabrication", "NXfabrication")
        _field(fab, "vendor", "unknown")
        _field(fab, "model", str(s.get("instrument") or "unknown"))
        col = _group(ins, "ebeam_column", "NXebeam_column")
        src = _group(col, "electron_source", "NXsource")
        _field(src, "emitter_type", "unknown")
        if s.get("beam_kv"):
            _field(src, "voltage", float(s["beam_kv"]), units="kV")
        ev = _group(meas, "eventID", "NXem_event_data")
        _field(ev, "start_time", when)
        _field(ev, "end_time", when)
        _field(ev, "identifier_sample", str(s.get("sample_key") or s.get("sample")))

        haadf_link = None
        if session.haadf is not None:
            im = _group(ev, "imageID", "NXimage")
            pr = _group(im, "process", "NXprocess")
            src_file = by_role.get("haadf") or by_role.get("data") or {}
            _note(pr, "input", type_="application/octet-stream", file_name=src_file.get("file_name", ""),
                  checksum=src_file.get("sha256", ""),
                  context=f"HAADF image read through RosettaSciIO; binned x{session.haadf_binning} to register "
                          "with the EDS grid" if session.haadf_binning > 1 else "HAADF image read through RosettaSciIO")
            _field(pr, "detector_identifier", "haadf")
            d = _nxdata(im, "image_2d", "real", session.haadf, img_axes, "HAADF intensity (a.u.)",
                        title=f"HAADF {session_id}", compression="gzip", compression_opts=4)
            haadf_link = d.name
        eds_maps, lines = {}, []
        if session.eds is not None:
            en = session.energy
            energies = en.offset_kev + en.scale_kev * np.arange(en.n_channels)
            sp = _group(ev, "spectrumID", "NXspectrum")
            pr = _group(sp, "process", "NXprocess")
            src_file = by_role.get("eds") or by_role.get("data") or {}
            _note(pr, "input", type_="application/octet-stream", file_name=src_file.get("file_name", ""),
                  checksum=src_file.get("sha256", ""),
                  context=f"EDS spectrum image read through RosettaSciIO (lazy); nav binning x{session.eds_binning}")
            _field(pr, "detector_identifier", "eds")
            data = session.eds.data
            dtype = data.dtype if np.issubdtype(data.dtype, np.number) else np.float32
            grp = _nxdata(sp, "spectrum_2d", "intensity", None,
                          img_axes + [("axis_energy", energies, "keV", "Energy (keV)")], "Counts",
                          title=f"EDS {session_id}")
            cube = grp.create_dataset("intensity", shape=(H, W, en.n_channels), dtype=dtype,
                                      chunks=(1, min(W, 64), en.n_channels), compression="gzip",
                                      compression_opts=4, shuffle=True)
            cube.attrs["long_name"] = "Counts"
            cube.attrs["units"] = "counts"
            res = float(s.get("eds_resolution_mnka_ev") or 130.0)
            beam = float(s.get("beam_kv") or 1e9)
            for name, e0 in _main_lines(elements, en, beam):
                w = float(fwhm_kev(e0, res))
                c0 = int(np.clip(np.floor((e0 - w - en.offset_kev) / en.scale_kev), 0, en.n_channels - 1))
                c1 = int(np.clip(np.ceil((e0 + w - en.offset_kev) / en.scale_kev) + 1, c0 + 1, en.n_channels))
                lines.append((name, e0, c0, c1))
                eds_maps[name] = np.zeros((H, W), dtype=np.float64)
            summary = np.zeros(en.n_channels, dtype=np.float64)
            band = max(1, int(band_bytes // max(1, W * en.n_channels * np.dtype(dtype).itemsize)))
            for r0 in range(0, H, band):
                block = data[r0:r0 + band]
                block = materialize(block)
                cube[r0:r0 + block.shape[0]] = block.astype(dtype, copy=False)
                summary += block.sum(axis=(0, 1), dtype=np.float64)
                for name, _, c0, c1 in lines:
                    eds_maps[name][r0:r0 + block.shape[0]] = block[..., c0:c1].sum(axis=-1, dtype=np.float64)

        roi = _group(e, "roiID", "NXroi_process")
        if haadf_link is not None:
            img = _group(roi, "img", "NXem_img")
            im2 = _group(img, "imageID", "NXimage")
            _field(im2, "imaging_mode", "HAADF")
            im2["image_2d"] = f[haadf_link].parent  # hard link to the measured image (no copy)
        if session.eds is not None:
            eds_g = _group(roi, "eds", "NXem_eds")
            idx = _group(eds_g, "indexing", "NXprocess")
            _field(idx, "atom_types", ", ".join(elements))
            _nxdata(idx, "summary", "intensity", summary, [("axis_energy", energies, "keV", "Energy (keV)")],
                    "Counts", units="counts", title="summed spectrum of the spectrum image")
            for name, e0, c0, c1 in lines:
                m = _group(idx, _safe(name).lower(), "NXimage")
                _field(m, "iupac_line_candidates", iupac_line(name))
                _field(m, "energy_range", np.array([energies[c0], energies[c1 - 1]]), units="keV")
                _field(m, "siegbahn_line", name)
                _field(m, "line_energy", float(e0), units="keV")
                _nxdata(m, "image_2d", "intensity", eds_maps[name], img_axes, f"{iupac_line(name)} counts",
                        units="counts", title=f"{iupac_line(name)} ({name}) window counts",
                        compression="gzip", compression_opts=4)

        regions = _regions(lake, session_id)
        runs = {}
        if _has_table(lake, "segment_runs"):
            for r in lake.query("select method, modality, n_labels, features, class_names, params, materialization_id "
                                "from segment_runs where session_id = ?", [session_id]).iter_rows(named=True):
                runs[(r["method"], r["modality"])] = r
        for (method, modality), (arr, mid) in sorted(maps.items()):
            sg = _group(e, f"segmentation_{_safe(method)}_{_safe(modality)}".lower(), "NXprocess")
            _field(sg, "method", method)
            _field(sg, "modality", modality)
            _field(sg, "program", "mmlake", version=version("mmlake"))
            _field(sg, "chip_px", int(g["chip_px"]))
            _field(sg, "chip_grid", np.array([int(g["n_rows"]), int(g["n_cols"])], dtype=np.int32))
            _field(sg, "chip_grid_origin_yx", np.array([int(g["origin_y"]), int(g["origin_x"])], dtype=np.int32))
            _field(sg, "description", f"{method} segmentation of the {modality} modality, chip labels upsampled "
                                      "to pixels (chip_index = row * n_cols + col); -1 = unassigned or outside the grid")
            _nxdata(sg, "label_map", "labels", arr.astype(np.int32), img_axes, "region label",
                    title=f"{method} {modality} labels", compression="gzip", compression_opts=4)
            run = runs.get((method, modality))
            if run is not None:
                _field(sg, "parameters", str(run.get("params") or "{}"))
                if run.get("class_names"):
                    _field(sg, "class_names", [str(c) for c in run["class_names"]])
            _provenance(sg, lake, mid)
            reg = regions.get((method, modality))
            if reg is not None:
                _write_regions(sg, reg)
                _provenance(sg, lake, reg["materialization_id"], "provenance_descriptors")
    tmp.replace(path)
    return path


def _regions(lake, session_id: str) -> dict:
    """(method, modality) -> {'regions': polars frame, 'composition': frame, 'materialization_id'}."""
    out: dict = {}
    if not _has_table(lake, "regions"):
        return out
    reg = lake.query("select * from regions where session_id = ? order by method, modality, region", [session_id])
    comp = (lake.query("select * from region_composition where session_id = ? order by method, modality, region, "
                       "element", [session_id]) if _has_table(lake, "region_composition") else None)
    for (m, d), part in reg.group_by(["method", "modality"], maintain_order=True):
        c = None
        if comp is not None and len(comp):
            c = comp.filter((comp["method"] == m) & (comp["modality"] == d))
        out[(str(m), str(d))] = {"regions": part, "composition": c,
                                 "materialization_id": part["materialization_id"][0]}
    return out


def _write_regions(sg, reg: dict) -> None:
    import polars as pl

    part = reg["regions"]
    col = _group(sg, "regions", "NXcollection")
    units = {"area_nm2": "nm^2", "d_spacing_nm": "nm", "d_spacing_unc_nm": "nm", "d_spacing_se_nm": "nm",
             "d_spacing_ci_low": "nm", "d_spacing_ci_high": "nm", "superlattice_nm": "nm", "square_px": "pixel",
             "eds_counts": "counts", "core_eds_counts": "counts"}
    for name, dtype in part.schema.items():
        if name in ("session_id", "method", "modality", "materialization_id"):
            continue
        values = part[name]
        if dtype == pl.Utf8 or dtype == pl.String:
            _field(col, name, [("" if v is None else str(v)) for v in values.to_list()])
        elif dtype.is_numeric() or dtype == pl.Boolean:
            arr = values.cast(pl.Float64).fill_null(float("nan")).to_numpy() if dtype.is_float() or \
                values.null_count() else values.to_numpy()
            _field(col, name, arr, units=units.get(name))
    comp = reg.get("composition")
    if comp is not None and len(comp):
        regions_ = sorted(set(comp["region"].to_list()))
        els = sorted(set(comp["element"].to_list()))
        mat = np.full((len(regions_), len(els)), np.nan)
        for r in comp.iter_rows(named=True):
            if r["atomic_percent"] is not None:
                mat[regions_.index(r["region"]), els.index(r["element"])] = r["atomic_percent"]
        g = _group(sg, "composition", "NXdata", signal="atomic_percent", axes=["region", "element"])
        g.attrs["region_indices"] = np.uint32(0)
        g.attrs["element_indices"] = np.uint32(1)
        _field(g, "atomic_percent", mat, units="at.%", long_name="atomic percent of the region's summed spectrum "
                                                                "(Cliff-Lorimer); NaN = NULL in the lake")
        _field(g, "region", np.array(regions_, dtype=np.int32), long_name="region label")
        _field(g, "element", els, long_name="element")


def validate_nxs(path: str | Path) -> tuple[int, int, str]:
    """Validate a file against the NXem application definition with nexusformat's validator
    (`nxvalidate -a NXem FILE`). Returns (warnings, errors, the validator's log)."""
    import io
    import logging

    from nexusformat.nexus import validate as nxv

    import contextlib

    buf = io.StringIO()
    handler = logging.StreamHandler(buf)
    handler.setLevel(logging.DEBUG)
    old = nxv.logger.level
    nxv.logger.addHandler(handler)
    nxv.logger.setLevel(logging.WARNING)
    try:
        with contextlib.redirect_stdout(buf):
            result = nxv.validate_application(str(path), application="NXem")
    finally:
        nxv.logger.removeHandler(handler)
        nxv.logger.setLevel(old)
    if result is None:
        return 0, 1, buf.getvalue()
    return int(result[0]), int(result[1]), buf.getvalue()
