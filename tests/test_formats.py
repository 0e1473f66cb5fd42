"""The formats microscopes write, ingested through RosettaSciIO into the lake.

Real files from the hyperspy 1.7.6 wheel (`real_files`): FEI TIA .emi (+ its .ser files) and .ser,
JEOL .pts and .asw (+ the view files it names), TIFF exports (ImageJ, DigitalMicrograph, FEI Helios,
an RGB optical image). Files made here where the wheel has none: an 8-bit JPEG without calibration,
an MRC, a .zspy. Every value the lake stores is compared with RosettaSciIO's own eager read.

All good sessions are acquisitions of one sample x dose, so one in-process Dagster run of
`raw_session` + `chips` ingests them all (two cores: keep this file fast).
"""

import shutil
import struct
import warnings
from pathlib import Path

import numpy as np
import pytest

from mmlake.errors import SessionError
from tests.sessions import write_manifest

CAMPAIGN = "formats"
SAMPLE = "real"


def eager(path, **kw):
    import hyperspy.api as hs

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = hs.load(str(path), lazy=False, **kw)
    return out if isinstance(out, list) else [out]


def session(root: Path, name: str, files: dict[str, Path], **manifest) -> Path:
    """A session folder `name` (an acquisition of formats.real@0) holding `files` (rel -> source)."""
    folder = root / name
    for rel, src in files.items():
        (folder / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, folder / rel)
    return write_manifest(folder, campaign=CAMPAIGN, sample=SAMPLE, acquisition=name, **manifest)


def write_mrc(path: Path, data: np.ndarray, pixel_angstrom: float | None) -> None:
    """A minimal MRC2014 file (mode 2 float32, one section); the unit cell carries the pixel size."""
    ny, nx = data.shape
    hdr = bytearray(1024)
    struct.pack_into("<10i", hdr, 0, nx, ny, 1, 2, 0, 0, 0, nx, ny, 1)
    cell = (nx * pixel_angstrom, ny * pixel_angstrom, pixel_angstrom) if pixel_angstrom else (0.0, 0.0, 0.0)
    struct.pack_into("<6f3i3f", hdr, 40, *cell, 90.0, 90.0, 90.0, 1, 2, 3,
                     float(data.min()), float(data.max()), float(data.mean()))
    hdr[208:212] = b"MAP "
    hdr[212:216] = bytes([0x44, 0x44, 0, 0])
    path.write_bytes(bytes(hdr) + data.astype("<f4").tobytes())


def save_zip_zspy(sig, path: Path) -> None:
    """.zspy as one file (zarr ZipStore): a session names files, and a directory store is not one."""
    import zarr

    store = zarr.ZipStore(str(path), mode="w")
    sig.save(store)
    store.close()


def haadf_like(shape=(48, 60), seed=3) -> np.ndarray:
    """An atomic-lattice-like 8-bit image."""
    yy, xx = np.mgrid[: shape[0], : shape[1]]
    img = 0.5 + 0.25 * np.cos(2 * np.pi * yy / 6) + 0.25 * np.cos(2 * np.pi * xx / 6)
    img += np.random.default_rng(seed).normal(0, 0.03, shape)
    return np.clip(img * 255, 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def formats_lake(real_files, tmp_path_factory):
    """Every good format as one acquisition each of formats.real@0, ingested in one Dagster run."""
    import hyperspy.api as hs
    from dagster import DagsterInstance, materialize
    from PIL import Image

    from assets.definitions import all_resources
    from assets.ingest import chips, raw_session
    from assets.partitions import add_session_partitions, partition_tags
    from mmlake.lake import Lake
    from mmlake.store import register_source

    root = tmp_path_factory.mktemp("formats")
    r = real_files
    made = root / "made"
    made.mkdir()
    Image.fromarray(haadf_like()).save(made / "haadf.jpg", quality=95)
    grey = haadf_like((24, 36), 9)
    Image.fromarray(np.stack([grey, grey // 2, 255 - grey], axis=-1)).save(made / "colour.png")  # false colour
    write_mrc(made / "cal.mrc", haadf_like((40, 40), 5).astype(np.float32), pixel_angstrom=0.5)
    im = hs.signals.Signal2D(haadf_like((32, 32), 7).astype(np.float32))
    for ax in im.axes_manager.signal_axes:
        ax.scale, ax.units = 0.04, "nm"
    im.metadata.General.title = "HAADF"
    save_zip_zspy(im, made / "haadf.zspy")
    cube = np.random.default_rng(1).poisson(0.05, (32, 32, 128)).astype(np.uint16)
    s = hs.signals.Signal1D(cube)
    s.set_signal_type("EDS_TEM")
    e = s.axes_manager.signal_axes[0]
    e.units = "<undefined>"  # no energy calibration: session.yaml gives it
    for ax in s.axes_manager.navigation_axes:
        ax.scale, ax.units = 0.04, "nm"
    save_zip_zspy(s, made / "eds.zspy")

    cases = {
        "tia-ser": session(root, "tia-ser", {"df_2.ser": r / "tia/bf_df_2.ser"}, haadf="df_2.ser", chip_px=4),
        "tia-emi": session(root, "tia-emi", {f"si{s}": r / f"tia/si_eds{s}" for s in (".emi", "_1.ser", "_2.ser")},
                           eds="si.emi", chip_px=2),
        "jeol-pts": session(root, "jeol-pts", {"map.pts": r / "jeol/Dummy-Data_0000023.pts"}, eds="map.pts", chip_px=4),
        "tif-imagej": session(root, "tif-imagej", {"im.tif": r / "tiff/imagej.tif"}, haadf="im.tif", chip_px=4),
        "tif-dm": session(root, "tif-dm", {"im.tif": r / "tiff/dm.tif"}, haadf="im.tif", chip_px=4),
        "tif-fei": session(root, "tif-fei", {"im.tif": r / "tiff/FEI-Helios-Ebeam-16bits.tif"}, haadf="im.tif",
                           chip_px=16),
        "tif-noscale": session(root, "tif-noscale", {"im.tif": r / "tiff/imagej_no_scale.tif"}, haadf="im.tif",
                               chip_px=4, pixel_size_nm=0.2),
        "tif-rgb": session(root, "tif-rgb", {"rgb.tif": r / "tiff/zeiss_rgb.tif"}, haadf="rgb.tif", chip_px=2,
                           pixel_size_nm=50.0),
        "jpeg": session(root, "jpeg", {"haadf.jpg": made / "haadf.jpg"}, haadf="haadf.jpg", chip_px=6,
                        pixel_size_nm=0.0625),
        "mrc": session(root, "mrc", {"cal.mrc": made / "cal.mrc"}, haadf="cal.mrc", chip_px=8),
        "png": session(root, "png", {"im.png": made / "colour.png"}, haadf="im.png", chip_px=6,
                       pixel_size_nm=0.1),
        "zspy": session(root, "zspy", {"haadf.zspy": made / "haadf.zspy", "eds.zspy": made / "eds.zspy"},
                        haadf="haadf.zspy", eds="eds.zspy", chip_px=8, energy_scale_kev=0.08,
                        energy_offset_kev=-0.1),
    }
    lake = Lake(root / "lake").ensure()
    instance = DagsterInstance.ephemeral()
    regs = [register_source(lake, f) for f in cases.values()]
    key = add_session_partitions(instance, [g.manifest for g in regs])[0]
    result = materialize([raw_session, chips], partition_key=key, instance=instance,
                         resources=all_resources(lake.home), raise_on_error=False, tags=partition_tags(key))
    assert result.success, [str(e.event_specific_data) for e in result.all_events if e.is_failure]
    sids = {name: g.session_id for name, g in zip(cases, regs)}
    md = {}
    for ev in result.get_asset_materialization_events():
        mat = ev.event_specific_data.materialization
        if mat.asset_key.to_user_string() == "raw_session":
            md.update({k: v.value for k, v in mat.metadata.items()})
    return lake, cases, sids, md


def rows(lake, sid):
    s = lake.query("select * from sessions where session_id = ?", [sid]).to_dicts()[0]
    g = lake.query("select * from chip_grids where session_id = ?", [sid]).to_dicts()[0]
    return s, g


def chip_sums(sig, chip_px):
    cube = np.asarray(sig.data, dtype=np.float64)
    n_r, n_c = cube.shape[0] // chip_px, cube.shape[1] // chip_px
    cube = cube[: n_r * chip_px, : n_c * chip_px]
    return cube.reshape(n_r, chip_px, n_c, chip_px, -1).sum(axis=(1, 3)).reshape(n_r * n_c, -1)


def check_eds(lake, sid, sig, chip_px):
    """Stored chip sums == the eager cube summed over each chip; energy axis in keV."""
    s, g = rows(lake, sid)
    e = sig.axes_manager.signal_axes[0]
    f = 1e-3 if str(e.units) == "eV" else 1.0
    assert s["energy_scale_kev"] == pytest.approx(e.scale * f, rel=1e-9)
    assert s["energy_offset_kev"] == pytest.approx(e.offset * f, abs=1e-12)
    assert tuple(s["eds_shape"]) == sig.data.shape
    want = chip_sums(sig, chip_px)
    np.testing.assert_array_equal(lake.get_array(g["eds_sums_sha"]), want)
    total = lake.query("select sum(eds_total_counts) as c from chips where session_id = ?", [sid])["c"][0]
    assert total == want.sum()
    return s, g


def check_haadf(lake, sid, image, chip_px):
    s, g = rows(lake, sid)
    stack = lake.get_array(g["haadf_stack_sha"])
    n_r, n_c = g["n_rows"], g["n_cols"]
    assert (n_r, n_c) == (image.shape[0] // chip_px, image.shape[1] // chip_px)
    np.testing.assert_array_equal(stack[n_c + 1], np.asarray(image, np.float32)[chip_px:2 * chip_px, chip_px:2 * chip_px])
    assert tuple(s["haadf_shape"]) == image.shape
    return s, g


def test_tia_ser_haadf_only(formats_lake, real_files):
    lake, cases, sids, _ = formats_lake
    (img,) = eager(real_files / "tia/bf_df_2.ser")
    s, g = check_haadf(lake, sids["tia-ser"], img.data, 4)
    ax = img.axes_manager.signal_axes[0]
    assert ax.units == "nm" and s["pixel_size_nm"] == pytest.approx(abs(ax.scale), rel=1e-9)  # TIA's y scale is negative
    assert s["has_eds"] is False and s["calibration_source"] == "file"
    assert g["eds_sums_sha"] is None


def test_tia_emi_eds_only_with_its_ser_files(formats_lake, real_files):
    lake, cases, sids, _ = formats_lake
    sid = sids["tia-emi"]
    (eds,) = [x for x in eager(real_files / "tia/si_eds.emi") if x.axes_manager.signal_dimension == 1]
    assert eds.data.shape == (5, 5, 4000) and eds.axes_manager.signal_axes[0].units == "eV"
    s, g = check_eds(lake, sid, eds, 2)
    assert s["pixel_size_nm"] == pytest.approx(abs(eds.axes_manager.navigation_axes[0].scale), rel=1e-9)
    assert s["has_haadf"] is False and g["haadf_stack_sha"] is None
    files = lake.query("select role, file_name from session_files where session_id = ? order by role", [sid]).rows()
    assert files == [("eds", "si.emi"), ("eds+1", "si_1.ser"), ("eds+2", "si_2.ser"), ("manifest", "session.yaml")]


def test_jeol_pts_eds_only(formats_lake, real_files):
    lake, cases, sids, _ = formats_lake
    (eds,) = eager(real_files / "jeol/Dummy-Data_0000023.pts")
    assert eds.data.shape == (64, 64, 4096)
    s, g = check_eds(lake, sids["jeol-pts"], eds, 4)
    assert s["pixel_size_nm"] == pytest.approx(eds.axes_manager.navigation_axes[0].scale * 1000, rel=1e-9)  # µm
    assert s["eds_resolution_mnka_ev"] == pytest.approx(133.0)  # from the .pts header
    assert g["n_rows"] == 16 and lake.query(
        "select sum(eds_total_counts) as c from chips where session_id = ?", [sids["jeol-pts"]])["c"][0] == 2709


def test_jeol_asw_view_haadf_and_eds(real_files, tmp_path):
    """The .asw reads its view's image and spectrum image (512 x 512 x 4096: opened and summed here,
    not through Dagster, to keep this file fast; the lake path of multi-file formats is the TIA .emi
    above). Chip sums equal RosettaSciIO's own eager read binned 32 x 32 at read time
    (`downsample=32`: counts summed event by event)."""
    from mmlake.chips import ChipGrid, sum_eds_chips
    from mmlake.session import open_session, session_files

    asw = {str(p.relative_to(real_files / "jeol/asw")): p for p in (real_files / "jeol/asw").rglob("*") if p.is_file()}
    folder = session(tmp_path, "jeol-asw", asw, data="rawdata.ASW", chip_px=32)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = open_session(folder)
    files = session_files(folder, s.manifest)
    assert sorted(files)[:3] == ["data", "data+1", "data+2"] and len(files) == 8  # .img, 5 .map, .pts
    assert files["data+7"] == "Sample/00_View000/View000_0000006.pts"
    assert any("none is titled HAADF; used 'IMG1'" in w for w in s.warnings)
    pts = real_files / "jeol/asw/Sample/00_View000/View000_0000006.pts"
    (binned,) = eager(pts, downsample=32, SI_dtype=np.uint32)
    e = binned.axes_manager.signal_axes[0]
    assert (s.energy.offset_kev, s.energy.scale_kev, s.energy.n_channels) == (
        pytest.approx(e.offset, abs=1e-12), pytest.approx(e.scale, rel=1e-9), 4096)
    assert s.eds.data.shape == (512, 512, 4096)
    grid = ChipGrid.fit(s.shape, 32, s.session_id)
    sums, _ = sum_eds_chips(s.eds.data, grid, s.session_id)
    np.testing.assert_array_equal(sums, np.asarray(binned.data, np.float64).reshape(256, 4096))
    assert sums.sum() == 308261
    img = eager(real_files / "jeol/asw/Sample/00_View000/View000_0000000.img", reader="JEOL")[0]
    np.testing.assert_array_equal(s.haadf, np.asarray(img.data, np.float32))
    assert s.pixel_size_nm == pytest.approx(img.axes_manager.signal_axes[0].scale * 1000, rel=1e-9)


@pytest.mark.parametrize("name,src", [("tif-imagej", "tiff/imagej.tif"), ("tif-dm", "tiff/dm.tif"),
                                      ("tif-fei", "tiff/FEI-Helios-Ebeam-16bits.tif")])
def test_tiff_exports(formats_lake, real_files, name, src):
    lake, cases, sids, _ = formats_lake
    (img,) = eager(real_files / src)
    chip = {"tif-fei": 16}.get(name, 4)
    s, _ = check_haadf(lake, sids[name], img.data, chip)
    ax = img.axes_manager.signal_axes[0]
    to_nm = {"µm": 1e3, "m": 1e9, "nm": 1.0}[str(ax.units)]
    assert s["pixel_size_nm"] == pytest.approx(ax.scale * to_nm, rel=1e-9)
    assert s["calibration_source"] == "file"


def test_uncalibrated_files_take_the_manifest_pixel_size(formats_lake, real_files):
    lake, cases, sids, md = formats_lake
    (img,) = eager(real_files / "tiff/imagej_no_scale.tif")
    assert str(img.axes_manager.signal_axes[0].units) == "<undefined>"
    s, _ = check_haadf(lake, sids["tif-noscale"], img.data, 4)
    assert s["pixel_size_nm"] == 0.2 and s["calibration_source"] == "manifest"
    # an 8-bit JPEG (as archives hold HAADF images): no calibration in the file, the manifest's pixel size
    (jpg,) = eager(cases["jpeg"] / "haadf.jpg")
    assert jpg.data.dtype == np.uint8
    s, g = check_haadf(lake, sids["jpeg"], jpg.data, 6)
    assert s["pixel_size_nm"] == 0.0625 and g["pixel_size_nm"] == 0.0625 and s["calibration_source"] == "manifest"
    assert (g["n_rows"], g["n_cols"]) == (8, 10)
    assert md[f"{sids['jpeg']} calibration_source"] == "manifest"
    assert md[f"{sids['tif-dm']} calibration_source"] == "file"


def test_rgb_image_becomes_intensity_with_a_warning(formats_lake, real_files):
    lake, cases, sids, md = formats_lake
    (img,) = eager(real_files / "tiff/zeiss_rgb.tif")
    assert img.data.dtype.names == ("R", "G", "B")
    luma = 0.299 * img.data["R"].astype(float) + 0.587 * img.data["G"] + 0.114 * img.data["B"]
    s, g = rows(lake, sids["tif-rgb"])
    stack = lake.get_array(g["haadf_stack_sha"])
    np.testing.assert_allclose(stack[0], luma[:2, :2], rtol=1e-6)
    assert s["calibration_source"] == "manifest" and s["pixel_size_nm"] == 50.0
    assert "HAADF image is RGB (R, G, B); converted to intensity" in md[f"{sids['tif-rgb']} warnings"]


def test_png_colour_image_becomes_luma(formats_lake):
    lake, cases, sids, md = formats_lake
    (png,) = eager(cases["png"] / "im.png")
    assert png.data.dtype.names == ("R", "G", "B")
    d = png.data
    luma = (0.299 * d["R"].astype(np.float64) + 0.587 * d["G"] + 0.114 * d["B"]).astype(np.float32)
    s, _ = check_haadf(lake, sids["png"], luma, 6)
    assert s["pixel_size_nm"] == 0.1 and s["calibration_source"] == "manifest"
    assert "converted to intensity" in md[f"{sids['png']} warnings"]


def test_mrc_and_zspy(formats_lake):
    lake, cases, sids, _ = formats_lake
    (mrc,) = eager(cases["mrc"] / "cal.mrc")
    s, _ = check_haadf(lake, sids["mrc"], mrc.data, 8)
    assert s["pixel_size_nm"] == pytest.approx(0.05, rel=1e-6) and s["calibration_source"] == "file"
    (im,) = eager(cases["zspy"] / "haadf.zspy")
    check_haadf(lake, sids["zspy"], im.data, 8)
    (eds,) = eager(cases["zspy"] / "eds.zspy")
    s, g = rows(lake, sids["zspy"])
    assert s["energy_scale_kev"] == 0.08 and s["energy_offset_kev"] == -0.1 and s["calibration_source"] == "manifest"
    sums = lake.get_array(g["eds_sums_sha"])
    np.testing.assert_array_equal(sums, eds.data.reshape(4, 8, 4, 8, -1).sum(axis=(1, 3)).reshape(16, -1))


# ---- refusals and warnings (no Dagster needed: the library raises before anything is stored) ----

def test_uncalibrated_without_pixel_size_is_refused_with_the_fix(tmp_path, real_files):
    from mmlake.session import open_session

    folder = session(tmp_path, "nocal", {"im.tif": real_files / "tiff/imagej_no_scale.tif"}, haadf="im.tif")
    with pytest.raises(SessionError, match=r"no spatial calibration .* `pixel_size_nm: 0.05`"):
        open_session(folder)
    mrc = tmp_path / "m.mrc"
    write_mrc(mrc, np.ones((16, 16), np.float32), pixel_angstrom=None)  # reader would report 1 nm: not trusted
    folder = session(tmp_path, "mrc-nocal", {"m.mrc": mrc}, haadf="m.mrc")
    with pytest.raises(SessionError, match="no spatial calibration"):
        open_session(folder)


def test_non_square_tia_pixels_refused(tmp_path, real_files):
    from mmlake.session import open_session

    folder = session(tmp_path, "nsq", {"a_1.ser": real_files / "tia/not_square_1.ser"}, eds="a_1.ser")
    with pytest.raises(SessionError, match="not square"):
        open_session(folder)


def test_manifest_override_of_a_file_calibration_is_noted(tmp_path, real_files):
    from mmlake.session import open_session

    folder = session(tmp_path, "ovr", {"im.tif": real_files / "tiff/imagej.tif"}, haadf="im.tif", pixel_size_nm=100.0)
    with warnings.catch_warnings(record=True):
        warnings.simplefilter("always")
        s = open_session(folder)
    assert s.pixel_size_nm == 100.0 and s.calibration_source == "manifest"
    assert any("overrides the HAADF file's calibration 168.675 nm" in w for w in s.warnings)


def test_unknown_key_warns_with_the_closest_key_and_strict_refuses(tmp_path, lake):
    from mmlake.manifest import load_manifest, parse_manifest
    from mmlake.store import register_source
    from tests.sessions import make_tiny_session

    folder = make_tiny_session(tmp_path / "typo", eds_shape=None, chip_size=12)
    with pytest.warns(UserWarning, match=r"unknown key 'chip_size' is ignored; did you mean 'chip_px'\?"):
        m = load_manifest(folder)
    assert m.chip_px == 8 and m.warnings == ("session.yaml: unknown key 'chip_size' is ignored; did you mean 'chip_px'?",)
    import yaml

    raw = yaml.safe_load((folder / "session.yaml").read_text())
    with pytest.raises(SessionError, match=r"did you mean 'chip_px'\? \(strict mode"):
        parse_manifest(raw, folder, strict=True)
    with pytest.raises(SessionError, match="strict mode"):
        register_source(lake, folder, strict=True)
    assert lake.query("select count(*) as n from session_sources")["n"][0] == 0


def test_float_eds_with_negatives_is_refused_as_not_counts(tmp_path):
    import hyperspy.api as hs

    from mmlake.session import eds_count_map, open_session
    from tests.sessions import make_tiny_session

    folder = make_tiny_session(tmp_path / "neg", haadf_shape=None)
    s = hs.load(folder / "eds.hspy")
    s.data = s.data.astype(np.float32) - 0.3  # background-subtracted: negative values
    s.save(folder / "eds.hspy", overwrite=True)
    with pytest.raises(SessionError, match=r"not X-ray counts: it is float32 with negative values \(min -0.3\)"):
        eds_count_map(open_session(folder))
    s.data = np.abs(s.data)  # float counts without negatives are fine
    s.save(folder / "eds.hspy", overwrite=True)
    assert eds_count_map(open_session(folder)).sum() > 0


def test_multi_view_jeol_workspace_is_refused(tmp_path, real_files):
    """A .asw with several spectrum images is several acquisitions: the message says to name one .pts."""
    import zipfile

    from mmlake.session import open_session

    whl = next((real_files.parent).glob("hyperspy-1.7.6-*.whl"))
    folder = tmp_path / "multi"
    prefix = "hyperspy/tests/io/JEOL_files/InvalidFrame/"
    with zipfile.ZipFile(whl) as z:
        for n in z.namelist():
            if n.startswith(prefix) and not n.endswith("/") and not n.endswith(".txt"):
                (folder / n[len(prefix):]).parent.mkdir(parents=True, exist_ok=True)
                (folder / n[len(prefix):]).write_bytes(z.read(n))
    write_manifest(folder, data="dummy2.ASW", chip_px=4)
    with pytest.raises(SessionError, match="holding 3 spectrum images .* name its .pts as 'eds'"):
        open_session(folder)
