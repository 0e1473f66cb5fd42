"""Tests for mmlake.synth: seeded ground-truth synthetic LFO/STO sessions (small images, fast)."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pytest
import yaml

from mmlake import synth


# Small session with every feature: defect domains + amorphised triangle, Cr cap.
SMALL = synth.SessionSpec(
    "defective", 0.1, chip_px=8, image_px=96, pixel_size_nm=0.05, cap_element="Cr",
    defect_domains=True, amorphised=True, counts_per_pixel=40.0, seed=7,
)


@pytest.fixture(scope="module")
def small_arrays():
    return synth.make_arrays(SMALL)


def _exspy_lines(element):
    from exspy.material import elements

    return elements[element].Atomic_properties.Xray_lines.as_dictionary()


def _exspy_energy(line):
    el, ln = line.split("_")
    return _exspy_lines(el)[ln]["energy (keV)"]


# ----------------------------------------------------------------------------------------------
# Campaign definition
# ----------------------------------------------------------------------------------------------
def test_demo_campaign_mirrors_table_ii():
    specs = synth.DEMO_CAMPAIGN
    assert [(s.sample, s.dose_dpa) for s in specs] == [
        ("pristine", 0.0), ("pristine", 0.1), ("defective", 0.0), ("defective", 0.1)]
    assert [s.grid for s in specs] == [(33, 33), (24, 24), (34, 34), (51, 51)]
    assert [s.chip_px for s in specs] == [15, 20, 15, 10]
    for s in specs:
        assert 0.035 <= s.pixel_size_nm <= 0.071
        assert s.chip_px * s.pixel_size_nm >= synth.A_LFO  # a chip holds at least one unit cell
        assert s.amorphised == (s.dose_dpa > 0)
        assert s.defect_domains == (s.sample == "defective")
        assert s.campaign == "lfo_sto_demo"
    assert len({s.seed for s in specs}) == 4
    assert [s.session_id for s in specs] == ["pristine@0", "pristine@0.1", "defective@0", "defective@0.1"]


def test_constants():
    assert synth.A_STO == 0.3905 and synth.A_LFO == 0.393
    assert synth.LATTICE_NM["substrate"] == synth.A_STO
    assert synth.LATTICE_NM["film_ordered"] == synth.A_LFO
    for comp in synth.REGION_COMPOSITION.values():
        assert sum(comp.values()) == pytest.approx(100.0)
    assert synth.REGION_COMPOSITION["film_amorphous"]["O"] > synth.REGION_COMPOSITION["film_ordered"]["O"]
    assert synth.REGION_COMPOSITION["film_defect"]["O"] > synth.REGION_COMPOSITION["film_ordered"]["O"]
    assert synth.REGION_COMPOSITION["film_defect"]["La"] < synth.REGION_COMPOSITION["film_ordered"]["La"]
    assert set(synth.KFACTORS) == {"O_Ka", "Fe_Ka", "La_La", "Sr_La", "Ti_Ka", "Cr_Ka", "Pt_La"}
    assert synth.KFACTORS["Fe_Ka"] == 1.0


def test_bad_parameters_raise():
    with pytest.raises(ValueError, match="cap_element"):
        dataclasses.replace(SMALL, cap_element="Au")
    with pytest.raises(ValueError, match="energy axis"):
        dataclasses.replace(SMALL, n_channels=1024)


# ----------------------------------------------------------------------------------------------
# Arrays
# ----------------------------------------------------------------------------------------------
def test_reproducible_and_seed_dependent(small_arrays):
    haadf, eds, truth = small_arrays
    h2, e2, t2 = synth.make_arrays(SMALL)
    assert haadf.dtype == np.float32 and eds.dtype == np.uint16 and truth.dtype == np.int8
    assert haadf.tobytes() == h2.tobytes()
    assert eds.tobytes() == e2.tobytes()
    assert truth.tobytes() == t2.tobytes()
    other = dataclasses.replace(SMALL, seed=8)
    assert not np.array_equal(synth.make_haadf(other), haadf)


def test_truth_fractions(small_arrays):
    _, _, truth = small_arrays
    assert truth.shape == (96, 96)
    frac = np.bincount(truth.ravel(), minlength=4) / truth.size
    assert set(np.unique(truth)) == {0, 1, 2, 3}
    assert 0.30 <= frac[0] <= 0.36  # substrate (bottom third)
    assert 0.17 <= frac[3] <= 0.27  # cap (top ~22 %)
    assert 0.05 <= frac[2] <= 0.30  # film_disordered: domains + triangle
    assert frac[1] >= 0.10
    # layering: cap on top, substrate at the bottom
    assert (truth[:5] == 3).all() and (truth[-5:] == 0).all()
    # pristine, unirradiated: no disordered class
    pristine = dataclasses.replace(SMALL, defect_domains=False, amorphised=False)
    assert 2 not in np.unique(synth.make_geometry(pristine).truth)


def test_eds_counts_per_pixel(small_arrays):
    _, eds, truth = small_arrays
    total = eds.sum(axis=-1, dtype=np.int64)
    assert 0.9 * SMALL.counts_per_pixel <= total.mean() <= 1.05 * SMALL.counts_per_pixel
    for c in range(4):
        assert 0.85 * SMALL.counts_per_pixel <= total[truth == c].mean() <= 1.05 * SMALL.counts_per_pixel
    assert eds.shape == (96, 96, SMALL.n_channels)
    assert (eds > 0).mean() < 0.05  # sparse
    assert total.std() > 3  # Poisson


def test_fwhm_follows_exspy():
    utils = pytest.importorskip("exspy._misc.eds.utils")
    for e in (0.525, 1.8, 5.9, 9.44):
        assert synth.fwhm_kev(e, 130.0) == pytest.approx(utils.get_FWHM_at_Energy(130.0, e), rel=1e-9)
    assert synth.fwhm_kev(_exspy_energy("Mn_Ka"), 130.0) == pytest.approx(0.130)


def _region_sum(eds, truth, cls):
    return eds[truth == cls].sum(axis=0, dtype=np.int64).astype(float)


@pytest.mark.parametrize("cls, elements", [(0, ["O", "Sr", "Ti"]), (1, ["Fe", "La", "O"]), (3, ["Cr"])])
def test_summed_region_peaks_at_exspy_energies(small_arrays, cls, elements):
    _, eds, truth = small_arrays
    spec = _region_sum(eds, truth, cls)
    e = SMALL.energy_axis()
    own = [synth.QUANT_LINES[el] for el in elements]
    family_energies = [en for el in elements for ln, en in
                       ((f"{el}_{k}", v["energy (keV)"]) for k, v in _exspy_lines(el).items())
                       if ln.split("_")[1][0] == synth.QUANT_LINES[el].split("_")[1][0]]
    # strongest channel sits on one of the region's lines
    assert min(abs(e[np.argmax(spec)] - en) for en in family_energies) <= 0.03
    bg = np.median(spec[(e > 2.5) & (e < 4.0)]) + 1.0  # background level between lines
    for line in own:
        en = _exspy_energy(line)
        win = np.abs(e - en) <= 0.1
        peak_e = e[win][np.argmax(spec[win])]
        assert abs(peak_e - en) <= 0.03, (line, peak_e, en)  # within 3 channels (Sr La/Lb1 blend ~ 20 eV)
        assert spec[win].max() > 5 * bg
    # quantified lines of elements absent from the region stay at background level (unless they sit
    # on one of the region's own lines, e.g. La_La 140 eV from Ti_Ka)
    for el, line in synth.QUANT_LINES.items():
        en = _exspy_energy(line)
        if el in elements or any(abs(en - f) < 0.35 for f in family_energies):
            continue
        win = np.abs(e - en) <= 0.05
        assert spec[win].max() < 5 * bg + 10, line


def _family_template(element, e, scale, res):
    """Unit-area template of an element's quantified-line family from exspy's database (independent of
    the generator's implementation), channel-integrated Gaussians with exspy's FWHM law."""
    from scipy.special import erf

    q = synth.QUANT_LINES[element].split("_")[1]
    lines = _exspy_lines(element)
    mn = _exspy_energy("Mn_Ka")
    edges = np.concatenate([e - scale / 2, [e[-1] + scale / 2]])
    t = np.zeros_like(e)
    for ln, p in lines.items():
        if q[0] in ln:
            en = p["energy (keV)"]
            fwhm = math.sqrt(2.5 * (en - mn) * 1000 + res**2) / 1000
            sig = fwhm / (2 * math.sqrt(2 * math.log(2)))
            t += p["weight"] / lines[q]["weight"] * np.diff(0.5 * (1 + erf((edges - en) / (sig * math.sqrt(2)))))
    return t


@pytest.fixture(scope="module")
def bright():
    """SMALL with 400 counts per pixel: region sums precise enough for at.% to a few tenths."""
    spec = dataclasses.replace(SMALL, counts_per_pixel=400.0)
    geom = synth.make_geometry(spec)
    return spec, geom, synth.make_eds(spec, geom)


@pytest.mark.parametrize("region", ["substrate", "film_ordered", "film_defect", "film_amorphous"])
def test_composition_recovered_by_cliff_lorimer(bright, region):
    """Least-squares line intensities of a region-summed spectrum -> CL with the manifest k-factors ->
    the region's at.% (within 0.6 at.%; the regions differ from each other by 1-3 at.%)."""
    from exspy.material import weight_to_atomic

    spec, geom, eds = bright
    rid = synth.REGION_NAMES.index(region)
    assert (geom.regions == rid).sum() > 300
    summed = eds[geom.regions == rid].sum(axis=0, dtype=np.int64).astype(float)
    e = spec.energy_axis()
    els = sorted(synth.REGION_COMPOSITION[region])
    brems = synth.bremsstrahlung(e, spec.beam_kv)
    design = np.stack([_family_template(el, e, spec.energy_scale_kev, 130.0) for el in els] + [brems / brems.sum()], 1)
    coef, *_ = np.linalg.lstsq(design, summed, rcond=None)
    k = spec.kfactors
    w = np.array([k[synth.QUANT_LINES[el]] * coef[i] for i, el in enumerate(els)])
    at = weight_to_atomic(100 * w / w.sum(), els)
    truth = synth.REGION_COMPOSITION[region]
    for el, x in zip(els, at):
        assert x == pytest.approx(truth[el], abs=0.6), (region, el, x)
    # and the generator's own bookkeeping agrees: line areas ~ w/k
    _, info = synth.region_spectrum(spec, region)
    wf = synth.weight_fractions(truth)
    ratio = [info["line_area"][synth.QUANT_LINES[el]] * k[synth.QUANT_LINES[el]] / wf[el] for el in els]
    assert np.allclose(ratio, ratio[0])


def test_class_composition_mixture():
    comp = synth.class_composition(SMALL)
    assert comp["film_ordered"] == pytest.approx(synth.REGION_COMPOSITION["film_ordered"])
    assert comp["cap"] == {"Cr": 100.0}
    dis = comp["film_disordered"]
    lo = synth.REGION_COMPOSITION["film_defect"]
    hi = synth.REGION_COMPOSITION["film_amorphous"]
    for el in ("La", "Fe", "O"):
        assert min(lo[el], hi[el]) - 1e-6 <= dis[el] <= max(lo[el], hi[el]) + 1e-6


# ----------------------------------------------------------------------------------------------
# HAADF lattice
# ----------------------------------------------------------------------------------------------
def _inside_square(mask, size):
    ii = np.pad(mask.astype(np.int64), ((1, 0), (1, 0))).cumsum(0).cumsum(1)
    s = ii[size:, size:] - ii[:-size, size:] - ii[size:, :-size] + ii[:-size, :-size]
    ok = np.argwhere(s == size * size)
    assert len(ok), "no square window fully inside the region"
    r, c = ok[len(ok) // 2]
    return slice(r, r + size), slice(c, c + size)


def _power(img, p, pad=512):
    n = img.shape[0]
    w = np.hanning(n)[:, None] * np.hanning(n)[None, :]
    f = np.abs(np.fft.fft2((img - img.mean()) * w, s=(pad, pad))) ** 2
    q = np.fft.fftfreq(pad, d=p)
    return f, np.hypot(q[:, None], q[None, :])


def _d_spacing(img, p):
    """d of the strongest FFT peak beyond 1.5 / nm (d < 0.67 nm); zero-padding interpolates the peak."""
    f, qq = _power(img, p, pad=1024)
    f = np.where(qq > 1.5, f, 0.0)
    return 1.0 / qq.flat[np.argmax(f)]


def _lattice_peak_ratio(img, p, a):
    f, qq = _power(img, p, pad=img.shape[0])
    ring = np.abs(qq - 1.0 / a) < 0.12 / a
    return f[ring].max() / np.median(f[ring])


def test_haadf_lattice_fft():
    spec = dataclasses.replace(SMALL, image_px=256, defect_domains=False, amorphised=False)
    geom = synth.make_geometry(spec)
    img = synth.make_haadf(spec, geom)
    assert img.dtype == np.float32 and img.min() >= 0
    for region, a in (("substrate", synth.A_STO), ("film_ordered", synth.A_LFO)):
        sl = _inside_square(geom.regions == synth.REGION_NAMES.index(region), 64)
        d = _d_spacing(img[sl], spec.pixel_size_nm)
        assert abs(d - a) < 0.01, (region, d)  # strongest peak is (100) at d = a
        assert _lattice_peak_ratio(img[sl], spec.pixel_size_nm, a) > 100
    cap = _inside_square(geom.regions == synth.REGION_NAMES.index("cap"), 40)
    assert _lattice_peak_ratio(img[cap], spec.pixel_size_nm, synth.A_LFO) < 30
    # contrast: Cr cap and LFO film brighter than STO
    means = [img[geom.regions == r].mean() for r in range(5) if (geom.regions == r).any()]
    assert means[0] < means[1]


def test_haadf_disordered_regions():
    amorph = dataclasses.replace(SMALL, image_px=256, defect_domains=False, amorphised=True)
    g = synth.make_geometry(amorph)
    img = synth.make_haadf(amorph, g)
    sl = _inside_square(g.regions == synth.REGION_NAMES.index("film_amorphous"), 32)
    assert _lattice_peak_ratio(img[sl], amorph.pixel_size_nm, synth.A_LFO) < 30
    # the amorphous film keeps roughly the film's mean Z-contrast (not the substrate's, not the cap's)
    film = img[g.regions == synth.REGION_NAMES.index("film_ordered")].mean()
    assert abs(img[sl].mean() / film - 1) < 0.15

    defect = dataclasses.replace(SMALL, image_px=256, defect_domains=True, amorphised=False,
                                 n_defect_domains=1, defect_width_fraction=0.45)
    g = synth.make_geometry(defect)
    img = synth.make_haadf(defect, g)
    sl = _inside_square(g.regions == synth.REGION_NAMES.index("film_defect"), 80)
    d = _d_spacing(img[sl], defect.pixel_size_nm)
    assert abs(d - synth.A_DEFECT) < 0.01, d  # rotated, expanded lattice: d = 0.42 nm, not 0.393
    assert _lattice_peak_ratio(img[sl], defect.pixel_size_nm, synth.A_DEFECT) > 10


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------
def test_write_session_files(tmp_path, small_arrays):
    import hyperspy.api as hs

    haadf, eds, truth = small_arrays
    folder = synth.write_session(SMALL, tmp_path)
    assert folder == tmp_path / "defective_0.1dpa"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["defective_0.1dpa"]  # no temp leftovers
    man = yaml.safe_load((folder / "session.yaml").read_text())
    for key in ("campaign", "sample", "dose_dpa", "acquired_at", "instrument", "haadf", "eds", "elements",
                "chip_px", "kfactors", "truth", "truth_classes", "support", "synthetic"):
        assert key in man, key
    assert man["sample"] == "defective" and man["dose_dpa"] == 0.1 and man["chip_px"] == 8
    assert isinstance(man["acquired_at"], str) and man["acquired_at"].startswith("20")
    assert man["instrument"]["beam_kv"] == 300
    assert man["truth_classes"] == ["substrate", "film_ordered", "film_disordered", "cap"]
    assert man["elements"] == ["Cr", "Fe", "La", "O", "Sr", "Ti"]
    assert man["kfactors"] == {"Cr_Ka": 0.92, "Fe_Ka": 1.0, "La_La": 1.75, "O_Ka": 1.6, "Sr_La": 1.3, "Ti_Ka": 0.87}
    syn = man["synthetic"]
    assert syn["seed"] == 7 and syn["pixel_size_nm"] == 0.05
    assert syn["lattice_nm"] == {"substrate": 0.3905, "film_ordered": 0.393, "film_disordered": 0.42, "cap": None}
    assert syn["composition_at_pct"]["substrate"] == {"O": 60.0, "Sr": 20.0, "Ti": 20.0}

    t = np.load(folder / man["truth"], allow_pickle=False)
    assert t.dtype == np.int8 and np.array_equal(t, truth)
    # support: 4 chips per class, each fully inside its class on the chip grid
    cp = SMALL.chip_px
    assert set(man["support"]) == set(man["truth_classes"])
    for cname, chips in man["support"].items():
        cid = man["truth_classes"].index(cname)
        assert len(chips) == 4 and len({tuple(c) for c in chips}) == 4
        for r, c in chips:
            assert (t[r * cp:(r + 1) * cp, c * cp:(c + 1) * cp] == cid).all(), (cname, r, c)

    h = hs.load(folder / man["haadf"], lazy=True)
    assert h.axes_manager.signal_dimension == 2 and h.axes_manager.navigation_dimension == 0
    for ax in h.axes_manager.signal_axes:
        assert ax.units == "nm" and ax.scale == pytest.approx(0.05) and ax.size == 96
    assert np.array_equal(np.asarray(h.data), haadf)

    s = hs.load(folder / man["eds"], lazy=True)
    assert s.metadata.Signal.signal_type == "EDS_TEM"
    assert type(s).__name__ == "LazyEDSTEMSpectrum"
    assert s.data.dtype == np.uint16 and s.data.shape == (96, 96, 2048)
    assert s.data.chunksize[0] == synth.BAND_ROWS  # row bands
    sig = s.axes_manager.signal_axes[0]
    assert sig.units == "keV" and sig.scale == pytest.approx(0.01) and sig.offset == 0.0
    assert [ax.units for ax in s.axes_manager.navigation_axes] == ["nm", "nm"]
    assert all(ax.scale == pytest.approx(0.05) for ax in s.axes_manager.navigation_axes)
    tem = s.metadata.Acquisition_instrument.TEM
    assert tem.beam_energy == 300 and tem.Detector.EDS.energy_resolution_MnKa == 130
    assert list(s.metadata.Sample.elements) == man["elements"]
    assert np.array_equal(s.data[16:32].compute(), eds[16:32])
    assert np.array_equal(s.data.compute(), eds)

    # rewriting replaces the folder atomically
    again = synth.write_session(SMALL, tmp_path)
    assert again == folder and sorted(p.name for p in tmp_path.iterdir()) == ["defective_0.1dpa"]


def test_packages_keep_their_public_import_paths_and_small_modules():
    """mmlake.synth, mmlake.eds and mmlake.descriptors are packages of modules a reader takes in one
    sitting (< 300 lines each); the names callers import from the old modules still import."""
    import importlib
    from pathlib import Path

    from mmlake.descriptors import describe_lake_session, describe_session, largest_square, quantify_region  # noqa: F401
    from mmlake.eds import (EXTRANEOUS_ELEMENTS, chip_spectra, load_kfactor_table, quantify_chips,  # noqa: F401
                            quantify_spectrum, resolve_lines)
    from mmlake.synth import DEMO_CAMPAIGN, SessionSpec, build_demo_campaign, make_arrays, write_session  # noqa: F401

    for pkg in ("mmlake.synth", "mmlake.eds", "mmlake.descriptors"):
        folder = Path(importlib.import_module(pkg).__file__).parent
        for f in folder.glob("*.py"):
            assert len(f.read_text().splitlines()) < 300, f
    for name in synth.__all__:
        assert hasattr(synth, name), name
