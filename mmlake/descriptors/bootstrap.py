"""Resampling: bootstrap over chips (within a region) and over acquisitions (within a sample x dose).

Every interval here is a percentile interval of the bootstrap replicates at ``level`` (95 % by
default), shifted so that it is centred like the replicates around the reported estimate:
``[est + q_lo - median, est + q_hi - median]``. The shift is at most a few hundredths of an at.%
here (replicates use the closed-form Cliff-Lorimer of the same summed intensities as exspy's point
estimate) and keeps the reported figure inside its own interval.

Chips are resampled with replacement within each region (multinomial counts), each region
independently: a replicate of a role's composition or of a shift combines the same replicate index
of every region (a stratified bootstrap). Chips are independent counting realisations and sample
the region's spatial heterogeneity, so the interval holds both counting noise and real spread.
Neighbouring chips are not perfectly independent (a composition gradient is spatially
correlated); the interval is then somewhat too narrow, which is why acquisitions are resampled too
when a sample x dose holds several (:func:`pool_replicates`).
"""

from __future__ import annotations

import zlib

import numpy as np

DEFAULT_N_BOOT = 400
DEFAULT_LEVEL = 0.95


def rng_for(seed: int, *key: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and a stable hash of ``key`` (e.g. session, method, modality)."""
    h = zlib.crc32("\x1f".join(key).encode())
    return np.random.default_rng(np.random.SeedSequence([int(seed), h]))


def resample_weights(rng: np.random.Generator, n: int, n_boot: int) -> np.ndarray:
    """(n_boot, n) multinomial counts: how often each of ``n`` items is drawn in each replicate."""
    if n <= 0:
        return np.zeros((n_boot, 0))
    return rng.multinomial(n, np.full(n, 1.0 / n), size=n_boot).astype(np.float64)


def interval(estimate, replicates: np.ndarray, level: float = DEFAULT_LEVEL, axis: int = 0):
    """(low, high) of ``replicates`` around ``estimate`` (see the module docstring); NaN where the
    estimate or too many replicates are missing."""
    r = np.asarray(replicates, dtype=np.float64)
    est = np.asarray(estimate, dtype=np.float64)
    a = (1.0 - level) / 2.0
    with np.errstate(all="ignore"), _quiet():
        ok = np.isfinite(r).mean(axis=axis) >= 0.9
        lo, med, hi = np.nanquantile(r, [a, 0.5, 1.0 - a], axis=axis)
    low = np.where(ok & np.isfinite(est), est + lo - med, np.nan)
    high = np.where(ok & np.isfinite(est), est + hi - med, np.nan)
    return low, high


def standard_error(replicates: np.ndarray, axis: int = 0):
    with np.errstate(all="ignore"), _quiet():
        return np.nanstd(np.asarray(replicates, dtype=np.float64), axis=axis, ddof=1)


def pool_replicates(points: list[float], replicates: list[np.ndarray], rng: np.random.Generator,
                    n_boot: int = DEFAULT_N_BOOT, level: float = DEFAULT_LEVEL):
    """Two-stage bootstrap of the mean over acquisitions: each replicate draws the acquisitions with
    replacement, then one chip-bootstrap replicate of each drawn acquisition, and averages them.
    Returns (mean of the points, low, high). With one acquisition this is its own chip interval."""
    pts = np.asarray(points, dtype=np.float64)
    keep = np.isfinite(pts)
    pts = pts[keep]
    reps = [np.asarray(r, dtype=np.float64) for r, k in zip(replicates, keep) if k]
    if not len(pts):
        return float("nan"), float("nan"), float("nan")
    n = len(pts)
    est = float(pts.mean())
    which = rng.integers(0, n, size=(n_boot, n))
    draws = np.empty((n_boot, n))
    for j in range(n):
        for s in range(n):
            sel = which[:, j] == s
            if sel.any():
                r = reps[s]
                draws[sel, j] = r[rng.integers(0, len(r), size=int(sel.sum()))] if len(r) else np.nan
    lo, hi = interval(est, draws.mean(axis=1), level)
    return est, float(lo), float(hi)


class _quiet:
    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        return self._w.__exit__(*exc)
