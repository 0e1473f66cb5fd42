"""X-ray physics of the generator: exspy's line database, detector width law, weight/atomic
conversions, Cliff-Lorimer line areas and the per-region emission spectrum."""

from __future__ import annotations

import functools
import math

import numpy as np

from mmlake.synth.spec import (BREMS_HIGH_ROLLOFF_KEV, BREMS_LOW_CUTOFF_KEV, BREMS_WEIGHT, KFACTORS, QUANT_LINES,
                               REGION_COMPOSITION, SessionSpec)

@functools.lru_cache(maxsize=None)
def _element_db(element: str) -> dict:
    from exspy.material import elements

    return elements[element].as_dictionary()


def _line_energy(line: str) -> float:
    el, ln = line.split("_", 1)
    return float(_element_db(el)["Atomic_properties"]["Xray_lines"][ln]["energy (keV)"])


def fwhm_kev(energy_kev, resolution_mnka_ev: float = 130.0):
    """Detector FWHM (keV) at ``energy_kev``: Fiori & Newbury scaling from the FWHM at Mn Ka, exactly as
    exspy's ``get_FWHM_at_Energy`` (FWHM^2 = 2.5 (E - E_MnKa)[eV] + FWHM_MnKa^2)."""
    e_ref = _line_energy("Mn_Ka")
    e = np.asarray(energy_kev, dtype=float)
    return np.sqrt(2.5 * (e - e_ref) * 1000.0 + resolution_mnka_ev**2) / 1000.0


@functools.lru_cache(maxsize=None)
def line_family(quant_line: str) -> tuple[tuple[str, float, float], ...]:
    """(line, energy keV, weight relative to the quantified line) for the quantified line's family,
    selected as exspy's EDSModel.add_family_lines does (line letter contained in the line name)."""
    el, ln = quant_line.split("_", 1)
    lines = _element_db(el)["Atomic_properties"]["Xray_lines"]
    w0 = float(lines[ln]["weight"])
    fam = [(f"{el}_{li}", float(p["energy (keV)"]), float(p["weight"]) / w0) for li, p in lines.items() if ln[0] in li]
    return tuple(sorted(fam, key=lambda t: t[1]))


def _atomic_weight(el: str) -> float:
    return float(_element_db(el)["General_properties"]["atomic_weight"])


def _z(el: str) -> int:
    return int(_element_db(el)["General_properties"]["Z"])


def weight_fractions(composition_at: dict[str, float]) -> dict[str, float]:
    """Atomic % -> weight fractions (sum 1)."""
    m = {e: x * _atomic_weight(e) for e, x in composition_at.items()}
    tot = sum(m.values())
    return {e: v / tot for e, v in m.items()}


def atomic_percent_from_weights(weights: dict[str, float]) -> dict[str, float]:
    """Weight fractions (any normalisation) -> atomic % (sum 100)."""
    n = {e: w / _atomic_weight(e) for e, w in weights.items()}
    tot = sum(n.values())
    return {e: float(100.0 * v / tot) for e, v in n.items()}


def line_intensities(composition_at: dict[str, float], kfactors: dict[str, float] | None = None) -> dict[str, float]:
    """Relative areas of the quantified lines, I_i ~ w_i / k_i (normalised to sum 1)."""
    k = kfactors or KFACTORS
    w = weight_fractions(composition_at)
    raw = {QUANT_LINES[e]: w[e] / k[QUANT_LINES[e]] for e in w}
    tot = sum(raw.values())
    return {ln: v / tot for ln, v in raw.items()}


def _mean_z(composition_at: dict[str, float]) -> float:
    w = weight_fractions(composition_at)
    return sum(w[e] * _z(e) for e in w)


def _gauss_binned(edges: np.ndarray, centre: float, fwhm: float) -> np.ndarray:
    from scipy.special import erf

    s = fwhm / (2.0 * math.sqrt(2.0 * math.log(2.0)))
    c = 0.5 * (1.0 + erf((edges - centre) / (s * math.sqrt(2.0))))
    return np.diff(c)


def bremsstrahlung(energy_kev: np.ndarray, beam_kv: float = 300.0) -> np.ndarray:
    """Kramers continuum (E0 - E)/E times detector efficiency (low-energy absorption cut-off and
    high-energy roll-off); unnormalised, zero at E <= 0."""
    e = np.asarray(energy_kev, dtype=float)
    out = np.zeros_like(e)
    ok = (e > 0.05) & (e < beam_kv)
    ee = e[ok]
    out[ok] = (beam_kv - ee) / ee * np.exp(-((BREMS_LOW_CUTOFF_KEV / ee) ** 3)) * (
        1.0 - np.exp(-((BREMS_HIGH_ROLLOFF_KEV / ee) ** 3))
    )
    return out


def region_spectrum(spec: SessionSpec, region: str) -> tuple[np.ndarray, dict]:
    """Probability of a count landing in each channel for ``region`` (sums to 1), and a dict with
    the pieces: ``line_area`` (share of counts of each quantified line), ``line_fraction`` (all lines
    together), ``background`` (the bremsstrahlung pdf part, per channel)."""
    comp = spec.region_composition(region)
    e = spec.energy_axis()
    edges = np.concatenate([e - spec.energy_scale_kev / 2, [e[-1] + spec.energy_scale_kev / 2]])
    areas = line_intensities(comp, spec.kfactors)
    lines = np.zeros(spec.n_channels)
    for qline, area in areas.items():
        for _name, energy, rel in line_family(qline):
            if energy < spec.beam_kv:
                fwhm = float(fwhm_kev(energy, spec.energy_resolution_mnka_ev))
                lines += area * rel * _gauss_binned(edges, energy, fwhm)
    brems = bremsstrahlung(e, spec.beam_kv)
    brems = brems / brems.sum()
    bg_weight = BREMS_WEIGHT * _mean_z(comp) / _mean_z(REGION_COMPOSITION["film_ordered"])
    total = lines.sum() + bg_weight
    pdf = (lines + bg_weight * brems) / total
    info = {
        "line_area": {ln: a / total for ln, a in areas.items()},
        "line_fraction": float(lines.sum() / total),
        "background": bg_weight * brems / total,
    }
    return pdf, info
