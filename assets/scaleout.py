"""Scale-out: the same session assets, executed step by step on a Dask cluster (`dagster-dask`).

`session_job_dask` selects exactly the assets of `session_job` (SESSION_ASSETS, with their checks,
the `gpu`-pooled encoder step `haadf_embeddings` included) and swaps only the executor: every step is
submitted as a Dask task that reconstructs the job from this code location (`assets.definitions`) in
a Dask worker process and writes to the same lake and the same Dagster instance. Nothing in the asset
code changes. docs/operations.md ("Distributed engine") has the commands for a real cluster.

Where the cluster comes from (run config `execution.config.cluster`):

- default: `existing.address` from the environment variable MMLAKE_DASK_SCHEDULER
  (e.g. `tcp://10.0.0.5:8786`, a `dask scheduler` you started, or a dask-jobqueue / dask-kubernetes
  cluster's scheduler address);
- `dask_run_config(address, lake_home)` builds the same config in Python (the tests use a
  `LocalCluster(n_workers=2, threads_per_worker=1, host="127.0.0.1", dashboard_address=None)`,
  standing in for a real cluster).

What `MmlakeDaskExecutor` changes in dagster-dask 0.29.27's `DaskExecutor` (subclassed, not forked;
only `execute` is overridden, the cluster types and `build_dict` are upstream's):

1. **Pooled steps run.** Upstream passes the `DagsterRun` (a NamedTuple) and the known state to
   `client.submit` as plain arguments; dask 2026.8's task-spec parser walks tuples, and a run with a
   pooled step carries a `RunOpConcurrency` @record that refuses iteration (`Iteration is not allowed
   on @record RunOpConcurrency`), so every run holding the encoder step failed. Here everything but
   the dependency futures travels in one opaque `StepPayload` that dask does not look into.
2. **Pools hold across runs and engines.** Upstream's worker calls `execute_plan` without an instance
   concurrency context, so pool limits were never claimed. Here the worker runs its step through
   Dagster's in-process iterator inside an `InstanceConcurrencyContext`: the step claims a slot of its
   pool in the Dagster instance before it starts and frees it when it ends. The limit is the one
   `dagster instance concurrency set gpu 1` sets, shared by every run on the instance, whichever
   executor (multiprocess, Dask, the UI's runs) — not a Dask resource, which only Dask tasks would
   see and which hangs a task forever on a cluster whose workers do not declare it. A step waiting
   for a slot holds its Dask worker meanwhile (one thread per worker: no other step starts there).
3. **Run ids in task keys.** Upstream's key is `<job>.<step>`: two runs of one job on one scheduler
   got the same key and the second run's step was answered with the first run's result. Here it is
   `<job>.<run_id>.<step>`.

Requirements on the workers: this project installed (same versions: `pip install -e .`), the lake
folder (MMLAKE_HOME or the `lake` resource's `home`) and DAGSTER_HOME storage on a shared filesystem
reachable at the same paths, and one thread per worker (Dagster steps are not thread-safe).
"""

from __future__ import annotations

import importlib
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
# the cluster class of each cluster type, as dagster-dask's DaskExecutor.execute imports them
_CLUSTER_CLASSES = {"local": "dask.distributed:LocalCluster", "yarn": "dask_yarn:YarnCluster",
                    "ssh": "dask.distributed:SSHCluster", "pbs": "dask_jobqueue:PBSCluster",
                    "moab": "dask_jobqueue:MoabCluster", "sge": "dask_jobqueue:SGECluster",
                    "lsf": "dask_jobqueue:LSFCluster", "slurm": "dask_jobqueue:SLURMCluster",
                    "oar": "dask_jobqueue:OARCluster", "kube": "dask_kubernetes:KubeCluster"}


def dask_task_key(job_name: str, run_id: str, step_key: str) -> str:
    """The Dask key of one step of one run (unique on a scheduler shared by many runs)."""
    return f"{job_name}.{run_id}.{step_key}"


class StepPayload:
    """What a Dask task needs to run one step, in one plain object dask's task-spec parser does not
    walk (it iterates tuples, and a `DagsterRun` is one; it unpacks dataclasses too, hence a plain
    class). See the module docstring."""

    __slots__ = ("recon_job", "dagster_run", "run_config", "step_keys", "instance_ref", "known_state")

    def __init__(self, recon_job, dagster_run, run_config, step_keys, instance_ref, known_state):
        self.recon_job, self.dagster_run, self.run_config = recon_job, dagster_run, run_config
        self.step_keys, self.instance_ref, self.known_state = step_keys, instance_ref, known_state


def execute_step_on_dask_worker(dependencies: Any, payload: StepPayload) -> str:
    """Run `payload.step_keys` of the run in this Dask worker, claiming pool slots in the instance;
    returns the step's events serialized (a string Dask can size, unlike a list of DagsterEvents).

    `dependencies` (the upstream steps' futures, resolved by Dask) only sequence the tasks."""
    from dagster import DagsterInstance
    from dagster._serdes import serialize_value
    from dagster._core.definitions.reconstruct import ReconstructableJob
    from dagster._core.execution.api import ExecuteRunWithPlanIterable, create_execution_plan
    from dagster._core.execution.context_creation_job import PlanExecutionContextManager
    from dagster._core.execution.retries import RetryMode
    from dagster._core.executor.in_process import inprocess_execution_iterator

    run = payload.dagster_run
    with DagsterInstance.from_ref(payload.instance_ref) as instance:
        job = payload.recon_job.get_subset(op_selection=run.resolved_op_selection)
        plan = create_execution_plan(job, run_config=payload.run_config, step_keys_to_execute=payload.step_keys,
                                     known_state=payload.known_state)
        if isinstance(job, ReconstructableJob):
            job = job.with_repository_load_data(plan.repository_load_data)
        # execute_plan's own iterator, wrapped in an InstanceConcurrencyContext (pool claims)
        return serialize_value(list(ExecuteRunWithPlanIterable(
            execution_plan=plan, iterator=inprocess_execution_iterator,
            execution_context_manager=PlanExecutionContextManager(
                job=job, retry_mode=RetryMode.DISABLED, execution_plan=plan, run_config=payload.run_config,
                dagster_run=run, instance=instance))))


def make_cluster(cluster_type: str, configuration: dict, build_dict):
    """The cluster (or the scheduler address) for a cluster type, as dagster-dask builds it."""
    if cluster_type == "existing":
        return configuration["address"]
    if cluster_type not in _CLUSTER_CLASSES:
        raise ValueError(f"Must be providing one of the following ('existing', {', '.join(map(repr, _CLUSTERS))})"
                         f" not {cluster_type}")
    module, name = _CLUSTER_CLASSES[cluster_type].split(":")
    return getattr(importlib.import_module(module), name)(**build_dict)


_EXECUTOR_CLASS = None


def mmlake_dask_executor_class():
    """`MmlakeDaskExecutor` (defined on first use: importing dagster-dask costs ~1 s)."""
    global _EXECUTOR_CLASS
    if _EXECUTOR_CLASS is not None:
        return _EXECUTOR_CLASS

    import dask.distributed
    from dagster import DagsterEvent
    from dagster import _check as check
    from dagster._core.errors import raise_execution_interrupts
    from dagster._serdes import deserialize_value
    from dagster._utils import iterate_with_context
    from dagster_dask.executor import DaskExecutor, get_dask_resource_requirements

    class MmlakeDaskExecutor(DaskExecutor):
        """dagster-dask's DaskExecutor with pooled steps, pool claims and run ids in task keys."""

        def execute(self, plan_context, execution_plan):
            check.invariant(plan_context.instance.is_persistent,
                            "Dask execution requires a persistent DagsterInstance")
            job_name, run = plan_context.job_name, plan_context.dagster_run
            cluster = make_cluster(self.cluster_type, self.cluster_configuration,
                                   self.build_dict(job_name) if self.cluster_type != "existing" else {})
            instance_ref = plan_context.instance.get_ref()
            with dask.distributed.Client(cluster) as client:
                futures, by_step = [], {}
                for level in execution_plan.get_steps_to_execute_by_level():
                    for step in level:
                        deps = [by_step[k] for inp in step.step_inputs for k in inp.dependency_keys]
                        payload = StepPayload(plan_context.reconstructable_job, run, plan_context.run_config,
                                              [step.key], instance_ref, execution_plan.known_state)
                        future = client.submit(execute_step_on_dask_worker, deps, payload,
                                               key=dask_task_key(job_name, run.run_id, step.key),
                                               resources=get_dask_resource_requirements(step.tags))
                        futures.append(future)
                        by_step[step.key] = future
                done = dask.distributed.as_completed(futures, with_results=True)
                for _future, events in iterate_with_context(raise_execution_interrupts, done):
                    for event in deserialize_value(events, list):
                        yield check.inst(event, DagsterEvent)
                if self.cluster_type != "existing" and hasattr(cluster, "close"):
                    cluster.close()

    _EXECUTOR_CLASS = MmlakeDaskExecutor
    return _EXECUTOR_CLASS


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
    """dagster-dask's `dask_executor` with `MmlakeDaskExecutor` (see the module docstring), imported
    when a run uses it: importing `dagster_dask` costs ~1 s (it imports dask.dataframe), which every
    process loading the code location (the CLI, the webserver, each step) paid before. Same name and
    config schema (tests/test_scaleout.py checks it against dagster-dask's own)."""
    ((cluster_type, cluster_configuration),) = init_context.executor_config["cluster"].items()
    return mmlake_dask_executor_class()(cluster_type, cluster_configuration)


def build_dask_job(selection):
    """The session assets under the Dask executor (same selection as `session_job`)."""
    return define_asset_job(
        DASK_JOB_NAME, selection=selection, partitions_def=session_partitions,
        executor_def=dask_executor, config=dask_run_config(),
        description="session_job on a Dask cluster: every step is a Dask task (dagster-dask, pooled steps "
                    f"claim their pool in the instance). Scheduler address from ${SCHEDULER_ENV}; "
                    "see docs/operations.md.",
        tags={"mmlake/executor": "dask"},
    )


def run_partition(partition_key: str, scheduler: str | None = None, lake_home: str | None = None,
                  instance_ref: str | None = None, selection: list[str] | None = None,
                  extra_config: dict | None = None) -> tuple[bool, str, list[str]]:
    """One `session_job_dask` run of one partition ('dose|sample') on the cluster at `scheduler`
    (default $MMLAKE_DASK_SCHEDULER); (success, run id, failure messages). `instance_ref`: a
    serialized InstanceRef (default: the instance of $DAGSTER_HOME)."""
    from dagster import AssetKey, DagsterInstance, execute_job, reconstructable
    from dagster._serdes import deserialize_value
    from dagster._core.instance.ref import InstanceRef

    from assets.partitions import partition_tags
    from assets.targets import dask_job_def

    cfg = dask_run_config(scheduler, lake_home)
    for key, value in (extra_config or {}).items():
        cfg[key] = {**cfg.get(key, {}), **value}
    instance = (DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) if instance_ref
                else DagsterInstance.get())
    with instance, execute_job(reconstructable(dask_job_def), instance=instance, run_config=cfg,
                               tags=partition_tags(partition_key),
                               asset_selection=[AssetKey(k) for k in selection] if selection else None) as res:
        return res.success, res.run_id, [e.message or "" for e in res.all_events if e.is_failure]


def main(argv: list[str] | None = None) -> int:
    """`python -m assets.scaleout PARTITION_KEY [--scheduler tcp://HOST:8786] [--lake DIR]`: one
    `session_job_dask` run (start one process per partition to run several at once: Dagster's run
    set-up is not thread-safe). Prints `<run id> ok|FAILED`; exit status 0 when the run succeeded."""
    import argparse
    import json

    p = argparse.ArgumentParser(prog="python -m assets.scaleout", description=main.__doc__)
    p.add_argument("partition_key", help="'dose|sample', e.g. '0.1|pristine' (select partition_key from session_sources)")
    p.add_argument("--scheduler", help=f"scheduler address (default ${SCHEDULER_ENV})")
    p.add_argument("--lake", help="the lake folder as the workers see it (default: their MMLAKE_HOME)")
    p.add_argument("--select", help="comma-separated asset keys (default: the whole session job)")
    p.add_argument("--config-json", help="more run config (JSON), merged per top-level key")
    p.add_argument("--instance-ref", help=argparse.SUPPRESS)  # a serialized InstanceRef (tests)
    a = p.parse_args(argv)
    ok, run_id, failures = run_partition(
        a.partition_key, a.scheduler, a.lake, a.instance_ref,
        [s for s in (a.select or "").split(",") if s] or None, json.loads(a.config_json) if a.config_json else None)
    print(f"{run_id} {'ok' if ok else 'FAILED'}")
    for line in failures[:5]:
        print(f"  {line}")
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
