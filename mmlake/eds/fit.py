"""Line intensities by a weighted linear least-squares fit shared by every spectrum, with their
Poisson counting covariance.

Model = for each element, the family of its quantified line (all lines of the same shell letter,
as exspy's ``EDSModel.add_family_lines``; energies and relative weights from exspy's database;
Gaussian FWHM from the detector resolution at Mn Ka with exspy's Fiori-Newbury scaling, binned
exactly over each channel) with one free area per element, plus a smooth background (cubic
B-splines with knots spaced ``max(0.25 E, 2.5 FWHM(E))``: the continuum changes on the scale of E
itself, and knots never come closer than 2.5 FWHM so the background cannot absorb a peak).
``families="all"`` adds the element's other shells (Fe L, La M, Ti L, ...) as free nuisance terms;
``families="tied"`` estimates, once, on the pooled spectrum of all inputs, each declared element's
other-shell areas per unit quantified area (:func:`shell_ratios`) and makes them part of that
element's column, so weak lines are modelled without free terms that trade counts with their
neighbours (Cr L and Ti L next to O Ka, N Ka under Ti Ll).

The weights (1/sqrt of the mean spectrum, floored at 1 count) are shared by all spectra, so the fit
is ONE linear map ``coef = projector @ y``: the fit of a sum of spectra is the sum of their fits.
That is what lets a region's intensities be the sum of its chips' (:meth:`LineFit.combine`) and a
bootstrap over chips resample chip intensities instead of refitting.

Counting error: ``Cov(coef) = projector diag(mu) projector^T`` with ``mu`` the fitted model (the
Poisson mean of each channel; the model rather than the counts, so an empty channel does not claim
zero variance), see :meth:`LineFit.line_covariance`.

``"windows"`` (:func:`window_intensities`): exspy's ``estimate_background_windows`` +
``get_lines_intensity``; kept for comparison, biased by line overlaps on these oxides.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Mapping

import numpy as np

from mmlake.eds.kfactors import LineSetup
from mmlake.eds.lines import element_lines, fwhm_kev, line_family


def _binned_gauss(edges: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    from scipy.special import erf

    sig = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    c = 0.5 * (1.0 + erf((edges - centre) / (sig * math.sqrt(2.0))))
    return np.diff(c)


def _spline_knots(lo: float, hi: float, res_ev: float) -> np.ndarray:
    knots = [lo]
    while True:
        e = knots[-1]
        step = max(0.25 * e, 2.5 * float(fwhm_kev(e, res_ev)))
        if e + step >= hi - 0.5 * step:
            break
        knots.append(e + step)
    knots.append(hi)
    return np.array(knots)


FAMILIES = ("quantified", "all", "tied")


def design_matrix(
    energies: np.ndarray,
    scale: float,
    setup: LineSetup,
    *,
    resolution_mnka_ev: float,
    beam_energy_kev: float,
    families: str = "quantified",
    shell_ratios: Mapping[str, Mapping[str, float]] | None = None,
) -> tuple[np.ndarray, list[str]]:
    """Columns: one per quantified line (its whole family, unit area of the quantified line), then
    (``families="all"``) each element's other shells as free terms, then cubic B-spline background
    terms. ``families="tied"``: each element's other shells are part of its column, scaled by
    ``shell_ratios[line][shell]`` (area of the shell's strongest line per unit quantified area)."""
    from scipy.interpolate import BSpline

    if families not in FAMILIES:
        raise ValueError(f"families must be one of {FAMILIES}, got {families!r}")
    e = np.asarray(energies, dtype=float)
    edges = np.concatenate([e - scale / 2, [e[-1] + scale / 2]])
    lo, hi = edges[0], edges[-1]
    cols, names = [], []

    def family_column(fam):
        col = np.zeros(len(e))
        for _, en, rel in fam:
            if en < beam_energy_kev and lo - 0.5 < en < hi + 0.5:
                col += rel * _binned_gauss(edges, en, float(fwhm_kev(en, resolution_mnka_ev)))
        return col

    def other_shells(ln):
        el, q = ln.split("_", 1)
        shells = {name.split("_", 1)[1][0] for name in element_lines(el)} - {q[0]}
        for sh in sorted(shells):
            members = [(n, en, w) for n, (en, w) in element_lines(el).items()
                       if sh in n.split("_", 1)[1] and lo < en < hi]
            if members:
                wmax = max(w for _, _, w in members)
                col = family_column([(n, en, w / wmax) for n, en, w in members])
                if col.sum() > 1e-3:
                    yield sh, col

    for ln in setup.lines:
        col = family_column(line_family(ln))
        if families == "tied":
            for sh, extra in other_shells(ln):
                col = col + float((shell_ratios or {}).get(ln, {}).get(sh, 0.0)) * extra
        cols.append(col)
        names.append(ln)
    if families == "all":
        for ln in setup.lines:
            for sh, col in other_shells(ln):
                cols.append(col)
                names.append(f"{ln.split('_', 1)[0]}_{sh}*")
    knots = _spline_knots(float(e[0]), float(e[-1]), resolution_mnka_ev)
    t = np.concatenate([[knots[0]] * 3, knots, [knots[-1]] * 3])
    B = BSpline.design_matrix(np.clip(e, knots[0], knots[-1]), t, 3).toarray()
    for j in range(B.shape[1]):
        cols.append(B[:, j])
        names.append(f"bg{j}")
    return np.stack(cols, axis=1), names


def shell_ratios(
    pooled,
    offset: float,
    scale: float,
    setup: LineSetup,
    *,
    resolution_mnka_ev: float,
    beam_energy_kev: float,
    min_sigma: float = 5.0,
) -> dict[str, dict[str, float]]:
    """Stage 1 of ``families="tied"``: on a pooled spectrum, the declared elements' quantified
    families with their other shells as free terms (the undeclared extraneous elements are left out
    here: their lines would be degenerate with the free shells, e.g. N_Ka under Ti_Ll). ``pooled``
    is one spectrum, or ``{line: spectrum}``: each element's ratios from its own pooled spectrum
    (the chips where it is richest, so that e.g. Cr L is measured in the Cr cap, not against the O Ka
    of the film 50 eV away). Returns, for every declared element whose quantified line stands above
    ``min_sigma`` counting standard errors, the area of each other shell per unit quantified area
    (clipped at 0); the other elements get none."""
    import dataclasses

    keep = [i for i, el in enumerate(setup.elements) if el in set(setup.declared)]
    sub = dataclasses.replace(setup, lines=tuple(setup.lines[i] for i in keep),
                              elements=tuple(setup.elements[i] for i in keep),
                              kfactors=tuple(setup.kfactors[i] for i in keep),
                              kfactor_source=tuple(setup.kfactor_source[i] for i in keep))
    spectra = pooled if isinstance(pooled, dict) else {ln: pooled for ln in sub.lines}
    some = np.asarray(next(iter(spectra.values())), dtype=np.float64)
    en = offset + scale * np.arange(len(some))
    A, names = design_matrix(en, scale, sub, resolution_mnka_ev=resolution_mnka_ev,
                             beam_energy_kev=beam_energy_kev, families="all")
    fits: dict[int, tuple] = {}
    out: dict[str, dict[str, float]] = {}
    for i, ln in enumerate(sub.lines):
        y = np.asarray(spectra.get(ln, some), dtype=np.float64)
        if id(y) not in fits:
            w = 1.0 / np.sqrt(np.maximum(y, 1.0))
            P = np.linalg.pinv(A * w[:, None]) * w[None, :]
            c = P @ y
            fits[id(y)] = (c, (P * np.maximum(A @ c, 0.0)[None, :]) @ P.T, y)
        coef, var, _ = fits[id(y)]
        if not coef[i] > min_sigma * np.sqrt(max(var[i, i], 1e-12)):
            continue
        el = ln.split("_", 1)[0]
        out[ln] = {nm.split("_", 1)[1][0]: float(np.clip(coef[j] / coef[i], 0.0, 10.0))
                   for j, nm in enumerate(names) if nm.endswith("*") and nm.split("_", 1)[0] == el}
    return out


@dataclass
class LineFit:
    """The shared linear fit of a stack of spectra (see the module docstring)."""

    setup: LineSetup
    design: np.ndarray  # (C, p) columns: quantified families (setup.lines order), nuisance shells, background
    names: list[str]  # p column names
    projector: np.ndarray  # (p, C): coef = projector @ spectrum
    coef: np.ndarray  # (n, p) fitted coefficients of the input spectra
    offset_kev: float
    scale_kev: float
    shell_ratios: dict = field(default_factory=dict)  # families="tied": other-shell areas per quantified area

    @property
    def n_lines(self) -> int:
        return len(self.setup.lines)

    @property
    def intensities(self) -> np.ndarray:
        """(n, n_lines) fitted areas of the quantified lines."""
        return self.coef[:, : self.n_lines]

    def combine(self, weights: np.ndarray) -> np.ndarray:
        """Coefficients of weighted sums of the input spectra: ``weights (k, n) @ coef`` (a region's
        summed spectrum has the sum of its chips' coefficients, by linearity)."""
        return np.asarray(weights, dtype=np.float64) @ self.coef

    def model(self, coef: np.ndarray | None = None) -> np.ndarray:
        """Fitted spectra ``(n, C)`` of ``coef`` (default: the inputs')."""
        c = self.coef if coef is None else np.asarray(coef, dtype=np.float64)
        return c @ self.design.T

    def line_covariance(self, coef: np.ndarray | None = None) -> np.ndarray:
        """Poisson covariance ``(n, n_lines, n_lines)`` of the quantified line areas of spectra whose
        fitted coefficients are ``coef`` (the channel variance is the fitted model, floored at 0)."""
        mu = np.maximum(self.model(coef), 0.0)  # (n, C)
        P = self.projector[: self.n_lines]  # (m, C)
        m = self.n_lines
        outer = (P[:, None, :] * P[None, :, :]).reshape(m * m, -1)  # (m*m, C)
        return (mu @ outer.T).reshape(len(mu), m, m)


def fit_lines(
    spectra: np.ndarray,
    offset: float,
    scale: float,
    setup: LineSetup,
    *,
    resolution_mnka_ev: float = 130.0,
    beam_energy_kev: float = 300.0,
    families: str = "quantified",
    weight_spectrum: np.ndarray | None = None,
) -> LineFit:
    """One weighted least-squares fit of every spectrum ``(n, C)``; weights ``1/sqrt(max(mean, 1))``
    of ``weight_spectrum`` (default: the mean of the spectra with counts)."""
    y = np.asarray(spectra, dtype=np.float64)
    e = offset + scale * np.arange(y.shape[1])
    has = y.sum(axis=1) > 0
    if weight_spectrum is None:
        weight_spectrum = y[has].mean(axis=0) if has.any() else np.ones(y.shape[1])
    ratios = None
    if families == "tied":
        ratios = shell_ratios(_rich_pools(y, e, scale, setup, resolution_mnka_ev, beam_energy_kev, weight_spectrum),
                              offset, scale, setup, resolution_mnka_ev=resolution_mnka_ev,
                              beam_energy_kev=beam_energy_kev)
    A, names = design_matrix(e, scale, setup, resolution_mnka_ev=resolution_mnka_ev,
                             beam_energy_kev=beam_energy_kev, families=families, shell_ratios=ratios)
    w = 1.0 / np.sqrt(np.maximum(np.asarray(weight_spectrum, dtype=np.float64), 1.0))
    projector = np.linalg.pinv(A * w[:, None]) * w[None, :]  # (p, C)
    coef = y @ projector.T
    return LineFit(setup, A, names, projector, coef, float(offset), float(scale), ratios or {})


def _rich_pools(y, e, scale, setup, resolution_mnka_ev, beam_energy_kev, weight_spectrum,
                quantile: float = 0.75) -> dict[str, np.ndarray]:
    """For each declared element, the summed spectrum of the inputs where its (quantified-family,
    k-weighted) share is highest: at or above the ``quantile`` of its share and at least half its
    largest share; all inputs when there are few."""
    from mmlake.eds.lines import atomic_weight

    has = y.sum(axis=1) > 0
    pooled_all = y[has].sum(axis=0) if has.any() else np.zeros(y.shape[1])
    if has.sum() < 8:
        return {ln: pooled_all for ln in setup.lines}
    A, _ = design_matrix(e, scale, setup, resolution_mnka_ev=resolution_mnka_ev, beam_energy_kev=beam_energy_kev,
                         families="quantified")
    w = 1.0 / np.sqrt(np.maximum(np.asarray(weight_spectrum, dtype=np.float64), 1.0))
    I = y[has] @ (np.linalg.pinv(A * w[:, None]) * w[None, :])[: len(setup.lines)].T
    kM = np.array([k / atomic_weight(el) for k, el in zip(setup.kfactors, setup.elements)])
    u = np.maximum(I, 0.0) * kM[None, :]
    share = u / np.maximum(u.sum(axis=1, keepdims=True), 1e-12)
    out = {}
    for j, ln in enumerate(setup.lines):
        s = share[:, j]
        pick = (s >= np.quantile(s, quantile)) & (s >= 0.5 * s.max())
        out[ln] = y[has][pick].sum(axis=0) if pick.sum() >= 1 else pooled_all
    return out


def fit_line_intensities(spectra, offset, scale, setup, *, resolution_mnka_ev: float = 130.0,
                         beam_energy_kev: float = 300.0, families: str = "quantified") -> np.ndarray:
    """Areas ``(n, n_lines)`` of the quantified lines (``setup.lines`` order): :func:`fit_lines`."""
    return fit_lines(spectra, offset, scale, setup, resolution_mnka_ev=resolution_mnka_ev,
                     beam_energy_kev=beam_energy_kev, families=families).intensities


def window_intensities(s, setup: LineSetup) -> list:
    ax = s.axes_manager.signal_axes[0]
    lo, hi = ax.low_value, ax.high_value
    bw = s.estimate_background_windows(line_width=[2.0, 2.0], windows_width=1.0, xray_lines=list(setup.lines))
    bw = np.clip(bw, lo, hi)
    return s.get_lines_intensity(xray_lines=list(setup.lines), background_windows=bw)
