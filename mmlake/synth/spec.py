"""The synthetic session's constants (lattices, compositions, k-factors, detector model) and its
specification (:class:`SessionSpec`, the demo campaign of the preprint's Table II)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

GENERATOR_VERSION = "1"

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
        from mmlake.synth.truth import class_lattice_nm

        return class_lattice_nm(self)

    def composition_at_pct(self) -> dict[str, dict[str, float]]:
        """At.% per truth class present in this session (see :func:`class_composition`)."""
        from mmlake.synth.truth import class_composition

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
