"""EDS chip features (mmlake.eds): Cliff-Lorimer through exspy against the synthetic generator."""

import warnings
from pathlib import Path

import numpy as np
import pytest
import yaml

from mmlake import synth
from mmlake.chips import ChipGrid, sum_eds_chips
from mmlake.eds import (
    EXTRANEOUS_ELEMENTS,
    chip_spectra,
    load_kfactor_table,
    quantify_chips,
    quantify_spectrum,
    resolve_lines,
)
from mmlake.errors import SessionError

# Small but realistic: 160x160 px, 10 px chips (256 chips), ~40 counts/px -> ~4000 counts per chip.
SPEC = synth.SessionSpec("edstest", 0.1, chip_px=10, image_px=160, pixel_size_nm=0.05, cap_element="Pt",
                         defect_domains=True, amorphised=True, seed=8, counts_per_pixel=40.0)


@pytest.fixture(scope="module")
def session():
    geom = synth.make_geometry(SPEC)
    cube = synth.make_eds(SPEC, geom)
    grid = ChipGrid.fit(cube.shape[:2], SPEC.chip_px)
    sums, _ = sum_eds_chips(cube, grid)
    tiles = grid.tiles(geom.regions).reshape(grid.n_chips, -1)
    pure = (tiles == tiles[:, :1]).all(axis=1)
    return grid, sums, tiles[:, 0], pure


def quantify(sums, grid, **kw):
    return quantify_chips(sums, SPEC.energy_offset_kev, SPEC.energy_scale_kev, SPEC.elements,
                          grid=(grid.n_rows, grid.n_cols), kfactors=SPEC.kfactors,
                          energy_resolution_mnka_ev=SPEC.energy_resolution_mnka_ev, **kw)


def test_chip_composition_within_2_at_pct_of_generator(session):
    grid, sums, region, pure = session
    res = quantify(sums, grid)
    assert set(EXTRANEOUS_ELEMENTS) <= set(res.elements)  # all have lines in 0.2-20.5 keV
    assert list(res.lines) == sorted(res.lines)
    assert res.atomic_percent.shape == (grid.n_chips, len(res.elements))
    checked = []
    for rid, name in enumerate(synth.REGION_NAMES):
        inside = pure & (region == rid)
        if inside.sum() < 3:
            continue
        truth = SPEC.region_composition(name)
        mean = np.nanmean(res.atomic_percent[inside], axis=0)
        err = {el: float(mean[i] - truth.get(el, 0.0)) for i, el in enumerate(res.elements)}
        worst = max(abs(v) for v in err.values())
        assert worst < 2.0, (name, int(inside.sum()), err)
        checked.append(name)
    assert {"substrate", "film_ordered", "film_defect", "film_amorphous", "cap"} <= set(checked)
    # per chip, rows sum to 100
    np.testing.assert_allclose(np.nansum(res.atomic_percent, axis=1), 100.0, atol=1e-3)


def test_region_spectrum_composition_with_extraneous_remainder(session):
    grid, sums, region, pure = session
    film = sums[pure & (region == synth.REGION_NAMES.index("film_ordered"))].sum(axis=0)
    comp = quantify_spectrum(film, SPEC.energy_offset_kev, SPEC.energy_scale_kev, SPEC.elements,
                             kfactors=SPEC.kfactors)
    assert set(comp) == set(SPEC.elements) | {"Extraneous"}
    assert abs(sum(comp.values()) - 100.0) < 1e-3
    for el, v in SPEC.region_composition("film_ordered").items():
        assert abs(comp[el] - v) < 1.0, (el, comp)
    assert abs(comp["Extraneous"]) < 1.0 and comp["Sr"] < 0.5 and comp["Ti"] < 0.5
    each = quantify_spectrum(film, SPEC.energy_offset_kev, SPEC.energy_scale_kev, SPEC.elements,
                             kfactors=SPEC.kfactors, lump_extraneous=False)
    assert "Extraneous" not in each and {"C", "N", "Al", "Cu", "Ga"} <= set(each)


def test_zero_count_chip_is_nan_row_without_warnings(session):
    grid, sums, _, _ = session
    s = sums.copy()
    s[[0, 17]] = 0
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        res = quantify(s, grid)
    assert not [w for w in caught if "mmlake" in str(w.filename) or issubclass(w.category, RuntimeWarning)]
    assert np.isnan(res.atomic_percent[[0, 17]]).all()
    assert not np.isnan(res.atomic_percent[1:17]).any()
    assert res.total_counts[0] == 0
    empty = quantify_spectrum(np.zeros(SPEC.n_channels), 0.0, 0.01, SPEC.elements, kfactors=SPEC.kfactors)
    assert all(np.isnan(v) for v in empty.values())


def _two_element_spectrum(k, comp, n_ch=1024, scale=0.01):
    """Noise-free Ti + Fe spectrum whose quantified line areas follow I ~ w / k (CL convention)."""
    from mmlake.eds import _binned_gauss, fwhm_kev, line_family

    e = scale * np.arange(n_ch)
    edges = np.concatenate([e - scale / 2, [e[-1] + scale / 2]])
    w = synth.weight_fractions(comp)
    y = 50.0 * np.ones(n_ch)
    for el, line in (("Ti", "Ti_Ka"), ("Fe", "Fe_Ka")):
        for _, en, rel in line_family(line):
            y += 1e6 * w[el] / k[line] * rel * _binned_gauss(edges, en, float(fwhm_kev(en)))
    return y


def test_kfactors_matched_by_line_name_not_declaration_order():
    # declared Ti before Fe; exspy orders lines alphabetically (Fe_Ka, Ti_Ka)
    k = {"Ti_Ka": 0.5, "Fe_Ka": 2.0}
    comp = {"Ti": 30.0, "Fe": 70.0}
    y = _two_element_spectrum(k, comp)
    res = quantify_chips(y[None], 0.0, 0.01, ["Ti", "Fe"], kfactors=k, include_extraneous=False)
    assert res.elements == ("Fe", "Ti") and res.lines == ("Fe_Ka", "Ti_Ka")
    assert res.setup.kfactor("Ti_Ka") == 0.5 and res.setup.kfactor("Fe_Ka") == 2.0
    got = {el: float(res.atomic_percent[0, i]) for i, el in enumerate(res.elements)}
    assert abs(got["Ti"] - 30.0) < 0.3 and abs(got["Fe"] - 70.0) < 0.3, got
    # what zipping k-factors in declaration order ([0.5, 2.0] onto [Fe_Ka, Ti_Ka]) would give:
    swapped = quantify_chips(y[None], 0.0, 0.01, ["Ti", "Fe"], kfactors={"Ti_Ka": 2.0, "Fe_Ka": 0.5},
                             include_extraneous=False)
    assert abs(float(swapped.column("Ti")[0]) - 30.0) > 20  # the test above would catch that bug


def test_windows_method_is_biased_by_line_overlaps():
    """Why intensity_method='fit' is the default: exspy's background windows on LaFeO3 see La L lines
    inside the Ti_Ka window (and SrTiO3's Ti_Ka inside La_La's) -> several at.% of phantom Ti/La."""
    spec = synth.SessionSpec("w", 0.0, chip_px=10, image_px=32, pixel_size_nm=0.05, cap_element="Cr")
    regions = ["substrate", "film_ordered"]
    y = np.stack([synth.region_spectrum(spec, r)[0] * 1e7 for r in regions])
    fit = quantify_chips(y, 0.0, 0.01, spec.elements, kfactors=spec.kfactors, include_extraneous=False)
    win = quantify_chips(y, 0.0, 0.01, spec.elements, kfactors=spec.kfactors, include_extraneous=False,
                         intensity_method="windows")
    for i, r in enumerate(regions):
        truth = spec.region_composition(r)
        err_fit = max(abs(float(fit.column(el)[i]) - truth.get(el, 0.0)) for el in fit.elements)
        err_win = max(abs(float(win.column(el)[i]) - truth.get(el, 0.0)) for el in win.elements)
        assert err_fit < 0.5 and err_win > 2.0, (r, err_fit, err_win)
    assert float(win.column("Ti")[1]) > 2.0  # phantom Ti in the LaFeO3 film


def test_clear_errors_name_the_element():
    rng = (0.2, 20.0)
    with pytest.raises(ValueError, match=r"unknown element symbol\(s\) \['Xx'\]"):
        resolve_lines(["Fe", "Xx"], energy_range_kev=rng)
    with pytest.raises(ValueError, match="element Li cannot be quantified: no X-ray line of Li"):
        resolve_lines(["Li", "O"], energy_range_kev=rng)
    with pytest.raises(SessionError, match=r"s@0: element Mn cannot be quantified: no k-factor.*kfactors"):
        resolve_lines(["Mn", "O"], energy_range_kev=rng, session="s@0")
    with pytest.raises(ValueError, match="element Fe cannot be quantified.*outside"):
        resolve_lines(["Fe"], energy_range_kev=(0.2, 5.0), kfactors={"Fe_Ka": 1.0})
    with pytest.raises(ValueError, match="'Fe_Kz' is not an X-ray line"):
        resolve_lines(["Fe"], energy_range_kev=rng, kfactors={"Fe_Kz": 1.0})
    # extraneous elements out of range are skipped with the reason, declared ones are kept
    setup = resolve_lines(["Fe", "O"], energy_range_kev=(0.2, 5.0), kfactors={"Fe_La": 2.35, "O_Ka": 1.6})
    assert "Fe_La" in setup.lines and setup.kfactor_source[setup.lines.index("Fe_La")] == "session"
    assert "Cu_La" in setup.lines  # Cu_La (0.93 keV) from the table replaces Cu_Ka (8.05 keV)
    assert {"Ga_La", "Pt_Ma"} <= set(setup.lines) and "Cr" in setup.skipped
    with pytest.raises(ValueError, match="grid"):
        quantify_chips(np.ones((6, 100)), 0.2, 0.05, ["Fe", "O"], grid=(2, 2))


def test_chip_spectra_crop_and_rebin():
    sums = np.arange(2 * 100, dtype=np.float32).reshape(2, 100)
    out, off, sc = chip_spectra(sums, 0.0, 0.01)
    assert out.shape == (2, 80) and abs(off - 0.2) < 1e-9 and sc == 0.01
    out2, off2, sc2 = chip_spectra(sums, 0.0, 0.01, rebin=4)
    assert out2.shape == (2, 20) and sc2 == 0.04 and abs(off2 - 0.215) < 1e-9
    np.testing.assert_allclose(out2.sum(axis=1), out.sum(axis=1))
    full, off3, _ = chip_spectra(sums, -0.1, 0.01, min_energy_kev=None)
    assert full.shape == (2, 100) and off3 == -0.1
    with pytest.raises(ValueError, match="leaves"):
        chip_spectra(sums, 0.0, 0.001)


def test_default_kfactor_table_matches_generator_and_is_documented():
    table = load_kfactor_table()
    for line, k in synth.KFACTORS.items():
        assert table.kfactors[line] == pytest.approx(k), line
    for el in EXTRANEOUS_ELEMENTS:
        assert table.preferred_lines[el][0] in table.kfactors
    text = (Path(__import__("mmlake").__file__).parent / "data" / "kfactors.yaml").read_text()
    assert "NOT A CALIBRATION" in text and yaml.safe_load(text)["default_table"] == table.name


# ------------------------------------------------------------------ counting error, closed form, NULLs


def test_counting_error_matches_poisson_scatter():
    """The propagated Poisson standard error of every at.% equals the scatter of the at.% over
    Poisson realisations of the same spectrum (within 15 %)."""
    spec = synth.SessionSpec("se", 0.0, chip_px=10, image_px=32, pixel_size_nm=0.05, cap_element="Cr")
    pdf, _ = synth.region_spectrum(spec, "film_ordered")
    rng = np.random.default_rng(5)
    y = rng.poisson(pdf * 20_000, size=(300, len(pdf))).astype(np.float32)  # 300 chips of ~20k counts
    res = quantify_chips(y, 0.0, 0.01, spec.elements, kfactors=spec.kfactors, include_extraneous=False)
    for el in ("La", "Fe", "O"):
        i = res.elements.index(el)
        sd = float(np.std(res.atomic_percent[:, i], ddof=1))
        se = float(np.mean(res.counting_se[:, i]))
        assert 0.85 < se / sd < 1.15, (el, se, sd)


def test_closed_form_cliff_lorimer_equals_exspy(session):
    """Bootstrap replicates use the closed form; it must be exspy's CL exactly."""
    from mmlake.eds import cl_atomic_percent

    grid, sums, _, _ = session
    res = quantify(sums, grid)
    closed = cl_atomic_percent(res.intensities.astype(np.float64), res.setup)
    np.testing.assert_allclose(closed, res.atomic_percent, atol=2e-3)


def test_exspy_array_path_equals_exspy_signal_quantification(session):
    """exspy_cliff_lorimer calls exspy's CL functions on arrays; it must be what
    EDSTEMSpectrum.quantification returns for the same intensities (with rows where one line or none
    is above exspy's threshold, and intensities handed to exspy in reverse order)."""
    from mmlake.eds.cliff_lorimer import exspy_cliff_lorimer, exspy_cliff_lorimer_signals
    from mmlake.eds.spectra import exspy_signal

    grid, sums, _, _ = session
    res = quantify(sums, grid)
    I = res.intensities.astype(np.float64)[:64].copy()
    I[1, 1:] = 0.0  # one line only
    I[2, :] = 0.05  # none above 0.1 counts
    valid = np.ones(len(I), dtype=bool)
    valid[3] = False
    s = exspy_signal(np.ones((len(I), 32)), 0.0, 0.01, 300.0, 130.0, res.setup)
    fast = exspy_cliff_lorimer(s, res.setup, I, valid, (len(I),))
    ref = exspy_cliff_lorimer_signals(s, res.setup, I, valid, (len(I),))
    assert fast.shape == ref.shape == (len(I) - 1, len(res.setup.lines))
    np.testing.assert_allclose(fast, ref, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(fast[3:], res.atomic_percent[4:64], atol=1e-5)  # rows 4.. untouched (stored float32)


def test_only_empty_or_lineless_chips_are_null_and_odd_rows_are_kept(session, monkeypatch):
    """NULL means 'no counts' or 'no line above exspy's threshold', with the reason; a row that does
    not sum to 100 for any other reason is returned as it is (the lake's sum check must see it)."""
    import mmlake.eds.quantify as q

    _, sums, _, _ = session
    s = sums[:48].copy()
    s[3] = 0
    s[5] = 0
    s[5, 300] = 1  # one count: no line above 0.1 counts
    one = lambda x: quantify_chips(x, SPEC.energy_offset_kev, SPEC.energy_scale_kev, SPEC.elements,  # noqa: E731
                                   kfactors=SPEC.kfactors, include_extraneous=False)
    res = one(s)
    assert res.null_reason[3] == "no_counts" and res.null_reason[5] == "no_line"
    assert res.params["n_null"] == {"no_counts": 1, "no_line": 1} and res.params["n_rows_not_100"] == 0
    real = q.exspy_cliff_lorimer
    monkeypatch.setattr(q, "exspy_cliff_lorimer", lambda *a: real(*a) * 0.9)  # a broken CL
    bad = one(s)
    ok = np.array([r is None for r in bad.null_reason])
    assert not np.isnan(bad.atomic_percent[ok]).any()  # kept, not turned into NULL
    np.testing.assert_allclose(np.nansum(bad.atomic_percent[ok], axis=1), 90.0, atol=0.01)
    assert bad.params["n_rows_not_100"] == int(ok.sum())
