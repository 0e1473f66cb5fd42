"""Group `descriptors`: per-region composition, d-spacing, roles and ordered-vs-disordered shifts."""

from dagster import AssetExecutionContext, MetadataValue, asset

from assets.common import png_md, session_id, table_md, write_result
from assets.partitions import session_partitions
from assets.segmentation import SEGMENTATION_ASSETS
from mmlake import plots
from mmlake.descriptors import describe_lake_session
from resources.lake import LakeResource

REGION_DESCRIPTORS_VERSION = "region_descriptors-1"


@asset(
    partitions_def=session_partitions, group_name="descriptors", code_version=REGION_DESCRIPTORS_VERSION,
    deps=SEGMENTATION_ASSETS, kinds={"exspy", "duckdb"}, owners=["team:microscopy"],
    description="Per session x method x modality x region: chip count, area (nm^2), exspy Cliff-Lorimer "
                "composition of the region's SUMMED spectrum (the rest as 'Extraneous'), d-spacing from the FFT "
                "of the largest square inside the region (NULL when amorphous), crystallinity, a physical role, "
                "and the preprint's disordered-vs-ordered percent differences of La, Fe, O.",
)
def region_descriptors(context: AssetExecutionContext, lake: LakeResource):
    lk, sid = lake.lake(), session_id(context)
    out = describe_lake_session(lk, sid)
    shift = out.composition_shift
    o_shift = shift.filter(shift["element"] == "O").select("method", "modality", "percent_diff") if len(shift) else shift
    regions = out.regions.select("method", "modality", "region", "role", "n_chips", "d_spacing_nm")
    return write_result(
        context, lk, code_version=REGION_DESCRIPTORS_VERSION, parameters=out.params,
        upstream_assets=["chips", *[a.key.to_user_string() for a in SEGMENTATION_ASSETS]],
        tables=out.tables(), scope={"session_id": sid}, session=sid,
        metadata={"regions": table_md(regions, 24), "o_shift": table_md(o_shift, 12),
                  "n_regions": MetadataValue.int(len(out.regions)),
                  "composition": png_md(plots.composition_bars(shift, f"{sid} ordered vs disordered", out.regions))},
    )
