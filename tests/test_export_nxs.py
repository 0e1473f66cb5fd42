"""NeXus NXem export: the file validates against NXem (nexusformat) and reads back to the lake's numbers."""

import json
import warnings

import numpy as np
import polars as pl
import pytest

from tests.sessions import make_tiny_session


@pytest.fixture(scope="module")
def nx_lake(tmp_path_factory):
    """A tiny HAADF + EDS session through raw_session + chips (Dagster), then labels, runs and regions
    written with provenance the way the segmentation and descriptor assets write them."""
    from dagster import DagsterInstance, materialize

    from assets.definitions import all_resources
    from assets.ingest import chips, raw_session
    from assets.partitions import add_session_partitions, partition_tags
    from mmlake.lake import Lake, Provenance
    from mmlake.store import register_source

    root = tmp_path_factory.mktemp("nx")
    folder = make_tiny_session(root / "nxs", haadf_shape=(32, 32), eds_shape=(32, 32), channels=256,
                               counts_per_px=60.0, elements=["Fe", "O"], campaign="nx export")
    lake = Lake(root / "lake").ensure()
    inst = DagsterInstance.ephemeral()
    reg = register_source(lake, folder)
    key = add_session_partitions(inst, [reg.manifest])[0]
    res = materialize([raw_session, chips], partition_key=key, instance=inst, resources=all_resources(lake.home),
                      raise_on_error=False, tags=partition_tags(key))
    assert res.success
    sid = reg.session_id
    n = 16  # 4 x 4 chips of 8 px
    labels = {("louvain", "ensemble"): np.array([0, 0, 1, 1] * 4), ("fewshot", "haadf"): np.arange(n) % 3}
    seg = lake.replace_partition(
        Provenance("segmentation_louvain", key, "seg-v1", {"threshold": 0.42}, session_id=sid),
        {"segment_labels": pl.concat([pl.DataFrame({"session_id": sid, "method": m, "modality": d,
                                                    "chip_index": np.arange(n, dtype=np.int32),
                                                    "label": v.astype(np.int32)}) for (m, d), v in labels.items()]),
         "segment_runs": pl.DataFrame([{"session_id": sid, "method": m, "modality": d, "n_labels": int(v.max() + 1),
                                        "params": json.dumps({"threshold": 0.42}), "class_names": None}
                                       for (m, d), v in labels.items()])},
        {"session_id": sid})
    desc = lake.replace_partition(
        Provenance("region_descriptors", key, "desc-v1", {}, session_id=sid),
        {"regions": pl.DataFrame({"session_id": sid, "method": "louvain", "modality": "ensemble",
                                  "region": np.array([0, 1], np.int32), "role": ["substrate", "film_ordered"],
                                  "n_chips": np.array([8, 8], np.int32), "area_nm2": [1.6384, 1.6384],
                                  "d_spacing_nm": [0.39, None]}),
         "region_composition": pl.DataFrame({"session_id": sid, "method": "louvain", "modality": "ensemble",
                                             "region": np.array([0, 0, 1, 1], np.int32),
                                             "element": ["Fe", "O", "Fe", "O"],
                                             "atomic_percent": [40.0, 60.0, 20.0, 80.0]})},
        {"session_id": sid})
    return lake, sid, folder, seg["materialization_id"], desc["materialization_id"]


def test_nxem_file_validates_and_reads_back(nx_lake, tmp_path):
    import hyperspy.api as hs
    from nexusformat.nexus import nxload

    from mmlake.eds.lines import element_lines, fwhm_kev
    from mmlake.export import export_session, label_maps, validate_nxs

    lake, sid, folder, seg_mid, desc_mid = nx_lake
    (path,) = export_session(lake, sid, tmp_path / "out", fmt="nxs")
    assert path.suffix == ".nxs"
    warnings_, errors, log = validate_nxs(path)
    assert errors == 0, log

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        haadf = hs.load(folder / "haadf.hspy")
        eds = hs.load(folder / "eds.hspy")
    root = nxload(str(path))
    e = root["entry1"]
    assert str(e["definition"]) == "NXem" and str(e["identifier_experiment"]) == sid
    assert str(e["sampleID/atom_types"]) == "Fe, O"
    img = e["measurement/eventID/imageID/image_2d"]
    np.testing.assert_array_equal(img["real"].nxvalue, haadf.data)
    assert img["axis_i"].attrs["units"] == "nm"
    np.testing.assert_allclose(img["axis_i"].nxvalue[:3], [0.0, 0.05, 0.1])
    sp = e["measurement/eventID/spectrumID/spectrum_2d"]
    cube = sp["intensity"].nxvalue
    np.testing.assert_array_equal(cube, eds.data)
    np.testing.assert_allclose(sp["axis_energy"].nxvalue, 0.04 * np.arange(256))
    assert sp["axis_energy"].attrs["units"] == "keV"
    # element lines, IUPAC names, window counts per pixel
    idx = e["roiID/eds/indexing"]
    assert str(idx["fe_ka/iupac_line_candidates"]) == "Fe K-L2,3"
    assert str(idx["fe_la/iupac_line_candidates"]) == "Fe L3-M4,5"
    assert str(idx["o_ka/iupac_line_candidates"]) == "O K-L2,3"
    lo, hi = idx["fe_ka/energy_range"].nxvalue
    e0 = element_lines("Fe")["Fe_Ka"][0]
    w = float(fwhm_kev(e0, 130.0))
    assert lo <= e0 - w + 0.04 and hi >= e0 + w - 0.04
    c0, c1 = int(round(lo / 0.04)), int(round(hi / 0.04)) + 1
    np.testing.assert_array_equal(idx["fe_ka/image_2d/intensity"].nxvalue, eds.data[..., c0:c1].sum(axis=-1))
    np.testing.assert_array_equal(idx["summary/intensity"].nxvalue, eds.data.sum(axis=(0, 1)))
    assert str(e["roiID/img/imageID/imaging_mode"]) == "HAADF"
    # label maps with method / modality, regions and provenance
    maps, _, _ = label_maps(lake, sid)
    for (m, d), (arr, mid) in maps.items():
        sg = e[f"segmentation_{m}_{d}"]
        assert (str(sg["method"]), str(sg["modality"])) == (m, d)
        np.testing.assert_array_equal(sg["label_map/labels"].nxvalue, arr)
        prov = json.loads(str(sg["provenance/data"]))
        assert prov["materialization_id"] == seg_mid == mid and prov["code_version"] == "seg-v1"
        assert json.loads(str(sg["parameters"])) == {"threshold": 0.42}
    sg = e["segmentation_louvain_ensemble"]
    assert list(sg["regions/role"].nxvalue) == ["substrate", "film_ordered"]
    d = sg["regions/d_spacing_nm"].nxvalue
    assert d[0] == pytest.approx(0.39) and np.isnan(d[1])
    np.testing.assert_allclose(sg["composition/atomic_percent"].nxvalue, [[40.0, 60.0], [20.0, 80.0]])
    assert json.loads(str(sg["provenance_descriptors/data"]))["materialization_id"] == desc_mid
    assert "regions" not in e["segmentation_fewshot_haadf"]
    # raw files by sha256, and the raw_session provenance
    shas = dict(lake.query("select role, sha256 from session_files where session_id = ?", [sid]).rows())
    assert str(e["raw_file_eds/checksum"]) == shas["eds"] and str(e["raw_file_eds/algorithm"]) == "sha256"
    assert json.loads(str(e["provenance/data"]))["asset_key"] == "raw_session"


def test_hspy_and_zspy_label_maps_still_export(nx_lake, tmp_path):
    import hyperspy.api as hs

    from mmlake.export import export_session

    lake, sid, *_ = nx_lake
    for fmt in ("hspy", "zspy"):
        paths = export_session(lake, sid, tmp_path / fmt, fmt=fmt)
        assert len(paths) == 2 and all(p.suffix == f".{fmt}" for p in paths)
        s = hs.load(paths[0])
        assert s.metadata.mmlake.session_id == sid and s.axes_manager[0].units == "nm"
    with pytest.raises(ValueError, match="fmt must be one of"):
        export_session(lake, sid, tmp_path, fmt="tiff")


def test_cli_export_nxs(nx_lake, tmp_path, capsys):
    from assets.cli import main

    lake, sid, *_ = nx_lake
    assert main(["--lake", str(lake.home), "export", sid, "--format", "nxs", "--out", str(tmp_path)]) == 0
    path = capsys.readouterr().out.strip()
    assert path.endswith(".nxs") and (tmp_path / path.split("/")[-1]).exists()
