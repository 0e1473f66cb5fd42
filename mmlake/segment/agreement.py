"""Agreement scores: AMI between modality pairs (preprint Table I) and AMI/ARI against ground truth."""

from __future__ import annotations

import itertools
import numbers
from collections.abc import Mapping

import numpy as np

from mmlake.chips import ChipGrid, majority_labels


def _labels(x, arg: str) -> np.ndarray:
    a = np.asarray(x)
    if a.ndim != 1:
        raise ValueError(f"{arg}: must be 1-D (one label per chip), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{arg}: is empty")
    return a


def ami(labels_a, labels_b) -> float:
    """Adjusted mutual information (scikit-learn, ``average_method="arithmetic"``)."""
    from sklearn.metrics import adjusted_mutual_info_score

    a, b = _labels(labels_a, "labels_a"), _labels(labels_b, "labels_b")
    if a.size != b.size:
        raise ValueError(f"labels_b: has {b.size} chips but labels_a has {a.size}")
    return float(adjusted_mutual_info_score(a, b, average_method="arithmetic"))


def modality_agreement(labels: Mapping[str, np.ndarray]) -> list[dict]:
    """AMI for every pair of labelings, e.g. ``{"haadf": .., "eds": .., "ensemble": ..}``.

    Returns rows ``{"modality_a", "modality_b", "ami"}`` in the dict's pair order (the preprint's
    Table I rows: HAADF-EDS, HAADF-Ensemble, EDS-Ensemble for that input order).
    """
    if not isinstance(labels, Mapping) or len(labels) < 2:
        raise ValueError("labels: need a dict of at least 2 labelings {name: labels}")
    rows = []
    for a, b in itertools.combinations(list(labels), 2):
        rows.append({"modality_a": str(a), "modality_b": str(b), "ami": ami(labels[a], labels[b])})
    return rows


def truth_scores(labels, truth) -> dict[str, float]:
    """AMI and ARI of ``labels`` against the ground-truth chip labels ``truth``."""
    from sklearn.metrics import adjusted_rand_score

    a, t = _labels(labels, "labels"), _labels(truth, "truth")
    if a.size != t.size:
        raise ValueError(f"truth: has {t.size} chips but labels has {a.size}")
    return {"ami": ami(a, t), "ari": float(adjusted_rand_score(t, a))}


def chip_truth(label_map, chip_px: int, n_rows: int, n_cols: int) -> np.ndarray:
    """Majority ground-truth label of each chip (chip_index = row * n_cols + col).

    ``label_map`` is the integer class map at HAADF resolution (H, W) with non-negative ids; chips are
    non-overlapping ``chip_px`` squares from the origin (0, 0), the remainder at the bottom/right
    dropped. Ties go to the smallest class id. Vectorised: one ``np.bincount`` over all chips.
    """
    m = np.asarray(label_map)
    if m.ndim != 2:
        raise ValueError(f"label_map: must be a 2-D integer map (H, W), got shape {m.shape}")
    if not np.issubdtype(m.dtype, np.integer):
        if np.issubdtype(m.dtype, np.floating) and np.isfinite(m).all() and (m == np.round(m)).all():
            m = m.astype(np.int64)
        else:
            raise ValueError(f"label_map: must hold integer class ids, got dtype {m.dtype}")
    for arg, v in (("chip_px", chip_px), ("n_rows", n_rows), ("n_cols", n_cols)):
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
            raise ValueError(f"{arg}: must be a positive int, got {v!r}")
    h, w = m.shape
    if n_rows * chip_px > h or n_cols * chip_px > w:
        raise ValueError(
            f"n_rows/n_cols: a {n_rows} x {n_cols} grid of {chip_px}-px chips needs "
            f"{n_rows * chip_px} x {n_cols * chip_px} px but label_map is {h} x {w}"
        )
    if m.size and m.min() < 0:
        raise ValueError(f"label_map: class ids must be >= 0, found {int(m.min())}")
    return majority_labels(m, ChipGrid(chip_px, n_rows, n_cols)).astype(np.int64)
