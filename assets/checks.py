"""Asset checks: data invariants of the lake, per session partition, shown in the UI next to the asset.

- `chips_cover_image` (on `chips`): the chip grid is the maximal non-overlapping grid of the
  conventions (n_rows = floor(H / chip_px), n_cols = floor(W / chip_px), so n_rows * chip_px <= H and
  n_cols * chip_px <= W), there are exactly n_rows * n_cols chips with chip_index = row * n_cols + col,
  y0 = row * chip_px, x0 = col * chip_px, and the stored chip arrays have one entry per chip.
- `rows_have_materialization` (on the last session asset): every row of this session in every lake
  table with a `materialization_id` points at a ledger row (anti-join), and at a current one.
- `compositions_sum_to_100` (on the descriptors asset, once it exists): per (method, modality,
  region) the atomic percents of `region_composition` sum to 100, whole and core figures
  (mmlake.descriptors.checks): a region whose composition is NULL passes only when its summed
  spectrum has no counts; a group with some NULLs fails. An empty or missing table passes, saying so.

The SQL lives in plain functions (`chip_grid_problems`, `orphan_rows`, `composition_problems`) that
tests call on a lake directly. `build_asset_checks(SESSION_ASSETS)` attaches the checks to whichever
assets exist, so assets can be added without touching this module.
"""


import os
import warnings
from collections.abc import Sequence
from typing import Any

from dagster import (
    AssetCheckExecutionContext,
    AssetCheckResult,
    AssetCheckSeverity,
    AssetKey,
    AssetsDefinition,
    MetadataValue,
    PreviewWarning,
    asset_check,
)

from mmlake.descriptors.checks import composition_problems as _composition_problems
from mmlake.lake import Lake
from resources.lake import LakeResource

COMPOSITION_TOLERANCE = float(os.environ.get("MMLAKE_COMPOSITION_TOLERANCE", "0.5"))  # at.%
DESCRIPTOR_KEYS = ("region_descriptors", "descriptors", "region_composition")


def sessions_of(context: AssetCheckExecutionContext, lake: Lake) -> list[str]:
    """The sessions (acquisitions) stored for the check's partition."""
    if not context.has_partition_key:
        return []
    return lake.query("select session_id from sessions where partition_key = ? order by 1",
                      [str(context.partition_key)])["session_id"].to_list()


def _table_exists(lake: Lake, table: str) -> bool:
    return bool(lake.query("select 1 from information_schema.tables where table_name = ?", [table]).height)


# ------------------------------------------------------------------ the invariants (plain functions)
def chip_grid_problems(lake: Lake, session_id: str) -> tuple[list[str], dict[str, Any]]:
    """Problems with a session's chip grid (empty list = fine) and the numbers behind them."""
    rows = lake.query(
        """
        select g.chip_px, g.n_rows, g.n_cols, g.origin_y, g.origin_x, g.haadf_stack_sha, g.eds_sums_sha,
               s.haadf_shape[1] as h, s.haadf_shape[2] as w,
               (select count(*) from chips c where c.session_id = g.session_id) as n,
               (select count(distinct chip_index) from chips c where c.session_id = g.session_id) as n_distinct,
               (select count(*) from chips c where c.session_id = g.session_id and (
                    c.chip_index <> c.row * g.n_cols + c.col or c.y0 <> g.origin_y + c.row * g.chip_px
                    or c.x0 <> g.origin_x + c.col * g.chip_px or c.row < 0 or c.col < 0
                    or c.row >= g.n_rows or c.col >= g.n_cols)) as n_misplaced
        from chip_grids g join sessions s using (session_id) where g.session_id = ?
        """,
        [session_id],
    ).to_dicts()
    if not rows:
        return [f"no chip_grids/sessions row for {session_id}"], {}
    r = rows[0]
    px, nr, nc, h, w = r["chip_px"], r["n_rows"], r["n_cols"], r["h"], r["w"]
    problems = []
    if nr * px > h or nc * px > w:
        problems.append(f"grid {nr}x{nc} of {px} px exceeds the {h}x{w} image")
    if (nr, nc) != (h // px, w // px):
        problems.append(f"grid {nr}x{nc} is not the maximal grid {h // px}x{w // px} of {px} px chips")
    if r["n"] != nr * nc or r["n_distinct"] != r["n"]:
        problems.append(f"{r['n']} chip rows ({r['n_distinct']} distinct indices), expected n_rows*n_cols = {nr * nc}")
    if r["n_misplaced"]:
        problems.append(f"{r['n_misplaced']} chips whose index/row/col/y0/x0 disagree "
                        "(chip_index = row * n_cols + col, y0 = row * chip_px)")
    if r["haadf_stack_sha"]:
        shape = lake.get_array(r["haadf_stack_sha"], mmap=True).shape
        if tuple(shape) != (nr * nc, px, px):
            problems.append(f"HAADF chip stack has shape {tuple(shape)}, expected {(nr * nc, px, px)}")
    if r["eds_sums_sha"]:
        shape = lake.get_array(r["eds_sums_sha"], mmap=True).shape
        if shape[0] != nr * nc:
            problems.append(f"EDS chip sums hold {shape[0]} chips, expected {nr * nc}")
    numbers = {"chip_px": px, "n_rows": nr, "n_cols": nc, "image_h": h, "image_w": w, "n_chips": r["n"]}
    return problems, numbers


def provenance_tables(lake: Lake) -> list[str]:
    """Lake tables with both session_id and materialization_id columns."""
    rows = lake.query(
        "select table_name from information_schema.columns where column_name in "
        "('session_id', 'materialization_id') and table_name <> 'materializations' "
        "and table_schema = 'main' group by table_name having count(*) = 2 order by table_name"
    )
    views = set(lake.query("select table_name from information_schema.tables where table_type = 'VIEW'")["table_name"])
    return [t for t in rows["table_name"].to_list() if t not in views]


def orphan_rows(lake: Lake, session_id: str | None) -> dict[str, dict[str, int]]:
    """Per table: rows (of a session, or all) with no ledger row, and rows whose ledger row is not current."""
    out = {}
    for table in provenance_tables(lake):
        where = "where t.session_id = ?" if session_id else ""
        params = [session_id] if session_id else []
        r = lake.query(
            f"select count(*) filter (where m.materialization_id is null) as orphans, "
            f"count(*) filter (where not m.is_current) as superseded, count(*) as rows "
            f"from {table} t left join materializations m using (materialization_id) {where}",
            params,
        ).to_dicts()[0]
        out[table] = {k: int(v or 0) for k, v in r.items()}
    return out


def composition_problems(lake: Lake, session_id: str | None, tol: float | None = None
                         ) -> tuple[list[str], dict[str, Any]]:
    """mmlake.descriptors' sum check (whole and core figures; a NULL composition with counts fails) at
    this deployment's tolerance ($MMLAKE_COMPOSITION_TOLERANCE, default 0.5 at.%)."""
    return _composition_problems(lake, session_id, COMPOSITION_TOLERANCE if tol is None else tol)


def _result(problems: list[str], meta: dict[str, Any], severity=AssetCheckSeverity.ERROR) -> AssetCheckResult:
    md = {k: (MetadataValue.int(v) if isinstance(v, int) else MetadataValue.float(v) if isinstance(v, float)
              else MetadataValue.text(str(v))) for k, v in meta.items()}
    if problems:
        md["problems"] = MetadataValue.md("\n".join(f"- {p}" for p in problems[:50]))
    return AssetCheckResult(passed=not problems, severity=severity, metadata=md,
                            description=problems[0] if problems else None)


def _keys(assets: Sequence[AssetsDefinition]) -> list[tuple[AssetKey, AssetsDefinition]]:
    return [(k, a) for a in assets for k in a.keys]


def build_asset_checks(assets: Sequence[AssetsDefinition]) -> list:
    """The checks, attached to the assets of `assets` they concern (skipped when an asset is absent).

    The checks are partitioned like their assets (one result per session), a Dagster 1.13 preview
    feature (`asset_check(partitions_def=...)`); its PreviewWarning is silenced here, the version pinned.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", PreviewWarning)
        return _build_asset_checks(assets)


def _build_asset_checks(assets: Sequence[AssetsDefinition]) -> list:
    keyed = _keys(assets)
    by_name = {k.to_user_string(): (k, a) for k, a in keyed}
    checks = []

    if "chips" in by_name:
        key, a = by_name["chips"]

        @asset_check(asset=key, partitions_def=a.partitions_def, name="chips_cover_image",
                     description="The chip grid is the maximal non-overlapping grid inside the image; "
                                 "chip count = n_rows * n_cols; index/offsets follow the conventions.")
        def chips_cover_image(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
            lk = lake.lake()
            problems, numbers = [], {"sessions": 0}
            for sid in sessions_of(context, lk):
                p, n = chip_grid_problems(lk, sid)
                problems += [f"{sid}: {x}" for x in p]
                numbers = {**{k: v for k, v in n.items()}, "sessions": numbers["sessions"] + 1}
            return _result(problems, numbers)

        checks.append(chips_cover_image)

    if keyed:
        key, a = keyed[-1]

        @asset_check(asset=key, partitions_def=a.partitions_def, name="rows_have_materialization",
                     description="Every lake row of this session has a provenance ledger row (and a "
                                 "current one).")
        def rows_have_materialization(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
            lk = lake.lake()
            counts: dict[str, dict[str, int]] = {}
            for sid in sessions_of(context, lk):
                for t, c in orphan_rows(lk, sid).items():
                    acc = counts.setdefault(t, {"orphans": 0, "superseded": 0, "rows": 0})
                    for k in acc:
                        acc[k] += c[k]
            orphans = {t: c["orphans"] for t, c in counts.items() if c["orphans"]}
            superseded = {t: c["superseded"] for t, c in counts.items() if c["superseded"]}
            problems = [f"{t}: {n} rows without a materializations row" for t, n in orphans.items()]
            problems += [f"{t}: {n} rows of a superseded materialization" for t, n in superseded.items()]
            meta = {"tables": len(counts), "rows": sum(c["rows"] for c in counts.values())}
            return _result(problems, meta, AssetCheckSeverity.ERROR if orphans else AssetCheckSeverity.WARN)

        checks.append(rows_have_materialization)

    target = next((by_name[n] for n in DESCRIPTOR_KEYS if n in by_name), None)
    if target is None:
        target = next(((k, a) for k, a in keyed if a.group_names_by_key.get(k) == "descriptors"), None)
    if target is not None:
        key, a = target

        @asset_check(asset=key, partitions_def=a.partitions_def, name="compositions_sum_to_100",
                     description="Per method/modality/region, region_composition atomic percents sum "
                                 f"to 100 +- {COMPOSITION_TOLERANCE} (whole and core; a NULL composition with counts fails).")
        def compositions_sum_to_100(context: AssetCheckExecutionContext, lake: LakeResource) -> AssetCheckResult:
            lk = lake.lake()
            problems, meta = [], {}
            for sid in sessions_of(context, lk):
                p, m = composition_problems(lk, sid)
                problems += p
                meta.update({f"{sid} {k}": v for k, v in m.items()})
            return _result(problems, meta)

        checks.append(compositions_sum_to_100)
    return checks
