"""Cliff-Lorimer composition of every chip (:func:`quantify_chips`) or of one summed spectrum
(:func:`quantify_spectrum`), with the Poisson counting error of each at.%.

The chip grid is the navigation space of one exspy ``EDSTEMSpectrum`` (``(n_rows, n_cols | C)``),
so the whole grid is quantified in one exspy call; one summed spectrum is a navigation of size 1.
Intensities come from :mod:`mmlake.eds.fit` (``"fit"``, default) or exspy's background windows
(``"windows"``); quantification is exspy's ``quantification(method="CL", composition_units=
"atomic")`` with ``navigation_mask=None`` (exspy's default vacuum mask would zero low-count chips).
exspy returns lines in ALPHABETICAL order; k-factors are matched by the line name each intensity
signal carries, never by position.

Negative fitted intensities (an absent element's noise) are kept (``clip_negative=False``): CL is
linear in the intensities, so averages over chips stay unbiased.

NULL (NaN) rows, each with its reason in ``CLResult.null_reason``: ``"no_counts"`` (the spectrum is
empty) and ``"no_line"`` (no line intensity above exspy's 0.1-count threshold: exspy returns zeros,
which is no composition). Nothing else becomes NULL: a row that does not sum to 100 for any other
reason is returned as it is (and counted in ``params["n_rows_not_100"]``), so the lake's sum check
sees it.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Mapping, Sequence

import numpy as np

from mmlake.eds.cliff_lorimer import EXSPY_MIN_INTENSITY, cl_covariance, exspy_cliff_lorimer
from mmlake.eds.fit import LineFit, fit_lines, window_intensities
from mmlake.eds.kfactors import EXTRANEOUS_LABEL, LineSetup, _fail, load_kfactor_table, resolve_lines
from mmlake.eds.spectra import _no_progressbar, chip_spectra, exspy_signal

METHOD_VERSION = "2"
NO_COUNTS, NO_LINE = "no_counts", "no_line"


@dataclass
class CLResult:
    """Per-chip composition. ``atomic_percent`` rows are NaN where ``null_reason`` says why."""

    elements: tuple[str, ...]
    lines: tuple[str, ...]
    atomic_percent: np.ndarray  # float32 (n, n_elements), element order = self.elements
    intensities: np.ndarray  # float32 (n, n_elements): background-subtracted line areas
    total_counts: np.ndarray  # float32 (n,) counts in the quantified energy range
    setup: LineSetup
    params: dict
    counting_se: np.ndarray | None = None  # float32 (n, n_elements): Poisson standard error of the at.%
    null_reason: np.ndarray | None = None  # object (n,): None, "no_counts" or "no_line"
    fit: LineFit | None = None  # the shared line fit ("fit" method)
    absorption: np.ndarray | None = None  # (n, n_elements) thin-film absorption factors used (None: off)

    def column(self, element: str) -> np.ndarray:
        return self.atomic_percent[:, self.elements.index(element)]

    def as_columns(self, prefix: str = "at_pct_") -> dict[str, np.ndarray]:
        return {f"{prefix}{el}": self.atomic_percent[:, i] for i, el in enumerate(self.elements)}

    def provenance(self) -> dict:
        return {"method": "exspy_cliff_lorimer", "method_version": METHOD_VERSION, **self.params,
                "setup": self.setup.as_dict()}


def cl_from_intensities(
    I: np.ndarray,
    total: np.ndarray,
    setup: LineSetup,
    signal,
    nav_shape: tuple[int, ...],
) -> tuple[np.ndarray, np.ndarray]:
    """exspy at.% ``(n, m)`` of intensities ``I`` and the NULL reason of each row."""
    n, m = I.shape
    reason = np.full(n, None, dtype=object)
    reason[total <= 0] = NO_COUNTS
    reason[(total > 0) & ~(I > EXSPY_MIN_INTENSITY).any(axis=1)] = NO_LINE
    valid = np.array([r is None for r in reason], dtype=bool)
    at = np.full((n, m), np.nan)
    if m == 1:
        at[valid, 0] = 100.0
    elif valid.any():
        at[valid] = exspy_cliff_lorimer(signal, setup, I, valid, nav_shape)
    return at, reason


def counting_se(fit: LineFit, coef: np.ndarray, I: np.ndarray, valid: np.ndarray,
                gain: np.ndarray | None = None) -> np.ndarray:
    """Poisson standard errors ``(n, m)`` of the at.% of spectra with fitted coefficients ``coef``
    (quantified intensities ``I`` = ``gain`` x fitted areas, e.g. absorption-corrected); NaN where
    not ``valid``."""
    se = np.full(I.shape, np.nan)
    if valid.any():
        cov_I = fit.line_covariance(coef[valid])
        if gain is not None:
            g = np.asarray(gain)[valid]
            cov_I = cov_I * g[:, :, None] * g[:, None, :]
        cov = cl_covariance(I[valid], cov_I, fit.setup)
        se[valid] = np.sqrt(np.maximum(np.diagonal(cov, axis1=1, axis2=2), 0.0))
    return se


def quantify_chips(
    sums: np.ndarray,
    energy_offset_kev: float,
    energy_scale_kev: float,
    elements: Sequence[str],
    *,
    grid: tuple[int, int] | None = None,
    beam_energy_kev: float = 300.0,
    energy_resolution_mnka_ev: float = 130.0,
    kfactors: Mapping[str, float] | None = None,
    kfactor_table: str | None = None,
    include_extraneous: bool = True,
    min_energy_kev: float | None = 0.2,
    intensity_method: str = "fit",
    families: str = "tied",
    clip_negative: bool = False,
    weight_spectrum: np.ndarray | None = None,
    thickness_nm=None,
    density_g_cm3=None,
    take_off_angle_deg: float = 22.0,
    session: str | None = None,
) -> CLResult:
    """Cliff-Lorimer atomic % (and its Poisson standard error) of every chip.

    ``sums`` ``(n, C)`` counts; ``grid`` ``(n_rows, n_cols)`` with ``n_rows * n_cols == n`` makes the
    exspy navigation space the chip grid (chip_index = row * n_cols + col); None: a 1-D navigation.
    ``energy_resolution_mnka_ev`` is the detector FWHM at Mn Ka (exspy's default 130 eV).
    ``kfactors``: the session's k-factors by line (they win); ``kfactor_table``: a table of
    ``mmlake/data/kfactors.yaml`` (None: its default; ``"none"``: session k-factors only).
    ``weight_spectrum``: the spectrum the fit weights come from (default: the mean of ``sums``; the
    cropped channel range, i.e. as :func:`chip_spectra` returns it). ``thickness_nm`` (scalar or one
    per spectrum) switches on the thin-film absorption correction (:mod:`mmlake.eds.absorption`,
    with ``density_g_cm3`` and ``take_off_angle_deg``); off by default. Errors (unknown element, no line
    in range, missing k-factor) are ``SessionError`` naming ``session`` when it is given, else
    ``ValueError``.
    """
    if intensity_method not in ("fit", "windows"):
        raise ValueError(f"intensity_method must be 'fit' or 'windows', got {intensity_method!r}")
    if not beam_energy_kev > 0:
        raise ValueError(f"beam_energy_kev must be > 0, got {beam_energy_kev!r}")
    if not energy_resolution_mnka_ev > 0:
        raise ValueError(f"energy_resolution_mnka_ev must be > 0, got {energy_resolution_mnka_ev!r}")
    spectra, off, sc = chip_spectra(sums, energy_offset_kev, energy_scale_kev, min_energy_kev=min_energy_kev)
    n, n_ch = spectra.shape
    if not np.all(np.isfinite(spectra)):
        raise _fail(session, "EDS chip sums contain NaN or infinite values")
    if grid is not None and (len(grid) != 2 or int(grid[0]) * int(grid[1]) != n):
        raise ValueError(f"grid {grid!r} does not hold {n} chips (need n_rows * n_cols == n)")
    hi = min(off + sc * (n_ch - 1), beam_energy_kev)
    setup = resolve_lines(elements, energy_range_kev=(off, hi), kfactors=kfactors,
                          kfactor_table=kfactor_table, include_extraneous=include_extraneous,
                          session=session)
    total = spectra.sum(axis=1, dtype=np.float64)
    nav_shape = tuple(int(g) for g in grid) if grid is not None else (n,)
    s = exspy_signal(spectra.reshape(*nav_shape, n_ch), off, sc, beam_energy_kev, energy_resolution_mnka_ev, setup)
    fit = None
    with warnings.catch_warnings(), np.errstate(all="ignore"), _no_progressbar():
        warnings.simplefilter("ignore")
        if intensity_method == "windows":
            by_line = {sig.metadata.Sample.xray_lines[0]: np.asarray(sig.data, dtype=np.float64).reshape(n)
                       for sig in window_intensities(s, setup)}
            I = np.stack([by_line[ln] for ln in setup.lines], axis=1)
        else:
            fit = fit_lines(spectra, off, sc, setup, resolution_mnka_ev=energy_resolution_mnka_ev,
                            beam_energy_kev=beam_energy_kev, families=families, weight_spectrum=weight_spectrum)
            I = fit.intensities.copy()
        if clip_negative:
            I = np.maximum(I, 0.0)
        A = np.ones_like(I)
        if thickness_nm is not None:
            from mmlake.eds.absorption import correct_intensities

            I, A = correct_intensities(I, setup, thickness_nm, density_g_cm3, take_off_angle_deg)
        at, reason = cl_from_intensities(I, total, setup, s, nav_shape)
        valid = np.array([r is None for r in reason], dtype=bool)
        se = (counting_se(fit, fit.coef, I, valid, 1.0 / A) if fit is not None else np.full(at.shape, np.nan))
    not100 = valid & ~np.isclose(np.nansum(at, axis=1), 100.0, atol=0.5)
    params = {
        "intensity_method": intensity_method,
        "families": families,
        "clip_negative": bool(clip_negative),
        "min_energy_kev": min_energy_kev,
        "beam_energy_kev": float(beam_energy_kev),
        "energy_resolution_mnka_ev": float(energy_resolution_mnka_ev),
        "kfactor_table": load_kfactor_table(kfactor_table).name if kfactor_table != "none" else None,
        "n_null": {NO_COUNTS: int((reason == NO_COUNTS).sum()), NO_LINE: int((reason == NO_LINE).sum())},
        "n_rows_not_100": int(not100.sum()),
        "absorption_correction": None if thickness_nm is None else {
            "thickness_nm": np.asarray(thickness_nm, dtype=float).tolist(),
            "density_g_cm3": None if density_g_cm3 is None else np.asarray(density_g_cm3, dtype=float).tolist(),
            "take_off_angle_deg": float(take_off_angle_deg)},
    }
    return CLResult(setup.elements, setup.lines, at.astype(np.float32), I.astype(np.float32),
                    total.astype(np.float32), setup, params, se.astype(np.float32), reason, fit,
                    A if thickness_nm is not None else None)


def quantify_spectrum(
    spectrum: np.ndarray,
    energy_offset_kev: float,
    energy_scale_kev: float,
    elements: Sequence[str],
    *,
    lump_extraneous: bool = True,
    with_error: bool = False,
    **kwargs,
):
    """Composition (at.%) of ONE summed spectrum (e.g. a segmented region), through the same code
    path as :func:`quantify_chips` (a navigation of size 1).

    Returns ``{element: at.%}`` for the declared ``elements``; the undeclared extraneous elements
    are summed into ``"Extraneous"`` (``lump_extraneous``) so the values add up to 100, or listed
    individually. All values NaN when the spectrum has no counts. ``with_error``: returns
    ``(composition, counting standard errors)`` (the lumped Extraneous error propagated with the
    elements' covariance)."""
    a = np.asarray(spectrum)
    if a.ndim != 1:
        raise ValueError(f"spectrum must be 1-D (n_channels,), got shape {a.shape}")
    res = quantify_chips(a[None, :], energy_offset_kev, energy_scale_kev, elements, grid=None, **kwargs)
    row = res.atomic_percent[0].astype(float)
    se = res.counting_se[0].astype(float)
    declared = set(res.setup.declared)
    out = {el: float(row[i]) for i, el in enumerate(res.elements) if el in declared}
    err = {el: float(se[i]) for i, el in enumerate(res.elements) if el in declared}
    rest = [i for i, el in enumerate(res.elements) if el not in declared]
    if lump_extraneous:
        out[EXTRANEOUS_LABEL] = float(row[rest].sum()) if rest else 0.0
        err[EXTRANEOUS_LABEL] = lumped_se(res, 0, rest)
        if np.isnan(row).all():
            out[EXTRANEOUS_LABEL] = float("nan")
    else:
        out.update({res.elements[i]: float(row[i]) for i in rest})
        err.update({res.elements[i]: float(se[i]) for i in rest})
    return (out, err) if with_error else out


def lumped_se(res: CLResult, row: int, cols: Sequence[int]) -> float:
    """Counting standard error of the sum of the at.% of ``cols`` in ``row`` (their covariance
    included: the extraneous elements' errors are anti-correlated with the declared ones')."""
    if not cols:
        return 0.0
    if res.fit is None or res.null_reason[row] is not None:
        return float("nan")
    from mmlake.eds.cliff_lorimer import cl_covariance

    I = res.intensities[row:row + 1].astype(np.float64)
    cov_I = res.fit.line_covariance(res.fit.coef[row:row + 1])
    if res.absorption is not None:
        g = 1.0 / res.absorption[row:row + 1]
        cov_I = cov_I * g[:, :, None] * g[:, None, :]
    cov = cl_covariance(I, cov_I, res.setup)[0]
    c = list(cols)
    return float(np.sqrt(max(cov[np.ix_(c, c)].sum(), 0.0)))
