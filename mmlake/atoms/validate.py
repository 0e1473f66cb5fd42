"""Validation against data mmlake did not make (placeholder)."""
from __future__ import annotations

from pathlib import Path

import numpy as np

KEYS = {"raw": "haadf/raw", "clean": "haadf/stem00-clean", "blbk1": "haadf/stem00-blbk1"}


def load_atomagined(path):
    import h5py

    with h5py.File(path, "r") as f:
        imgs = {k: f[v][()].astype(np.float64) for k, v in KEYS.items()}
        peaks = np.argwhere(f["haadf/peak_map_clean"][()]).astype(np.float64)
        atoms = f["projection/full_coords"][()].astype(np.float64)[:, ::-1]  # stored (x, y)
        attrs = {k: (v.decode() if isinstance(v, bytes) else str(v)) for k, v in f.attrs.items()}
    return imgs, peaks, atoms, attrs


def match(found, truth, radius):
    from scipy.spatial import cKDTree

    found = np.asarray(found, float).reshape(-1, 2)
    truth = np.asarray(truth, float).reshape(-1, 2)
    if not len(found) or not len(truth):
        return np.zeros((0, 2), int), np.zeros(0)
    t = cKDTree(truth)
    pairs = t.query_ball_point(found, radius)
    cand = [(np.hypot(*(found[i] - truth[j])), i, j) for i, js in enumerate(pairs) for j in js]
    cand.sort()
    uf, ut, out = set(), set(), []
    for d, i, j in cand:
        if i not in uf and j not in ut:
            uf.add(i); ut.add(j); out.append((i, j, d))
    if not out:
        return np.zeros((0, 2), int), np.zeros(0)
    o = np.array(out)
    return o[:, :2].astype(int), o[:, 2]
