"""EDS quantification against spectra mmlake did not write (tests/eds_forward.py: escape and sum peaks,
weak lines of other shells, a detector efficiency curve, absorption in the specimen) and against a
real Super-X spectrum quantified by exspy's own Cliff-Lorimer."""

import warnings

import numpy as np
import polars as pl
import pytest

from tests import eds_forward as F

ELEMENTS = ["Cr", "Fe", "La", "O", "Sr", "Ti"]
KF = {F.QUANTIFIED[e]: F.KFACTORS[F.QUANTIFIED[e]] for e in ELEMENTS}
CATIONS = ("La", "Fe", "Sr", "Ti", "Cr")


def _quantify(y, **kw):
    from mmlake.eds import quantify_spectrum

    return quantify_spectrum(y, 0.0, 0.01, ELEMENTS, kfactors=KF, **kw)


@pytest.fixture(scope="module")
def pure_spectra():
    """Region-sized (3 million counts) spectra of each phase at 25 nm thickness."""
    det = F.Detector()
    phases = {"LaFeO3": F.Phase(F.LFO, F.DENSITY["LaFeO3"], 25.0),
              "LaFeO3_O_rich": F.Phase(F.LFO_DISORDERED, F.DENSITY["amorphous"], 25.0),
              "SrTiO3": F.Phase(F.STO, F.DENSITY["SrTiO3"], 25.0),
              "Cr": F.Phase({"Cr": 100.0}, F.DENSITY["Cr"], 25.0)}
    return {k: (p, F.sample_counts(p, 3_000_000, det, np.random.default_rng(i))) for i, (k, p) in enumerate(phases.items())}


def test_the_generator_has_the_effects_the_fit_does_not_model():
    """Each effect is visibly in the spectra (so passing the tests below is not for want of it)."""
    import dataclasses

    det = F.Detector()
    sto = F.Phase(F.STO, F.DENSITY["SrTiO3"], 25.0)
    full = F.sample_counts(sto, 2_000_000, det, np.random.default_rng(0))
    bare = F.sample_counts(sto, 2_000_000, dataclasses.replace(det, escape=False, pileup=0.0), np.random.default_rng(0))
    ch = lambda e: int(round(e / det.scale_kev))  # noqa: E731
    esc = slice(ch(4.51 - 1.74) - 4, ch(4.51 - 1.74) + 5)  # Ti Ka escape at 2.77 keV
    assert full[esc].sum() - bare[esc].sum() > 8 * np.sqrt(bare[esc].sum())
    pile = slice(ch(2 * 4.51) - 5, ch(2 * 4.51) + 6)  # Ti Ka + Ti Ka sum peak at 9.02 keV
    assert full[pile].sum() - bare[pile].sum() > 8 * np.sqrt(bare[pile].sum() + 1)
    lines = dict(F.emission_lines(sto))
    assert any(abs(e - 0.452) < 0.01 for e in lines)  # Ti L beside O Ka: mmlake.synth never emits it
    assert F.efficiency(0.525) < 0.8 < F.efficiency(4.5)
    assert F.absorption_factor(F.STO, [0.525], 25.0, 5.12)[0] < 0.85


def test_cations_within_1_at_pct_on_pure_phases(pure_spectra):
    """With the specimen's thickness the absorption correction leaves every cation within 1 at.%;
    without it SrTiO3's O Ka (just above the Ti L edge) is absorbed so much that O comes out several
    at.% low -- the effect is real and the tolerance would catch it."""
    worst = {}
    for name, (phase, y) in pure_spectra.items():
        got = _quantify(y, thickness_nm=phase.thickness_nm, density_g_cm3=phase.density)
        for el in CATIONS:
            err = got[el] - phase.composition.get(el, 0.0)
            worst[(name, el)] = round(err, 3)
            assert abs(err) < 1.0, (name, el, got)
        assert abs(sum(got.values()) - 100.0) < 1e-3
    print("cation errors (at.%):", worst)
    raw = _quantify(pure_spectra["SrTiO3"][1])
    assert raw["O"] < 60.0 - 4.0 and raw["Ti"] > 21.0, raw


def test_o_shift_magnitude_within_1_at_pct(pure_spectra):
    """O rises by 3 at.% (La -1, Fe -2) from the ordered film to the O-rich one: the measured
    differences match within 1 at.%, corrected or not (same thickness, similar matrix)."""
    a, b = pure_spectra["LaFeO3"], pure_spectra["LaFeO3_O_rich"]
    for corr in (False, True):
        kw = lambda p: {"thickness_nm": p.thickness_nm, "density_g_cm3": p.density} if corr else {}  # noqa: E731
        qa, qb = _quantify(a[1], **kw(a[0])), _quantify(b[1], **kw(b[0]))
        for el in ("O", "La", "Fe"):
            want = F.LFO_DISORDERED[el] - F.LFO[el]
            assert abs((qb[el] - qa[el]) - want) < 1.0, (corr, el, qb[el] - qa[el], want)


@pytest.fixture(scope="module")
def scene():
    """Cr cap / LaFeO3 film with an O-rich amorphous block touching the cap / SrTiO3, 24 x 24 chips of
    10 px; labels = each chip's majority phase, so chips on the rough interfaces straddle two phases."""
    from mmlake.chips import ChipGrid
    from mmlake.descriptors import describe_session

    sc = F.film_under_cap(240, seed=0, thickness_nm=10.0)
    sums = F.chip_sums(sc, 10, F.Detector(), seed=1)
    labels = F.chip_fractions(sc, 10).argmax(axis=1)
    out = describe_session({("truth", "majority"): labels}, ChipGrid(10, 24, 24), None, sums, (0.0, 0.01), 300.0,
                           ELEMENTS, KF, 0.05, session_id="scene", class_names={"truth": sc.names})
    return sc, out


def _comp(out, role, col):
    reg = out.regions.filter(pl.col("role") == role)["region"][0]
    c = out.region_composition.filter(pl.col("region") == reg)
    return dict(zip(c["element"], c[col])), out.regions.filter(pl.col("region") == reg).row(0, named=True)


def test_core_composition_does_not_bleed(scene):
    """The amorphous film region next to the Cr cap: its boundary chips bring several at.% Cr into the
    whole-region composition; the core (chips not touching another label) has none, and its O is
    within 1 at.% of what was generated."""
    _, out = scene
    whole, reg = _comp(out, "film_disordered", "atomic_percent")
    core, _ = _comp(out, "film_disordered", "atomic_percent_core")
    assert whole["Cr"] > 2.5, whole  # the bleeding the core removes
    assert abs(core["Cr"]) < 0.5, core
    assert abs(core["O"] - F.LFO_DISORDERED["O"]) < 1.0 and abs(whole["O"] - F.LFO_DISORDERED["O"]) > 2.0, (core, whole)
    assert 0.3 < reg["boundary_share"] < 0.7 and reg["n_core_chips"] == round(reg["n_chips"] * (1 - reg["boundary_share"]))
    lo, _ = _comp(out, "film_disordered", "ci_low_core")
    hi, _ = _comp(out, "film_disordered", "ci_high_core")
    assert all(lo[e] <= core[e] <= hi[e] for e in core)


def test_scene_o_shift_with_interval(scene):
    """The core O shift matches the generated one within 1 at.%, its interval holds the generated
    percent difference and is significant; the whole-region figure is diluted by the cap."""
    _, out = scene
    sh = {r["element"]: r for r in out.composition_shift.iter_rows(named=True)}
    o = sh["O"]
    d_core = o["disordered_at_pct_core"] - o["ordered_at_pct_core"]
    assert abs(d_core - 3.0) < 1.0, o
    want = 100 * (F.LFO_DISORDERED["O"] - F.LFO["O"]) / F.LFO["O"]
    assert o["ci_low_core"] < want < o["ci_high_core"] and o["significant_core"], o
    assert o["percent_diff"] < o["percent_diff_core"] - 1.5, o  # whole: Cr dilutes the disordered film
    for el in ("La", "Fe"):
        r = sh[el]
        got = r["disordered_at_pct_core"] - r["ordered_at_pct_core"]
        assert abs(got - (F.LFO_DISORDERED[el] - F.LFO[el])) < 1.0, (el, r)


def test_real_fept_spectrum_agrees_with_exspy_cliff_lorimer():
    """exspy's bundled Super-X spectrum of FePt nanoparticles: mmlake's Fe:Pt and exspy's own
    Cliff-Lorimer (background windows, the same k-factors) within 1 at.%."""
    import exspy.data

    from mmlake.eds import quantify_spectrum

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        s = exspy.data.EDS_TEM_FePt_nanoparticles()
        k = {"Fe_Ka": 1.450226, "Pt_La": 5.075602}
        ref = s.deepcopy()
        ref.set_lines(["Fe_Ka", "Pt_La"])
        intensities = ref.get_lines_intensity(background_windows=ref.estimate_background_windows())
        comp = ref.quantification(intensities, method="CL", factors=[k[i.metadata.Sample.xray_lines[0]]
                                                                      for i in intensities],
                                  composition_units="atomic", plot_result=False, show_progressbar=False)
    exspy_at = {c.metadata.Sample.xray_lines[0].split("_")[0]: float(np.ravel(c.data)[0]) for c in comp}
    ax = s.axes_manager.signal_axes[0]
    md = s.metadata.Acquisition_instrument.TEM
    got, se = quantify_spectrum(s.data.astype(float), ax.offset, ax.scale, ["Fe", "Pt"], kfactors=k,
                                beam_energy_kev=float(md.beam_energy),
                                energy_resolution_mnka_ev=float(md.Detector.EDS.energy_resolution_MnKa),
                                lump_extraneous=False, with_error=True)
    # the extraneous list finds the carbon support film and the Cu grid; Fe:Pt renormalised to 100
    assert got["C"] > 50 and got["Cu"] > 2
    fe = 100 * got["Fe"] / (got["Fe"] + got["Pt"])
    print(f"Fe at.% of Fe+Pt: mmlake {fe:.2f} (counting se {se['Fe']:.2f} of {got['Fe']:.2f}), exspy {exspy_at['Fe']:.2f}")
    assert abs(fe - exspy_at["Fe"]) < 1.0, (fe, exspy_at)
    assert 14.0 < fe < 18.0
