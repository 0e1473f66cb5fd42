"""Louvain community detection in numpy/scipy: python-louvain's algorithm without its per-edge Python.

Why: ``community_louvain.best_partition`` (python-louvain) walks a networkx graph edge by edge in pure
Python (~10-20 us per edge and pass). The chip-similarity graphs of `LouvainSegmenter` are dense (a
1,024-chip session has ~523k chip pairs; its graphs keep up to the 250,000-edge budget of
``max_edges="auto"``) and ``modality_weights="auto"`` runs one Louvain per point of the 11-point
weight grid, so that loop dominated segmentation time (issue 12: ~44 s CPU per session). Here the
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

What differs: the random numbers. Visit orders come from ``numpy.random.default_rng(random_state)``,
and exact ties between equally good communities (unweighted graphs) go to the lowest community id
(community ids follow a random order of the nodes drawn once per call) or, on CSR rows, to the first
neighbour in that order, where python-louvain shuffles the candidate communities of every node from
its own ``RandomState`` stream; so partitions are reproducible for a given ``random_state`` but are
not python-louvain's partitions for the same seed (the same algorithm, another random sample of its
runs). With python-louvain's own visit order, one level gives its very partition (tests). Duplicate
edges in the input are summed (networkx keeps the last one).

Speed: besides the vectorised visit, every pass but a level's first starts by deciding all nodes at
once (`_sweep_batched`: every node up to the first that moves keeps its community, then the rest is
decided again), for a budget of moves; the usual last 1-3 passes of a level, with few moves, then
cost a few vectorised steps instead of one visit per node.
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
    # mirrored entries first, then loops, then the edges as given: edges given as a row-major sorted
    # upper triangle (LouvainSegmenter's) then come out of the COO -> CSR pass with sorted rows (no sort)
    r = np.concatenate([cols[off], rows[~off], rows[off]])
    c = np.concatenate([rows[off], cols[~off], cols[off]])
    v = np.concatenate([w[off], 2.0 * w[~off], w[off]])
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


#: every pass but a level's first, with at most _BATCH_MAX_COMMUNITIES communities, decides the nodes
#: all at once (`_sweep_batched`) until min(n * _BATCH_MOVE_FRACTION, max(_BATCH_MIN_MOVES,
#: _BATCH_BUDGET // C)) nodes moved (each move costs one vectorised step over the rest x C
#: communities, a visit one by one ~ a step over C or the node's row); the rest are visited one by one
_BATCH_MIN_MOVES = 4
_BATCH_BUDGET = 2048
_BATCH_MOVE_FRACTION = 1 / 8
_BATCH_MAX_COMMUNITIES = 64


def _sweep_batched(order, com, tot, size, deg, has_edge, k_scaled, n_nb, column, max_moves):
    """One pass of local moving over ``order`` when few nodes are expected to move: the decision of
    every node not yet visited is computed at once from ``k_scaled`` (n x C: each node's scaled edge
    weight into each community) and ``n_nb`` (n x C: its number of neighbours there); the nodes up to
    the first one that moves keep their community (the state they see is the current one), that node
    moves, the two columns it changes are updated and the rest is decided again. The same decisions
    as visiting the nodes one by one. ``column(i)`` gives (neighbours of i, their scaled weight to i).
    Stops after ``max_moves`` moves. Returns (number of moves, the nodes of ``order`` not visited yet);
    ``com``, ``tot``, ``size`` are updated in place."""
    rem = order[has_edge[order]]
    moves = 0
    inf = np.inf
    while rem.size and moves < max_moves:
        kn = k_scaled[rem]
        gain = kn - tot
        own = com[rem]
        r = np.arange(rem.size)
        stay = gain[r, own] + deg[rem]
        gain[n_nb[rem] <= 0] = -inf  # candidates: communities holding a neighbour
        best = gain.argmax(axis=1)
        go = np.flatnonzero((best != own) & (gain[r, best] > stay))
        if go.size == 0:
            break
        p = int(go[0])
        i, b, a_ = int(rem[p]), int(best[p]), int(own[p])
        ki = deg[i]
        size[a_] -= 1
        tot[a_] = tot[a_] - ki if size[a_] else inf
        size[b] += 1
        tot[b] += ki
        com[i] = b
        nb, wv = column(i)
        k_scaled[nb, a_] -= wv
        k_scaled[nb, b] += wv
        n_nb[nb, a_] -= 1
        n_nb[nb, b] += 1
        moves += 1
        rem = rem[p + 1:]
    return moves, (rem if moves >= max_moves else rem[:0])


def _one_level(a: sp.csr_matrix, resolution: float, rng) -> tuple[np.ndarray, float]:
    """Local moving on ``a`` from singletons until a pass moves nothing or gains < 1e-7.
    Returns (community of each node, ids 0..C-1 keeping the order of the founding nodes; quality).

    Gains are compared divided by ``resolution * k_i / 2m`` (> 0, the same order and sign): the rows
    of the adjacency are pre-scaled by ``2m / (resolution * k_i)``, so a visit is one ``bincount`` of
    the scaled row by community minus the communities' total degrees. Communities that lost their last
    node get an infinite total degree (never chosen); a best community without an edge to the node
    (not a candidate in python-louvain) sends the visit to the masked computation. Passes after the
    first start with `_sweep_batched` (same decisions, one vectorised step per move) and visit the
    nodes one by one only if many move."""
    n = a.shape[0]
    deg = np.asarray(a.sum(axis=1)).reshape(-1)
    m2 = float(deg.sum())
    diag = a.diagonal()
    rows = np.repeat(np.arange(n), np.diff(a.indptr))
    has_edge = deg > diag  # an edge to another node: otherwise the node never moves
    inv_dc = np.zeros(n)
    inv_dc[has_edge] = m2 / (resolution * deg[has_edge])
    dense = n * n * 8 <= _DENSE_MAX_BYTES and a.nnz >= _DENSE_MIN_FILL * n * n
    keep = rows != a.indices  # the node's own loop is not an edge to its community
    off = sp.csr_matrix((a.data[keep] * inv_dc[rows[keep]], a.indices[keep],
                         np.concatenate([[0], np.cumsum(np.bincount(rows[keep], minlength=n))])), shape=(n, n))
    if dense:
        w = off.toarray()

        def column(i):
            nb = np.flatnonzero(w[:, i])
            return nb, w[nb, i]
    else:
        off.has_sorted_indices = False
        off.sort_indices()  # ties of the per-neighbour argmax: the first neighbour in (random) node order
        indptr, indices, data = off.indptr.tolist(), off.indices, off.data

        def column(i):
            s, e = indptr[i], indptr[i + 1]
            nb = indices[s:e]
            return nb, data[s:e] / inv_dc[i] * inv_dc[nb]  # w_ij * inv_dc[j]: node j's scaled weight to i
    com = np.arange(n)
    tot = deg.copy()
    size = [1] * n
    degl = deg.tolist()
    edge_l = has_edge.tolist()
    cur = resolution * float(diag.sum()) / m2 - float(np.sum((deg / m2) ** 2))
    n_com = n
    inf = np.inf
    first = True
    ones, structure = np.ones(n), None
    while True:
        order = rng.permutation(n)
        moves = 0
        if not first and n_com <= _BATCH_MAX_COMMUNITIES:
            p = sp.csr_matrix((ones, com, np.arange(n + 1)), shape=(n, n_com))  # node -> community
            if structure is None:
                structure = sp.csr_matrix((np.ones(off.nnz), off.indices, off.indptr), shape=(n, n))
            k_scaled = (off @ p).toarray()
            n_nb = (structure @ p).toarray()
            max_moves = min(int(n * _BATCH_MOVE_FRACTION), max(_BATCH_MIN_MOVES, _BATCH_BUDGET // n_com))
            moves, order = _sweep_batched(order, com, tot, size, deg, has_edge, k_scaled, n_nb, column, max_moves)
            del k_scaled, n_nb
        first = False
        if order.size:
            for i in order.tolist():
                if not edge_l[i]:
                    continue
                own = com[i]
                ki = degl[i]
                if dense:
                    kin = np.bincount(com, weights=w[i], minlength=n_com)
                    gain = np.subtract(kin, tot, out=kin)
                    stay = gain[own] + ki
                    best = int(gain.argmax())
                    g = gain[best]
                    if g > stay and best != own and g + tot[best] <= 0.0:  # no edge into best
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
                    moves += 1
        com, n_com = _compact(com)
        tot = np.bincount(com, weights=deg, minlength=n_com)
        size = np.bincount(com, minlength=n_com).tolist()
        new = _quality(a, com, resolution, rows, deg)
        if not moves or new - cur < _MIN:
            return com, new
        cur = new


def _aggregate(a: sp.csr_matrix, com: np.ndarray, n_com: int) -> sp.csr_matrix:
    p = sp.csr_matrix((np.ones(com.size), (np.arange(com.size), com)), shape=(com.size, n_com))
    out = (p.T @ a @ p).tocsr()
    out.sum_duplicates()  # canonical: sorted rows (ties of the sparse path: lowest community id)
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
    a = a[perm]  # rows; then the columns renamed (sorted where the sparse path needs it)
    inv = np.empty(n, dtype=a.indices.dtype)
    inv[perm] = np.arange(n, dtype=a.indices.dtype)
    a = sp.csr_matrix((a.data, inv[a.indices], a.indptr), shape=(n, n))
    a.has_sorted_indices = False
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
