"""Ground-truth summaries of a session (class compositions and lattices, support chips) and its
session.yaml manifest."""

from __future__ import annotations

import numpy as np

from mmlake.synth.geometry import Geometry, make_geometry
from mmlake.synth.spec import (_REGION_YIELD, BAND_ROWS, CLASS_NAMES, COLUMN_SIGMA_NM, GENERATOR_VERSION,
                               HAADF_Z_EXPONENT, LATTICE_NM, QUANT_LINES, REGION_CLASS, REGION_NAMES, SessionSpec)
from mmlake.synth.xray import atomic_percent_from_weights, region_spectrum

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
