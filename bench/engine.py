"""Distributed engines for the session job (issue 16, part 3), measured in one process tree.

  python bench/engine.py pick   two tiny sessions at once, steps raw_session, chips,
                                haadf_embeddings (pool `gpu`), eds_features: dagster-dask
                                (assets.scaleout, LocalCluster of 2 single-thread workers) against
                                dagster-ray 0.4.8 (`ray_executor`, a local Ray head with 2 CPUs);
                                needs `ray[default]==2.60.0` and `dagster-ray==0.4.8` importable
                                (they are not project dependencies: PYTHONPATH=/path/to/them)
  python bench/engine.py demo [dask|multiprocess]
                                the demo campaign (4 sessions, `mmlake demo`'s), the whole session
                                job: the 4 runs at once on the Dask engine against the 4 runs one
                                after another with the multiprocess executor (`mmlake ingest`'s way
                                on one machine, each run's steps in parallel processes)

Each engine gets its own lake and Dagster instance (pool `gpu` limited to 1 in both); prints wall
seconds (cluster start apart) and the 1-minute load average before and after, as JSON lines.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
# Started in the background (`&`, nohup) a process gets SIGINT ignored; Dagster then maps SIGTERM to
# SIG_IGN too and every child inherits it, so a step's multiprocessing pool can never be terminated
# (louvain's forked workers: the step hangs in Pool.terminate). Restore the defaults, as tests/conftest.py does.
for _sig, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

PICK_STEPS = ("raw_session", "chips", "haadf_embeddings", "eds_features")
ENCODER = {"device": "cpu", "haadf_encoders": ["fft"], "batch_size": 64}
RAY_JOB = "session_job_ray"


def load() -> float:
    return round(os.getloadavg()[0], 2)


def ray_job_def():
    """`session_job` under dagster-ray's executor (only for this bench: reconstructable from this file)."""
    from dagster import Definitions, define_asset_job
    from dagster_ray import ray_executor

    from assets.definitions import SESSION_ASSETS, defs
    from assets.partitions import session_partitions

    job = define_asset_job(RAY_JOB, selection=SESSION_ASSETS, partitions_def=session_partitions,
                           executor_def=ray_executor)
    return Definitions.merge(defs, Definitions(jobs=[job])).resolve_job_def(RAY_JOB)


def setup(root: Path, folders, name: str):
    """A lake and a persistent instance (pool gpu = 1) with the sessions registered; partition keys."""
    from dagster import DagsterInstance

    from assets.partitions import add_session_partitions
    from mmlake.lake import Lake
    from mmlake.store import register_source

    lake = Lake(root / f"lake_{name}").ensure()
    (root / f"dagster_{name}").mkdir(parents=True, exist_ok=True)
    instance = DagsterInstance.local_temp(str(root / f"dagster_{name}"))
    instance.event_log_storage.set_concurrency_slots("gpu", 1)
    keys = add_session_partitions(instance, [register_source(lake, f).manifest for f in folders])
    return lake, instance, keys


def run_one(target: str, key: str, instance_ref: str, run_config: str, selection: str) -> int:
    """`engine.py run-one ...`: one run in this process (the runs of one engine go in parallel
    processes: Dagster's run set-up reconfigures logging and deadlocks in threads)."""
    from dagster import AssetKey, DagsterInstance, execute_job, reconstructable
    from dagster._core.instance.ref import InstanceRef
    from dagster._serdes import deserialize_value

    from assets.partitions import partition_tags
    from assets.targets import dask_job_def, session_job_def

    recon = reconstructable({"dask": dask_job_def, "multiprocess": session_job_def, "ray": ray_job_def}[target])
    sel = [AssetKey(k) for k in selection.split(",") if k] or None
    with DagsterInstance.from_ref(deserialize_value(instance_ref, InstanceRef)) as inst, execute_job(
            recon, instance=inst, tags=partition_tags(key), run_config=json.loads(run_config),
            asset_selection=sel) as res:
        if not res.success:
            print("FAILED", [e.message for e in res.all_events if e.is_failure][:3], flush=True)
        return 0 if res.success else 1


def run_all(target, instance, keys, run_config, selection=None, concurrent=True, env=None) -> dict:
    """One run per partition key (all at once, or one after another), each in its own process."""
    from dagster._serdes import serialize_value

    ref = serialize_value(instance.get_ref())

    def start(key):
        return subprocess.Popen([sys.executable, str(Path(__file__).resolve()), "run-one", target, str(key), ref,
                                 json.dumps(run_config), ",".join(selection or ())], cwd=REPO, env=env,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)

    t0, outs = time.monotonic(), []
    if concurrent:
        procs = [start(k) for k in keys]
        outs = [(p, p.communicate()[0]) for p in procs]
    else:
        for k in keys:
            p = start(k)
            outs.append((p, p.communicate()[0]))
    errors = [o[-1500:] for p, o in outs if p.returncode != 0]
    return {"wall_s": round(time.monotonic() - t0, 1), "ok": not errors, "errors": errors[:2]}


def dask_engine(root, folders, selection=None, encoder=None) -> dict:
    from dask.distributed import Client, LocalCluster

    from assets.scaleout import dask_run_config

    lake, instance, keys = setup(root, folders, "dask")
    t0 = time.monotonic()
    with LocalCluster(n_workers=2, threads_per_worker=1, processes=True, host="127.0.0.1",
                      dashboard_address=None) as cluster, Client(cluster):
        start_s = round(time.monotonic() - t0, 1)
        cfg = dask_run_config(cluster.scheduler_address, lake.home)
        if encoder:
            cfg["resources"]["encoder"] = {"config": encoder}
        before = load()
        res = run_all("dask", instance, keys, cfg, selection)
    return {"engine": "dask", "cluster_start_s": start_s, **res, "load_before": before, "load_after": load()}


def ray_engine(root, folders, selection=None, encoder=None) -> dict:
    """dagster-ray's executor: every step a Ray job (`dagster api execute_step` on the Ray head)."""

    lake, instance, keys = setup(root, folders, "ray")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH", "")]))}
    ray = [str(Path(sys.executable).parent / "python"), "-m", "ray.scripts.scripts"]
    t0 = time.monotonic()
    subprocess.run([*ray, "start", "--head", "--num-cpus=2", "--include-dashboard=true",
                    "--dashboard-host=127.0.0.1", "--dashboard-port=8265", "--port=6390",
                    "--disable-usage-stats", f"--temp-dir={root / 'ray'}"], env=env, check=True,
                   capture_output=True)
    try:
        from ray.job_submission import JobSubmissionClient

        deadline = time.monotonic() + 120
        while True:  # the job server answers some seconds after `ray start` returns
            try:
                JobSubmissionClient("http://127.0.0.1:8265").list_jobs()
                break
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        start_s = round(time.monotonic() - t0, 1)
        cfg = {"execution": {"config": {"ray": {"address": "http://127.0.0.1:8265", "num_cpus": 1}}},
               "resources": {"lake": {"config": {"home": str(lake.home)}}}}
        if encoder:
            cfg["resources"]["encoder"] = {"config": encoder}
        before = load()
        res = run_all("ray", instance, keys, cfg, selection, env=env)
    finally:
        subprocess.run([*ray, "stop", "--force"], env=env, capture_output=True)
    return {"engine": "ray", "cluster_start_s": start_s, **res, "load_before": before, "load_after": load()}


def multiprocess_engine(root, folders, selection=None, encoder=None) -> dict:
    lake, instance, keys = setup(root, folders, "multiprocess")
    cfg = {"resources": {"lake": {"config": {"home": str(lake.home)}}}}
    if encoder:
        cfg["resources"]["encoder"] = {"config": encoder}
    before = load()
    res = run_all("multiprocess", instance, keys, cfg, selection, concurrent=False)
    return {"engine": "multiprocess (runs one after another)", **res, "load_before": before, "load_after": load()}


def main(argv: list[str]) -> int:
    mode = argv[0] if argv else "pick"
    if mode == "run-one":
        return run_one(*argv[1:6])
    root = Path(tempfile.mkdtemp(prefix="mmlake-engine-"))
    try:
        if mode == "pick":
            from tests.sessions import make_tiny_session

            folders = [make_tiny_session(root / f"s{i}", sample=f"s{i}", haadf_shape=(24, 32), eds_shape=(24, 32),
                                         chip_px=8, seed=i) for i in range(2)]
            engines = [dask_engine, ray_engine]
            kw = {"selection": PICK_STEPS, "encoder": ENCODER}
        elif mode == "demo":
            from mmlake.synth import build_demo_campaign

            folders = build_demo_campaign(root / "sessions", progress=None)
            engines = [dask_engine, multiprocess_engine]
            engines = [e for e in engines if e.__name__.split("_")[0] in (argv[1:] or ["dask", "multiprocess"])]
            kw = {}
        else:
            print(__doc__)
            return 2
        print(json.dumps({"mode": mode, "sessions": len(folders), "cpus": os.cpu_count(), "load": load()}), flush=True)
        for engine in engines:
            try:
                print(json.dumps(engine(root, folders, **kw)), flush=True)
            except Exception as exc:
                print(json.dumps({"engine": engine.__name__, "failed": repr(exc)[:500]}), flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
