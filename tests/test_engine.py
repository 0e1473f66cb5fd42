"""The distributed engine (issue 16, part 3): the whole session job, the `gpu`-pooled encoder step
included, on a local two-worker Dask cluster (standing for a real one), two sessions at once.

The rows equal an in-process run's, and the encoder steps of the two concurrent runs never overlap
(Dagster instance pool `gpu`, limit 1: `dagster instance concurrency set gpu 1`)."""

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import polars as pl
import pytest
from dagster import AssetKey, DagsterEventType

from assets.partitions import add_session_partitions, partition_tags
from assets.scaleout import dask_task_key
from assets.targets import session_job_def
from mmlake.lake import Lake
from mmlake.store import register_source
from tests.sessions import make_tiny_session

REPO = Path(__file__).resolve().parent.parent

ENCODER = {"device": "cpu", "haadf_encoders": ["fft"], "batch_size": 64}
# provenance ledger and registration bookkeeping differ per run by design (run ids, clocks)
NOT_COMPARED = {"schema_meta", "materializations", "session_sources", "session_events"}
MEASURED = {"chips_per_s", "train_seconds"}  # speeds and durations, not results
# the session job's first steps, the `gpu`-pooled encoder among them (the whole job is ~20 steps a
# session: minutes on 2 shared cores; bench/engine.py runs it whole on the demo campaign)
SELECTION = [AssetKey(k) for k in ("raw_session", "chips", "haadf_embeddings")]


def run_config(lake_home, base=None) -> dict:
    cfg = dict(base or {})
    cfg["resources"] = {"lake": {"config": {"home": str(lake_home)}}, "encoder": {"config": ENCODER}}
    return cfg


def data_tables(lake: Lake) -> dict[str, pl.DataFrame]:
    """Every data table with rows, materialization ids left out, rows in a canonical order."""
    names = lake.query("select table_name from information_schema.tables where table_schema = 'main' "
                       "and table_type = 'BASE TABLE' order by 1")["table_name"].to_list()
    out = {}
    for name in names:
        if name in NOT_COMPARED:
            continue
        cols = lake.query("select column_name, data_type from information_schema.columns "
                          "where table_schema = 'main' and table_name = ?", [name])
        keep = [c for c, t in cols.rows() if c != "materialization_id" and c not in MEASURED
                and not t.startswith("TIMESTAMP")]
        df = lake.query(f"select {', '.join(chr(34) + c + chr(34) for c in keep)} from {name}")
        if df.height:
            out[name] = df.sort(by=[c for c, t in zip(df.columns, df.dtypes) if t.is_numeric() or t == pl.Utf8],
                                maintain_order=True)
    return out


def intervals(instance, run_ids, step_key: str) -> list[tuple[float, float]]:
    """(start, end) timestamps of `step_key` in each run, from its STEP_START / STEP_SUCCESS events."""
    out = []
    for run_id in run_ids:
        start = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        end = instance.all_logs(run_id, of_type=DagsterEventType.STEP_SUCCESS)
        (s,) = [e.timestamp for e in start if e.step_key == step_key]
        (t,) = [e.timestamp for e in end if e.step_key == step_key]
        out.append((s, t))
    return sorted(out)


def test_task_keys_carry_the_run_id():
    assert dask_task_key("session_job_dask", "r1", "chips") != dask_task_key("session_job_dask", "r2", "chips")
    assert "r1" in dask_task_key("session_job_dask", "r1", "chips")


def test_dask_does_not_walk_the_step_payload():
    """The defect worked around (dagster-dask 0.29.27, dask 2026.8): what `client.submit` does to its
    arguments (tokenize, unpack_remotedata) iterates a DagsterRun, and a pooled run's
    RunOpConcurrency refuses iteration; wrapped in a StepPayload the run passes untouched."""
    from dagster._core.storage.dagster_run import DagsterRun, RunOpConcurrency
    from dask.base import tokenize
    from distributed.utils_comm import unpack_remotedata

    from assets.scaleout import StepPayload

    run = DagsterRun(job_name="session_job_dask", run_id="r",
                     run_op_concurrency=RunOpConcurrency(root_key_counts={"gpu": 1}, has_unconstrained_root_nodes=True))
    with pytest.raises(Exception, match="Iteration is not allowed"):
        tokenize(run)
    with pytest.raises(Exception, match="Iteration is not allowed"):
        unpack_remotedata(run, byte_keys=True)
    payload = StepPayload(None, run, {}, ["haadf_embeddings"], None, None)
    tokenize([], payload)
    unpack_remotedata(([], payload), byte_keys=True)


@pytest.mark.slow
def test_two_sessions_at_once_on_a_dask_cluster_match_in_process(tmp_path, instance):
    from dask.distributed import Client, LocalCluster

    folders = [make_tiny_session(tmp_path / f"eng{i}", sample=f"eng{i}", haadf_shape=(24, 32), eds_shape=(24, 32),
                                 chip_px=8, seed=i) for i in range(2)]
    lakes = {name: Lake(tmp_path / f"lake_{name}").ensure() for name in ("inproc", "dask")}
    manifests = [[register_source(lk, f).manifest for f in folders] for lk in lakes.values()][0]
    keys = add_session_partitions(instance, manifests)
    instance.event_log_storage.set_concurrency_slots("gpu", 1)

    job = session_job_def()
    for key in keys:
        res = job.execute_in_process(run_config=run_config(lakes["inproc"].home), instance=instance,
                                     partition_key=key, raise_on_error=False, asset_selection=SELECTION)
        assert res.success, [e.message for e in res.all_events if e.is_failure]

    # two runs at once, one process each (Dagster's run set-up configures logging: not thread-safe)
    from dagster._serdes import serialize_value

    ref = serialize_value(instance.get_ref())
    extra = json.dumps({"resources": {"encoder": {"config": ENCODER}}})
    t0 = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        procs = [subprocess.Popen([sys.executable, "-m", "assets.scaleout", str(key), "--scheduler",
                                   cluster.scheduler_address, "--lake", str(lakes["dask"].home),
                                   "--select", ",".join(k.to_user_string() for k in SELECTION),
                                   "--config-json", extra, "--instance-ref", ref],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
                 for key in keys]
        outs = [p.communicate(timeout=300)[0] for p in procs]
    print(f"dask: two sessions in {time.monotonic() - t0:.1f} s")
    assert all(p.returncode == 0 for p in procs), [o[-3000:] for o in outs]
    run_ids = [re.search(r"^([0-9a-f-]{36}) ok$", o, re.M).group(1) for o in outs]
    assert len(set(run_ids)) == 2 and all(instance.get_run_by_id(r).job_name == "session_job_dask" for r in run_ids)

    # every step ran, in a Dask worker process, the pooled encoder step included
    for run_id in run_ids:
        starts = instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)
        assert "haadf_embeddings" in {e.step_key for e in starts}
        assert {e.dagster_event.pid for e in starts} <= worker_pids
    # pool gpu (limit 1): the two runs' encoder steps never overlap
    (s1, e1), (s2, e2) = intervals(instance, run_ids, "haadf_embeddings")
    assert e1 <= s2, f"encoder steps overlapped: {(s1, e1)} and {(s2, e2)}"

    a, b = data_tables(lakes["inproc"]), data_tables(lakes["dask"])
    assert set(a) == set(b) and {"chips", "haadf_embeddings", "feature_sets"} <= set(a), (set(a), set(b))
    for name in a:
        assert a[name].shape == b[name].shape, name
        differ = [c for c in a[name].columns if not a[name][c].equals(b[name][c])]
        assert not differ, f"{name}: columns {differ} differ"
    assert set(lakes["dask"].query("select distinct run_id from materializations")["run_id"]) == set(run_ids)
