"""Agglomerative clustering with Ward linkage (preprint section IV.E)."""

from __future__ import annotations

import numbers
import time

import numpy as np

from ._base import (
    SUPPORT_CRITERION,
    Segmenter,
    as_modalities,
    check_standardize,
    check_support_indices,
    check_weight_grid,
    choose_weight,
    n_chips_of,
    relabel,
    resolve_weights,
    standardize,
    support_weight_scores,
)


class WardSegmenter(Segmenter):
    """scikit-learn ``AgglomerativeClustering(n_clusters, linkage="ward")`` (Euclidean distance).

    Features are standardised per modality with statistics over all chips (``standardize``):
    ``"block"`` (default) centres each column and divides the block by the square root of its total
    variance, so a single modality is clustered exactly as its raw features (Ward is invariant to one
    global scale) while modalities of different dimension (512-d image, ~12-d composition) weigh
    equally when concatenated; ``"zscore"`` z-scores every column and divides the block by sqrt(d);
    ``None`` uses raw features.

    Several modalities: the standardised blocks are concatenated, block m multiplied by
    ``sqrt(w_m)`` so that it contributes ``w_m`` of the squared distance (``modality_weights``,
    default equal). The preprint's multi-modal result for this method is *vector voting* of the
    single-modality labels (:func:`mmlake.segment.vector_vote`), which is ``ensemble_rule``; the
    concatenation is there for who wants it.

    ``modality_weights="auto"`` (exactly two modalities): the weight w of modality 0 (modality 1 gets
    1 - w) of the weighted concatenation is chosen on ``weight_grid`` (default 0, 0.1, ..., 1; 0 and 1
    are the single modalities) without ground truth. With ``support`` (few-shot example chips,
    ``{class: [chip indices]}``, at least 2 classes): the w whose clustering agrees best (AMI) with the
    few-shot classification of all chips from those examples in the same weighting. Without support:
    the w with the highest mean silhouette of its labels measured in each modality's own standardised
    space (a clustering both modalities see as separated). Ties go to the w closest to 0.5. The grid,
    scores and choice are in ``params_["weight_selection"]``; this is what ``ensemble_auto`` uses
    instead of the preprint's vector vote (which gives a weak modality an equal say).

    Ward is deterministic (no random state). Labels are re-indexed 0.. by first appearance.
    """

    name = "ward"
    version = "1.1"
    ensemble_rule = "vector_vote"

    def __init__(self, n_clusters=4, standardize="block", modality_weights=None, weight_grid=None, support=None):
        self.n_clusters = n_clusters
        self.standardize = standardize
        self.modality_weights = modality_weights
        self.weight_grid = weight_grid
        self.support = support

    def fit(self, features, y=None):
        """Cluster the chips; ``features`` is one array, a list or a dict of per-modality arrays."""
        from sklearn.cluster import AgglomerativeClustering

        k = self.n_clusters
        if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
            raise ValueError(f"n_clusters: must be a positive int, got {k!r}")
        check_standardize(self.standardize)
        mods = as_modalities(features)
        n = n_chips_of(mods)
        if k > n:
            raise ValueError(f"n_clusters: {k} clusters asked for but there are only {n} chips")
        names = list(mods)
        t0 = time.perf_counter()
        z = {name: standardize(x, self.standardize) for name, x in mods.items()}

        def cluster(weights):
            blocks = [z[name] * np.sqrt(weights[name]) for name in names if weights[name] > 0]
            x = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
            return relabel(AgglomerativeClustering(n_clusters=int(k), linkage="ward").fit_predict(x))

        used: dict = {}
        if isinstance(self.modality_weights, str) and self.modality_weights == "auto":
            if len(mods) != 2:
                raise ValueError(
                    f"modality_weights: 'auto' chooses the weight between exactly 2 modalities, got {len(mods)} {names}")
            grid = check_weight_grid(self.weight_grid)
            runs = {w0: cluster({names[0]: w0, names[1]: 1.0 - w0}) for w0 in grid}
            support = check_support_indices(self.support, n)
            if support is not None:
                scores = support_weight_scores(mods, names, grid, runs, support, self.standardize)
                criterion = SUPPORT_CRITERION
            else:
                scores = [_mean_silhouette(z, runs[w0]) for w0 in grid]
                criterion = "mean over modalities of the silhouette of the labels in that modality's standardised space"
            w_best, weights, used["weight_selection"] = choose_weight(grid, scores, names, criterion)
            labels = runs[w_best]
        else:
            weights = resolve_weights(self.modality_weights, names)
            labels = cluster(weights)
        self.timings_ = {"ward_s": time.perf_counter() - t0}
        self.modality_weights_ = weights
        used.update({"modality_weights_used": weights, "linkage": "ward", "metric": "euclidean"})
        self._finish(labels, mods, used)
        return self


def _mean_silhouette(z: dict[str, np.ndarray], labels: np.ndarray) -> float:
    from sklearn.metrics import silhouette_score

    if labels.max() < 1 or labels.max() >= len(labels) - 1:
        return -1.0
    n = len(labels)
    idx = np.arange(n) if n <= 3000 else np.random.default_rng(0).choice(n, 3000, replace=False)
    if len(np.unique(labels[idx])) < 2:
        return -1.0
    return float(np.mean([silhouette_score(x[idx], labels[idx]) for x in z.values()]))
