"""Group `ingest`: raw sessions into the lake, then the chip grid."""


import json

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import SessionPart, begin, png_md, write_result
from assets.imports import READERS, import_paused
from assets.partitions import session_partitions
from mmlake import plots
from mmlake.chips import ChipGrid, check_support, majority_labels, sum_eds_chips
from mmlake.codeversion import module_code_version
from mmlake.errors import SessionError
from mmlake.session import open_session
from mmlake.store import (open_stored_session, partition_registrations, session_frames,
                          withdraw_registration)
from resources.lake import LakeResource

RAW_SESSION_VERSION = module_code_version(__name__, "raw_session")
CHIPS_VERSION = module_code_version(__name__, "chips")


def _stored_part(lk, sid: str, content: str) -> SessionPart | None:
    """The stored rows of a session whose content is unchanged (no file is read again)."""
    row = lk.query("select * exclude (materialization_id) from sessions where session_id = ? and content_sha = ?",
                   [sid, content])
    if not len(row):
        return None
    files = lk.query("select * exclude (materialization_id) from session_files where session_id = ? "
                     "order by role, file_name", [sid])
    return SessionPart({"sessions": row, "session_files": files},
                       {"content_sha": content, "files": dict(zip(files["role"], files["sha256"]))},
                       {"reused": MetadataValue.text(f"{sid}: content unchanged, stored rows kept")})


def _ingest_part(context, lk, reg: dict) -> SessionPart:
    sid, folder = reg["session_id"], reg["folder"]
    from pathlib import Path

    folder = Path(folder)
    import_paused(*READERS)
    session = open_session(folder)
    if session.session_id != sid:
        raise SessionError(sid, f"session folder {folder} now declares {session.session_id}; ingest it again")
    if session.manifest.chip_px is not None:  # fail bad chip settings before anything is stored
        check_support(session.manifest.support, ChipGrid.fit(session.shape, session.manifest.chip_px, sid), sid)
    frames, extras = session_frames(lk, session, folder, reg["content_sha"])
    png = plots.session_thumbnail(session.haadf, extras.get("count_map"), sid)
    context.log.info(f"{sid}: stored {len(frames['session_files'])} files from {folder}")
    for w in session.warnings:
        context.log.warning(f"{sid}: {w}")
    return SessionPart(
        frames, {"content_sha": reg["content_sha"],
                 "files": dict(zip(frames["session_files"]["role"], frames["session_files"]["sha256"]))},
        {"campaign": MetadataValue.text(session.manifest.campaign),
         "grid": MetadataValue.text(f"{session.shape[0]} x {session.shape[1]} px @ {session.pixel_size_nm * 1000:.1f} pm"),
         "eds_total_counts": MetadataValue.float(extras.get("total_counts", 0.0)),
         "calibration_source": MetadataValue.text(session.calibration_source),
         **({"warnings": MetadataValue.md("\n".join(f"- {w}" for w in session.warnings))} if session.warnings else {}),
         "preview": png_md(png, sid)})


@asset(
    partitions_def=session_partitions, group_name="ingest", code_version=RAW_SESSION_VERSION,
    kinds={"duckdb", "hyperspy"}, owners=["team:microscopy"], output_required=False,
    description="Every STEM session (acquisition) of a sample x dose: manifest validated, HAADF + EDS opened "
                "through RosettaSciIO, grids registered, raw files copied immutable into the lake's object "
                "folder (sha256), and a `sessions` row each with calibrations (pixel size nm, energy axis "
                "keV). A pair of the sample x dose product that holds no session is skipped ('no session "
                "here'), never failed. Sessions whose content is unchanged keep their stored rows.",
)
def raw_session(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    with lk.reading():  # one connection: the step's bookkeeping, the registrations, the stored rows
        step = begin(context, lk, [])
        regs = partition_registrations(lk, step.partition_key)
        stored = {reg["session_id"]: _stored_part(lk, reg["session_id"], reg["content_sha"]) for reg in regs}
    if not regs:
        context.log.info(f"{step.label}: no session here (this sample x dose pair was never acquired); skipped")
        return
    parts = {}
    for reg in regs:
        sid = reg["session_id"]
        part = stored[sid]
        if part is None:
            try:
                part = _ingest_part(context, lk, reg)
            except Exception as exc:
                outcome = withdraw_registration(lk, sid, str(exc))
                if outcome != "none":
                    context.log.error(f"{sid}: registration {outcome}; the other sessions of "
                                      f"{step.label} are untouched")
                if isinstance(exc, SessionError):
                    raise
                raise SessionError(sid, f"cannot read the session files: {type(exc).__name__}: {exc}") from exc
        parts[sid] = part
    step.session_ids = list(parts)
    yield write_result(context, step, code_version=RAW_SESSION_VERSION, parts=parts)


@asset(
    partitions_def=session_partitions, group_name="ingest", code_version=CHIPS_VERSION, deps=[raw_session],
    kinds={"duckdb", "numpy"},
    owners=["team:microscopy"],
    description="Non-overlapping square chips (preprint IV.C) for every session of the partition: HAADF chip "
                "stack and EDS spectra summed per chip (streamed from the lazy cube), stored as .npy objects; "
                "one `chips` row per chip with total counts, mean intensity and ground-truth label where known.",
)
def chips(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    step = begin(context, lk, ["raw_session"], read=_open_stored)
    parts = {sid: _chip_part(context, lk, sid, step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=CHIPS_VERSION, parts=parts)


def _open_stored(lk, sid: str):
    """The stored session, lazily (headers and the HAADF image), the readers imported first."""
    import_paused(*READERS)
    return open_stored_session(lk, sid)


def _chip_part(context, lk, sid: str, session) -> SessionPart:
    chip_px, chip_source, derivation = session.manifest.chip_px, "manifest", {}
    if chip_px is None:
        from mmlake.lattice import suggest_chip_px

        if session.haadf is None:
            raise SessionError(sid, "no chip_px in session.yaml and no HAADF image to derive it from; set chip_px")
        chip_px, derivation = suggest_chip_px(session.haadf, session.pixel_size_nm, session=sid)
        chip_source = "lattice"
    grid = ChipGrid.fit(session.shape, chip_px, sid)
    check_support(session.manifest.support, grid, sid)
    rows, cols = grid.rows_cols()
    table = {"session_id": sid, "chip_index": np.arange(grid.n_chips, dtype=np.int32),
             "row": rows.astype(np.int32), "col": cols.astype(np.int32),
             "y0": (rows * chip_px).astype(np.int32), "x0": (cols * chip_px).astype(np.int32)}
    stack_sha = sums_sha = None
    chip_counts = None
    if session.haadf is not None:
        stack = grid.tiles(session.haadf)
        stack_sha = lk.put_array(stack)
        table["haadf_mean"] = stack.mean(axis=(1, 2), dtype=np.float64)
    if session.eds is not None:
        def progress(done: int, total: int) -> None:
            if done == total or done % max(1, total // 5) == 0:
                context.log.info(f"{sid}: summed EDS chip rows {done}/{total}")

        sums, _ = sum_eds_chips(session.eds.data, grid, sid, progress)
        sums_sha = lk.put_array(sums)
        table["eds_total_counts"] = sums.sum(axis=1, dtype=np.float64)
        chip_counts = grid.chip_map(table["eds_total_counts"])
    if session.truth is not None:
        table["truth_label"] = majority_labels(session.truth, grid).astype(np.int32)
    grid_row = {
        "session_id": sid, "chip_px": chip_px, "chip_px_source": chip_source, "n_rows": grid.n_rows,
        "n_cols": grid.n_cols, "origin_y": 0, "origin_x": 0, "pixel_size_nm": session.pixel_size_nm,
        "haadf_stack_sha": stack_sha, "eds_sums_sha": sums_sha,
        "energy_offset_kev": session.energy.offset_kev if session.energy else None,
        "energy_scale_kev": session.energy.scale_kev if session.energy else None,
    }
    png = plots.chip_grid_thumbnail(session.haadf, chip_counts, chip_px, sid)
    return SessionPart(
        {"chip_grids": pl.DataFrame([grid_row]), "chips": pl.DataFrame(table)},
        {"chip_px": chip_px, "chip_px_source": chip_source, **json.loads(json.dumps(derivation, default=str))},
        {"grid": MetadataValue.text(f"{grid.n_rows} x {grid.n_cols} chips of {chip_px} px"),
         "n_chips": MetadataValue.int(grid.n_chips), "preview": png_md(png, sid)})


