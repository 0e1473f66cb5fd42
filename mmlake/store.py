"""Sessions in the lake: registering a session folder, keeping its raw files immutable, reopening it.

Once `raw_session` has run, every downstream step reads the session from the lake's object folder
(files addressed by sha256), never from the landing folder, so a user deleting or editing the
original folder cannot change what the lake's rows were computed from.
"""

from __future__ import annotations

import datetime as dt
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from mmlake.errors import SessionError
from mmlake.lake import Lake, sha256_file
from mmlake.manifest import MANIFEST_NAME, Manifest, content_sha, load_manifest, parse_manifest
from mmlake.session import Session, eds_count_map, open_manifest, session_files


@dataclass
class Registration:
    """What registering a session folder did: `status` is new, unchanged or replaced."""

    manifest: Manifest
    status: str
    content_sha: str
    previous_sha: str | None = None

    @property
    def session_id(self) -> str:
        return self.manifest.session_id


def folder_content(folder: Path, manifest: Manifest) -> tuple[str, dict[str, str]]:
    """content_sha of a session folder and the sha256 of each of its files, by role (companions of
    multi-file formats included: `mmlake.session.session_files`)."""
    shas = {role: sha256_file(folder / rel) for role, rel in session_files(folder, manifest).items()}
    return content_sha(manifest.raw, shas), shas


def register_source(lake: Lake, folder: str | os.PathLike, *, replace: bool = False,
                    content: str | None = None, strict: bool = False) -> Registration:
    """Validate a session folder's manifest and register it for `raw_session`, by identity.

    The rules (README, 'Session identity'): a session is campaign + sample + dose + acquisition.
    - a new identity is registered (status 'new');
    - identical content (same manifest, same file hashes, from any folder) is a no-op ('unchanged':
      nothing is recomputed, the first folder stays the recorded source);
    - different content under a registered identity is refused with a SessionError naming both
      sources, unless `replace=True` ('replaced': recorded in session_events; the rows it
      replaces move to the lake's history schema when raw_session runs).
    `content` may be passed when the caller already hashed the files (the landing sensor does).
    `strict`: unknown session.yaml keys are errors, not warnings.
    """
    folder = Path(folder).resolve()
    manifest = load_manifest(folder, strict=strict)
    sha = content or folder_content(folder, manifest)[0]
    now = dt.datetime.now(dt.timezone.utc)
    sid = manifest.session_id
    with lake.connect() as con:
        con.execute("begin transaction")
        try:
            prev = con.execute("select folder, content_sha from session_sources where session_id = ?",
                               [sid]).fetchone()
            stored = con.execute("select content_sha from sessions where session_id = ?", [sid]).fetchone()
            prev_sha = (stored[0] if stored else None) or (prev[1] if prev else None)
            if prev is not None and prev_sha == sha:
                status = "unchanged"
            elif prev is not None and prev_sha is not None and not replace:
                raise SessionError(sid, (
                    f"this session identity already holds different content (registered from "
                    f"{prev[0]}, content {prev_sha[:12]}); {folder} has content {sha[:12]}. If it is another "
                    "map of the same sample and dose, give it its own `acquisition: <name>` (or its real "
                    "acquired_at) in session.yaml; if it is meant to replace the stored session, run "
                    "`mmlake ingest --replace PATH` (the earlier rows stay queryable in the history schema)."))
            else:
                status = "replaced" if prev is not None and prev_sha is not None else "new"
            if status != "unchanged":
                con.execute("delete from session_sources where session_id = ?", [sid])
                con.execute(
                    "insert into session_sources by name select ? as session_id, ? as campaign, ? as sample, "
                    "? as dose_key, ? as folder, ? as manifest_sha256, ? as registered_at, ? as sample_key, "
                    "? as acquisition, ? as partition_key, ? as content_sha",
                    [sid, manifest.campaign, manifest.sample, manifest.dose_key, str(folder),
                     sha256_file(folder / MANIFEST_NAME), now, manifest.sample_key, manifest.acquisition,
                     partition_key_str(manifest), sha],
                )
            if status != "unchanged":  # identical content writes nothing at all
                record_event(con, sid, "registered" if status == "new" else status, sha, prev_sha, str(folder))
            con.execute("commit")
        except SessionError as exc:
            con.execute("rollback")
            with lake.connect() as con2:
                record_event(con2, sid, "refused", sha, prev_sha, str(folder), str(exc))
            raise
        except BaseException:
            con.execute("rollback")
            raise
    return Registration(manifest, status, sha, prev_sha)


def record_event(con, session_id: str, event: str, sha: str | None, previous: str | None,
                 folder: str | None, message: str | None = None) -> None:
    con.execute("insert into session_events values (?,?,?,?,?,?,?)",
                [session_id, event, sha, previous, folder, message, dt.datetime.now(dt.timezone.utc)])


def partition_key_str(manifest: Manifest) -> str:
    """Dagster's string of the (dose, sample) multi-partition key: '<dose>|<sample key>'."""
    return f"{manifest.dose_key}|{manifest.sample_key}"


def partition_registrations(lake: Lake, partition_key: str) -> list[dict[str, Any]]:
    """Registered sessions of a partition, in session_id order."""
    return lake.query("select * from session_sources where partition_key = ? order by session_id",
                      [partition_key]).to_dicts()


def withdraw_registration(lake: Lake, session_id: str, message: str) -> str:
    """Undo the registration of a session whose files could not be read, so its partition runs again
    for the sessions that are fine: a new identity is dropped from the registry; a replacement falls
    back to the stored session (its registration points at the stored content again). Stored rows
    are never touched. Returns 'withdrawn', 'restored' or 'none'."""
    with lake.connect() as con:
        con.execute("begin transaction")
        row = con.execute("select folder, content_sha from session_sources where session_id = ?",
                          [session_id]).fetchone()
        stored = con.execute("select source_folder, content_sha from sessions where session_id = ?",
                             [session_id]).fetchone()
        if row is None or (stored is not None and stored[1] == row[1]):
            con.execute("rollback")
            return "none"
        if stored is None:
            con.execute("delete from session_sources where session_id = ?", [session_id])
            outcome = "withdrawn"
        else:
            con.execute("update session_sources set folder = ?, content_sha = ? where session_id = ?",
                        [stored[0], stored[1], session_id])
            outcome = "restored"
        record_event(con, session_id, "failed", row[1], stored[1] if stored else None, row[0], message)
        con.execute("commit")
    return outcome


def session_frames(lake: Lake, session: Session, folder: Path, content: str | None = None
                   ) -> tuple[dict[str, pl.DataFrame], dict[str, Any]]:
    """Copy a session's files into the object folder and build its `sessions`/`session_files` rows.

    Also streams once over the EDS cube (lazy, chunk by chunk) to prove it is readable and not empty
    before anything is stored, and returns that count map for the thumbnail.
    """
    m, sid = session.manifest, session.session_id
    extras: dict[str, Any] = {}
    if session.eds is not None:
        count_map = eds_count_map(session)  # refuses non-count data, NaN, zero counts
        extras["count_map"] = count_map
        extras["total_counts"] = float(count_map.sum())
    files = [("manifest", MANIFEST_NAME, folder / MANIFEST_NAME)]
    files += [(role, rel, session.paths[role]) for role, rel in m.files().items()]
    files += [(role, rel, path) for role, (rel, path) in sorted(session.companions.items())]
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
        "pixel_size_nm": session.pixel_size_nm, "calibration_source": session.calibration_source,
        "energy_offset_kev": session.energy.offset_kev if session.energy else None,
        "energy_scale_kev": session.energy.scale_kev if session.energy else None,
        "eds_resolution_mnka_ev": eds_resolution_ev(session.eds) if session.eds is not None else None,
        "elements": list(m.elements), "chip_px": m.chip_px,
        "has_haadf": session.haadf is not None, "has_eds": session.eds is not None,
        "eds_binning": session.eds_binning, "manifest": json.dumps(m.raw, default=str),
        "source_folder": str(folder), "sample_key": m.sample_key, "acquisition": m.acquisition,
        "partition_key": partition_key_str(m), "content_sha": content,
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
    with lake.reading():
        rows = lake.query("select manifest from sessions where session_id = ?", [session_id]).to_dicts()
        files = lake.query("select role, file_name, sha256 from session_files where session_id = ? order by role",
                           [session_id])
    if not rows:
        raise SessionError(session_id, "raw_session has not been materialized for this session")
    manifest = parse_manifest(json.loads(rows[0]["manifest"]), Path(session_id), check_files=False)
    by_name = dict(zip(files["file_name"], files["sha256"]))
    companions: dict[str, list[str]] = {}
    for role, name in zip(files["role"], files["file_name"]):
        if "+" in role:  # '<role>+<i>': a file a multi-file format reads beside the named one
            companions.setdefault(role.split("+")[0], []).append((int(role.split("+")[1]), name))
    companions = {r: [n for _, n in sorted(v)] for r, v in companions.items()}
    return open_manifest(manifest, lambda rel: lake.find_object(by_name[rel]), companions)
