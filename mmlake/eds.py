"""EDS chip features: summed spectra and Cliff-Lorimer composition through exspy.

Per chip (docs/conventions.md: EDS chip sums are float32 ``(n_chips, n_channels)``, channel energy
``offset + scale * i`` keV):

(a) the summed spectrum, optionally cropped to ``>= 0.2 keV`` (as the preprint's public code,
    ``isig['0.2:']``) and rebinned (:func:`chip_spectra`);
(b) Cliff-Lorimer atomic percents (:func:`quantify_chips`), vectorised by treating the chip grid as
    the navigation space of one exspy ``EDSTEMSpectrum`` of shape ``(n_rows, n_cols | channels)``.
    The same code path quantifies ONE summed spectrum (a region; navigation of size 1):
    :func:`quantify_spectrum`.

Elements: the session's declared elements plus the preprint's extraneous list (Al, C, Cr, Cu, Fe,
Ga, La, N, O, Pt, Sr, Ti: ``EXTRANEOUS_ELEMENTS``) where the element has a line with a k-factor
inside the spectrum's energy range. k-factors are keyed by line (``Fe_Ka``): the session's (manifest
``kfactors``) first, else the default table ``mmlake/data/kfactors.yaml`` (nominal values; see that
file for where they come from).

Line intensities (``intensity_method``):

- ``"fit"`` (default): a vectorised weighted linear least-squares fit of every chip at once. Model =
  for each element, the family of its quantified line (all lines of the same shell letter, as
  exspy's ``EDSModel.add_family_lines``; energies and relative weights from exspy's database;
  Gaussian FWHM from the detector resolution at Mn Ka with exspy's Fiori-Newbury scaling, binned
  exactly over each channel) with one free area per element, plus a smooth background (cubic
  B-splines with knots spaced ``max(0.25 E, 2.5 FWHM(E))``: the continuum changes on the scale of E
  itself, and knots never come closer than 2.5 FWHM so the background cannot absorb a peak; on the
  synthetic spectra, noise-free, this leaves <= 0.15 at.% model bias in the oxides and 0.6 at.% in a
  pure Pt cap, where the detector's low-energy cut-off is steepest relative to the lines). The
  design matrix is shared, so the fit of 2601 chips is one ``lstsq`` call. The quantified line's
  intensity is its fitted area. This is the linear equivalent of the model fit (Gaussian families
  + polynomial background) the preprint's public code ran per pixel with ``multifit``.
  ``families="all"`` adds the element's other shells (e.g. Fe L, La M) as free nuisance terms: use
  it for real spectra where those lines exist (synthetic sessions emit only the quantified family).
- ``"windows"``: exspy's ``estimate_background_windows`` + ``get_lines_intensity(
  background_windows=...)``. Kept for comparison: on LaFeO3/SrTiO3 with a Cr or Pt cap the
  overlaps bias it far beyond 2 at.% (La_Lb2 at 5.38 keV sits inside the Cr_Ka window at 5.41 keV,
  Ti_Ka at 4.51 keV leaks into the La_La window at 4.65 keV, Pt_Ll at 8.27 keV into Cu_Ka, Pt_La into
  Ga_Ka); see tests/test_eds.py and the lead's README for the figures.

Quantification is exspy's ``quantification(intensities, method="CL", factors=..., composition_units=
"atomic")`` with ``navigation_mask=None`` (exspy's default vacuum mask would zero low-count chips
and close holes morphologically). exspy returns lines in ALPHABETICAL order; k-factors are always
matched by the line name each intensity signal carries, never by position.

Negative fitted intensities (an absent element's noise) are kept by default (``clip_negative=
False``): CL is linear in the intensities, so averages over chips stay unbiased; clipping would add
a positive bias of ~0.4 sigma per absent element. A chip with no counts, or with no positive line
intensity, gets a NaN row (stored as NULL), without warnings.
"""

from __future__ import annotations

import functools
import math
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Mapping, Sequence

import numpy as np

METHOD_VERSION = "1"
#: Elements the preprint quantified in every chip (Section IV.C), besides the declared ones.
EXTRANEOUS_ELEMENTS: tuple[str, ...] = ("Al", "C", "Cr", "Cu", "Fe", "Ga", "La", "N", "O", "Pt", "Sr", "Ti")
EXTRANEOUS_LABEL = "Extraneous"
_KFACTOR_FILE = Path(__file__).parent / "data" / "kfactors.yaml"


# ---------------------------------------------------------------------------------------------
# errors


def _fail(session: str | None, msg: str) -> Exception:
    if session is not None:
        from mmlake.errors import SessionError

        return SessionError(session, msg)
    return ValueError(msg)


# ---------------------------------------------------------------------------------------------
# X-ray line database (exspy)


@functools.lru_cache(maxsize=None)
def _elements_db() -> dict:
    from exspy.material import elements

    return {k: elements[k].as_dictionary() for k in elements.keys()}


def known_element(symbol: str) -> bool:
    return isinstance(symbol, str) and symbol in _elements_db()


def element_lines(element: str) -> dict[str, tuple[float, float]]:
    """``{line_name: (energy_keV, weight)}`` of an element from exspy's database."""
    db = _elements_db()[element]
    lines = db.get("Atomic_properties", {}).get("Xray_lines", {})  # H, He, Li have none
    return {f"{element}_{ln}": (float(p["energy (keV)"]), float(p["weight"])) for ln, p in lines.items()}


def line_energy(line: str) -> float:
    el = line.split("_", 1)[0]
    return element_lines(el)[line][0]


def line_family(line: str) -> list[tuple[str, float, float]]:
    """(line, energy keV, weight relative to ``line``) for every line of ``line``'s shell (the shell
    letter contained in the line name, as exspy's ``EDSModel.add_family_lines``)."""
    el, ln = line.split("_", 1)
    lines = element_lines(el)
    w0 = lines[line][1]
    return sorted(
        ((name, e, w / w0) for name, (e, w) in lines.items() if ln[0] in name.split("_", 1)[1]),
        key=lambda t: t[1],
    )


def fwhm_kev(energy_kev, resolution_mnka_ev: float = 130.0):
    """Detector FWHM (keV) at ``energy_kev`` from the FWHM at Mn Ka (eV): Fiori & Newbury, as
    exspy's ``get_FWHM_at_Energy``: FWHM^2 = 2.5 (E - E_MnKa)[eV] + FWHM_MnKa^2."""
    e_ref = line_energy("Mn_Ka")
    e = np.asarray(energy_kev, dtype=float)
    return np.sqrt(np.maximum(2.5 * (e - e_ref) * 1000.0 + resolution_mnka_ev**2, 1.0)) / 1000.0


# ---------------------------------------------------------------------------------------------
# k-factor tables and line selection


@dataclass(frozen=True)
class KFactorTable:
    name: str
    description: str
    kfactors: Mapping[str, float]
    preferred_lines: Mapping[str, tuple[str, ...]]


@functools.lru_cache(maxsize=None)
def load_kfactor_table(name: str | None = None) -> KFactorTable:
    """A table of ``mmlake/data/kfactors.yaml`` (``None``: the file's ``default_table``)."""
    import yaml

    raw = yaml.safe_load(_KFACTOR_FILE.read_text())
    name = name or raw["default_table"]
    if name not in raw["tables"]:
        raise ValueError(f"kfactor_table {name!r} not in {_KFACTOR_FILE.name}; available: {sorted(raw['tables'])}")
    t = raw["tables"][name]
    return KFactorTable(
        name=name,
        description=str(t.get("description", "")),
        kfactors={str(k): float(v) for k, v in t["kfactors"].items()},
        preferred_lines={str(k): tuple(v) for k, v in t["preferred_lines"].items()},
    )


@dataclass(frozen=True)
class LineSetup:
    """Which line quantifies which element, with which k-factor. Everything in exspy's (alphabetical
    by line) order."""

    lines: tuple[str, ...]
    elements: tuple[str, ...]
    kfactors: tuple[float, ...]
    kfactor_source: tuple[str, ...]  # "session" or "table:<name>" per line
    declared: tuple[str, ...]  # the session's elements (all quantified)
    skipped: Mapping[str, str] = field(default_factory=dict)  # extraneous element -> reason
    energy_range_kev: tuple[float, float] = (0.0, 0.0)

    def kfactor(self, line: str) -> float:
        return self.kfactors[self.lines.index(line)]

    def as_dict(self) -> dict:
        return {
            "lines": list(self.lines),
            "elements": list(self.elements),
            "kfactors": {ln: k for ln, k in zip(self.lines, self.kfactors)},
            "kfactor_source": {ln: s for ln, s in zip(self.lines, self.kfactor_source)},
            "declared": list(self.declared),
            "skipped": dict(self.skipped),
            "energy_range_kev": list(self.energy_range_kev),
        }


def resolve_lines(
    elements: Sequence[str],
    *,
    energy_range_kev: tuple[float, float],
    kfactors: Mapping[str, float] | None = None,
    kfactor_table: str | None = None,
    include_extraneous: bool = True,
    session: str | None = None,
) -> LineSetup:
    """Choose the quantified line and k-factor of each element.

    Declared ``elements`` must all be quantifiable (known symbol, a line with a k-factor inside
    ``energy_range_kev``); otherwise an error names the element and says what to do. Extraneous
    elements (``EXTRANEOUS_ELEMENTS``) are added where they have such a line, skipped (with the
    reason in ``skipped``) where not.
    """
    if isinstance(elements, str) or not all(isinstance(e, str) for e in elements):
        raise ValueError(f"elements must be a list of element symbols, got {elements!r}")
    lo, hi = float(energy_range_kev[0]), float(energy_range_kev[1])
    session_kf = {str(k): float(v) for k, v in (kfactors or {}).items()}
    for ln, v in session_kf.items():
        el = ln.split("_", 1)[0]
        if not known_element(el) or ln not in element_lines(el):
            raise _fail(session, f"kfactors: {ln!r} is not an X-ray line exspy knows (use names like "
                                 "Fe_Ka, La_La, O_Ka)")
        if not (v > 0 and math.isfinite(v)):
            raise _fail(session, f"kfactors: {ln} must be a positive number, got {v!r}")
    table = load_kfactor_table(kfactor_table) if kfactor_table != "none" else None
    declared = list(dict.fromkeys(elements))
    unknown = [e for e in declared if not known_element(e)]
    if unknown:
        raise _fail(session, f"unknown element symbol(s) {unknown}: use chemical symbols such as 'Fe', "
                             "'La', 'O' in the session's elements")

    def choose(el: str) -> tuple[str, float, str] | str:
        """(line, k, source) or the reason it cannot be quantified."""
        in_range = lambda ln: lo < line_energy(ln) < hi  # noqa: E731
        pref = list(table.preferred_lines.get(el, ())) if table else []
        own = [ln for ln in session_kf if ln.split("_", 1)[0] == el]
        own.sort(key=lambda ln: (pref.index(ln) if ln in pref else len(pref), ln))
        for ln in own:
            if in_range(ln):
                return ln, session_kf[ln], "session"
        if own:
            return (f"its session k-factor line(s) {own} lie outside the spectrum's energy range "
                    f"{lo:g}-{hi:g} keV")
        cands = [ln for ln in pref if table and ln in table.kfactors]
        for ln in cands:
            if in_range(ln):
                return ln, table.kfactors[ln], f"table:{table.name}"
        lines_in = sorted(ln for ln, (e, _) in element_lines(el).items() if lo < e < hi)
        if not lines_in:
            return f"no X-ray line of {el} lies inside the spectrum's energy range {lo:g}-{hi:g} keV"
        if cands:
            return (f"the k-factor table's lines for {el} {cands} lie outside the energy range "
                    f"{lo:g}-{hi:g} keV")
        return f"no k-factor for any line of {el} (lines in range: {lines_in})"

    chosen: dict[str, tuple[str, float, str]] = {}
    skipped: dict[str, str] = {}
    for el in declared:
        r = choose(el)
        if isinstance(r, str):
            raise _fail(session, f"element {el} cannot be quantified: {r}. Add its k-factor to "
                                 f"session.yaml (kfactors: {{{el}_Ka: ...}} or the line you use), or "
                                 f"remove {el} from the session's elements")
        chosen[el] = r
    if include_extraneous:
        for el in EXTRANEOUS_ELEMENTS:
            if el in chosen:
                continue
            r = choose(el)
            if isinstance(r, str):
                skipped[el] = r
            else:
                chosen[el] = r
    if not chosen:
        raise _fail(session, "no element to quantify: declare the session's elements")
    order = sorted(chosen, key=lambda e: chosen[e][0])  # exspy order: alphabetical by line
    return LineSetup(
        lines=tuple(chosen[e][0] for e in order),
        elements=tuple(order),
        kfactors=tuple(chosen[e][1] for e in order),
        kfactor_source=tuple(chosen[e][2] for e in order),
        declared=tuple(declared),
        skipped=skipped,
        energy_range_kev=(lo, hi),
    )


# ---------------------------------------------------------------------------------------------
# spectra


def chip_spectra(
    sums: np.ndarray,
    energy_offset_kev: float,
    energy_scale_kev: float,
    *,
    min_energy_kev: float | None = 0.2,
    max_energy_kev: float | None = None,
    rebin: int = 1,
) -> tuple[np.ndarray, float, float]:
    """Chip sums ``(n, C)`` -> ``(spectra float32 (n, C'), offset_kev, scale_kev)``: channels below
    ``min_energy_kev`` / above ``max_energy_kev`` dropped, then ``rebin`` channels summed (counts
    are kept: a rebinned channel holds the sum; the new channel's energy is its first channel's
    energy plus half the extra width, i.e. offset + (rebin - 1) / 2 * scale)."""
    a = np.asarray(sums)
    if a.ndim != 2:
        raise ValueError(f"sums must be (n_chips, n_channels), got shape {a.shape}")
    if not energy_scale_kev > 0:
        raise ValueError(f"energy_scale_kev must be > 0, got {energy_scale_kev!r}")
    if not isinstance(rebin, (int, np.integer)) or rebin < 1:
        raise ValueError(f"rebin must be a positive integer, got {rebin!r}")
    n_ch = a.shape[1]
    i0 = 0 if min_energy_kev is None else max(0, math.ceil((min_energy_kev - energy_offset_kev) / energy_scale_kev - 1e-9))
    i1 = n_ch if max_energy_kev is None else min(n_ch, math.floor((max_energy_kev - energy_offset_kev) / energy_scale_kev + 1e-9) + 1)
    if i1 - i0 < max(rebin, 2):
        raise ValueError(
            f"energy crop {min_energy_kev}-{max_energy_kev} keV leaves {max(0, i1 - i0)} channels of the "
            f"{energy_offset_kev:g} + {energy_scale_kev:g} * i keV axis"
        )
    out = a[:, i0:i1].astype(np.float32, copy=False)
    off = energy_offset_kev + i0 * energy_scale_kev
    if rebin > 1:
        m = (out.shape[1] // rebin) * rebin
        out = out[:, :m].reshape(len(out), m // rebin, rebin).sum(axis=2, dtype=np.float64).astype(np.float32)
        off = off + (rebin - 1) / 2 * energy_scale_kev
    return np.ascontiguousarray(out), float(off), float(energy_scale_kev * rebin)


def _signal(data: np.ndarray, offset: float, scale: float, beam_kev: float, res_ev: float,
            setup: LineSetup):
    """An exspy EDSTEMSpectrum, navigation = chip grid (or one spectrum), energy axis in keV."""
    from exspy.signals import EDSTEMSpectrum

    nav = data.shape[:-1]
    names = ("chip_row", "chip_col") if len(nav) == 2 else ("chip",)
    axes = [{"name": nm, "units": "chip", "scale": 1.0, "offset": 0.0, "size": sz, "navigate": True}
            for nm, sz in zip(names, nav)]
    axes.append({"name": "Energy", "units": "keV", "scale": scale, "offset": offset,
                 "size": data.shape[-1], "navigate": False})
    s = EDSTEMSpectrum(data, axes=axes)
    s.metadata.Signal.signal_type = "EDS_TEM"
    s.metadata.set_item("Acquisition_instrument.TEM.beam_energy", float(beam_kev))
    s.metadata.set_item("Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa", float(res_ev))
    s.metadata.set_item("Sample.elements", sorted(setup.elements))
    s.metadata.set_item("Sample.xray_lines", list(setup.lines))
    return s


# ---------------------------------------------------------------------------------------------
# line intensities


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


def design_matrix(
    energies: np.ndarray,
    scale: float,
    setup: LineSetup,
    *,
    resolution_mnka_ev: float,
    beam_energy_kev: float,
    families: str = "quantified",
) -> tuple[np.ndarray, list[str]]:
    """Columns: one per quantified line (its whole family, unit area of the quantified line), then
    (``families="all"``) the elements' other shells, then cubic B-spline background terms."""
    from scipy.interpolate import BSpline

    if families not in ("quantified", "all"):
        raise ValueError(f"families must be 'quantified' or 'all', got {families!r}")
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

    for ln in setup.lines:
        cols.append(family_column(line_family(ln)))
        names.append(ln)
    if families == "all":
        for ln in setup.lines:
            el, q = ln.split("_", 1)
            shells = {name.split("_", 1)[1][0] for name in element_lines(el)} - {q[0]}
            for sh in sorted(shells):
                members = [(n, en, w) for n, (en, w) in element_lines(el).items()
                           if sh in n.split("_", 1)[1] and lo < en < hi]
                if not members:
                    continue
                wmax = max(w for _, _, w in members)
                col = family_column([(n, en, w / wmax) for n, en, w in members])
                if col.sum() > 1e-3:
                    cols.append(col)
                    names.append(f"{el}_{sh}*")
    knots = _spline_knots(float(e[0]), float(e[-1]), resolution_mnka_ev)
    t = np.concatenate([[knots[0]] * 3, knots, [knots[-1]] * 3])
    B = BSpline.design_matrix(np.clip(e, knots[0], knots[-1]), t, 3).toarray()
    for j in range(B.shape[1]):
        cols.append(B[:, j])
        names.append(f"bg{j}")
    return np.stack(cols, axis=1), names


def fit_line_intensities(
    spectra: np.ndarray,
    offset: float,
    scale: float,
    setup: LineSetup,
    *,
    resolution_mnka_ev: float = 130.0,
    beam_energy_kev: float = 300.0,
    families: str = "quantified",
) -> np.ndarray:
    """Areas ``(n, n_lines)`` of the quantified lines (``setup.lines`` order) by one weighted linear
    least-squares fit shared by all spectra (weights 1/sqrt of the mean spectrum, floored at 1
    count: Poisson-like, identical for every chip so the matrix is factorised once)."""
    y = np.asarray(spectra, dtype=np.float64)
    e = offset + scale * np.arange(y.shape[1])
    A, _ = design_matrix(e, scale, setup, resolution_mnka_ev=resolution_mnka_ev,
                         beam_energy_kev=beam_energy_kev, families=families)
    has = y.sum(axis=1) > 0
    mean = y[has].mean(axis=0) if has.any() else np.ones(y.shape[1])
    w = 1.0 / np.sqrt(np.maximum(mean, 1.0))
    coef, *_ = np.linalg.lstsq(A * w[:, None], (y * w[None, :]).T, rcond=None)
    return coef[: len(setup.lines)].T


def _window_intensities(s, setup: LineSetup) -> list:
    ax = s.axes_manager.signal_axes[0]
    lo, hi = ax.low_value, ax.high_value
    bw = s.estimate_background_windows(line_width=[2.0, 2.0], windows_width=1.0, xray_lines=list(setup.lines))
    bw = np.clip(bw, lo, hi)
    return s.get_lines_intensity(xray_lines=list(setup.lines), background_windows=bw)


# ---------------------------------------------------------------------------------------------
# Cliff-Lorimer


@dataclass
class CLResult:
    """Per-chip composition. ``atomic_percent`` rows are NaN where a chip has no counts."""

    elements: tuple[str, ...]
    lines: tuple[str, ...]
    atomic_percent: np.ndarray  # float32 (n, n_elements), element order = self.elements
    intensities: np.ndarray  # float32 (n, n_elements): background-subtracted line areas
    total_counts: np.ndarray  # float32 (n,) counts in the quantified energy range
    setup: LineSetup
    params: dict

    def column(self, element: str) -> np.ndarray:
        return self.atomic_percent[:, self.elements.index(element)]

    def as_columns(self, prefix: str = "at_pct_") -> dict[str, np.ndarray]:
        return {f"{prefix}{el}": self.atomic_percent[:, i] for i, el in enumerate(self.elements)}

    def provenance(self) -> dict:
        return {"method": "exspy_cliff_lorimer", "method_version": METHOD_VERSION, **self.params,
                "setup": self.setup.as_dict()}


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
    families: str = "quantified",
    clip_negative: bool = False,
    session: str | None = None,
) -> CLResult:
    """Cliff-Lorimer atomic % of every chip (see the module docstring).

    ``sums`` ``(n, C)`` counts; ``grid`` ``(n_rows, n_cols)`` with ``n_rows * n_cols == n`` makes the
    exspy navigation space the chip grid (chip_index = row * n_cols + col); None: a 1-D navigation.
    ``energy_resolution_mnka_ev`` is the detector FWHM at Mn Ka (the session's EDS metadata
    ``Acquisition_instrument.TEM.Detector.EDS.energy_resolution_MnKa``; exspy's default 130 eV).
    ``kfactors``: the session's k-factors by line (they win); ``kfactor_table``: a table of
    ``mmlake/data/kfactors.yaml`` (None: its default; ``"none"``: session k-factors only).
    Errors (unknown element, no line in range, missing k-factor) are ``SessionError`` naming
    ``session`` when it is given, else ``ValueError``.
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
    if grid is not None:
        if len(grid) != 2 or int(grid[0]) * int(grid[1]) != n:
            raise ValueError(f"grid {grid!r} does not hold {n} chips (need n_rows * n_cols == n)")
    hi = min(off + sc * (n_ch - 1), beam_energy_kev)
    setup = resolve_lines(elements, energy_range_kev=(off, hi), kfactors=kfactors,
                          kfactor_table=kfactor_table, include_extraneous=include_extraneous,
                          session=session)
    total = spectra.sum(axis=1, dtype=np.float64)
    m = len(setup.lines)

    data = spectra.reshape(*(tuple(int(g) for g in grid) if grid is not None else (n,)), n_ch)
    s = _signal(data, off, sc, beam_energy_kev, energy_resolution_mnka_ev, setup)
    with warnings.catch_warnings(), np.errstate(all="ignore"), _no_progressbar():
        warnings.simplefilter("ignore")
        if intensity_method == "windows":
            ints = _window_intensities(s, setup)
            by_line = {sig.metadata.Sample.xray_lines[0]: np.asarray(sig.data, dtype=np.float64).reshape(n)
                       for sig in ints}
            I = np.stack([by_line[ln] for ln in setup.lines], axis=1)
        else:
            I = fit_line_intensities(spectra, off, sc, setup, resolution_mnka_ev=energy_resolution_mnka_ev,
                                     beam_energy_kev=beam_energy_kev, families=families)
        if clip_negative:
            I = np.maximum(I, 0.0)
        valid = (total > 0) & np.any(I > 0, axis=1)
        at = np.full((n, m), np.nan)
        if m == 1:
            at[valid, 0] = 100.0
        elif valid.any():
            at[valid] = _cliff_lorimer(s, setup, I, valid, grid)
        # a chip whose fitted line intensities are all noise (e.g. a handful of counts) can come back
        # all-zero from exspy: that is no composition, so NULL like an empty chip
        at[~np.isclose(np.nansum(at, axis=1), 100.0, atol=0.5)] = np.nan
    params = {
        "intensity_method": intensity_method,
        "families": families,
        "clip_negative": bool(clip_negative),
        "min_energy_kev": min_energy_kev,
        "beam_energy_kev": float(beam_energy_kev),
        "energy_resolution_mnka_ev": float(energy_resolution_mnka_ev),
        "kfactor_table": load_kfactor_table(kfactor_table).name if kfactor_table != "none" else None,
    }
    return CLResult(setup.elements, setup.lines, at.astype(np.float32), I.astype(np.float32),
                    total.astype(np.float32), setup, params)


class _no_progressbar:
    """HyperSpy's global progress-bar preference off for the duration (windowed integration prints
    bars otherwise); restored afterwards."""

    def __enter__(self):
        from hyperspy.defaults_parser import preferences

        self._prev = preferences.General.show_progressbar
        preferences.General.show_progressbar = False

    def __exit__(self, *exc):
        from hyperspy.defaults_parser import preferences

        preferences.General.show_progressbar = self._prev
        return False


def _cliff_lorimer(s, setup: LineSetup, I: np.ndarray, valid: np.ndarray, grid) -> np.ndarray:
    """exspy quantification of the given intensities; returns (n_valid, m) atomic %."""
    from hyperspy.signals import BaseSignal

    n = I.shape[0]
    nav_shape = tuple(int(g) for g in grid) if grid is not None else (n,)
    # Intensity signals as exspy builds them (navigation-only signals carrying their line name),
    # deliberately handed over in REVERSE alphabetical order: matching by name must not care.
    ints = []
    for j in reversed(range(len(setup.lines))):
        data = np.where(valid, I[:, j], 0.0).reshape(nav_shape)
        sig = BaseSignal(data).transpose(signal_axes=[])
        el = setup.elements[j]
        sig.metadata.General.title = f"X-ray line intensity of {setup.lines[j]}"
        sig.metadata.set_item("Sample.elements", [el])
        sig.metadata.set_item("Sample.xray_lines", [setup.lines[j]])
        ints.append(sig)
    factors = [setup.kfactor(sig.metadata.Sample.xray_lines[0]) for sig in ints]
    comp = s.quantification(ints, method="CL", factors=factors, composition_units="atomic",
                            navigation_mask=None, plot_result=False, show_progressbar=False)
    out = np.full((n, len(setup.lines)), np.nan)
    for c in comp:
        j = setup.lines.index(c.metadata.Sample.xray_lines[0])
        out[:, j] = np.asarray(c.data, dtype=np.float64).reshape(n)
    return out[valid]


def quantify_spectrum(
    spectrum: np.ndarray,
    energy_offset_kev: float,
    energy_scale_kev: float,
    elements: Sequence[str],
    *,
    lump_extraneous: bool = True,
    **kwargs,
) -> dict[str, float]:
    """Composition (at.%) of ONE summed spectrum (e.g. a segmented region), through the same code
    path as :func:`quantify_chips` (a navigation of size 1).

    Returns ``{element: at.%}`` for the declared ``elements``; the undeclared extraneous elements
    are summed into ``"Extraneous"`` (``lump_extraneous``) so the values add up to 100, or listed
    individually. All values NaN when the spectrum has no counts.
    """
    a = np.asarray(spectrum)
    if a.ndim != 1:
        raise ValueError(f"spectrum must be 1-D (n_channels,), got shape {a.shape}")
    res = quantify_chips(a[None, :], energy_offset_kev, energy_scale_kev, elements, grid=None, **kwargs)
    row = res.atomic_percent[0].astype(float)
    declared = set(res.setup.declared)
    out = {el: float(row[i]) for i, el in enumerate(res.elements) if el in declared}
    rest = {el: float(row[i]) for i, el in enumerate(res.elements) if el not in declared}
    if lump_extraneous:
        out[EXTRANEOUS_LABEL] = float(sum(rest.values())) if rest else 0.0
        if np.isnan(row).all():
            out[EXTRANEOUS_LABEL] = float("nan")
    else:
        out.update(rest)
    return out
