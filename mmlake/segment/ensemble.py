"""Multi-modal ensembles: vector voting, and one call that segments every modality plus the ensemble."""

from __future__ import annotations

import numpy as np

from ._base import as_modalities


def vector_vote(*labels) -> np.ndarray:
    """The preprint's "vector voting": the tuple of per-modality labels of a chip is its label.

    ``vector_vote(labels_haadf, labels_eds)`` returns int64 labels re-indexed 0.. in order of first
    appearance (chip_index order): chips get the same label exactly when they share the label in
    every modality. Accepts any number (>= 1) of 1-D label arrays of equal length.
    """
    if len(labels) == 0:
        raise ValueError("labels: give at least one label array")
    arrs = []
    for i, lab in enumerate(labels):
        a = np.asarray(lab)
        if a.ndim != 1:
            raise ValueError(f"labels[{i}]: must be 1-D (one label per chip), got shape {a.shape}")
        if a.size == 0:
            raise ValueError(f"labels[{i}]: is empty")
        if arrs and a.size != arrs[0].size:
            raise ValueError(f"labels[{i}]: has {a.size} chips but labels[0] has {arrs[0].size}")
        # map each array to dense ints so mixed dtypes (str class names, ints) stack
        _, inv = np.unique(a, return_inverse=True)
        arrs.append(inv.reshape(-1).astype(np.int64))
    stacked = np.stack(arrs, axis=1)
    _, first, inv = np.unique(stacked, axis=0, return_index=True, return_inverse=True)
    order = np.argsort(first, kind="stable")
    rank = np.empty(order.size, dtype=np.int64)
    rank[order] = np.arange(order.size)
    return rank[inv.reshape(-1)]


def segment_modalities(segmenter, features, ensemble: bool = True) -> dict[str, dict]:
    """Run ``segmenter`` on each modality alone and, with two or more, on the ensemble.

    The ensemble follows the method's ``ensemble_rule`` (the preprint's choice per method):
    ``"average_similarity"`` (Louvain: one fit on all modalities, similarity matrices averaged),
    ``"weighted_probability"`` (few-shot: one fit on all modalities, probabilities averaged) or
    ``"vector_vote"`` (Ward: the tuple of the single-modality labels).

    Returns ``{modality or "ensemble": {"labels": int64 array, "params": params_ dict, "proba": class
    probabilities (few-shot) or None}}``. Each run
    uses a fresh clone of ``segmenter``, so no state leaks from one modality to the next.
    """
    from sklearn.base import clone

    mods = as_modalities(features)
    out: dict[str, dict] = {}
    for name, x in mods.items():
        est = clone(segmenter)
        if "modality_weights" in est.get_params():
            est.set_params(modality_weights=None)
        est.fit({name: x})
        out[name] = {"labels": est.labels_, "params": est.params_, "proba": getattr(est, "proba_", None)}
    if ensemble and len(mods) > 1:
        if "ensemble" in mods:
            raise ValueError("features: a modality may not be called 'ensemble'")
        rule = segmenter.ensemble_rule
        if rule == "vector_vote":
            labels = vector_vote(*(out[name]["labels"] for name in mods))
            params = dict(out[next(iter(mods))]["params"])
            params.update(
                {
                    "modalities": list(mods),
                    "ensemble_rule": rule,
                    "n_labels": int(labels.max()) + 1,
                    "per_modality_n_labels": {name: out[name]["params"]["n_labels"] for name in mods},
                }
            )
        else:
            est = clone(segmenter).fit(dict(mods))
            labels, params = est.labels_, dict(est.params_)
            params["ensemble_rule"] = rule
        out["ensemble"] = {"labels": labels, "params": params,
                           "proba": getattr(est, "proba_", None) if rule != "vector_vote" else None}
    return out
