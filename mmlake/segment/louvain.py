"""Louvain community detection on a thresholded cosine-similarity graph (preprint section IV.F)."""

from __future__ import annotations

import hashlib
import numbers
import time
from collections import OrderedDict

import numpy as np

from ._base import (
    SUPPORT_CRITERION,
    Segmenter,
    check_support_indices,
    support_weight_scores,
    as_modalities,
    check_random_state,
    check_weight_grid,
    choose_weight,
    relabel,
    resolve_weights,
)

THRESHOLD_STATISTICS = ("mode", "median", "mean")
#: partition code: "numpy" is `mmlake.segment.fast_louvain` (python-louvain's algorithm, vectorised),
#: "python-louvain" is ``community_louvain.best_partition`` on a networkx graph (the preprint's code)
BACKENDS = ("numpy", "python-louvain")
#: default edge budget of ``max_edges="auto"``: python-louvain is pure Python (~10-20 us per edge)
AUTO_MAX_EDGES = 250_000
_BLOCK_ELEMENTS = 1 << 22  # similarity rows are computed in blocks of ~4M float32 (16 MB)
#: per-modality similarity matrices are held whole (and reused by every weighting) up to this size
_FULL_SIM_BYTES = 256 << 20
_MEMO_SIZE = 32  # graph + partition results kept (by content) for repeated fits in one process
_memo: "OrderedDict[tuple, tuple]" = OrderedDict()


def threshold_statistic(values: np.ndarray, statistic, n_bins: int = 100) -> tuple[float, dict]:
    """The threshold for ``statistic`` over the chip-pair similarities ``values`` (1-D).

    - ``"mode"``: centre of the most populated bin of ``np.histogram(values, bins=n_bins)`` (bins span
      [min, max] of the values; on a tie the lowest such bin);
    - ``"median"`` / ``"mean"``: ``np.median`` / ``np.mean`` (accumulated in float64);
    - a number: used as is.

    Returns ``(value, histogram)`` with the histogram ``{"counts": [...], "edges": [...]}``.
    """
    counts, edges = np.histogram(values, bins=n_bins)
    hist = {"counts": counts.tolist(), "edges": [float(e) for e in edges]}
    if statistic == "mode":
        b = int(np.argmax(counts))
        value = 0.5 * (float(edges[b]) + float(edges[b + 1]))
    elif statistic == "median":
        value = float(np.median(values))
    elif statistic == "mean":
        value = float(np.mean(values, dtype=np.float64))
    else:
        value = float(statistic)
    return value, hist


def _unit_rows(x: np.ndarray, where: str) -> np.ndarray:
    norms = np.linalg.norm(x, axis=1)
    zero = norms == 0
    if zero.any():
        idx = np.flatnonzero(zero)
        raise ValueError(
            f"{where}: {idx.size} chip(s) have an all-zero feature vector (first chip indices "
            f"{idx[:5].tolist()}); cosine similarity is undefined for them (drop them, or give them a "
            "constant offset)"
        )
    return (x / norms[:, None]).astype(np.float32)


def _full_similarities(units: list[np.ndarray]) -> list[np.ndarray] | None:
    """Each modality's n x n cosine-similarity matrix, when all of them fit in ``_FULL_SIM_BYTES``
    (n up to ~5,800 chips for two modalities), else None (the pair pass then computes row blocks)."""
    n = units[0].shape[0]
    if len(units) * n * n * 4 > _FULL_SIM_BYTES:
        return None
    block = max(1, _BLOCK_ELEMENTS // n)
    out = []
    for u in units:  # the same row blocks as `_pair_pass` computes: bit for bit the same similarities
        s = np.empty((n, n), dtype=np.float32)
        for start in range(0, n, block):
            s[start:start + block] = u[start:start + block] @ u.T
        out.append(s)
    return out


def _pair_pass(units: list[np.ndarray], weights: list[float], k: int, full: list[np.ndarray] | None = None):
    """One pass over the averaged cosine-similarity matrix, block of rows by block of rows.

    Returns the upper-triangle similarities (row-major, like ``np.triu_indices(n, 1)``) as float32,
    and, when ``k > 0``, each chip's ``k`` most similar other chips (indices and similarities).
    ``full`` (from `_full_similarities`) gives the per-modality matrices, computed once for every
    weighting; without it the n x n matrices are never held whole.
    """
    n = units[0].shape[0]
    vals = np.empty(n * (n - 1) // 2, dtype=np.float32)
    knn_idx = np.empty((n, k), dtype=np.int64) if k else None
    knn_val = np.empty((n, k), dtype=np.float32) if k else None
    block = max(1, _BLOCK_ELEMENTS // n)
    cols = np.arange(n)
    pos = 0
    for start in range(0, n, block):
        stop = min(n, start + block)
        s = None
        for m, (u, w) in enumerate(zip(units, weights)):
            if w == 0.0:
                continue
            part = u[start:stop] @ u.T if full is None else full[m][start:stop].copy()
            if w != 1.0:
                part *= np.float32(w)
            if s is None:
                s = part
            else:
                s += part
        rows = np.arange(start, stop)
        upper = s[cols[None, :] > rows[:, None]]
        vals[pos : pos + upper.size] = upper
        pos += upper.size
        if k:
            s[np.arange(stop - start), rows] = -np.inf
            top = np.argpartition(s, n - k, axis=1)[:, n - k :]
            knn_idx[start:stop] = top
            knn_val[start:stop] = np.take_along_axis(s, top, axis=1)
    return vals, knn_idx, knn_val


_GRAPH_CLASS = None


def _graph_class():
    """``networkx.Graph`` whose ``g[node]`` is the adjacency dict itself rather than a read-only
    ``AtlasView`` over it: python-louvain's inner loop (``graph[node].items()``) then iterates a dict
    in C instead of a ``Mapping`` view key by key (~15 % of a Louvain run). Same items in the same
    order, so the partition is exactly networkx.Graph's; do not mutate ``g[node]``."""
    global _GRAPH_CLASS
    if _GRAPH_CLASS is None:
        import networkx as nx

        class _AdjGraph(nx.Graph):
            def __getitem__(self, n):
                return self._adj[n]

        _GRAPH_CLASS = _AdjGraph
    return _GRAPH_CLASS


_FORK_JOB = None  # (segmenter, units, weight lists, max_edges, full similarities) for _fork_worker


def _fork_worker_init() -> None:
    """Default SIGTERM/SIGINT in a forked worker.

    Why: a worker inherits the parent's Python signal handlers, and Dagster's step process installs
    ones that raise ``DagsterExecutionInterruptedError``. A worker told to stop then raised inside
    the pool queue's lock (after acquiring it, before releasing it) and its sibling waited on that
    lock for ever: the 1,800 s CI hang of the demo campaign at 0cc407a. With the default handlers a
    signalled worker just ends."""
    import signal

    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)


def _fork_worker(i: int):
    """One weighting's graph + partition in a forked worker (state inherited through _FORK_JOB)."""
    est, units, weight_list, max_edges, full = _FORK_JOB
    g, info, hist, t = est._graph(units, weight_list[i], max_edges, full)
    labels, q, t_l = est._partition(g)
    return labels, q, info, hist, t, t_l


def _upper_index_to_pairs(lin: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Row-major upper-triangle linear indices -> (i, j) with i < j."""
    offsets = np.arange(n, dtype=np.int64) * (2 * n - np.arange(n, dtype=np.int64) - 1) // 2
    i = np.searchsorted(offsets, lin, side="right") - 1
    j = lin - offsets[i] + i + 1
    return i, j


class LouvainSegmenter(Segmenter):
    """Louvain communities of the chip cosine-similarity graph (Blondel et al. 2008, python-louvain's algorithm).

    Steps (preprint IV.F, with the pnnl/GraphEM defects fixed):

    1. cosine similarity between all chip pairs, per modality; with several modalities the
       similarity matrices are **averaged** (weights ``modality_weights``, normalised to sum 1) --
       every modality really enters the average (GraphEM's "ensemble" reused the EDS matrix);
    2. threshold = a statistic of the histogram of the (averaged) off-diagonal similarities:
       ``"mode"`` (centre of the most populated of ``n_bins`` equal bins spanning [min, max]),
       ``"median"``, ``"mean"``, or a number; edges with similarity strictly above it are kept;
    3. edges weighted by their similarity (``weighted=True``; edges with similarity <= 0 are then
       dropped, modularity needs non-negative weights) or all of weight 1 (``weighted=False``);
    4. Louvain with ``resolution`` and ``random_state``: ``backend="numpy"`` (default) runs
       `mmlake.segment.fast_louvain.best_partition`, the same algorithm as python-louvain in numpy/scipy
       (its Louvain stage ~20x faster in bench/segment.py at 1,024 and 10,000 chips, same modularity;
       reproducible per seed, but not python-louvain's partition for the same seed);
       ``backend="python-louvain"`` runs ``community_louvain.best_partition(graph,
       resolution=resolution, random_state=random_state)`` on a networkx graph. Every chip is a node, so a chip without any edge becomes its own community (the preprint's
       "outliers or one-off clusters": with the mode threshold this happens to chips whose
       similarities all fall below the mode; ``params_["n_singletons"]`` counts them).

    Sparsification (``max_edges``): the dense threshold graph of n chips has up to n(n-1)/2 edges
    (50 M pairs at 10,000 chips, of which 7 M pass the mode threshold for the benchmark's features)
    and python-louvain is pure Python (~10-20 us per edge). When more than ``max_edges`` edges pass
    the threshold, the graph is replaced by the union of each chip's ``k = max(1, max_edges //
    n_chips)`` most similar chips, keeping only those above the threshold (a kNN graph with at most
    ``max(max_edges, n_chips)`` edges). This changes the method: the threshold graph connects each
    chip to *every* chip more similar than the global statistic, the kNN graph only to its strongest
    neighbours, so large homogeneous regions can split into more communities and modularity values
    are not comparable with the dense graph's. The threshold statistic itself is still computed over
    all pairs. ``"auto"`` uses a budget of 250,000 edges: sessions up to 707 chips (a 24 x 24 grid)
    always keep the exact preprint graph, larger ones whenever the threshold leaves at most 250,000
    edges; at 10,000 chips k = 25. (A budget of a small multiple of n, 10-100 edges per chip, as kNN
    or as a uniform sample of the threshold edges, was measured on the demo campaign and lost
    0.03-0.2 AMI against truth: sparse graphs split the large regions.) ``None`` never sparsifies
    (exact; slow and memory hungry for large n). ``params_["sparsified"]``,
    ``["n_neighbors"]``, ``["n_edges_above_threshold"]`` and ``["n_edges"]`` record what happened.

    Memory: up to ~5,800 chips (two modalities) each modality's similarity matrix is computed once and
    held (float32, 4 n^2 bytes each) for every weighting; above, similarities are computed in row
    blocks per weighting. The off-diagonal similarities are kept once as float32 for the threshold
    statistic (n(n-1)/2 * 4 bytes: 200 MB at 10,000 chips). Repeated fits on the same features
    (single modalities, ensemble, the weight grid) reuse memoised results (``_run``).

    ``modality_weights="auto"`` (exactly two modalities): a ground-truth-free choice of the averaging
    weight w (modality 0 gets w, modality 1 gets 1 - w) on ``weight_grid`` (default 0, 0.1, ..., 1).
    For each w the averaged graph G_w is thresholded (same statistic) and partitioned; the score is
    the modularity of that partition on G_w, i.e. the Louvain objective itself: the weight whose
    averaged graph shows the clearest community structure wins. Complementary modalities make
    the fused graph more modular than either alone (more, well separated communities); a noise
    modality makes it less modular, so it gets little weight. Ties go to the weight
    closest to 0.5. Costs one Louvain run per grid point. With ``support`` (few-shot example chips
    ``{class: [chip indices]}``, at least 2 classes) the score is instead the AMI between the
    partition and the few-shot classification of all chips from those examples in the same weighting
    (modularity rewards any crisp graph, also one built from the modality that cannot tell two
    classes apart; the examples say which classes matter).

    Attributes after ``fit``: ``labels_`` (int64, re-indexed 0.. by first appearance in chip order),
    ``n_labels_``, ``threshold_`` (value used), ``histogram_`` (counts and edges),
    ``modularity_`` (of the partition on the graph it was found on), ``params_`` (JSON-able),
    ``timings_`` (seconds per stage, not part of params_).
    """

    name = "louvain"
    version = "1.2"  # 1.2: backend parameter, numpy Louvain by default
    ensemble_rule = "average_similarity"

    def __init__(
        self,
        threshold="mode",
        weighted=True,
        random_state=0,
        resolution=1.0,
        max_edges="auto",
        n_bins=100,
        modality_weights=None,
        weight_grid=None,
        support=None,
        backend="numpy",
    ):
        self.support = support
        self.backend = backend
        self.threshold = threshold
        self.weighted = weighted
        self.random_state = random_state
        self.resolution = resolution
        self.max_edges = max_edges
        self.n_bins = n_bins
        self.modality_weights = modality_weights
        self.weight_grid = weight_grid

    # ---------------------------------------------------------------- validation
    def _check_params(self) -> int | None:
        if not isinstance(self.backend, str) or self.backend not in BACKENDS:
            raise ValueError(f"backend: must be one of {BACKENDS}, got {self.backend!r}")
        t = self.threshold
        if isinstance(t, str):
            if t not in THRESHOLD_STATISTICS:
                raise ValueError(f"threshold: must be one of {THRESHOLD_STATISTICS} or a number, got {t!r}")
        elif isinstance(t, bool) or not isinstance(t, numbers.Real) or not np.isfinite(t) or not -1 <= t <= 1:
            raise ValueError(f"threshold: a number must be a cosine similarity in [-1, 1], got {t!r}")
        if not isinstance(self.weighted, (bool, np.bool_)):
            raise ValueError(f"weighted: must be True or False, got {self.weighted!r}")
        check_random_state(self.random_state)
        r = self.resolution
        if isinstance(r, bool) or not isinstance(r, numbers.Real) or not np.isfinite(r) or r <= 0:
            raise ValueError(f"resolution: must be a positive number, got {r!r}")
        b = self.n_bins
        if isinstance(b, bool) or not isinstance(b, numbers.Integral) or b < 2:
            raise ValueError(f"n_bins: must be an int >= 2, got {b!r}")
        m = self.max_edges
        if m == "auto":
            return AUTO_MAX_EDGES
        if m is None:
            return None
        if isinstance(m, bool) or not isinstance(m, numbers.Integral) or m < 1:
            raise ValueError(f"max_edges: must be 'auto', None or a positive int, got {m!r}")
        return int(m)

    # ---------------------------------------------------------------- graph + partition
    def _graph(self, units, weights, max_edges, full=None):
        n = units[0].shape[0]
        n_pairs = n * (n - 1) // 2
        k = 0
        if max_edges is not None and n_pairs > max_edges:
            k = max(1, min(n - 1, max_edges // n))
        t0 = time.perf_counter()
        # with the similarity matrices held, the kNN lists are computed only when the threshold graph
        # turns out to exceed the budget (a second pass over the same matrices: the same values)
        vals, knn_idx, knn_val = _pair_pass(units, weights, 0 if full is not None else k, full)
        t1 = time.perf_counter()
        statistic = self.threshold
        value, hist = threshold_statistic(vals, statistic, self.n_bins)
        above = vals > value
        n_above = int(np.count_nonzero(above))
        sparsified = max_edges is not None and n_above > max_edges
        if not sparsified:
            lin = np.flatnonzero(above)
            w = vals[lin].astype(np.float64)
            del above, vals
            a, b = _upper_index_to_pairs(lin, n)
        else:
            del above, vals
            if knn_idx is None:
                _, knn_idx, knn_val = _pair_pass(units, weights, k, full)
            i = np.repeat(np.arange(n, dtype=np.int64), k)
            j = knn_idx.reshape(-1)
            w = knn_val.reshape(-1).astype(np.float64)
            keep = w > value
            i, j, w = i[keep], j[keep], w[keep]
            a, b = np.minimum(i, j), np.maximum(i, j)
            key, first = np.unique(a * n + b, return_index=True)
            a, b, w = key // n, key % n, w[first]
        n_nonpositive = 0
        if self.weighted:
            pos = w > 0
            n_nonpositive = int(np.count_nonzero(~pos))
            a, b, w = a[pos], b[pos], w[pos]
        else:
            w = np.ones_like(w)
        if self.backend == "numpy":
            from .fast_louvain import adjacency

            g = adjacency(n, a, b, w)
            n_edges = int(a.size)
        else:
            g = _graph_class()()
            g.add_nodes_from(range(n))
            g.add_weighted_edges_from(zip(a.tolist(), b.tolist(), w.tolist()))
            n_edges = int(g.number_of_edges())
        t2 = time.perf_counter()
        info = {
            "threshold_statistic": statistic if isinstance(statistic, str) else "value",
            "threshold_value": value,
            "n_bins": int(self.n_bins),
            "n_edges_above_threshold": n_above,
            "sparsified": bool(sparsified),
            "n_neighbors": int(k) if sparsified else None,
            "n_edges": n_edges,
            "n_nonpositive_edges_dropped": n_nonpositive,
            "edge_weights": "cosine_similarity" if self.weighted else "unweighted",
        }
        return g, info, hist, {"similarity_s": t1 - t0, "graph_s": t2 - t1}

    def _partition(self, g):
        t0 = time.perf_counter()
        if self.backend == "numpy":
            from . import fast_louvain

            labels = fast_louvain.best_partition(g, resolution=float(self.resolution),
                                                 random_state=int(self.random_state), validate=False)
            q = fast_louvain.modularity(labels, g, validate=False) if g.nnz else 0.0
            return relabel(labels), float(q), time.perf_counter() - t0
        import community as community_louvain

        part = community_louvain.best_partition(
            g, weight="weight", resolution=float(self.resolution), random_state=int(self.random_state)
        )
        q = community_louvain.modularity(part, g, weight="weight") if g.number_of_edges() else 0.0
        labels = relabel(np.fromiter((part[i] for i in range(g.number_of_nodes())), dtype=np.int64))
        return labels, float(q), time.perf_counter() - t0

    def _run(self, units, digests, weights, max_edges, full_box):
        """Graph + partition for one weighting: ``(labels, modularity, info, histogram, timings,
        louvain seconds)``. Results are memoised by content (the unit feature rows of every modality
        with a non-zero weight, the weights and every parameter that shapes the graph), so the
        single-modality fits, the configured ensemble and the grid points of ``modality_weights="auto"``
        that build the same graph (w = 0, 0.5, 1) run Louvain once; the memo holds the last
        ``_MEMO_SIZE`` results of the process."""
        key = self._memo_key(digests, weights, max_edges)
        hit = _memo.get(key)
        if hit is not None:
            _memo.move_to_end(key)
            labels, q, info, hist, t, t_l = hit
            return (labels.copy(), q, dict(info), {k: list(v) for k, v in hist.items()}, {**t, "memoised": 1.0},
                    t_l)
        if full_box[0] is None:
            t0 = time.perf_counter()
            full_box[0] = _full_similarities(units) or False
            full_box[1] = time.perf_counter() - t0
        g, info, hist, t = self._graph(units, weights, max_edges, full_box[0] or None)
        if full_box[1]:
            t["similarity_s"] += full_box[1]
            full_box[1] = 0.0
        labels, q, t_l = self._partition(g)
        _memo[key] = (labels.copy(), q, dict(info), hist, t, t_l)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
        return labels, q, info, hist, t, t_l

    def _memo_key(self, digests, weights, max_edges) -> tuple:
        return (tuple((d, float(w)) for d, w in zip(digests, weights) if w != 0.0), max_edges,
                self.threshold if isinstance(self.threshold, str) else float(self.threshold), bool(self.weighted),
                float(self.resolution), int(self.random_state), int(self.n_bins), self.backend, self.version)

    def _prefetch(self, units, digests, weight_list, max_edges, full_box) -> int:
        """Run the not yet memoised weightings of ``weight_list`` in forked worker processes (either
        backend uses one core per run), filling the memo; returns the number run. Results are the
        serial ones (same code, same seed). Serial (0) with fewer than 2 cores or misses, below 300
        chips, without the ``fork`` start method, or with ``MMLAKE_SEGMENT_WORKERS=1``; any failure of
        the pool falls back to serial."""
        import multiprocessing
        import os

        global _FORK_JOB
        n = units[0].shape[0]
        misses, seen = [], set()
        for w in weight_list:
            k = self._memo_key(digests, w, max_edges)
            if k not in _memo and k not in seen:
                seen.add(k)
                misses.append((k, w))
        try:
            cores = len(os.sched_getaffinity(0))
        except AttributeError:  # pragma: no cover - not Linux
            cores = os.cpu_count() or 1
        cap = os.environ.get("MMLAKE_SEGMENT_WORKERS", "").strip()
        workers = min(len(misses), cores, int(cap) if cap.isdigit() and int(cap) > 0 else cores)
        if workers < 2 or n < 300 or "fork" not in multiprocessing.get_all_start_methods():
            return 0
        if full_box[0] is None:  # computed before the fork: every worker shares the parent's pages
            t0 = time.perf_counter()
            full_box[0] = _full_similarities(units) or False
            full_box[1] = time.perf_counter() - t0
        _FORK_JOB = (self, units, [w for _, w in misses], max_edges, full_box[0] or None)
        # concurrent.futures, not multiprocessing.Pool: a worker that dies (killed, out of memory)
        # raises BrokenProcessPool here instead of leaving Pool.map waiting for ever, and shutdown
        # sends each worker a sentinel instead of SIGTERM
        from concurrent.futures import ProcessPoolExecutor

        try:
            with ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context("fork"),
                                     initializer=_fork_worker_init) as pool:
                results = list(pool.map(_fork_worker, range(len(misses))))
        except Exception:  # noqa: BLE001 - a pool that cannot start or dies: the serial path computes it
            return 0
        finally:
            _FORK_JOB = None
        for (k, _), (labels, q, info, hist, t, t_l) in zip(misses, results):
            t = {**t, "worker_process": 1.0}
            _memo[k] = (labels, q, info, hist, t, t_l)
        while len(_memo) > _MEMO_SIZE:
            _memo.popitem(last=False)
        return len(misses)

    # ---------------------------------------------------------------- fit
    def fit(self, features, y=None):
        """Segment the chips; ``features`` is one array, a list or a dict of per-modality arrays."""
        max_edges = self._check_params()
        mods = as_modalities(features)
        names = list(mods)
        units = [_unit_rows(x, f"features[{k!r}]" if len(mods) > 1 else "features") for k, x in mods.items()]
        digests = [hashlib.blake2b(np.ascontiguousarray(u).view(np.uint8), digest_size=16).hexdigest()
                   + f":{u.shape}" for u in units]
        full_box: list = [None, 0.0]  # per-modality similarity matrices, computed on the first memo miss
        timings: dict[str, float] = {}
        used: dict = {"max_edges_used": max_edges}

        if isinstance(self.modality_weights, str) and self.modality_weights == "auto":
            if len(mods) != 2:
                raise ValueError(
                    f"modality_weights: 'auto' chooses the weight between exactly 2 modalities, got {len(mods)} {names}"
                )
            grid = check_weight_grid(self.weight_grid)
            scores, runs = [], {}
            self._prefetch(units, digests, [[w0, 1.0 - w0] for w0 in grid], max_edges, full_box)
            for w0 in grid:
                labels, q, info, hist, t, t_l = self._run(units, digests, [w0, 1.0 - w0], max_edges, full_box)
                scores.append(q)
                runs[w0] = (labels, q, info, hist, t, t_l)
            support = check_support_indices(self.support, units[0].shape[0])
            if support is not None:
                scores = support_weight_scores(mods, names, grid, {w0: r[0] for w0, r in runs.items()}, support)
                criterion = SUPPORT_CRITERION
            else:
                criterion = "max modularity of the Louvain partition on the averaged graph"
            w_best, weights, used["weight_selection"] = choose_weight(grid, scores, names, criterion)
            labels, q, info, hist, t, t_l = runs[w_best]
            timings.update(t)
        else:
            weights = resolve_weights(self.modality_weights, names)
            labels, q, info, hist, t, t_l = self._run(units, digests, [weights[k] for k in names], max_edges,
                                                      full_box)
            timings.update(t)
        timings["louvain_s"] = t_l
        used["modality_weights_used"] = weights
        used.update(info)
        used["modularity"] = q
        used["n_singletons"] = int(np.count_nonzero(np.bincount(labels) == 1))

        self.threshold_ = info["threshold_value"]
        self.histogram_ = hist
        self.modularity_ = q
        self.modality_weights_ = weights
        self.timings_ = timings
        self._finish(labels, mods, used)
        return self
