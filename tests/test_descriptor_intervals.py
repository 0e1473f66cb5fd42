"""Descriptor uncertainties that can fail: interval coverage of region compositions and shifts over
repeated acquisitions, the d-spacing's standard error against its scatter, pooling over
acquisitions, the core of a region, and the sum check."""

import math

import numpy as np
import polars as pl
import pytest

from tests import eds_forward as F

ELEMENTS = ["Fe", "La", "O"]
KF = {F.QUANTIFIED[e]: F.KFACTORS[F.QUANTIFIED[e]] for e in ELEMENTS}
N_REP, N_CHIPS, COUNTS = 40, 30, 6000  # 40 acquisitions of a 30-chip region, 6000 counts per chip


@pytest.fixture(scope="module")
def expected():
    det = F.Detector()
    return {name: F.expected_spectrum(F.Phase(comp, 6.6, 0.0), 1.0, det, n_sample=2_000_000, seed=i)
            for i, (name, comp) in enumerate((("ordered", F.LFO), ("disordered", F.LFO_DISORDERED)))}


def _stack(pdfs, rng, heterogeneity=0.0):
    """Chips: Poisson counts of each expected spectrum (chip brightness varies by ``heterogeneity``)."""
    out = []
    for pdf in pdfs:
        lam = COUNTS * (1 + heterogeneity * rng.standard_normal(N_CHIPS)).clip(0.3)[:, None] * pdf[None, :]
        out.append(rng.poisson(lam))
    return np.concatenate(out).astype(np.float64)


def _compositions(chips, sets, rng, **kw):
    from mmlake.descriptors import chip_set_compositions
    from mmlake.eds import fit_chips

    fit = fit_chips(chips, 0.0, 0.01, ELEMENTS, kfactors=KF, include_extraneous=False)
    return chip_set_compositions(fit, sets, ELEMENTS, rng=rng, n_boot=300, **kw), fit


def test_composition_interval_covers_the_estimators_target(expected):
    """Over 40 repeated 30-chip regions, the 95 % chip-bootstrap interval holds the noise-free figure
    (the quantification of the expected spectrum) in >= 85 % of them, and is not inflated: its mean
    half-width is within 0.7-1.5 x 1.96 x the scatter of the estimates."""
    from mmlake.eds import quantify_spectrum

    rng = np.random.default_rng(0)
    pdf = expected["ordered"]
    target = quantify_spectrum(pdf * 1e9, 0.0, 0.01, ELEMENTS, kfactors=KF, include_extraneous=False)
    chips = np.concatenate([_stack([pdf], rng, heterogeneity=0.1) for _ in range(N_REP)])
    sets = [np.arange(i * N_CHIPS, (i + 1) * N_CHIPS) for i in range(N_REP)]
    comps, _ = _compositions(chips, sets, rng)
    for j, el in enumerate(ELEMENTS):
        est = np.array([c.at[j] for c in comps])
        lo, hi = np.array([c.ci_low[j] for c in comps]), np.array([c.ci_high[j] for c in comps])
        cover = np.mean((lo <= target[el]) & (target[el] <= hi))
        ratio = np.mean((hi - lo) / 2) / (1.96 * np.std(est, ddof=1))
        assert cover >= 0.85 and 0.7 < ratio < 1.5, (el, cover, ratio)
        # the chips differ in brightness, not in composition: counting error is all the scatter there is
        se = np.array([c.se[j] for c in comps])
        assert 0.8 < np.mean(se) / np.std(est, ddof=1) < 1.25, (el, np.mean(se), np.std(est, ddof=1))


def _shift_rows(comps_o, comps_d):
    from mmlake.descriptors import shift_table

    regions = [{"method": "m", "modality": "x", "region": 0, "role": "film_ordered", "n_chips": N_CHIPS,
                "n_core_chips": 0},
               {"method": "m", "modality": "x", "region": 1, "role": "film_disordered", "n_chips": N_CHIPS,
                "n_core_chips": 0}]
    comps = {("m", "x", 0): {"whole": comps_o, "core": None}, ("m", "x", 1): {"whole": comps_d, "core": None}}
    frame, reps = shift_table("s", regions, comps, ELEMENTS, ("La", "Fe", "O"))
    return {r["element"]: r for r in frame.iter_rows(named=True)}, reps


def test_shift_interval_significance_and_null(expected):
    """A 5 % O enrichment is significant in every acquisition; with no enrichment at all (both
    regions the same material) the interval holds 0 in >= 85 % of acquisitions."""
    rng = np.random.default_rng(1)
    n = 20
    for case, pdfs in (("enriched", [expected["ordered"], expected["disordered"]]),
                       ("null", [expected["ordered"], expected["ordered"]])):
        chips = np.concatenate([_stack(pdfs, rng, heterogeneity=0.1) for _ in range(n)])
        sets = [np.arange(i * N_CHIPS, (i + 1) * N_CHIPS) for i in range(2 * n)]
        comps, _ = _compositions(chips, sets, rng)
        rows = [_shift_rows(comps[2 * i], comps[2 * i + 1])[0]["O"] for i in range(n)]
        sig = np.array([r["significant"] for r in rows])
        zero_in = np.array([r["ci_low"] <= 0 <= r["ci_high"] for r in rows])
        if case == "enriched":
            assert sig.all(), rows[0]
            assert all(r["ci_low"] < 5.0 < r["ci_high"] for r in rows[:5]) or np.mean(
                [r["ci_low"] < 5.0 < r["ci_high"] for r in rows]) >= 0.7
        else:
            assert zero_in.mean() >= 0.85, [(r["ci_low"], r["ci_high"]) for r in rows]


def test_pooling_over_acquisitions():
    """One acquisition: the pooled figure is its own, with its own interval. Two acquisitions whose
    shifts differ: the pooled interval spans the between-acquisition spread, wider than either."""
    from mmlake.descriptors.bootstrap import interval, pool_replicates, rng_for

    rng = rng_for(0, "test")
    a = 3.0 + 0.3 * rng.standard_normal(400)
    est, lo, hi = pool_replicates([3.0], [a], rng)
    lo1, hi1 = interval(3.0, a)
    assert est == 3.0 and abs(lo - lo1) < 0.15 and abs(hi - hi1) < 0.15
    b = 6.0 + 0.3 * rng.standard_normal(400)
    est, lo, hi = pool_replicates([3.0, 6.0], [a, b], rng)
    assert est == 4.5 and hi - lo > 2.0 and lo < 3.3 and hi > 5.7


def test_d_spacing_standard_error_matches_scatter():
    """Over noise realisations of a lattice region, the tile-bootstrap standard error of the region's
    d-spacing is within 0.6-2x the scatter of the d-spacing itself (it is deliberately not the tiles'
    own scatter, ~20x larger here), and the interval holds the true spacing in most of them."""
    from mmlake.chips import ChipGrid
    from mmlake.descriptors import SquareRule, region_spacing
    from mmlake.descriptors.bootstrap import rng_for
    from tests.test_lattice import perovskite_image

    a, px, chip = 0.3905, 0.05, 16
    grid = ChipGrid(chip, 10, 10)
    mask = np.ones((10, 10), bool)
    d, se, cover = [], [], []
    for seed in range(12):
        img = perovskite_image(n=160, a=a, px=px, z_b=0.4, sigma=0.05, noise=0.3, seed=seed)
        sp = region_spacing(mask, 100, grid, img, px, SquareRule(), rng=rng_for(0, str(seed)), n_boot=300)
        assert sp.n_tiles >= 9 and sp.se_nm is not None
        d.append(sp.d_nm)
        se.append(sp.se_nm)
        cover.append(sp.ci_low <= a <= sp.ci_high)
    sd = float(np.std(d, ddof=1))
    print(f"d-spacing: mean se {np.mean(se):.5f} nm, scatter {sd:.5f} nm, coverage {np.mean(cover):.2f}")
    assert max(abs(x - a) for x in d) < 0.002
    assert 0.6 < float(np.mean(se)) / sd < 2.0, (np.mean(se), sd)
    assert np.mean(cover) >= 0.75, cover


def test_core_mask_erodes_at_other_labels_not_at_the_image_edge():
    from mmlake.descriptors import core_mask

    lab = np.zeros((6, 7), int)
    lab[:, 4:] = 1
    lab[5, 0] = -1  # unassigned chip
    core = core_mask(lab, 0)
    assert core[0, 0] and core[2, 2] and not core[2, 3]  # column 3 touches label 1
    assert not core[4, 0] and not core[4, 1]  # touch the unassigned chip (diagonally too)
    assert core_mask(lab, 1)[:, 5:].all() and not core_mask(lab, 1)[:, 4].any()
    assert (core_mask(lab, 0, erosion=0) == (lab == 0)).all()
    with pytest.raises(ValueError, match="erosion"):
        core_mask(lab, 0, erosion=-1)


def test_sum_check_fails_on_a_null_row_that_has_counts():
    """The check the lake runs: a region whose composition is NULL although its spectrum had counts
    fails (it used to be skipped as 'no counts'); NULL without counts passes; a row that does not
    sum to 100 fails."""
    from mmlake.descriptors import composition_frame_problems

    keys = {"session_id": "s", "method": "m", "modality": "x"}
    comp = pl.DataFrame([{**keys, "region": r, "element": e, "atomic_percent": v, "atomic_percent_core": v}
                         for r, vals in ((0, (20.0, 20.0, 60.0)), (1, (None, None, None)))
                         for e, v in zip(ELEMENTS, vals)])
    regions = pl.DataFrame([{**keys, "region": 0, "eds_counts": 1e5, "n_core_chips": 3, "core_eds_counts": 4e4},
                            {**keys, "region": 1, "eds_counts": 0.0, "n_core_chips": 0, "core_eds_counts": 0.0}])
    assert composition_frame_problems(comp, regions)[0] == []
    with_counts = regions.with_columns(pl.when(pl.col("region") == 1).then(5e4).otherwise(pl.col("eds_counts"))
                                       .alias("eds_counts"))
    problems, _ = composition_frame_problems(comp, with_counts)
    assert len(problems) == 1 and "NULL although the region has 50000 counts" in problems[0]
    off = comp.with_columns(pl.when((pl.col("region") == 0) & (pl.col("element") == "O")).then(55.0)
                            .otherwise(pl.col("atomic_percent")).alias("atomic_percent"))
    problems, meta = composition_frame_problems(off, regions)
    assert problems == ["s m/x region 0: atomic percents sum to 95.000"] and math.isclose(meta["max_abs_deviation"], 5.0)


def test_two_acquisitions_of_one_sample_and_dose_are_pooled(expected):
    """describe_session per acquisition, then pool_acquisitions: every session's rows carry the pooled
    shift (mean of the acquisitions' core shifts), its interval and n_acquisitions = 2; a partition of
    one acquisition carries its own figure."""
    from mmlake.chips import ChipGrid
    from mmlake.descriptors import describe_session, pool_acquisitions

    grid = ChipGrid(10, 12, 12)
    labels = np.repeat([0, 1], grid.n_chips // 2)  # ordered film on top, O-rich film below
    outs = []
    for seed in (3, 4):
        rng = np.random.default_rng(seed)
        lam = COUNTS * np.where(labels[:, None] == 0, expected["ordered"][None, :], expected["disordered"][None, :])
        outs.append(describe_session({("truth", "truth"): labels}, grid, None, rng.poisson(lam).astype(float),
                                     (0.0, 0.01), 300.0, ELEMENTS, KF, 0.05, session_id=f"acq{seed}",
                                     class_names={"truth": ["film_ordered", "film_disordered"]}, n_boot=200))
    own = [o.composition_shift.filter(pl.col("element") == "O").row(0, named=True) for o in outs]
    assert all(r["pair_n_acquisitions"] == 1 and r["pair_percent_diff"] == pytest.approx(r["percent_diff_core"])
               for r in own)
    pool_acquisitions(outs)
    rows = [o.composition_shift.filter(pl.col("element") == "O").row(0, named=True) for o in outs]
    mean = np.mean([r["percent_diff_core"] for r in own])
    for r in rows:
        assert r["pair_n_acquisitions"] == 2 and r["pair_basis"] == "core"
        assert r["pair_percent_diff"] == pytest.approx(mean) and r["pair_ci_low"] < mean < r["pair_ci_high"]
        assert r["pair_significant"]
    comp = outs[0].region_composition.filter((pl.col("element") == "O") & (pl.col("region") == 1)).row(0, named=True)
    assert comp["pair_n_acquisitions"] == 2 and comp["pair_ci_low"] < comp["pair_atomic_percent"] < comp["pair_ci_high"]
