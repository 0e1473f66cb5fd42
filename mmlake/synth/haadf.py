"""HAADF image: Gaussian atomic columns of the projected perovskite, speckle for amorphous regions
and the cap, Poisson and scan-line noise."""

from __future__ import annotations

import numpy as np

from mmlake.synth.geometry import Geometry, make_geometry
from mmlake.synth.spec import (_PEROVSKITE_SITES, _R_AMORPH, _R_CAP, _R_DEFECT, _R_FILM, _R_SUB, _STREAM_HAADF,
                               A_DEFECT, A_LFO, A_STO, AMORPHOUS_DENSITY, COLUMN_SIGMA_NM, DEFECT_AMP_VAR,
                               DEFECT_JITTER_NM, HAADF_Z_EXPONENT, REGION_NAMES, SessionSpec, _rng)
from mmlake.synth.xray import _atomic_weight, _element_db, _z

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
