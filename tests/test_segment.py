"""Segmentation library: known-answer tests on synthetic multi-modal features.

Data: ``make_multimodal_blobs`` -- 4 classes (0 substrate, 1 film_ordered, 2 film_disordered, 3 cap).
The "haadf" (512-d) modality confuses classes 0 and 2, the "eds" (12-d at.%) modality confuses 1
and 2: each alone separates 3 groups, only both together separate all 4.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.metrics.pairwise import cosine_similarity

from mmlake.segment import (
    FewShotSegmenter,
    LouvainSegmenter,
    WardSegmenter,
    ami,
    chip_truth,
    modality_agreement,
    segment_modalities,
    threshold_statistic,
    truth_scores,
    vector_vote,
)
from mmlake.segment.synthetic import make_multimodal_blobs

N = 240


@pytest.fixture(scope="module")
def data():
    features, truth = make_multimodal_blobs(N, random_state=0)
    return features, truth


def merged(truth, a, b):
    """Truth with classes a and b merged into a (what a modality confusing a/b can at best find)."""
    return np.where(truth == b, a, truth)


def support_of(truth, per_class=4, seed=1):
    rng = np.random.default_rng(seed)
    return {
        name: rng.choice(np.flatnonzero(truth == c), per_class, replace=False).tolist()
        for c, name in enumerate(["substrate", "film_ordered", "film_disordered", "cap"])
    }


def upper(s):
    return s[np.triu_indices(s.shape[0], 1)]


# ------------------------------------------------------------------------------------------- Louvain


@pytest.fixture(scope="module")
def louvain_runs(data):
    features, _ = data
    return segment_modalities(LouvainSegmenter(), features)


def test_louvain_single_modality_finds_its_separable_groups(data, louvain_runs):
    _, truth = data
    assert ami(louvain_runs["haadf"]["labels"], merged(truth, 0, 2)) >= 0.9
    assert ami(louvain_runs["eds"]["labels"], merged(truth, 1, 2)) >= 0.9


def test_louvain_ensemble_recovers_truth_and_beats_each_modality(data, louvain_runs):
    _, truth = data
    ens = ami(louvain_runs["ensemble"]["labels"], truth)
    assert ens >= 0.9
    for m in ("haadf", "eds"):
        assert ens > ami(louvain_runs[m]["labels"], truth) + 0.05
    p = louvain_runs["ensemble"]["params"]
    assert p["modalities"] == ["haadf", "eds"]
    assert p["modality_weights_used"] == {"haadf": 0.5, "eds": 0.5}
    assert p["ensemble_rule"] == "average_similarity"


def test_louvain_ensemble_really_uses_both_similarities(data, louvain_runs):
    """pnnl/GraphEM thresholded the EDS similarity for its 'ensemble': ours must differ from EDS-only."""
    features, truth = data
    eds_only = louvain_runs["eds"]["labels"]
    ens = louvain_runs["ensemble"]["labels"]
    assert ami(ens, eds_only) < 0.95
    # the classes EDS confuses (1 vs 2) are separated by the ensemble, not by EDS alone
    sel = np.isin(truth, [1, 2])
    assert ami(ens[sel], truth[sel]) > 0.9
    assert ami(eds_only[sel], truth[sel]) < 0.2
    # weights are applied: all weight on one modality reproduces that modality alone
    only_eds = LouvainSegmenter(modality_weights={"haadf": 0.0, "eds": 1.0}).fit(features)
    assert np.array_equal(only_eds.labels_, eds_only)
    assert only_eds.threshold_ == pytest.approx(louvain_runs["eds"]["params"]["threshold_value"], abs=1e-6)
    # shuffling the HAADF rows changes the ensemble (HAADF enters it), not the EDS-only result
    rng = np.random.default_rng(0)
    shuffled = {"haadf": features["haadf"][rng.permutation(N)], "eds": features["eds"]}
    assert not np.array_equal(LouvainSegmenter().fit_predict(shuffled), ens)


@pytest.mark.parametrize("statistic", ["mode", "median", "mean", 0.8])
def test_louvain_threshold_recorded_is_the_statistic(data, statistic):
    features, _ = data
    s = 0.5 * (cosine_similarity(features["haadf"]) + cosine_similarity(features["eds"]))
    vals = upper(s)
    est = LouvainSegmenter(threshold=statistic).fit(features)
    p = est.params_
    if statistic == "mode":
        counts, edges = np.histogram(vals, bins=100)
        b = np.argmax(counts)
        expected = 0.5 * (edges[b] + edges[b + 1])
        assert p["threshold_statistic"] == "mode" and p["n_bins"] == 100
        assert len(est.histogram_["counts"]) == 100 and sum(est.histogram_["counts"]) == vals.size
    elif statistic == "median":
        expected = np.median(vals)
    elif statistic == "mean":
        expected = np.mean(vals)
    else:
        expected = 0.8
        assert p["threshold_statistic"] == "value"
    assert p["threshold_value"] == pytest.approx(expected, abs=1e-5)
    assert est.threshold_ == p["threshold_value"]
    # every pair above the threshold is an edge (the graph is small enough not to be sparsified)
    assert not p["sparsified"]
    assert abs(p["n_edges_above_threshold"] - int((vals > p["threshold_value"]).sum())) <= 3
    assert p["n_edges"] == p["n_edges_above_threshold"] - p["n_nonpositive_edges_dropped"]
    if statistic == "median":
        assert abs(p["n_edges"] - vals.size // 2) <= 3


def test_similarity_pass_matches_brute_force(monkeypatch):
    """Block-wise similarities, upper-triangle order, kNN and index arithmetic against plain numpy."""
    from mmlake.segment import louvain
    from mmlake.segment.louvain import _pair_pass, _unit_rows, _upper_index_to_pairs

    monkeypatch.setattr(louvain, "_BLOCK_ELEMENTS", 100)  # blocks of 2 rows: many blocks, a ragged last one
    rng = np.random.default_rng(0)
    n = 37
    a, b = rng.random((n, 6)), rng.random((n, 3))
    ua, ub = _unit_rows(a, "a"), _unit_rows(b, "b")
    s = 0.25 * cosine_similarity(a) + 0.75 * cosine_similarity(b)
    vals, idx, val = _pair_pass([ua, ub], [0.25, 0.75], k=5)
    np.testing.assert_allclose(vals, upper(s), atol=1e-6)
    np.fill_diagonal(s, -np.inf)
    for i in range(n):
        assert set(idx[i]) == set(np.argsort(-s[i])[:5])
        np.testing.assert_allclose(np.sort(val[i]), np.sort(s[i, idx[i]]), atol=1e-6)
    lin = np.arange(n * (n - 1) // 2)
    i, j = _upper_index_to_pairs(lin, n)
    ti, tj = np.triu_indices(n, 1)
    assert np.array_equal(i, ti) and np.array_equal(j, tj)


def test_full_similarities_are_the_block_pass_bit_for_bit(monkeypatch):
    """The per-modality matrices held for every weighting give exactly the block pass's numbers."""
    from mmlake.segment import louvain
    from mmlake.segment.louvain import _full_similarities, _pair_pass, _unit_rows

    monkeypatch.setattr(louvain, "_BLOCK_ELEMENTS", 100)
    rng = np.random.default_rng(1)
    ua, ub = _unit_rows(rng.random((37, 6)), "a"), _unit_rows(rng.random((37, 3)), "b")
    full = _full_similarities([ua, ub])
    for w in ([0.3, 0.7], [0.0, 1.0], [1.0, 0.0]):
        plain, pi, pv = _pair_pass([ua, ub], w, k=4)
        held, hi, hv = _pair_pass([ua, ub], w, k=4, full=full)
        assert np.array_equal(plain, held) and np.array_equal(pi, hi) and np.array_equal(pv, hv)
    monkeypatch.setattr(louvain, "_FULL_SIM_BYTES", 10)
    assert _full_similarities([ua, ub]) is None


def test_louvain_memo_reuses_identical_graphs_only(data):
    """Single-modality fits, the ensemble and the auto grid's w = 0, 0.5, 1 build the same graphs:
    Louvain runs once for each, and a memoised result is exactly a fresh one."""
    from mmlake.segment import louvain

    features, _ = data
    louvain._memo.clear()
    eds = LouvainSegmenter().fit({"eds": features["eds"]})
    ens = LouvainSegmenter().fit(features)
    auto = LouvainSegmenter(modality_weights="auto").fit(features)
    assert len(louvain._memo) == 2 + len(auto.params_["weight_selection"]["grid"]) - 2
    louvain._memo.clear()
    for again, first in ((LouvainSegmenter().fit({"eds": features["eds"]}), eds),
                         (LouvainSegmenter().fit(features), ens),
                         (LouvainSegmenter(modality_weights="auto").fit(features), auto)):
        assert np.array_equal(again.labels_, first.labels_) and again.params_ == first.params_
    other = LouvainSegmenter(resolution=0.5).fit(features)  # another parameter: another graph partition
    assert "memoised" not in other.timings_
    assert "memoised" in LouvainSegmenter().fit(features).timings_


def test_threshold_statistic_function():
    v = np.array([0.1, 0.2, 0.2, 0.2, 0.9], dtype=np.float32)
    assert threshold_statistic(v, "median")[0] == pytest.approx(0.2)
    assert threshold_statistic(v, "mean")[0] == pytest.approx(0.32)
    value, hist = threshold_statistic(v, "mode", n_bins=4)  # bins of 0.2 from 0.1: [0.1, 0.3) holds 4
    assert value == pytest.approx(0.2) and hist["counts"] == [4, 0, 0, 1]
    assert threshold_statistic(v, 0.5)[0] == 0.5


def test_louvain_unweighted_and_resolution_recorded(data):
    features, truth = data
    est = LouvainSegmenter(weighted=False, resolution=1.0).fit(features)
    assert est.params_["edge_weights"] == "unweighted" and est.params_["weighted"] is False
    assert ami(est.labels_, truth) >= 0.8
    assert LouvainSegmenter().fit(features).params_["edge_weights"] == "cosine_similarity"


def test_louvain_sparsifies_large_graphs_to_knn(data):
    features, truth = data
    est = LouvainSegmenter(max_edges=3000).fit(features)
    p = est.params_
    assert p["sparsified"] is True and p["n_neighbors"] == 3000 // N
    assert p["n_edges"] <= 3000 < p["n_edges_above_threshold"]
    assert ami(est.labels_, truth) >= 0.9
    exact = LouvainSegmenter(max_edges=None).fit(features).params_
    assert exact["sparsified"] is False and exact["n_neighbors"] is None
    assert exact["threshold_value"] == pytest.approx(p["threshold_value"], abs=1e-6)


def test_louvain_is_deterministic_and_labels_are_first_appearance(data):
    features, _ = data
    a = LouvainSegmenter(random_state=3).fit(features)
    b = LouvainSegmenter(random_state=3).fit(features)
    assert np.array_equal(a.labels_, b.labels_)
    assert a.params_ == b.params_
    lab = a.labels_
    firsts = [int(np.flatnonzero(lab == k)[0]) for k in range(lab.max() + 1)]
    assert firsts == sorted(firsts) and lab[0] == 0
    assert lab.dtype == np.int64 and set(lab) == set(range(a.n_labels_))


def test_louvain_auto_weight_rescues_a_noisy_modality():
    """Noisy HAADF: the plain average fails; the modularity-chosen weight recovers all 4 classes."""
    features, truth = make_multimodal_blobs(N, image_noise=2.0, random_state=0)
    equal = LouvainSegmenter().fit(features)
    auto = LouvainSegmenter(modality_weights="auto").fit(features)
    sel = auto.params_["weight_selection"]
    assert len(sel["grid"]) == 11 and len(sel["scores"]) == 11
    assert 0.0 < sel["chosen"] < 1.0
    assert auto.params_["modality_weights_used"] == pytest.approx({"haadf": sel["chosen"], "eds": 1 - sel["chosen"]})
    assert sel["scores"][sel["grid"].index(sel["chosen"])] == max(sel["scores"])
    assert ami(equal.labels_, truth) < 0.8
    assert ami(auto.labels_, truth) >= 0.95


# ------------------------------------------------------------------------------------------- Ward


def test_ward_single_modalities_and_vector_vote(data):
    features, truth = data
    runs = segment_modalities(WardSegmenter(n_clusters=3), features)
    assert ami(runs["haadf"]["labels"], merged(truth, 0, 2)) >= 0.99
    assert ami(runs["eds"]["labels"], merged(truth, 1, 2)) >= 0.99
    ens = runs["ensemble"]["labels"]
    assert np.array_equal(ens, vector_vote(runs["haadf"]["labels"], runs["eds"]["labels"]))
    assert ami(ens, truth) >= 0.99
    for m in ("haadf", "eds"):
        assert ami(ens, truth) > ami(runs[m]["labels"], truth) + 0.1
    assert runs["ensemble"]["params"]["ensemble_rule"] == "vector_vote"
    assert runs["ensemble"]["params"]["n_labels"] == 4


@pytest.mark.parametrize("standardize", ["block", "zscore"])
def test_ward_concatenation_uses_both_modalities(data, standardize):
    features, truth = data
    est = WardSegmenter(n_clusters=4, standardize=standardize).fit(features)
    assert ami(est.labels_, truth) >= 0.9
    assert est.params_["standardize"] == standardize and est.params_["n_labels"] == 4


def test_ward_block_standardisation_equalises_modalities(data):
    """Scaling one modality by 1000 changes nothing: each block is brought to unit total variance."""
    features, _ = data
    a = WardSegmenter(n_clusters=4).fit_predict(features)
    b = WardSegmenter(n_clusters=4).fit_predict({"haadf": features["haadf"] * 1000, "eds": features["eds"]})
    assert np.array_equal(a, b)
    raw = WardSegmenter(n_clusters=4, standardize=None).fit_predict(
        {"haadf": features["haadf"] * 1000, "eds": features["eds"]}
    )
    assert not np.array_equal(a, raw)


# ------------------------------------------------------------------------------------------- few-shot


def test_fewshot_single_and_fused(data):
    features, truth = data
    support = support_of(truth)
    runs = segment_modalities(FewShotSegmenter(support), features)
    # a modality alone separates what it can see (the confused pair is one group)
    img = merged(runs["haadf"]["labels"], 0, 2)
    eds = merged(runs["eds"]["labels"], 1, 2)
    assert ami(img, merged(truth, 0, 2)) >= 0.9
    assert ami(eds, merged(truth, 1, 2)) >= 0.9
    fused = runs["ensemble"]["labels"]
    assert ami(fused, truth) >= 0.95 and (fused == truth).mean() >= 0.98
    for m in ("haadf", "eds"):
        assert ami(fused, truth) > ami(runs[m]["labels"], truth) + 0.1


def test_fewshot_attributes_and_weights(data):
    features, truth = data
    support = support_of(truth)
    est = FewShotSegmenter(support, modality_weights={"eds": 0.55, "haadf": 0.45}).fit(features)
    assert est.classes_ == ["substrate", "film_ordered", "film_disordered", "cap"]
    assert est.proba_.shape == (N, 4)
    np.testing.assert_allclose(est.proba_.sum(axis=1), 1.0)
    assert np.array_equal(est.labels_, est.proba_.argmax(axis=1))
    np.testing.assert_allclose(est.proba_, 0.45 * est.proba_by_modality_["haadf"] + 0.55 * est.proba_by_modality_["eds"])
    assert est.params_["modality_weights_used"] == {"haadf": 0.45, "eds": 0.55}
    assert est.params_["classes"] == est.classes_ and est.params_["n_labels"] == 4
    for c, chips in enumerate(support.values()):  # support chips land in their own class
        assert (est.labels_[chips] == c).all()
    # prototype = mean of the standardised support chips
    x = features["eds"].astype(float)
    z = (x - x.mean(0)) / np.sqrt(x.var(0).sum())
    np.testing.assert_allclose(est.prototypes_["eds"][3], z[support["cap"]].mean(0), atol=1e-9)
    # all weight on HAADF = HAADF alone
    only = FewShotSegmenter(support, modality_weights=[1.0, 0.0]).fit_predict(features)
    assert np.array_equal(only, FewShotSegmenter(support).fit_predict(features["haadf"]))


def test_fewshot_auto_weight_ignores_a_noise_modality():
    features, truth = make_multimodal_blobs(N, image_noise=3.0, image_confused=None, random_state=0)
    rng = np.random.default_rng(100)
    feats = {"haadf": features["haadf"], "noise": rng.normal(size=(N, 12))}
    support = support_of(truth)
    equal = FewShotSegmenter(support).fit(feats)
    auto = FewShotSegmenter(support, modality_weights="auto").fit(feats)
    sel = auto.params_["weight_selection"]
    assert sel["n_support_scored"] == 16 and len(sel["scores"]) == 11
    assert sel["chosen"] >= 0.8
    assert auto.params_["modality_weights_used"]["haadf"] == pytest.approx(sel["chosen"])
    assert ami(equal.labels_, truth) < 0.5
    assert ami(auto.labels_, truth) >= 0.9


def test_fewshot_auto_weight_ties_go_to_half(data):
    features, truth = data
    auto = FewShotSegmenter(support_of(truth), modality_weights="auto").fit(features)
    sel = auto.params_["weight_selection"]
    assert sel["chosen"] == 0.5 and sel["scores"][5] == max(sel["scores"])
    assert ami(auto.labels_, truth) >= 0.95


# ------------------------------------------------------------------------------------------- voting, agreement


def test_vector_vote():
    assert vector_vote([0, 0, 1, 1], [0, 1, 0, 1]).tolist() == [0, 1, 2, 3]
    assert vector_vote([5, 5, 2, 2, 5], [1, 1, 1, 1, 1]).tolist() == [0, 0, 1, 1, 0]
    assert vector_vote([1, 1, 0], ["a", "a", "b"]).tolist() == [0, 0, 1]
    assert vector_vote([3, 1, 3, 1], [0, 0, 0, 1], [2, 2, 2, 2]).tolist() == [0, 1, 0, 2]
    with pytest.raises(ValueError, match=r"labels\[1\]"):
        vector_vote([0, 1, 2], [0, 1])
    with pytest.raises(ValueError, match="at least one"):
        vector_vote()


def test_agreement_scores():
    a = np.array([0, 0, 1, 1, 2, 2])
    b = np.array([1, 1, 0, 0, 2, 2])
    c = np.array([0, 1, 0, 1, 0, 1])
    rows = modality_agreement({"haadf": a, "eds": b, "ensemble": c})
    assert [(r["modality_a"], r["modality_b"]) for r in rows] == [
        ("haadf", "eds"),
        ("haadf", "ensemble"),
        ("eds", "ensemble"),
    ]
    assert rows[0]["ami"] == pytest.approx(1.0) and rows[1]["ami"] < 0.1
    assert truth_scores(b, a) == {"ami": pytest.approx(1.0), "ari": pytest.approx(1.0)}
    with pytest.raises(ValueError, match="truth"):
        truth_scores(a, a[:4])


def test_chip_truth_majority_in_chip_index_order():
    chip_px, n_rows, n_cols = 4, 2, 3
    per_chip = np.array([[0, 1, 2], [3, 1, 0]])  # row-major: chip_index = row * n_cols + col
    m = np.kron(per_chip, np.ones((chip_px, chip_px), dtype=np.int64))
    m[0, 0:3] = 3  # a minority of other pixels in chip 0 does not change its label
    m = np.pad(m, ((0, 3), (0, 2)), constant_values=2)  # remainder rows/cols are dropped
    got = chip_truth(m, chip_px, n_rows, n_cols)
    assert got.tolist() == [0, 1, 2, 3, 1, 0]
    # tie -> smallest class id
    tie = np.zeros((2, 2), dtype=int)
    tie[0] = 1
    assert chip_truth(tie, 2, 1, 1).tolist() == [0]
    with pytest.raises(ValueError, match="n_rows/n_cols"):
        chip_truth(m, chip_px, 3, 3)
    with pytest.raises(ValueError, match="label_map"):
        chip_truth(np.full((8, 8), -1), 4, 2, 2)
    with pytest.raises(ValueError, match="chip_px"):
        chip_truth(m, 0, 2, 2)


# ------------------------------------------------------------------------------------------- interface


@pytest.mark.parametrize(
    "est",
    [LouvainSegmenter(), WardSegmenter(n_clusters=4), FewShotSegmenter({"a": [0, 1], "b": [2, 3]})],
    ids=["louvain", "ward", "fewshot"],
)
def test_interface_and_provenance(data, est):
    features, _ = data
    assert isinstance(est.name, str) and isinstance(est.version, str)
    params = est.get_params()
    assert clone(est).get_params().keys() == params.keys()
    labels = est.fit_predict(features)
    assert labels.shape == (N,) and labels.dtype == np.int64
    p = json.loads(json.dumps(est.params_))  # JSON-able for the provenance ledger
    assert p["method"] == est.name and p["version"] == est.version
    assert p["n_chips"] == N and p["modalities"] == ["haadf", "eds"]
    for k in params:
        assert k in p
    # list input = dict input, with positional modality names
    lab2 = clone(est).fit_predict([features["haadf"], features["eds"]])
    assert np.array_equal(labels, lab2)


# ------------------------------------------------------------------------------------------- errors


def test_errors_on_features():
    x = np.random.default_rng(0).normal(size=(10, 5))
    for est in (LouvainSegmenter(), WardSegmenter(n_clusters=2), FewShotSegmenter({"a": [0], "b": [1]})):
        with pytest.raises(ValueError, match="at least 3 chips"):
            est.fit(x[:2])
        with pytest.raises(ValueError, match="identical"):
            est.fit(np.ones((10, 5)))
        nan = x.copy()
        nan[4, 2] = np.nan
        with pytest.raises(ValueError, match=r"features\['eds'\].*NaN.*\[4\]"):
            est.fit({"haadf": x, "eds": nan})
        with pytest.raises(ValueError, match="2-D"):
            est.fit(x[:, 0])
        with pytest.raises(ValueError, match="has 9 chips"):
            est.fit({"haadf": x, "eds": x[:9]})
        with pytest.raises(ValueError, match="empty"):
            est.fit({})
    with pytest.raises(ValueError, match="all-zero"):
        LouvainSegmenter().fit(np.vstack([x, np.zeros((1, 5))]))


def test_errors_on_parameters():
    x = np.random.default_rng(0).normal(size=(10, 5))
    two = {"haadf": x, "eds": x[:, :3]}
    with pytest.raises(ValueError, match=r"n_clusters: 11 clusters .* only 10 chips"):
        WardSegmenter(n_clusters=11).fit(x)
    with pytest.raises(ValueError, match="n_clusters"):
        WardSegmenter(n_clusters=0).fit(x)
    with pytest.raises(ValueError, match="standardize"):
        WardSegmenter(standardize="minmax").fit(x)
    bad_louvain = [
        dict(threshold="max"),
        dict(threshold=1.5),
        dict(threshold=float("nan")),
        dict(resolution=0),
        dict(max_edges=0),
        dict(random_state=None),
        dict(random_state=-1),
        dict(n_bins=1),
        dict(weighted="yes"),
    ]
    for kw in bad_louvain:
        with pytest.raises(ValueError, match=next(iter(kw))):
            LouvainSegmenter(**kw).fit(x)
    for est_cls in (LouvainSegmenter, WardSegmenter):
        with pytest.raises(ValueError, match="modality_weights"):
            est_cls(modality_weights=[1.0]).fit(two)
        with pytest.raises(ValueError, match="modality_weights"):
            est_cls(modality_weights={"haadf": 1.0, "other": 1.0}).fit(two)
        with pytest.raises(ValueError, match="modality_weights"):
            est_cls(modality_weights=[-1.0, 2.0]).fit(two)
        with pytest.raises(ValueError, match="modality_weights"):
            est_cls(modality_weights=[0.0, 0.0]).fit(two)
    with pytest.raises(ValueError, match="modality_weights.*exactly 2"):
        LouvainSegmenter(modality_weights="auto").fit({"a": x, "b": x, "c": x})
    with pytest.raises(ValueError, match="weight_grid"):
        FewShotSegmenter({"a": [0, 1], "b": [2, 3]}, modality_weights="auto", weight_grid=[0.5, 2]).fit(two)
    with pytest.raises(ValueError, match="temperature"):
        FewShotSegmenter({"a": [0], "b": [1]}, temperature=0).fit(x)


@pytest.mark.parametrize(
    "support, match",
    [
        (None, "support: must be a non-empty dict"),
        ({}, "support: must be a non-empty dict"),
        ({"a": [0, 1]}, "at least 2 classes"),
        ({"a": [0, 1], "b": []}, r"support\['b'\]: class has no support chips"),
        ({"a": [0, 1], "b": [10]}, r"support\['b'\]: chip index 10 out of range, there are 10 chips"),
        ({"a": [0, 1], "b": [-1]}, r"support\['b'\]: chip index -1 out of range"),
        ({"a": [0, 1], "b": [1, 2]}, r"chip 1 is listed twice \(already in class 'a'\)"),
        ({"a": [0, 1], "b": [2.5]}, "not an int"),
        ({"a": [0, 1], "b": 3}, "must be a list of chip indices"),
    ],
)
def test_fewshot_support_errors(support, match):
    x = np.random.default_rng(0).normal(size=(10, 5))
    with pytest.raises(ValueError, match=match):
        FewShotSegmenter(support).fit(x)


# ------------------------------------------------------------------------- weighted ensembles (issue 11)
from mmlake.segment.session import build_segmenter, segment_session  # noqa: E402


def _noise_haadf(truth, seed=0):
    """A HAADF modality that carries no class information (a weak encoder), next to a good EDS."""
    feats, _ = make_multimodal_blobs(N, random_state=0, comp_confused=None)
    feats["haadf"] = np.abs(np.random.default_rng(seed).normal(size=(N, 64))).astype(np.float32) + 0.1
    return feats


def test_ward_auto_weight_from_support_ignores_an_uninformative_modality(data):
    _, truth = data
    feats = _noise_haadf(truth)
    sup = support_of(truth)
    vote = segment_modalities(WardSegmenter(n_clusters=4), feats)
    auto = WardSegmenter(n_clusters=4, modality_weights="auto", support=sup).fit(feats)
    sel = auto.params_["weight_selection"]
    assert sel["criterion"].startswith("AMI between the labels and the few-shot")
    assert len(sel["scores"]) == 11 and sel["chosen"] <= 0.2  # little or no weight on the noise HAADF
    assert auto.params_["modality_weights_used"]["haadf"] == pytest.approx(sel["chosen"])
    assert auto.params_["support"]["cap"] == sup["cap"]  # what was used is recorded
    best_single = max(ami(vote["haadf"]["labels"], truth), ami(vote["eds"]["labels"], truth))
    assert ami(vote["ensemble"]["labels"], truth) < best_single - 0.1  # the vector vote is hurt by the noise
    assert ami(auto.labels_, truth) >= best_single - 0.02
    json.dumps(auto.params_)


def test_ward_auto_weight_without_support_uses_silhouette(data):
    features, truth = data
    auto = WardSegmenter(n_clusters=4, modality_weights="auto").fit(features)
    sel = auto.params_["weight_selection"]
    assert "silhouette" in sel["criterion"] and sel["scores"][sel["grid"].index(sel["chosen"])] == max(sel["scores"])


def test_ward_auto_keeps_both_complementary_modalities(data):
    """Complementary modalities (each confuses a different pair): the chosen weighting uses both."""
    features, truth = data
    auto = WardSegmenter(n_clusters=4, modality_weights="auto", support=support_of(truth)).fit(features)
    assert 0.0 < auto.params_["weight_selection"]["chosen"] < 1.0
    assert ami(auto.labels_, truth) >= 0.9


def test_louvain_auto_weight_from_support(data):
    _, truth = data
    feats = _noise_haadf(truth)
    auto = LouvainSegmenter(modality_weights="auto", support=support_of(truth)).fit(feats)
    sel = auto.params_["weight_selection"]
    assert sel["criterion"].startswith("AMI between the labels and the few-shot")
    eds_alone = ami(LouvainSegmenter().fit_predict({"eds": feats["eds"]}), truth)
    assert ami(auto.labels_, truth) >= eds_alone - 0.02
    assert sel["chosen"] <= 0.3


def test_build_segmenter_passes_weights_support_and_ward_k(data):
    features, truth = data
    sup = support_of(truth)
    lv = build_segmenter("louvain", {"modality_weights": "auto"}, sup)
    assert lv.modality_weights == "auto" and lv.support == sup
    wd = build_segmenter("agglomerative", {}, {k: v for k, v in list(sup.items())[:3]})
    assert wd.n_clusters == 3  # k from the support classes
    assert build_segmenter("agglomerative", {}, None).n_clusters == 4
    assert build_segmenter("agglomerative", {"n_clusters": 6}, sup).n_clusters == 6


@pytest.mark.parametrize("method", ["louvain", "agglomerative", "fewshot"])
def test_segment_session_ensemble_auto_records_the_choice(method):
    feats, truth = make_multimodal_blobs(N, image_noise=2.0, random_state=0)
    out = {r.modality: r for r in segment_session(method, feats, {"modality_weights": {"haadf": 0.5, "eds": 0.5}},
                                                   support_of(truth))}
    assert set(out) == {"haadf", "eds", "ensemble", "ensemble_auto"}
    sel = out["ensemble_auto"].params["weight_selection"]
    assert sel["chosen"] in sel["grid"]
    assert out["ensemble_auto"].params["modality_weights_used"]["haadf"] == pytest.approx(sel["chosen"])
    if method == "louvain":  # the fix: ensemble_auto is not the equal-weight ensemble under another name
        assert out["ensemble"].params["modality_weights_used"] == {"haadf": 0.5, "eds": 0.5}
    best = max(ami(out["haadf"].labels, truth), ami(out["eds"].labels, truth))
    assert ami(out["ensemble_auto"].labels, truth) >= best - 0.02


def test_louvain_weight_grid_in_worker_processes_equals_serial(monkeypatch):
    """The auto grid's Louvain runs in forked workers give exactly the serial labels and scores."""
    from mmlake.segment import louvain

    features, _ = make_multimodal_blobs(320, random_state=2)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})  # two cores, whatever the machine
    monkeypatch.delenv("MMLAKE_SEGMENT_WORKERS", raising=False)
    louvain._memo.clear()
    par = LouvainSegmenter(modality_weights="auto").fit(features)
    assert par.timings_.get("worker_process") == 1.0  # the chosen weighting came from a worker
    monkeypatch.setenv("MMLAKE_SEGMENT_WORKERS", "1")
    louvain._memo.clear()
    ser = LouvainSegmenter(modality_weights="auto").fit(features)
    assert "worker_process" not in ser.timings_
    assert np.array_equal(par.labels_, ser.labels_) and par.params_ == ser.params_


def test_louvain_workers_stop_on_sigterm_under_a_raising_parent_handler(monkeypatch):
    """Dagster's step process turns SIGTERM into an exception; forked workers must not inherit that
    handler (a worker that raised inside the pool queue's lock hung the CI run for 1,800 s), and the
    parent's handler is left as it was."""
    import signal

    from mmlake.segment import louvain

    class Interrupted(Exception):
        pass

    def raising(signum, frame):
        raise Interrupted(signum)

    seen, parent = [], os.getpid()
    real = LouvainSegmenter._graph

    def checking(self, *args):  # runs in the workers (inherited through fork, never pickled)
        if os.getpid() != parent and signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL:
            raise RuntimeError("worker inherited the parent's SIGTERM handler")
        return real(self, *args)

    features, _ = make_multimodal_blobs(320, random_state=3)
    monkeypatch.setattr("os.sched_getaffinity", lambda pid: {0, 1})
    monkeypatch.delenv("MMLAKE_SEGMENT_WORKERS", raising=False)
    monkeypatch.setattr(LouvainSegmenter, "_graph", checking)
    louvain._memo.clear()
    old = signal.signal(signal.SIGTERM, raising)
    try:
        est = LouvainSegmenter(modality_weights="auto").fit(features)
        seen.append(signal.getsignal(signal.SIGTERM))
    finally:
        signal.signal(signal.SIGTERM, old)
    assert est.timings_.get("worker_process") == 1.0  # the workers ran (a failing check falls back to serial)
    assert seen == [raising]


def test_louvain_graph_class_gives_networkx_partitions():
    """The dict-adjacency graph fed to python-louvain partitions exactly as a plain networkx.Graph."""
    import community as community_louvain
    import networkx as nx

    from mmlake.segment.louvain import _graph_class

    rng = np.random.default_rng(0)
    edges = [(int(a), int(b), float(w)) for a, b, w in zip(rng.integers(0, 60, 400), rng.integers(0, 60, 400),
                                                          rng.random(400)) if a != b]
    graphs = []
    for cls in (nx.Graph, _graph_class()):
        g = cls()
        g.add_nodes_from(range(60))
        g.add_weighted_edges_from(edges)
        graphs.append(g)
    assert dict(graphs[1][3]) == dict(graphs[0][3])
    parts = [community_louvain.best_partition(g, random_state=4) for g in graphs]
    assert parts[0] == parts[1]
    assert community_louvain.modularity(parts[1], graphs[1]) == community_louvain.modularity(parts[0], graphs[0])
