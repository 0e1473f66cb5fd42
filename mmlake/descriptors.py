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
  the region is a single chip; the square is smaller than ``min_square_chips`` chips or
  ``min_square_px`` pixels per side (too few lattice periods for a period); or no lattice peak
  stands above the noise (amorphous).
- **crystallinity**: the fraction (0..1) of the region's chips whose FFT window shows a 2-D lattice
  (the ``fft`` chip encoder's criterion: the runner-up peak in another direction above the noise
  threshold, 48 px window centred on each chip; :func:`chip_crystallinity`). Defined for any region
  size, including single chips; NULL without HAADF. ``lattice_strength`` is the log ratio of the
  square's strongest lattice peak to the lattice threshold (> 0: a lattice was found).

Output: two polars frames (:class:`RegionFrames`) in the lake's ``regions`` and
``region_composition`` layout (``sql/descriptors_schema.sql``); the role of each region is filled
by :mod:`mmlake.roles`. :func:`describe_session` runs every segmentation of a session, assigns roles
and computes the ordered-vs-disordered shift: the one call a Dagster asset makes.

Labels < 0 mean "unassigned" and form no region.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Mapping, Sequence

import numpy as np
import polars as pl

from mmlake.chips import ChipGrid

METHOD_VERSION = "1"
EXTRANEOUS = "Extraneous"
#: default minimum square for a d-spacing: 2 chips and 24 px per side (>= ~3 periods of 0.4 nm at
#: 0.05 nm/px). Below that the FFT's frequency resolution cannot pin a period to 0.01 nm.
MIN_SQUARE_PX = 24
MIN_SQUARE_CHIPS = 2
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


def untile(stack: np.ndarray, grid: ChipGrid) -> np.ndarray:
    """Inverse of :meth:`ChipGrid.tiles`: ``(n_chips, p, p)`` -> ``(n_rows * p, n_cols * p)``."""
    p = grid.chip_px
    a = np.asarray(stack)
    if a.shape != (grid.n_chips, p, p):
        raise ValueError(f"stack must be (n_chips, chip_px, chip_px) = {(grid.n_chips, p, p)}, got {a.shape}")
    return a.reshape(grid.n_rows, grid.n_cols, p, p).swapaxes(1, 2).reshape(grid.n_rows * p, grid.n_cols * p)


def chip_crystallinity(grid: ChipGrid, haadf: np.ndarray, window_px: int = CRYSTALLINITY_WINDOW_PX) -> np.ndarray:
    """Per chip: does its FFT window show a 2-D lattice? float32 (n_chips,) of 0/1.

    The ``fft`` encoder's crystallinity feature (> 0 = lattice) on a ``max(window_px, chip_px)``
    window centred on each chip. Compute once per session and pass it to
    :func:`region_descriptors` for every segmentation.
    """
    from mmlake.encoders.fft import FFTEncoder

    img = grid.crop(np.asarray(haadf, dtype=np.float32))
    enc = FFTEncoder(window_px=window_px)
    feats = enc.encode(grid.tiles(img), image=img)
    return FFTEncoder.is_crystalline(feats).astype(np.float32)


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


def _d_spacing(mask2d, n_chips, grid, haadf, pixel_size_nm, min_square_px, min_square_chips, lattice_kwargs):
    """(d_nm, unc_nm, note, strength_log, square_px, row, col) of one region."""
    side, r0, c0 = largest_square(mask2d)
    p = grid.chip_px
    sq_px = side * p
    if haadf is None:
        return None, None, "no HAADF image in this session", None, sq_px, r0, c0
    if n_chips == 1:
        return (None, None, "single-chip region: no square larger than one chip to take an FFT of",
                None, sq_px, r0, c0)
    if side < min_square_chips or sq_px < min_square_px:
        return (None, None, f"largest square inside the region is {side}x{side} chips = {sq_px} px, below "
                            f"the {max(min_square_px, min_square_chips * p)} px needed to resolve a lattice period",
                None, sq_px, r0, c0)
    from mmlake.lattice import find_lattice_peak

    y0, x0 = grid.origin_y + r0 * p, grid.origin_x + c0 * p
    img = np.asarray(haadf[y0:y0 + sq_px, x0:x0 + sq_px], dtype=np.float64)
    try:
        peak = find_lattice_peak(img, float(pixel_size_nm), **(lattice_kwargs or {}))
    except ValueError as exc:
        return None, None, f"no lattice analysis possible on the {sq_px} px square: {exc}", None, sq_px, r0, c0
    strength = math.log(max(peak.strength, 1e-300)) - math.log(peak.threshold)
    if not peak.is_crystalline:
        return (None, None, f"amorphous: no lattice peak above the noise in the {sq_px} px square "
                            f"(peak/background {peak.strength:.1f} < threshold {peak.threshold:.1f})",
                strength, sq_px, r0, c0)
    return peak.period_nm, peak.uncertainty_nm, None, strength, sq_px, r0, c0


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
    min_square_px: int = MIN_SQUARE_PX,
    min_square_chips: int = MIN_SQUARE_CHIPS,
    lattice_kwargs: Mapping[str, Any] | None = None,
    quant_kwargs: Mapping[str, Any] | None = None,
) -> RegionFrames:
    """Descriptors of every region of one segmentation (see the module docstring).

    ``labels`` (n_chips,) ints in chip_index order; ``haadf`` the (H, W) image the grid was cut
    from (grid origin (0, 0)), or None; ``eds_sums`` (n_chips, C) counts, or None; ``energy`` =
    ``(offset_kev, scale_kev)`` of the EDS channels; ``elements`` the session's declared elements,
    ``kfactors`` ``{line: k}`` (None: the default table). ``class_names[label]`` (few-shot, ground
    truth) becomes the region's role; otherwise ``role`` is NULL until :func:`mmlake.roles.assign_roles`.
    ``chip_cryst`` the per-chip crystallinity of :func:`chip_crystallinity` (computed here if None
    and there is a HAADF image).
    """
    lab = _check_inputs(labels, grid, haadf, eds_sums, pixel_size_nm)
    if eds_sums is not None and energy is None:
        raise ValueError("energy: give (offset_kev, scale_kev) of the EDS channels with eds_sums")
    if not isinstance(min_square_px, (int, np.integer)) or min_square_px < 8:
        raise ValueError(f"min_square_px must be an integer >= 8, got {min_square_px!r}")
    if not isinstance(min_square_chips, (int, np.integer)) or min_square_chips < 1:
        raise ValueError(f"min_square_chips must be an integer >= 1, got {min_square_chips!r}")
    if haadf is not None and chip_cryst is None:
        chip_cryst = chip_crystallinity(grid, haadf)
    if chip_cryst is not None and np.asarray(chip_cryst).shape != (grid.n_chips,):
        raise ValueError(f"chip_cryst must be (n_chips={grid.n_chips},), got {np.asarray(chip_cryst).shape}")

    regions = sorted(int(v) for v in np.unique(lab) if v >= 0)
    chip_area = (grid.chip_px * float(pixel_size_nm)) ** 2
    rows, comp_rows = [], []
    region_sums = None
    if eds_sums is not None and regions:
        onehot = (lab[None, :] == np.array(regions)[:, None]).astype(np.float64)
        region_sums = onehot @ np.asarray(eds_sums, dtype=np.float64)  # (n_regions, C)
    for i, reg in enumerate(regions):
        sel = lab == reg
        n = int(sel.sum())
        d, unc, note, strength, sq_px, r0, c0 = _d_spacing(
            grid.chip_map(sel), n, grid, haadf, pixel_size_nm, min_square_px, min_square_chips, lattice_kwargs)
        role = None
        if class_names is not None and 0 <= reg < len(class_names):
            role = str(class_names[reg])
        rows.append({
            "session_id": session_id, "method": method, "modality": modality, "region": reg,
            "role": role, "role_source": "class_names" if role is not None else None, "role_reason": None,
            "n_chips": n, "area_nm2": n * chip_area,
            "eds_counts": float(region_sums[i].sum()) if region_sums is not None else None,
            "d_spacing_nm": d, "d_spacing_unc_nm": unc, "d_spacing_note": note,
            "lattice_strength": strength,
            "crystallinity": float(np.mean(np.asarray(chip_cryst)[sel])) if chip_cryst is not None else None,
            "square_px": sq_px, "square_row": r0, "square_col": c0,
        })
        if region_sums is not None:
            comp = quantify_region(region_sums[i], energy, beam_kv, elements, kfactors,
                                   energy_resolution_mnka_ev=energy_resolution_mnka_ev,
                                   session_id=session_id, **dict(quant_kwargs or {}))
            for el, v in comp.items():
                comp_rows.append({"session_id": session_id, "method": method, "modality": modality,
                                  "region": reg, "element": el,
                                  "atomic_percent": None if not np.isfinite(v) else float(v)})
    return RegionFrames(pl.DataFrame(rows, schema=REGION_SCHEMA), pl.DataFrame(comp_rows, schema=COMPOSITION_SCHEMA))


def quantify_region(
    spectrum: np.ndarray,
    energy: tuple[float, float],
    beam_kv: float,
    elements: Sequence[str],
    kfactors: Mapping[str, float] | None,
    *,
    energy_resolution_mnka_ev: float = 130.0,
    session_id: str | None = None,
    **kwargs,
) -> dict[str, float]:
    """At.% of one summed spectrum: the declared ``elements`` in their order, then ``Extraneous``
    (every other quantified element). All NaN when the spectrum has no counts."""
    from mmlake.eds import quantify_spectrum

    spec = np.asarray(spectrum, dtype=np.float64)
    if not spec.sum() > 0:
        return {**{e: float("nan") for e in elements}, EXTRANEOUS: float("nan")}
    out = quantify_spectrum(spec, float(energy[0]), float(energy[1]), list(elements), lump_extraneous=True,
                            beam_energy_kev=float(beam_kv), energy_resolution_mnka_ev=energy_resolution_mnka_ev,
                            kfactors=kfactors, session=session_id, **kwargs)
    ordered = {e: float(out.get(e, float("nan"))) for e in elements}
    ordered[EXTRANEOUS] = float(out.get(EXTRANEOUS, 0.0))
    return ordered


# ---------------------------------------------------------------------------------------------
# a whole session


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
    shift_elements: Sequence[str] = ("La", "Fe", "O"),
    **kwargs,
) -> DescriptorTables:
    """Descriptors, roles and ordered-vs-disordered shifts of every segmentation of one session.

    ``labels``: the session's ``segment_labels`` rows (columns method, modality, chip_index, label)
    or a dict ``{(method, modality): labels (n_chips,)}``. ``class_names``: ``{method: class names}``
    for methods whose labels index named classes (few-shot: the support classes, in support order;
    ``"truth"``: the manifest's truth_classes). ``role_overrides``: the manifest's ``roles:`` mapping
    (see :mod:`mmlake.roles`). Other keyword arguments go to :func:`region_descriptors`.
    """
    from mmlake.roles import assign_roles, composition_shift

    if isinstance(labels, pl.DataFrame):
        need = {"method", "modality", "chip_index", "label"}
        if not need <= set(labels.columns):
            raise ValueError(f"labels frame needs columns {sorted(need)}, got {labels.columns}")
        segs: dict[tuple[str, str], np.ndarray] = {}
        for (m, mod), part in labels.sort("chip_index").group_by(["method", "modality"], maintain_order=True):
            arr = np.full(grid.n_chips, -1, dtype=np.int64)
            idx = part["chip_index"].to_numpy()
            if idx.min() < 0 or idx.max() >= grid.n_chips:
                raise ValueError(f"labels of {m}/{mod}: chip_index outside 0..{grid.n_chips - 1}")
            arr[idx] = part["label"].fill_null(-1).to_numpy()
            segs[(str(m), str(mod))] = arr
    else:
        segs = {(str(k[0]), str(k[1])): np.asarray(v) for k, v in labels.items()}
    chip_cryst = kwargs.pop("chip_cryst", None)
    if haadf is not None and chip_cryst is None and segs:
        chip_cryst = chip_crystallinity(grid, haadf)
    reg_frames, comp_frames = [], []
    for (m, mod), lab in sorted(segs.items()):
        names = (class_names or {}).get(m)
        rf = region_descriptors(lab, grid, haadf, eds_sums, energy, beam_kv, elements, kfactors, pixel_size_nm,
                                names, session_id=session_id, method=m, modality=mod, chip_cryst=chip_cryst,
                                **kwargs)
        reg_frames.append(rf.regions)
        comp_frames.append(rf.composition)
    regions = pl.concat(reg_frames) if reg_frames else pl.DataFrame(schema=REGION_SCHEMA)
    comp = pl.concat(comp_frames) if comp_frames else pl.DataFrame(schema=COMPOSITION_SCHEMA)
    regions = assign_roles(regions, comp, overrides=role_overrides)
    shift = composition_shift(regions, comp, elements=shift_elements)
    return DescriptorTables(regions, comp, shift)
