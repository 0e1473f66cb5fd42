"""Where each region lies: substrate, film (with defect domains and an amorphised triangle) and cap."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from mmlake.synth.spec import _R_AMORPH, _R_CAP, _R_DEFECT, _R_FILM, _R_SUB, _REGION_TO_CLASS, A_DEFECT, SessionSpec, _rng
from mmlake.synth.spec import _STREAM_GEOMETRY

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
