"""A/B sublattices from column intensity and position.

In a projected ABO3 perovskite along [001] (and any lattice whose columns alternate between two
kinds), every column's first-shell neighbours on the lattice of all columns belong to the other
sublattice. So the test uses position and intensity together:

- **contrast** ``c_i = ln I_i - median_j ln I_j`` over the column's first-shell neighbours (lattice
  index ``+-(1, 0)``, ``+-(0, 1)`` of :func:`mmlake.atoms.lattice.local_lattice`);
- **two sublattices** when, over the columns with at least two first-shell neighbours, the
  contrasts separate (the means of the positive and negative halves are at least ``min_separation``
  pooled standard deviations apart) *and* first-shell pairs are mostly of opposite sign (at least
  ``min_alternation``): the bright half is ``A``, the dim half ``B``. Columns without first-shell
  neighbours are assigned by the intensity threshold halfway (in ``ln I``) between the two groups.
- Otherwise every column is ``A`` (one kind of column, or a second kind too faint to be detected,
  as the B-O columns of the demo's wide Gaussian columns).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class Sublattices:
    label: np.ndarray  # (n,) object array of "A" / "B"
    contrast: np.ndarray  # (n,) c_i (NaN where the column has < 2 first-shell neighbours)
    two: bool  # whether two sublattices were found
    separation: float  # (mean+ - mean-) / pooled std of the contrasts
    alternation: float  # share of first-shell pairs with opposite contrast signs


def assign_sublattices(
    intensity: np.ndarray,
    first_shell: np.ndarray,
    *,
    min_separation: float = 3.0,
    min_alternation: float = 0.8,
) -> Sublattices:
    inten = np.asarray(intensity, dtype=np.float64)
    n = len(inten)
    fs = np.asarray(first_shell)
    li = np.log(np.clip(inten, 1e-12 * max(float(np.max(inten, initial=1.0)), 1e-300), None))
    nb = np.where(fs >= 0, li[np.clip(fs, 0, max(n - 1, 0))], np.nan) if n else np.zeros((0, 4))
    cnt = np.isfinite(nb).sum(axis=1)
    med = np.full(n, np.nan)
    two_plus = cnt >= 2
    if two_plus.any():
        med[two_plus] = np.nanmedian(nb[two_plus], axis=1)
    c = np.where(cnt >= 2, li - med, np.nan)
    labels = np.full(n, "A", dtype=object)
    ok = np.isfinite(c)
    if ok.sum() < 8:
        return Sublattices(labels, c, False, float("nan"), float("nan"))
    pos, neg = c[ok & (c > 0)], c[ok & (c <= 0)]
    if len(pos) < 3 or len(neg) < 3:
        return Sublattices(labels, c, False, 0.0, float("nan"))
    pooled = np.sqrt(0.5 * (pos.var() + neg.var())) + 1e-12
    sep = float((pos.mean() - neg.mean()) / pooled)
    i, j = np.nonzero(fs >= 0)
    a, b = i, fs[i, j]
    both = ok[a] & ok[b]
    alt = float(np.mean(np.sign(c[a[both]]) != np.sign(c[b[both]]))) if both.any() else float("nan")
    two = bool(sep >= min_separation and np.isfinite(alt) and alt >= min_alternation)
    if two:
        thr = 0.5 * (np.median(li[ok & (c > 0)]) + np.median(li[ok & (c <= 0)]))
        labels = np.where(ok, np.where(c > 0, "A", "B"), np.where(li >= thr, "A", "B")).astype(object)
    return Sublattices(labels, c, two, sep, alt)
