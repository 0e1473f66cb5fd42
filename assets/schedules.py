"""Schedules: re-materialize stale session partitions, refresh cross-session reports nightly, and
prune old Dagster runs.

Why schedules over declarative automation (AutomationCondition): staleness is decided from the lake's
own provenance ledger (`materializations`: code version and upstream materialization ids of the rows
that are really stored), which also covers rows written by `mmlake ingest`; the conditions would have
to be set on every asset (each asset module owned by someone else), `eager()` would race the landing
sensor on every newly added dynamic partition of `raw_session`, and an hourly batch evaluation costs
one ledger query instead of per-asset-partition condition evaluations every 30 s. The decisions are
also plain functions (`stale_plan`) that tests call with a lake and get a list back.

- `stale_refresh_schedule` (hourly at :17, `MMLAKE_STALE_CRON`): for every session partition, an
  asset is stale when its current ledger row has another code version than the code now deployed, or
  was computed from an upstream materialization that is no longer current, or is missing while all
  its upstream assets are there (e.g. a newly added asset). A run per partition materializes the stale
  assets and everything downstream of them. Partitions with a queued or running run are left for the
  next tick; an identical plan (same partition, targets, code versions and inputs) is requested once,
  so a failing partition is not retried every hour (retry it from the UI).
  Parameters: an asset's parameters that change results belong in its code_version (bump it), as
  Dagster's own staleness works.
- `nightly_report_schedule` (02:00 UTC, `MMLAKE_NIGHTLY_CRON`): `report_refresh_job` selects the asset
  groups `segmentation` and `descriptors` (AssetSelection.groups: whatever assets those groups hold
  when the code location loads). Unpartitioned assets there (cross-session agreement tables, campaign
  reports) run once a night; their partitioned assets run for partitions that are stale or missing.
- `housekeeping_schedule` (Sundays 03:30 UTC): deletes finished runs older than
  `MMLAKE_RUN_RETENTION_DAYS` (default 90) and their compute logs, except runs that wrote a current
  lake materialization (their lineage stays). Tick history is pruned by dagster.yaml `retention`.
"""


import datetime as dt
import os
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from dagster import (
    AssetKey,
    AssetSelection,
    Config,
    DagsterRunStatus,
    DefaultScheduleStatus,
    OpExecutionContext,
    RunRequest,
    RunsFilter,
    ScheduleEvaluationContext,
    SkipReason,
    define_asset_job,
    job,
    op,
    schedule,
)

from assets.partitions import session_partitions
from mmlake.lake import Lake, stable_hash
from resources.lake import LakeResource

SESSION_JOB = "session_job"
REPORT_GROUPS = ("segmentation", "descriptors")
STALE_TAG = "mmlake/stale_key"
STALE_CRON = os.environ.get("MMLAKE_STALE_CRON", "17 * * * *")
NIGHTLY_CRON = os.environ.get("MMLAKE_NIGHTLY_CRON", "0 2 * * *")
MAX_RUNS_PER_TICK = int(os.environ.get("MMLAKE_STALE_MAX_RUNS", "50"))
ACTIVE = [DagsterRunStatus.QUEUED, DagsterRunStatus.NOT_STARTED, DagsterRunStatus.STARTING,
          DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]

report_selection = AssetSelection.groups(*REPORT_GROUPS)
report_refresh_job = define_asset_job(
    "report_refresh_job", selection=report_selection,
    description="Cross-session agreement and report assets (asset groups segmentation, descriptors).",
)


# ------------------------------------------------------------------ the stale planner (pure)
@dataclass(frozen=True)
class AssetSpecLite:
    """What the planner needs to know of one session asset."""

    key: str
    code_version: str | None
    deps: tuple[str, ...]  # upstream asset keys (only those that are session assets count)


@dataclass(frozen=True)
class PlannedRun:
    partition_key: str
    assets: tuple[str, ...]  # in dependency order
    reasons: tuple[str, ...]
    stale_key: str


def _topo(specs: Mapping[str, AssetSpecLite]) -> list[str]:
    order, seen = [], set()

    def visit(k: str) -> None:
        if k in seen:
            return
        seen.add(k)
        for d in specs[k].deps:
            if d in specs:
                visit(d)
        order.append(k)

    for k in sorted(specs):
        visit(k)
    return order


def stale_plan(lake: Lake, specs: Mapping[str, AssetSpecLite], partition_keys: Iterable[str] | None = None,
               only: Iterable[str] | None = None) -> list[PlannedRun]:
    """Per partition, the session assets to re-materialize (stale or missing, plus downstream).

    `partition_keys` limits the partitions looked at (default: every partition in the ledger);
    `only` limits the assets that may start a re-materialization (the nightly job's groups).
    """
    if not lake.db_path.exists():
        return []
    rows = lake.query(
        "select asset_key, partition_key, materialization_id, code_version, upstream_ids "
        "from materializations where is_current and partition_key is not null"
    ).to_dicts()
    current: dict[str, dict[str, dict]] = {}
    for r in rows:
        current.setdefault(r["partition_key"], {})[r["asset_key"]] = r
    wanted = set(partition_keys) if partition_keys is not None else set(current)
    order = _topo(specs)
    children: dict[str, set[str]] = {k: set() for k in specs}
    for k, s in specs.items():
        for d in s.deps:
            if d in children:
                children[d].add(k)
    starters = set(only) if only is not None else set(specs)
    plans = []
    for pkey in sorted(wanted & set(current)):
        have = current[pkey]
        reasons, targets = [], set()
        for k in order:
            spec, row = specs[k], have.get(k)
            deps = [d for d in spec.deps if d in specs]
            if k not in starters:
                continue
            if row is None:
                if deps and all(d in have for d in deps):
                    targets.add(k)
                    reasons.append(f"{k}: missing")
                continue
            if spec.code_version and row["code_version"] != spec.code_version:
                targets.add(k)
                reasons.append(f"{k}: code {row['code_version']} -> {spec.code_version}")
                continue
            ups = set(row["upstream_ids"] or [])
            moved = [d for d in deps if d in have and have[d]["materialization_id"] not in ups]
            if moved:
                targets.add(k)
                reasons.append(f"{k}: upstream {', '.join(moved)} re-materialized")
        if not targets:
            continue
        closure, stack = set(targets), list(targets)
        while stack:
            for c in children[stack.pop()]:
                if c not in closure:
                    closure.add(c)
                    stack.append(c)
        assets = tuple(k for k in order if k in closure)
        # The plan's identity: what starts it (targets, their code versions, their inputs), not the
        # rows it will replace, so a re-run that leaves an asset "stale" (e.g. a code_version the
        # asset does not write to the ledger) is not requested again and again.
        inputs = {k: [specs[k].code_version,
                      {d: have[d]["materialization_id"] for d in specs[k].deps if d in have}]
                  for k in sorted(targets)}
        key = stable_hash(pkey, inputs)[:20]
        plans.append(PlannedRun(pkey, assets, tuple(reasons), key))
    return plans


# ------------------------------------------------------------------ Dagster glue
def session_specs(context: ScheduleEvaluationContext, keys: Iterable[AssetKey] | None = None) -> dict[str, AssetSpecLite]:
    """Planner specs of the code location's assets partitioned by session (optionally a subset)."""
    graph = context.repository_def.asset_graph
    keys = set(keys) if keys is not None else set(graph.materializable_asset_keys)
    specs = {}
    for k in graph.materializable_asset_keys:
        node = graph.get(k)
        if k in keys and node.partitions_def == session_partitions:
            specs[k.to_user_string()] = AssetSpecLite(
                k.to_user_string(), node.code_version,
                tuple(p.to_user_string() for p in node.parent_keys))
    return specs


def _busy_partitions(instance) -> set[str]:
    busy = set()
    for rec in instance.get_run_records(RunsFilter(statuses=ACTIVE)):
        pk = rec.dagster_run.tags.get("dagster/partition")
        if pk:
            busy.add(pk)
    return busy


def _existing_partitions(instance) -> set[str]:
    samples = instance.get_dynamic_partitions("sample")
    doses = instance.get_dynamic_partitions("dose")
    return {f"{d}|{s}" for s in samples for d in doses}


def _already_requested(instance, stale_key: str) -> bool:
    return bool(instance.get_run_records(RunsFilter(tags={STALE_TAG: stale_key}), limit=1))


def plan_requests(context: ScheduleEvaluationContext, lake: Lake, specs: dict[str, AssetSpecLite],
                  only: Iterable[str] | None, job_name: str) -> tuple[list[RunRequest], list[str]]:
    """RunRequests for the stale plan, skipping busy/unknown partitions and plans already requested."""
    inst = context.instance
    busy, existing = _busy_partitions(inst), _existing_partitions(inst)
    runs, notes = [], []
    for plan in stale_plan(lake, specs, only=only):
        if plan.partition_key not in existing:
            continue
        if plan.partition_key in busy:
            notes.append(f"{plan.partition_key}: a run is in progress")
            continue
        if _already_requested(inst, plan.stale_key):
            continue
        if len(runs) >= MAX_RUNS_PER_TICK:
            notes.append("more stale partitions left for the next tick")
            break
        runs.append(RunRequest(
            run_key=plan.stale_key, job_name=job_name, partition_key=plan.partition_key,
            asset_selection=[AssetKey.from_user_string(a) for a in plan.assets],
            tags={STALE_TAG: plan.stale_key, "mmlake/reason": "; ".join(plan.reasons)[:900]},
        ))
    return runs, notes


@schedule(
    name="stale_refresh_schedule", cron_schedule=STALE_CRON, job_name=SESSION_JOB,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Hourly: re-materialize session partitions whose assets are stale (code version "
                "changed, upstream re-materialized) or missing, plus everything downstream of them.",
)
def stale_refresh_schedule(context: ScheduleEvaluationContext, lake: LakeResource):
    specs = session_specs(context)
    runs, notes = plan_requests(context, lake.lake(), specs, None, SESSION_JOB)
    return runs or SkipReason("; ".join(notes) or "nothing is stale")


@schedule(
    name="nightly_report_schedule", cron_schedule=NIGHTLY_CRON, job=report_refresh_job,
    default_status=DefaultScheduleStatus.RUNNING,
    description="Nightly: refresh the cross-session agreement/report assets (groups segmentation, "
                "descriptors), and their per-session partitions that are stale or missing.",
)
def nightly_report_schedule(context: ScheduleEvaluationContext, lake: LakeResource):
    graph = context.repository_def.asset_graph
    group_keys = [k for k in graph.materializable_asset_keys if graph.get(k).group_name in REPORT_GROUPS]
    if not group_keys:
        return SkipReason(f"no assets in groups {', '.join(REPORT_GROUPS)} yet")
    unpartitioned = [k for k in group_keys if graph.get(k).partitions_def is None]
    partitioned = {k.to_user_string() for k in group_keys if graph.get(k).partitions_def == session_partitions}
    runs = []
    if unpartitioned:
        day = context.scheduled_execution_time or dt.datetime.now(dt.timezone.utc)
        runs.append(RunRequest(run_key=f"nightly:{day:%Y-%m-%d}", asset_selection=sorted(unpartitioned),
                               tags={"mmlake/reason": "nightly report refresh"}))
    if partitioned:
        specs = session_specs(context)
        part_runs, _ = plan_requests(context, lake.lake(), specs, partitioned, report_refresh_job.name)
        for r in part_runs:  # this job holds only the report groups: keep its assets
            keep = [a for a in r.asset_selection if a.to_user_string() in partitioned]
            runs.append(RunRequest(run_key=r.run_key, partition_key=r.partition_key,
                                   asset_selection=keep, tags=r.tags))
    return runs or SkipReason("nothing to refresh")


# ------------------------------------------------------------------ run retention
class RetentionConfig(Config):
    days: int = int(os.environ.get("MMLAKE_RUN_RETENTION_DAYS", "90"))


def prune_runs(instance, lake: Lake, days: int) -> list[str]:
    """Delete finished runs older than `days` and their compute logs, except runs whose
    materializations are current in the lake. Returns the deleted run ids."""
    cutoff = dt.datetime.now(dt.timezone.utc) - dt.timedelta(days=days)
    keep = set()
    if lake.db_path.exists():
        keep = set(lake.query("select distinct run_id from materializations where is_current "
                              "and run_id is not null")["run_id"].to_list())
    done = [DagsterRunStatus.SUCCESS, DagsterRunStatus.FAILURE, DagsterRunStatus.CANCELED]
    deleted = []
    for rec in instance.get_run_records(RunsFilter(statuses=done, updated_before=cutoff)):
        run_id = rec.dagster_run.run_id
        if run_id in keep:
            continue
        instance.delete_run(run_id)
        try:
            instance.compute_log_manager.delete_logs(prefix=[run_id])
        except Exception:  # a log manager without deletion support: the run is gone anyway
            pass
        deleted.append(run_id)
    return deleted


@op(description="Delete old finished runs and their logs (not those behind current lake rows).")
def prune_old_runs(context: OpExecutionContext, config: RetentionConfig, lake: LakeResource) -> None:
    deleted = prune_runs(context.instance, lake.lake(), config.days)
    context.log.info(f"deleted {len(deleted)} run(s) older than {config.days} days")


@job(name="housekeeping_job", description="Run-log retention: see assets/schedules.py.")
def housekeeping_job():
    prune_old_runs()


@schedule(name="housekeeping_schedule", cron_schedule="30 3 * * 0", job=housekeeping_job,
          default_status=DefaultScheduleStatus.RUNNING)
def housekeeping_schedule(context: ScheduleEvaluationContext):
    return RunRequest(run_key=None)


SCHEDULES = [stale_refresh_schedule, nightly_report_schedule, housekeeping_schedule]
JOBS = [report_refresh_job, housekeeping_job]
