"""Shared plumbing for the segmenters: input validation, modality handling, standardisation, relabelling.

Every segmenter takes chip features in one of three shapes:

- one float array ``(n_chips, d)`` (a single modality, named ``"features"``);
- a list/tuple of such arrays (modalities named ``"modality0"``, ``"modality1"``, ...);
- a dict ``{modality_name: array}`` (order of the dict is the modality order).

Every array must have the same number of rows (one row per chip, in chip_index order) and at least
3 chips; NaN/inf features and modalities whose chips are all identical are refused with a
``ValueError`` that names the modality.
"""

from __future__ import annotations

import numbers
from collections.abc import Mapping, Sequence

import numpy as np
from sklearn.base import BaseEstimator, ClusterMixin

MIN_CHIPS = 3

#: the fusion-weight grid used by ``modality_weights="auto"`` when ``weight_grid`` is None
DEFAULT_WEIGHT_GRID = tuple(round(float(w), 10) for w in np.linspace(0.0, 1.0, 11))


def as_modalities(features, arg: str = "features") -> dict[str, np.ndarray]:
    """Normalise ``features`` to an ordered ``{name: float64 array (n_chips, d)}`` and validate it."""
    if isinstance(features, Mapping):
        if len(features) == 0:
            raise ValueError(f"{arg}: empty dict, give at least one modality")
        items = [(str(k), v) for k, v in features.items()]
    elif isinstance(features, (list, tuple)):
        if len(features) == 0:
            raise ValueError(f"{arg}: empty list, give at least one modality")
        items = [(f"modality{i}", v) for i, v in enumerate(features)]
    else:
        items = [("features", features)]

    out: dict[str, np.ndarray] = {}
    n_chips = None
    for name, x in items:
        where = f"{arg}[{name!r}]" if len(items) > 1 or name != "features" else arg
        try:
            a = np.asarray(x, dtype=np.float64)
        except (TypeError, ValueError) as exc:
            raise ValueError(f"{where}: cannot be read as a float array ({exc})") from None
        if a.ndim != 2:
            raise ValueError(f"{where}: must be a 2-D array (n_chips, n_features), got shape {a.shape}")
        if a.shape[1] < 1:
            raise ValueError(f"{where}: has no feature columns (shape {a.shape})")
        if a.shape[0] < MIN_CHIPS:
            raise ValueError(f"{where}: need at least {MIN_CHIPS} chips to segment, got {a.shape[0]}")
        if n_chips is None:
            n_chips = a.shape[0]
        elif a.shape[0] != n_chips:
            raise ValueError(
                f"{where}: has {a.shape[0]} chips but the first modality has {n_chips}; "
                "every modality needs one row per chip, in chip_index order"
            )
        bad = ~np.isfinite(a).all(axis=1)
        if bad.any():
            idx = np.flatnonzero(bad)
            raise ValueError(
                f"{where}: {idx.size} chip(s) have NaN or infinite features (first chip indices "
                f"{idx[:5].tolist()}); drop or impute them before segmenting"
            )
        if np.ptp(a, axis=0).max() == 0.0:
            raise ValueError(
                f"{where}: all {a.shape[0]} chips are identical (zero variance in every feature); "
                "there is nothing to segment"
            )
        out[name] = a
    return out


def n_chips_of(mods: Mapping[str, np.ndarray]) -> int:
    return next(iter(mods.values())).shape[0]


def standardize(x: np.ndarray, method: str | None) -> np.ndarray:
    """Standardise one modality block with statistics over all chips.

    - ``"block"``: centre each column, then divide the whole block by the square root of its total
      variance (sum of column variances), so the mean squared distance of a chip to the centroid is 1.
      Geometry inside the modality is unchanged up to one scalar (Ward and nearest-prototype decisions
      on a single modality are exactly those on the raw features); modalities of different size and
      units weigh equally when concatenated or when their distances are compared.
    - ``"zscore"``: z-score each column (constant columns become 0), then divide the block by
      ``sqrt(d)`` so the block again has total variance ~1. Gives every feature equal weight, which
      amplifies noisy near-constant features (e.g. trace elements).
    - ``None``: raw features.
    """
    if method is None:
        return x
    if method == "block":
        xc = x - x.mean(axis=0)
        total = float(np.sqrt(xc.var(axis=0).sum()))
        return xc / total
    if method == "zscore":
        sd = x.std(axis=0)
        sd[sd == 0] = 1.0
        return (x - x.mean(axis=0)) / sd / np.sqrt(x.shape[1])
    raise ValueError(f"standardize: must be 'block', 'zscore' or None, got {method!r}")


def check_standardize(value) -> None:
    if value not in ("block", "zscore", None):
        raise ValueError(f"standardize: must be 'block', 'zscore' or None, got {value!r}")


def resolve_weights(weights, names: Sequence[str], arg: str = "modality_weights") -> dict[str, float]:
    """Turn None / sequence / dict into normalised ``{modality: weight}`` (non-negative, sum 1)."""
    names = list(names)
    if weights is None:
        w = np.ones(len(names))
    elif isinstance(weights, Mapping):
        keys = {str(k) for k in weights}
        if keys != set(names):
            raise ValueError(f"{arg}: keys {sorted(keys)} do not match the modalities {names}")
        w = np.array([weights[k] if k in weights else weights[str(k)] for k in names], dtype=float)
    elif isinstance(weights, str):
        raise ValueError(f"{arg}: unknown value {weights!r} (give None, 'auto', a list or a dict)")
    else:
        try:
            w = np.asarray(weights, dtype=float).reshape(-1)
        except (TypeError, ValueError):
            raise ValueError(f"{arg}: must be None, 'auto', a list of numbers or a dict, got {weights!r}") from None
        if w.size != len(names):
            raise ValueError(f"{arg}: {w.size} weights given for {len(names)} modalities {names}")
    if not np.isfinite(w).all() or (w < 0).any():
        raise ValueError(f"{arg}: weights must be finite and >= 0, got {w.tolist()}")
    if w.sum() <= 0:
        raise ValueError(f"{arg}: weights sum to 0; at least one modality needs a positive weight")
    w = w / w.sum()
    return {n: float(v) for n, v in zip(names, w)}


def check_weight_grid(grid) -> tuple[float, ...]:
    if grid is None:
        return DEFAULT_WEIGHT_GRID
    try:
        g = np.asarray(grid, dtype=float).reshape(-1)
    except (TypeError, ValueError):
        raise ValueError(f"weight_grid: must be a list of numbers in [0, 1], got {grid!r}") from None
    if g.size == 0 or not np.isfinite(g).all() or (g < 0).any() or (g > 1).any():
        raise ValueError(f"weight_grid: must be a non-empty list of numbers in [0, 1], got {grid!r}")
    return tuple(float(v) for v in g)


def pick_weight(grid: Sequence[float], scores: Sequence[float], atol: float = 1e-12) -> float:
    """Weight with the best score; ties go to the weight closest to 0.5 (then the smaller one)."""
    scores = np.asarray(scores, dtype=float)
    best = scores.max()
    tied = [w for w, s in zip(grid, scores) if s >= best - atol]
    return float(min(tied, key=lambda w: (abs(w - 0.5), w)))


def choose_weight(grid: Sequence[float], scores: Sequence[float], names: Sequence[str], criterion: str,
                  **extra) -> tuple[float, dict[str, float], dict]:
    """The ground-truth-free fusion weight of two modalities: (w of names[0], weights, record for params_)."""
    w0 = pick_weight(grid, scores)
    record = {"criterion": f"{criterion}; tie -> closest to 0.5", "grid": list(grid),
              "scores": [float(x) for x in scores], **extra, "chosen": w0}
    return w0, {names[0]: w0, names[1]: 1.0 - w0}, record


SUPPORT_CRITERION = ("AMI between the labels and the few-shot (nearest-prototype) classification of all chips "
                     "from the support chips, in the same weighting")


def check_support_indices(support, n: int, arg: str = "support") -> dict[str, np.ndarray] | None:
    """None, or ``{class: int64 chip indices}`` validated against ``n`` chips (at least 2 classes)."""
    if support is None:
        return None
    if not isinstance(support, Mapping):
        raise ValueError(f"{arg}: must be None or a dict {{class_name: [chip indices]}}, got {support!r}")
    out = {}
    for cls, idx in support.items():
        a = np.asarray(list(idx), dtype=np.int64).reshape(-1)
        if a.size == 0:
            raise ValueError(f"{arg}[{cls!r}]: class has no support chips")
        if (a < 0).any() or (a >= n).any():
            raise ValueError(f"{arg}[{cls!r}]: chip index out of range, there are {n} chips (0..{n - 1})")
        out[str(cls)] = a
    if len(out) < 2:
        return None  # one class cannot score a weighting
    return out


def support_weight_scores(mods: Mapping[str, np.ndarray], names: Sequence[str], grid: Sequence[float],
                          labels_by_weight: Mapping[float, np.ndarray], support: Mapping[str, np.ndarray],
                          standardize_method: str | None = "block") -> list[float]:
    """For each grid weight w: AMI between ``labels_by_weight[w]`` and the few-shot classification of
    every chip from the ``support`` chips with the same modality weights (w, 1 - w).

    Ground-truth free: only the support chips' classes (the manifest's few-shot examples) are used.
    A weighting whose clusters are what the support examples say the classes are scores high; one
    dominated by a modality that cannot tell the classes apart scores low for both labellings.
    """
    from sklearn.metrics import adjusted_mutual_info_score

    from .fewshot import FewShotSegmenter

    scores = []
    for w0 in grid:
        ref = FewShotSegmenter(support={k: v.tolist() for k, v in support.items()},
                               modality_weights={names[0]: w0, names[1]: 1.0 - w0},
                               standardize=standardize_method).fit_predict(dict(mods))
        scores.append(float(adjusted_mutual_info_score(ref, labels_by_weight[w0], average_method="arithmetic")))
    return scores


def check_random_state(value) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise ValueError(f"random_state: must be a non-negative int (fixed seed for provenance), got {value!r}")
    return int(value)


def relabel(labels) -> np.ndarray:
    """Re-index arbitrary labels to 0..n_labels-1 in order of first appearance (chip_index order)."""
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int64)
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank[inv.reshape(-1)]


def jsonable(value):
    """Plain-Python copy of a params value (numpy scalars/arrays -> float/int/list) for JSON provenance."""
    if isinstance(value, Mapping):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, np.ndarray):
        return jsonable(value.tolist())
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        return float(value)
    return value


class Segmenter(ClusterMixin, BaseEstimator):
    """Base class: scikit-learn estimator interface plus provenance fields.

    Subclasses set ``name``, ``version`` and ``ensemble_rule`` and implement ``fit`` that sets
    ``labels_`` (int64, one per chip), ``n_labels_``, ``modalities_`` and ``params_``. ``params_`` is
    JSON-able and deterministic (it feeds the data version): the constructor parameters plus every
    value actually used (threshold value, weights chosen, ...). Wall-clock timings, which are not
    deterministic, go to ``timings_`` instead.
    """

    name = "segmenter"
    version = "0"
    ensemble_rule = "vector_vote"

    def fit_predict(self, features, y=None, **kwargs) -> np.ndarray:  # noqa: D401 - sklearn signature
        """Fit on ``features`` and return one int label per chip."""
        self.fit(features, y, **kwargs)
        return self.labels_

    def _finish(self, labels, mods: Mapping[str, np.ndarray], used: dict) -> None:
        self.labels_ = np.asarray(labels, dtype=np.int64)
        self.n_labels_ = int(self.labels_.max()) + 1 if self.labels_.size else 0
        self.modalities_ = list(mods)
        params = {"method": self.name, "version": self.version}
        params.update(self.get_params())
        params["modalities"] = list(mods)
        params["n_chips"] = n_chips_of(mods)
        params.update(used)
        params["n_labels"] = self.n_labels_
        self.params_ = jsonable(params)
