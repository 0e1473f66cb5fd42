"""Shared fixtures: temporary lakes and Dagster instances, tiny hand-made sessions, real vendor files."""

import os
import subprocess
import sys
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest

warnings.filterwarnings("ignore")
REPO = Path(__file__).resolve().parent.parent
CACHE = REPO / ".cache" / "hyperspy-1.7.6"
WHEEL_FILES = {
    "hyperspy/tests/io/emd_files/fei_emd_files.zip": "fei_emd_files.zip",
    "hyperspy/tests/io/bruker_data/test_TEM.bcf": "test_TEM.bcf",
}


@pytest.fixture(scope="session")
def real_files() -> Path:
    """Real Velox .emd and Bruker .bcf test files from the hyperspy 1.7.6 wheel (never installed)."""
    done = CACHE / "files" / ".extracted"
    if not done.exists():
        CACHE.mkdir(parents=True, exist_ok=True)
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
                (out / name).write_bytes(whl.read(member))
        with zipfile.ZipFile(out / "fei_emd_files.zip") as z:
            z.extractall(out / "emd")
        done.touch()
    return CACHE / "files"


@pytest.fixture
def lake(tmp_path):
    from mmlake.lake import Lake

    return Lake(tmp_path / "lake").ensure()


@pytest.fixture
def instance(tmp_path):
    """A persistent Dagster instance in a temp folder (works with the multiprocess executor)."""
    from dagster import instance_for_test

    (tmp_path / "dagster").mkdir()
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

from tests.dagster_server import dagster_server  # noqa: E402,F401  (session-scoped `dagster dev` for the slow e2e/UI tests)
