"""One full-size session through `mmlake ingest`: wall, peak RSS and where the time goes.

The session: 512x512 HAADF + 512x512x4096 EDS (uint16, ~40 counts per pixel), chip_px 16 -> 1,024
chips, built once with mmlake.synth into --dir; its EDS cube is then re-saved by HyperSpy exactly as
`save` writes by default (gzip 4 + shuffle, ~1 MB chunks (11, 11, 4096) from rsciio's
get_signal_chunks), so the chips are not aligned with the file's chunks. A 4-chip session (16x16,
chip_px 8) measures the fixed cost.

For each session, with a fresh lake and an initialised Dagster home (instance creation is timed on
its own), the bench runs:

1. `mmlake ingest FOLDER` as a user does: wall seconds and peak RSS (the process's ru_maxrss);
2. the same ingest in an instrumented process (`--child`), which prints the stage breakdown:
   start-up (interpreter until the CLI runs), imports (first-time imports, wherever they happen:
   at start or inside a step), Dagster overhead (inside `materialize` but outside asset code),
   read (register_source's hashing, opening the files, the raw_session count-map pass),
   chips (EDS chip sums, HAADF tiles, truth labels), features (haadf_embeddings, eds_features,
   atom_columns), segmentation (its three methods, agreement), descriptors (region_descriptors,
   region_order): the asset code of those steps, exclusive of the rest (STEP_GROUP; a step it does
   not name counts as "other steps"), writes (DuckDB transactions, object
   files), lake reads (DuckDB queries), thumbnails (the PNG previews in the Dagster UI) and the
   CLI's own remainder. Times are exclusive: a DuckDB write inside the chips step counts as writes.
   Time in Python's cyclic garbage collector is printed too (it falls inside the stages; heavy
   imports pause it and freeze what they built: assets/imports.py).
3. `python -X importtime -c "import assets.definitions"` summed per top-level package.

Targets (issue 12): full-size <= 15 s wall on 2 cores, <= 1.5 GB peak RSS; 4-chip <= 6 s, of which
<= 2 s not imports. The machine is shared: the load average is printed, and two baselines are
measured in the same run (`python -c pass` start-up and `import assets.definitions`).

Usage: python bench/session.py [--dir /tmp/mmlake-bench] [--sessions full tiny] [--repeat 1]
"""

from __future__ import annotations

import argparse
import builtins
import importlib
import json
import os
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
STAGES = ("start-up", "imports", "dagster overhead", "read", "chips", "features", "segmentation",
          "descriptors", "other steps", "writes", "lake reads", "thumbnails", "cli other")
# every session asset's step: its code (exclusive of the stages entered inside it) counts here. A
# step not named (a new asset) counts as "other steps", never as Dagster's overhead.
STEP_GROUP = {"raw_session": "read", "chips": "chips", "haadf_embeddings": "features",
              "eds_features": "features", "atom_columns": "features", "segmentation": "segmentation",
              "agreement": "segmentation", "region_descriptors": "descriptors", "region_order": "descriptors"}


# --- building the sessions -----------------------------------------------------------------------

def build_full(root: Path) -> Path:
    """The full-size session folder (built once; ~1 min)."""
    folder = root / "session_full_512" / "full_0dpa"
    if (folder / "session.yaml").exists() and (folder / ".hyperspy-default-chunks").exists():
        return folder
    import warnings

    warnings.filterwarnings("ignore")
    import numpy as np

    sys.path.insert(0, str(REPO))
    from mmlake.synth import SessionSpec, write_session

    spec = SessionSpec("full", 0.0, chip_px=16, image_px=512, pixel_size_nm=0.05, n_channels=4096,
                       seed=512, campaign="bench_full", defect_domains=True)
    t0 = time.perf_counter()
    folder = write_session(spec, folder.parent)
    print(f"  built {folder} in {time.perf_counter() - t0:.0f} s; re-saving eds.hspy with HyperSpy's defaults ...",
          flush=True)
    import hyperspy.api as hs
    from rsciio._hierarchical import get_signal_chunks

    src = folder / "eds.hspy"
    s = hs.load(src, lazy=True)
    chunks = tuple(get_signal_chunks(s.data.shape, s.data.dtype, [2]))
    rows = chunks[0] * 4  # dask blocks of whole chunk rows: every HDF5 chunk is written once
    s.data = s.data.rechunk((rows, s.data.shape[1], s.data.shape[2]))
    tmp = folder / "eds.default.hspy"
    s.save(tmp, chunks=chunks, overwrite=True, show_progressbar=False)  # compression: HyperSpy's default
    del s
    os.replace(tmp, src)
    (folder / ".hyperspy-default-chunks").write_text(json.dumps({"chunks": chunks}))
    assert np.dtype(hs.load(src, lazy=True).data.dtype) == np.uint16
    return folder


def build_tiny(root: Path) -> Path:
    folder = root / "session_tiny" / "four"
    if not (folder / "session.yaml").exists():
        import warnings

        warnings.filterwarnings("ignore")
        sys.path.insert(0, str(REPO))
        from tests.sessions import make_tiny_session

        make_tiny_session(folder, sample="four", haadf_shape=(16, 16), eds_shape=(16, 16), chip_px=8)
    return folder


# --- the instrumented child ------------------------------------------------------------------------

class Clock:
    """Exclusive wall time per stage: a stage entered inside another is subtracted from it."""

    def __init__(self):
        self.totals = dict.fromkeys(STAGES, 0.0)
        self.stack: list[list] = []
        self.main = threading.get_ident()
        self.step: str | None = None
        self.in_materialize = False

    def enter(self, stage: str) -> None:
        self.stack.append([stage, time.perf_counter(), 0.0])

    def leave(self) -> None:
        stage, t0, inner = self.stack.pop()
        dt = time.perf_counter() - t0
        self.totals[stage] += dt - inner
        if self.stack:
            self.stack[-1][2] += dt

    def timed(self, stage: str, fn):
        clock = self

        def wrapper(*a, **k):
            if threading.get_ident() != clock.main:
                return fn(*a, **k)
            clock.enter(stage)
            try:
                return fn(*a, **k)
            finally:
                clock.leave()

        wrapper.__wrapped__ = fn
        return wrapper


def child(folder: str) -> None:
    t_start = time.perf_counter()
    clock = Clock()
    clock.totals["start-up"] = time.time() - float(os.environ["MMLAKE_BENCH_T0"])
    real_import, real_import_module = builtins.__import__, importlib.import_module

    by_step: dict[str, float] = {}
    import gc

    gc_time, gc_count, gc_t0 = [0.0, 0.0, 0.0], [0, 0, 0], [0.0]

    def gc_clock(phase, info):  # time in the cyclic collector, per generation (inside the stages)
        if phase == "start":
            gc_t0[0] = time.perf_counter()
        else:
            gc_time[info["generation"]] += time.perf_counter() - gc_t0[0]
            gc_count[info["generation"]] += 1

    gc.callbacks.append(gc_clock)

    def importing(fn, *a):
        outer = not any(f[0] == "imports" for f in clock.stack)
        t0 = time.perf_counter()
        clock.enter("imports")
        try:
            return fn(*a)
        finally:
            clock.leave()
            if outer:
                where = clock.step or "start (CLI, code location)"
                by_step[where] = by_step.get(where, 0.0) + time.perf_counter() - t0

    def timed_import(name, globals=None, locals=None, fromlist=(), level=0):
        if level or name in sys.modules or threading.get_ident() != clock.main:
            return real_import(name, globals, locals, fromlist, level)
        return importing(real_import, name, globals, locals, fromlist, level)

    def timed_import_module(name, package=None):
        if name in sys.modules or threading.get_ident() != clock.main:
            return real_import_module(name, package)
        return importing(real_import_module, name, package)

    builtins.__import__, importlib.import_module = timed_import, timed_import_module
    clock.enter("cli other")
    sys.path.insert(0, str(REPO))
    import assets.cli  # noqa: F401  (imports are timed by the hook)
    import assets.definitions  # noqa: F401
    import assets.ingest
    import assets.runner
    import dagster._core.execution.plan.execute_step as execute_step
    import mmlake.chips
    import mmlake.lake
    import mmlake.plots
    import mmlake.store

    lk = mmlake.lake.Lake
    for name, stage in (("replace_partition", "writes"), ("put_file", "writes"), ("put_array", "writes"),
                        ("query", "lake reads"), ("current", "lake reads"), ("require", "lake reads"),
                        ("get_array", "lake reads")):
        if hasattr(lk, name):
            setattr(lk, name, clock.timed(stage, getattr(lk, name)))
    for mod, names, stage in ((mmlake.store, ("register_source", "session_frames", "open_stored_session",
                                              "folder_content"), "read"),
                              (assets.ingest, ("open_session", "open_stored_session", "session_frames"), "read"),
                              (assets.ingest, ("sum_eds_chips", "majority_labels"), "chips"),
                              (assets.runner, ("register_source",), "read")):
        for n in names:
            if hasattr(mod, n):
                setattr(mod, n, clock.timed(stage, getattr(mod, n)))
    mmlake.chips.ChipGrid.tiles = clock.timed("chips", mmlake.chips.ChipGrid.tiles)
    for n in dir(mmlake.plots):
        f = getattr(mmlake.plots, n)
        if callable(f) and not n.startswith("_") and getattr(f, "__module__", "") == "mmlake.plots":
            setattr(mmlake.plots, n, clock.timed("thumbnails", f))
    import dagster

    dagster.materialize = clock.timed("dagster overhead", dagster.materialize)
    for n in ("materialize", "run_assets", "dagster_instance", "add_session_partitions", "partition_guard"):
        if hasattr(assets.runner, n):
            setattr(assets.runner, n, clock.timed("dagster overhead", getattr(assets.runner, n)))
    real_compute = execute_step.execute_core_compute
    steps: dict[str, float] = {}

    def compute(step_context, *a, **k):
        key = step_context.step.key
        group = STEP_GROUP.get(key, "other steps")
        gen = real_compute(step_context, *a, **k)
        t0 = time.perf_counter()
        while True:
            clock.enter(group)
            clock.step = key
            try:
                ev = next(gen)
            except StopIteration:
                return
            finally:
                clock.leave()
                clock.step = None
                steps[key] = time.perf_counter() - t0
            yield ev

    execute_step.execute_core_compute = compute
    rss_by_step: dict[str, float] = {}
    page_mb = os.sysconf("SC_PAGE_SIZE") / 2**20

    def sample_rss() -> None:  # peak resident memory while each step runs
        while True:
            try:
                with open("/proc/self/statm") as fh:
                    rss = int(fh.read().split()[1]) * page_mb
            except OSError:
                return
            where = clock.step or "outside steps"
            if rss > rss_by_step.get(where, 0.0):
                rss_by_step[where] = rss
            time.sleep(0.05)

    threading.Thread(target=sample_rss, daemon=True).start()
    from assets.cli import exit_now, main

    sys.argv = ["mmlake", "ingest", folder]
    rc = 0
    try:
        rc = main(sys.argv[1:])  # with argv main returns; the console script ends with exit_now, as below
    except SystemExit as exc:
        rc = int(exc.code or 0)
    clock.leave()
    ru = resource.getrusage(resource.RUSAGE_SELF)
    print(json.dumps({"rc": rc, "stages": clock.totals, "steps": steps, "imports_by_step": by_step,
                      "rss_by_step": rss_by_step, "gc": [gc_count, gc_time],
                      "wall_in_process": time.perf_counter() - t_start, "peak_rss_mb": ru.ru_maxrss / 1024}),
          flush=True)
    exit_now(rc)  # as `mmlake` itself ends (assets.cli.main)


# --- the parent --------------------------------------------------------------------------------------

def fresh_env(root: Path) -> dict:
    work = Path(tempfile.mkdtemp(prefix="run-", dir=root))
    env = {**os.environ, "MMLAKE_HOME": str(work / "lake"), "DAGSTER_HOME": str(work / "dagster_home"),
           "PYTHONWARNINGS": "ignore"}
    (work / "dagster_home").mkdir(parents=True)
    shutil.copy(REPO / "dagster.yaml", work / "dagster_home" / "dagster.yaml")
    return env


def run_rss(cmd: list[str], env: dict) -> tuple[float, float, float, subprocess.CompletedProcess]:
    """Wall seconds, peak RSS (MB) and CPU seconds (user + system) of one child process."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    chunks = []

    def pump():
        for line in proc.stdout:
            chunks.append(line)

    th = threading.Thread(target=pump, daemon=True)
    th.start()
    _, status, ru = os.wait4(proc.pid, 0)
    wall = time.perf_counter() - t0
    th.join()
    proc.returncode = os.waitstatus_to_exitcode(status)
    return (wall, ru.ru_maxrss / 1024, ru.ru_utime + ru.ru_stime,
            subprocess.CompletedProcess(cmd, proc.returncode, "".join(chunks), ""))


def importtime(env: dict) -> tuple[float, list[tuple[str, float]]]:
    res = subprocess.run([sys.executable, "-X", "importtime", "-c", "import assets.definitions"], env=env, cwd=REPO,
                         capture_output=True, text=True, check=True)
    top: dict[str, float] = {}
    total = 0.0
    for line in res.stderr.splitlines():
        m = re.match(r"import time:\s+(\d+) \|\s+(\d+) \|( *)(\S+)", line)
        if m and len(m.group(3)) == 1:
            us = int(m.group(2)) / 1e6
            total += us
            pkg = m.group(4).split(".")[0]
            top[pkg] = top.get(pkg, 0.0) + us
    return total, sorted(top.items(), key=lambda kv: -kv[1])[:8]


def warm(folder: Path) -> None:
    for f in folder.iterdir():
        if f.is_file():
            with open(f, "rb") as fh:
                while fh.read(16 << 20):
                    pass


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", default="/tmp/mmlake-bench")
    ap.add_argument("--sessions", nargs="+", default=["full", "tiny"], choices=["full", "tiny"])
    ap.add_argument("--repeat", type=int, default=1, help="plain ingests per session (the best is shown)")
    ap.add_argument("--child", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(args.child)
        return
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    runs = root / "session-runs"
    shutil.rmtree(runs, ignore_errors=True)
    runs.mkdir()
    print(f"{os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    env0 = fresh_env(runs)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", "pass"], check=True)
    bare = time.perf_counter() - t0
    total, top = importtime(env0)
    print(f"baselines in this run: `python -c pass` {bare:.2f} s; `import assets.definitions` {total:.2f} s "
          f"(-X importtime; {', '.join(f'{k} {v:.2f}' for k, v in top)})")
    inst = subprocess.run([sys.executable, "-c", "import time; t=time.perf_counter(); from assets.runner import "
                           "dagster_instance; t1=time.perf_counter(); dagster_instance(); "
                           "print(time.perf_counter()-t1)"], env=env0, cwd=REPO, capture_output=True, text=True,
                          check=True)
    print(f"creating a fresh Dagster home's storage (once per DAGSTER_HOME, not counted below): "
          f"{float(inst.stdout.split()[-1]):.2f} s")
    results = {}
    for name in args.sessions:
        folder = build_full(root) if name == "full" else build_tiny(root)
        warm(folder)
        size = sum(f.stat().st_size for f in folder.iterdir() if f.is_file()) / 1e6
        print(f"\n[{name}] {folder} ({size:.0f} MB on disk)", flush=True)
        plain = []
        for _ in range(max(1, args.repeat)):
            env = fresh_env(runs)
            subprocess.run([sys.executable, "-c", "from assets.runner import dagster_instance; dagster_instance()"],
                           env=env, cwd=REPO, check=True, capture_output=True)
            wall, rss, cpu, res = run_rss([str(BIN / "mmlake"), "ingest", str(folder)], env)
            if res.returncode != 0:
                raise SystemExit(f"mmlake ingest failed ({res.returncode}):\n{res.stdout[-3000:]}")
            plain.append((wall, rss, cpu))
            print(f"  mmlake ingest: {wall:.2f} s wall, {cpu:.2f} s CPU (user + system), peak RSS {rss:.0f} MB "
                  f"(load average {os.getloadavg()[0]:.1f})", flush=True)
        env = fresh_env(runs)
        subprocess.run([sys.executable, "-c", "from assets.runner import dagster_instance; dagster_instance()"],
                       env=env, cwd=REPO, check=True, capture_output=True)
        env["MMLAKE_BENCH_T0"] = repr(time.time())
        wall, rss, cpu, res = run_rss([sys.executable, __file__, "--child", str(folder)], env)
        line = [ln for ln in res.stdout.splitlines() if ln.startswith("{\"rc\"")]
        if res.returncode != 0 or not line:
            raise SystemExit(f"instrumented ingest failed:\n{res.stdout[-3000:]}")
        out = json.loads(line[-1])
        if out["rc"] != 0:
            raise SystemExit(f"instrumented ingest failed:\n{res.stdout[-3000:]}")
        best = min(plain)
        st = out["stages"]
        st["exit"] = max(0.0, wall - st["start-up"] - out["wall_in_process"])
        results[name] = {"wall": best[0], "rss": best[1], "cpu": best[2], "stages": st, "steps": out["steps"],
                         "instrumented_wall": wall}
        print(f"  instrumented: {wall:.2f} s wall, {cpu:.2f} s CPU (hooks included); stage breakdown "
              "(exclusive wall seconds):")
        for s in (*STAGES, "exit"):
            print(f"    {s:18s} {st[s]:7.2f}  {100 * st[s] / max(1e-9, wall):5.1f} %")
        print(f"    {'sum':18s} {sum(st.values()):7.2f}")
        print("  asset steps (wall, inclusive): " + ", ".join(f"{k} {v:.2f}" for k, v in out["steps"].items()))
        print("  peak RSS (MB) while each step runs: " + ", ".join(
            f"{k} {v:.0f}" for k, v in sorted(out["rss_by_step"].items(), key=lambda kv: -kv[1])))
        print("  first-time imports by where they happen: " + ", ".join(
            f"{k} {v:.2f}" for k, v in sorted(out["imports_by_step"].items(), key=lambda kv: -kv[1])))
        (n0, n1, n2), (t0_, t1_, t2_) = out["gc"]
        print(f"  cyclic GC (inside the stages above): {t0_ + t1_ + t2_:.2f} s; {n2} full collections "
              f"{t2_:.2f} s, {n1} gen-1 {t1_:.2f} s, {n0} gen-0 {t0_:.2f} s")
    print("\ntargets (machine shared: see the load average; absolute seconds inflated by other work):")
    if "full" in results:
        r = results["full"]
        print(f"  full-size session: {r['wall']:.2f} s wall (target <= 15; {r['cpu']:.2f} s CPU), peak RSS "
              f"{r['rss']:.0f} MB (target <= 1536)")
    if "tiny" in results:
        r = results["tiny"]
        st = r["stages"]
        not_imports = r["instrumented_wall"] - st["imports"] - st["start-up"]
        print(f"  4-chip session: {r['wall']:.2f} s wall (target <= 6; {r['cpu']:.2f} s CPU); instrumented run: "
              f"imports + start-up {st['imports'] + st['start-up']:.2f} s, the rest {not_imports:.2f} s (target <= 2)")
    print(f"load average {os.getloadavg()[0]:.1f} at end")
    shutil.rmtree(runs, ignore_errors=True)


if __name__ == "__main__":
    main()
