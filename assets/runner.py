"""Running the session assets from Python or the CLI, against the same Dagster instance the UI uses.

`ingest` registers session folders by identity (mmlake.store.register_source), adds their partition
keys to the instance and materializes each partition in its own run (so the runs, logs and lineage
show up in `make ui`). One failing partition fails only its own run; the others go on. Identical
content is a no-op; one partition is never materialized by two runs at once (`partition_guard`).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import shutil
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from dagster import DagsterEventType, DagsterInstance, materialize

from assets.partitions import add_session_partitions, partition_label, partition_tags
from mmlake.errors import MmlakeError
from mmlake.lake import Lake
from mmlake.manifest import MANIFEST_NAME
from mmlake.store import register_source

MMLAKE_ERRORS = {"SessionError", "LakeError", "MmlakeError", "ValueError"}
REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class IngestOutcome:
    folder: str
    session_id: str | None
    ok: bool
    message: str = ""


def dagster_instance() -> DagsterInstance:
    """The persistent instance under $DAGSTER_HOME (default ./.dagster_home, with our dagster.yaml)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", cfg)
    return DagsterInstance.get()


def session_folders(paths: Iterable[str | os.PathLike]) -> list[Path]:
    """Each path is a session folder, or a folder of session folders."""
    out: list[Path] = []
    for p in map(Path, paths):
        if (p / MANIFEST_NAME).is_file():
            out.append(p)
        elif p.is_dir():
            out.extend(sorted(d for d in p.iterdir() if (d / MANIFEST_NAME).is_file()))
        else:
            out.append(p)  # reported as an error below
    return out


def step_error(result) -> str:
    """The first step failure's message of a run result."""
    for ev in result.all_events:
        if ev.event_type == DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            chain = [err]
            while chain[-1].cause is not None:
                chain.append(chain[-1].cause)
            # our own errors say what to do; otherwise the root cause is the most telling
            err = next((e for e in chain if e.cls_name in MMLAKE_ERRORS), chain[-1])
            return f"{ev.step_key}: {err.message.strip()}"
    return "run failed"


def session_specs():
    """Stale-planner specs (code version, upstream keys) of the session assets as deployed now."""
    from assets.definitions import SESSION_ASSETS
    from assets.schedules import AssetSpecLite

    specs = {}
    for a in SESSION_ASSETS:
        for key in a.keys:
            deps = tuple(d.to_user_string() for d in a.asset_deps.get(key, ()))
            specs[key.to_user_string()] = AssetSpecLite(key.to_user_string(), a.code_versions_by_key.get(key), deps)
    return specs


@contextmanager
def partition_guard(lake: Lake, instance: DagsterInstance, partition_key: str, progress: Callable[[str], None],
                    poll_s: float = 1.0) -> Iterator[None]:
    """Hold a partition for one CLI run: an OS file lock against other `mmlake ingest` processes, then
    wait until no queued/launched run of the instance (sensor, schedule, UI) holds the same partition.
    The run queue (dagster.yaml tag_concurrency_limits) in turn counts this run as in progress."""
    from dagster import DagsterRunStatus, RunsFilter

    locks = lake.home / "locks"
    locks.mkdir(parents=True, exist_ok=True)
    path = locks / f"partition-{hashlib.sha256(partition_key.encode()).hexdigest()[:16]}.lock"
    with open(path, "w") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            progress(f"waiting: another mmlake process is materializing partition {partition_label(partition_key)}")
            fcntl.flock(fh, fcntl.LOCK_EX)
        busy = [DagsterRunStatus.STARTING, DagsterRunStatus.STARTED, DagsterRunStatus.CANCELING]
        said = False
        while instance.get_run_records(RunsFilter(statuses=busy, tags={"dagster/partition": partition_key}), limit=1):
            if not said:
                progress(f"waiting: a Dagster run is materializing partition {partition_label(partition_key)}")
                said = True
            time.sleep(poll_s)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def ingest(
    paths: Iterable[str | os.PathLike],
    lake: Lake,
    instance: DagsterInstance | None = None,
    progress: Callable[[str], None] = print,
    log_level: str = "INFO",
    replace: bool = False,
    strict: bool = False,
) -> list[IngestOutcome]:
    """Register session folders and materialize every session asset of their partitions.

    One run per partition (sample x dose), covering every acquisition of it. A partition whose
    sessions are all unchanged and whose assets are all current is not run at all ("unchanged").
    `replace=True` lets new content replace a stored session of the same identity (recorded; old rows
    stay in the history schema). `log_level` INFO shows the assets' own progress lines; DEBUG adds
    every Dagster event. `strict=True` refuses a session.yaml with unknown keys (else a warning).
    """
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.schedules import stale_plan

    instance = instance or dagster_instance()
    outcomes, regs = [], []
    for folder in session_folders(paths):
        try:
            regs.append((folder, register_source(lake, folder, replace=replace, strict=strict)))
        except MmlakeError as exc:
            outcomes.append(IngestOutcome(str(folder), None, False, str(exc)))
            progress(f"REJECTED {folder}: {exc}")
    keys = add_session_partitions(instance, [r.manifest for _, r in regs])
    by_partition: dict[str, list] = {}
    for (folder, reg), key in zip(regs, keys):
        by_partition.setdefault(str(key), []).append((folder, reg, key))
    resources = all_resources(lake.home)
    specs = None
    for pkey, group in by_partition.items():
        selection = SESSION_ASSETS
        if all(reg.status == "unchanged" for _, reg, _ in group):
            specs = specs or session_specs()
            plan = stale_plan(lake, specs, [pkey])
            if not plan and _all_present(lake, specs, pkey):
                for folder, reg, _ in group:
                    outcomes.append(IngestOutcome(str(folder), reg.session_id, True, "unchanged"))
                    progress(f"unchanged {reg.session_id}: identical content is already in the lake; nothing to do")
                continue
            if plan:
                wanted = set(plan[0].assets)
                selection = [a for a in SESSION_ASSETS if any(k.to_user_string() in wanted for k in a.keys)]
        sids = ", ".join(reg.session_id for _, reg, _ in group)
        progress(f"materializing {partition_label(pkey)} [{sids}] ({len(selection)} assets) ...")
        with partition_guard(lake, instance, pkey, progress):
            result = materialize(SESSION_ASSETS, selection=selection, partition_key=group[0][2],
                                 instance=instance, resources=resources, raise_on_error=False,
                                 tags={**partition_tags(pkey), "mmlake/sessions": sids[:900]},
                                 run_config={"loggers": {"console": {"config": {"log_level": log_level}}}})
        msg = "ok" if result.success else step_error(result)
        for folder, reg, _ in group:
            outcomes.append(IngestOutcome(str(folder), reg.session_id, result.success, msg))
            progress(f"{'done' if result.success else 'FAILED'} {reg.session_id}: {msg}")
    return outcomes


def _all_present(lake: Lake, specs, partition_key: str) -> bool:
    have = set(lake.query("select asset_key from materializations where is_current and partition_key = ?",
                          [partition_key])["asset_key"].to_list())
    return set(specs) <= have


def run_crystal(lake: Lake, instance: DagsterInstance | None = None, path: str | None = None,
                name: str | None = None, reference_only: bool = False, epochs: int = 100) -> bool:
    """Materialize the crystal group on a dataset (all of it, or just structures + reference spacings)."""
    from assets.crystal import CRYSTAL_ASSETS, CrystalDatasetResource, crystal_reference_spacings, structures
    from assets.definitions import all_resources

    selection = [structures, crystal_reference_spacings] if reference_only else CRYSTAL_ASSETS
    resources = {**all_resources(lake.home),
                 "crystal_dataset": CrystalDatasetResource(path=path or "", name=name or "", epochs=epochs)}
    result = materialize(CRYSTAL_ASSETS, selection=selection, instance=instance or dagster_instance(),
                         resources=resources, raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": "INFO"}}}})
    if not result.success:
        print(f"FAILED crystal group: {step_error(result)}")
    return result.success


def run_reports(lake: Lake, instance: DagsterInstance | None = None) -> bool:
    """Materialize `campaign_reports` (one HTML report per campaign) through Dagster."""
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.descriptors import campaign_reports

    result = materialize([*SESSION_ASSETS, campaign_reports], selection=[campaign_reports],
                         instance=instance or dagster_instance(), resources=all_resources(lake.home),
                         raise_on_error=False,
                         run_config={"loggers": {"console": {"config": {"log_level": "WARNING"}}}})
    if not result.success:
        print(f"FAILED campaign_reports: {step_error(result)}")
    return result.success
