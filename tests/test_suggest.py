"""Active labelling (mmlake.suggest): the chips suggested for labelling improve the few-shot
segmentation more than as many random chips; the suggestions respect the support, the image edge
and each other."""

import dataclasses

import numpy as np
import pytest
from sklearn.metrics import adjusted_mutual_info_score as ami

from mmlake.suggest import suggest_chips, uncertainty


@pytest.fixture(scope="module")
def session():
    """A defective, amorphised session (defect domains and amorphous film share a class): EDS
    Cliff-Lorimer and FFT lattice features per chip, and the majority truth label of each chip."""
    from mmlake import synth
    from mmlake.chips import ChipGrid, centred_windows, majority_labels, sum_eds_chips
    from mmlake.eds import quantify_chips
    from mmlake.lattice import crystallinity_stack

    spec = dataclasses.replace(synth.DEMO_CAMPAIGN[3], image_px=320, n_channels=1024, energy_scale_kev=0.014)
    haadf, eds, truth = synth.make_arrays(spec)
    grid = ChipGrid.fit(haadf.shape, spec.chip_px)
    sums, _ = sum_eds_chips(eds, grid)
    res = quantify_chips(sums, 0, spec.energy_scale_kev, spec.elements, kfactors=spec.kfactors,
                         include_extraneous=False)
    _, window = centred_windows(haadf, grid, 48)
    st = crystallinity_stack(window(slice(0, grid.n_chips)))
    feats = {"eds": np.nan_to_num(res.atomic_percent.astype(float)),
             "haadf": np.stack([st["peak"], st["lattice2d"], np.nan_to_num(st["period_px"])], axis=1)}
    return grid, feats, majority_labels(truth, grid)


def _fewshot(feats, support):
    from mmlake.segment.fewshot import FewShotSegmenter

    s = FewShotSegmenter(support=support).fit(feats)
    return s.labels_, s.proba_


def test_suggested_chips_beat_random_chips(session):
    """From one support chip per class, add 8 labelled chips: the suggested ones raise AMI against
    truth more than 8 random ones (5 draws per seed), averaged over 10 seeds of the initial support."""
    grid, feats, y = session
    gain_s, gain_r = [], []
    for seed in range(10):
        rng = np.random.default_rng(seed)
        support = {str(c): [int(rng.choice(np.flatnonzero(y == c)))] for c in range(4)}
        labels, proba = _fewshot(feats, support)
        base = ami(y, labels)

        def with_labelled(chips):
            s = {k: list(v) for k, v in support.items()}
            for c in chips:
                s[str(y[c])].append(int(c))  # the person labelling gives the chip's true class
            return ami(y, _fewshot(feats, s)[0]) - base

        sug = suggest_chips(proba, (grid.n_rows, grid.n_cols), support, 8, class_names=list(support))
        gain_s.append(with_labelled([s.chip_index for s in sug]))
        pool = np.setdiff1d(np.arange(grid.n_chips), [c for v in support.values() for c in v])
        gain_r.append(np.mean([with_labelled(rng.choice(pool, 8, replace=False)) for _ in range(5)]))
    print(f"mean AMI gain: suggested {np.mean(gain_s):+.3f}, random {np.mean(gain_r):+.3f}")
    assert np.mean(gain_s) > np.mean(gain_r) + 0.01, (gain_s, gain_r)


def test_suggestions_are_uncertain_spread_and_away_from_support():
    rng = np.random.default_rng(0)
    n_rows = n_cols = 20
    p = rng.dirichlet([5, 5, 5], size=n_rows * n_cols)
    p[::7] = [0.34, 0.33, 0.33]  # very uncertain chips, some on the edge, some next to support
    support = {"a": [21 * 5], "b": [n_cols * 10 + 10], "c": [n_cols * 15 + 3]}
    sug = suggest_chips(p, (n_rows, n_cols), support, 6, class_names=["a", "b", "c"], interior=False)
    assert len(sug) == 6 and len({s.chip_index for s in sug}) == 6
    u = uncertainty(p)
    for s in sug:
        assert s.chip_index == s.row * n_cols + s.col and abs(s.score - u[s.chip_index]) < 1e-12
        assert 1 <= s.row < n_rows - 1 and 1 <= s.col < n_cols - 1  # not on the image edge
        for chips in support.values():
            for c in chips:
                assert max(abs(s.row - c // n_cols), abs(s.col - c % n_cols)) > 1
        assert s.top_p >= s.second_p and s.top_class != s.second_class
    spacing = 0.5 * np.sqrt(n_rows * n_cols / 6)
    for i, a in enumerate(sug):
        for b in sug[i + 1:]:
            assert np.hypot(a.row - b.row, a.col - b.col) >= spacing
    assert np.mean([s.score for s in sug]) > np.quantile(u, 0.9)
    assert uncertainty(np.array([[0.5, 0.5], [1.0, 0.0]])).tolist() == [1.0, 0.0]
    with pytest.raises(ValueError, match="score"):
        uncertainty(p, "variance")
    with pytest.raises(ValueError, match="one row per chip"):
        suggest_chips(p[:-1], (n_rows, n_cols), support)
