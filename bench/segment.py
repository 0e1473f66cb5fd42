"""Wall time and peak memory of the segmenters at 576, 2601 and 10,000 chips.

    .venv/bin/python bench/segment.py                 # all methods, all sizes
    .venv/bin/python bench/segment.py --sizes 576 2601 --methods louvain

Features: ``mmlake.segment.synthetic.make_multimodal_blobs`` -- 4 clustered classes in a 512-d
non-negative VGG-like "haadf" space and a 12-d at.% "eds" space, each modality confusing a different
pair of classes. Each case fits the *multi-modal* segmenter (both modalities) once:

- ``louvain``: averaged cosine similarity, mode threshold, default ``max_edges="auto"`` (sparsified
  to a kNN graph above 250,000 edges);
- ``louvain-exact``: the baseline, the preprint's dense threshold graph (``max_edges=None``), run at
  the sizes where it finishes in reasonable time (576, 2601); the ratio column compares with it;
- ``ward``: Ward on the block-standardised concatenation, k = 4;
- ``fewshot``: 4 support chips x 4 classes, fused probabilities 0.5/0.5.

Every case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own; "peak MB" is that
peak minus the RSS before the fit (data already generated, libraries imported). Wall time is the fit
alone. Numbers are from a shared 2-core machine: other processes inflate them.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = (576, 2601, 10_000)
METHODS = ("louvain", "louvain-exact", "ward", "fewshot")
EXACT_MAX_N = 2601


def run_case(method: str, n: int) -> dict:
    import numpy as np
    import psutil

    from mmlake.segment import FewShotSegmenter, LouvainSegmenter, WardSegmenter, ami
    from mmlake.segment.synthetic import make_multimodal_blobs

    features, truth = make_multimodal_blobs(n, random_state=0)
    if method == "louvain":
        est = LouvainSegmenter()
    elif method == "louvain-exact":
        est = LouvainSegmenter(max_edges=None)
    elif method == "ward":
        est = WardSegmenter(n_clusters=4)
    elif method == "fewshot":
        rng = np.random.default_rng(1)
        support = {f"class{c}": rng.choice(np.flatnonzero(truth == c), 4, replace=False).tolist() for c in range(4)}
        est = FewShotSegmenter(support)
    else:
        raise ValueError(f"method: unknown {method!r}")
    rss0 = psutil.Process().memory_info().rss
    t0 = time.perf_counter()
    labels = est.fit_predict(features)
    wall = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    p = est.params_
    out = {
        "method": method,
        "n_chips": n,
        "wall_s": wall,
        "peak_mb": max(0.0, (peak - rss0) / 2**20),
        "ami_truth": ami(labels, truth),
        "n_labels": int(p["n_labels"]),
        "labels": labels.tolist(),
    }
    if method.startswith("louvain"):
        out.update(
            n_edges=p["n_edges"],
            sparsified=p["sparsified"],
            n_neighbors=p["n_neighbors"],
            timings={k: round(v, 2) for k, v in est.timings_.items()},
        )
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=list(SIZES))
    ap.add_argument("--methods", nargs="+", default=list(METHODS), choices=METHODS)
    ap.add_argument("--case", help=argparse.SUPPRESS)  # internal: "method:n", run in a child
    args = ap.parse_args(argv)
    if args.case:
        method, n = args.case.split(":")
        print(json.dumps(run_case(method, int(n))))
        return 0

    from sklearn.metrics import adjusted_mutual_info_score

    rows = []
    print(f"cpus={os.cpu_count()}  load avg={os.getloadavg()[0]:.1f}", flush=True)
    for n in args.sizes:
        exact = None
        for method in args.methods:
            if method == "louvain-exact" and n > EXACT_MAX_N:
                continue
            proc = subprocess.run(
                [sys.executable, __file__, "--case", f"{method}:{n}"], capture_output=True, text=True, check=False
            )
            if proc.returncode != 0:
                print(f"{method} n={n} failed:\n{proc.stderr}", file=sys.stderr)
                return 1
            r = json.loads(proc.stdout.strip().splitlines()[-1])
            rows.append(r)
            if method == "louvain-exact":
                exact = r
            print(f"  done {method:14s} n={n:6d} {r['wall_s']:7.2f} s", flush=True)
        if exact is not None:  # sparsified vs exact Louvain, same n
            for r in rows:
                if r["method"] == "louvain" and r["n_chips"] == n:
                    r["vs_exact"] = exact["wall_s"] / r["wall_s"]
                    r["ami_vs_exact"] = float(adjusted_mutual_info_score(exact["labels"], r["labels"]))

    print()
    print(f"{'method':14s} {'chips':>6s} {'wall s':>8s} {'peak MB':>8s} {'AMI truth':>9s} {'labels':>6s}  notes")
    for r in rows:
        notes = ""
        if r["method"].startswith("louvain"):
            notes = f"edges={r['n_edges']} sparsified={r['sparsified']}"
            if r["sparsified"]:
                notes += f" k={r['n_neighbors']}"
            notes += f" stages={r['timings']}"
            if "vs_exact" in r:
                notes += f" exact/this time={r['vs_exact']:.1f}x AMI(this,exact)={r['ami_vs_exact']:.3f}"
        print(
            f"{r['method']:14s} {r['n_chips']:6d} {r['wall_s']:8.2f} {r['peak_mb']:8.0f} "
            f"{r['ami_truth']:9.3f} {r['n_labels']:6d}  {notes}"
        )
    slow = [r for r in rows if r["method"] == "louvain" and r["n_chips"] >= 10_000 and r["wall_s"] >= 30]
    if slow:
        print("FAIL: Louvain at 10,000 chips took >= 30 s", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
