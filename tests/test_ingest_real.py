"""Real vendor files (Velox SuperX .emd, Bruker .bcf) ingested through Dagster into the lake."""

import shutil

import numpy as np
import pytest

from assets.runner import ingest
from tests.sessions import sid as session_id, write_manifest

CASES = [
    # file, manifest key, HAADF (rows, cols), EDS (rows, cols, channels)
    ("emd/fei_SI_SuperX-HAADF_10frames_10x50.emd", "velox-10x50", (50, 10), (50, 10, 4096)),
    ("emd/fei_emd_si.emd", "velox-16x16", (16, 16), (16, 16, 4096)),
    ("test_TEM.bcf", "bruker-tem", (64, 64), (64, 64, 2048)),
]


def direct_read(path):
    """Read the file eagerly with RosettaSciIO itself (the reference the lake is compared with)."""
    import hyperspy.api as hs

    sigs = hs.load(str(path), lazy=False)
    sigs = sigs if isinstance(sigs, list) else [sigs]
    eds = max((s for s in sigs if s.axes_manager.navigation_dimension == 2), key=lambda s: s.data.size)
    haadf = next(s for s in sigs if s.axes_manager.signal_dimension == 2)
    return haadf, eds


@pytest.mark.parametrize("name,sample,haadf_shape,eds_shape", CASES)
def test_ingest_real_file(real_files, tmp_path, lake, instance, name, sample, haadf_shape, eds_shape):
    src = real_files / name
    folder = tmp_path / sample
    folder.mkdir()
    shutil.copy(src, folder / src.name)
    write_manifest(folder, sample=sample, data=src.name, chip_px=4, campaign="vendor_files")
    out = ingest([folder], lake, instance, progress=lambda m: None)
    assert [o.ok for o in out] == [True], out
    sid = session_id(sample, campaign="vendor_files")
    row = lake.query("select * from sessions where session_id = ?", [sid]).to_dicts()[0]
    assert tuple(row["haadf_shape"]) == haadf_shape
    assert tuple(row["eds_shape"]) == eds_shape
    haadf, eds = direct_read(src)
    ax = haadf.axes_manager.signal_axes[0]
    expected_nm = ax.scale * (1000.0 if str(ax.units) in ("µm", "um") else 1.0)
    assert row["pixel_size_nm"] == pytest.approx(expected_nm, rel=1e-6)
    e = eds.axes_manager.signal_axes[0]
    assert row["energy_offset_kev"] == pytest.approx(e.offset, abs=1e-9)
    assert row["energy_scale_kev"] == pytest.approx(e.scale, rel=1e-9)
    assert row["calibration_source"] == "file"
    # per-chip sums equal the directly read cube summed over each chip's pixels
    grid = lake.query("select * from chip_grids where session_id = ?", [sid]).to_dicts()[0]
    n_r, n_c = grid["n_rows"], grid["n_cols"]
    assert (n_r, n_c) == (haadf_shape[0] // 4, haadf_shape[1] // 4)
    cube = np.asarray(eds.data, dtype=np.float64)[: n_r * 4, : n_c * 4]
    want = cube.reshape(n_r, 4, n_c, 4, -1).sum(axis=(1, 3)).reshape(n_r * n_c, -1)
    got = lake.get_array(grid["eds_sums_sha"])
    np.testing.assert_allclose(got, want, rtol=1e-6)
    chips = lake.query("select sum(eds_total_counts) as c, count(*) as n from chips where session_id = ?", [sid])
    assert chips["n"][0] == n_r * n_c
    assert chips["c"][0] == pytest.approx(want.sum(), rel=1e-9)
    stack = lake.get_array(grid["haadf_stack_sha"])
    assert stack.shape == (n_r * n_c, 4, 4)
    np.testing.assert_allclose(stack[n_c + 1], np.asarray(haadf.data)[4:8, 4:8], rtol=1e-6)
    # the raw file is kept immutable in the object folder, addressed by its sha256
    files = lake.query("select * from session_files where session_id = ? and role = 'data'", [sid]).to_dicts()
    assert lake.find_object(files[0]["sha256"]).read_bytes() == src.read_bytes()
