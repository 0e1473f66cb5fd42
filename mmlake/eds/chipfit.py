"""Quantify any weighted sums of chips from ONE shared line fit (:func:`fit_chips`, :class:`ChipFit`):
a region's summed spectrum has the sum of its chips' fitted coefficients, so every region of every
segmentation (and every bootstrap replicate) is quantified without refitting."""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mmlake.eds.fit import LineFit, fit_lines
from mmlake.eds.kfactors import LineSetup, _fail, load_kfactor_table, resolve_lines
from mmlake.eds.quantify import CLResult, cl_from_intensities, counting_se
from mmlake.eds.spectra import _no_progressbar, chip_spectra, exspy_signal


@dataclass
class ChipFit:
    """The shared line fit of a stack of chip spectra, ready to quantify any weighted sums of chips
    (:meth:`quantify`, e.g. a region's chips) without refitting: the fit is linear, so a sum of chips
    has the sum of their fitted coefficients."""

    fit: LineFit
    total_counts: np.ndarray  # (n,) counts per chip in the quantified energy range
    beam_energy_kev: float
    energy_resolution_mnka_ev: float
    params: dict

    @property
    def setup(self) -> LineSetup:
        return self.fit.setup

    def quantify(self, weights: np.ndarray, *, thickness_nm=None, density_g_cm3=None,
                 take_off_angle_deg: float = 22.0, clip_negative: bool = False) -> CLResult:
        """exspy CL of the weighted chip sums ``weights (k, n) @ chips`` (one exspy call for all k)."""
        W = np.atleast_2d(np.asarray(weights, dtype=np.float64))
        coef = self.fit.combine(W)
        total = W @ self.total_counts
        setup = self.setup
        I = coef[:, : len(setup.lines)].copy()
        if clip_negative:
            I = np.maximum(I, 0.0)
        with warnings.catch_warnings(), np.errstate(all="ignore"), _no_progressbar():
            warnings.simplefilter("ignore")
            A = np.ones_like(I)
            if thickness_nm is not None:
                from mmlake.eds.absorption import correct_intensities

                I, A = correct_intensities(I, setup, thickness_nm, density_g_cm3, take_off_angle_deg)
            k = len(W)
            s = exspy_signal(np.maximum(self.fit.model(coef), 0.0), self.fit.offset_kev, self.fit.scale_kev,
                             self.beam_energy_kev, self.energy_resolution_mnka_ev, setup)
            at, reason = cl_from_intensities(I, total, setup, s, (k,))
            valid = np.array([r is None for r in reason], dtype=bool)
            se = counting_se(self.fit, coef, I, valid, 1.0 / A)
        return CLResult(setup.elements, setup.lines, at.astype(np.float32), I.astype(np.float32),
                        total.astype(np.float32), setup, dict(self.params), se.astype(np.float32), reason,
                        LineFit(setup, self.fit.design, self.fit.names, self.fit.projector, coef,
                                self.fit.offset_kev, self.fit.scale_kev, self.fit.shell_ratios),
                        A if thickness_nm is not None else None)


def fit_chips(
    sums: np.ndarray,
    energy_offset_kev: float,
    energy_scale_kev: float,
    elements: Sequence[str],
    *,
    beam_energy_kev: float = 300.0,
    energy_resolution_mnka_ev: float = 130.0,
    kfactors: Mapping[str, float] | None = None,
    kfactor_table: str | None = None,
    include_extraneous: bool = True,
    min_energy_kev: float | None = 0.2,
    families: str = "tied",
    session: str | None = None,
) -> ChipFit:
    """The line fit of every chip (weights from the mean chip spectrum), as :func:`quantify_chips`
    does it, without quantifying the chips themselves."""
    spectra, off, sc = chip_spectra(sums, energy_offset_kev, energy_scale_kev, min_energy_kev=min_energy_kev)
    if not np.all(np.isfinite(spectra)):
        raise _fail(session, "EDS chip sums contain NaN or infinite values")
    hi = min(off + sc * (spectra.shape[1] - 1), beam_energy_kev)
    setup = resolve_lines(elements, energy_range_kev=(off, hi), kfactors=kfactors, kfactor_table=kfactor_table,
                          include_extraneous=include_extraneous, session=session)
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        fit = fit_lines(spectra, off, sc, setup, resolution_mnka_ev=energy_resolution_mnka_ev,
                        beam_energy_kev=beam_energy_kev, families=families)
    params = {"intensity_method": "fit", "families": families, "min_energy_kev": min_energy_kev,
              "beam_energy_kev": float(beam_energy_kev), "energy_resolution_mnka_ev": float(energy_resolution_mnka_ev),
              "kfactor_table": load_kfactor_table(kfactor_table).name if kfactor_table != "none" else None,
              "fit_weights": "mean chip spectrum"}
    return ChipFit(fit, spectra.sum(axis=1, dtype=np.float64), float(beam_energy_kev),
                   float(energy_resolution_mnka_ev), params)
