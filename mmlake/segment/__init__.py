"""Chip segmentation: Louvain, Ward and few-shot segmenters with one scikit-learn-like interface.

Pure numpy / scikit-learn / networkx / python-louvain (no Dagster). Every segmenter takes its
parameters at construction and ``fit_predict(features)`` returns one int64 label per chip (in
chip_index order). ``features`` is one float array ``(n_chips, d)``, a list of them, or a dict
``{modality: array}``. Each exposes ``name``, ``version``, ``ensemble_rule``, ``get_params()`` and,
after fitting, ``params_`` (JSON-able: constructor parameters plus what was actually used).
"""

from .agreement import ami, chip_truth, modality_agreement, truth_scores
from .ensemble import segment_modalities, vector_vote
from .fewshot import FewShotSegmenter
from .louvain import LouvainSegmenter, threshold_statistic
from .ward import WardSegmenter

__all__ = [
    "FewShotSegmenter",
    "LouvainSegmenter",
    "WardSegmenter",
    "ami",
    "chip_truth",
    "modality_agreement",
    "segment_modalities",
    "threshold_statistic",
    "truth_scores",
    "vector_vote",
]
