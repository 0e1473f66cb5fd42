"""EDS cube: per pixel a Poisson number of counts, each drawn from the pixel's region spectrum with
a Walker alias table; generated in bands of ``BAND_ROWS`` rows, each from its own seed."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mmlake.synth.geometry import Geometry, make_geometry
from mmlake.synth.spec import _REGION_YIELD, _STREAM_EDS, BAND_ROWS, REGION_NAMES, SessionSpec
from mmlake.synth.xray import region_spectrum

def _alias_table(pdf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Walker/Vose alias table: channel = k if u < prob[k] else alias[k], with k uniform, samples
    ``pdf`` exactly in O(1) per count (built once per region, a loop over channels, not events)."""
    n = len(pdf)
    q = (np.asarray(pdf, dtype=float) * (n / float(np.sum(pdf)))).tolist()
    prob = [0.0] * n
    alias = list(range(n))
    small = [i for i in range(n) if q[i] < 1.0]
    large = [i for i in range(n) if q[i] >= 1.0]
    while small and large:
        s, g = small.pop(), large.pop()
        prob[s], alias[s] = q[s], g
        q[g] = (q[g] + q[s]) - 1.0
        (small if q[g] < 1.0 else large).append(g)
    for i in large + small:
        prob[i] = 1.0
    return np.array(prob), np.array(alias, dtype=np.int32)


@dataclass(frozen=True)
class _EdsModel:
    prob: np.ndarray  # (n_regions, n_channels) alias-table acceptance probabilities
    alias: np.ndarray  # (n_regions, n_channels) alias channels
    lam: np.ndarray  # (n_regions,) mean counts per pixel
    n_channels: int
    seed: int


def _eds_model(spec: SessionSpec) -> _EdsModel:
    probs, aliases, lams = [], [], []
    for r in REGION_NAMES:
        pdf, _ = region_spectrum(spec, r)
        pr, al = _alias_table(pdf)
        probs.append(pr)
        aliases.append(al)
        lams.append(spec.counts_per_pixel * _REGION_YIELD[r])
    return _EdsModel(np.array(probs), np.array(aliases), np.array(lams), spec.n_channels, spec.seed)


def _eds_band(model: _EdsModel, regions_band: np.ndarray, band_index: int) -> np.ndarray:
    """EDS counts (rows, W, n_channels) uint16 for one band, from the band's own random stream:
    Poisson total per pixel, then one channel per count drawn from the pixel's region spectrum."""
    rng = np.random.default_rng(np.random.SeedSequence(entropy=model.seed, spawn_key=(_STREAM_EDS, int(band_index))))
    h, w = regions_band.shape
    nch = model.n_channels
    reg = regions_band.ravel()
    counts = rng.poisson(model.lam[reg])
    itype = np.int32 if h * w * nch < 2**31 else np.int64
    flat_parts = []
    for r in range(len(REGION_NAMES)):
        idx = np.flatnonzero(reg == r)
        if idx.size == 0:
            continue
        c = counts[idx]
        tot = int(c.sum())
        k = rng.integers(0, nch, size=tot, dtype=itype)
        ch = np.where(rng.random(tot) < model.prob[r][k], k, model.alias[r][k].astype(itype))
        flat_parts.append(np.repeat(idx.astype(itype) * itype(nch), c) + ch)
    out = np.zeros(h * w * nch, dtype=np.uint16)
    if flat_parts:
        u, cnt = np.unique(np.concatenate(flat_parts), return_counts=True)
        out[u] = cnt  # <= a few hundred per bin: fits uint16
    return out.reshape(h, w, nch)


def make_eds(spec: SessionSpec, geom: Geometry | None = None) -> np.ndarray:
    """The whole EDS cube in memory (uint16 (H, W, n_channels)); for small test images."""
    geom = geom or make_geometry(spec)
    model = _eds_model(spec)
    n = spec.image_px
    bands = [_eds_band(model, geom.regions[r0:r0 + BAND_ROWS], b) for b, r0 in enumerate(range(0, n, BAND_ROWS))]
    return np.concatenate(bands, axis=0)
