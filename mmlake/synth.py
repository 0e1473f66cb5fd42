"""Seeded ground-truth synthetic STEM sessions: LaFeO3 film on SrTiO3 with a Cr or Pt cap.

Cross-sections like the preprint's (Sections II and IV; Table II): SrTiO3 substrate at the bottom, a
LaFeO3 film in the middle, a polycrystalline-looking Cr or Pt cap on top. Options: vertical defect
domains in the film ("defective" samples: rotated, expanded, column-disordered lattice; slightly
La-poor / O-rich) and an irradiation-amorphised triangle at the top of the film (0.1 dpa: no lattice
order, O-rich). Every session carries an integer truth map at HAADF resolution with the classes of
``docs/conventions.md`` (0 substrate, 1 film_ordered, 2 film_disordered, 3 cap).

Per session folder (see :func:`write_session`)::

    haadf.hspy    Signal2D float32 (H, W), axes y/x in nm (scale = pixel size), Poisson + scan noise
    eds.hspy      EDSTEMSpectrum uint16 (H, W, n_channels), nav axes in nm, energy in keV,
                  gzip+shuffle, HDF5 chunks (16 rows, <=128 cols, all channels): read lazily in bands
    truth.npy     int8 (H, W) class ids (saved with allow_pickle=False)
    session.yaml  the manifest (campaign, sample, dose_dpa, ..., kfactors, support, synthetic: {...})

Physics, deliberately simple but consistent:

* HAADF: Gaussian atomic columns on the [001]-projected cubic perovskite (A column at the cell corner,
  B-O column at the centre, two pure-O columns at the edge centres), amplitude ~ sum Z^1.7 of the
  column. The column width (``COLUMN_SIGMA_NM``) is chosen so that the strongest non-zero FFT peak of
  every crystalline region is the (100)-type at d = a. Amorphous regions and the cap are smoothed
  speckle with the mean Z-contrast of their composition and atomic density, without any lattice.
* EDS: per pixel, total counts ~ Poisson(counts_per_pixel * yield); each count lands in a channel drawn
  from the region's spectrum: Gaussian X-ray lines (energies and family weights from exspy's database,
  FWHM from the detector resolution at Mn Ka scaled as exspy does) plus a Kramers bremsstrahlung with a
  low-energy absorption cut-off and a high-energy detector-efficiency roll-off. Only the family of each
  element's quantified line is emitted (e.g. Fe K, La L, Sr L, Pt L; no Fe L / La M / Pt M), and the
  quantified line's area is proportional to w_i / k_i (Cliff-Lorimer convention of conventions.md).

Everything is vectorised numpy; the EDS cube is generated in bands of ``BAND_ROWS`` rows, each band
from its own seed, so results are byte-identical whatever order (or thread) builds the bands.
"""

from __future__ import annotations

import functools
import math
import os
import shutil
import sys
import time
import uuid
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np

__all__ = [
    "A_STO",
    "A_LFO",
    "A_DEFECT",
    "LATTICE_NM",
    "CLASS_NAMES",
    "REGION_NAMES",
    "REGION_CLASS",
    "REGION_COMPOSITION",
    "QUANT_LINES",
    "KFACTORS",
    "SessionSpec",
    "DEMO_CAMPAIGN",
    "Geometry",
    "make_geometry",
    "make_haadf",
    "make_eds",
    "make_arrays",
    "region_spectrum",
    "class_composition",
    "class_lattice_nm",
    "support_chips",
    "manifest",
    "write_session",
    "build_demo_campaign",
]

GENERATOR_VERSION = "1"

# ---------------------------------------------------------------------------------------------
# Constants (tests elsewhere compare measurements against these)
# ---------------------------------------------------------------------------------------------
A_STO = 0.3905  # nm, SrTiO3 cubic lattice constant
A_LFO = 0.393  # nm, LaFeO3 pseudo-cubic lattice constant (ordered film)
A_DEFECT = 0.42  # nm, lattice spacing inside the film's vertical defect domains (preprint: 0.42 nm)

CLASS_NAMES: tuple[str, ...] = ("substrate", "film_ordered", "film_disordered", "cap")

#: Internal region ids (finer than the truth classes: the EDS / HAADF model differs per region).
REGION_NAMES: tuple[str, ...] = ("substrate", "film_ordered", "film_defect", "film_amorphous", "cap")
_R_SUB, _R_FILM, _R_DEFECT, _R_AMORPH, _R_CAP = range(5)
#: region name -> truth class id
REGION_CLASS: dict[str, int] = {
    "substrate": 0,
    "film_ordered": 1,
    "film_defect": 2,
    "film_amorphous": 2,
    "cap": 3,
}
_REGION_TO_CLASS = np.array([REGION_CLASS[r] for r in REGION_NAMES], dtype=np.int8)

#: Lattice spacing (nm) of every crystalline region; the amorphous film and the cap have none.
LATTICE_NM: dict[str, float] = {"substrate": A_STO, "film_ordered": A_LFO, "film_defect": A_DEFECT}

#: Composition (at.%) per region. The cap is pure Cr or Pt (``SessionSpec.cap_element``).
#: film_defect / film_amorphous follow the preprint's trends: disordered regions are O-rich; defect
#: domains lose more La than Fe, the irradiation-amorphised film loses more Fe than La.
REGION_COMPOSITION: dict[str, dict[str, float]] = {
    "substrate": {"Sr": 20.0, "Ti": 20.0, "O": 60.0},
    "film_ordered": {"La": 20.0, "Fe": 20.0, "O": 60.0},
    "film_defect": {"La": 18.0, "Fe": 19.5, "O": 62.5},
    "film_amorphous": {"La": 19.0, "Fe": 18.0, "O": 63.0},
    "cap_Cr": {"Cr": 100.0},
    "cap_Pt": {"Pt": 100.0},
}

#: Quantified X-ray line per element (the manifest's k-factor keys).
QUANT_LINES: dict[str, str] = {
    "O": "O_Ka",
    "Ti": "Ti_Ka",
    "Cr": "Cr_Ka",
    "Fe": "Fe_Ka",
    "Sr": "Sr_La",
    "La": "La_La",
    "Pt": "Pt_La",
}

#: Cliff-Lorimer k-factors relative to Fe_Ka = 1 (plausible 300 kV values; w_i ~ k_i * I_i).
KFACTORS: dict[str, float] = {
    "O_Ka": 1.60,
    "Ti_Ka": 0.87,
    "Cr_Ka": 0.92,
    "Fe_Ka": 1.00,
    "Sr_La": 1.30,
    "La_La": 1.75,
    "Pt_La": 2.60,
}

# Perovskite sites per region: (A element, B element).
_PEROVSKITE_SITES = {"substrate": ("Sr", "Ti"), "film": ("La", "Fe")}

HAADF_Z_EXPONENT = 1.7
#: Gaussian column sigma (nm). Chosen so the (100) FFT peak beats (110) for STO (the weakest case:
#: |F100|/|F110| ~ 1.5 in amplitude) and LFO (~2.7).
COLUMN_SIGMA_NM = 0.10
#: Column disorder inside defect domains: random column displacement (nm, per axis) and relative
#: column-intensity scatter (occupancy / thickness variation).
DEFECT_JITTER_NM = 0.025
DEFECT_AMP_VAR = 0.15
#: Atomic density of the amorphised film relative to the ordered film (swelling).
AMORPHOUS_DENSITY = 0.95
#: Relative X-ray yield per region (counts per pixel = counts_per_pixel * yield).
_REGION_YIELD = {"substrate": 1.0, "film_ordered": 1.0, "film_defect": 0.9, "film_amorphous": 0.95, "cap": 1.0}
#: Bremsstrahlung share: background weight = BREMS_WEIGHT * Zbar / Zbar(LFO) relative to unit line area.
BREMS_WEIGHT = 0.35
BREMS_LOW_CUTOFF_KEV = 0.45  # absorption (window, dead layer): efficiency exp(-(Ec/E)^3)
BREMS_HIGH_ROLLOFF_KEV = 14.0  # thin Si crystal: efficiency 1 - exp(-(Eh/E)^3)
BAND_ROWS = 16  # EDS generation band (and HDF5 chunk rows)
EDS_CHUNK_COLS = 128  # HDF5 chunk columns
EDS_GZIP_LEVEL = 4  # HDF5 deflate level of eds.hspy (with the shuffle filter)

# Random-stream ids (SeedSequence spawn keys).
_STREAM_GEOMETRY, _STREAM_HAADF, _STREAM_EDS = 0, 1, 2


# ---------------------------------------------------------------------------------------------
# Session specification
# ---------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SessionSpec:
    """Everything that determines one synthetic session (same spec -> byte-identical arrays)."""

    sample: str
    dose_dpa: float
    chip_px: int
    image_px: int
    pixel_size_nm: float
    cap_element: str = "Cr"
    defect_domains: bool = False
    amorphised: bool = False
    counts_per_pixel: float = 40.0  # mean EDS counts per pixel (ordered film)
    seed: int = 0
    campaign: str = "lfo_sto_demo"
    acquired_at: str = "2024-01-01T09:00:00+00:00"
    instrument: str = "Themis Z (synthetic)"
    beam_kv: float = 300.0
    haadf_counts: float = 300.0  # mean HAADF counts per pixel in the ordered film
    n_channels: int = 2048
    energy_offset_kev: float = 0.0
    energy_scale_kev: float = 0.01
    energy_resolution_mnka_ev: float = 130.0
    cap_fraction: float = 0.22  # share of image height above the film (mean)
    substrate_fraction: float = 0.33  # share of image height below the film
    n_defect_domains: int = 2
    defect_width_fraction: float = 0.14  # width of one defect domain / image width
    amorphous_base_fraction: float = 0.5  # triangle base / image width
    amorphous_depth_fraction: float = 0.6  # triangle height / film thickness

    def __post_init__(self):
        if self.cap_element not in ("Cr", "Pt"):
            raise ValueError(f"cap_element must be 'Cr' or 'Pt', got {self.cap_element!r}")
        if self.chip_px < 1 or self.image_px < self.chip_px:
            raise ValueError(f"chip_px/image_px: need 1 <= chip_px <= image_px, got {self.chip_px}, {self.image_px}")
        if not 0.01 <= self.pixel_size_nm <= 1.0:
            raise ValueError(f"pixel_size_nm out of range: {self.pixel_size_nm}")
        if self.counts_per_pixel <= 0 or self.haadf_counts <= 0:
            raise ValueError("counts_per_pixel and haadf_counts must be > 0")
        if self.cap_fraction + self.substrate_fraction >= 0.9:
            raise ValueError("cap_fraction + substrate_fraction must leave room for the film")
        e_max = self.energy_offset_kev + self.energy_scale_kev * (self.n_channels - 1)
        if e_max < 13.5:
            raise ValueError(f"energy axis must reach the Pt L family (13.4 keV); ends at {e_max:g} keV")

    @property
    def dose_key(self) -> str:
        return f"{self.dose_dpa:g}"

    @property
    def session_id(self) -> str:
        return f"{self.sample}@{self.dose_key}"

    @property
    def folder_name(self) -> str:
        return f"{self.sample}_{self.dose_key}dpa"

    @property
    def grid(self) -> tuple[int, int]:
        n = self.image_px // self.chip_px
        return n, n

    @property
    def elements(self) -> list[str]:
        els = set(REGION_COMPOSITION["substrate"]) | set(REGION_COMPOSITION["film_ordered"]) | {self.cap_element}
        return sorted(els)

    @property
    def kfactors(self) -> dict[str, float]:
        return {QUANT_LINES[e]: KFACTORS[QUANT_LINES[e]] for e in self.elements}

    def region_composition(self, region: str) -> dict[str, float]:
        return dict(REGION_COMPOSITION[f"cap_{self.cap_element}" if region == "cap" else region])

    def energy_axis(self) -> np.ndarray:
        """Channel energies in keV: offset + scale * i."""
        return self.energy_offset_kev + self.energy_scale_kev * np.arange(self.n_channels)

    def lattice_nm(self) -> dict[str, float | None]:
        """Lattice spacing per truth class present in this session (None: no lattice)."""
        return class_lattice_nm(self)

    def composition_at_pct(self) -> dict[str, dict[str, float]]:
        """At.% per truth class present in this session (see :func:`class_composition`)."""
        return class_composition(self)


#: The preprint's Table II: 33x33, 24x24, 34x34, 51x51 chip grids. Pixel sizes from the
#: magnifications (3.9 Mx -> 50 pm, 5.5 Mx -> 35 pm, 2.75 Mx -> 71 pm); every chip holds >= 0.7 nm.
DEMO_CAMPAIGN: list[SessionSpec] = [
    SessionSpec("pristine", 0.0, chip_px=15, image_px=500, pixel_size_nm=0.050, cap_element="Cr",
                seed=1101, acquired_at="2024-03-11T10:15:00+00:00"),
    SessionSpec("pristine", 0.1, chip_px=20, image_px=490, pixel_size_nm=0.035, cap_element="Cr",
                amorphised=True, seed=1102, acquired_at="2024-03-12T14:40:00+00:00"),
    SessionSpec("defective", 0.0, chip_px=15, image_px=512, pixel_size_nm=0.050, cap_element="Pt",
                defect_domains=True, seed=1103, acquired_at="2024-03-13T09:05:00+00:00"),
    SessionSpec("defective", 0.1, chip_px=10, image_px=512, pixel_size_nm=0.071, cap_element="Pt",
                defect_domains=True, amorphised=True, seed=1104, acquired_at="2024-03-14T16:20:00+00:00"),
]


def _rng(spec: SessionSpec, *key: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence(entropy=spec.seed, spawn_key=tuple(key)))


# ---------------------------------------------------------------------------------------------
# X-ray line database (exspy) and detector model
# ---------------------------------------------------------------------------------------------
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


# ---------------------------------------------------------------------------------------------
# Geometry (regions / truth)
# ---------------------------------------------------------------------------------------------
@dataclass
class Geometry:
    regions: np.ndarray  # int8 (H, W) region ids (REGION_NAMES)
    truth: np.ndarray  # int8 (H, W) class ids (CLASS_NAMES)
    film_top: np.ndarray  # float (W,) row of the cap/film interface per column
    film_bottom: float  # row of the film/substrate interface
    defects: list[dict] = field(default_factory=list)  # per domain: centre/width (px), angle (deg)
    amorphous: dict | None = None  # triangle: centre x, base width, depth (px)


def make_geometry(spec: SessionSpec) -> Geometry:
    rng = _rng(spec, _STREAM_GEOMETRY)
    n = spec.image_px
    p = spec.pixel_size_nm
    rows = np.arange(n, dtype=float)[:, None]
    cols = np.arange(n, dtype=float)[None, :]

    # Cap / film interface: mean at cap_fraction * n, roughness ~0.3 nm (two sines, random phases).
    phase = rng.uniform(0, 2 * np.pi, size=2)
    lam_nm = rng.uniform([5.0, 9.0], [8.0, 14.0])
    amp_px = 0.3 / p
    film_top = spec.cap_fraction * n + amp_px * (
        0.7 * np.sin(2 * np.pi * cols[0] * p / lam_nm[0] + phase[0])
        + 0.5 * np.sin(2 * np.pi * cols[0] * p / lam_nm[1] + phase[1])
    )
    film_bottom = float(np.round((1.0 - spec.substrate_fraction) * n))

    regions = np.full((n, n), _R_SUB, dtype=np.int8)
    in_film = (rows >= film_top[None, :]) & (rows < film_bottom)
    regions[rows[:, 0] < film_bottom, :] = _R_CAP
    regions[in_film] = _R_FILM
    thickness = film_bottom - spec.cap_fraction * n

    defects: list[dict] = []
    if spec.defect_domains:
        k = spec.n_defect_domains
        width = spec.defect_width_fraction * n
        for i in range(k):
            centre = (i + 0.5) * n / k + rng.uniform(-0.15, 0.15) * n / k
            w = width * rng.uniform(0.85, 1.15)
            wander_amp = 0.25 / p
            ph = rng.uniform(0, 2 * np.pi, size=2)
            wl = rng.uniform(4.0, 8.0) / p
            left = centre - w / 2 + wander_amp * np.sin(2 * np.pi * rows / wl + ph[0])
            right = centre + w / 2 + wander_amp * np.sin(2 * np.pi * rows / wl + ph[1])
            mask = in_film & (cols >= left) & (cols < right)
            regions[mask] = _R_DEFECT
            angle = float(rng.choice([-1.0, 1.0]) * rng.uniform(4.0, 9.0))
            defects.append({"centre_px": float(centre), "width_px": float(w), "angle_deg": angle,
                            "origin_nm": [float(v) for v in rng.uniform(0, A_DEFECT, size=2)]})

    amorphous = None
    if spec.amorphised:
        xc = rng.uniform(0.35, 0.65) * n
        half = spec.amorphous_base_fraction * n / 2
        depth = spec.amorphous_depth_fraction * thickness
        top = spec.cap_fraction * n
        edge_amp = 0.3 / p
        ph = rng.uniform(0, 2 * np.pi, size=2)
        wobble = edge_amp * np.sin(2 * np.pi * rows * p / 3.0 + ph[0]) + 0.5 * edge_amp * np.sin(
            2 * np.pi * cols * p / 2.3 + ph[1]
        )
        inside = (rows - top) + wobble <= depth * (1.0 - np.abs(cols - xc) / half)
        regions[in_film & inside] = _R_AMORPH
        amorphous = {"centre_px": float(xc), "base_px": float(2 * half), "depth_px": float(depth)}

    truth = _REGION_TO_CLASS[regions]
    return Geometry(regions, truth, film_top, film_bottom, defects, amorphous)


# ---------------------------------------------------------------------------------------------
# HAADF
# ---------------------------------------------------------------------------------------------
def _zpow(el: str) -> float:
    return float(_z(el)) ** HAADF_Z_EXPONENT


def _column_weights(region: str, spec: SessionSpec, a: float) -> tuple[float, float, float]:
    """Amplitudes of the A, B-O and O columns (sum Z^1.7 per cell length, / a: intensity per nm)."""
    site = "substrate" if region == "substrate" else "film"
    a_el, b_el = _PEROVSKITE_SITES[site]
    comp = spec.region_composition(region)
    nominal = spec.region_composition("substrate" if site == "substrate" else "film_ordered")
    occ = {e: comp[e] / nominal[e] for e in comp}
    w_a = occ[a_el] * _zpow(a_el)
    w_o = occ["O"] * _zpow("O")
    w_b = occ[b_el] * _zpow(b_el) + w_o
    return w_a / a, w_b / a, w_o / a


def _mean_level(spec: SessionSpec, region: str) -> float:
    """Mean HAADF level (arbitrary units: 2 pi sigma^2 * n_atoms[nm^-3] * <Z^1.7>)."""
    comp = spec.region_composition(region)
    zmean = sum(x / 100.0 * _zpow(e) for e, x in comp.items())
    if region == "cap":
        el = spec.cap_element
        rho = float(_element_db(el)["Physical_properties"]["density (g/cm^3)"])
        n_atoms = rho * 6.02214076e23 / _atomic_weight(el) * 1e-21
    else:
        a = {"substrate": A_STO, "film_ordered": A_LFO, "film_defect": A_DEFECT, "film_amorphous": A_LFO}[region]
        n_atoms = 5.0 / a**3 * (AMORPHOUS_DENSITY if region == "film_amorphous" else 1.0)
    return 2 * np.pi * COLUMN_SIGMA_NM**2 * n_atoms * zmean


def _render_perovskite(x, y, a, theta_deg, origin, weights, jitter_nm=0.0, amp_var=0.0, rng=None):
    """Sum of Gaussian columns of the projected perovskite at points (x, y) (nm, 1-D arrays)."""
    th = np.deg2rad(theta_deg)
    c, s = np.cos(th), np.sin(th)
    dx0, dy0 = x - origin[0], y - origin[1]
    u = (c * dx0 + s * dy0) / a
    v = (-s * dx0 + c * dy0) / a
    k = -(a * a) / (2 * COLUMN_SIGMA_NM**2)
    w_a, w_b, w_o = weights
    sub = [(0.0, 0.0, w_a), (0.5, 0.5, w_b), (0.5, 0.0, w_o), (0.0, 0.5, w_o)]
    table = 4096
    if jitter_nm > 0 or amp_var > 0:
        jit = rng.standard_normal((table, 2)) * (jitter_nm / a)
        amp = np.clip(1.0 + amp_var * rng.standard_normal(table), 0.2, None)
    out = np.zeros_like(u)
    for si, (du, dv, w) in enumerate(sub):
        uu, vv = u - du, v - dv
        i0, j0 = np.floor(uu).astype(np.int64), np.floor(vv).astype(np.int64)
        for di in (0, 1):
            for dj in (0, 1):
                i, j = i0 + di, j0 + dj
                ex, ey = uu - i, vv - j
                if jitter_nm > 0 or amp_var > 0:
                    h = ((i * 73856093) ^ (j * 19349663) ^ (si * 83492791)) & (table - 1)
                    ex = ex - jit[h, 0]
                    ey = ey - jit[h, 1]
                    out += w * amp[h] * np.exp(k * (ex * ex + ey * ey))
                else:
                    out += w * np.exp(k * (ex * ex + ey * ey))
    return out


def _speckle(rng, shape, sigma_px, grain_px=None):
    from scipy.ndimage import gaussian_filter

    g = gaussian_filter(rng.standard_normal(shape), sigma_px, mode="wrap")
    g /= g.std() + 1e-12
    if grain_px:
        gg = gaussian_filter(rng.standard_normal(shape), grain_px, mode="wrap")
        g = g + 0.2 * gg / (gg.std() + 1e-12)
    return g


def make_haadf(spec: SessionSpec, geom: Geometry | None = None) -> np.ndarray:
    """HAADF image, float32 (H, W), in detector counts (Poisson + scan-line gain and jitter)."""
    geom = geom or make_geometry(spec)
    rng = _rng(spec, _STREAM_HAADF)
    n, p = spec.image_px, spec.pixel_size_nm
    row_shift = rng.normal(0.0, 0.15, size=n)  # scan-line x jitter (px)
    row_gain = 1.0 + rng.normal(0.0, 0.02, size=n)  # scan-line gain noise
    rows, cols = np.mgrid[0:n, 0:n]
    x = (cols + row_shift[:, None]) * p
    y = rows * p
    img = np.zeros((n, n))
    reg = geom.regions
    bottom_nm = geom.film_bottom * p
    x0 = float(rng.uniform(0, A_STO))
    # Substrate and ordered film share the interface row (coherent epitaxy).
    for r, a in ((_R_SUB, A_STO), (_R_FILM, A_LFO)):
        m = reg == r
        if m.any():
            name = REGION_NAMES[r]
            img[m] = _render_perovskite(x[m], y[m], a, 0.0, (x0, bottom_nm), _column_weights(name, spec, a))
    for d in geom.defects:
        m = (reg == _R_DEFECT) & (np.abs(cols - d["centre_px"]) <= d["width_px"])
        if m.any():
            o = d["origin_nm"]
            img[m] = _render_perovskite(
                x[m], y[m], A_DEFECT, d["angle_deg"], (o[0] + d["centre_px"] * p, o[1]),
                _column_weights("film_defect", spec, A_DEFECT),
                jitter_nm=DEFECT_JITTER_NM, amp_var=DEFECT_AMP_VAR, rng=rng,
            )
    sig_px = COLUMN_SIGMA_NM / p
    for r, contrast, grain in ((_R_AMORPH, 0.30, None), (_R_CAP, 0.25, 1.5 / p)):
        m = reg == r
        if m.any():
            sp = _speckle(rng, (n, n), sig_px, grain)
            img[m] = _mean_level(spec, REGION_NAMES[r]) * np.clip(1.0 + contrast * sp[m], 0.0, None)
    scale = spec.haadf_counts / _mean_level(spec, "film_ordered")
    lam = np.clip(img * scale * row_gain[:, None], 0.0, None)
    return rng.poisson(lam).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# EDS
# ---------------------------------------------------------------------------------------------
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


def make_arrays(spec: SessionSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(haadf float32 (H, W), eds uint16 (H, W, C), truth int8 (H, W)) in memory, no disk."""
    geom = make_geometry(spec)
    return make_haadf(spec, geom), make_eds(spec, geom), geom.truth


# ---------------------------------------------------------------------------------------------
# Per-session ground truth summaries
# ---------------------------------------------------------------------------------------------
def _regions_present(geom: Geometry) -> dict[str, int]:
    counts = np.bincount(geom.regions.ravel(), minlength=len(REGION_NAMES))
    return {REGION_NAMES[i]: int(c) for i, c in enumerate(counts) if c > 0}


def class_composition(spec: SessionSpec, geom: Geometry | None = None) -> dict[str, dict[str, float]]:
    """At.% per truth class present in the session, as an ideal Cliff-Lorimer quantification of the
    class-summed spectrum would return it (exact region composition for single-region classes;
    count-weighted mixture for film_disordered holding both defect domains and amorphous film)."""
    geom = geom or make_geometry(spec)
    present = _regions_present(geom)
    out: dict[str, dict[str, float]] = {}
    for cid, cname in enumerate(CLASS_NAMES):
        regs = [r for r in present if REGION_CLASS[r] == cid]
        if not regs:
            continue
        inten: dict[str, float] = {}
        for r in regs:
            expected = present[r] * spec.counts_per_pixel * _REGION_YIELD[r]
            _, info = region_spectrum(spec, r)
            for ln, a in info["line_area"].items():
                inten[ln] = inten.get(ln, 0.0) + expected * a
        w = {ln.split("_")[0]: spec.kfactors[ln] * i for ln, i in inten.items()}
        out[cname] = {e: round(float(v), 4) for e, v in sorted(atomic_percent_from_weights(w).items())}
    return out


def class_lattice_nm(spec: SessionSpec, geom: Geometry | None = None) -> dict[str, float | None]:
    """Lattice spacing per class present (None where the class has no lattice)."""
    geom = geom or make_geometry(spec)
    present = _regions_present(geom)
    out: dict[str, float | None] = {}
    for cid, cname in enumerate(CLASS_NAMES):
        regs = [r for r in present if REGION_CLASS[r] == cid]
        if regs:
            vals = [LATTICE_NM[r] for r in regs if r in LATTICE_NM]
            out[cname] = float(vals[0]) if vals else None
    return out


def support_chips(truth: np.ndarray, chip_px: int, per_class: int = 4) -> dict[str, list[list[int]]]:
    """Deterministic support set: for each class present, ``per_class`` chips [row, col] on the chip
    grid lying fully inside that class, spread evenly over the candidates in chip-index order (if too
    few chips lie fully inside, the purest remaining chips fill in)."""
    h, w = truth.shape
    nr, nc = h // chip_px, w // chip_px
    t = truth[: nr * chip_px, : nc * chip_px].reshape(nr, chip_px, nc, chip_px)
    out: dict[str, list[list[int]]] = {}
    for cid, cname in enumerate(CLASS_NAMES):
        frac = (t == cid).mean(axis=(1, 3)).ravel()
        full = np.flatnonzero(frac == 1.0)
        if full.size >= per_class:
            pick = full[np.round(np.linspace(0, full.size - 1, per_class)).astype(int)]
        else:
            rest = np.flatnonzero((frac > 0.5) & (frac < 1.0))
            rest = rest[np.argsort(-frac[rest], kind="stable")]
            pick = np.concatenate([full, rest])[:per_class]
        if pick.size:
            out[cname] = [[int(i // nc), int(i % nc)] for i in pick]
    return out


def _rounded(d: dict, nd: int = 4) -> dict:
    return {k: ([round(float(x), nd) for x in v] if isinstance(v, list) else round(float(v), nd)) for k, v in d.items()}


def manifest(spec: SessionSpec, geom: Geometry | None = None) -> dict:
    """The session.yaml content (plain Python types only)."""
    geom = geom or make_geometry(spec)
    truth_frac = np.bincount(geom.truth.ravel(), minlength=4) / geom.truth.size
    n = spec.image_px
    return {
        "campaign": spec.campaign,
        "sample": spec.sample,
        "dose_dpa": float(spec.dose_dpa),
        "session_id": spec.session_id,
        "acquired_at": spec.acquired_at,
        "instrument": {"name": spec.instrument, "beam_kv": float(spec.beam_kv)},
        "haadf": "haadf.hspy",
        "eds": "eds.hspy",
        "elements": spec.elements,
        "chip_px": int(spec.chip_px),
        "kfactors": {k: float(v) for k, v in spec.kfactors.items()},
        "truth": "truth.npy",
        "truth_classes": list(CLASS_NAMES),
        "support": support_chips(geom.truth, spec.chip_px),
        "synthetic": {
            "generator": f"mmlake.synth v{GENERATOR_VERSION}",
            "seed": int(spec.seed),
            "image_px": int(n),
            "pixel_size_nm": float(spec.pixel_size_nm),
            "grid": list(spec.grid),
            "lattice_nm": class_lattice_nm(spec, geom),
            "composition_at_pct": class_composition(spec, geom),
            "regions": {
                r: {
                    "class": CLASS_NAMES[REGION_CLASS[r]],
                    "pixels": int(c),
                    "composition_at_pct": spec.region_composition(r),
                    "lattice_nm": LATTICE_NM.get(r),
                    "eds_counts_per_pixel": float(spec.counts_per_pixel * _REGION_YIELD[r]),
                }
                for r, c in _regions_present(geom).items()
            },
            "truth_fraction": {c: round(float(f), 5) for c, f in zip(CLASS_NAMES, truth_frac)},
            "cap_element": spec.cap_element,
            "defect_domains": [_rounded(d) for d in geom.defects],
            "amorphised_region": _rounded(geom.amorphous) if geom.amorphous else None,
            "film_bottom_row": float(geom.film_bottom),
            "film_top_row_mean": round(float(np.mean(geom.film_top)), 2),
            "film_thickness_nm": round(float((geom.film_bottom - np.mean(geom.film_top)) * spec.pixel_size_nm), 3),
            "haadf": {"column_sigma_nm": COLUMN_SIGMA_NM, "z_exponent": HAADF_Z_EXPONENT,
                      "mean_counts_film_ordered": float(spec.haadf_counts)},
            "eds": {
                "counts_per_pixel": float(spec.counts_per_pixel),
                "n_channels": int(spec.n_channels),
                "energy_offset_kev": float(spec.energy_offset_kev),
                "energy_scale_kev": float(spec.energy_scale_kev),
                "energy_resolution_mnka_ev": float(spec.energy_resolution_mnka_ev),
                "quantified_lines": {e: QUANT_LINES[e] for e in spec.elements},
                "families_emitted": "only the quantified line's family (exspy add_family_lines rule)",
                "band_rows": BAND_ROWS,
            },
        },
    }


# ---------------------------------------------------------------------------------------------
# Writing
# ---------------------------------------------------------------------------------------------
def _haadf_signal(spec: SessionSpec, img: np.ndarray):
    import hyperspy.api as hs

    p = spec.pixel_size_nm
    s = hs.signals.Signal2D(
        img,
        axes=[
            {"name": "y", "units": "nm", "scale": p, "offset": 0.0, "size": img.shape[0], "navigate": False},
            {"name": "x", "units": "nm", "scale": p, "offset": 0.0, "size": img.shape[1], "navigate": False},
        ],
    )
    s.metadata.General.title = f"HAADF {spec.session_id} (synthetic)"
    s.metadata.Signal.quantity = "Intensity (counts)"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(spec.beam_kv))
    s.metadata.set_item("Acquisition_instrument.TEM.microscope", spec.instrument)
    s.metadata.set_item("General.date", spec.acquired_at[:10])
    s.metadata.set_item("General.time", spec.acquired_at[11:19])
    return s


def _eds_signal(spec: SessionSpec, data):
    from exspy.signals import EDSTEMSpectrum, LazyEDSTEMSpectrum

    p = spec.pixel_size_nm
    n = spec.image_px
    axes = [
        {"name": "y", "units": "nm", "scale": p, "offset": 0.0, "size": n, "navigate": True},
        {"name": "x", "units": "nm", "scale": p, "offset": 0.0, "size": n, "navigate": True},
        {"name": "Energy", "units": "keV", "scale": spec.energy_scale_kev, "offset": spec.energy_offset_kev,
         "size": spec.n_channels, "navigate": False},
    ]
    cls = EDSTEMSpectrum if isinstance(data, np.ndarray) else LazyEDSTEMSpectrum
    s = cls(data, axes=axes)
    s.metadata.General.title = f"EDS {spec.session_id} (synthetic)"
    s.metadata.Signal.signal_type = "EDS_TEM"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(spec.beam_kv))
    s.metadata.set_item("Acquisition_instrument.TEM.microscope", spec.instrument)
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa",
                        float(spec.energy_resolution_mnka_ev))
    s.metadata.set_item("General.date", spec.acquired_at[:10])
    s.metadata.set_item("General.time", spec.acquired_at[11:19])
    s.metadata.set_item("Sample.elements", spec.elements)
    s.metadata.set_item("Sample.xray_lines", sorted(QUANT_LINES[e] for e in spec.elements))
    return s


def _compressed_chunks(model: _EdsModel, regions: np.ndarray, band: int, shape: tuple, chunks: tuple, level: int):
    """Generate one band and return its HDF5 chunks as (offset, bytes) after the shuffle + deflate
    filters, exactly as h5py would store them (edge chunks zero-padded to the full chunk shape)."""
    h, w, nch = shape
    ch_r, ch_c, _ = chunks
    r0 = band * ch_r
    data = _eds_band(model, regions[r0:r0 + ch_r], band)
    out = []
    for c0 in range(0, w, ch_c):
        blk = data[:, c0:c0 + ch_c]
        if blk.shape[:2] != (ch_r, ch_c):
            pad = np.zeros((ch_r, ch_c, nch), dtype=np.uint16)
            pad[: blk.shape[0], : blk.shape[1]] = blk
            blk = pad
        shuffled = np.ascontiguousarray(blk, dtype="<u2").view(np.uint8).reshape(-1, 2).T.tobytes()
        out.append(((r0, c0, 0), zlib.compress(shuffled, level)))
    return out


def _write_eds_hspy(spec: SessionSpec, geom: Geometry, path: Path, workers: int = 2) -> None:
    """eds.hspy: HyperSpy/RosettaSciIO writes the file (axes, metadata: everything but the data), then
    the uint16 cube is streamed into its ``data`` dataset band by band as pre-compressed HDF5 chunks
    (shuffle + gzip, chunks (BAND_ROWS, <=EDS_CHUNK_COLS, n_channels)). Bands are generated and
    compressed in ``workers`` threads (numpy and zlib release the GIL); peak memory ~ workers x 2 bands."""
    import dask.array as da
    import h5py

    n, nch = spec.image_px, spec.n_channels
    shape = (n, n, nch)
    chunks = (BAND_ROWS, min(EDS_CHUNK_COLS, n), nch)
    skeleton = _eds_signal(spec, da.zeros(shape, dtype=np.uint16, chunks=chunks))
    skeleton.save(path, overwrite=True, write_dataset=False)  # opens in mode "a"
    model = _eds_model(spec)
    n_bands = -(-n // BAND_ROWS)
    with h5py.File(path, "r+") as f:
        (group,) = f["Experiments"].values()
        dset = group.create_dataset("data", shape=shape, dtype="<u2", chunks=chunks, compression="gzip",
                                    compression_opts=EDS_GZIP_LEVEL, shuffle=True)
        with ThreadPoolExecutor(max_workers=max(1, workers)) as pool:
            pending = []
            for b in range(n_bands):
                pending.append(pool.submit(_compressed_chunks, model, geom.regions, b, shape, chunks, EDS_GZIP_LEVEL))
                if len(pending) > workers:  # bounded look-ahead keeps memory flat
                    for offset, blob in pending.pop(0).result():
                        dset.id.write_direct_chunk(offset, blob)
            for fut in pending:
                for offset, blob in fut.result():
                    dset.id.write_direct_chunk(offset, blob)


def write_session(spec: SessionSpec, out_dir: str | os.PathLike, workers: int = 2) -> Path:
    """Write one session into ``out_dir / spec.folder_name`` (e.g. ``pristine_0.1dpa``) and return that
    folder. Built in a temporary sibling folder and renamed into place (replacing an old one), so a
    watcher never sees a half-written session; session.yaml is written last."""
    import yaml

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    final = out_dir / spec.folder_name
    tmp = out_dir / f".{spec.folder_name}.tmp-{uuid.uuid4().hex[:8]}"
    tmp.mkdir()
    try:
        geom = make_geometry(spec)
        np.save(tmp / "truth.npy", geom.truth.astype(np.int8), allow_pickle=False)
        _haadf_signal(spec, make_haadf(spec, geom)).save(tmp / "haadf.hspy", overwrite=True, compression="gzip")
        _write_eds_hspy(spec, geom, tmp / "eds.hspy", workers=workers)
        text = yaml.safe_dump(manifest(spec, geom), sort_keys=False, default_flow_style=None, width=110)
        (tmp / "session.yaml").write_text(text)
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def build_demo_campaign(
    out_dir: str | os.PathLike,
    specs: Iterable[SessionSpec] = DEMO_CAMPAIGN,
    progress: Callable[[str], object] | None = print,
) -> list[Path]:
    """Write every spec's session under ``out_dir``; returns the session folders."""
    paths = []
    t0 = time.perf_counter()
    for spec in specs:
        t = time.perf_counter()
        path = write_session(spec, out_dir)
        paths.append(path)
        if progress:
            size = sum(f.stat().st_size for f in path.iterdir()) / 1e6
            progress(f"{spec.session_id}: {path} ({size:.1f} MB, {time.perf_counter() - t:.1f} s)")
    if progress:
        progress(f"built {len(paths)} sessions in {time.perf_counter() - t0:.1f} s")
    return paths


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 1 or argv[0].startswith("-"):
        print("usage: python -m mmlake.synth OUT_DIR   (builds the demo campaign)", file=sys.stderr)
        return 2
    build_demo_campaign(argv[0])
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
