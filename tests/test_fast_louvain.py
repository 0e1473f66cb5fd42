"""mmlake.segment.fast_louvain against python-louvain (``community_louvain``), the code it replaces.

Partitions are not compared label for label (the random streams differ): on each graph the mean
modularity over several seeds must be within 1 % of python-louvain's, and the partitions must agree
with each other and with the planted truth as well as python-louvain's agree with it.
"""

from __future__ import annotations

import community as community_louvain
import networkx as nx
import numpy as np
import pytest

from mmlake.segment import LouvainSegmenter, ami
from mmlake.segment import fast_louvain as fl
from mmlake.segment.louvain import _unit_rows
from mmlake.segment.synthetic import make_multimodal_blobs

SEEDS = range(6)


def to_adjacency(g: nx.Graph, weight="weight"):
    e = [(u, v, d.get(weight, 1.0) if weight else 1.0) for u, v, d in g.edges(data=True)]
    u, v, w = (np.array(x) for x in zip(*e))
    return fl.adjacency(g.number_of_nodes(), u.astype(int), v.astype(int), w)


def to_graph(a) -> nx.Graph:
    """networkx graph of a CSR adjacency as LouvainSegmenter builds it (upper triangle, weights)."""
    coo = a.tocoo()
    keep = coo.row < coo.col
    g = nx.Graph()
    g.add_nodes_from(range(a.shape[0]))
    g.add_weighted_edges_from(zip(coo.row[keep].tolist(), coo.col[keep].tolist(), coo.data[keep].tolist()))
    return g


def compare(g: nx.Graph, a, seeds=SEEDS, resolution=1.0, weight="weight"):
    """Mean modularity (fast, python-louvain), fast and python-louvain labels per seed."""
    fast, ref, qf, qp = [], [], [], []
    for s in seeds:
        lab = fl.best_partition(a, resolution=resolution, random_state=s)
        part = community_louvain.best_partition(g, weight=weight, resolution=resolution, random_state=s)
        ref_lab = np.array([part[i] for i in range(g.number_of_nodes())])
        qf.append(fl.modularity(lab, a))
        qp.append(community_louvain.modularity(part, g, weight=weight))
        fast.append(lab)
        ref.append(ref_lab)
    return float(np.mean(qf)), float(np.mean(qp)), fast, ref


def planted(sizes, p_in, p_out, seed, weighted):
    g = nx.random_partition_graph(sizes, p_in, p_out, seed=seed)
    rng = np.random.default_rng(seed)
    if weighted:
        for u, v in g.edges():
            g[u][v]["weight"] = float(rng.uniform(0.2, 1.0))
    truth = np.empty(g.number_of_nodes(), dtype=np.int64)
    for c, block in enumerate(g.graph["partition"]):
        truth[list(block)] = c
    return nx.Graph(g), truth  # plain Graph, nodes 0..n-1


def test_modularity_is_python_louvains():
    g = nx.karate_club_graph()
    a = to_adjacency(g)
    rng = np.random.default_rng(0)
    for _ in range(5):
        lab = rng.integers(0, 4, g.number_of_nodes())
        part = dict(enumerate(lab.tolist()))
        assert fl.modularity(lab, a) == pytest.approx(community_louvain.modularity(part, g), abs=1e-12)
    g.add_edge(3, 3, weight=2.5)  # a self-loop counts twice in a degree, once in the internal weight
    a = to_adjacency(g)
    lab = rng.integers(0, 3, g.number_of_nodes())
    assert fl.modularity(lab, a) == pytest.approx(
        community_louvain.modularity(dict(enumerate(lab.tolist())), g), abs=1e-12)


@pytest.mark.parametrize("weighted", [True, False])
def test_karate_club(weighted):
    g = nx.karate_club_graph() if weighted else nx.Graph(nx.karate_club_graph().edges())
    seeds = range(20)
    qf, qp, fast, ref = compare(g, to_adjacency(g), seeds)
    assert qf == pytest.approx(qp, rel=0.01)
    assert qf > 0.40
    faction = np.array([g.nodes[i].get("club") == "Officer" for i in range(34)]) if weighted else None
    if faction is not None:  # the two factions of Zachary's club: Louvain splits them further, never mixes much
        assert np.mean([ami(lab, faction) for lab in fast]) == pytest.approx(
            np.mean([ami(lab, faction) for lab in ref]), abs=0.1)


@pytest.mark.parametrize("sizes,p_in,p_out,weighted", [
    ([60, 60, 60, 60], 0.3, 0.02, False),
    ([30, 50, 80, 40, 20], 0.25, 0.03, True),
    ([100] * 8, 0.1, 0.01, True),
])
def test_planted_partition(sizes, p_in, p_out, weighted):
    g, truth = planted(sizes, p_in, p_out, seed=sum(sizes), weighted=weighted)
    qf, qp, fast, ref = compare(g, to_adjacency(g))
    assert qf == pytest.approx(qp, rel=0.01)
    ami_fast = np.mean([ami(lab, truth) for lab in fast])
    ami_ref = np.mean([ami(lab, truth) for lab in ref])
    assert ami_fast >= ami_ref - 0.03 and ami_fast > 0.9
    assert np.mean([ami(f, r) for f, r in zip(fast, ref)]) > 0.9


@pytest.mark.parametrize("resolution", [0.5, 2.0])
def test_resolution(resolution):
    g, truth = planted([40] * 6, 0.3, 0.03, seed=7, weighted=True)
    a = to_adjacency(g)
    qf, qp, fast, ref = compare(g, a, resolution=resolution)
    assert qf == pytest.approx(qp, rel=0.02)
    n_fast = np.mean([lab.max() + 1 for lab in fast])
    n_ref = np.mean([lab.max() + 1 for lab in ref])
    assert abs(n_fast - n_ref) <= max(1.0, 0.2 * n_ref)
    lo = fl.best_partition(a, resolution=0.5, random_state=0).max()
    hi = fl.best_partition(a, resolution=5.0, random_state=0).max()
    assert hi > lo


@pytest.mark.parametrize("resolution", [0.2, 1.0, 3.0])
def test_same_visit_order_same_level_as_python_louvain(monkeypatch, resolution):
    """One level of local moving with python-louvain's own visit order: the very same partition
    (weighted graph: no ties, so python-louvain's shuffle of the candidate communities is moot)."""
    import community.community_louvain as clm
    from community.community_status import Status

    g, _ = planted([40] * 6, 0.3, 0.03, seed=7, weighted=True)
    a = to_adjacency(g)
    for seed in range(3):
        order = np.random.default_rng(seed).permutation(g.number_of_nodes()).tolist()

        def randomize(items, random_state):
            items = list(items)
            return list(order) if len(items) == len(order) and not isinstance(items[0], tuple) else items

        class FixedOrder:
            def permutation(self, n):
                return np.array(order)

        monkeypatch.setitem(clm.__dict__, "__randomize", randomize)
        status = Status()
        status.init(g, "weight")
        clm.__dict__["__one_level"](g, status, "weight", resolution, None)
        ref = np.array([status.node2com[i] for i in range(g.number_of_nodes())])
        com, quality = fl._one_level(a, resolution, FixedOrder())
        assert ami(com, ref) == pytest.approx(1.0)
        assert quality == pytest.approx(clm.__dict__["__modularity"](status, resolution), abs=1e-12)


@pytest.fixture(scope="module")
def chip_graphs():
    """Chip cosine graphs exactly as LouvainSegmenter builds them (mode threshold, weighted), from the
    test suite's synthetic multi-modal features: haadf alone, eds alone and the 0.5/0.5 average."""
    features, truth = make_multimodal_blobs(240, random_state=0)
    est = LouvainSegmenter()
    max_edges = est._check_params()
    units = [_unit_rows(x, k) for k, x in features.items()]
    out = {}
    for name, w in {"haadf": [1.0, 0.0], "eds": [0.0, 1.0], "ensemble": [0.5, 0.5]}.items():
        a, info, _, _ = est._graph(units, w, max_edges)
        out[name] = a
    return out, truth


@pytest.mark.parametrize("name", ["haadf", "eds", "ensemble"])
def test_chip_cosine_graphs(chip_graphs, name):
    graphs, truth = chip_graphs
    a = graphs[name]
    g = to_graph(a)
    qf, qp, fast, ref = compare(g, a, seeds=range(4))
    assert qf == pytest.approx(qp, rel=0.01)
    assert np.mean([ami(f, r) for f, r in zip(fast, ref)]) > 0.9
    assert np.mean([ami(f, truth) for f in fast]) >= np.mean([ami(r, truth) for r in ref]) - 0.03


def test_segmenter_backends_agree_and_are_recorded():
    features, truth = make_multimodal_blobs(240, random_state=0)
    fast = LouvainSegmenter().fit(features)
    ref = LouvainSegmenter(backend="python-louvain").fit(features)
    assert fast.params_["backend"] == "numpy" and ref.params_["backend"] == "python-louvain"
    assert fast.params_["n_edges"] == ref.params_["n_edges"]
    assert fast.modularity_ == pytest.approx(ref.modularity_, rel=0.01)
    assert ami(fast.labels_, ref.labels_) > 0.95
    assert np.array_equal(LouvainSegmenter().fit(features).labels_, fast.labels_)
    with pytest.raises(ValueError, match="backend"):
        LouvainSegmenter(backend="igraph").fit(features)


def test_edge_cases():
    assert fl.best_partition(np.zeros((4, 4))).tolist() == [0, 1, 2, 3]  # no edges: singletons
    assert fl.best_partition(np.zeros((0, 0))).size == 0
    # two triangles and an isolated node
    a = fl.adjacency(7, [0, 0, 1, 3, 3, 4], [1, 2, 2, 4, 5, 5])
    lab = fl.best_partition(a)
    assert lab.tolist() == [0, 0, 0, 1, 1, 1, 2]
    # duplicates are summed; self-loops are twice the weight on the diagonal
    a = fl.adjacency(3, [0, 0, 1, 2], [1, 1, 2, 2], [1.0, 2.0, 1.0, 0.5])
    assert a[0, 1] == 3.0 and a[2, 2] == 1.0
    with pytest.raises(ValueError, match="symmetric"):
        fl.best_partition(np.array([[0.0, 1.0], [0.0, 0.0]]))
    with pytest.raises(ValueError, match="non-negative"):
        fl.best_partition(np.array([[0.0, -1.0], [-1.0, 0.0]]))
    with pytest.raises(ValueError, match="resolution"):
        fl.best_partition(a, resolution=0)
    with pytest.raises(ValueError, match="random_state"):
        fl.best_partition(a, random_state=-1)
    with pytest.raises(ValueError, match="without edges"):
        fl.modularity([0, 1], np.zeros((2, 2)))


@pytest.mark.parametrize("weighted", [True, False])
def test_batched_sweep_decides_as_visiting_one_by_one(monkeypatch, weighted):
    """Passes decided all at once (`_sweep_batched`, used after passes with few moves) give the
    partition of visiting every node one by one, here forced for every pass but a level's first
    (or never, or for the first 2 moves of a pass). Unweighted
    graphs have exact ties, which CSR rows break by neighbour order (batched and dense rows: by
    community id): there only the modularity is compared."""
    g, _ = planted([30, 50, 80, 40, 20], 0.25, 0.03, seed=3, weighted=weighted)
    a = to_adjacency(g)
    for fill in (0.0, 2.0):  # dense rows, CSR rows
        monkeypatch.setattr(fl, "_DENSE_MIN_FILL", fill)
        for seed in range(3):
            monkeypatch.setattr(fl, "_BATCH_MAX_COMMUNITIES", -1)
            one_by_one = fl.best_partition(a, random_state=seed)
            monkeypatch.setattr(fl, "_BATCH_MAX_COMMUNITIES", 10**9)
            monkeypatch.setattr(fl, "_BATCH_MIN_MOVES", 10**9)
            batched = fl.best_partition(a, random_state=seed)
            monkeypatch.setattr(fl, "_BATCH_MIN_MOVES", 2)  # batched, then one by one after 2 moves
            mixed = fl.best_partition(a, random_state=seed)
            monkeypatch.setattr(fl, "_BATCH_MIN_MOVES", 8)
            for other in (batched, mixed):
                if weighted or fill == 0.0:
                    assert np.array_equal(one_by_one, other)
                else:
                    assert fl.modularity(other, a) == pytest.approx(fl.modularity(one_by_one, a), rel=0.01)
