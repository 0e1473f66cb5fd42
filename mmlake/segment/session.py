"""Segment one session: pick each modality's features, run a method on every modality, the
preprint's ensemble, and (for methods that fuse by weights) the ground-truth-free weighted ensemble.

This is the one function the Dagster segmentation assets call; it is also what a notebook calls.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping

import numpy as np

from mmlake.segment.ensemble import segment_modalities
from mmlake.segment.fewshot import FewShotSegmenter
from mmlake.segment.louvain import LouvainSegmenter
from mmlake.segment.ward import WardSegmenter

METHODS = ("louvain", "agglomerative", "fewshot")
AUTO_WEIGHTED = {"louvain", "agglomerative", "fewshot"}  # methods with a ground-truth-free weighted ensemble


@dataclass
class Labelling:
    modality: str          # haadf, eds, ensemble, ensemble_auto
    labels: np.ndarray     # int per chip, chip_index order
    params: dict[str, Any]
    proba: np.ndarray | None = None
    class_names: list[str] = field(default_factory=list)


def build_segmenter(method: str, config: Mapping[str, Any], support: Mapping[str, list[int]] | None):
    """A configured segmenter for `method` (raises ValueError naming a bad option)."""
    weights = config.get("modality_weights")
    if method == "louvain":
        return LouvainSegmenter(threshold=config.get("threshold", "mode"), weighted=config.get("weighted", True),
                                random_state=config.get("seed", 0), resolution=config.get("resolution", 1.0),
                                modality_weights=weights, support=dict(support) if support else None)
    if method == "agglomerative":
        k = config.get("n_clusters") or (len(support) if support else 4)
        return WardSegmenter(n_clusters=k, modality_weights=weights, support=dict(support) if support else None)
    if method == "fewshot":
        if not support:
            raise ValueError("few-shot needs support chips: add a 'support' mapping (class -> [[row, col], ...]) "
                             "to session.yaml")
        return FewShotSegmenter(support=dict(support), modality_weights=weights)
    raise ValueError(f"method must be one of {METHODS}, got {method!r}")


def segment_session(
    method: str,
    features: Mapping[str, np.ndarray],
    config: Mapping[str, Any] | None = None,
    support: Mapping[str, list[int]] | None = None,
    auto_weights: bool = True,
) -> list[Labelling]:
    """Labels for every modality present, the ensemble (two modalities: the preprint's rule with the
    configured weights) and `ensemble_auto`, whose fusion weight is chosen without ground truth (see the
    segmenters: few-shot by leave-one-out on the support; Louvain and Ward by agreement with the support
    chips' few-shot classification when there is support, else modularity / silhouette).

    ``support`` ({class: [chip indices]}) is used by every method: few-shot's prototypes, Ward's k
    (number of classes, unless ``n_clusters`` is configured) and the weight choice of Louvain and Ward."""
    config = dict(config or {})
    seg = build_segmenter(method, config, support)
    auto = None
    if auto_weights and method in AUTO_WEIGHTED and len(features) == 2:
        auto = build_segmenter(method, {**config, "modality_weights": "auto"}, support)
        if method == "louvain":
            # first: its weight grid (w = 1, 0, 0.5 are the single modalities and the default ensemble)
            # runs in parallel worker processes and memoises what the fits below then reuse
            auto.fit(dict(features))
    results = segment_modalities(seg, dict(features))
    out = []
    for modality, res in results.items():
        out.append(Labelling(modality, np.asarray(res["labels"], dtype=np.int64), _jsonable(res["params"]),
                             proba=res["proba"], class_names=list(support) if method == "fewshot" else []))
    if auto is not None:
        if method != "louvain":
            auto.fit(dict(features))
        out.append(Labelling("ensemble_auto", np.asarray(auto.labels_, dtype=np.int64), _jsonable(auto.params_),
                             proba=getattr(auto, "proba_", None),
                             class_names=list(support) if method == "fewshot" else []))
    return out


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, dict):
        return {str(k): _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_jsonable(v) for v in obj]
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    return obj
