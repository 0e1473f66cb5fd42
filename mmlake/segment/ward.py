"""Agglomerative clustering with Ward linkage (preprint section IV.E)."""

from __future__ import annotations

import numbers
import time

import numpy as np

from ._base import Segmenter, as_modalities, check_standardize, n_chips_of, relabel, resolve_weights, standardize


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

    Ward is deterministic (no random state). Labels are re-indexed 0.. by first appearance.
    """

    name = "ward"
    version = "1.0"
    ensemble_rule = "vector_vote"

    def __init__(self, n_clusters=4, standardize="block", modality_weights=None):
        self.n_clusters = n_clusters
        self.standardize = standardize
        self.modality_weights = modality_weights

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
        weights = resolve_weights(self.modality_weights, list(mods))
        t0 = time.perf_counter()
        blocks = [standardize(x, self.standardize) * np.sqrt(weights[name]) for name, x in mods.items()]
        x = np.hstack(blocks) if len(blocks) > 1 else blocks[0]
        labels = AgglomerativeClustering(n_clusters=int(k), linkage="ward").fit_predict(x)
        self.timings_ = {"ward_s": time.perf_counter() - t0}
        self.modality_weights_ = weights
        self._finish(relabel(labels), mods, {"modality_weights_used": weights, "linkage": "ward", "metric": "euclidean"})
        return self
