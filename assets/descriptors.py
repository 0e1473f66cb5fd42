"""Group `descriptors`: per-region composition, d-spacing, roles and ordered-vs-disordered shifts."""

from pathlib import Path

import polars as pl
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue, asset

from assets.common import SessionPart, begin, png_md, table_md, write_result
from assets.partitions import session_partitions
from assets.segmentation import SEGMENTATION_KEYS
from mmlake import plots
from mmlake.descriptors import describe_lake_session
from resources.lake import LakeResource

from mmlake.codeversion import module_code_version

REGION_DESCRIPTORS_VERSION = module_code_version(__name__, "region_descriptors")
CAMPAIGN_REPORTS_VERSION = module_code_version(__name__, "campaign_reports", extra=("mmlake.report",))


@asset(
    partitions_def=session_partitions, group_name="descriptors", code_version=REGION_DESCRIPTORS_VERSION,
    deps=list(SEGMENTATION_KEYS.values()), kinds={"exspy", "duckdb"}, owners=["team:microscopy"],
    description="Per session x method x modality x region: chip count, core chips and boundary share, area (nm^2), "
                "exspy Cliff-Lorimer composition of the region's SUMMED spectrum, whole and core (chips not touching "
                "another label), with Poisson counting error and a bootstrap interval over chips; fundamental "
                "d-spacing (NULL when amorphous) with a tile-bootstrap interval, superlattice separately; "
                "crystallinity; a physical role; the disordered-vs-ordered percent differences of La, Fe, O with "
                "intervals and a significance flag; and the same pooled over the partition's acquisitions "
                "(bootstrap over acquisitions, then chips).",
)
def region_descriptors(context: AssetExecutionContext, lake: LakeResource):
    from mmlake.descriptors import pool_acquisitions

    lk = lake.lake()
    step = begin(context, lk, ["chips", *[k.to_user_string() for k in SEGMENTATION_KEYS.values()]])
    described = {sid: describe_lake_session(lk, sid) for sid in step.session_ids}
    pool_acquisitions(list(described.values()))  # a sample x dose's acquisitions, pooled (pair_* columns)
    parts = {sid: _part(sid, out) for sid, out in described.items()}
    return write_result(context, step, code_version=REGION_DESCRIPTORS_VERSION, parts=parts)


def _part(sid: str, out) -> SessionPart:
    shift = out.composition_shift
    cols = ["method", "modality", "percent_diff_core", "ci_low_core", "ci_high_core", "significant_core",
            "percent_diff", "ci_low", "ci_high", "pair_percent_diff", "pair_ci_low", "pair_ci_high",
            "pair_n_acquisitions"]
    o_shift = shift.filter(shift["element"] == "O").select(cols) if len(shift) else shift
    regions = out.regions.select("method", "modality", "region", "role", "n_chips", "boundary_share", "d_spacing_nm",
                                 "d_spacing_ci_low", "d_spacing_ci_high", "superlattice_nm")
    return SessionPart(
        out.tables(), out.params,
        {"regions": table_md(regions, 24), "o_shift": table_md(o_shift, 12),
         "n_regions": MetadataValue.int(len(out.regions)),
         "composition": png_md(plots.composition_bars(shift, f"{sid} ordered vs disordered (bars: 95 % interval)",
                                                      out.regions))})


@asset(
    group_name="descriptors", code_version=CAMPAIGN_REPORTS_VERSION, deps=[region_descriptors],
    kinds={"plotly", "html"}, owners=["team:microscopy"],
    description="One interactive plotly report per campaign (sessions, composition shift vs dose, d-spacings, "
                "agreement, overlays), self-contained HTML in the lake's reports/ folder; paths in metadata.",
)
def campaign_reports(context: AssetExecutionContext, lake: LakeResource):
    from mmlake.lake import Provenance, sha256_file
    from mmlake.manifest import campaign_key
    from mmlake.report import write_campaign_report

    import datetime as dt
    import os
    import tempfile

    lk = lake.lake()
    started = dt.datetime.now(dt.timezone.utc)
    upstream = lk.query("select materialization_id, data_version from materializations "
                        "where asset_key = 'region_descriptors' and is_current order by 1").to_dicts()
    campaigns = lk.query("select campaign, count(*) as n from sessions group by 1 order by 1").to_dicts()
    rows = []
    out_dir = lk.home / "reports"
    out_dir.mkdir(parents=True, exist_ok=True)
    for c in campaigns:
        # immutable, content-addressed: each ledger row points at its own file, never rewritten
        fd, tmp = tempfile.mkstemp(suffix=".html", dir=out_dir, prefix=".report-")
        os.close(fd)
        write_campaign_report(lk, c["campaign"], Path(tmp))
        sha = sha256_file(tmp)
        path = out_dir / f"{campaign_key(c['campaign'])}-{sha[:16]}.html"
        os.replace(tmp, path)
        context.log.info(f"report for {c['campaign']}: {path}")
        rows.append({"kind": "campaign_html", "campaign": c["campaign"], "path": str(path),
                     "sha256": sha, "n_sessions": c["n"]})
    prov = Provenance(asset_key="campaign_reports", partition_key=None, code_version=CAMPAIGN_REPORTS_VERSION,
                      upstream=upstream, run_id=context.run_id, started_at=started,
                      parameters={"campaigns": [c["campaign"] for c in campaigns]})
    frame = pl.DataFrame(rows, schema={"kind": pl.Utf8, "campaign": pl.Utf8, "path": pl.Utf8, "sha256": pl.Utf8,
                                       "n_sessions": pl.Int32})
    out = lk.replace_partition(prov, {"campaign_reports": frame}, {"kind": "campaign_html"})
    return MaterializeResult(
        metadata={"reports": MetadataValue.md("\n".join(f"- {r['campaign']}: `{r['path']}`" for r in rows) or "none"),
                  "materialization_id": MetadataValue.text(out["materialization_id"])},
        data_version=DataVersion(out["data_version"]))
