"""The landing-zone sensor: new session folders in, one `session_job` run per session out.

Each tick (every `MMLAKE_SENSOR_INTERVAL_S` seconds, default 5, Dagster's floor):

1. Fingerprint every candidate folder in the landing zone (relative path, size and mtime of every
   file in it). A folder is looked at only when its fingerprint is unchanged since the previous tick,
   so a folder still being copied (or an rsync temp file being renamed) is left alone. A folder seen
   for the first time is looked at in that tick once it has been unchanged for `MMLAKE_SENSOR_SETTLE_S`
   (default 2 s; 0 turns it off): nothing under it changed for that long by the file system's clock
   (`quiet_for`), or, for a folder that changed more recently, fingerprinted again after a pause
   within the tick for the rest of that time and unchanged over it. What that fast look
   finds can only accept a folder, never reject it: a folder that fails validation on its first look
   (a copy that stalled for longer than the pause, then goes on) waits for the two-tick rule, and a
   folder that changes while it is being staged is not registered. Hidden names (`.foo`,
   `.foo.tmp-1234`) and names ending in .tmp/.part/.partial are never candidates: copy into a
   temporary name and rename, or write session.yaml last.
2. A stable folder is complete when its session.yaml and every file it names are present. A stable
   folder that stays incomplete for `MMLAKE_INCOMPLETE_TIMEOUT_S` (default 1 h) is rejected.
3. A complete folder is validated: `load_manifest` (fields, element symbols, paths) and the data files'
   headers opened through RosettaSciIO (lazy: headers and the HAADF image, never the EDS cube).
   A SessionError moves it to `rejected/` with a REJECTED.txt giving the message; nothing else changes.
4. A valid folder is copied (hashing while copying) to `<lake home>/staged/<session_id>/<sha>`, where
   sha = sha256 over the manifest's sha256 and every named file's sha256, and that stable copy is
   registered (`mmlake.store.register_source`). `raw_session` reads the staged copy, so the landing
   folder is moved to `processed/` right away and nothing there has to stay put.
5. The tick returns the `sample`/`dose` dynamic partition keys to add and one RunRequest for the
   session's partition with run_key `<session_id>:<sha[:16]>`.

The cursor (JSON) holds the fingerprints of the previous tick, the folders already handled and the
run keys already requested. Should the cursor be lost (sensor reset) or the daemon die between a
registration and the run submission, the next tick finds registered staged sessions that
`raw_session` has not yet read and requests them again; Dagster drops a RunRequest whose run_key this
sensor already used, so a session never runs twice for the same content.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import shutil
import time
import uuid
from pathlib import Path
from typing import Any

import yaml
from dagster import (
    DefaultSensorStatus,
    MultiPartitionKey,
    RunRequest,
    SensorEvaluationContext,
    SensorResult,
    sensor,
)

from assets.partitions import dose_partitions, sample_partitions
from mmlake.errors import SessionError
from mmlake.lake import Lake
from mmlake.manifest import MANIFEST_NAME, content_sha, load_manifest
from mmlake.store import register_source
from resources.lake import LakeResource
from resources.landing import RESERVED, LandingResource

SESSION_JOB = "session_job"
# A tick is cheap (a directory walk and one read-only lake query), so the default is Dagster's floor
# (its sensor daemon evaluates a sensor every 5 s at the fastest) rather than its 30 s default: a
# session dropped at a random time waits 2.5 s for a tick on average. Skipped ticks are purged after
# 7 days (dagster.yaml retention).
SENSOR_INTERVAL_S = int(os.environ.get("MMLAKE_SENSOR_INTERVAL_S", "5"))
INCOMPLETE_TIMEOUT_S = float(os.environ.get("MMLAKE_INCOMPLETE_TIMEOUT_S", "3600"))
TICK_BUDGET_S = float(os.environ.get("MMLAKE_SENSOR_BUDGET_S", "30"))  # staging work per tick
# A folder seen for the first time is fingerprinted again after this pause within the same tick,
# and looked at when unchanged, instead of waiting for the next tick (Dagster's sensor daemon
# evaluates a sensor every 5 s at the fastest, so the two-tick rule alone costs 5-20 s). The fast
# look never rejects: see evaluate_landing. 0: the two-tick rule only.
SETTLE_S = float(os.environ.get("MMLAKE_SENSOR_SETTLE_S", "2"))
TEMP_SUFFIXES = (".tmp", ".part", ".partial", ".crdownload")
FILE_ROLES = ("haadf", "eds", "data", "truth")
REJECT_NOTE = "REJECTED.txt"


# ------------------------------------------------------------------ folder inspection
def candidates(root: Path) -> list[Path]:
    """Session folders waiting in the landing zone (not processed/, rejected/, hidden or temporary)."""
    if not root.is_dir():
        return []
    out = []
    for p in sorted(root.iterdir()):
        if not p.is_dir() or p.is_symlink() or p.name in RESERVED or p.name.startswith("."):
            continue
        if p.name.lower().endswith(TEMP_SUFFIXES):
            continue
        out.append(p)
    return out


def fingerprint(folder: Path) -> tuple[str, set[str]]:
    """Hash of (relative path, size, mtime_ns) of every file under `folder`, and the relative paths."""
    entries = []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames.sort()
        for name in sorted(filenames):
            path = Path(dirpath) / name
            try:
                st = path.stat()
            except FileNotFoundError:  # vanished mid-walk: changing, so not stable
                entries.append((str(path), -1, -1))
                continue
            entries.append((path.relative_to(folder).as_posix(), st.st_size, st.st_mtime_ns))
    digest = hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:32]
    return digest, {e[0] for e in entries}


CLOCK_PROBE = ".mmlake-clock"  # hidden: never a candidate


def quiet_for(folder: Path, root: Path) -> float:
    """Seconds since anything under `folder` last changed (the newest ctime or mtime of it, its
    subfolders and files: a write, a rename, an added or removed entry, a copy tool setting the
    mtime all move the ctime), on the file system's own clock: a probe file in `root` is touched
    and its mtime is "now", so a share whose server clock differs from this machine's is judged
    right. 0.0 when the probe cannot be written (a read-only share) or a stat fails: then the whole
    pause is taken. Why: a folder copied in under a temporary name and renamed, found by a tick
    seconds later, has been unchanged for longer than the settle pause already; waiting it out
    again only delays the session."""
    newest = 0
    try:
        for dirpath, _, filenames in os.walk(folder):
            for path in [dirpath, *(os.path.join(dirpath, n) for n in filenames)]:
                st = os.stat(path, follow_symlinks=False)
                newest = max(newest, st.st_ctime_ns, st.st_mtime_ns)
        probe = root / CLOCK_PROBE
        with open(probe, "w") as fh:
            fh.write(str(os.getpid()))
        fs_now = os.stat(probe).st_mtime_ns
    except OSError:
        return 0.0
    quiet = (fs_now - newest) / 1e9
    if fs_now % 1_000_000 == 0:  # a file system keeping whole seconds (or 2 s: FAT, some SMB shares):
        quiet -= 2.0             # both times are rounded down; never count the rounding as quiet time
    return max(0.0, quiet)


def missing_files(folder: Path, present: set[str]) -> list[str] | None:
    """Files session.yaml names that are not there yet; None if the manifest cannot be read as YAML
    (validation will say why). [MANIFEST_NAME] when there is no manifest yet."""
    if MANIFEST_NAME not in present:
        return [MANIFEST_NAME]
    try:
        raw = yaml.safe_load((folder / MANIFEST_NAME).read_text())
    except (yaml.YAMLError, UnicodeDecodeError, OSError):
        return None
    if not isinstance(raw, dict):
        return None
    named = [raw[k] for k in FILE_ROLES if isinstance(raw.get(k), str)]
    return [n for n in named if not (folder / n).is_file()]


def validate(folder: Path):
    """The manifest, after checking it and opening the files' headers (raises SessionError)."""
    from assets.imports import READERS, import_paused
    from mmlake.session import open_session

    import_paused(*READERS)
    manifest = load_manifest(folder)
    try:
        open_session(folder)
    except SessionError:
        raise
    except Exception as exc:  # a reader failing on a corrupt file: still this session's problem
        raise SessionError(manifest.session_id, f"cannot open the session files: {type(exc).__name__}: "
                                                f"{exc}") from exc
    return manifest


def unique_dest(parent: Path, name: str) -> Path:
    """parent/name, or parent/name.<UTC time> when that exists already."""
    dest = parent / name
    if dest.exists():
        dest = parent / f"{name}.{dt.datetime.now(dt.timezone.utc):%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:4]}"
    return dest


def reject(folder: Path, rejected_dir: Path, reason: str) -> Path:
    """Move a session folder to rejected/ with a REJECTED.txt saying why; returns the new path."""
    rejected_dir.mkdir(parents=True, exist_ok=True)
    dest = unique_dest(rejected_dir, folder.name)
    shutil.move(str(folder), str(dest))
    (dest / REJECT_NOTE).write_text(
        f"Rejected by the mmlake landing sensor at {dt.datetime.now(dt.timezone.utc).isoformat(timespec='seconds')}\n"
        f"Folder: {folder}\n\nReason:\n{reason}\n\n"
        "Fix the problem, delete this file, and move the folder back into the landing folder to retry.\n"
    )
    return dest


def stage(folder: Path, manifest, staged_root: Path) -> tuple[Path, str, bool]:
    """Copy the session's manifest and named files to staged/<session_id>/<content sha>.

    Files are hashed while they are copied (one read). An identical copy already staged is reused;
    the flag says whether this call created the copy (False: it was there already).
    """
    sid_dir = staged_root / manifest.session_id
    sid_dir.mkdir(parents=True, exist_ok=True)
    tmp = sid_dir / f".incoming-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        from mmlake.session import session_files

        files = session_files(folder, manifest)  # companions of TIA .emi / JEOL .asw included
        shas = {}
        for rel in [MANIFEST_NAME, *files.values()]:
            src, dst = folder / rel, tmp / rel
            dst.parent.mkdir(parents=True, exist_ok=True)
            h = hashlib.sha256()
            with open(src, "rb") as fi, open(dst, "wb") as fo:
                while chunk := fi.read(1 << 22):
                    h.update(chunk)
                    fo.write(chunk)
            shutil.copystat(src, dst)
            shas[rel] = h.hexdigest()
        content = content_sha(manifest.raw, {role: shas[rel] for role, rel in files.items()})
        final = sid_dir / content
        created = not final.exists()
        if created:
            os.replace(tmp, final)
        else:
            shutil.rmtree(tmp)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final, content, created


def prune_staged(sid_dir: Path, keep: Path) -> None:
    """Drop older staged versions of a session once a newer one is registered."""
    for p in sid_dir.iterdir():
        if p != keep and p.is_dir():
            shutil.rmtree(p, ignore_errors=True)


def run_key(session_id: str, content_sha: str) -> str:
    return f"{session_id}:{content_sha[:16]}"


def _load_cursor(text: str | None) -> dict[str, Any]:
    try:
        cur = json.loads(text) if text else {}
    except json.JSONDecodeError:
        cur = {}
    return {"pending": cur.get("pending", {}), "handled": cur.get("handled", {}),
            "requested": cur.get("requested", [])}


def _requests_for(sessions: list[tuple[str, str, str, str]], instance) -> tuple[list, list]:
    """RunRequests and dynamic-partition add requests for (session_id, sample key, dose_key, sha) rows:
    one run per partition (it processes every session of the partition)."""
    samples = sorted({s for _, s, _, _ in sessions if not instance.has_dynamic_partition("sample", s)})
    doses = sorted({d for _, _, d, _ in sessions if not instance.has_dynamic_partition("dose", d)})
    adds = []
    if samples:
        adds.append(sample_partitions.build_add_request(samples))
    if doses:
        adds.append(dose_partitions.build_add_request(doses))
    by_pair: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for sid, sample, dose, sha in sessions:
        by_pair.setdefault((sample, dose), []).append((sid, sha))
    runs = []
    for (sample, dose), items in sorted(by_pair.items()):
        items.sort()
        runs.append(RunRequest(
            run_key=";".join(run_key(sid, sha) for sid, sha in items), job_name=SESSION_JOB,
            partition_key=MultiPartitionKey({"sample": sample, "dose": dose}),
            tags={"mmlake/sessions": ",".join(sid for sid, _ in items)[:900], "mmlake/source": "landing"}))
    return runs, adds


# ------------------------------------------------------------------ the sensor
def evaluate_landing(context: SensorEvaluationContext, lake: Lake, landing: LandingResource) -> SensorResult:
    """One tick of the landing sensor (the sensor function without Dagster's decorator)."""
    cur = _load_cursor(context.cursor)
    root = landing.ensure()
    staged_root = lake.home / "staged"
    now, t0 = time.time(), time.monotonic()
    new_pending, new_handled = {}, {}
    accepted: list[tuple[str, str, str, str]] = []
    notes: list[str] = []
    pending = dict(cur["pending"])
    if SETTLE_S > 0:  # new folders: taken once unchanged for SETTLE_S (one pause for all of them)
        fresh = {}
        for folder in candidates(root):
            fp, _ = fingerprint(folder)
            prev = pending.get(folder.name)
            if (prev is None or prev["fp"] != fp) and cur["handled"].get(folder.name) != fp:
                fresh[folder.name] = (folder, fp, quiet_for(folder, root))
        if fresh:
            time.sleep(max(0.0, SETTLE_S - min(q for _, _, q in fresh.values())))
            for name, (folder, fp, _) in fresh.items():
                if folder.is_dir() and fingerprint(folder)[0] == fp:
                    pending[name] = {"fp": fp, "since": now, "first_look": True}
    for folder in candidates(root):
        name = folder.name
        fp, present = fingerprint(folder)
        if cur["handled"].get(name) == fp:  # handled but could not be moved away (read-only share)
            new_handled[name] = fp
            continue
        prev = pending.get(name)
        if prev is None or prev["fp"] != fp:
            new_pending[name] = {"fp": fp, "since": now}
            notes.append(f"{name}: waiting for it to stay unchanged")
            continue
        if time.monotonic() - t0 > TICK_BUDGET_S:  # staging budget spent: next tick
            new_pending[name] = prev
            continue
        missing = missing_files(folder, present)
        if missing:
            if now - prev["since"] < INCOMPLETE_TIMEOUT_S:
                new_pending[name] = prev
                notes.append(f"{name}: incomplete, waiting for {', '.join(missing)}")
                continue
            reason = (f"session {name}: incomplete for {INCOMPLETE_TIMEOUT_S:.0f} s: "
                      f"{', '.join(missing)} never arrived")
            dest = reject(folder, landing.rejected(), reason)
            context.log.warning(f"rejected {name} -> {dest}: {reason}")
            continue
        first_look = prev.get("first_look", False)
        try:
            manifest = validate(folder)
        except SessionError as exc:
            if first_look:  # maybe a stalled copy: judged again once unchanged over a whole tick
                new_pending[name] = {"fp": fp, "since": prev["since"]}
                notes.append(f"{name}: not valid on its first look ({exc}); looked at again next tick")
                continue
            dest = reject(folder, landing.rejected(), str(exc))
            context.log.warning(f"rejected {name} -> {dest}: {exc}")
            continue
        staged, sha, created = stage(folder, manifest, staged_root)
        fp_after, _ = fingerprint(folder)
        if fp_after != fp:  # changed while it was copied: the copy may be a mix
            if created:
                shutil.rmtree(staged, ignore_errors=True)
            new_pending[name] = {"fp": fp_after, "since": now}
            notes.append(f"{name}: changed while it was staged; waiting for it to stay unchanged")
            continue
        try:
            reg = register_source(lake, staged, content=sha)
        except SessionError as exc:  # different content under a stored identity: never replaced silently
            shutil.rmtree(staged, ignore_errors=True)
            dest = reject(folder, landing.rejected(), str(exc))
            context.log.warning(f"rejected {name} -> {dest}: {exc}")
            continue
        if reg.status == "unchanged":
            if staged != Path(_registered_folder(lake, reg.session_id)):  # the first copy stays the source
                shutil.rmtree(staged, ignore_errors=True)
            context.log.info(f"{manifest.session_id} ({name}): identical content is already in the lake; nothing to do")
        else:
            prune_staged(staged.parent, staged)
            accepted.append((manifest.session_id, manifest.sample_key, manifest.dose_key, sha))
        try:
            dest = unique_dest(landing.processed(), name)
            shutil.move(str(folder), str(dest))
            context.log.info(f"accepted {manifest.session_id} ({name}), staged at {staged}, moved to {dest}")
        except OSError as exc:  # cannot move it: remember it so it is not staged again
            new_handled[name] = fp
            context.log.warning(f"accepted {manifest.session_id} but could not move {folder}: {exc}")

    # Registered staged sessions that raw_session has not read yet: requested now, or re-requested
    # after a lost cursor / a crash between registration and run submission (run_key dedups).
    requested = set(cur["requested"])
    todo = {run_key(sid, sha): (sid, sample, dose, sha) for sid, sample, dose, sha in accepted
            if run_key(sid, sha) not in requested}
    open_rows = _unread_staged(lake, staged_root)
    open_keys = {run_key(r[0], r[3]) for r in open_rows}
    for row in open_rows:
        key = run_key(row[0], row[3])
        if key not in requested:
            todo.setdefault(key, row)
    runs, adds = _requests_for(list(todo.values()), context.instance)
    still_open = sorted((requested & open_keys) | set(todo))  # requested, raw_session not done
    new_pending = {k: {"fp": v["fp"], "since": v["since"]} for k, v in new_pending.items()}  # no first_look
    cursor = json.dumps({"pending": new_pending, "handled": new_handled, "requested": still_open},
                        sort_keys=True)
    if runs:
        return SensorResult(run_requests=runs, dynamic_partitions_requests=adds, cursor=cursor)
    return SensorResult(skip_reason="; ".join(notes) or "no new sessions in the landing zone",
                        dynamic_partitions_requests=adds, cursor=cursor)


def _unread_staged(lake: Lake, staged_root: Path) -> list[tuple[str, str, str, str]]:
    """(session_id, sample, dose_key, content sha) of sessions registered from a staged copy that
    raw_session has not yet materialized from that copy."""
    if not staged_root.is_dir() or not lake.db_path.exists():
        return []
    rows = lake.query(
        "select s.session_id, s.sample_key, s.dose_key, s.content_sha from session_sources s "
        "where starts_with(s.folder, ?) and not exists (select 1 from sessions x where "
        "x.session_id = s.session_id and x.content_sha = s.content_sha) order by s.registered_at",
        [str(staged_root) + os.sep],
    ).rows()
    return [tuple(r) for r in rows]


def _registered_folder(lake: Lake, session_id: str) -> str:
    rows = lake.query("select folder from session_sources where session_id = ?", [session_id]).rows()
    return rows[0][0] if rows else ""


@sensor(
    name="landing_sensor",
    job_name=SESSION_JOB,
    minimum_interval_seconds=SENSOR_INTERVAL_S,
    default_status=DefaultSensorStatus.RUNNING,
    description="Watches the landing folder ($MMLAKE_LANDING, default <lake>/landing) for complete, "
                "unchanged session folders; validates, stages and registers each, adds its sample/dose "
                "partition keys and requests its session_job run. Bad sessions go to rejected/ with "
                "REJECTED.txt.",
)
def landing_sensor(context: SensorEvaluationContext, lake: LakeResource, landing: LandingResource):
    return evaluate_landing(context, lake.lake(), landing)
