"""What every lake-writing session asset does the same way.

A partition (sample x dose) holds one or more sessions (acquisitions). An asset:

1. `begin(context, lake, upstream, read=...)`: notes when the computation started, captures the
   upstream materializations it is about to read (checked again when writing), lists the
   partition's sessions and, with `read`, reads each session's inputs on the same connection;
2. computes one `SessionPart` per session (its own rows under its own session_id);
3. `write_result(...)`: writes all parts in one transaction with provenance, replacing exactly what the
   asset's previous materialization of the partition wrote (old rows go to the history schema).
   When the data version equals the stored one (same code, parameters, weights and inputs), nothing
   is written: re-running an unchanged partition adds no rows.
"""

from __future__ import annotations

import base64
import datetime as dt
from dataclasses import dataclass, field
from typing import Any, Callable, Mapping, Sequence

import polars as pl
from dagster import AssetExecutionContext, DataVersion, MaterializeResult, MetadataValue

from assets.partitions import partition_label
from mmlake.errors import LakeError
from mmlake.lake import Lake, Provenance


@dataclass
class Step:
    """One asset computation on one partition: what it read, when it started, which sessions."""

    lake: Lake
    partition_key: str | None
    label: str
    upstream: list[dict[str, str]]
    session_ids: list[str]
    started_at: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.timezone.utc))
    current: dict[str, Any] | None = None  # the asset's own current materialization when the step began
    asset_key: str = ""  # the asset this step writes (one of a multi-asset's keys, or the asset's own)
    inputs: dict[str, Any] = field(default_factory=dict)  # session_id -> what `read` returned


@dataclass
class SessionPart:
    """One session's share of an asset's output."""

    tables: dict[str, pl.DataFrame]
    parameters: dict[str, Any] = field(default_factory=dict)
    metadata: dict[str, Any] = field(default_factory=dict)
    device: str | None = None
    weights: str | None = None


def upstream(lake: Lake, assets: Sequence[str], partition_key: str | None) -> list[dict[str, str]]:
    """Current materialization ids and data versions of upstream assets (fails if one is missing)."""
    rows = [lake.require(a, partition_key) for a in assets]
    return [{"materialization_id": r["materialization_id"], "data_version": r["data_version"]} for r in rows]


def partition_sessions(lake: Lake, partition_key: str) -> list[str]:
    """Sessions that raw_session stored for a partition, in session_id order."""
    return lake.query("select session_id from sessions where partition_key = ? order by session_id",
                      [partition_key])["session_id"].to_list()


def begin(context: AssetExecutionContext, lake: Lake, upstream_assets: Sequence[str],
          asset_key: str | None = None, read: Callable[[Lake, str], Any] | None = None) -> Step:
    """Start a partition step: time, upstream ids (captured before any input is read), sessions.

    `asset_key`: which of a multi-asset's assets the step writes (default: the asset's own key).
    `read(lake, session_id)`: the step's small reads (rows, small arrays; not a raw data cube), made
    on the same connection right after the upstream ids are captured, so the inputs are the ones
    those ids name (one DuckDB snapshot) and the step opens the lake once for all of them; the
    results are `step.inputs[session_id]`."""
    started = dt.datetime.now(dt.timezone.utc)
    pkey = str(context.partition_key) if context.has_partition_key else None
    key = asset_key or context.asset_key.to_user_string()
    with lake.reading():  # one connection: the upstream ids, the sessions and the asset's own current row
        ups = upstream(lake, upstream_assets, pkey)
        sids = partition_sessions(lake, pkey) if pkey is not None else []
        current = lake.current(key, pkey)
        inputs = {sid: read(lake, sid) for sid in sids} if read is not None else {}
    if pkey is not None and upstream_assets and not sids:
        raise LakeError(f"partition {partition_label(pkey)} holds no stored session; materialize raw_session first")
    return Step(lake, pkey, partition_label(pkey) if pkey else "-", ups, sids, started, current, key, inputs)


def write_result(
    context: AssetExecutionContext,
    step: Step,
    *,
    code_version: str,
    parts: Mapping[str, SessionPart],
    table_scopes: Mapping[str, Mapping[str, Any]] | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> MaterializeResult:
    """Write every session's part for this partition atomically with provenance; return the result."""
    lk = step.lake
    sids = list(parts)
    tables: dict[str, list[pl.DataFrame]] = {}
    for part in parts.values():
        for name, frame in part.tables.items():
            tables.setdefault(name, [])
            if len(frame):
                tables[name].append(_utc(frame))
    merged = {name: (pl.concat(fs, how="diagonal_relaxed") if fs else pl.DataFrame()) for name, fs in tables.items()}
    weights = sorted({p.weights for p in parts.values() if p.weights})
    devices = sorted({p.device for p in parts.values() if p.device})
    prov = Provenance(
        asset_key=step.asset_key, partition_key=step.partition_key,
        code_version=code_version, parameters={"sessions": {s: parts[s].parameters for s in sids}},
        upstream=step.upstream, run_id=context.run_id, device=",".join(devices) or None,
        weights=";".join(weights) or None, session_id=sids[0] if len(sids) == 1 else None,
        session_ids=sids, started_at=step.started_at,
    )
    meta: dict[str, Any] = {"sessions": MetadataValue.md("\n".join(f"- `{s}`" for s in sids) or "none"),
                            "n_sessions": MetadataValue.int(len(sids))}
    # unchanged: the row the step saw when it began (no connection opened); replace_partition checks
    # again inside its transaction, in case another run replaced it meanwhile
    current = step.current
    ups = sorted(u["materialization_id"] for u in step.upstream)
    out = None
    if not (current and current["data_version"] == prov.data_version
            and sorted(current["upstream_ids"] or []) == ups):
        scope = {"session_id": sids}
        scopes = {t: {"session_id": sids, **sc} for t, sc in (table_scopes or {}).items()}
        out = lk.replace_partition(prov, merged, scope, table_scopes=scopes, unless_current=True)
    if out is None or out.get("unchanged"):
        context.log.info(f"{step.label}: unchanged (data version {prov.data_version}); nothing written")
        meta["unchanged"] = MetadataValue.bool(True)
        meta["materialization_id"] = MetadataValue.text(out["materialization_id"] if out else current["materialization_id"])
        return MaterializeResult(asset_key=step.asset_key, metadata=meta, data_version=DataVersion(prov.data_version))
    meta.update({f"rows_{t}": MetadataValue.int(n) for t, n in out["rows"].items()})
    meta["materialization_id"] = MetadataValue.text(out["materialization_id"])
    for sid, part in parts.items():
        for k, v in part.metadata.items():
            meta[k if len(parts) == 1 else f"{sid} {k}"] = v
    meta.update(metadata or {})
    return MaterializeResult(asset_key=step.asset_key, metadata=meta, data_version=DataVersion(out["data_version"]))


def write_rows(
    context: AssetExecutionContext,
    step: Step,
    *,
    code_version: str,
    parameters: Mapping[str, Any],
    tables: Mapping[str, pl.DataFrame],
    scope: Mapping[str, Any],
    device: str | None = None,
    weights: str | None = None,
    metadata: Mapping[str, Any] | None = None,
) -> MaterializeResult:
    """The write of an asset that is not per session (the crystal group: rows scoped by dataset):
    same provenance rules as `write_result` (upstream from `begin`, started_at, no-op when unchanged)."""
    lk = step.lake
    prov = Provenance(asset_key=step.asset_key, partition_key=step.partition_key,
                      code_version=code_version, parameters=dict(parameters), upstream=step.upstream,
                      run_id=context.run_id, device=device, weights=weights, started_at=step.started_at)
    current = lk.current(prov.asset_key, step.partition_key)
    if current and current["data_version"] == prov.data_version and \
            sorted(current["upstream_ids"] or []) == sorted(u["materialization_id"] for u in step.upstream):
        return MaterializeResult(asset_key=step.asset_key, metadata={"unchanged": MetadataValue.bool(True),
                                           "materialization_id": MetadataValue.text(current["materialization_id"])},
                                 data_version=DataVersion(prov.data_version))
    out = lk.replace_partition(prov, tables, scope)
    meta = {f"rows_{t}": MetadataValue.int(n) for t, n in out["rows"].items()}
    meta["materialization_id"] = MetadataValue.text(out["materialization_id"])
    meta["parameters"] = MetadataValue.json(json_safe(parameters))
    meta.update(metadata or {})
    return MaterializeResult(asset_key=step.asset_key, metadata=meta, data_version=DataVersion(out["data_version"]))


def json_safe(value: Any) -> Any:
    import json

    return json.loads(json.dumps(value, default=str))


def _utc(frame: pl.DataFrame) -> pl.DataFrame:
    """One time zone name for aware timestamps (rows read back from DuckDB say 'Etc/UTC')."""
    fix = [c for c, t in frame.schema.items() if isinstance(t, pl.Datetime) and t.time_zone]
    return frame.with_columns([pl.col(c).dt.convert_time_zone("UTC") for c in fix]) if fix else frame


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
