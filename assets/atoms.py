"""Assets `atom_columns` (atomic columns and per-chip order parameters of every acquisition's HAADF
image) and `region_order` (those parameters per segmented region, and disordered vs ordered)."""

import time

import numpy as np
import polars as pl
from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import SessionPart, begin, png_md, table_md, write_result
from assets.descriptors import region_descriptors
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
    step = begin(context, lk, ["chips"], read=load_grid)
    parts = {sid: _columns_session(context, lk, sid, *step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=ATOM_COLUMNS_VERSION, parts=parts)


def _columns_session(context: AssetExecutionContext, lk, sid: str, row, grid) -> SessionPart:
    from mmlake.atoms import analyse_columns, chip_order
    from mmlake.atoms.order import effective_window_px
    from mmlake.atoms.plots import column_overlay, order_map
    from mmlake.chips import ChipGrid

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



REGION_ORDER_VERSION = module_code_version(__name__, "region_order")


@asset(
    partitions_def=session_partitions, group_name="descriptors", code_version=REGION_ORDER_VERSION,
    deps=[atom_columns, region_descriptors], kinds={"numpy", "duckdb"}, owners=["team:microscopy"],
    description="Order parameters per region of every segmentation (and of the ground truth where the "
                "session has one): the mean of each chip_order parameter over the region's chips with a "
                "95 % bootstrap interval over chips (table `region_order`), and the disordered film "
                "against the ordered film per parameter: ratio of means with its interval and a "
                "significance flag (table `order_contrast`; view `order_contrast_by_session`).",
)
def region_order(context: AssetExecutionContext, lake: LakeResource):
    lk = lake.lake()
    step = begin(context, lk, ["atom_columns", "region_descriptors"], read=_region_order_inputs)
    parts = {sid: _region_order_session(context, sid, *step.inputs[sid]) for sid in step.session_ids}
    return write_result(context, step, code_version=REGION_ORDER_VERSION, parts=parts)


#: bootstrap of region_order: resamples and seed (the intervals are a pure function of the inputs)
REGION_ORDER_BOOT = {"n_boot": 400, "level": 0.95, "seed": 0}


def _region_order_inputs(lk, sid: str) -> tuple[pl.DataFrame, ...]:
    """chip_order, segment labels, ground truth and region roles of one session."""
    order = lk.query("select * from chip_order where session_id = ? order by chip_index", [sid])
    labels = lk.query("select method, modality, chip_index, label from segment_labels where session_id = ?", [sid])
    truth = lk.query("select chip_index, truth_label as label from chips where session_id = ? "
                     "and truth_label is not null", [sid])
    roles = lk.query("select method, modality, region, role from regions where session_id = ?", [sid])
    return order, labels, truth, roles


def _region_order_session(context: AssetExecutionContext, sid: str, order, labels, truth, roles) -> SessionPart:
    from mmlake.atoms import segmentation_order
    from mmlake.descriptors.lake import labels_by_segmentation

    if order.is_empty():
        context.log.info(f"{sid}: no chip order (no HAADF image); no region order")
        return SessionPart({"region_order": pl.DataFrame(), "order_contrast": pl.DataFrame()},
                           {"status": "absent"}, {"region_order": MetadataValue.text("session has no chip order")})
    n = len(order)
    if len(truth) == n:
        labels = pl.concat([labels.select("method", "modality", pl.col("chip_index").cast(pl.Int64),
                                          pl.col("label").cast(pl.Int64)),
                            truth.select(pl.lit("truth").alias("method"), pl.lit("truth").alias("modality"),
                                         pl.col("chip_index").cast(pl.Int64), pl.col("label").cast(pl.Int64))])
    segs = labels_by_segmentation(labels, n)
    t0 = time.perf_counter()
    regions, contrast = segmentation_order(segs, roles, order, **REGION_ORDER_BOOT)
    seconds = time.perf_counter() - t0
    regions = regions.with_columns(pl.lit(sid).alias("session_id")) if len(regions) else regions
    contrast = contrast.with_columns(pl.lit(sid).alias("session_id")) if len(contrast) else contrast
    show = contrast.filter(pl.col("parameter").is_in(["disorder", "rms_displacement_nm"])).select(
        "method", "modality", "parameter", "ratio", "ci_low", "ci_high", "significant") if len(contrast) else contrast
    context.log.info(f"{sid}: order of {len(segs)} segmentations' regions in {seconds:.1f} s")
    return SessionPart({"region_order": regions, "order_contrast": contrast},
                       {**REGION_ORDER_BOOT, "segmentations": sorted(f"{m}/{mod}" for m, mod in segs)},
                       {"disordered_vs_ordered": table_md(show, 24), "seconds": MetadataValue.float(round(seconds, 2))})
