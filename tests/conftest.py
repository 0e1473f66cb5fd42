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
    done = CACHE / "files" / ".extracted"
    if not done.exists() or not all((CACHE / "files" / n).exists() for n in WHEEL_FILES.values()):
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
                (out / name).parent.mkdir(parents=True, exist_ok=True)
                (out / name).write_bytes(whl.read(member))
        with zipfile.ZipFile(out / "fei_emd_files.zip") as z:
            z.extractall(out / "emd")
        with zipfile.ZipFile(out / "tiff" / "tiff_FEI_Helios.zip") as z:
            z.extractall(out / "tiff")
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
