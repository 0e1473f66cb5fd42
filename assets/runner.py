"""Running the session assets from Python or the CLI, against the same Dagster instance the UI uses.

`ingest` registers session folders by identity (mmlake.store.register_source), adds their partition
keys to the instance and materializes each partition in its own run (so the runs, logs and lineage
show up in `make ui`). One failing partition fails only its own run; the others go on. Identical
content is a no-op; one partition is never materialized by two runs at once (`partition_guard`).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterable, Iterator

from dagster import AssetKey, DagsterEventType, DagsterInstance

from assets.partitions import add_session_partitions, partition_label, partition_tags
from mmlake.errors import MmlakeError
from mmlake.lake import Lake
from mmlake.manifest import MANIFEST_NAME
from mmlake.store import register_source

MMLAKE_ERRORS = {"SessionError", "LakeError", "MmlakeError", "ValueError"}
REPO_ROOT = Path(__file__).resolve().parent.parent
_PROBE_KEY = AssetKey("mmlake_instance_probe")


@dataclass
class IngestOutcome:
    folder: str
    session_id: str | None
    ok: bool
    message: str = ""
    asset: str | None = None  # the failing step ("registration" when the folder was refused before any run)
    trace: str = ""  # the full traceback of a failed step (shown with `mmlake --verbose`)

    @property
    def line(self) -> str:
        """The one-line result: `FAILED <session>: <asset>: <message>`, `done <session>` or `unchanged ...`."""
        who = self.session_id or self.folder
        if self.ok:
            return f"{'unchanged' if self.message == 'unchanged' else 'done'} {who}"
        asset = self.asset or "registration"
        msg = self.message
        if msg.startswith(f"{asset}: "):
            msg = msg[len(asset) + 2:]
        return failure_line(who, asset, msg)


def dagster_instance() -> DagsterInstance:
    """The persistent instance under $DAGSTER_HOME (default ./.dagster_home, with our dagster.yaml)."""
    home = Path(os.environ.setdefault("DAGSTER_HOME", str(Path(".dagster_home").resolve())))
    home.mkdir(parents=True, exist_ok=True)
    cfg = home / "dagster.yaml"
    if not cfg.exists():
        shutil.copy(REPO_ROOT / "dagster.yaml", cfg)
    # Two first ingests under a fresh DAGSTER_HOME would both create the SQLite storages and race in
    # alembic's migration (CI saw one fail that way). Creating them under a lock makes the second wait
    # until the tables exist; afterwards the lock costs one flock per process.
    with open(home / ".mmlake-instance.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            from assets.instance import local_instance  # sqlalchemy: only for commands that run assets

            instance = local_instance(home)  # DagsterInstance.get()'s storage, faster event log
            instance.get_runs(limit=1)  # run storage
            instance.get_latest_materialization_event(_PROBE_KEY)  # event-log index
            instance.all_instigator_state()  # schedule storage
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    return instance


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


def run_failure(result) -> tuple[str, str, str]:
    """(asset, message, trace) of the first step failure of a run result; the message is one line,
    without the exception's module path (`mmlake.errors.SessionError: `), the trace is Dagster's."""
    for ev in result.all_events:
        if ev.event_type == DagsterEventType.STEP_FAILURE:
            err = ev.event_specific_data.error
            chain = [err]
            while chain[-1].cause is not None:
                chain.append(chain[-1].cause)
            # our own errors say what to do; otherwise the root cause is the most telling
            mine = next((e for e in chain if e.cls_name in MMLAKE_ERRORS), None)
            e = mine or chain[-1]
            text = " ".join(e.message.split())
            qualified = re.match(r"^[\w.]*\b" + re.escape(e.cls_name or "") + r": ", text)
            if qualified:
                text = text[qualified.end():]
                if mine is None and e.cls_name:
                    text = f"{e.cls_name}: {text}"  # KeyError: 'x' says more than 'x'
            return ev.step_key, text or (e.cls_name or "error"), err.to_string()
    for ev in result.all_events:
        if ev.event_type == DagsterEventType.RUN_FAILURE:
            data = ev.event_specific_data
            err = getattr(data, "error", None)
            if err is not None:
                return "run", " ".join(err.message.split()), err.to_string()
    return "run", "run failed (see the Dagster run logs: make ui -> Runs)", ""


def step_error(result) -> str:
    """The first step failure of a run result as '<asset>: <message>'."""
    asset, message, _ = run_failure(result)
    return f"{asset}: {message}"


def failure_line(session: str, asset: str, message: str) -> str:
    """`FAILED <session>: <asset>: <message>`, the one line a failed session gets (README)."""
    own = f"session {session}: "
    if message.startswith(own):
        message = message[len(own):]
    return f"FAILED {session}: {asset}: {message}"


PROGRESS_RE = re.compile(r"^(?P<label>.*\S)\s+(?P<done>\d+)/(?P<total>\d+)$")


class StepLines(logging.Handler):
    """Dagster's run events as lines a person can follow: what each asset says (`context.log.info`),
    `<asset>: done in N s` per step, no event chatter and no stack traces (the failure becomes one
    `FAILED` line from the caller; the trace is in the run's logs and with `--verbose`). Messages
    ending in `k/n` draw a progress bar on a terminal and stay plain lines when not a terminal."""

    seen_warnings: set[str] = set()

    def __init__(self, stream=None, level: int = logging.INFO, tty: bool | None = None):
        super().__init__(logging.DEBUG)
        self.stream = stream if stream is not None else sys.stderr
        self.min_level = level
        self.tty = self.stream.isatty() if tty is None else tty
        self.started: dict[str, float] = {}
        self.bar_open = False
        self.warned = StepLines.seen_warnings  # shared by the runs of one command

    def _write(self, text: str, newline: bool = True) -> None:
        if self.bar_open:
            self.stream.write("\n")
            self.bar_open = False
        self.stream.write(text + ("\n" if newline else ""))
        self.stream.flush()

    def _bar(self, label: str, done: int, total: int) -> None:
        width = 24
        filled = width if total <= 0 else min(width, int(width * done / total))
        self.stream.write(f"\r\033[K  {label} [{'#' * filled}{'.' * (width - filled)}] {done}/{total}")
        self.stream.flush()
        self.bar_open = done < total
        if not self.bar_open:
            self.stream.write("\n")

    def emit(self, record: logging.LogRecord) -> None:
        try:
            meta = getattr(record, "dagster_meta", None) or {}
            event = meta.get("dagster_event")
            step = meta.get("step_key") or "run"
            if event is None:
                if record.levelno < self.min_level:
                    return
                msg = " ".join(str(meta.get("orig_message", record.getMessage())).split())
                if msg.startswith(f"{step}: "):
                    msg = msg[len(step) + 2:]  # 'structures: structures: 93/93' -> 'structures: 93/93'
                if msg.startswith("Dependencies for step "):
                    return  # a step skipped after an upstream failure: the FAILED line says which
                kind = "" if record.levelno < logging.WARNING else "warning: "
                if kind:  # the same warning for the next session: once in full, then short
                    sid, sep, rest = msg.partition(": ")
                    key = rest if sep and "@" in sid else msg
                    if key in self.warned:
                        self._write(f"  {step}: {kind}{sid if sep else ''}: {rest[:60]}... (as above)")
                        return
                    self.warned.add(key)
                m = PROGRESS_RE.match(msg)
                if self.tty and m and not kind:
                    self._bar(f"{step}: {m['label']}", int(m["done"]), int(m["total"]))
                    return
                self._write(f"  {step}: {kind}{msg}")
                return
            et = event.event_type
            if et == DagsterEventType.STEP_START:
                self.started[step] = time.monotonic()
            elif et == DagsterEventType.STEP_SUCCESS and self.min_level <= logging.INFO:
                t = time.monotonic() - self.started.pop(step, time.monotonic())
                self._write(f"  {step}: done in {t:.1f} s")
        except Exception:  # never let progress output break a run
            self.handleError(record)


def console_logger(verbose: bool = False, stream=None):
    """The `console` logger of the CLI's runs: Dagster's own (every event, traces) with `verbose`,
    else `StepLines`. `log_level` (run config) is the threshold for the assets' own messages."""
    from dagster import Field, logger
    from dagster._utils.log import create_console_logger

    @logger(config_schema={"log_level": Field(str, is_required=False, default_value="INFO")},
            description="mmlake progress lines (Dagster's console logger with --verbose)")
    def mmlake_console(init_context):
        level = logging.getLevelName(str(init_context.logger_config["log_level"]).upper())
        level = level if isinstance(level, int) else logging.INFO
        if verbose:
            return create_console_logger("dagster", min(level, logging.INFO))
        lg = logging.Logger("mmlake.run", level=logging.DEBUG)
        lg.addHandler(StepLines(stream, level))
        return lg

    return mmlake_console


def run_assets(assets, *, selection=None, instance: DagsterInstance | None = None, resources=None,
               partition_key=None, tags=None, log_level: str = "INFO", verbose: bool = False):
    """`dagster.materialize` with the CLI's console logger (`console_logger`): one in-process run."""
    from dagster import Definitions, define_asset_job

    name = "__ASSET_JOB"
    defs = Definitions(jobs=[define_asset_job(name=name, selection=selection)], assets=assets,
                       resources=resources or {}, loggers={"console": console_logger(verbose)})
    from mmlake import heldwrite

    with heldwrite.holding():  # steps back to back in this process: one lake open saved per step
        return defs.resolve_job_def(name).execute_in_process(
            run_config={"loggers": {"console": {"config": {"log_level": log_level}}}},
            instance=instance, partition_key=partition_key, raise_on_error=False, tags=tags)


def prune_partition_keys(lake: Lake, instance: DagsterInstance, sample_keys: Iterable[str],
                         dose_keys: Iterable[str]) -> list[str]:
    """Remove sample / dose keys from Dagster's dynamic partitions that no stored or registered
    session uses any more (a rejected session's keys); returns the 'dim:key' strings removed."""
    used_s, used_d = set(), set()
    if lake.db_path.exists():
        for pk, in lake.query("select partition_key from session_sources").rows():
            dose, _, sample = str(pk).partition("|")
            used_s.add(sample)
            used_d.add(dose)
        for sk, dk in lake.query("select sample_key, dose_key from sessions").rows():
            used_s.add(sk)
            used_d.add(dk)
    removed = []
    for dim, keys, used in (("sample", sample_keys, used_s), ("dose", dose_keys, used_d)):
        for k in sorted(set(keys) - used):
            if instance.has_dynamic_partition(dim, k):
                instance.delete_dynamic_partition(dim, k)
                removed.append(f"{dim}:{k}")
    return removed


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
    encoder=None,
    verbose: bool = False,
) -> list[IngestOutcome]:
    """Register session folders and materialize every session asset of their partitions.

    One run per partition (sample x dose), covering every acquisition of it. A partition whose
    sessions are all unchanged and whose assets are all current is not run at all ("unchanged").
    `replace=True` lets new content replace a stored session of the same identity (recorded; old rows
    stay in the history schema). `log_level` INFO shows the assets' own progress lines; DEBUG adds
    every Dagster event. `strict=True` refuses a session.yaml with unknown keys (else a warning).
    `encoder`: an EncoderResource to run with (default: the config file's, resources/encoder.py);
    `verbose`: Dagster's own console log (every event, stack traces) instead of one line per step.
    A failed partition's sample / dose keys that no stored or registered session uses are removed
    from the instance's dynamic partitions.
    """
    from mmlake import heldwrite

    with heldwrite.holding():  # the registration's write connection serves the first step's reads
        return _ingest(paths, lake, instance, progress, log_level, replace, strict, encoder, verbose)


def _ingest(paths, lake, instance, progress, log_level, replace, strict, encoder, verbose) -> list[IngestOutcome]:
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.schedules import stale_plan

    instance = instance or dagster_instance()
    outcomes, regs = [], []
    for folder in session_folders(paths):
        try:
            regs.append((folder, register_source(lake, folder, replace=replace, strict=strict)))
        except MmlakeError as exc:
            out = IngestOutcome(str(folder), getattr(exc, "session", None), False, str(exc), "registration")
            outcomes.append(out)
            progress(out.line)
    keys = add_session_partitions(instance, [r.manifest for _, r in regs])
    by_partition: dict[str, list] = {}
    for (folder, reg), key in zip(regs, keys):
        by_partition.setdefault(str(key), []).append((folder, reg, key))
    resources = all_resources(lake.home)
    if encoder is not None:
        resources["encoder"] = encoder
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
            result = run_assets(SESSION_ASSETS, selection=selection, partition_key=group[0][2],
                                instance=instance, resources=resources, log_level=log_level, verbose=verbose,
                                tags={**partition_tags(pkey), "mmlake/sessions": sids[:900]})
        asset, problem, trace = ("", "ok", "") if result.success else run_failure(result)
        msg = "ok" if result.success else f"{asset}: {problem}"
        for folder, reg, _ in group:
            out = IngestOutcome(str(folder), reg.session_id, result.success, msg,
                                None if result.success else asset, trace)
            outcomes.append(out)
            progress(out.line)
        if not result.success:
            keys_of = group[0][2].keys_by_dimension
            prune_partition_keys(lake, instance, [keys_of["sample"]], [keys_of["dose"]])
    return outcomes


def _all_present(lake: Lake, specs, partition_key: str) -> bool:
    have = set(lake.query("select asset_key from materializations where is_current and partition_key = ?",
                          [partition_key])["asset_key"].to_list())
    return set(specs) <= have


def run_crystal(lake: Lake, instance: DagsterInstance | None = None, path: str | None = None,
                name: str | None = None, reference_only: bool = False, epochs: int = 100,
                encoder=None, verbose: bool = False) -> bool:
    """Materialize the crystal group on a dataset (all of it, or just structures + reference spacings)."""
    from assets.crystal import CRYSTAL_ASSETS, CrystalDatasetResource, crystal_reference_spacings, structures
    from assets.definitions import all_resources

    selection = [structures, crystal_reference_spacings] if reference_only else CRYSTAL_ASSETS
    resources = {**all_resources(lake.home),
                 "crystal_dataset": CrystalDatasetResource(path=path or "", name=name or "", epochs=epochs)}
    if encoder is not None:
        resources["encoder"] = encoder
    result = run_assets(CRYSTAL_ASSETS, selection=selection, instance=instance or dagster_instance(),
                        resources=resources, log_level="INFO", verbose=verbose)
    if not result.success:
        asset, problem, trace = run_failure(result)
        print(f"FAILED crystal group: {asset}: {problem}", file=sys.stderr)
        if verbose and trace:
            print(trace, file=sys.stderr)
    return result.success


def run_reports(lake: Lake, instance: DagsterInstance | None = None, verbose: bool = False) -> bool:
    """Materialize `campaign_reports` (one HTML report per campaign) through Dagster."""
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.descriptors import campaign_reports

    result = run_assets([*SESSION_ASSETS, campaign_reports], selection=[campaign_reports],
                        instance=instance or dagster_instance(), resources=all_resources(lake.home),
                        log_level="WARNING", verbose=verbose)
    if not result.success:
        asset, problem, trace = run_failure(result)
        print(f"FAILED campaign_reports: {asset}: {problem}", file=sys.stderr)
        if verbose and trace:
            print(trace, file=sys.stderr)
    return result.success
