"""Few-shot classification against class prototypes (preprint section IV.D)."""

from __future__ import annotations

import numbers
from collections.abc import Mapping

import numpy as np

from ._base import (
    Segmenter,
    as_modalities,
    check_standardize,
    check_weight_grid,
    n_chips_of,
    choose_weight,
    resolve_weights,
    standardize,
)


def _softmax_neg(d: np.ndarray, temperature: float) -> np.ndarray:
    z = -d / temperature
    z -= z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _distances(x: np.ndarray, protos: np.ndarray) -> np.ndarray:
    d2 = (x * x).sum(1)[:, None] - 2.0 * x @ protos.T + (protos * protos).sum(1)[None, :]
    return np.sqrt(np.maximum(d2, 0.0))


class FewShotSegmenter(Segmenter):
    """Nearest-prototype few-shot classification with softmax probabilities.

    ``support`` maps each class name to the chip indices (chip_index, row * n_cols + col) that
    exemplify it -- the preprint used 4 chips for each of 4 classes. Class i of the output is the
    i-th key of ``support`` in the dict's order (``classes_``); labels are class indices, not
    re-indexed.

    Per modality: features are standardised with statistics over *all* chips (``standardize``,
    default ``"block"``: centre columns, divide the block by sqrt(total variance), so distances in
    every modality are in the same units and the softmax is equally sharp whatever the dimension);
    the prototype of a class is the mean standardised feature of its support chips; each chip gets
    ``softmax(-euclidean_distance / temperature)`` over the classes.

    Several modalities: class probabilities are averaged with ``modality_weights`` (default equal;
    the preprint once used ``{"eds": 0.55, "haadf": 0.45}``), then argmax. ``proba_`` holds the
    fused probabilities, ``proba_by_modality_`` each modality's.

    ``modality_weights="auto"`` (exactly two modalities) chooses the weight w of modality 0
    (modality 1 gets 1 - w) without ground truth: leave-one-out on the support set -- each support
    chip is classified with prototypes built from the *other* support chips, for every w of
    ``weight_grid`` (default 0, 0.1, ..., 1); the w with the highest leave-one-out accuracy wins,
    ties go to the w closest to 0.5 (so with a clean support set the preprint's 0.5/0.5 is kept).
    Support chips of classes with a single support chip cannot be left out and are not scored.
    The grid, the accuracies and the choice are in ``params_["weight_selection"]``.
    """

    name = "fewshot"
    version = "1.0"
    ensemble_rule = "weighted_probability"

    def __init__(self, support=None, modality_weights=None, standardize="block", temperature=1.0, weight_grid=None):
        self.support = support
        self.modality_weights = modality_weights
        self.standardize = standardize
        self.temperature = temperature
        self.weight_grid = weight_grid

    def _check_support(self, n: int) -> tuple[list, list[np.ndarray]]:
        s = self.support
        if not isinstance(s, Mapping) or len(s) == 0:
            raise ValueError(f"support: must be a non-empty dict {{class_name: [chip indices]}}, got {s!r}")
        if len(s) < 2:
            raise ValueError(f"support: need at least 2 classes to classify, got {list(s)}")
        classes, idx_lists, seen = [], [], {}
        for cls, chips in s.items():
            if isinstance(chips, (str, bytes)) or not hasattr(chips, "__len__"):
                raise ValueError(f"support[{cls!r}]: must be a list of chip indices, got {chips!r}")
            if len(chips) == 0:
                raise ValueError(f"support[{cls!r}]: class has no support chips; give at least one chip index")
            idx = []
            for c in chips:
                if isinstance(c, (bool, np.bool_)) or not isinstance(c, numbers.Integral):
                    raise ValueError(f"support[{cls!r}]: chip index {c!r} is not an int")
                c = int(c)
                if not 0 <= c < n:
                    raise ValueError(f"support[{cls!r}]: chip index {c} out of range, there are {n} chips (0..{n - 1})")
                if c in seen:
                    raise ValueError(
                        f"support[{cls!r}]: chip {c} is listed twice (already in class {seen[c]!r}); "
                        "each support chip belongs to exactly one class, once"
                    )
                seen[c] = cls
                idx.append(c)
            classes.append(cls)
            idx_lists.append(np.asarray(idx, dtype=np.int64))
        return classes, idx_lists

    def fit(self, features, y=None):
        """Classify every chip; ``features`` is one array, a list or a dict of per-modality arrays."""
        check_standardize(self.standardize)
        t = self.temperature
        if isinstance(t, bool) or not isinstance(t, numbers.Real) or not np.isfinite(t) or t <= 0:
            raise ValueError(f"temperature: must be a positive number, got {t!r}")
        mods = as_modalities(features)
        names = list(mods)
        n = n_chips_of(mods)
        classes, idx_lists = self._check_support(n)
        z = {k: standardize(x, self.standardize) for k, x in mods.items()}

        probas, protos = {}, {}
        for k, x in z.items():
            p = np.stack([x[i].mean(axis=0) for i in idx_lists])
            protos[k] = p
            probas[k] = _softmax_neg(_distances(x, p), float(t))

        used: dict = {}
        if isinstance(self.modality_weights, str) and self.modality_weights == "auto":
            if len(mods) != 2:
                raise ValueError(
                    f"modality_weights: 'auto' chooses the weight between exactly 2 modalities, got {len(mods)} {names}"
                )
            grid = check_weight_grid(self.weight_grid)
            acc, n_scored = self._loo_accuracy(z, names, idx_lists, grid, float(t))
            _, weights, used["weight_selection"] = choose_weight(
                grid, acc if n_scored else [0.0] * len(grid), names, "leave-one-out accuracy on the support set",
                n_support_scored=n_scored)
        else:
            weights = resolve_weights(self.modality_weights, names)

        fused = sum(weights[k] * probas[k] for k in names)
        labels = np.argmax(fused, axis=1)
        self.classes_ = classes
        self.proba_ = fused
        self.proba_by_modality_ = probas
        self.prototypes_ = protos
        self.modality_weights_ = weights
        used["modality_weights_used"] = weights
        used["classes"] = [str(c) for c in classes]
        used["support"] = {str(c): i.tolist() for c, i in zip(classes, idx_lists)}
        used["distance"] = "euclidean"
        self._finish(labels, mods, used)
        # few-shot labels are class indices: n_labels is the number of classes, used or not
        self.n_labels_ = len(classes)
        self.params_["n_labels"] = len(classes)
        return self

    @staticmethod
    def _loo_accuracy(z, names, idx_lists, grid, t):
        """Leave-one-out accuracy of the fused classifier on the support chips for each grid weight."""
        correct = np.zeros(len(grid))
        n_scored = 0
        for c, idx in enumerate(idx_lists):
            if idx.size < 2:
                continue
            for held in idx:
                rest = [i if ci != c else i[i != held] for ci, i in enumerate(idx_lists)]
                pm = []
                for k in names:
                    x = z[k]
                    p = np.stack([x[i].mean(axis=0) for i in rest])
                    pm.append(_softmax_neg(_distances(x[held][None, :], p), t)[0])
                for g, w0 in enumerate(grid):
                    fused = w0 * pm[0] + (1.0 - w0) * pm[1]
                    correct[g] += int(np.argmax(fused) == c)
                n_scored += 1
        acc = correct / n_scored if n_scored else correct
        return acc, n_scored
