"""Wall time and peak memory of the segmenters at 576, 1,024, 2,601 and 10,000 chips.

    .venv/bin/python bench/segment.py                 # all methods, all sizes
    .venv/bin/python bench/segment.py --sizes 576 2601 --methods louvain
    .venv/bin/python bench/segment.py --sizes 1024 10000   # issue 12: numpy vs python-louvain

Features: ``mmlake.segment.synthetic.make_multimodal_blobs`` -- 4 clustered classes in a 512-d
non-negative VGG-like "haadf" space and a 12-d at.% "eds" space, each modality confusing a different
pair of classes. Each case fits the *multi-modal* segmenter (both modalities) once:

- ``louvain``: averaged cosine similarity, mode threshold, default ``max_edges="auto"`` (sparsified
  to a kNN graph above 250,000 edges), default backend (``"numpy"``: mmlake.segment.fast_louvain);
- ``louvain-pl``: the same graph partitioned by python-louvain (``backend="python-louvain"``), the
  code the numpy backend replaces; the summary compares the two (time ratio, modularity ratio
  numpy / python-louvain, AMI between their labels);
- ``louvain-auto`` / ``louvain-auto-pl``: ``modality_weights="auto"`` (one Louvain per point of the
  11-point weight grid, forked over the cores), numpy / python-louvain backend, compared the same way;
- ``louvain-exact``: the baseline, the preprint's dense threshold graph (``max_edges=None``), run at
  the sizes where it finishes in reasonable time (576, 2601); the ratio column compares with it;
- ``ward``: Ward on the block-standardised concatenation, k = 4;
- ``fewshot``: 4 support chips x 4 classes, fused probabilities 0.5/0.5.

Every case runs in a fresh subprocess so its peak RSS (``ru_maxrss``) is its own; "peak MB" is that
peak minus the RSS before the fit (data already generated, libraries imported). Wall time is the fit
alone; "CPU s" is the CPU time of the fit in the process and its forked workers (user + system),
which load inflates less. Numbers are from a shared 2-core machine: other processes inflate them.
The summary adds "all three" per size: louvain-auto + ward + fewshot (the three methods as a session
runs them with auto weights; issue 12's target is < 2 s at 1,024 chips).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

SIZES = (576, 1024, 2601, 10_000)
METHODS = ("louvain", "louvain-pl", "louvain-exact", "louvain-auto", "louvain-auto-pl", "ward", "fewshot")
EXACT_MAX_N = 2601
AUTO_MAX_N = 2601  # the weight grid at 10,000 chips recomputes the similarities 11 times: minutes
PAIRS = (("louvain", "louvain-pl"), ("louvain-auto", "louvain-auto-pl"))  # (numpy, python-louvain)


def _cpu() -> float:
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def run_case(method: str, n: int) -> dict:
    import numpy as np
    import psutil

    from mmlake.segment import FewShotSegmenter, LouvainSegmenter, WardSegmenter, ami
    from mmlake.segment.synthetic import make_multimodal_blobs

    features, truth = make_multimodal_blobs(n, random_state=0)
    if method == "louvain":
        est = LouvainSegmenter()
    elif method == "louvain-pl":
        est = LouvainSegmenter(backend="python-louvain")
    elif method == "louvain-auto":
        est = LouvainSegmenter(modality_weights="auto")
    elif method == "louvain-auto-pl":
        est = LouvainSegmenter(modality_weights="auto", backend="python-louvain")
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
    c0, t0 = _cpu(), time.perf_counter()
    labels = est.fit_predict(features)
    wall = time.perf_counter() - t0
    cpu = _cpu() - c0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    p = est.params_
    out = {
        "method": method,
        "n_chips": n,
        "wall_s": wall,
        "cpu_s": cpu,
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
            modularity=float(est.modularity_),
            backend=p["backend"],
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
            if method.startswith("louvain-auto") and n > AUTO_MAX_N:
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
            print(f"  done {method:15s} n={n:6d} {r['wall_s']:7.2f} s wall {r['cpu_s']:7.2f} s CPU", flush=True)
        if exact is not None:  # sparsified vs exact Louvain, same n
            for r in rows:
                if r["method"] == "louvain" and r["n_chips"] == n:
                    r["vs_exact"] = exact["wall_s"] / r["wall_s"]
                    r["ami_vs_exact"] = float(adjusted_mutual_info_score(exact["labels"], r["labels"]))

    print()
    print(f"{'method':15s} {'chips':>6s} {'wall s':>8s} {'CPU s':>7s} {'peak MB':>8s} {'AMI truth':>9s} {'labels':>6s}  notes")
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
            f"{r['method']:15s} {r['n_chips']:6d} {r['wall_s']:8.2f} {r['cpu_s']:7.2f} {r['peak_mb']:8.0f} "
            f"{r['ami_truth']:9.3f} {r['n_labels']:6d}  {notes}"
        )

    by = {(r["method"], r["n_chips"]): r for r in rows}
    printed = False
    for n in args.sizes:
        for fast_m, ref_m in PAIRS:
            fast, ref = by.get((fast_m, n)), by.get((ref_m, n))
            if fast is None or ref is None:
                continue
            if not printed:
                print("\nnumpy vs python-louvain (same run, same graph):")
                printed = True
            ratio = fast["modularity"] / ref["modularity"] if ref["modularity"] else float("nan")
            print(f"  {fast_m:13s} n={n:6d}: wall {fast['wall_s']:.2f} s vs {ref['wall_s']:.2f} s "
                  f"({ref['wall_s'] / fast['wall_s']:.1f}x), CPU {fast['cpu_s']:.2f} s vs {ref['cpu_s']:.2f} s "
                  f"({ref['cpu_s'] / fast['cpu_s']:.1f}x); modularity {fast['modularity']:.4f} vs "
                  f"{ref['modularity']:.4f} (ratio {ratio:.4f}); AMI(numpy, python-louvain) "
                  f"{adjusted_mutual_info_score(ref['labels'], fast['labels']):.3f}; AMI truth "
                  f"{fast['ami_truth']:.3f} vs {ref['ami_truth']:.3f}; Louvain stage of the chosen graph "
                  f"{fast['timings']['louvain_s']:.2f} s vs {ref['timings']['louvain_s']:.2f} s wall")
    for n in args.sizes:
        three = [by.get((m, n)) for m in ("louvain-auto", "ward", "fewshot")]
        if all(three):
            parts = ", ".join(f"{r['method']} {r['cpu_s']:.2f}" for r in three)
            print(f"  all three (louvain-auto + ward + fewshot) n={n:6d}: wall {sum(r['wall_s'] for r in three):.2f} s, "
                  f"CPU {sum(r['cpu_s'] for r in three):.2f} s ({parts} CPU s)")
    slow = [r for r in rows if r["method"] == "louvain" and r["n_chips"] >= 10_000 and r["wall_s"] >= 30]
    if slow:
        print("FAIL: Louvain at 10,000 chips took >= 30 s", file=sys.stderr)
        return 1
    fast, ref = by.get(("louvain", 10_000)), by.get(("louvain-pl", 10_000))
    if fast and ref and fast["cpu_s"] > ref["cpu_s"]:
        print("FAIL: numpy Louvain at 10,000 chips took more CPU than python-louvain", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
