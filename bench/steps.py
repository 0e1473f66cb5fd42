"""Per-step overhead of Dagster's multiprocess executor on one small session (4 session assets).

Runs `dagster asset materialize` for raw_session, chips, haadf_embeddings and eds_features of a
tiny (32 x 32 px) session three ways, twice each, in one process tree:
  spawn                  every step a fresh `python` that imports Dagster + the code location
  forkserver (default)   steps forked from a server with assets.definitions, hyperspy, exspy preloaded
  in_process             all steps in the run process (no isolation between steps)
Prints wall seconds per run and the ratio to spawn.  Usage: python bench/steps.py
"""

import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

MODES = {
    "spawn": {"execution": {"config": {"multiprocess": {"start_method": {"spawn": {}}}}}},
    "forkserver (default)": {},
    "in_process": {"execution": {"config": {"in_process": {}}}},
}


def main() -> None:
    from dagster import DagsterInstance

    from assets.partitions import add_session_partitions
    from mmlake.lake import Lake
    from mmlake.store import register_source
    from tests.sessions import make_tiny_session

    root = Path(tempfile.mkdtemp(prefix="mmlake-steps-"))
    lake = Lake(root / "lake").ensure()
    manifest = register_source(lake, make_tiny_session(root / "s", sample="tiny")).manifest
    (root / "dh").mkdir()
    (root / "dh" / "dagster.yaml").write_text("telemetry:\n  enabled: false\n")
    os.environ["DAGSTER_HOME"] = str(root / "dh")
    key = add_session_partitions(DagsterInstance.get(), [manifest])[0]
    env = {**os.environ, "MMLAKE_HOME": str(lake.home)}
    dagster = str(Path(sys.executable).parent / "dagster")
    best = {}
    for mode, config in MODES.items():
        times = []
        for _ in range(2):
            t0 = time.perf_counter()
            subprocess.run([dagster, "asset", "materialize", "-m", "assets.definitions", "--select",
                            "raw_session,chips,haadf_embeddings,eds_features", "--partition", str(key),
                            "--config-json", json.dumps(config)], env=env, cwd=REPO, check=True,
                           capture_output=True)
            times.append(time.perf_counter() - t0)
        best[mode] = min(times)
        print(f"{mode:22s} runs: {', '.join(f'{t:.1f}' for t in times)} s", flush=True)
    print(f"\n{'mode':22s} {'best s':>7s} {'vs spawn':>9s}")
    for mode, t in best.items():
        print(f"{mode:22s} {t:7.1f} {best['spawn'] / t:8.2f}x")


if __name__ == "__main__":
    main()
