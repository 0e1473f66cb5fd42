"""Scale-out: the session assets run under the dagster-dask executor on a dask.distributed
LocalCluster (2 worker processes on loopback, standing for a real cluster) and store exactly the rows
the default multiprocess executor stores."""

import os
import time

import polars as pl
import pytest
from dagster import AssetKey, DagsterEventType, execute_job, reconstructable

from assets.partitions import add_session_partitions
from assets.partitions import partition_tags
from assets.scaleout import dask_run_config
from assets.targets import dask_job_def, session_job_def
from mmlake.lake import Lake
from mmlake.store import register_source
from tests.sessions import make_tiny_session

SELECTION = [AssetKey("raw_session"), AssetKey("chips")]


def table(lake: Lake, name: str, order: str) -> pl.DataFrame:
    return lake.query(f"select * exclude (materialization_id) from {name} order by {order}")


def test_lazy_dask_executor_is_dagster_dasks():
    """assets.scaleout defines the executor without importing dagster-dask (~1 s, dask.dataframe) at
    code-location load; its name, config schema and requirements must stay dagster-dask's own."""
    import subprocess
    import sys

    from dagster_dask import dask_executor as upstream

    from assets.scaleout import dask_executor

    assert dask_executor.name == upstream.name
    assert dask_executor.config_schema.config_type.key == upstream.config_schema.config_type.key
    assert dask_executor.get_requirements(None) == upstream.get_requirements(None)
    code = "import sys, assets.definitions; print('dagster_dask' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


def _wait_gone(pids, timeout: float = 60.0) -> set:
    import psutil

    deadline = time.monotonic() + timeout
    alive = set(pids)
    while alive and time.monotonic() < deadline:
        alive = {p for p in alive if psutil.pid_exists(p) and psutil.Process(p).status() != psutil.STATUS_ZOMBIE}
        time.sleep(0.2)
    return alive


@pytest.mark.slow
def test_dask_executor_stores_the_same_rows_as_the_default_executor(tmp_path, instance):
    from dask.distributed import Client, LocalCluster

    from tests.conftest import stop_forkserver

    folder = make_tiny_session(tmp_path / "dask_session", sample="dask", haadf_shape=(40, 48),
                               eds_shape=(40, 48), chip_px=8)
    lakes = {name: Lake(tmp_path / f"lake_{name}").ensure() for name in ("default", "dask")}
    manifest = [register_source(lk, folder).manifest for lk in lakes.values()][0]
    (key,) = add_session_partitions(instance, [manifest])
    tags = partition_tags(key)

    with execute_job(reconstructable(session_job_def), instance=instance, tags=tags, asset_selection=SELECTION,
                     run_config={"resources": {"lake": {"config": {"home": str(lakes["default"].home)}}}}) as res:
        assert res.success
    stop_forkserver()  # the multiprocess executor's forkserver (assets.definitions preloaded) is ours to stop

    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster) as client:
        worker_pids = set(client.run(os.getpid).values())
        assert len(worker_pids) == 2 and os.getpid() not in worker_pids
        cfg = dask_run_config(cluster.scheduler_address, lakes["dask"].home)
        with execute_job(reconstructable(dask_job_def), instance=instance, tags=tags, run_config=cfg,
                         asset_selection=SELECTION) as res:
            assert res.success, [e.message for e in res.all_events if e.is_failure]
            run_id = res.run_id
            assert res.dagster_run.job_name == "session_job_dask"
    # the cluster stopped what it started: both worker processes are gone (their children, the steps'
    # compute-log tailers, are checked by the suite guard in tests/conftest.py)
    assert not _wait_gone(worker_pids), f"Dask worker processes still alive: {_wait_gone(worker_pids, 0)}"
    # every step ran in a Dask worker process
    starts = [e for e in instance.all_logs(run_id, of_type=DagsterEventType.STEP_START)]
    assert {e.step_key for e in starts} >= {"raw_session", "chips"}
    assert {e.dagster_event.pid for e in starts} <= worker_pids

    a, b = lakes["default"], lakes["dask"]
    chips_a, chips_b = table(a, "chips", "session_id, chip_index"), table(b, "chips", "session_id, chip_index")
    assert chips_a.height == 5 * 6 and chips_a.equals(chips_b)
    grid_a, grid_b = table(a, "chip_grids", "session_id"), table(b, "chip_grids", "session_id")
    assert grid_a.equals(grid_b)  # includes the sha256 of the stored chip stack and EDS sums
    assert a.query("select session_id, haadf_shape, eds_shape from sessions").equals(
        b.query("select session_id, haadf_shape, eds_shape from sessions"))
    # provenance: the dask run wrote the ledger rows of its lake
    assert set(b.query("select distinct run_id from materializations")["run_id"]) == {run_id}
