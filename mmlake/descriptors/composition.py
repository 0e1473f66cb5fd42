"""Region composition: Cliff-Lorimer of the region's summed spectrum, whole and core, with its
counting error and a bootstrap interval over chips.

The session's chips are fitted once (:func:`mmlake.eds.fit_chips`: one linear fit, weights from the
mean chip spectrum); a region's summed spectrum then has the sum of its chips' fitted intensities,
and exspy's CL quantifies every region of every segmentation, whole and core, in ONE call. As the
preprint's section IV.G does, the composition is that of the region's SUMMED spectrum ("over the sum
of all spectra in the cluster"), not an average of chip percents. Every element quantified that the
session does not declare (the preprint's extraneous list: C, N, Al, Cu, Ga, ...) is lumped into
``Extraneous``, so each region's rows add up to 100 at.%. Values are exspy's as they come: an
element absent from a region gets its fitted noise (possibly slightly negative; CL is linear, so
nothing is clipped). A region whose summed spectrum has no counts, or no line above exspy's
threshold, gets NULL (NaN) for every element.

- **whole**: all the region's chips (``atomic_percent``);
- **core**: only the chips whose neighbours all belong to the region
  (:func:`mmlake.descriptors.geometry.core_mask`): chips straddling an interface carry the
  neighbour's signal (an amorphous film region next to a Cr cap took in 10 at.% Cr through them);
  NULL when the region has no core chip. ``boundary_share`` (regions table) is the share of the
  region's chips outside the core;
- **counting_se**: Poisson counting error propagated through the fit and Cliff-Lorimer
  (:mod:`mmlake.eds.cliff_lorimer`); the Extraneous error includes its covariance with the rest;
- **ci_low/ci_high**: bootstrap over the region's chips (:mod:`mmlake.descriptors.bootstrap`); a
  chip set of fewer than ``MIN_BOOT_CHIPS`` chips (a core of one chip) cannot show its spread by
  resampling, so its replicates are drawn from its counting covariance instead.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Mapping, Sequence

import numpy as np

from mmlake.descriptors.bootstrap import interval, resample_weights

EXTRANEOUS = "Extraneous"
#: quant_kwargs that shape the quantification of summed intensities (the rest shape the chip fit)
QUANTIFY_KWARGS = ("thickness_nm", "density_g_cm3", "take_off_angle_deg", "clip_negative")
#: below this many chips a chip set is not resampled (one chip's bootstrap has no spread): its
#: replicates are drawn from its counting statistics instead (parametric bootstrap)
MIN_BOOT_CHIPS = 5


@dataclass
class Composition:
    """At.% of one chip set: declared elements in order, then Extraneous."""

    at: np.ndarray  # (n_el + 1,)
    se: np.ndarray  # counting standard error
    ci_low: np.ndarray
    ci_high: np.ndarray
    counts: float
    replicates: np.ndarray | None = field(default=None, repr=False)  # (n_boot, n_el + 1)


def _lump(at: np.ndarray, elements: Sequence[str], setup_elements: Sequence[str]) -> np.ndarray:
    """(k, m) at.% in setup order -> (k, n_el + 1): declared elements, then the sum of the rest."""
    idx = [list(setup_elements).index(el) for el in elements]
    rest = [i for i, el in enumerate(setup_elements) if el not in set(elements)]
    out = np.concatenate([at[..., idx], at[..., rest].sum(axis=-1, keepdims=True) if rest
                          else np.zeros(at.shape[:-1] + (1,))], axis=-1)
    out[np.isnan(at).all(axis=-1)] = np.nan
    return out


def _lumped_se(cov: np.ndarray, elements, setup_elements) -> np.ndarray:
    idx = [list(setup_elements).index(el) for el in elements]
    rest = [i for i, el in enumerate(setup_elements) if el not in set(elements)]
    var = [cov[:, i, i] for i in idx]
    var.append(cov[:, rest][:, :, rest].sum(axis=(1, 2)) if rest else np.zeros(len(cov)))
    return np.sqrt(np.maximum(np.stack(var, axis=1), 0.0))


def chip_set_compositions(
    chipfit,
    chip_sets: Sequence[np.ndarray],
    elements: Sequence[str],
    *,
    rng: np.random.Generator | None = None,
    n_boot: int = 400,
    level: float = 0.95,
    quant_kwargs: Mapping | None = None,
) -> list[Composition | None]:
    """Composition of each chip set (indices into the fitted chips); None for empty sets.

    Point estimates and counting errors through exspy (one call, identical chip sets once);
    bootstrap replicates by the closed-form CL of resampled chip intensities (the absorption
    factors, if any, held at the point estimate's)."""
    from mmlake.eds.cliff_lorimer import cl_atomic_percent, cl_covariance

    qk = {k: v for k, v in dict(quant_kwargs or {}).items() if k in QUANTIFY_KWARGS}
    els = list(dict.fromkeys(elements))
    setup = chipfit.setup
    n = len(chipfit.total_counts)
    nonempty = [i for i, s in enumerate(chip_sets) if len(s)]
    out: list[Composition | None] = [None] * len(chip_sets)
    if not nonempty:
        return out
    keys = [tuple(np.sort(np.asarray(chip_sets[i], dtype=np.int64))) for i in nonempty]
    uniq = list(dict.fromkeys(keys))
    W = np.zeros((len(uniq), n))
    for r, k in enumerate(uniq):
        np.add.at(W[r], np.asarray(k, dtype=np.int64), 1.0)
    res = chipfit.quantify(W, **qk)
    at_all = res.atomic_percent.astype(np.float64)
    at = _lump(at_all, els, setup.elements)
    valid = np.array([r is None for r in res.null_reason], dtype=bool)
    cov_I = res.fit.line_covariance(res.fit.coef)
    if res.absorption is not None:
        g = 1.0 / res.absorption
        cov_I = cov_I * g[:, :, None] * g[:, None, :]
    se = np.full(at.shape, np.nan)
    if valid.any():
        se[valid] = _lumped_se(cl_covariance(res.intensities[valid].astype(np.float64), cov_I[valid], setup),
                               els, setup.elements)
    I_chip = chipfit.fit.intensities
    A = res.absorption if res.absorption is not None else np.ones((len(uniq), len(setup.lines)))
    cache: dict[tuple, Composition] = {}
    for i, k in zip(nonempty, keys):
        if k not in cache:
            r = uniq.index(k)
            reps = lo = hi = None
            if rng is not None and valid[r]:
                idx = np.asarray(k, dtype=np.int64)
                if len(idx) >= MIN_BOOT_CHIPS:
                    Wb = resample_weights(rng, len(idx), n_boot)
                    Ib = (Wb @ I_chip[idx]) / A[r][None, :]
                else:
                    Ib = rng.multivariate_normal(res.intensities[r].astype(np.float64), cov_I[r], size=n_boot,
                                                 method="eigh")
                reps = _lump(cl_atomic_percent(Ib, setup), els, setup.elements)
                lo, hi = interval(at[r][None, :], reps)
                lo, hi = lo[0], hi[0]
            nan = np.full(at.shape[1], np.nan)
            cache[k] = Composition(at[r], se[r], nan if lo is None else lo, nan if hi is None else hi,
                                   float(res.total_counts[r]), reps)
        out[i] = cache[k]
    return out


def quantify_regions(
    spectra: np.ndarray,
    energy: tuple[float, float],
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    *,
    energy_resolution_mnka_ev: float = 130.0,
    session_id: str | None = None,
    **kwargs,
) -> np.ndarray:
    """At.% of summed region spectra ``(n, C)`` -> ``(n, len(elements) + 1)``: the declared
    ``elements`` in their order, then ``Extraneous`` (the sum of every other quantified element).

    The same code path as :func:`mmlake.eds.quantify_spectrum`, all spectra in ONE exspy call
    (exspy's quantification costs ~2 s per call whatever the number of spectra); the linear fit
    shares one set of weights (from the mean spectrum) between them. A spectrum without counts or
    without a line gets NaN everywhere."""
    from mmlake.eds import quantify_chips

    a = np.asarray(spectra, dtype=np.float64)
    if a.ndim == 1:
        a = a[None, :]
    if a.ndim != 2:
        raise ValueError(f"spectra must be (n, n_channels), got shape {a.shape}")
    els = list(dict.fromkeys(elements))
    out = np.full((a.shape[0], len(els) + 1), np.nan)
    has = a.sum(axis=1) > 0
    if not has.any():
        return out
    res = quantify_chips(a[has], float(energy[0]), float(energy[1]), els, grid=None,
                         beam_energy_kev=float(beam_kv), energy_resolution_mnka_ev=energy_resolution_mnka_ev,
                         kfactors=kfactors, session=session_id, **kwargs)
    out[has] = _lump(res.atomic_percent.astype(np.float64), els, res.elements)
    return out


def quantify_region(spectrum: np.ndarray, energy, beam_kv, elements, kfactors, **kwargs) -> dict[str, float]:
    """:func:`quantify_regions` of ONE summed spectrum as ``{element: at.%, ..., "Extraneous": ..}``."""
    row = quantify_regions(np.asarray(spectrum)[None, :], energy, beam_kv, elements, kfactors, **kwargs)[0]
    return {el: float(v) for el, v in zip([*dict.fromkeys(elements), EXTRANEOUS], row)}
