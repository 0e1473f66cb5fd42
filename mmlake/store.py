"""Sessions in the lake: registering a session folder, keeping its raw files immutable, reopening it.

Once `raw_session` has run, every downstream step reads the session from the lake's object folder
(files addressed by sha256), never from the landing folder, so a user deleting or editing the
original folder cannot change what the lake's rows were computed from.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from mmlake.errors import SessionError
from mmlake.lake import Lake, sha256_file
from mmlake.manifest import MANIFEST_NAME, Manifest, load_manifest, parse_manifest
from mmlake.session import Session, open_manifest


def register_source(lake: Lake, folder: str | os.PathLike) -> Manifest:
    """Validate a session folder's manifest and record where its files are, for `raw_session`.

    Registering the same folder twice replaces the registration (idempotent).
    """
    folder = Path(folder).resolve()
    manifest = load_manifest(folder)
    with lake.connect() as con:
        con.execute("begin transaction")
        con.execute("delete from session_sources where session_id = ?", [manifest.session_id])
        con.execute(
            "insert into session_sources values (?,?,?,?,?,?,?)",
            [manifest.session_id, manifest.campaign, manifest.sample, manifest.dose_key,
             str(folder), sha256_file(folder / MANIFEST_NAME), dt.datetime.now(dt.timezone.utc)],
        )
        con.execute("commit")
    return manifest


def source_folder(lake: Lake, session_id: str) -> Path:
    rows = lake.query("select folder from session_sources where session_id = ?", [session_id]).to_dicts()
    if not rows:
        raise SessionError(session_id, "no session folder is registered for this partition; "
                                       "run `mmlake ingest PATH` (or drop it in the landing zone) first")
    return Path(rows[0]["folder"])


def session_frames(lake: Lake, session: Session, folder: Path) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Copy a session's files into the object folder and build its `sessions`/`session_files` rows.

    Also streams once over the EDS cube (lazy, chunk by chunk) to prove it is readable and not empty
    before anything is stored, and returns that count map for the thumbnail.
    """
    m, sid = session.manifest, session.session_id
    extras: dict[str, Any] = {}
    if session.eds is not None:
        try:
            count_map = np.asarray(session.eds.data.sum(axis=-1, dtype=np.float64).compute())
        except Exception as exc:
            raise SessionError(sid, f"cannot read the EDS spectrum image: {type(exc).__name__}: {exc}. "
                                    "The file may be truncated or corrupt; export it again") from exc
        if not np.all(np.isfinite(count_map)):
            raise SessionError(sid, "the EDS spectrum image contains NaN or infinite counts")
        if not count_map.sum() > 0:
            raise SessionError(sid, "the EDS spectrum image has zero counts everywhere; check the "
                                    "acquisition, or drop 'eds' from session.yaml to ingest the HAADF only")
        extras["count_map"] = count_map
        extras["total_counts"] = float(count_map.sum())
    files = [("manifest", MANIFEST_NAME, folder / MANIFEST_NAME)]
    files += [(role, rel, session.paths[role]) for role, rel in m.files().items()]
    file_rows = []
    for role, rel, path in files:
        sha = lake.put_file(path)
        file_rows.append({"session_id": sid, "role": role, "file_name": rel, "sha256": sha,
                          "bytes": path.stat().st_size})
    eds_shape = list(session.eds.data.shape) if session.eds is not None else None
    row = {
        "session_id": sid, "campaign": m.campaign, "sample": m.sample, "dose_dpa": m.dose_dpa,
        "dose_key": m.dose_key, "acquired_at": m.acquired_at, "instrument": m.instrument_name,
        "beam_kv": m.beam_kv, "haadf_shape": list(session.shape), "eds_shape": eds_shape,
        "pixel_size_nm": session.pixel_size_nm,
        "energy_offset_kev": session.energy.offset_kev if session.energy else None,
        "energy_scale_kev": session.energy.scale_kev if session.energy else None,
        "eds_resolution_mnka_ev": eds_resolution_ev(session.eds) if session.eds is not None else None,
        "elements": list(m.elements), "chip_px": m.chip_px,
        "has_haadf": session.haadf is not None, "has_eds": session.eds is not None,
        "eds_binning": session.eds_binning, "manifest": json.dumps(m.raw, default=str),
        "source_folder": str(folder),
    }
    frames = {
        "sessions": pl.DataFrame([row], schema_overrides={"haadf_shape": pl.List(pl.Int32),
                                                          "eds_shape": pl.List(pl.Int32),
                                                          "elements": pl.List(pl.Utf8)}),
        "session_files": pl.DataFrame(file_rows),
    }
    return frames, extras


def eds_resolution_ev(eds) -> float:
    """Detector FWHM at Mn Ka from the file's metadata; exspy's default (130 eV) when absent."""
    value = eds.metadata.get_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa", None)
    return float(value) if value else 130.0


def open_stored_session(lake: Lake, session_id: str) -> Session:
    """Reopen a session from the lake: manifest from `sessions`, files from the object folder."""
    rows = lake.query("select manifest from sessions where session_id = ?", [session_id]).to_dicts()
    if not rows:
        raise SessionError(session_id, "raw_session has not been materialized for this session")
    manifest = parse_manifest(json.loads(rows[0]["manifest"]), Path(session_id), check_files=False)
    files = lake.query("select file_name, sha256 from session_files where session_id = ?", [session_id])
    by_name = dict(zip(files["file_name"], files["sha256"]))
    return open_manifest(manifest, lambda rel: lake.find_object(by_name[rel]))
