"""mmlake.atoms: column finding, local lattice, sublattices, per-chip order, the order feature set,
region intervals, pictures; validated against truth the code did not compute (synthetic lattices
with known positions, AtomAgined PRISM simulations, the demo generator's regions)."""

from __future__ import annotations

import time

import numpy as np
import pytest

from mmlake.atoms import analyse_columns, chip_order, locate_columns, region_order
from mmlake.atoms.synthetic import lattice_image
from mmlake.atoms.validate import atomagined_dir, atomagined_files, match
from mmlake.chips import ChipGrid
from tests.shared_data import needs_shared_data


def _score(loc, truth, radius=2.0):
    pr, d = match(np.column_stack([loc.y, loc.x]), np.column_stack([truth.y, truth.x]), radius)
    return len(pr) / len(truth.y), len(pr) / max(len(loc), 1), float(np.sqrt(np.mean(d ** 2))), pr


@pytest.fixture(scope="module")
def ab_lattice():
    return lattice_image((256, 256), a_px=16.0, sigma_px=2.0, amp_a=400, amp_b=160, background=20, seed=3)


@pytest.fixture(scope="module")
def ab_result(ab_lattice):
    img, _ = ab_lattice
    grid = ChipGrid.fit(img.shape, 16)
    return analyse_columns(img, 0.025, grid=grid), grid


# ------------------------------------------------------------------------------------------ finding
def test_columns_found_with_subpixel_accuracy(ab_lattice):
    img, truth = ab_lattice
    loc = locate_columns(img)
    recall, precision, rms, _ = _score(loc, truth)
    assert recall >= 0.99 and precision >= 0.99
    assert rms <= 0.12, rms  # Poisson noise only: ~0.05-0.1 px
    assert abs(loc.params["sigma_px"] - 2.0) < 0.15  # width estimated, not given


def test_faint_b_columns_found_next_to_bright_a():
    img, truth = lattice_image((192, 192), a_px=12.0, sigma_px=2.0, amp_a=800, amp_b=80, background=10, seed=5)
    loc = locate_columns(img)
    _, _, _, pr = _score(loc, truth)
    b = truth.sublattice == "B"
    hit = np.zeros(len(truth.y), bool)
    hit[pr[:, 1]] = True
    assert hit[b].mean() >= 0.97, hit[b].mean()  # B at 10 % of A, 8.5 px (4.2 sigma) away


def test_scan_line_jitter_is_corrected():
    from mmlake.atoms.scan import correct_rows, row_jitter

    img, truth = lattice_image((256, 256), a_px=16.0, sigma_px=2.0, amp_a=400, amp_b=160, poisson=False, seed=7)
    off = np.random.default_rng(1).normal(0.0, 0.8, img.shape[0])  # per scan line, px in x
    jit = np.random.default_rng(2).poisson(correct_rows(img, off)).astype(float)
    est = row_jitter(jit)
    assert np.corrcoef(est, -off)[0, 1] > 0.85  # the offsets that undo the jitter
    on, off_ = locate_columns(jit), locate_columns(jit, scan_correction=False)
    r_on, _, rms_on, _ = _score(on, truth)
    r_off, _, rms_off, _ = _score(off_, truth)
    assert r_on >= 0.99 and r_on > r_off
    assert rms_on < 0.75 * rms_off, (rms_on, rms_off)
    assert on.params["row_jitter_rms_px"] > 0.5


def test_lattice_band_jitter_correction():
    """The band average of the row offsets over the rows a column spans (which the row-by-row
    model match keeps) is recovered from the lattice's translations: known truth, 0.8 px jitter."""
    from mmlake.atoms.scan import correct_rows

    img, truth = lattice_image((256, 256), a_px=16.0, sigma_px=2.0, amp_a=400, amp_b=160, poisson=False, seed=7)
    off = np.random.default_rng(1).normal(0.0, 0.8, img.shape[0])
    jit = np.random.default_rng(2).poisson(correct_rows(img, off)).astype(float)
    on, off_ = locate_columns(jit), locate_columns(jit, lattice_jitter=False)
    r_on, p_on, rms_on, _ = _score(on, truth)
    _, _, rms_off, _ = _score(off_, truth)
    assert on.params["lattice_jitter"] is not None and off_.params["lattice_jitter"] is None
    assert r_on >= 0.99 and p_on >= 0.99
    assert rms_on < 0.2 and rms_on < 0.5 * rms_off, (rms_on, rms_off)  # measured 0.124 vs 0.331 px
    # no lattice (random points): no band correction, nothing breaks
    from mmlake.atoms.scan import lattice_band_offsets

    pts = np.random.default_rng(4).uniform(0, 256, (400, 2))
    assert lattice_band_offsets(pts[:, 0], pts[:, 1], 256, 2.0) is None


def test_free_width_fits_are_marked():
    from mmlake.atoms.detect import noise_sigma
    from mmlake.atoms.refine import fit_columns

    img, truth = lattice_image((128, 128), a_px=16.0, sigma_px=2.0, amp_a=400, amp_b=160, background=20, seed=3)
    rc = np.rint(np.column_stack([truth.y, truth.x])).astype(np.int64)
    ns = noise_sigma(img)
    fixed = fit_columns(img.astype(float), rc, 2.6, passes=1, noise=ns)
    free = fit_columns(img.astype(float), rc, 2.6, passes=1, noise=ns, free_sigma_z=20.0)
    assert not fixed.free.any() and np.all(fixed.sigma[fixed.ok] == 2.6)
    assert free.free.mean() > 0.9
    assert abs(np.median(free.sigma[free.free]) - 2.0) < 0.1  # from a start 30 % too wide


def test_batched_fit_agrees_with_per_column_curve_fit_and_is_faster():
    from mmlake.atoms.detect import noise_sigma
    from mmlake.atoms.refine import fit_columns
    from mmlake.atoms.validate import curve_fit_columns

    img, truth = lattice_image((160, 160), a_px=16.0, sigma_px=2.0, amp_a=400, amp_b=160, jitter_px=0.3, seed=11)
    inside = (truth.y > 4) & (truth.y < 155) & (truth.x > 4) & (truth.x < 155)
    T = np.column_stack([truth.y[inside], truth.x[inside]])
    rc = np.rint(T).astype(np.int64)
    t0 = time.perf_counter()
    ref = curve_fit_columns(img, rc, 2.0)
    t_ref = time.perf_counter() - t0
    t0 = time.perf_counter()
    fit = fit_columns(img.astype(float), rc, 2.0, passes=0, radius_sigma=1.5, noise=noise_sigma(img))
    t_ours = time.perf_counter() - t0
    ok = np.isfinite(ref[:, 0]) & fit.ok
    assert ok.mean() > 0.98
    diff = np.hypot(fit.y[ok] - ref[ok, 0], fit.x[ok] - ref[ok, 1])
    assert np.sqrt(np.mean(diff ** 2)) < 0.03  # same model, same pixels: same answer
    assert t_ours < t_ref / 5, (t_ours, t_ref)


def test_parameters_are_checked():
    img = np.random.default_rng(0).random((64, 64))
    with pytest.raises(ValueError, match="sigma_px"):
        locate_columns(img, sigma_px=-1)
    with pytest.raises(ValueError, match="k_noise"):
        locate_columns(img, k_noise=float("nan"))
    with pytest.raises(ValueError, match="image"):
        locate_columns(np.zeros(10))
    with pytest.raises(ValueError, match="pixel_size_nm"):
        analyse_columns(img, pixel_size_nm=0)


# ------------------------------------------------------------------------------------------ frame
def test_column_frame_units_and_chip_index(ab_result):
    res, grid = ab_result
    f = res.frame
    from mmlake.atoms import COLUMN_FIELDS

    assert tuple(f.columns) == COLUMN_FIELDS
    assert np.allclose(f["x_nm"].to_numpy(), f["x_px"].to_numpy() * 0.025)
    assert np.allclose(f["displacement_nm"].drop_nulls().to_numpy(), f["displacement_px"].drop_nulls().to_numpy() * 0.025)
    y, x, ci = f["y_px"].to_numpy(), f["x_px"].to_numpy(), f["chip_index"].to_numpy()
    r, c = np.floor((y + 0.5) / 16).astype(int), np.floor((x + 0.5) / 16).astype(int)
    assert np.array_equal(ci, r * grid.n_cols + c)  # chip_index = row * n_cols + col, row = y
    assert f["column_index"].to_list() == list(range(len(f)))


# ------------------------------------------------------------------------------------------ lattice
def test_local_lattice_displacement_strain_rotation():
    from mmlake.atoms.lattice import local_lattice

    rng = np.random.default_rng(2)
    a = 12.0
    i, j = np.meshgrid(np.arange(40), np.arange(40), indexing="ij")
    P = np.column_stack([i.ravel() * a, j.ravel() * a]).astype(float)  # (y, x)
    right = P[:, 1] > 0.7 * P[:, 1].max()
    # right domain stretched 4 % along x; then a domain rotated 5 degrees counter-clockwise on screen
    Q = P.copy()
    Q[right, 1] = 0.7 * P[:, 1].max() + (P[right, 1] - 0.7 * P[:, 1].max()) * 1.04
    jit = rng.normal(0, 0.25, Q.shape)
    lat = local_lattice(Q + jit)
    inner = (i.ravel() > 2) & (i.ravel() < 37) & (j.ravel() > 2) & (j.ravel() < 37)
    core = inner & (np.abs(Q[:, 1] - 0.7 * P[:, 1].max()) > 3 * a)
    assert lat.fits[core].mean() > 0.98
    rms = np.sqrt(np.nanmean(np.sum(lat.displacement[core] ** 2, axis=1)))
    assert 0.25 * np.sqrt(2) * 0.95 < rms < 0.25 * np.sqrt(2) * 1.35, rms  # fit noise adds a little
    assert np.corrcoef(lat.displacement[core, 1], jit[core, 1])[0, 1] > 0.85
    # strain is relative to the image's median lattice: the domains differ by the 4 % stretch
    exx_r, exx_l = np.nanmedian(lat.strain[core & right, 0]), np.nanmedian(lat.strain[core & ~right, 0])
    assert abs((exx_r - exx_l) - 0.04) < 0.004, (exx_r, exx_l)
    assert abs(exx_l) < 0.008
    assert abs(np.nanmedian(lat.strain[core & right, 1]) - np.nanmedian(lat.strain[core & ~right, 1])) < 0.003

    th = np.deg2rad(5.0)
    y, x = P[:, 0], P[:, 1]
    R = np.column_stack([y * np.cos(th) - x * np.sin(th), x * np.cos(th) + y * np.sin(th)])  # CCW on screen
    lat2 = local_lattice(np.vstack([P[~right], R[right] + np.array([0.0, 40.0 * a])]))  # a separate domain
    rot = lat2.rotation_deg[int((~right).sum()):]
    assert abs(np.nanmedian(rot) - 5.0) < 0.3, np.nanmedian(rot)


def test_random_points_do_not_fit_a_lattice():
    from mmlake.atoms.lattice import local_lattice

    rng = np.random.default_rng(4)
    crystal = np.column_stack([np.repeat(np.arange(30), 30) * 10.0, np.tile(np.arange(30), 30) * 10.0])
    amorph = rng.uniform(0, 300, (900, 2)) + np.array([400.0, 0.0])
    lat = local_lattice(np.vstack([crystal, amorph]))
    assert lat.fits[:900].mean() > 0.85
    assert lat.fits[900:].mean() < 0.05


# ------------------------------------------------------------------------------------------ sublattices
def test_sublattices_by_intensity_and_position(ab_lattice, ab_result):
    img, truth = ab_lattice
    res, _ = ab_result
    assert res.sublattices.two
    f = res.frame
    pr, _ = match(np.column_stack([f["y_px"].to_numpy(), f["x_px"].to_numpy()]),
                  np.column_stack([truth.y, truth.x]), 2.0)
    assert np.mean(f["sublattice"].to_numpy()[pr[:, 0]] == truth.sublattice[pr[:, 1]]) >= 0.99

    mono, _ = lattice_image((192, 192), a_px=12.0, sigma_px=2.0, amp_a=400, amp_b=0, seed=9)
    r2 = analyse_columns(mono)
    assert not r2.sublattices.two
    assert set(r2.frame["sublattice"].unique()) == {"A"}


# ------------------------------------------------------------------------------------------ chip order
@pytest.fixture(scope="module")
def amorphous_disk():
    img, truth = lattice_image((320, 320), a_px=12.0, sigma_px=2.0, amp_a=400, amp_b=160,
                               amorphous_radius_px=80, seed=13)
    grid = ChipGrid.fit(img.shape, 16)
    res = analyse_columns(img, 0.03, grid=grid)
    order = chip_order(res.frame, grid, 0.03)
    rows, cols = grid.rows_cols()
    cy, cx = rows * 16 + 8, cols * 16 + 8
    dist = np.hypot(cy - 160, cx - 160)
    return img, grid, res, order, dist


def test_order_separates_amorphous_chips(amorphous_disk):
    from mmlake.atoms.validate import auc

    _, grid, _, order, dist = amorphous_disk
    from mmlake.atoms import ORDER_FIELDS

    assert tuple(order.columns) == ORDER_FIELDS and len(order) == grid.n_chips
    inside, outside = dist < 80 - 24, dist > 80 + 24  # away from the boundary (window 24 px)
    d = order["disorder"].to_numpy()
    assert auc(d[inside | outside], inside[inside | outside]) >= 0.98
    assert np.median(d[outside]) < 0.25 and np.median(d[inside]) > 0.9
    lf = order["lattice_fraction"].to_numpy()
    assert np.median(lf[outside]) > 0.95 and np.median(lf[inside]) < 0.1
    assert np.allclose(order["rms_displacement_nm"].drop_nulls().to_numpy(),
                       order["rms_displacement_px"].drop_nulls().to_numpy() * 0.03)


def test_order_grows_with_positional_disorder():
    rms, dis = [], []
    for jitter in (0.0, 0.4, 0.8, 1.2):
        img, _ = lattice_image((224, 224), a_px=14.0, sigma_px=2.0, amp_a=600, amp_b=0, jitter_px=jitter, seed=17)
        grid = ChipGrid.fit(img.shape, 16)
        order = chip_order(analyse_columns(img, grid=grid).frame, grid)
        inner = order.filter((order["row"] > 1) & (order["row"] < grid.n_rows - 2)
                             & (order["col"] > 1) & (order["col"] < grid.n_cols - 2))
        rms.append(float(inner["rms_displacement_px"].median()))
        dis.append(float(inner["disorder"].median()))
    assert all(b > a for a, b in zip(rms, rms[1:])), rms
    assert all(b > a for a, b in zip(dis, dis[1:])), dis
    # calibration: the RMS displacement from the local lattice reads the jitter (radial = sqrt(2) x per axis)
    assert abs(rms[2] - 0.8 * np.sqrt(2)) < 0.25 * 0.8 * np.sqrt(2), rms


# ------------------------------------------------------------------------------------------ encoder
def test_order_encoder_interface(amorphous_disk):
    from mmlake.atoms.encoder import OrderEncoder
    from mmlake.encoders import available_encoders, get_encoder
    from mmlake.encoders.base import ChipEncoder

    img, grid, _, order, dist = amorphous_disk
    assert "order" in available_encoders()  # registered: `haadf_encoders: [fft, order]` runs it
    enc = get_encoder("order")
    assert isinstance(enc, ChipEncoder) and enc.name == "order" and enc.version and enc.weights_id == "none"
    stack = grid.tiles(np.asarray(img, dtype=np.float32))
    vec = enc.encode(stack, batch_size=64, device="cpu", image=grid.untile(stack))
    assert vec.shape == (grid.n_chips, enc.dim) and vec.dtype == np.float32 and np.all(np.isfinite(vec))
    assert len(enc.feature_names) == enc.dim and enc.provenance()["encoder"] == "order"
    d = vec[:, OrderEncoder.disorder_index]
    assert np.median(d[dist < 56]) > np.median(d[dist > 104]) + 0.5
    # square grid: the stack alone is enough, same answer
    assert np.allclose(enc.encode(stack), vec)
    with pytest.raises(ValueError, match="does not equal image tile"):
        enc.encode(stack, image=grid.untile(stack).T.copy())
    with pytest.raises(ValueError, match="image="):
        enc.encode(stack[:-1])


# ------------------------------------------------------------------------------------------ regions
def test_region_order_bootstrap_intervals(amorphous_disk):
    from mmlake.atoms.region import ratio

    _, grid, _, order, dist = amorphous_disk
    labels = np.where(dist < 80, 1, 0).astype(np.int64)
    labels[:3] = -1  # unlabelled chips are ignored
    r1 = region_order(labels, order, seed=1, n_boot=300)
    r2 = region_order(labels, order, seed=1, n_boot=300)
    assert r1.equals(r2)  # seeded: a pure function of its inputs
    assert not r1.equals(region_order(labels, order, seed=2, n_boot=300))
    d = {(r["region"], r["parameter"]): r for r in r1.iter_rows(named=True)}
    for reg in (0, 1):
        row = d[(reg, "disorder")]
        assert row["ci_low"] <= row["mean"] <= row["ci_high"]
        vals = order["disorder"].to_numpy()[labels == reg]
        assert abs(row["mean"] - vals.mean()) < 1e-12 and row["n_chips"] == len(vals)
        se = vals.std(ddof=1) / np.sqrt(len(vals))
        assert 0.6 * 3.92 * se < row["ci_high"] - row["ci_low"] < 1.5 * 3.92 * se
    assert d[(1, "disorder")]["ci_low"] > d[(0, "disorder")]["ci_high"]
    q = ratio(labels, order, 1, 0, "disorder", n_boot=300)
    assert q["ci_low"] <= q["ratio"] <= q["ci_high"] and q["ratio"] > 2
    # two-stage bootstrap over acquisitions widens nothing when the acquisitions agree, and runs
    groups = np.arange(len(order)) % 2
    assert len(region_order(labels, order, groups=groups, n_boot=100)) == len(r1)
    with pytest.raises(ValueError, match="labels"):
        region_order(labels[:-1], order)
    with pytest.raises(ValueError, match="level"):
        region_order(labels, order, level=1.5)


def test_segmentation_order_contrasts_disordered_with_ordered(amorphous_disk):
    """Two segmentations of one session: the roles decide which chips are compared; the ratio of the
    disk's disorder to the lattice's is > 2 and significant; a segmentation without both roles gives
    region rows but no contrast."""
    import polars as pl

    from mmlake.atoms import segmentation_order

    _, grid, _, order, dist = amorphous_disk
    inside = np.where(dist < 80, 1, 0).astype(np.int64)
    three = np.where(dist < 40, 2, inside)  # region 2 (centre) and 1 (ring) are both disordered
    roles = pl.DataFrame({"method": ["a", "a", "b", "b", "b", "c"], "modality": ["x", "x", "x", "x", "x", "x"],
                          "region": [0, 1, 0, 1, 2, 0],
                          "role": ["film_ordered", "film_disordered", "film_ordered", "film_disordered",
                                   "film_disordered", "film_ordered"]})
    segs = {("a", "x"): inside, ("b", "x"): three, ("c", "x"): np.zeros(len(order), dtype=np.int64)}
    regions, contrast = segmentation_order(segs, roles, order, n_boot=200, seed=3)
    assert set(map(tuple, regions.select("method", "region").unique().rows())) == {
        ("a", 0), ("a", 1), ("b", 0), ("b", 1), ("b", 2), ("c", 0)}
    assert regions.filter((pl.col("method") == "b") & (pl.col("region") == 2))["role"][0] == "film_disordered"
    assert set(contrast["method"]) == {"a", "b"}  # c has no disordered region
    d = {(r["method"], r["parameter"]): r for r in contrast.iter_rows(named=True)}
    a, b = d[("a", "disorder")], d[("b", "disorder")]
    # pooling regions of one role: b's two disordered regions are a's one region, chip for chip
    assert a["ratio"] == pytest.approx(b["ratio"]) and a["n_disordered"] == b["n_disordered"]
    vals = order["disorder"].to_numpy()
    assert a["ratio"] == pytest.approx(vals[inside == 1].mean() / vals[inside == 0].mean())
    assert a["ratio"] > 2 and a["ci_low"] > 1 and a["significant"]
    assert a["ci_low"] <= a["ratio"] <= a["ci_high"]
    lf = d[("a", "lattice_fraction")]  # fewer columns on a lattice in the disk: ratio < 1, significant
    assert lf["ratio"] < 0.8 and lf["significant"]


# ------------------------------------------------------------------------------------------ pictures
def test_pictures_are_png(amorphous_disk):
    from mmlake.atoms.plots import column_overlay, order_map

    img, grid, res, order, _ = amorphous_disk
    a = column_overlay(img, res.frame, "test")
    b = order_map(order, grid.n_rows, grid.n_cols, "disorder", "test")
    import io

    from PIL import Image

    for png, side in ((a, 480), (b, 320)):
        assert png[:8] == b"\x89PNG\r\n\x1a\n"
        im = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
        assert im.shape[1] >= side and im.shape[0] >= side and im.std() > 20  # a picture, not a blank
    with pytest.raises(ValueError, match="parameter"):
        order_map(order, grid.n_rows, grid.n_cols, "nope")


# ------------------------------------------------------------------------------------------ validation
ATOMAGINED = atomagined_files()


def test_validate_settings_and_oracle_row_offsets():
    """``--set KEY=VALUE`` parsing, and the oracle rows (registered against the jitter-free image)
    undo a known jitter (the ceiling ``--oracle-jitter`` measures)."""
    from mmlake.atoms.scan import correct_rows
    from mmlake.atoms.validate import oracle_row_offsets, parse_settings

    assert parse_settings(["k_candidate=2.0", "passes=3", "scan-correction=false", "sigma_px=None",
                           "note=x"]) == {"k_candidate": 2.0, "passes": 3, "scan_correction": False,
                                          "sigma_px": None, "note": "x"}
    assert isinstance(parse_settings(["passes=3"])["passes"], int) and parse_settings(None) == {}
    for bad in ("k_candidate", "=2", "2x=1"):
        with pytest.raises(ValueError, match="KEY=VALUE"):
            parse_settings([bad])
    raw, _ = lattice_image((128, 128), a_px=12.0, sigma_px=2.0, amp_a=400, amp_b=160, poisson=False, seed=5)
    off = np.random.default_rng(4).normal(0.0, 0.8, raw.shape[0])
    jit = correct_rows(raw, off) * 3.0 + 7.0  # jittered, and on another intensity scale
    est = oracle_row_offsets(jit, raw)
    fixed = (correct_rows(jit, est) - 7.0) / 3.0
    inner = (slice(8, -8), slice(8, -8))
    assert np.abs(fixed - raw)[inner].mean() < 0.2 * np.abs(jit / 3.0 - 7.0 / 3.0 - raw)[inner].mean()


@needs_shared_data(bool(ATOMAGINED), f"AtomAgined validation images under {atomagined_dir()}")
def test_atomagined_recall_precision_rms():
    """Figures measured on a fixed subset (every 5th file); floors a little below them so a
    regression fails (full-set figures: python -m mmlake.atoms.validate)."""
    from mmlake.atoms.validate import evaluate_atomagined

    r = evaluate_atomagined(ATOMAGINED[::5])
    # measured on this subset (recall / precision): raw 0.9988 / 0.9068, clean 0.9748 / 0.9342 (RMS
    # vs projected atoms 0.729 px, vs the raw image's peaks 0.601 px), blbk1 0.7447 / 0.9000; before
    # the free-width sigma vote and the lattice band jitter correction: raw 0.9972 / 0.9119, clean
    # 0.9624 / 0.9533 (0.801 px, 0.661 px), blbk1 0.7355 / 0.7075
    assert r["raw"]["recall"] >= 0.99 and r["raw"]["precision"] >= 0.89
    assert r["clean"]["recall"] >= 0.97 and r["clean"]["precision"] >= 0.93
    assert r["clean"]["rms_projected"] <= 0.75 and r["clean"]["rms_image"] <= 0.62
    assert r["blbk1"]["recall"] >= 0.74 and r["blbk1"]["precision"] >= 0.88


@needs_shared_data(bool(ATOMAGINED), f"AtomAgined validation images under {atomagined_dir()}")
def test_atomagined_clean_recall_is_not_limited_by_the_jitter_correction():
    """With the rows registered against the raw image (perfect scan-line correction) clean recall
    barely moves and the RMS vs projected atoms stays above 0.6 px: what is short of the targets is
    the images' noise and the reference, not the jitter step (docs/atoms.md, "Recall target").
    Measured on this subset (clean): 0.9748 / 0.9342 / 0.729 px; oracle rows 0.9756 / 0.9335 / 0.659 px."""
    from mmlake.atoms.validate import evaluate_atomagined

    base = evaluate_atomagined(ATOMAGINED[::5], keys=("clean",), image_reference=False)["clean"]
    ora = evaluate_atomagined(ATOMAGINED[::5], keys=("clean",), image_reference=False, oracle_jitter=True)["clean"]
    assert abs(ora["recall"] - base["recall"]) <= 0.005 and ora["precision"] >= 0.925
    assert ora["rms_projected"] <= base["rms_projected"] - 0.04
    assert ora["rms_projected"] >= 0.62


def test_demo_order_separates_amorphous_and_follows_disorder():
    """Two demo sessions with an amorphised film (generator truth: mmlake.synth regions)."""
    import polars as pl

    from mmlake.atoms.validate import demo_auc, demo_chip_table
    from mmlake.synth import DEMO_CAMPAIGN

    specs = [s for s in DEMO_CAMPAIGN if s.amorphised]
    tab = demo_chip_table(specs)
    assert demo_auc(tab, "disorder", ("film_amorphous",))["auc"] >= 0.98
    assert demo_auc(tab, "disorder", ("film_amorphous",), pure=False)["auc"] >= 0.95
    med = {r["region"]: r for r in tab.filter(pl.col("purity") >= 0.999).group_by("region")
           .agg(pl.col("disorder").median(), pl.col("rms_displacement_nm").median()).iter_rows(named=True)}
    # generator positional disorder: film_ordered 0 < film_defect (0.025 nm per axis) < film_amorphous
    assert med["film_ordered"]["rms_displacement_nm"] < med["film_defect"]["rms_displacement_nm"]
    assert med["film_ordered"]["disorder"] < med["film_defect"]["disorder"] < med["film_amorphous"]["disorder"]


# ------------------------------------------------------------------------------------------ asset
def test_atom_columns_asset_writes_both_tables_with_provenance(tmp_path):
    """raw_session + chips + atom_columns through Dagster on a HAADF-only session whose image is a
    synthetic lattice with an amorphous disk; rows, units, chip convention and metadata pictures."""
    import hyperspy.api as hs
    from dagster import DagsterInstance, materialize

    from assets.atoms import atom_columns
    from assets.definitions import SESSION_ASSETS, all_resources
    from assets.ingest import chips, raw_session
    from assets.partitions import add_session_partitions, partition_tags
    from mmlake.lake import Lake
    from mmlake.store import register_source
    from tests.sessions import write_manifest

    assert atom_columns in SESSION_ASSETS
    img, _ = lattice_image((160, 160), a_px=10.0, sigma_px=1.6, amp_a=400, amp_b=0, amorphous_radius_px=40, seed=21)
    folder = tmp_path / "lat"
    folder.mkdir()
    s = hs.signals.Signal2D(img.astype(np.float32))
    for ax in s.axes_manager.signal_axes:
        ax.scale, ax.units = 0.04, "nm"
    s.save(folder / "haadf.hspy", overwrite=True)
    write_manifest(folder, campaign="atoms test", haadf="haadf.hspy", chip_px=16)
    lake = Lake(tmp_path / "lake").ensure()
    inst = DagsterInstance.ephemeral()
    reg = register_source(lake, folder)
    key = add_session_partitions(inst, [reg.manifest])[0]
    res = materialize([raw_session, chips, atom_columns], partition_key=key, instance=inst,
                      resources=all_resources(lake.home), raise_on_error=True, tags=partition_tags(key))
    assert res.success
    sid = reg.session_id
    cols = lake.query("select * from atom_columns where session_id = ? order by column_index", [sid])
    order = lake.query("select * from chip_order where session_id = ? order by chip_index", [sid])
    assert len(order) == 100 and order["chip_index"].to_list() == list(range(100))
    assert len(cols) > 150 and cols["materialization_id"].n_unique() == 1
    assert np.allclose(cols["x_nm"].to_numpy(), cols["x_px"].to_numpy() * 0.04)
    ledger = lake.query("select * from materializations where asset_key = 'atom_columns' and is_current")
    assert ledger["materialization_id"][0] == cols["materialization_id"][0] == order["materialization_id"][0]
    rows, cc = np.divmod(np.arange(100), 10)
    dist = np.hypot(rows * 16 + 8 - 80, cc * 16 + 8 - 80)
    d = order["disorder"].to_numpy()
    assert np.median(d[dist < 20]) > 0.8 and np.median(d[dist > 64]) < 0.3
    mats = res.asset_materializations_for_node("atom_columns")
    meta = mats[0].metadata
    assert "data:image/png;base64," in meta["column_overlay"].value and "data:image/png;base64," in meta["disorder_map"].value
    assert meta["n_columns"].value == len(cols)
