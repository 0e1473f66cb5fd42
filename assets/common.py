"""What every lake-writing asset does the same way: provenance, the atomic write, the result."""


import base64
from typing import Any, Mapping

import polars as pl
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from assets.partitions import session_id_of
from mmlake.lake import Lake, Provenance


def session_id(context: AssetExecutionContext) -> str:
    return session_id_of(context.partition_key)


def upstream(lake: Lake, assets: list[str], partition_key: str | None) -> list[dict[str, str]]:
    """Current materialization ids and data versions of upstream assets (fails if one is missing)."""
    rows = [lake.require(a, partition_key) for a in assets]
    return [{"materialization_id": r["materialization_id"], "data_version": r["data_version"]} for r in rows]


def write_result(
    context: AssetExecutionContext,
    lake: Lake,
    *,
    code_version: str,
    parameters: Mapping[str, Any],
    upstream_assets: list[str],
    tables: Mapping[str, pl.DataFrame],
    scope: Mapping[str, Any],
    table_scopes: Mapping[str, Mapping[str, Any]] | None = None,
    session: str | None = None,
    device: str | None = None,
    weights: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> MaterializeResult:
    """Write the asset's rows for this partition atomically with provenance; return the result."""
    pkey = str(context.partition_key) if context.has_partition_key else None
    prov = Provenance(
        asset_key=context.asset_key.to_user_string(), partition_key=pkey, code_version=code_version,
        parameters=dict(parameters), upstream=upstream(lake, upstream_assets, pkey),
        run_id=context.run_id, device=device, weights=weights, session_id=session,
    )
    out = lake.replace_partition(prov, tables, scope, table_scopes=table_scopes)
    meta = {f"rows_{t}": MetadataValue.int(n) for t, n in out["rows"].items()}
    meta["materialization_id"] = MetadataValue.text(out["materialization_id"])
    meta["parameters"] = MetadataValue.json(dict(parameters))
    meta.update(metadata or {})
    return MaterializeResult(metadata=meta, data_version=DataVersion(out["data_version"]))


def png_md(png: bytes, alt: str = "thumbnail") -> MetadataValue:
    """A PNG shown inline in the Dagster UI (markdown with a data URI)."""
    return MetadataValue.md(f"![{alt}](data:image/png;base64,{base64.b64encode(png).decode()})")


def table_md(frame: pl.DataFrame, max_rows: int = 12) -> MetadataValue:
    """A small markdown table preview of a frame."""
    head = frame.head(max_rows)
    cols = head.columns
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    for row in head.iter_rows():
        lines.append("| " + " | ".join(_fmt(v) for v in row) + " |")
    return MetadataValue.md("\n".join(lines))


def _fmt(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)
