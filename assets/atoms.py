"""Asset `atom_columns`: atomic columns and per-chip order parameters of every acquisition's HAADF image."""

import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import SessionPart, begin, png_md, write_result
from assets.ingest import chips
from assets.partitions import session_partitions
from mmlake.codeversion import module_code_version
from mmlake.features import load_grid
from resources.lake import LakeResource

ATOM_COLUMNS_VERSION = module_code_version(__name__, "atom_columns")


@asset(
    partitions_def=session_partitions, group_name="features", code_version=ATOM_COLUMNS_VERSION,
    deps=[chips], kinds={"numpy", "duckdb"}, owners=["team:microscopy"],
    description="Atomic columns of each acquisition's HAADF image (mmlake.atoms: scan-line jitter "
                "correction, LoG candidates, batched Gaussian fits with neighbour subtraction, local "
                "lattice, A/B sublattices; table `atom_columns`, px and nm) and per-chip order "
                "parameters from the columns around each chip (table `chip_order`: lattice fraction, "
                "RMS displacement from the local lattice, nearest-neighbour spread, intensity spread "
                "per sublattice, strain, disorder). Column overlay and disorder map in the metadata.",
)
def atom_columns(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    step = begin(context, lk, ["chips"])
    parts = {sid: _columns_session(context, lk, sid) for sid in step.session_ids}
    return write_result(context, step, code_version=ATOM_COLUMNS_VERSION, parts=parts)


def _columns_session(context: AssetExecutionContext, lk, sid: str) -> SessionPart:
    from mmlake.atoms import analyse_columns, chip_order
    from mmlake.atoms.order import effective_window_px
    from mmlake.atoms.plots import column_overlay, order_map
    from mmlake.chips import ChipGrid

    row, grid = load_grid(lk, sid)
    if row["haadf_stack_sha"] is None:
        context.log.info(f"{sid}: no HAADF image; no atom columns")
        return SessionPart({"atom_columns": pl.DataFrame(), "chip_order": pl.DataFrame()},
                           {"status": "absent"}, {"atom_columns": MetadataValue.text("session has no HAADF image")})
    stack = lk.get_array(row["haadf_stack_sha"])
    image = grid.untile(stack)  # the area the chip grid covers, its origin at the grid's origin
    local = ChipGrid(grid.chip_px, grid.n_rows, grid.n_cols)
    p = row["pixel_size_nm"]
    t0 = time.perf_counter()
    res = analyse_columns(image, p, grid=local)
    basis = res.lattice.basis if np.all(np.isfinite(res.lattice.basis)) else None
    order = chip_order(res.frame, local, p, basis_px=basis)
    seconds = time.perf_counter() - t0
    window = effective_window_px(res.frame, local, None, basis)
    cols = res.frame
    if grid.origin_y or grid.origin_x:  # back to the registered image's pixel frame
        cols = cols.with_columns((pl.col("y_px") + grid.origin_y), (pl.col("x_px") + grid.origin_x))
        if p:
            cols = cols.with_columns((pl.col("y_px") * p).alias("y_nm"), (pl.col("x_px") * p).alias("x_nm"))
    cols = cols.with_columns(pl.lit(sid).alias("session_id"))
    order = order.with_columns(pl.lit(sid).alias("session_id"), pl.lit(window, dtype=pl.Float64).alias("window_px"))
    fit = cols["lattice_fit"].fill_null(False)
    dis = order["disorder"].drop_nulls()
    context.log.info(f"{sid}: {len(cols)} columns ({fit.mean() if len(cols) else 0:.1%} on a lattice) in {seconds:.1f} s")
    params = {**res.params, "order": {"window_px": window, "disorder_rms_ref": 0.25}, "seconds": round(seconds, 2)}
    meta = {
        "n_columns": MetadataValue.int(len(cols)),
        "lattice_fraction": MetadataValue.float(float(fit.mean()) if len(cols) else 0.0),
        "median_chip_disorder": MetadataValue.float(float(dis.median()) if len(dis) else float("nan")),
        "two_sublattices": MetadataValue.bool(bool(res.sublattices.two)),
        "sigma_px": MetadataValue.float(float(res.params["sigma_px"])),
        "row_jitter_rms_px": MetadataValue.float(round(float(res.params["row_jitter_rms_px"]), 4)),
        "seconds": MetadataValue.float(round(seconds, 2)),
        "column_overlay": png_md(column_overlay(image, res.frame, sid), "columns"),
        "disorder_map": png_md(order_map(order, grid.n_rows, grid.n_cols, "disorder", sid), "disorder"),
    }
    return SessionPart({"atom_columns": cols, "chip_order": order}, params, meta)

