"""Shared fixtures: temporary lakes and Dagster instances, tiny hand-made sessions, real vendor files."""

import os
import signal
import subprocess
import sys
import time
import uuid
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore")

# A shell that starts `make test` in the background (CI runners, `nohup`, `&` without job control)
# hands pytest SIGINT ignored; Dagster then maps SIGTERM to the same SIG_IGN (setup_interrupt_handlers)
# and every child inherits it: the `tail -F` compute-log mirrors it terminates at the end of a step
# never die (and each step waits 30 s for them). Restore the defaults before anything starts.
for _sig, _handler in ((signal.SIGINT, signal.default_int_handler), (signal.SIGTERM, signal.SIG_DFL)):
    if signal.getsignal(_sig) == signal.SIG_IGN:
        signal.signal(_sig, _handler)
# Every process the suite starts, directly or not, inherits this token: the session guard below
# finds the ones still alive at the end, even after they were re-parented to init.
SUITE_TOKEN = uuid.uuid4().hex
os.environ["MMLAKE_SUITE_TOKEN"] = SUITE_TOKEN
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "hyperspy-1.7.6"
WHEEL_FILES = {
    "hyperspy/tests/io/emd_files/fei_emd_files.zip": "fei_emd_files.zip",
    "hyperspy/tests/io/bruker_data/test_TEM.bcf": "test_TEM.bcf",
}
# formats (tests/test_formats.py): FEI TIA .emi + .ser, JEOL .pts / .asw (with its view files), TIFF exports
_IO = "hyperspy/tests/io/"
WHEEL_FILES.update({
    **{f"{_IO}FEI_new/16x16-diffraction_imagel_5x5x256x256_EDS{s}": f"tia/si_eds{s}"
       for s in (".emi", "_1.ser", "_2.ser")},
    **{f"{_IO}FEI_old/16x16_STEM_BF_DF_acquire{s}": f"tia/bf_df{s}" for s in (".emi", "_1.ser", "_2.ser")},
    f"{_IO}FEI_new/16x16-spectrum_image_5x5x4000-not_square_1.ser": "tia/not_square_1.ser",
    f"{_IO}JEOL_files/InvalidFrame/Sample/00_Dummy-Data/Dummy-Data_0000023.pts": "jeol/Dummy-Data_0000023.pts",
    f"{_IO}JEOL_files/rawdata.ASW": "jeol/asw/rawdata.ASW",
    **{f"{_IO}JEOL_files/Sample/00_View000/View000_000000{i}.{ext}": f"jeol/asw/Sample/00_View000/View000_000000{i}.{ext}"
       for i, ext in enumerate(["img", "map", "map", "map", "map", "map", "pts"])},
    f"{_IO}tiff_files/test_loading_image_saved_with_imageJ.tif": "tiff/imagej.tif",
    f"{_IO}tiff_files/test_loading_image_saved_with_imageJ_no_scale.tif": "tiff/imagej_no_scale.tif",
    f"{_IO}tiff_files/test_loading_image_saved_with_DM.tif": "tiff/dm.tif",
    f"{_IO}tiff_files/optical_Zeiss_AxioVision_RGB.tif": "tiff/zeiss_rgb.tif",
    f"{_IO}tiff_files/tiff_FEI_Helios.zip": "tiff/tiff_FEI_Helios.zip",
})


@pytest.fixture(scope="session")
def real_files() -> Path:
    """Real vendor test files from the hyperspy 1.7.6 wheel (never installed): Velox .emd, Bruker .bcf,
    TIA .emi/.ser, JEOL .pts/.asw, TIFF exports (WHEEL_FILES: wheel member -> path under the folder)."""
    import fcntl

    done = CACHE / "files" / ".extracted"
    CACHE.mkdir(parents=True, exist_ok=True)
    with open(CACHE / ".lock", "w") as lock:  # pytest-xdist workers: one fetches, the others wait
        fcntl.flock(lock, fcntl.LOCK_EX)
        _fetch_real_files(done)
    return CACHE / "files"


def _fetch_real_files(done: Path) -> None:
    if not done.exists() or not all((CACHE / "files" / n).exists() for n in WHEEL_FILES.values()):
        wheels = list(CACHE.glob("hyperspy-1.7.6-*.whl"))
        if not wheels:
            subprocess.run([sys.executable, "-m", "pip", "download", "hyperspy==1.7.6", "--no-deps",
                            "--only-binary=:all:", "--python-version", "3.11", "--platform",
                            "manylinux2014_x86_64", "-d", str(CACHE), "-q"], check=True)
            wheels = list(CACHE.glob("hyperspy-1.7.6-*.whl"))
        out = CACHE / "files"
        out.mkdir(exist_ok=True)
        with zipfile.ZipFile(wheels[0]) as whl:
            for member, name in WHEEL_FILES.items():
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes(whl.read(member))
        with zipfile.ZipFile(out / "fei_emd_files.zip") as z:
            z.extractall(out / "emd")
        with zipfile.ZipFile(out / "tiff" / "tiff_FEI_Helios.zip") as z:
            z.extractall(out / "tiff")
        done.touch()


@pytest.fixture
def lake(tmp_path):
    from mmlake.lake import Lake

    return Lake(tmp_path / "lake").ensure()


@pytest.fixture(scope="session")
def instance_template(tmp_path_factory) -> Path:
    """An empty Dagster instance folder (SQLite run/event/schedule storage with its schema), made once:
    creating the storages (schema + migrations) takes 1-3 s, copying the files a millisecond."""
    from dagster import instance_for_test

    root = tmp_path_factory.mktemp("dagster-template") / "dagster"
    root.mkdir()
    with instance_for_test(temp_dir=str(root)) as inst:
        inst.get_runs(limit=1)
        inst.get_run_records(limit=1)
    return root


@pytest.fixture
def instance(tmp_path, instance_template):
    """A persistent Dagster instance in a temp folder (works with the multiprocess executor), each
    test with its own copy of the empty template storage."""
    import shutil

    from dagster import instance_for_test

    shutil.copytree(instance_template, tmp_path / "dagster")
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


@pytest.fixture(scope="session")
def demo_lake(tmp_path_factory):
    """The embedded demo campaign (preprint Table II), built and materialized once through Dagster."""
    from dagster import DagsterInstance

    from assets.runner import ingest
    from mmlake.lake import Lake
    from mmlake.synth import build_demo_campaign

    root = tmp_path_factory.mktemp("demo")
    lake = Lake(root / "lake").ensure()
    folders = build_demo_campaign(root / "sessions", progress=lambda *a: None)
    outcomes = ingest(folders, lake, DagsterInstance.ephemeral(), progress=lambda m: None, log_level="WARNING")
    assert all(o.ok for o in outcomes), outcomes
    return lake

def suite_processes(token: str = SUITE_TOKEN) -> list:
    """Live processes (zombies aside) other than this one whose environment carries the token."""
    import psutil

    out = []
    for p in psutil.process_iter(["pid"]):
        if p.pid == os.getpid():
            continue
        try:
            if p.environ().get("MMLAKE_SUITE_TOKEN") == token and p.status() != psutil.STATUS_ZOMBIE:
                out.append(p)
        except (psutil.NoSuchProcess, psutil.AccessDenied, psutil.ZombieProcess):
            continue
    return out


def stop_forkserver() -> None:
    """Stop this process's multiprocessing forkserver (the multiprocess executor's, with
    assets.definitions preloaded), which otherwise lives until pytest exits."""
    from multiprocessing import forkserver

    server = getattr(forkserver, "_forkserver", None)
    if server is not None and getattr(server, "_forkserver_pid", None) and hasattr(server, "_stop"):
        server._stop()


def stop_multiprocessing_helpers() -> None:
    """The forkserver and multiprocessing's resource tracker (started by the forkserver/spawn
    start methods: the multiprocess executor, Dask's nannies) live until pytest exits; stop them
    (both restart on demand), so that what is left after the suite is a real leak."""
    from multiprocessing import resource_tracker

    stop_forkserver()
    tracker = getattr(resource_tracker, "_resource_tracker", None)
    if tracker is not None and getattr(tracker, "_pid", None) and hasattr(tracker, "_stop"):
        tracker._stop()


@pytest.fixture(scope="session", autouse=True)
def no_process_outlives_the_suite():
    """After the last test (and every other session fixture's teardown: this one is set up first),
    no process started by the suite may still run. Leftovers are listed, killed by pid, and fail
    the run (as an error at the teardown of the last test)."""
    yield
    stop_multiprocessing_helpers()
    deadline = time.monotonic() + 30  # processes that are exiting (a cluster closing, a server stopping)
    left = suite_processes()
    while left and time.monotonic() < deadline:
        time.sleep(0.5)
        left = suite_processes()
    if left:
        described = []
        for p in left:
            try:
                described.append(f"{p.pid} (parent {p.ppid()}): {' '.join(p.cmdline())[:160]}")
                p.kill()
            except Exception:
                continue
        pytest.fail(f"{len(described)} process(es) started by the test suite outlived it (killed now):\n"
                    + "\n".join(described), pytrace=False)


from tests.dagster_server import dagster_server  # noqa: E402,F401  (session-scoped `dagster dev` for the slow e2e/UI tests)
from tests.postgres_server import postgres_server  # noqa: E402,F401  (session-scoped PostgreSQL for the DuckLake catalog tests)


@pytest.fixture(autouse=True)
def lake_catalog_under_test(request, monkeypatch):
    """`MMLAKE_TEST_CATALOG=sqlite|postgres pytest ...` runs the chosen tests on a DuckLake catalog:
    every Lake the test (or a process it starts) opens without naming a catalog uses it -- sqlite: a
    catalog.sqlite in each lake folder; postgres: a fresh database of the session's server per test.
    Unset (the default), lakes are the single DuckDB file."""
    kind = os.environ.get("MMLAKE_TEST_CATALOG", "")
    if kind in ("", "duckdb"):
        yield
        return
    if kind == "postgres":
        value = "postgres:" + request.getfixturevalue("postgres_server").database()
    elif kind == "sqlite":
        value = "sqlite"
    else:
        raise pytest.UsageError(f"MMLAKE_TEST_CATALOG={kind!r}: use duckdb, sqlite or postgres")
    monkeypatch.setenv("MMLAKE_CATALOG", value)
    yield


# pytest-xdist (`make test` runs two workers, --dist loadgroup): tests that share an expensive
# session-scoped fixture run in one worker, so it is built once, not once per worker.
_XDIST_GROUPS = {"demo_lake": "demo_lake", "dagster_server": "dagster_server", "postgres_server": "postgres_server"}


@pytest.hookimpl(tryfirst=True)  # before xdist's own hook, which turns the mark into a node id suffix
def pytest_collection_modifyitems(config, items):
    for item in items:
        for fixture, group in _XDIST_GROUPS.items():
            if fixture in getattr(item, "fixturenames", ()):
                item.add_marker(pytest.mark.xdist_group(group))
                break


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    """A test skipped for missing `../shared/data` fails wherever that folder exists (the project's
    machines, CI): a skip there would hide that the data moved or the test lost its path."""
    from tests.shared_data import SHARED_DATA, SKIP_PREFIX

    outcome = yield
    rep = outcome.get_result()
    if rep.skipped and SKIP_PREFIX in str(rep.longrepr) and SHARED_DATA.is_dir():
        rep.outcome = "failed"
        rep.longrepr = (f"{item.nodeid}: {SHARED_DATA} exists but this test's data is missing "
                        f"({rep.longrepr[-1] if isinstance(rep.longrepr, tuple) else rep.longrepr}); "
                        "restore it, or fix the path the test reads")
