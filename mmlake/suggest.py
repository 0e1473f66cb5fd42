"""Which chips to label next (active labelling for the few-shot segmenter).

:func:`suggest_chips` ranks the chips whose class the few-shot classifier is least sure of -- by the
margin between its two most probable classes (``1 - (p1 - p2)``, default) or by the normalised
entropy of its class probabilities -- and picks them greedily, most uncertain first, subject to

- not being a support chip, nor within ``support_radius`` chips (Chebyshev distance on the chip
  grid) of one: the classifier already knows that neighbourhood;
- lying inside its predicted region (``interior=True``: all 8 neighbours share its predicted
  class). A chip straddling an interface is uncertain because it holds two materials, and labelling
  it teaches a prototype classifier nothing but the mixture (measured: adding such chips lowered
  the AMI); a chip uncertain in the middle of a region shows a part of the material the support does
  not represent;
- not on the image edge (``edge`` chips: their FFT windows are mirrored there, so their features
  are outliers, uncertain for that reason alone; labelling them dragged a prototype off, measured);
- optionally taken in turn from each predicted class (``balance=True``: the most uncertain chip of
  each class, then the next of each, ...);
- lying at least ``spacing`` chips from every chip already picked, so the suggestions are spread
  over the image instead of all sitting on one interface (default spacing: half the side of the
  square each suggestion would get if the image were shared equally, at least 2 chips). When too few
  chips qualify the spacing is halved until ``n`` are found (or no chip is left).

Each suggestion carries its chip index, (row, col), score, the top two classes and their
probabilities, so a person labelling it sees what the classifier hesitates between. The input is
the few-shot ``proba`` (n_chips, n_classes) of one labelling (e.g. ``segment_labels.proba`` of the
``fewshot`` ``ensemble``), with chip_index = row * n_cols + col.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Mapping, Sequence

import numpy as np

SCORES = ("margin", "entropy")


@dataclass(frozen=True)
class Suggestion:
    chip_index: int
    row: int
    col: int
    score: float  # uncertainty, 0 (sure) .. 1 (undecided)
    top_class: str
    top_p: float
    second_class: str
    second_p: float

    def as_dict(self) -> dict:
        return asdict(self)


def uncertainty(proba: np.ndarray, score: str = "margin") -> np.ndarray:
    """Per chip, 0 (certain) .. 1 (undecided): ``1 - (p1 - p2)`` or entropy / ln(n_classes)."""
    p = np.asarray(proba, dtype=np.float64)
    if p.ndim != 2 or p.shape[1] < 2:
        raise ValueError(f"proba must be (n_chips, n_classes >= 2), got shape {p.shape}")
    if not np.all(np.isfinite(p)):
        raise ValueError("proba contains NaN or infinite values")
    if score == "margin":
        top2 = np.sort(p, axis=1)[:, -2:]
        return 1.0 - (top2[:, 1] - top2[:, 0])
    if score == "entropy":
        q = np.clip(p / p.sum(axis=1, keepdims=True), 1e-300, 1.0)
        return -(q * np.log(q)).sum(axis=1) / math.log(p.shape[1])
    raise ValueError(f"score must be one of {SCORES}, got {score!r}")


def suggest_chips(
    proba: np.ndarray,
    grid_shape: tuple[int, int],
    support: Mapping[str, Sequence[int]] | Sequence[int] | None = None,
    n: int = 8,
    *,
    score: str = "margin",
    class_names: Sequence[str] | None = None,
    support_radius: int = 1,
    spacing: float | None = None,
    exclude: Sequence[int] | None = None,
    interior: bool = True,
    balance: bool = False,
    edge: int = 1,
) -> list[Suggestion]:
    """The ``n`` chips to label next (see the module docstring).

    ``grid_shape`` = (n_rows, n_cols); ``support``: the current support chips (``{class: [chip
    indices]}`` or a flat list); ``exclude``: chips never to suggest (e.g. without EDS counts)."""
    p = np.asarray(proba, dtype=np.float64)
    n_rows, n_cols = (int(v) for v in grid_shape)
    if p.ndim != 2 or p.shape[0] != n_rows * n_cols:
        raise ValueError(f"proba must have one row per chip of the {n_rows}x{n_cols} grid, got shape {p.shape}")
    if not (isinstance(n, (int, np.integer)) and n >= 1):
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not (isinstance(support_radius, (int, np.integer)) and support_radius >= 0):
        raise ValueError(f"support_radius must be an integer >= 0, got {support_radius!r}")
    names = list(class_names) if class_names is not None else [str(i) for i in range(p.shape[1])]
    if len(names) != p.shape[1]:
        raise ValueError(f"class_names: {len(names)} names for {p.shape[1]} classes")
    u = uncertainty(p, score)
    rows, cols = np.divmod(np.arange(len(u)), n_cols)
    sup = ([int(c) for chips in support.values() for c in chips] if isinstance(support, Mapping)
           else [int(c) for c in (support or [])])
    ok = np.ones(len(u), dtype=bool)
    for c in sup:
        r0, c0 = divmod(c, n_cols)
        ok &= np.maximum(np.abs(rows - r0), np.abs(cols - c0)) > support_radius
    if exclude is not None:
        ok[np.asarray(list(exclude), dtype=np.int64)] = False
    if edge:
        ok &= (rows >= edge) & (rows < n_rows - edge) & (cols >= edge) & (cols < n_cols - edge)
    if interior:
        from mmlake.descriptors.geometry import core_mask

        pred = np.argmax(p, axis=1).reshape(n_rows, n_cols)
        inside = np.zeros(len(u), dtype=bool)
        for k in np.unique(pred):
            inside |= core_mask(pred, int(k), 1).ravel()
        if (ok & inside).sum() >= n:
            ok &= inside
    if spacing is None:
        spacing = max(2.0, 0.5 * math.sqrt(n_rows * n_cols / n))
    order = np.flatnonzero(ok)[np.argsort(-u[ok], kind="stable")]
    if balance:  # round-robin over the predicted classes, most uncertain first within each
        pred = np.argmax(p, axis=1)
        queues = [list(order[pred[order] == k]) for k in range(p.shape[1])]
        order = np.array([q[i] for i in range(max((len(q) for q in queues), default=0)) for q in queues
                          if i < len(q)], dtype=np.int64)
    picked: list[int] = []
    gap = float(spacing)
    while len(picked) < n and gap >= 1.0:
        for i in order:
            if len(picked) >= n:
                break
            if i in picked:
                continue
            if all(math.hypot(rows[i] - rows[j], cols[i] - cols[j]) >= gap for j in picked):
                picked.append(int(i))
        gap /= 2.0
    out = []
    for i in picked:
        top = np.argsort(-p[i], kind="stable")[:2]
        out.append(Suggestion(int(i), int(rows[i]), int(cols[i]), float(u[i]), names[top[0]], float(p[i, top[0]]),
                              names[top[1]], float(p[i, top[1]])))
    return out


def suggest_from_lake(lake, session_id: str, n: int = 8, *, method: str = "fewshot", modality: str = "ensemble",
                      score: str = "margin") -> list[Suggestion]:
    """:func:`suggest_chips` on what the lake holds: the few-shot probabilities of ``modality``
    (``segment_labels.proba``), its class names (``segment_runs``) and the manifest's support chips."""
    from mmlake.errors import SessionError
    from mmlake.features import load_grid, session_row

    _, grid = load_grid(lake, session_id)
    rows = lake.query("select chip_index, proba from segment_labels where session_id = ? and method = ? and "
                      "modality = ? order by chip_index", [session_id, method, modality])
    if rows.is_empty() or rows["proba"].null_count() == len(rows):
        raise SessionError(session_id, f"no {method}/{modality} class probabilities in the lake: materialize "
                                       "segmentation_fewshot (it needs 'support' chips in session.yaml)")
    proba = np.zeros((grid.n_chips, len(rows["proba"].drop_nulls()[0])))
    proba[rows["chip_index"].to_numpy()] = np.array(rows["proba"].to_list(), dtype=np.float64)
    runs = lake.query("select class_names from segment_runs where session_id = ? and method = ? and modality = ?",
                      [session_id, method, modality])
    names = list(runs["class_names"][0]) if len(runs) and runs["class_names"][0] is not None else None
    manifest = session_row(lake, session_id).get("manifest") or {}
    support = [r * grid.n_cols + c for chips in (manifest.get("support") or {}).values() for r, c in chips]
    return suggest_chips(proba, (grid.n_rows, grid.n_cols), support, n, score=score, class_names=names)
