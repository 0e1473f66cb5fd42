"""Bad sessions: a clear error naming the session and the problem; only that partition fails; nothing
already stored is lost."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from assets.runner import ingest
from mmlake.errors import SessionError
from mmlake.manifest import load_manifest
from tests.sessions import make_tiny_session, sid, write_manifest

REPO = Path(__file__).resolve().parent.parent

quiet = {"progress": lambda m: None}


@pytest.fixture(scope="module")
def good_template(tmp_path_factory, instance_template):
    """A lake and a Dagster instance holding one good session, ingested once for the module: each test
    starts from a copy (copying the folders takes milliseconds, an ingest many seconds)."""
    from dagster import instance_for_test

    from mmlake.lake import Lake

    root = tmp_path_factory.mktemp("bad-input-good")
    shutil.copytree(instance_template, root / "dagster")
    folder = make_tiny_session(root / "good", sample="good")
    lake = Lake(root / "lake").ensure()
    with instance_for_test(temp_dir=str(root / "dagster")) as inst:
        assert ingest([folder], lake, inst, **quiet)[0].ok
    return root


@pytest.fixture
def lake(tmp_path, good_template):
    from mmlake.lake import Lake

    shutil.copytree(good_template / "lake", tmp_path / "lake")
    return Lake(tmp_path / "lake")


@pytest.fixture
def instance(tmp_path, good_template):
    from dagster import instance_for_test

    shutil.copytree(good_template / "dagster", tmp_path / "dagster")
    with instance_for_test(temp_dir=str(tmp_path / "dagster")) as inst:
        yield inst


@pytest.fixture
def good(tmp_path, lake, instance, good_template):
    """A good session already in the lake (and its folder at tmp_path/good); every test checks its
    rows survive."""
    shutil.copytree(good_template / "good", tmp_path / "good")
    snap = snapshot(lake)
    assert all(snap.values()), "the good session's rows are missing from the copied lake"
    return snap


def snapshot(lake):
    return {t: lake.query(f"select * from {t} where session_id = ? order by all", [sid("good")]).to_dicts()
            for t in ("sessions", "session_files", "chips", "chip_grids")}


def ingest_fails(folder, lake, instance, *phrases):
    out = ingest([folder], lake, instance, **quiet)
    assert len(out) == 1 and not out[0].ok, out
    for phrase in phrases:
        assert phrase in out[0].message, out[0].message
    return out[0].message


def test_truncated_data_file(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "trunc", sample="trunc")
    eds = folder / "eds.hspy"
    eds.write_bytes(eds.read_bytes()[: eds.stat().st_size // 2])
    msg = ingest_fails(folder, lake, instance, "trunc@0", "eds")
    assert "truncated or corrupt" in msg
    assert snapshot(lake) == good


def test_manifest_missing_field(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "nofield", sample="nofield", campaign=None)
    ingest_fails(folder, lake, instance, "nofield@0", "missing required field 'campaign'")
    assert snapshot(lake) == good


def test_manifest_wrong_type(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "wrongtype", sample="wrongtype", dose_dpa="high")
    ingest_fails(folder, lake, instance, "wrongtype", "'dose_dpa' must be a number")
    assert snapshot(lake) == good


def test_grids_that_cannot_be_registered(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "grid", sample="grid", haadf_shape=(32, 32), eds_shape=(24, 24))
    ingest_fails(folder, lake, instance, "grid@0", "cannot be registered")
    assert snapshot(lake) == good


def test_integer_factor_grids_are_binned(tmp_path, lake, instance):
    folder = make_tiny_session(tmp_path / "binned", sample="binned", haadf_shape=(16, 16), eds_shape=(32, 32),
                               chip_px=4)
    assert ingest([folder], lake, instance, **quiet)[0].ok
    row = lake.query("select * from sessions where session_id = ?", [sid("binned")]).to_dicts()[0]
    assert row["eds_binning"] == 2 and tuple(row["eds_shape"])[:2] == (16, 16)
    import hyperspy.api as hs

    total = float(hs.load(folder / "eds.hspy").data.sum())
    chips = lake.query("select sum(eds_total_counts) as c from chips where session_id = ?", [sid("binned")])
    assert chips["c"][0] == pytest.approx(total)  # binning sums counts, loses none


@pytest.mark.parametrize("counts,phrase", [(0.0, "zero counts"), (np.nan, "NaN")])
def test_empty_or_nan_spectrum_image(tmp_path, lake, instance, good, counts, phrase):
    folder = make_tiny_session(tmp_path / "empty", sample="empty", counts_per_px=0.0)
    if np.isnan(counts):
        import hyperspy.api as hs

        s = hs.load(folder / "eds.hspy")
        s.data = s.data.astype(np.float32)
        s.data[3, 4, 10] = np.nan
        s.data[0, 0, 0] = 5
        s.save(folder / "eds.hspy", overwrite=True)
    ingest_fails(folder, lake, instance, "empty@0", phrase)
    assert snapshot(lake) == good


@pytest.mark.parametrize("chip_px,phrase", [(64, "larger than the image"), (1, ">= 2")])
def test_bad_chip_size(tmp_path, lake, instance, good, chip_px, phrase):
    folder = make_tiny_session(tmp_path / "chip", sample="chip", chip_px=chip_px)
    ingest_fails(folder, lake, instance, "chip", phrase)
    assert snapshot(lake) == good


def test_unknown_element(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "elem", sample="elem", elements=["Fe", "Xx"])
    ingest_fails(folder, lake, instance, "elem@0", "unknown element symbol(s) ['Xx']")
    assert snapshot(lake) == good


def test_support_chip_out_of_range(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "support", sample="support",
                               support={"film": [[0, 0], [9, 1]]})  # grid is 4 x 4
    ingest_fails(folder, lake, instance, "support@0", "support chip [9, 1] of class 'film' is outside")
    assert snapshot(lake) == good


@pytest.mark.parametrize("how", ["dotdot", "absolute", "symlink"])
def test_path_escaping_the_session_folder(tmp_path, lake, instance, good, how):
    outside = make_tiny_session(tmp_path / "outside", sample="outside")
    folder = make_tiny_session(tmp_path / "escape", sample="escape")
    target = {"dotdot": "../outside/eds.hspy", "absolute": str(outside / "eds.hspy"), "symlink": "link.hspy"}[how]
    if how == "symlink":
        os.symlink(outside / "eds.hspy", folder / "link.hspy")
    write_manifest(folder, sample="escape", haadf="haadf.hspy", eds=target, chip_px=8)
    with pytest.raises(SessionError, match="escape@0"):
        load_manifest(folder)
    ingest_fails(folder, lake, instance, "escape@0", "eds")
    assert snapshot(lake) == good


def test_npy_that_needs_pickle(tmp_path, lake, instance, good):
    folder = make_tiny_session(tmp_path / "pickle", sample="pickle")
    np.save(folder / "truth.npy", np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    write_manifest(folder, sample="pickle", haadf="haadf.hspy", eds="eds.hspy", chip_px=8, truth="truth.npy")
    ingest_fails(folder, lake, instance, "pickle@0", "pickled .npy")
    assert snapshot(lake) == good


def test_same_session_twice_is_idempotent(tmp_path, lake, instance, good):
    folder = tmp_path / "good"
    before = lake.query("select asset_key, data_version from materializations where is_current order by 1")
    assert ingest([folder], lake, instance, **quiet)[0].ok
    after = lake.query("select asset_key, data_version from materializations where is_current order by 1")
    assert before.equals(after)  # identical inputs -> identical data versions
    snap = snapshot(lake)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "materialization_id"} for r in rows]
    assert {t: strip(v) for t, v in snap.items()} == {t: strip(v) for t, v in good.items()}
    n = lake.query("select count(*) as n, count(distinct chip_index) as d from chips")
    assert n["n"][0] == n["d"][0] == 16


def test_known_elements_are_exspys_without_importing_it():
    """session.yaml's element check reads exspy's own database (its keys, parsed from the file) in a
    fresh process without importing exspy, and knows exactly the elements exspy.material does."""
    code = ("import sys; import mmlake.manifest; from mmlake.eds.lines import element_symbols; "
            "k = element_symbols(); assert 'exspy' not in sys.modules, 'exspy was imported'; print(len(k)); "
            "from exspy.material import elements; assert k == frozenset(elements.keys())")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert int(out.stdout.split()[0]) > 80  # H .. U with X-ray lines (95 in exspy 0.3.2)
