"""Physical descriptors of segmented regions (preprint section II.B, Figs. 4-5, and section IV.G).

A *region* is the set of chips of one segmentation (``method`` x ``modality``) that carry the same
label. For each region:

- **n_chips**, **area_nm2** = ``n_chips * (chip_px * pixel_size_nm)^2``.
- **composition**: exspy Cliff-Lorimer quantification (:func:`mmlake.eds.quantify_spectrum`) of the
  region's SUMMED spectrum (sum of its chips' EDS sums), as the preprint's section IV.G does ("over
  the sum of all spectra in the cluster") -- not an average of per-chip percents. Every element
  quantified that the session does not declare (the preprint's extraneous list: C, N, Al, Cu, Ga,
  ...) is lumped into ``Extraneous``, so each region's rows add up to 100 at.%. Values are exspy's
  as they come: an element absent from a region gets its fitted noise (a few tenths of an at.%,
  possibly slightly negative; CL is linear, so nothing is clipped). A region whose summed spectrum
  has no counts, or no positive line, gets NULL (NaN) for every element -- no exception.
- **d-spacing**: FFT of the largest square fully inside the region. The square is found on the chip
  grid (:func:`largest_square`: the largest all-ones square of the region's chip mask, a vectorised
  dynamic programme), converted to pixels (``side_chips * chip_px``) and cut from the HAADF image.
  :func:`mmlake.lattice.find_lattice_peak` gives the lattice period (nm) and a width-based
  uncertainty. NULL, with the reason in ``d_spacing_note``, when: the session has no HAADF image;
  the region is a single chip; the square is smaller than :class:`SquareRule` allows (2 chips, 16 px
  and 1.4 nm per side by default: fewer lattice periods do not pin a period, and "no peak" would not
  mean amorphous); the lattice found spans fewer than 3.5 periods of the square; or no lattice peak
  stands above the noise (amorphous).
- **crystallinity**: the fraction (0..1) of the region's chips whose FFT window shows a 2-D lattice
  (the ``fft`` chip encoder's criterion: the runner-up peak in another direction above the noise
  threshold, 48 px window centred on each chip; :func:`chip_crystallinity`). Defined for any region
  size, including single chips; NULL without HAADF. ``lattice_strength`` is the log ratio of the
  square's strongest lattice peak to the lattice threshold (> 0: a lattice was found).

Output: two polars frames (:class:`RegionFrames`) in the lake's ``regions`` and
``region_composition`` layout (``sql/schema.sql``); the role of each region is filled
by :mod:`mmlake.roles`. :func:`describe_session` runs every segmentation of a session, assigns roles
and computes the ordered-vs-disordered shift: the one call a Dagster asset makes.

Labels < 0 mean "unassigned" and form no region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from mmlake.chips import ChipGrid, centred_windows

METHOD_VERSION = "1"
EXTRANEOUS = "Extraneous"


@dataclass(frozen=True)
class SquareRule:
    """When the largest square inside a region is big enough for a d-spacing.

    Measured on the synthetic campaign (random squares inside ordered film and defect domains, 0.035-0.071
    nm pixels): with >= 3.5 lattice periods per side the period's scatter is <= 0.009 nm; with 2.7
    periods the lattice is often missed or mis-indexed (errors up to 0.15 nm). So a square must have
    ``min_chips`` chips, ``min_px`` pixels and ``min_nm`` nm per side (1.4 nm = 3.5 cells of a ~0.4 nm
    perovskite) before an FFT is taken -- below that "no lattice" would not mean amorphous -- and a
    lattice found must fit ``min_periods`` times into the square (catches larger cells).
    """

    min_chips: int = 2
    min_px: int = 16
    min_nm: float = 1.4
    min_periods: float = 3.5

    def __post_init__(self):
        if not isinstance(self.min_chips, (int, np.integer)) or self.min_chips < 1:
            raise ValueError(f"square.min_chips must be an integer >= 1, got {self.min_chips!r}")
        if not isinstance(self.min_px, (int, np.integer)) or self.min_px < 8:
            raise ValueError(f"square.min_px must be an integer >= 8 (FFT), got {self.min_px!r}")
        if not (self.min_nm >= 0 and self.min_periods >= 1):
            raise ValueError(f"square.min_nm must be >= 0 and min_periods >= 1, got {self.min_nm!r}, "
                             f"{self.min_periods!r}")

    def as_dict(self) -> dict:
        return {"min_chips": int(self.min_chips), "min_px": int(self.min_px), "min_nm": float(self.min_nm),
                "min_periods": float(self.min_periods)}


#: the ``fft`` encoder's lattice window (px) used for per-chip crystallinity
CRYSTALLINITY_WINDOW_PX = 48

REGION_SCHEMA: dict[str, Any] = {
    "session_id": pl.Utf8, "method": pl.Utf8, "modality": pl.Utf8, "region": pl.Int32, "role": pl.Utf8,
    "role_source": pl.Utf8, "role_reason": pl.Utf8,
    "n_chips": pl.Int32, "area_nm2": pl.Float64, "eds_counts": pl.Float64,
    "d_spacing_nm": pl.Float64, "d_spacing_unc_nm": pl.Float64, "d_spacing_note": pl.Utf8,
    "lattice_strength": pl.Float64, "crystallinity": pl.Float64,
    "square_px": pl.Int32, "square_row": pl.Int32, "square_col": pl.Int32,
}
COMPOSITION_SCHEMA: dict[str, Any] = {
    "session_id": pl.Utf8, "method": pl.Utf8, "modality": pl.Utf8, "region": pl.Int32,
    "element": pl.Utf8, "atomic_percent": pl.Float64,
}


@dataclass(frozen=True)
class RegionFrames:
    """``regions`` (one row per region) and ``composition`` (one row per region x element)."""

    regions: pl.DataFrame
    composition: pl.DataFrame

    def __iter__(self):
        yield self.regions
        yield self.composition


@dataclass(frozen=True)
class DescriptorTables:
    """Everything :func:`describe_session` produces, keyed like the lake tables."""

    regions: pl.DataFrame
    region_composition: pl.DataFrame
    composition_shift: pl.DataFrame
    params: dict = field(default_factory=dict)  # everything that shaped the numbers, for provenance

    def tables(self) -> dict[str, pl.DataFrame]:
        """``{lake table: frame}`` for ``Lake.replace_partition``."""
        from mmlake.roles import SHIFT_TABLE

        return {"regions": self.regions, "region_composition": self.region_composition,
                SHIFT_TABLE: self.composition_shift}


# ---------------------------------------------------------------------------------------------
# geometry


def largest_square(mask: np.ndarray) -> tuple[int, int, int]:
    """Largest all-True square of a 2-D boolean mask: ``(side, row, col)`` of its top-left cell.

    Vectorised dynamic programme over the side length: ``S_1 = mask``; ``S_{k+1}[i, j] = S_k[i, j]
    & S_k[i+1, j] & S_k[i, j+1] & S_k[i+1, j+1]`` (a (k+1)-square is four overlapping k-squares),
    each step one numpy expression over the whole grid; it stops at the first empty ``S``. Ties go
    to the first top-left cell in row-major (chip_index) order. ``(0, -1, -1)`` for an empty mask.
    """
    m = np.asarray(mask, dtype=bool)
    if m.ndim != 2:
        raise ValueError(f"mask must be 2-D (n_rows, n_cols), got shape {m.shape}")
    if not m.any():
        return 0, -1, -1
    cur, side = m, 1
    while min(cur.shape) > 1:
        nxt = cur[:-1, :-1] & cur[1:, :-1] & cur[:-1, 1:] & cur[1:, 1:]
        if not nxt.any():
            break
        cur, side = nxt, side + 1
    r, c = np.unravel_index(int(np.argmax(cur)), cur.shape)
    return side, int(r), int(c)


def chip_crystallinity(
    grid: ChipGrid,
    haadf: np.ndarray,
    window_px: int = CRYSTALLINITY_WINDOW_PX,
    noise_factor: float = 2.5,
    batch: int = 256,
) -> np.ndarray:
    """Per chip: does its FFT window show a 2-D lattice? float32 (n_chips,) of 0/1.

    The ``fft`` chip encoder's criterion (:func:`mmlake.lattice.crystallinity_stack`: the strongest
    peak at least 20 degrees away from the strongest one beats ``noise_factor`` times the noise
    maximum) on a ``max(window_px, chip_px)`` window centred on each chip, image edges mirrored --
    without importing the encoder package (and torch). Compute once per session and pass it to
    :func:`region_descriptors` for every segmentation.
    """
    from mmlake.lattice import crystallinity_stack

    _, window = centred_windows(haadf, grid, window_px)
    out = np.zeros(grid.n_chips, dtype=np.float32)
    for s in range(0, grid.n_chips, batch):
        win = window(slice(s, s + batch))
        with np.errstate(divide="ignore", invalid="ignore"):  # period of windows without a peak: NaN
            st = crystallinity_stack(win, noise_factor=noise_factor)
        out[s:s + batch] = (st["lattice2d"] - st["log_threshold"]) > 0
    return out


# ---------------------------------------------------------------------------------------------
# one segmentation


def _check_inputs(labels, grid, haadf, eds_sums, pixel_size_nm):
    lab = np.asarray(labels)
    if lab.ndim != 1 or lab.shape[0] != grid.n_chips:
        raise ValueError(f"labels must be 1-D with one label per chip ({grid.n_chips}), got shape {lab.shape}")
    if lab.dtype.kind not in "iu":
        if lab.dtype.kind == "f" and np.all(np.isfinite(lab)) and np.all(lab == np.round(lab)):
            lab = lab.astype(np.int64)
        else:
            raise ValueError(f"labels must be integers, got dtype {lab.dtype}")
    if haadf is not None:
        h = np.asarray(haadf)
        need = (grid.origin_y + grid.n_rows * grid.chip_px, grid.origin_x + grid.n_cols * grid.chip_px)
        if h.ndim != 2 or h.shape[0] < need[0] or h.shape[1] < need[1]:
            raise ValueError(f"haadf must be a 2-D image of at least {need[0]}x{need[1]} px for this grid, "
                             f"got shape {h.shape}")
    if eds_sums is not None:
        e = np.asarray(eds_sums)
        if e.ndim != 2 or e.shape[0] != grid.n_chips:
            raise ValueError(f"eds_sums must be (n_chips={grid.n_chips}, n_channels), got shape {e.shape}")
    if not (isinstance(pixel_size_nm, (int, float, np.floating)) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
    return lab.astype(np.int64)


def _d_spacing(mask2d, n_chips, grid, haadf, pixel_size_nm, square: SquareRule, lattice_kwargs):
    """(d_nm, unc_nm, note, strength_log, square_px, row, col) of one region."""
    side, r0, c0 = largest_square(mask2d)
    p = grid.chip_px
    sq_px = side * p
    sq_nm = sq_px * float(pixel_size_nm)
    if haadf is None:
        return None, None, "no HAADF image in this session", None, sq_px, r0, c0
    if n_chips == 1:
        return (None, None, "single-chip region: no square larger than one chip to take an FFT of",
                None, sq_px, r0, c0)
    if side < square.min_chips or sq_px < square.min_px or sq_nm < square.min_nm - 1e-9:
        return (None, None, f"largest square inside the region is {side}x{side} chips = {sq_px} px = {sq_nm:.2f} nm, "
                            f"below the {square.min_chips} chips / {square.min_px} px / {square.min_nm:g} nm needed "
                            "to resolve a lattice period", None, sq_px, r0, c0)
    from mmlake.lattice import find_lattice_peak

    y0, x0 = grid.origin_y + r0 * p, grid.origin_x + c0 * p
    img = np.asarray(haadf[y0:y0 + sq_px, x0:x0 + sq_px], dtype=np.float64)
    try:
        peak = find_lattice_peak(img, float(pixel_size_nm), **(lattice_kwargs or {}))
    except ValueError as exc:
        return None, None, f"no lattice analysis possible on the {sq_px} px square: {exc}", None, sq_px, r0, c0
    strength = math.log(max(peak.strength, 1e-300)) - math.log(peak.threshold)
    if not peak.is_crystalline:
        return (None, None, f"amorphous: no lattice peak above the noise in the {sq_px} px ({sq_nm:.2f} nm) square "
                            f"(peak/background {peak.strength:.1f} < threshold {peak.threshold:.1f})",
                strength, sq_px, r0, c0)
    periods = sq_px / peak.period_px
    if periods < square.min_periods:
        return (None, None, f"the {sq_px} px square spans only {periods:.1f} periods of its {peak.period_nm:.3f} nm "
                            f"lattice peak (< {square.min_periods:g}): too few for a reliable d-spacing",
                strength, sq_px, r0, c0)
    return peak.period_nm, peak.uncertainty_nm, None, strength, sq_px, r0, c0


def _describe(lab, grid, haadf, eds_sums, pixel_size_nm, class_names, ids, chip_cryst, square, lattice_kwargs):
    """Region rows without composition, the region ids and their summed spectra (or None)."""
    session_id, method, modality = ids
    regions = sorted(int(v) for v in np.unique(lab) if v >= 0)
    chip_area = (grid.chip_px * float(pixel_size_nm)) ** 2
    sums = None
    if eds_sums is not None and regions:
        onehot = (lab[None, :] == np.array(regions)[:, None]).astype(np.float64)
        sums = onehot @ np.asarray(eds_sums, dtype=np.float64)  # (n_regions, C)
    rows = []
    for i, reg in enumerate(regions):
        sel = lab == reg
        n = int(sel.sum())
        d, unc, note, strength, sq_px, r0, c0 = _d_spacing(
            grid.chip_map(sel), n, grid, haadf, pixel_size_nm, square, lattice_kwargs)
        role = str(class_names[reg]) if class_names is not None and 0 <= reg < len(class_names) else None
        rows.append({
            "session_id": session_id, "method": method, "modality": modality, "region": reg,
            "role": role, "role_source": "class_names" if role is not None else None, "role_reason": None,
            "n_chips": n, "area_nm2": n * chip_area,
            "eds_counts": float(sums[i].sum()) if sums is not None else None,
            "d_spacing_nm": d, "d_spacing_unc_nm": unc, "d_spacing_note": note,
            "lattice_strength": strength,
            "crystallinity": float(np.mean(np.asarray(chip_cryst)[sel])) if chip_cryst is not None else None,
            "square_px": sq_px, "square_row": r0, "square_col": c0,
        })
    return rows, regions, sums


def _composition_rows(ids, regions, at, elements) -> list[dict]:
    names = [*elements, EXTRANEOUS]
    out = []
    for i, reg in enumerate(regions):
        for j, el in enumerate(names):
            v = float(at[i, j])
            out.append({"session_id": ids[0], "method": ids[1], "modality": ids[2], "region": reg,
                        "element": el, "atomic_percent": v if np.isfinite(v) else None})
    return out


def _validate_common(grid, haadf, eds_sums, energy, pixel_size_nm, square, chip_cryst):
    if eds_sums is not None and energy is None:
        raise ValueError("energy: give (offset_kev, scale_kev) of the EDS channels with eds_sums")
    if not isinstance(square, SquareRule):
        raise ValueError(f"square must be a SquareRule, got {square!r}")
    if haadf is not None and chip_cryst is None:
        chip_cryst = chip_crystallinity(grid, haadf)
    if chip_cryst is not None and np.asarray(chip_cryst).shape != (grid.n_chips,):
        raise ValueError(f"chip_cryst must be (n_chips={grid.n_chips},), got {np.asarray(chip_cryst).shape}")
    return chip_cryst


def region_descriptors(
    labels: np.ndarray,
    grid: ChipGrid,
    haadf: np.ndarray | None,
    eds_sums: np.ndarray | None,
    energy: tuple[float, float] | None,
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    pixel_size_nm: float,
    class_names: Sequence[str] | None = None,
    *,
    session_id: str = "?",
    method: str = "?",
    modality: str = "?",
    chip_cryst: np.ndarray | None = None,
    energy_resolution_mnka_ev: float = 130.0,
    square: SquareRule = SquareRule(),
    lattice_kwargs: Mapping[str, Any] | None = None,
    quant_kwargs: Mapping[str, Any] | None = None,
) -> RegionFrames:
    """Descriptors of every region of one segmentation (see the module docstring).

    ``labels`` (n_chips,) ints in chip_index order (< 0: unassigned); ``haadf`` the (H, W) image
    the grid was cut from, or None; ``eds_sums`` (n_chips, C) counts, or None; ``energy`` =
    ``(offset_kev, scale_kev)`` of the EDS channels; ``elements`` the session's declared elements;
    ``kfactors`` ``{line: k}`` (None: the default table). ``class_names[label]`` (few-shot, ground
    truth) becomes the region's role; otherwise ``role`` stays NULL until
    :func:`mmlake.roles.assign_roles`. ``chip_cryst``: :func:`chip_crystallinity` of the session
    (computed here when None and there is a HAADF image).
    """
    lab = _check_inputs(labels, grid, haadf, eds_sums, pixel_size_nm)
    chip_cryst = _validate_common(grid, haadf, eds_sums, energy, pixel_size_nm, square, chip_cryst)
    ids = (session_id, method, modality)
    rows, regions, sums = _describe(lab, grid, haadf, eds_sums, pixel_size_nm, class_names, ids, chip_cryst,
                                    square, lattice_kwargs)
    comp_rows = []
    if sums is not None:
        at = quantify_regions(sums, energy, beam_kv, elements, kfactors,
                              energy_resolution_mnka_ev=energy_resolution_mnka_ev, session_id=session_id,
                              **dict(quant_kwargs or {}))
        comp_rows = _composition_rows(ids, regions, at, elements)
    return RegionFrames(pl.DataFrame(rows, schema=REGION_SCHEMA), pl.DataFrame(comp_rows, schema=COMPOSITION_SCHEMA))


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

    The same code path as :func:`mmlake.eds.quantify_spectrum` (``quantify_chips`` with a 1-D
    navigation), all spectra in ONE exspy call: exspy's quantification costs ~2 s per call whatever
    the number of spectra. The linear line fit then shares one set of weights (from the mean
    spectrum) between the spectra, which leaves it unbiased (see tests). A spectrum without counts
    or without a positive line gets NaN everywhere.
    """
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
    at = res.atomic_percent.astype(np.float64)
    declared = set(els)
    sub = np.full((int(has.sum()), len(els) + 1), np.nan)
    for j, el in enumerate(els):
        sub[:, j] = at[:, res.elements.index(el)]
    rest = [i for i, el in enumerate(res.elements) if el not in declared]
    sub[:, -1] = at[:, rest].sum(axis=1) if rest else 0.0
    sub[np.isnan(at).all(axis=1)] = np.nan
    out[has] = sub
    return out


def quantify_region(spectrum: np.ndarray, energy, beam_kv, elements, kfactors, **kwargs) -> dict[str, float]:
    """:func:`quantify_regions` of ONE summed spectrum as ``{element: at.%, ..., "Extraneous": ..}``."""
    row = quantify_regions(np.asarray(spectrum)[None, :], energy, beam_kv, elements, kfactors, **kwargs)[0]
    return {el: float(v) for el, v in zip([*dict.fromkeys(elements), EXTRANEOUS], row)}


# ---------------------------------------------------------------------------------------------
# a whole session


def labels_by_segmentation(labels: pl.DataFrame, n_chips: int) -> dict[tuple[str, str], np.ndarray]:
    """``segment_labels`` rows (method, modality, chip_index, label) -> ``{(method, modality):
    labels (n_chips,)}``; chips without a row get -1 (unassigned)."""
    need = {"method", "modality", "chip_index", "label"}
    if not need <= set(labels.columns):
        raise ValueError(f"labels frame needs columns {sorted(need)}, got {labels.columns}")
    segs: dict[tuple[str, str], np.ndarray] = {}
    for (m, mod), part in labels.group_by(["method", "modality"], maintain_order=True):
        arr = np.full(n_chips, -1, dtype=np.int64)
        idx = part["chip_index"].to_numpy()
        if idx.size and (idx.min() < 0 or idx.max() >= n_chips):
            raise ValueError(f"labels of {m}/{mod}: chip_index outside 0..{n_chips - 1}")
        arr[idx] = part["label"].fill_null(-1).to_numpy()
        segs[(str(m), str(mod))] = arr
    return segs


def class_names_from_runs(runs: pl.DataFrame) -> dict[tuple[str, str], list[str]]:
    """``segment_runs`` rows -> ``{(method, modality): class_names}`` for the labellings that have
    class names (few-shot). Label i is ``class_names[i]`` (0-based here; 1-based in SQL lists)."""
    out = {}
    if runs is None or runs.is_empty() or "class_names" not in runs.columns:
        return out
    for r in runs.iter_rows(named=True):
        if r["class_names"]:
            out[(str(r["method"]), str(r["modality"]))] = [str(c) for c in r["class_names"]]
    return out


def describe_session(
    labels: pl.DataFrame | Mapping[tuple[str, str], np.ndarray],
    grid: ChipGrid,
    haadf: np.ndarray | None,
    eds_sums: np.ndarray | None,
    energy: tuple[float, float] | None,
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    pixel_size_nm: float,
    *,
    session_id: str,
    class_names: Mapping[str, Sequence[str]] | None = None,
    role_overrides: Mapping[str, str] | None = None,
    role_rule=None,
    shift_elements: Sequence[str] = ("La", "Fe", "O"),
    chip_cryst: np.ndarray | None = None,
    energy_resolution_mnka_ev: float = 130.0,
    square: SquareRule = SquareRule(),
    lattice_kwargs: Mapping[str, Any] | None = None,
    quant_kwargs: Mapping[str, Any] | None = None,
) -> DescriptorTables:
    """Descriptors, roles and ordered-vs-disordered shifts of every segmentation of one session.

    ``labels``: the session's ``segment_labels`` rows (columns method, modality, chip_index, label)
    or ``{(method, modality): labels (n_chips,)}``. ``class_names``: ``{method: class names}`` or
    ``{(method, modality): class names}`` for labellings whose labels index named classes (few-shot:
    the support classes in support order, i.e. ``segment_runs.class_names``; ``"truth"``: the
    manifest's truth_classes; see :func:`class_names_from_runs`). ``role_overrides``: the manifest's ``roles:``
    mapping, ``role_rule`` a :class:`mmlake.roles.RoleRule` (see :mod:`mmlake.roles`). Per-chip
    crystallinity is computed once, and every region spectrum of every segmentation is quantified in
    one exspy call (identical chip sets once).
    """
    from mmlake.roles import assign_roles, composition_shift

    segs = labels_by_segmentation(labels, grid.n_chips) if isinstance(labels, pl.DataFrame) else {
        (str(k[0]), str(k[1])): _check_inputs(v, grid, None, None, pixel_size_nm) for k, v in labels.items()}
    for v in segs.values():
        _check_inputs(v, grid, haadf, eds_sums, pixel_size_nm)
    chip_cryst = _validate_common(grid, haadf, eds_sums, energy, pixel_size_nm, square,
                                  chip_cryst if segs else np.zeros(grid.n_chips))
    rows, parts = [], []
    for (m, mod), lab in sorted(segs.items()):
        ids = (session_id, m, mod)
        names = (class_names or {}).get((m, mod), (class_names or {}).get(m))
        r, regions, sums = _describe(np.asarray(lab, dtype=np.int64), grid, haadf, eds_sums, pixel_size_nm,
                                     names, ids, chip_cryst, square, lattice_kwargs)
        rows += r
        parts.append((ids, regions, sums))
    comp_rows = []
    stacks = [s for _, _, s in parts if s is not None and len(s)]
    if stacks:
        allsums = np.concatenate(stacks)
        uniq, inverse = np.unique(allsums, axis=0, return_inverse=True)
        at_u = quantify_regions(uniq, energy, beam_kv, elements, kfactors,
                                energy_resolution_mnka_ev=energy_resolution_mnka_ev, session_id=session_id,
                                **dict(quant_kwargs or {}))
        at_all = at_u[np.asarray(inverse).reshape(-1)]
        k = 0
        for ids, regions, sums in parts:
            if sums is None or not len(sums):
                continue
            comp_rows += _composition_rows(ids, regions, at_all[k:k + len(regions)], elements)
            k += len(regions)
    regions_df = pl.DataFrame(rows, schema=REGION_SCHEMA)
    comp = pl.DataFrame(comp_rows, schema=COMPOSITION_SCHEMA)
    regions_df = assign_roles(regions_df, comp, overrides=role_overrides, rule=role_rule)
    shift = composition_shift(regions_df, comp, elements=shift_elements)
    from mmlake.roles import RoleRule

    params = {
        "method": "region_descriptors", "method_version": METHOD_VERSION,
        "segmentations": [f"{m}/{d}" for m, d in sorted(segs)],
        "square": square.as_dict(), "crystallinity_window_px": CRYSTALLINITY_WINDOW_PX,
        "lattice_kwargs": dict(lattice_kwargs or {}), "quant_kwargs": dict(quant_kwargs or {}),
        "energy_resolution_mnka_ev": float(energy_resolution_mnka_ev),
        "elements": list(elements), "kfactors": dict(kfactors or {}),
        "class_names": {"/".join(k) if isinstance(k, tuple) else str(k): list(v)
                        for k, v in (class_names or {}).items()},
        "role_rule": (role_rule or RoleRule()).as_dict(), "role_overrides": dict(role_overrides or {}),
        "shift_elements": list(shift_elements),
    }
    return DescriptorTables(regions_df, comp, shift, params)


# ---------------------------------------------------------------------------------------------
# from the lake


def _has_table(lake, name: str) -> bool:
    return bool(lake.query("select count(*) as n from information_schema.tables where table_name = ?",
                           [name])["n"][0])


def describe_lake_session(lake, session_id: str, *, include_truth: bool = True, **kwargs) -> DescriptorTables:
    """:func:`describe_session` on what the lake holds for ``session_id``: the ``sessions`` row
    (beam kV, elements, pixel size, detector resolution, manifest k-factors, ``roles:`` and
    ``truth_classes``), the chip grid with its HAADF stack and EDS sums (``chip_grids`` objects), every
    ``segment_labels`` labelling with the class names of ``segment_runs`` (few-shot), and, with
    ``include_truth``, the ground truth (``chips.truth_label``) as method/modality ``truth/truth`` named
    by ``truth_classes`` (unless segment_labels already holds a ``truth/truth`` labelling). Missing
    tables or outputs mean fewer labellings, never an error. Keyword arguments go to :func:`describe_session` (``shift_elements``, ``role_rule``, ``square``, ...)."""
    from mmlake.features import load_grid, session_row

    sess = session_row(lake, session_id)
    grid_row, grid = load_grid(lake, session_id)
    manifest = sess.get("manifest") or {}
    haadf = None
    if grid_row.get("haadf_stack_sha"):
        haadf = grid.untile(np.asarray(lake.get_array(grid_row["haadf_stack_sha"]), dtype=np.float32))
    sums = lake.get_array(grid_row["eds_sums_sha"]) if grid_row.get("eds_sums_sha") else None
    energy = ((float(grid_row["energy_offset_kev"]), float(grid_row["energy_scale_kev"]))
              if sums is not None else None)
    frames = []
    class_names: dict = {}
    if _has_table(lake, "segment_labels"):
        frames.append(lake.query("select method, modality, chip_index, label from segment_labels "
                                 "where session_id = ? order by method, modality, chip_index", [session_id]))
    if _has_table(lake, "segment_runs"):
        class_names.update(class_names_from_runs(lake.query(
            "select method, modality, class_names from segment_runs where session_id = ?", [session_id])))
    if include_truth:
        truth = lake.query("select chip_index, truth_label from chips where session_id = ? "
                           "and truth_label is not null order by chip_index", [session_id])
        have = any(len(f.filter((pl.col("method") == "truth") & (pl.col("modality") == "truth"))) for f in frames)
        if len(truth) == grid.n_chips and not have:
            frames.append(pl.DataFrame({"method": "truth", "modality": "truth",
                                        "chip_index": truth["chip_index"], "label": truth["truth_label"]}))
    if manifest.get("truth_classes"):  # every "truth" labelling is named by the manifest's classes
        class_names.setdefault("truth", [str(c) for c in manifest["truth_classes"]])
    labels = (pl.concat([f.select(pl.col("method").cast(pl.Utf8), pl.col("modality").cast(pl.Utf8),
                                  pl.col("chip_index").cast(pl.Int64), pl.col("label").cast(pl.Int64))
                         for f in frames]) if frames else
              pl.DataFrame(schema={"method": pl.Utf8, "modality": pl.Utf8, "chip_index": pl.Int64, "label": pl.Int64}))
    kwargs.setdefault("role_overrides", manifest.get("roles") or None)
    kwargs.setdefault("energy_resolution_mnka_ev", float(sess.get("eds_resolution_mnka_ev") or 130.0))
    return describe_session(
        labels, grid, haadf, sums, energy, float(sess.get("beam_kv") or 300.0), list(sess.get("elements") or []),
        manifest.get("kfactors") or None, float(grid_row.get("pixel_size_nm") or sess.get("pixel_size_nm")),
        session_id=session_id, class_names=class_names, **kwargs)
