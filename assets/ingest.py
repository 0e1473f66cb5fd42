"""Group `ingest`: raw sessions into the lake, then the chip grid."""


import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import png_md, session_id, write_result
from assets.partitions import session_partitions
from mmlake import plots
from mmlake.chips import ChipGrid, check_support, majority_labels, sum_eds_chips
from mmlake.session import open_session
from mmlake.store import open_stored_session, session_frames, source_folder
from resources.lake import LakeResource

RAW_SESSION_VERSION = "raw_session-1"
CHIPS_VERSION = "chips-1"


@asset(
    partitions_def=session_partitions, group_name="ingest", code_version=RAW_SESSION_VERSION,
    kinds={"duckdb", "hyperspy"}, owners=["team:microscopy"],
    description="One STEM session: manifest validated, HAADF + EDS opened through RosettaSciIO, grids "
                "registered, raw files copied immutable into the lake's object folder (sha256), and a "
                "`sessions` row with calibrations (pixel size nm, energy axis keV).",
)
def raw_session(context: AssetExecutionContext, lake: LakeResource):
    lk, sid = lake.lake(), session_id(context)
    folder = source_folder(lk, sid)
    session = open_session(folder)
    if session.session_id != sid:
        raise ValueError(f"session folder {folder} now declares {session.session_id}, not {sid}")
    if session.manifest.chip_px is not None:  # fail bad chip settings before anything is stored
        check_support(session.manifest.support, ChipGrid.fit(session.shape, session.manifest.chip_px, sid), sid)
    frames, extras = session_frames(lk, session, folder)
    png = plots.session_thumbnail(session.haadf, extras.get("count_map"), sid)
    return write_result(
        context, lk, code_version=RAW_SESSION_VERSION,
        parameters={"folder": str(folder), "files": dict(zip(frames["session_files"]["role"],
                                                             frames["session_files"]["sha256"]))},
        upstream_assets=[], tables=frames, scope={"session_id": sid}, session=sid,
        metadata={
            "campaign": MetadataValue.text(session.manifest.campaign),
            "grid": MetadataValue.text(f"{session.shape[0]} x {session.shape[1]} px @ {session.pixel_size_nm * 1000:.1f} pm"),
            "eds_total_counts": MetadataValue.float(extras.get("total_counts", 0.0)),
            "preview": png_md(png, sid),
        },
    )


@asset(
    partitions_def=session_partitions, group_name="ingest", code_version=CHIPS_VERSION,
    deps=[raw_session], kinds={"duckdb", "numpy"}, owners=["team:microscopy"],
    description="Non-overlapping square chips (preprint IV.C): HAADF chip stack and EDS spectra summed per "
                "chip (streamed from the lazy cube), stored as .npy objects; one `chips` row per chip "
                "with total counts, mean intensity and ground-truth label where known.",
)
def chips(context: AssetExecutionContext, lake: LakeResource):
    lk, sid = lake.lake(), session_id(context)
    session = open_stored_session(lk, sid)
    chip_px, chip_source, derivation = session.manifest.chip_px, "manifest", {}
    if chip_px is None:
        from mmlake.lattice import suggest_chip_px

        if session.haadf is None:
            raise ValueError(f"session {sid}: no chip_px in session.yaml and no HAADF image to derive it "
                             "from; set chip_px")
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
    return write_result(
        context, lk, code_version=CHIPS_VERSION,
        parameters={"chip_px": chip_px, "chip_px_source": chip_source, **derivation},
        upstream_assets=["raw_session"],
        tables={"chip_grids": pl.DataFrame([grid_row]), "chips": pl.DataFrame(table)},
        scope={"session_id": sid}, session=sid,
        metadata={"grid": MetadataValue.text(f"{grid.n_rows} x {grid.n_cols} chips of {chip_px} px"),
                  "n_chips": MetadataValue.int(grid.n_chips), "preview": png_md(png, sid)},
    )
