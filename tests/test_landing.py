"""The landing sensor, stale planner, asset checks, run retention and dagster.yaml, without a daemon:
sensor ticks are evaluated with `build_sensor_context`, runs with `materialize`."""

import json
import os
import shutil
from pathlib import Path

import pytest
import yaml
from dagster import (
    AssetKey,
    DagsterInstance,
    MultiPartitionKey,
    SensorResult,
    build_schedule_context,
    build_sensor_context,
    materialize,
)

from assets.checks import chip_grid_problems, composition_problems, orphan_rows
from assets.ingest import chips, raw_session
from assets.partitions import session_partitions
from assets.schedules import AssetSpecLite, prune_runs, stale_plan
from assets.sensors import evaluate_landing, landing_sensor
from mmlake.lake import Lake
from resources.lake import LakeResource
from resources.landing import LandingResource
from tests.sessions import make_tiny_session, write_manifest, sid

REPO = Path(__file__).resolve().parent.parent
Z = sid("zeta")


@pytest.fixture
def env(tmp_path, lake, instance, monkeypatch):
    """The two-tick rule alone (no settle pause) unless a test sets assets.sensors.SETTLE_S."""
    monkeypatch.setattr("assets.sensors.SETTLE_S", 0.0)
    landing = LandingResource(path=str(tmp_path / "landing"))
    landing.ensure()
    return {"lake": lake, "instance": instance, "landing": landing, "root": landing.root(), "tmp": tmp_path}


def tick(env, cursor=None) -> SensorResult:
    """One sensor tick, applying its dynamic-partition requests as the daemon would."""
    # as a context manager: a context left to the garbage collector closes its resources' scope
    # whenever the collector runs, resetting Dagster's current-instance context variable to an
    # instance of an earlier test ("Attempted to resolve undefined DagsterInstance weakref")
    with build_sensor_context(instance=env["instance"], cursor=cursor,
                              resources={"lake": LakeResource(home=str(env["lake"].home)),
                                         "landing": env["landing"]}) as ctx:
        result = landing_sensor(ctx)
    assert isinstance(result, SensorResult)
    for req in result.dynamic_partitions_requests:
        env["instance"].add_dynamic_partitions(req.partitions_def_name, list(req.partition_keys))
    return result


def drop(env, name="s1", **kw) -> Path:
    """Write a tiny session outside the landing zone, then move it in (as a finished copy)."""
    src = make_tiny_session(env["tmp"] / "outbox" / name, **kw)
    dest = env["root"] / name
    os.rename(src, dest)
    return dest


def run_session(env, key, assets=(raw_session, chips)):
    res = materialize(list(assets), partition_key=key, instance=env["instance"],
                      resources={"lake": LakeResource(home=str(env["lake"].home))})
    assert res.success


def test_stable_complete_session_is_staged_registered_and_requested(env):
    folder = drop(env, "s1", sample="alpha", dose_dpa=0.1)
    r1 = tick(env)
    assert not r1.run_requests and "waiting" in r1.skip_reason.skip_message
    assert folder.is_dir()  # first sighting: never touched
    r2 = tick(env, r1.cursor)
    assert len(r2.run_requests) == 1
    req = r2.run_requests[0]
    assert req.partition_key == MultiPartitionKey({"sample": "test.alpha", "dose": "0.1"})
    assert req.job_name == "session_job" and req.run_key.startswith(sid("alpha", 0.1) + ":")
    adds = {q.partitions_def_name: list(q.partition_keys) for q in r2.dynamic_partitions_requests}
    assert adds == {"sample": ["test.alpha"], "dose": ["0.1"]}
    # moved to processed/, and the lake reads a staged copy under <lake>/staged/<session>/<sha>
    assert not folder.exists() and (env["root"] / "processed" / "s1" / "session.yaml").is_file()
    src = env["lake"].query("select folder, manifest_sha256 from session_sources").to_dicts()
    staged = Path(src[0]["folder"])
    assert staged.parent == env["lake"].home / "staged" / sid("alpha", 0.1)
    assert sorted(p.name for p in staged.iterdir()) == ["eds.hspy", "haadf.hspy", "session.yaml"]
    assert req.run_key == f"{sid('alpha', 0.1)}:{staged.name[:16]}"
    # the run reads the staged copy, even with processed/ deleted
    shutil.rmtree(env["root"] / "processed" / "s1")
    run_session(env, req.partition_key)
    n = env["lake"].query("select count(*) as n from chips where session_id = ?", [sid("alpha", 0.1)])["n"][0]
    assert n == 16  # 32x32 px in 8 px chips
    # once raw_session has read it, it is no longer "requested" and nothing is requested again
    r3 = tick(env, r2.cursor)
    assert not r3.run_requests and json.loads(r3.cursor)["requested"] == []


def test_half_copied_and_growing_folders_wait(env):
    src = make_tiny_session(env["tmp"] / "outbox" / "s2", sample="beta")
    folder = env["root"] / "s2"
    folder.mkdir()
    shutil.copy(src / "session.yaml", folder / "session.yaml")  # manifest first, data still coming
    shutil.copy(src / "haadf.hspy", folder / "haadf.hspy")
    r = tick(env)
    r = tick(env, r.cursor)
    assert not r.run_requests and "waiting for eds.hspy" in r.skip_reason.skip_message
    data = (src / "eds.hspy").read_bytes()
    with open(folder / "eds.hspy", "wb") as f:  # a file that is still growing
        f.write(data[: len(data) // 2])
    r = tick(env, r.cursor)
    assert not r.run_requests
    with open(folder / "eds.hspy", "ab") as f:
        f.write(data[len(data) // 2:])
    r = tick(env, r.cursor)
    assert not r.run_requests and folder.is_dir()  # changed since last tick: wait once more
    r = tick(env, r.cursor)
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("beta")]
    # hidden and temporary names are never looked at
    (env["root"] / ".s3.incoming").mkdir()
    (env["root"] / "s4.partial").mkdir()
    r = tick(env, r.cursor)
    r = tick(env, r.cursor)
    assert (env["root"] / ".s3.incoming").is_dir() and (env["root"] / "s4.partial").is_dir()


def test_settle_pause_takes_a_stable_folder_in_one_tick_and_not_a_changing_one(env, monkeypatch):
    """MMLAKE_SENSOR_SETTLE_S (default 2 s): a new folder unchanged over the pause is taken on its first
    tick; one that changes during the pause waits, as under the two-tick rule."""
    import threading

    import assets.sensors as sensors

    monkeypatch.setattr(sensors, "SETTLE_S", 0.6)
    folder = drop(env, "s5", sample="eps")
    r = tick(env)
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("eps")] and not folder.exists()
    moving = drop(env, "s6", sample="zet")
    timer = threading.Timer(0.2, lambda: (moving / "notes.txt").write_text("still copying"))
    timer.start()
    r = tick(env, r.cursor)
    timer.join()
    assert not r.run_requests and moving.is_dir() and "waiting" in r.skip_reason.skip_message
    r = tick(env, r.cursor)  # unchanged since: taken
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("zet")]


def test_quiet_for_counts_from_the_newest_change_on_the_file_systems_clock(tmp_path):
    """quiet_for: seconds since anything under the folder changed (file contents, a new file, a
    copy tool restoring an old mtime), 0 when the probe file cannot be written (a read-only share)."""
    import time

    from assets.sensors import CLOCK_PROBE, quiet_for

    root = tmp_path / "landing"
    (root / "s" / "sub").mkdir(parents=True)
    (root / "s" / "sub" / "a.bin").write_bytes(b"x" * 100)
    assert quiet_for(root / "s", root) < 0.2
    time.sleep(0.5)
    q = quiet_for(root / "s", root)
    assert 0.45 <= q < 2.0 and (root / CLOCK_PROBE).is_file()
    os.utime(root / "s" / "sub" / "a.bin", (0, 0))  # mtime set to 1970 as cp -p / rsync -t do: ctime moves
    assert quiet_for(root / "s", root) < 0.2
    time.sleep(0.3)
    (root / "s" / "b.bin").write_bytes(b"y")  # a new entry
    assert quiet_for(root / "s", root) < 0.2
    time.sleep(0.3)
    assert quiet_for(root / "s", root) >= 0.25
    (root / CLOCK_PROBE).unlink()  # a probe that cannot be written (as on a read-only share; a
    (root / CLOCK_PROBE).mkdir()   # folder in its place refuses even root): no quiet time at all
    assert quiet_for(root / "s", root) == 0.0


def test_a_folder_quiet_for_the_settle_time_is_taken_without_the_pause(env, monkeypatch):
    """A folder renamed into the landing zone after its copy finished, found by a tick later than
    SETTLE_S after its last change, is taken at once; a younger one waits only the rest."""
    import time as real_time
    import types

    import assets.sensors as sensors

    slept = []
    fake = types.SimpleNamespace(time=real_time.time, monotonic=real_time.monotonic,
                                 perf_counter=real_time.perf_counter,
                                 sleep=lambda s: (slept.append(s), real_time.sleep(s)))
    monkeypatch.setattr(sensors, "time", fake)
    monkeypatch.setattr(sensors, "SETTLE_S", 0.5)
    folder = drop(env, "q1", sample="kappa")
    real_time.sleep(0.6)
    r = tick(env)
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("kappa")] and not folder.exists()
    assert slept == [0.0]
    folder = drop(env, "q2", sample="lam")
    r = tick(env, r.cursor)
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("lam")]
    assert 0.2 < slept[1] <= 0.5  # the rest of the settle time, not all of it


def test_first_look_never_rejects_and_a_folder_changing_while_staged_is_not_registered(env, monkeypatch):
    """The settle pause's fast look can only accept: an invalid folder (a copy that stalled for longer
    than the pause) waits for the two-tick rule, and a folder that changes during staging is not
    registered from that copy."""
    import assets.sensors as sensors

    monkeypatch.setattr(sensors, "SETTLE_S", 0.3)
    bad = drop(env, "stalled", sample="eta")
    (bad / "eds.hspy").write_bytes(b"half a file")  # the copy stalled here
    r = tick(env)
    assert bad.is_dir() and not (env["root"] / "rejected" / "stalled").exists() and not r.run_requests
    assert "not valid on its first look" in r.skip_reason.skip_message
    assert json.loads(r.cursor)["pending"]["stalled"].keys() == {"fp", "since"}
    r = tick(env, r.cursor)  # unchanged over a whole tick and still invalid: rejected now
    assert "eta@0" in (env["root"] / "rejected" / "stalled" / "REJECTED.txt").read_text()

    real_stage, calls = sensors.stage, []

    def stage_while_copy_goes_on(folder, manifest, staged_root):
        out = real_stage(folder, manifest, staged_root)
        if not calls:  # the first staging: the copy into the landing folder writes one more file
            (folder / "notes.txt").write_text("late file")
        calls.append(out)
        return out

    monkeypatch.setattr(sensors, "stage", stage_while_copy_goes_on)
    folder = drop(env, "late", sample="theta")
    r = tick(env, r.cursor)
    assert not r.run_requests and folder.is_dir() and "changed while it was staged" in r.skip_reason.skip_message
    assert not calls[0][0].exists()  # the mixed copy was dropped
    assert env["lake"].query("select count(*) n from session_sources where sample = 'theta'")["n"][0] == 0
    r = tick(env, r.cursor)  # unchanged since: staged again and taken
    assert [q.run_key.split(":")[0] for q in r.run_requests] == [sid("theta")] and calls[1][0].is_dir()


def test_bad_session_is_rejected_with_reason_and_good_one_unaffected(env):
    good = drop(env, "good", sample="good")
    bad = drop(env, "bad", sample="bad", elements=["Fe", "Xx"])
    r = tick(env)
    r = tick(env, r.cursor)
    assert [q.tags["mmlake/sessions"] for q in r.run_requests] == [sid("good")]
    note = (env["root"] / "rejected" / "bad" / "REJECTED.txt").read_text()
    assert "bad@0" in note and "unknown element" in note and "Xx" in note
    assert not bad.exists() and not good.exists()
    assert (env["root"] / "processed" / "good").is_dir()
    assert env["lake"].query("select session_id from session_sources")["session_id"].to_list() == [sid("good")]
    # a corrupt data file is caught by opening the headers
    folder = drop(env, "corrupt", sample="corrupt")
    (folder / "eds.hspy").write_bytes(b"not an hdf5 file")
    r = tick(env, r.cursor)
    r = tick(env, r.cursor)
    assert not r.run_requests
    assert "corrupt@0" in (env["root"] / "rejected" / "corrupt" / "REJECTED.txt").read_text()


def test_incomplete_folder_is_rejected_after_timeout(env, monkeypatch):
    folder = env["root"] / "lonely"
    write_manifest(folder, haadf="haadf.hspy")  # names a file that never comes
    monkeypatch.setattr("assets.sensors.INCOMPLETE_TIMEOUT_S", 0.0)
    r = tick(env)
    r = tick(env, r.cursor)
    assert "haadf.hspy never arrived" in (env["root"] / "rejected" / "lonely" / "REJECTED.txt").read_text()


def test_idempotent_across_lost_cursor_and_redelivery(env):
    drop(env, "s1", sample="gamma")
    r = tick(env)
    r = tick(env, r.cursor)
    key = r.run_requests[0].run_key
    # same cursor: nothing new
    assert not tick(env, r.cursor).run_requests
    # cursor lost (sensor reset) before the run happened: the same run_key is requested again,
    # which Dagster drops as a duplicate for this sensor
    again = tick(env, None)
    assert [q.run_key for q in again.run_requests] == [key]
    # the identical session delivered a second time: same staged copy, same run key
    shutil.copytree(env["root"] / "processed" / "s1", env["tmp"] / "outbox" / "s1_again")
    os.rename(env["tmp"] / "outbox" / "s1_again", env["root"] / "s1_again")
    r2 = tick(env, again.cursor)
    r2 = tick(env, r2.cursor)
    assert [q.run_key for q in r2.run_requests] == []  # requested already (cursor)
    assert len(list((env["lake"].home / "staged" / sid("gamma")).iterdir())) == 1
    assert (env["root"] / "processed" / "s1_again").is_dir()
    # different data under the same identity is never a silent replacement: rejected with the reason,
    # the staged copy of the stored session kept (replacing takes `mmlake ingest --replace`)
    drop(env, "s1_v2", sample="gamma", seed=5)
    r3 = tick(env, r2.cursor)
    r3 = tick(env, r3.cursor)
    assert r3.run_requests == []
    note = (env["root"] / "rejected" / "s1_v2" / "REJECTED.txt").read_text()
    assert sid("gamma") in note and "different content" in note and "--replace" in note
    assert len(list((env["lake"].home / "staged" / sid("gamma")).iterdir())) == 1


def replace_content(env, sample, seed):
    """New data for a stored session identity, registered with an explicit replace."""
    from mmlake.store import register_source

    folder = make_tiny_session(env["tmp"] / f"replacement-{seed}", sample=sample, seed=seed)
    assert register_source(env["lake"], folder, replace=True).status == "replaced"


def test_stale_plan_follows_the_ledger(env):
    drop(env, "s1", sample="delta")
    r = tick(env)
    r = tick(env, r.cursor)
    pkey = r.run_requests[0].partition_key
    run_session(env, pkey)
    lake, pk = env["lake"], str(pkey)
    have = dict(lake.query("select asset_key, code_version from materializations where is_current").rows())
    specs = {"raw_session": AssetSpecLite("raw_session", have["raw_session"], ()),
             "chips": AssetSpecLite("chips", have["chips"], ("raw_session",))}
    assert stale_plan(lake, specs) == []
    # code change of chips: chips (and what follows it) re-run
    changed = {**specs, "chips": AssetSpecLite("chips", "chips-2", ("raw_session",)),
               "features": AssetSpecLite("features", "f-1", ("chips",))}
    plan = stale_plan(lake, changed)
    assert [(p.partition_key, p.assets) for p in plan] == [(pk, ("chips", "features"))]
    assert f"chips: code {have['chips']} -> chips-2" in plan[0].reasons
    # a new asset nobody has run yet: missing
    plan = stale_plan(lake, {**specs, "features": AssetSpecLite("features", "f-1", ("chips",))})
    assert [(p.assets, p.reasons) for p in plan] == [(("features",), ("features: missing",))]
    # re-running an unchanged raw_session writes nothing, so nothing becomes stale
    run_session(env, pkey, assets=(raw_session,))
    assert stale_plan(lake, specs) == []
    # raw_session re-materialized with replaced content: chips was computed from an older raw_session
    replace_content(env, "delta", seed=9)
    run_session(env, pkey, assets=(raw_session,))
    plan = stale_plan(lake, specs)
    assert plan[0].assets == ("chips",) and "upstream raw_session" in plan[0].reasons[0]
    # the plan key is stable for the same inputs (dedup), and changes when they change
    assert stale_plan(lake, specs)[0].stale_key == plan[0].stale_key
    run_session(env, pkey)
    assert stale_plan(lake, specs) == []


def test_stale_schedule_requests_the_missing_session_assets(env):
    from assets.definitions import SESSION_ASSETS, defs
    from assets.schedules import stale_refresh_schedule

    drop(env, "s1", sample="eps")
    r = tick(env)
    r = tick(env, r.cursor)
    run_session(env, r.run_requests[0].partition_key)  # only raw_session + chips
    with build_schedule_context(instance=env["instance"], repository_def=defs.get_repository_def(),
                                resources={"lake": LakeResource(home=str(env["lake"].home))}) as ctx:
        out = stale_refresh_schedule(ctx)
    downstream = [k for a in SESSION_ASSETS for k in a.keys if k.to_user_string() not in ("raw_session", "chips")]
    if not downstream:
        pytest.skip("no session assets downstream of chips yet")
    assert len(out) == 1 and out[0].partition_key == "0|test.eps"
    assert set(out[0].asset_selection) == set(downstream)
    assert AssetKey("chips") not in out[0].asset_selection


def test_checks_on_a_materialized_session(env):
    drop(env, "s1", sample="zeta", haadf_shape=(36, 44), eds_shape=(36, 44))
    r = tick(env)
    r = tick(env, r.cursor)
    run_session(env, r.run_requests[0].partition_key)
    lake = env["lake"]
    problems, numbers = chip_grid_problems(lake, Z)
    assert problems == [] and (numbers["n_rows"], numbers["n_cols"]) == (4, 5)  # floor(36/8), floor(44/8)
    with lake.connect() as con:
        con.execute("delete from chips where session_id = '" + Z + "' and chip_index = 7")
        con.execute("update chips set chip_index = 99 where session_id = '" + Z + "' and chip_index = 3")
    problems, _ = chip_grid_problems(lake, Z)
    assert any("19 chip rows" in p for p in problems) and any("disagree" in p for p in problems)
    assert all(c["orphans"] == 0 for c in orphan_rows(lake, Z).values())
    with lake.connect() as con:
        con.execute("update chips set materialization_id = 'nobody' where session_id = '" + Z + "' and chip_index = 0")
    assert orphan_rows(lake, Z)["chips"]["orphans"] == 1


def test_composition_check(lake):
    with lake.connect() as con:  # the guard: no table yet (the descriptors schema may create it)
        con.execute("drop table if exists region_composition")
    assert composition_problems(lake, "s@0")[1]["note"].startswith("no region_composition table")
    with lake.connect() as con:
        con.execute("create table if not exists region_composition (session_id varchar, method varchar, "
                    "modality varchar, region integer, element varchar, atomic_percent double, "
                    "materialization_id varchar)")
    assert composition_problems(lake, "s@0")[0] == []  # empty: passes, says so
    rows = [("s@0", "louvain", "eds", 0, "Fe", 20.0), ("s@0", "louvain", "eds", 0, "O", 80.0),
            ("s@0", "louvain", "eds", 1, "Fe", None), ("s@0", "louvain", "eds", 1, "O", None),
            ("s@0", "ward", "eds", 0, "Fe", 30.0), ("s@0", "ward", "eds", 0, "O", 69.0),
            ("s@0", "ward", "eds", 1, "Fe", 30.0), ("s@0", "ward", "eds", 1, "O", None)]
    with lake.connect() as con:
        con.executemany("insert into region_composition values (?,?,?,?,?,?,'m')", rows)
    problems, meta = composition_problems(lake, "s@0")
    assert meta["groups"] == 4 and meta["max_abs_deviation"] == pytest.approx(1.0)
    assert problems == ["s@0 ward/eds region 0: atomic percents sum to 99.000",
                        "s@0 ward/eds region 1: 1 of 2 elements NULL"]
    assert composition_problems(lake, "s@0", tol=1.5)[0] == ["s@0 ward/eds region 1: 1 of 2 elements NULL"]


def test_prune_runs_keeps_the_runs_behind_current_rows(env):
    drop(env, "s1", sample="eta")
    r = tick(env)
    r = tick(env, r.cursor)
    pkey = r.run_requests[0].partition_key
    run_session(env, pkey)
    run_session(env, pkey, assets=(chips,))  # unchanged inputs: writes nothing, holds no current row
    inst, lake = env["instance"], env["lake"]
    runs = [rec.dagster_run.run_id for rec in sorted(inst.get_run_records(), key=lambda r: r.create_timestamp)]
    current = set(lake.query("select run_id from materializations where is_current")["run_id"].to_list())
    assert len(runs) == 2 and current == {runs[0]}
    assert prune_runs(inst, lake, days=30) == []  # nothing is old enough
    assert prune_runs(inst, lake, days=0) == [runs[1]]  # the no-op run goes, the one behind the rows stays
    n_ledger = lake.query("select count(*) as n from materializations")["n"][0]
    replace_content(env, "eta", seed=11)
    run_session(env, pkey)  # a third run supersedes the first
    assert prune_runs(inst, lake, days=0) == [runs[0]]
    assert {rec.dagster_run.run_id for rec in inst.get_run_records()} == set(
        lake.query("select run_id from materializations where is_current")["run_id"].to_list())
    assert lake.query("select count(*) as n from materializations")["n"][0] == n_ledger + 2  # ledger kept


def test_dagster_yaml_is_valid_for_this_dagster(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    shutil.copy(REPO / "dagster.yaml", home / "dagster.yaml")
    cfg = yaml.safe_load((REPO / "dagster.yaml").read_text())
    inst = DagsterInstance.from_config(str(home))
    try:
        assert inst.telemetry_enabled is False
        conc = inst.get_concurrency_config()
        assert conc.pool_config.default_pool_limit == 2
        assert conc.pool_config.pool_granularity.value == "op"
        assert conc.run_queue_config.max_concurrent_runs == cfg["concurrency"]["runs"]["max_concurrent_runs"]
        assert inst.run_monitoring_enabled
        from dagster._core.definitions.run_request import InstigatorType
        from dagster._core.scheduler.instigation import TickStatus

        sensor_ret = inst.get_tick_retention_settings(InstigatorType.SENSOR)
        assert sensor_ret[TickStatus.SKIPPED] == 7 and sensor_ret[TickStatus.SUCCESS] == 30
    finally:
        inst.dispose()
