"""Thin-film absorption correction for Cliff-Lorimer (opt-in: it needs the specimen's thickness).

X-rays leaving a film of thickness t at take-off angle alpha are attenuated on average by
``A = (1 - exp(-chi)) / chi``, ``chi = (mu/rho)_specimen(E) * rho * t / sin(alpha)``, with the
specimen's mass absorption coefficient the weight-fraction mixture of its elements' (exspy's
tables). Low-energy lines in heavy or Ti-bearing matrices are hit hardest: O Ka in 25 nm SrTiO3
loses ~17 % (the Ti L3 edge lies just below it), so uncorrected CL there puts O ~8 at.% low and the
cations ~2 at.% high each. The correction iterates: composition -> A of every quantified line ->
intensities / A -> composition, until the composition moves less than ``tol`` at.%.

``density_g_cm3`` is the specimen's density (e.g. 6.6 for LaFeO3, 5.12 for SrTiO3). Without it,
exspy's rule (elemental densities weighted by weight fraction) is used, which is poor for oxides
(oxygen's elemental density is that of the gas).
"""

from __future__ import annotations

import functools
import math

import numpy as np

from mmlake.eds.cliff_lorimer import cl_atomic_percent
from mmlake.eds.kfactors import LineSetup
from mmlake.eds.lines import _elements_db, atomic_weight, line_energy


@functools.lru_cache(maxsize=None)
def _mu_table(lines: tuple[str, ...], elements: tuple[str, ...]) -> np.ndarray:
    """(n_lines, n_elements) mass absorption coefficient (cm^2/g) of element j at line i's energy."""
    from exspy.material import mass_absorption_coefficient

    e = [line_energy(ln) for ln in lines]
    return np.stack([np.ravel(mass_absorption_coefficient(el, e)).astype(float) for el in elements], axis=1)


def absorption_factors(at_pct: np.ndarray, setup: LineSetup, thickness_nm, density_g_cm3=None,
                       take_off_angle_deg: float = 22.0) -> np.ndarray:
    """``A`` (n, m) of every quantified line for compositions ``at_pct`` (n, m) (negative noise clipped)."""
    x = np.clip(np.nan_to_num(np.atleast_2d(at_pct)), 0.0, None)
    M = np.array([atomic_weight(el) for el in setup.elements])
    w = x * M[None, :]
    w = w / np.maximum(w.sum(axis=1, keepdims=True), 1e-12)
    mu = w @ _mu_table(tuple(setup.lines), tuple(setup.elements)).T  # (n, m): mu/rho of the specimen at line i
    if density_g_cm3 is None:
        rho_el = np.array([float(_elements_db()[el]["Physical_properties"]["density (g/cm^3)"])
                           for el in setup.elements])
        rho = (w * rho_el[None, :]).sum(axis=1)
    else:
        rho = np.broadcast_to(np.asarray(density_g_cm3, dtype=float), (len(x),))
    t = np.broadcast_to(np.asarray(thickness_nm, dtype=float), (len(x),))
    chi = mu * (rho * t * 1e-7 / math.sin(math.radians(take_off_angle_deg)))[:, None]
    return np.where(chi > 1e-9, -np.expm1(-chi) / np.maximum(chi, 1e-12), 1.0)


def correct_intensities(I: np.ndarray, setup: LineSetup, thickness_nm, density_g_cm3=None,
                        take_off_angle_deg: float = 22.0, tol: float = 0.01, max_iter: int = 30):
    """Absorption-corrected intensities ``I / A`` and ``A`` (both (n, m)), iterated to convergence."""
    I = np.atleast_2d(np.asarray(I, dtype=np.float64))
    A = np.ones_like(I)
    at = cl_atomic_percent(I, setup)
    for _ in range(max_iter):
        A = absorption_factors(at, setup, thickness_nm, density_g_cm3, take_off_angle_deg)
        new = cl_atomic_percent(I / A, setup)
        done = np.nanmax(np.abs(new - at)) < tol if np.isfinite(new).any() else True
        at = new
        if done:
            break
    return I / A, A
