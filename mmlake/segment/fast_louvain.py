"""Louvain community detection in numpy/scipy: python-louvain's algorithm without its per-edge Python.

Why: ``community_louvain.best_partition`` (python-louvain) walks a networkx graph edge by edge in pure
Python (~10-20 us per edge and pass). The chip-similarity graphs of `LouvainSegmenter` are dense (a
1,024-chip session keeps all ~523k pairs above the mode threshold) and ``modality_weights="auto"`` runs
one Louvain per point of the weight grid, so that loop dominated segmentation time (issue 12). Here the
per-node work of a pass is a handful of vectorised numpy calls over the node's row (a dense row when
the graph is dense, the node's ``indptr`` slice of a CSR matrix otherwise); aggregation is the sparse
product ``P^T W P``. No networkx graph is built.

What it matches (python-louvain 0.16, ``generate_dendrogram`` / ``best_partition``; Blondel et al. 2008):

- local moving: each pass visits the nodes in a fresh random order; a node is taken out of its
  community and put in the neighbouring community (one holding at least one of its neighbours) with
  the largest gain ``k_i,in(C) - resolution * Sigma_tot(C) * k_i / (2 m)`` (``k_i,in`` the weight of
  its edges into C, ``Sigma_tot`` C's total degree without the node, ``m`` the total edge weight),
  moving only when that beats staying by a strictly positive amount -- python-louvain's
  ``remove_cost + dnc - resolution * degrees[com] * degc_totw > best_increase = 0``;
- passes repeat while a node moved and the pass raised python-louvain's internal quality
  ``sum_C resolution * in(C) / m - (Sigma_tot(C) / 2m)^2`` by at least 1e-7 (its ``__modularity``, which
  scales the *internal* term by ``resolution``; it equals modularity at resolution 1);
- aggregation: communities become nodes, the edges between two communities sum, a community's internal
  edges become a self-loop (weights add exactly as in ``induced_graph``); levels repeat until a level
  raises that quality by less than 1e-7 (the first level is always kept); the result is the last level.

What differs: the random numbers. Visit orders come from ``numpy.random.default_rng(random_state)``
and ties between equally good communities go to the one first in a random order of the nodes fixed
once per call, where python-louvain shuffles the candidate communities of every node from its own
``RandomState`` stream; so partitions are reproducible for a given ``random_state`` but are not
python-louvain's partitions for the same seed (the same algorithm, another random sample of its runs).
Duplicate edges in the input are summed (networkx keeps the last one).
"""

from __future__ import annotations

import numbers

import numpy as np
import scipy.sparse as sp

__all__ = ["best_partition", "modularity", "adjacency"]

_MIN = 1e-7  # python-louvain's __MIN: least quality gain of a pass / level that counts
#: dense rows (one bincount over all n nodes per visit) are used when at least this fraction of all
#: node pairs are edges and the n x n float64 matrix stays below _DENSE_MAX_BYTES
_DENSE_MIN_FILL = 0.1
_DENSE_MAX_BYTES = 512 << 20


def adjacency(n: int, rows, cols, weights=None) -> sp.csr_matrix:
    """Symmetric CSR adjacency (float64) of an undirected graph of ``n`` nodes from an edge list.

    Each edge ``(rows[e], cols[e])`` with weight ``weights[e]`` (1 when None) is entered once, in either
    direction; a self-loop ``(i, i, w)`` is stored as ``2 w`` on the diagonal so that row sums are the
    weighted degrees (networkx counts a self-loop twice in a degree). Duplicates are summed."""
    rows = np.asarray(rows, dtype=np.int64).reshape(-1)
    cols = np.asarray(cols, dtype=np.int64).reshape(-1)
    w = np.ones(rows.size) if weights is None else np.asarray(weights, dtype=np.float64).reshape(-1)
    if not (rows.size == cols.size == w.size):
        raise ValueError(f"edges: rows, cols and weights differ in length ({rows.size}, {cols.size}, {w.size})")
    if rows.size and (min(rows.min(), cols.min()) < 0 or max(rows.max(), cols.max()) >= n):
        raise ValueError(f"edges: node index out of range for {n} nodes")
    if w.size and (not np.isfinite(w).all() or (w < 0).any()):
        raise ValueError("edges: weights must be finite and >= 0 (modularity needs non-negative weights)")
    off = rows != cols
    r = np.concatenate([rows[off], cols[off], rows[~off]])
    c = np.concatenate([cols[off], rows[off], cols[~off]])
    v = np.concatenate([w[off], w[off], 2.0 * w[~off]])
    a = sp.coo_matrix((v, (r, c)), shape=(n, n)).tocsr()
    a.sum_duplicates()
    a.eliminate_zeros()
    return a


def _as_adjacency(graph) -> sp.csr_matrix:
    if sp.issparse(graph):
        a = sp.csr_matrix(graph, dtype=np.float64)
    else:
        a = sp.csr_matrix(np.asarray(graph, dtype=np.float64))
    if a.shape[0] != a.shape[1]:
        raise ValueError(f"graph: adjacency must be square, got shape {a.shape}")
    if a.nnz and (not np.isfinite(a.data).all() or (a.data < 0).any()):
        raise ValueError("graph: weights must be finite and >= 0 (modularity needs non-negative weights)")
    if a.nnz and abs(a - a.T).max() > 1e-12 * max(1.0, abs(a.data).max()):
        raise ValueError("graph: adjacency must be symmetric (an undirected graph)")
    a.sum_duplicates()
    a.eliminate_zeros()
    return a


def modularity(labels, graph, validate: bool = True) -> float:
    """Newman-Girvan modularity (resolution 1) of ``labels`` on the symmetric adjacency ``graph``
    (diagonal = twice the self-loop weight, as `adjacency` builds it); equals
    ``community_louvain.modularity``. Raises ValueError on a graph without edges, like it."""
    a = _as_adjacency(graph) if validate else sp.csr_matrix(graph, dtype=np.float64)
    labels = np.asarray(labels).reshape(-1)
    if labels.size != a.shape[0]:
        raise ValueError(f"labels: {labels.size} labels for {a.shape[0]} nodes")
    _, com = np.unique(labels, return_inverse=True)
    com = com.reshape(-1)
    return _quality(a, com, 1.0)


def _quality(a: sp.csr_matrix, com: np.ndarray, resolution: float, rows=None, deg=None) -> float:
    """python-louvain's ``__modularity``: sum_C resolution * in(C) / m - (tot(C) / 2m)^2."""
    if deg is None:
        deg = np.asarray(a.sum(axis=1)).reshape(-1)
    m2 = float(deg.sum())
    if m2 <= 0:
        raise ValueError("graph: a graph without edges has an undefined modularity")
    if rows is None:
        rows = np.repeat(np.arange(a.shape[0]), np.diff(a.indptr))
    inside = float(a.data[com[rows] == com[a.indices]].sum())  # 2 * internal edges (+ 2 * loops)
    tot = np.bincount(com, weights=deg)
    return resolution * inside / m2 - float(np.sum((tot / m2) ** 2))


def _compact(com: np.ndarray) -> tuple[np.ndarray, int]:
    """Community ids renumbered 0..C-1 keeping their order."""
    used = np.zeros(com.size, dtype=bool)
    used[com] = True
    new = np.cumsum(used) - 1
    return new[com], int(used.sum())


def _one_level(a: sp.csr_matrix, resolution: float, rng) -> tuple[np.ndarray, float]:
    """Local moving on ``a`` from singletons until a pass moves nothing or gains < 1e-7.
    Returns (community of each node, ids 0..C-1 keeping the order of the founding nodes; quality).

    Gains are compared divided by ``resolution * k_i / 2m`` (> 0, the same order and sign): the rows
    of the adjacency are pre-scaled by ``2m / (resolution * k_i)``, so a visit is one ``bincount`` of
    the scaled row by community minus the communities' total degrees. Communities that lost their last
    node get an infinite total degree (never chosen); a best community without an edge to the node
    (not a candidate in python-louvain) sends the visit to the masked computation."""
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).reshape(-1)
    m2 = float(deg.sum())
    diag = a.diagonal()
    rows = np.repeat(np.arange(n), np.diff(a.indptr))
    has_edge = deg > diag  # an edge to another node: otherwise the node never moves
    inv_dc = np.zeros(n)
    inv_dc[has_edge] = m2 / (resolution * deg[has_edge])
    dense = n * n * 8 <= _DENSE_MAX_BYTES and a.nnz >= _DENSE_MIN_FILL * n * n
    if dense:
        w = a.toarray()
        np.fill_diagonal(w, 0.0)  # the node's own loop is not an edge to its community
        w *= inv_dc[:, None]
    else:
        keep = rows != a.indices  # the node's own loop is not an edge to its community
        indptr = np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=n))]).tolist()
        indices = a.indices[keep]
        data = a.data[keep] * inv_dc[rows[keep]]
    com = np.arange(n)
    tot = deg.copy()
    size = [1] * n
    degl = deg.tolist()
    movable = np.flatnonzero(has_edge)
    cur = resolution * float(diag.sum()) / m2 - float(np.sum((deg / m2) ** 2))
    n_com = n
    inf = np.inf
    while True:
        moved = False
        for i in rng.permutation(n).tolist():
            if not has_edge[i]:
                continue
            own = com[i]
            ki = degl[i]
            if dense:
                kin = np.bincount(com, weights=w[i], minlength=n_com)
                stay = kin[own] - (tot[own] - ki)
                gain = np.subtract(kin, tot, out=kin)
                best = int(gain.argmax())
                g = gain[best]
                if g > stay and best != own and kin[best] + tot[best] <= 0.0:  # no edge into best
                    kin = np.bincount(com, weights=w[i], minlength=n_com)
                    gain = np.where(kin > 0.0, kin - tot, -inf)
                    best = int(gain.argmax())
                    g = gain[best]
            else:
                s, e = indptr[i], indptr[i + 1]
                lab = com[indices[s:e]]
                kin = np.bincount(lab, weights=data[s:e], minlength=n_com)
                gain = kin[lab] - tot[lab]  # per neighbour: its community's gain
                stay = kin[own] - (tot[own] - ki)
                j = int(gain.argmax())
                best = int(lab[j])
                g = gain[j]
            if best != own and g > stay:
                size[own] -= 1
                tot[own] = tot[own] - ki if size[own] else inf
                size[best] += 1
                tot[best] += ki
                com[i] = best
                moved = True
        com, n_com = _compact(com)
        tot = np.bincount(com, weights=deg, minlength=n_com)
        size = np.bincount(com, minlength=n_com).tolist()
        new = _quality(a, com, resolution, rows, deg)
        if not moved or new - cur < _MIN:
            return com, new
        cur = new


def _aggregate(a: sp.csr_matrix, com: np.ndarray, n_com: int) -> sp.csr_matrix:
    p = sp.csr_matrix((np.ones(com.size), (np.arange(com.size), com)), shape=(com.size, n_com))
    out = (p.T @ a @ p).tocsr()
    out.sum_duplicates()
    return out


def best_partition(graph, resolution: float = 1.0, random_state: int = 0, validate: bool = True) -> np.ndarray:
    """Louvain partition (python-louvain's algorithm, see the module docstring) of the undirected graph
    with symmetric non-negative adjacency ``graph`` (scipy sparse or dense, n x n; diagonal = twice
    the self-loop weight, as `adjacency` builds it). Returns int64 community labels, one per node,
    numbered 0.. in order of first appearance. Nodes without edges are their own communities.
    ``random_state`` (a non-negative int) fixes the visit orders: the same input gives the same labels.
    ``validate=False`` skips the square / symmetric / non-negative checks (for a matrix `adjacency` built)."""
    if isinstance(resolution, bool) or not isinstance(resolution, numbers.Real) or not resolution > 0:
        raise ValueError(f"resolution: must be a positive number, got {resolution!r}")
    if isinstance(random_state, bool) or not isinstance(random_state, numbers.Integral) or random_state < 0:
        raise ValueError(f"random_state: must be a non-negative int, got {random_state!r}")
    a = _as_adjacency(graph) if validate else sp.csr_matrix(graph, dtype=np.float64)
    n = a.shape[0]
    if n == 0:
        return np.zeros(0, dtype=np.int64)
    if a.nnz == 0:
        return np.arange(n, dtype=np.int64)
    rng = np.random.default_rng(int(random_state))
    perm = rng.permutation(n)  # ties go to the community first in this random node order
    a = a[perm]  # rows; then the columns renamed (CSR rows need not be sorted here)
    inv = np.empty(n, dtype=a.indices.dtype)
    inv[perm] = np.arange(n, dtype=a.indices.dtype)
    a = sp.csr_matrix((a.data, inv[a.indices], a.indptr), shape=(n, n))
    resolution = float(resolution)
    node2com = np.arange(n)
    mod = None
    while True:
        com, new = _one_level(a, resolution, rng)
        if mod is not None and new - mod < _MIN:
            break
        mod = new
        n_com = int(com.max()) + 1
        node2com = com[node2com]
        if n_com == a.shape[0]:  # nothing merged: the next level would be this one again
            break
        a = _aggregate(a, com, n_com)
    labels = np.empty(n, dtype=np.int64)
    labels[perm] = node2com
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    rank = np.empty(first.size, dtype=np.int64)
    rank[np.argsort(first, kind="stable")] = np.arange(first.size)
    return rank[inv.reshape(-1)]
