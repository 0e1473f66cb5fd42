"""An EDS forward model written for the tests, independently of mmlake (``mmlake/synth``, ``mmlake/eds``).

It builds spectra with effects mmlake's line fit does NOT model, so the quantification is tested
against something other than its own forward model:

- weak lines of other shells (Ti L next to O Ka, Cr L, Fe L, La M, Sr K, Pt M; ``OTHER_SHELL``),
  which mmlake.synth never emits;
- Si escape peaks (Reed & Ware's escape fraction) and pile-up sum peaks, counted photon by photon;
  optionally an incomplete-charge-collection tail below every line (``Detector.tail_fraction_at_1kev``);
- a detector efficiency curve (window absorption at low energy, Si crystal thickness at high
  energy) that applies to every line and to the continuum; k-factors handed to the quantifier are
  calibrated for this detector (they contain the efficiency at the quantified line only, so the
  other members of a family are off by the efficiency ratio);
- thin-film absorption of the emitted X-rays (mass absorption coefficients from exspy's database,
  take-off angle 22 degrees) for a given thickness.

What it shares with the quantifier is the atomic data any real spectrum shares with it: exspy's
line energies and weights (:func:`lines`) and the detector width law (Fiori & Newbury).

Composition convention (Cliff-Lorimer, as a k-factor calibration defines it): in a film thin
enough to neglect absorption, the detected intensity of element i's quantified line is
proportional to ``w_i / k_i``. Everything is counted event by event (``sample_counts``), so
Poisson statistics, escape and pile-up act on counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

ATOMIC_WEIGHT = {"O": 15.999, "Ti": 47.867, "Fe": 55.845, "Sr": 87.62, "La": 138.905, "Cr": 51.996,
                 "Pt": 195.084, "C": 12.011, "Cu": 63.546}
Z = {"O": 8, "Ti": 22, "Cr": 24, "Fe": 26, "Sr": 38, "La": 57, "Pt": 78}

#: element -> mmlake/exspy name of the line whose intensity the k-factor refers to
QUANTIFIED = {"O": "O_Ka", "Ti": "Ti_Ka", "Cr": "Cr_Ka", "Fe": "Fe_Ka", "Sr": "Sr_La", "La": "La_La", "Pt": "Pt_La"}
#: emitted intensity of an element's other shells relative to its quantified shell (300 kV, thin film)
OTHER_SHELL = {"Ti": 0.10, "Cr": 0.10, "Fe": 0.12, "Sr": 0.15, "La": 0.40, "Pt": 0.70}
#: k-factors of this detector (quantified line, relative to Fe_Ka)
KFACTORS = {"O_Ka": 1.55, "Ti_Ka": 0.90, "Cr_Ka": 0.95, "Fe_Ka": 1.00, "Sr_La": 1.25, "La_La": 1.80, "Pt_La": 2.50}


def lines(element: str) -> dict[str, list[tuple[str, float, float]]]:
    """Atomic data (the one thing shared with the quantifier, as with any real spectrum): exspy's line
    energies and weights, grouped by shell letter; weights relative to the shell's strongest line."""
    from exspy.material import elements

    out: dict[str, list] = {}
    for name, p in elements[element].Atomic_properties.Xray_lines.as_dictionary().items():
        out.setdefault(name[0], []).append((name, float(p["energy (keV)"]), float(p["weight"])))
    return out


DENSITY = {"LaFeO3": 6.6, "SrTiO3": 5.12, "Cr": 7.19, "Pt": 21.45, "amorphous": 6.2}
TAKE_OFF_DEG = 22.0


def efficiency(e_kev):
    """Detector efficiency: window/dead-layer absorption ~ E^-2.7 below ~1 keV, Si crystal thickness
    above ~12 keV (a different shape from mmlake.synth's)."""
    e = np.maximum(np.asarray(e_kev, dtype=float), 0.05)
    return np.exp(-((0.33 / e) ** 2.7)) * (1.0 - np.exp(-((16.0 / e) ** 2.6)))


def fwhm_kev(e_kev, fwhm_mnka_ev=130.0):
    """Detector resolution: noise and Fano statistics, FWHM^2 = FWHM(Mn Ka)^2 + 2.5 eV (E - E(Mn Ka))."""
    return np.sqrt(np.maximum(fwhm_mnka_ev**2 + 2.5 * (np.asarray(e_kev, dtype=float) * 1000.0 - 5898.75), 1.0)) / 1000.0


def escape_fraction(e_kev) -> np.ndarray:
    """Si K escape probability (Reed & Ware 1972), 0 below the Si K edge."""
    from exspy.material import mass_absorption_coefficient

    e = np.atleast_1d(np.asarray(e_kev, dtype=float))
    out = np.zeros_like(e)
    above = e > 1.839
    if above.any():
        mu_k = float(np.ravel(mass_absorption_coefficient("Si", 1.740))[0])
        mu_i = np.ravel(mass_absorption_coefficient("Si", list(e[above]))).astype(float)
        out[above] = 0.5 * 0.047 * (1 - 1 / 10.8) * (1 - mu_k / mu_i * np.log(1 + mu_i / mu_k))
    return out


def weight_fractions(comp_at: dict[str, float]) -> dict[str, float]:
    m = {e: x * ATOMIC_WEIGHT[e] for e, x in comp_at.items()}
    tot = sum(m.values())
    return {e: v / tot for e, v in m.items()}


def absorption_factor(comp_at: dict[str, float], e_kev, thickness_nm: float, density: float) -> np.ndarray:
    """Thin-film absorption (1 - exp(-chi)) / chi, chi = mu/rho(E) rho t / sin(take-off)."""
    from exspy.material import mass_absorption_mixture

    e = np.atleast_1d(np.asarray(e_kev, dtype=float))
    if thickness_nm <= 0:
        return np.ones_like(e)
    w = weight_fractions(comp_at)
    els = list(w)
    mu = np.ravel(mass_absorption_mixture([w[x] for x in els], els, energies=list(e))).astype(float)
    chi = mu * density * thickness_nm * 1e-7 / math.sin(math.radians(TAKE_OFF_DEG))
    return np.where(chi > 1e-9, (1.0 - np.exp(-chi)) / np.maximum(chi, 1e-12), 1.0)


@dataclass(frozen=True)
class Phase:
    """A material at a thickness: what one region of a scene is made of."""

    composition: dict[str, float]  # at.%
    density: float
    thickness_nm: float = 0.0
    yield_per_px: float = 40.0  # mean detected counts per pixel
    brems: float = 0.30  # continuum share of the counts (before detector effects), scaled by mean Z


@dataclass
class Detector:
    fwhm_mnka_ev: float = 130.0
    tail_fraction_at_1kev: float = 0.0  # incomplete charge collection, falls as 1/E
    tail_kev: float = 0.06  # exponential tail length below a line
    pileup: float = 0.01  # share of recorded events that are two photons summed (high count rate)
    escape: bool = True
    n_channels: int = 2048
    scale_kev: float = 0.01
    offset_kev: float = 0.0
    beam_kv: float = 300.0
    extras: dict = field(default_factory=dict)


def emission_lines(phase: Phase, kfactors=KFACTORS, beam_kv: float = 300.0) -> list[tuple[float, float]]:
    """(energy keV, detected intensity before detector broadening) of every line, unnormalised:
    quantified shells and, at ``OTHER_SHELL`` strength, the weak lines of the other shells."""
    w = weight_fractions(phase.composition)
    out = []
    for el, wi in w.items():
        qname = QUANTIFIED[el]
        q_shell, q_line = qname.split("_")[1][0], qname.split("_")[1]
        shells = lines(el)
        e_q, r_q = next((e, r) for n, e, r in shells[q_shell] if n == q_line)
        emitted_q = wi / kfactors[qname] / float(efficiency(e_q))  # k holds this detector's efficiency
        for sh, members in shells.items():
            scale = 1.0 if sh == q_shell else OTHER_SHELL.get(el, 0.0)
            for _, e, r in members:
                if e < beam_kv:
                    out.append((e, emitted_q * scale * r / r_q))
    energies = np.array([e for e, _ in out])
    det = efficiency(energies) * absorption_factor(phase.composition, energies, phase.thickness_nm, phase.density)
    return [(e, a * d) for (e, a), d in zip(out, det)]


def continuum(phase: Phase, e: np.ndarray, beam_kv: float) -> np.ndarray:
    """Kramers continuum x efficiency x absorption, unnormalised (Z-weighted)."""
    zbar = sum(weight_fractions(phase.composition)[el] * Z[el] for el in phase.composition)
    ee = np.maximum(e, 0.05)
    k = np.where((e > 0.05) & (e < beam_kv), (beam_kv - ee) / ee, 0.0) * zbar
    return k * efficiency(ee) * absorption_factor(phase.composition, ee, phase.thickness_nm, phase.density)


def _line_probabilities(phase: Phase, det: Detector):
    lines = emission_lines(phase)
    e_lines = np.array([e for e, _ in lines])
    a_lines = np.array([a for _, a in lines])
    grid = det.offset_kev + det.scale_kev * (np.arange(8 * det.n_channels) + 0.5) / 8
    cont = continuum(phase, grid, det.beam_kv)
    cont_share = phase.brems * sum(weight_fractions(phase.composition)[el] * Z[el] for el in phase.composition) / 30.0
    p_lines = a_lines / a_lines.sum() * (1 - cont_share / (1 + cont_share))
    p_cont = cont / cont.sum() * (cont_share / (1 + cont_share))
    return e_lines, p_lines, grid, p_cont


_ESCAPE_GRID = np.linspace(1.84, 40.0, 800)
_cache: dict = {}


def _escape_table():
    if "escape" not in _cache:
        _cache["escape"] = escape_fraction(_ESCAPE_GRID)
    return _cache["escape"]


def _probabilities(phase: Phase, det: Detector):
    key = (id(phase), id(det))
    if key not in _cache:
        _cache[key] = (phase, det, _line_probabilities(phase, det))
    return _cache[key][2]


def sample_events(phase: Phase, n_counts: int, det: Detector, rng: np.random.Generator,
                  group: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Recorded energies (keV) of ``n_counts`` photons of one phase after every detector effect.
    ``group`` (n_counts,) sorted ids (e.g. the chip of each photon): pile-up only sums photons of
    the same group. Returns (energies, their groups)."""
    e_lines, p_lines, grid, p_cont = _probabilities(phase, det)
    is_line = rng.random(n_counts) < p_lines.sum()
    e = np.empty(n_counts)
    nl = int(is_line.sum())
    e[is_line] = e_lines[rng.choice(len(e_lines), size=nl, p=p_lines / p_lines.sum())]
    e[~is_line] = rng.choice(grid, size=n_counts - nl, p=p_cont / p_cont.sum())
    if det.escape:
        f = np.where(e > 1.839, np.interp(e, _ESCAPE_GRID, _escape_table()), 0.0)
        e = np.where(rng.random(n_counts) < f, e - 1.740, e)
    sig = fwhm_kev(e, det.fwhm_mnka_ev) / 2.3548
    e = e + sig * rng.standard_normal(n_counts)
    tail = rng.random(n_counts) < np.clip(det.tail_fraction_at_1kev / np.maximum(e, 0.1), 0, 0.1)
    e = np.where(tail, e - rng.exponential(det.tail_kev, n_counts), e)
    if det.pileup > 0 and n_counts > 1:
        # photon i absorbs photon i+1 (same group) with probability ~ pileup
        first = np.flatnonzero(rng.random(n_counts - 1) < det.pileup)
        if group is not None:
            first = first[group[first] == group[first + 1]]
        first = first[np.concatenate([[True], np.diff(first) > 1])] if first.size else first
        e[first] += e[first + 1]
        keep = np.ones(n_counts, dtype=bool)
        keep[first + 1] = False
        e = e[keep]
        group = group[keep] if group is not None else None
    return e, group


def _histogram(e, det: Detector, group=None, n_groups: int = 1) -> np.ndarray:
    ch = np.floor((e - det.offset_kev) / det.scale_kev).astype(np.int64)
    ok = (ch >= 0) & (ch < det.n_channels)
    g = group[ok] if group is not None else np.zeros(int(ok.sum()), dtype=np.int64)
    flat = np.bincount(g * det.n_channels + ch[ok], minlength=n_groups * det.n_channels)
    return flat.reshape(n_groups, det.n_channels).astype(np.float64)


def sample_counts(phase: Phase, n_counts: int, det: Detector, rng: np.random.Generator) -> np.ndarray:
    """Histogram (n_channels,) of ``n_counts`` photons of one phase (all detector effects)."""
    e, _ = sample_events(phase, n_counts, det, rng)
    return _histogram(e, det)[0]


def expected_spectrum(phase: Phase, n_counts: float, det: Detector, n_sample: int = 4_000_000,
                      seed: int = 0) -> np.ndarray:
    """A (nearly) noise-free spectrum: ``n_sample`` events scaled to ``n_counts``."""
    h = sample_counts(phase, n_sample, det, np.random.default_rng(seed))
    return h * (n_counts / max(h.sum(), 1.0))


# ------------------------------------------------------------------------------ scenes

LFO = {"La": 20.0, "Fe": 20.0, "O": 60.0}
LFO_DISORDERED = {"La": 19.0, "Fe": 18.0, "O": 63.0}
STO = {"Sr": 20.0, "Ti": 20.0, "O": 60.0}


@dataclass
class Scene:
    labels: np.ndarray  # (H, W) phase index per pixel
    phases: list[Phase]
    names: list[str]


def film_under_cap(n: int = 240, seed: int = 0, thickness_nm: float = 20.0) -> Scene:
    """Cr cap (top), LaFeO3 film with an O-rich amorphous block touching the cap, SrTiO3 substrate.

    Interfaces are rough and not aligned with any chip grid, so chips on them straddle two phases."""
    rng = np.random.default_rng(seed)
    rows, cols = np.mgrid[0:n, 0:n]
    top = 0.25 * n + 3.0 * np.sin(2 * np.pi * cols / 37.0 + rng.uniform(0, 6)) + 1.7
    bottom = 0.68 * n + 2.0 * np.sin(2 * np.pi * cols / 53.0 + rng.uniform(0, 6)) + 0.6
    lab = np.full((n, n), 3, dtype=np.int8)  # substrate
    lab[rows < bottom] = 1  # ordered film
    lab[(rows < bottom) & (rows >= top) & (np.abs(cols - 0.5 * n) < 0.27 * n) & (rows < top + 0.2 * n)] = 2
    lab[rows < top] = 0  # cap
    phases = [Phase({"Cr": 100.0}, DENSITY["Cr"], thickness_nm),
              Phase(LFO, DENSITY["LaFeO3"], thickness_nm),
              Phase(LFO_DISORDERED, DENSITY["amorphous"], thickness_nm, yield_per_px=38.0),
              Phase(STO, DENSITY["SrTiO3"], thickness_nm)]
    return Scene(lab, phases, ["cap", "film_ordered", "film_disordered", "substrate"])


def chip_sums(scene: Scene, chip_px: int, det: Detector, seed: int = 1) -> np.ndarray:
    """EDS sums per chip (n_chips, n_channels), chip_index = row * n_cols + col: every pixel's counts
    are Poisson(yield) photons of its phase."""
    rng = np.random.default_rng(seed)
    frac = chip_fractions(scene, chip_px)
    n_chips = len(frac)
    out = np.zeros((n_chips, det.n_channels))
    for p, phase in enumerate(scene.phases):
        n = rng.poisson(phase.yield_per_px * frac[:, p] * chip_px * chip_px)
        group = np.repeat(np.arange(n_chips), n)
        e, g = sample_events(phase, int(n.sum()), det, rng, group)
        out += _histogram(e, det, g, n_chips)
    return out


def chip_fractions(scene: Scene, chip_px: int) -> np.ndarray:
    """(n_chips, n_phases) share of each phase's pixels in each chip."""
    h, w = scene.labels.shape
    nr, nc = h // chip_px, w // chip_px
    lab = scene.labels[: nr * chip_px, : nc * chip_px]
    tiles = lab.reshape(nr, chip_px, nc, chip_px).swapaxes(1, 2).reshape(nr * nc, -1)
    return np.stack([(tiles == p).mean(axis=1) for p in range(len(scene.phases))], axis=1)
