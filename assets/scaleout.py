"""Scale-out: the same session assets, executed step by step on a Dask cluster (`dagster-dask`).

`session_job_dask` selects exactly the assets of `session_job` (SESSION_ASSETS, with their checks) and
swaps only the executor: every step is submitted as a Dask task that reconstructs the job from this
code location (`assets.definitions`) in a Dask worker process and writes to the same lake and the same
Dagster instance. Nothing in the asset code changes.

Where the cluster comes from (run config `execution.config.cluster`):

- default: `existing.address` from the environment variable MMLAKE_DASK_SCHEDULER
  (e.g. `tcp://10.0.0.5:8786`, a `dask scheduler` you started, or a dask-jobqueue / dask-kubernetes
  cluster's scheduler address);
- `dask_run_config(address, lake_home)` builds the same config in Python (the tests use a
  `LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)`,
  standing in for a real cluster).

Requirements on the workers: this project installed (same versions: `pip install -e .`), the lake
folder (MMLAKE_HOME or the `lake` resource's `home`) and DAGSTER_HOME storage on a shared filesystem
reachable at the same paths, and one thread per worker (Dagster steps are not thread-safe).
"""

from __future__ import annotations

import os
from typing import Any

from dagster import Field, Permissive, Selector, StringSource, define_asset_job, executor
from dagster import multiple_process_executor_requirements

from assets.partitions import session_partitions

DASK_JOB_NAME = "session_job_dask"
SCHEDULER_ENV = "MMLAKE_DASK_SCHEDULER"


def dask_run_config(address: str | None = None, lake_home: str | os.PathLike | None = None) -> dict[str, Any]:
    """Run config for `session_job_dask`: the scheduler address (default: $MMLAKE_DASK_SCHEDULER),
    and optionally the lake folder (sent to the workers with the run config)."""
    cluster = {"existing": {"address": address if address else {"env": SCHEDULER_ENV}}}
    cfg: dict[str, Any] = {"execution": {"config": {"cluster": cluster}}}
    if lake_home is not None:
        cfg["resources"] = {"lake": {"config": {"home": str(lake_home)}}}
    return cfg


_CLUSTERS = {"local": "Local", "yarn": "YARN", "ssh": "SSH", "pbs": "PBS", "moab": "Moab", "sge": "SGE",
             "lsf": "LSF", "slurm": "SLURM", "oar": "OAR", "kube": "Kubernetes"}


@executor(
    name="dask",
    requirements=multiple_process_executor_requirements(),
    config_schema={"cluster": Field(Selector({
        "existing": Field({"address": StringSource}, description="Connect to an existing scheduler."),
        **{k: Field(Permissive(), is_required=False, description=f"{label} cluster configuration.")
           for k, label in _CLUSTERS.items()},
    }))},
)
def dask_executor(init_context):
    """dagster-dask's `dask_executor`, imported when a run uses it: importing `dagster_dask` costs
    ~1 s (it imports dask.dataframe), which every process loading the code location (the CLI, the
    webserver, each step) paid before. Same name and config schema (tests/test_scaleout.py checks
    it against dagster-dask's own)."""
    from dagster_dask.executor import DaskExecutor

    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return DaskExecutor(cluster_type, cluster_configuration)


def build_dask_job(selection):
    """The session assets under the Dask executor (same selection as `session_job`)."""
    return define_asset_job(
        DASK_JOB_NAME, selection=selection, partitions_def=session_partitions,
        executor_def=dask_executor, config=dask_run_config(),
        description="session_job on a Dask cluster: every step is a Dask task (dagster-dask). "
                    f"Scheduler address from ${SCHEDULER_ENV}; see docs/operations.md.",
        tags={"mmlake/executor": "dask"},
    )
