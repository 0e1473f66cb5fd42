"""FFT lattice analysis shared by the ``fft`` chip encoder, the automatic chip size and the region
d-spacing.

Method (one code path for a single image and for a stack of windows):

1. Subtract each image's mean, multiply by a 2-D Hann window, FFT, power ``P = |F|^2``;
   ``log P`` is the *windowed log power spectrum*.
2. Background: per radial shell (shell width = one frequency bin ``1 / min(h, w)``), the lower
   quartile of ``log P`` over the annulus of that shell and its two neighbours. A low quantile
   ignores the pixels lattice peaks occupy (even in a 32 px window, where a peak's main lobe covers
   much of a shell), and a radially symmetric amorphous halo is absorbed into it.
3. Significance ``S = log P - background``; ``exp(S)`` is the *peak/background power ratio*
   (``strength``). Only frequencies between ``k_min`` (at least 3 bins from DC, the Hann main lobe
   of the mean/ramp, and at most ``1 / max_period``) and Nyquist (0.5 cycles/px) are searched, and
   not the ``kx = 0`` column, where a STEM raster's scan-line noise (per-line gain and offset) puts
   its power, nor the ``kx = +-1`` columns the Hann window leaks it into. Lattice peaks on the
   ``kx = 0`` axis are thereby skipped; the other members of the lattice family still index.
4. Is there a lattice? ``strength`` of the strongest peak vs ``noise_factor`` times the ratio the
   largest of N pure-noise bins would reach over the noise lower quartile (``ln N / ln(4/3)`` for
   exponentially distributed power). ``noise_factor`` is 4 for :func:`find_lattice_peak` (whole
   images or region squares: many bins, strong peaks) and 2.5 for :func:`crystallinity_stack`
   (48 px chip windows; there the weaker of two non-collinear peaks is thresholded, see there).
5. Which peak gives the period? For a cubic perovskite in [001] projection (A and B columns of
   different Z) the (110)-type peak is often *stronger* than (100), so "the strongest peak" would
   report a/sqrt(2). Instead the reciprocal lattice basis is found: candidate peaks are local maxima
   with at least ``family_rel`` of the strongest peak's power and above the noise maximum ``ln N /
   ln(4/3)`` (once the strongest peak has established the lattice, its relatives need no margin),
   merged by non-maximum suppression (a peak smeared by scan jitter, or two nearly equal lattices,
   counts once; at most 24 kept). Only those with at least ``fundamental_rel`` (12 %) of the strongest
   peak's power may be basis vectors: a weak commensurate modulation or half-order spots (octahedral
   tilts of orthorhombic LaFeO3, scan distortions) would otherwise give a basis that indexes more
   peaks but is not the fundamental lattice (d = 1.5 a or sqrt(2) a). They are tried shortest first as ``g1``, each with its shortest
   non-collinear partner ``g2`` that indexes the strongest peak as ``i g1 + j g2`` (|i|, |j| <= 4,
   i != 0, tolerance 1.5 bins + 1.5 %). All candidates that index are then used in a least-squares
   refinement of ``(g1, g2)`` from sub-bin (parabolic) peak positions. The period is ``1/|g1|``: the
   largest lattice-plane spacing, d = a for a cubic [001] projection.
6. ``uncertainty_nm`` is width based: the Gaussian sigma of the ``g1`` peak (from the curvature of
   ``log P``) propagated to d (``sigma_d = d^2 sigma_k``). It is a resolution figure (it shrinks as
   the image grows), not a standard error.
7. Superlattice: peaks above the lattice threshold with at least ``superlattice_rel`` of the strongest
   peak's power that the fundamental basis indexes only with fractions of denominator 2, 3 or 4 are
   superlattice reflections; ``superlattice_nm`` is the largest d among them (NULL when none).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

METHOD_VERSION = "1"
K_MIN_BINS = 3  # Hann main lobe of DC is +-2 bins; lattice searched from the 3rd shell outwards
SCAN_LINE_COLUMNS = [0, 1, -1]  # kx columns excluded (scan-line noise and its Hann leakage)


@dataclass(frozen=True)
class LatticePeak:
    """Result of :func:`find_lattice_peak`. When ``is_crystalline`` is False the period fields
    describe the strongest (insignificant) peak and must not be reported as a d-spacing."""

    period_nm: float
    period_px: float
    strength: float  # peak/background power ratio of the strongest lattice peak (linear)
    uncertainty_nm: float
    is_crystalline: bool
    threshold: float  # strength needed to call it a lattice (see module docstring, step 4)
    g_px: tuple[float, float]  # reciprocal basis vector g1 (ky, kx) in cycles/px
    angle_deg: float  # direction of +-g1, degrees from +x (image right), counter-clockwise, [-90, 90)
    n_indexed: int  # number of peaks indexed by the refined basis
    image_shape: tuple[int, int]
    superlattice_nm: float | None = None  # largest d of the reflections at fractional positions of the basis
    superlattice_index: tuple[float, ...] | None = None  # that reflection's coordinates in the basis

    def as_dict(self) -> dict:
        d = asdict(self)
        d["method"] = "fft_lattice_peak"
        d["method_version"] = METHOD_VERSION
        return d


# ---------------------------------------------------------------------------------------------
# spectra


def hann2d(h: int, w: int) -> np.ndarray:
    """Separable 2-D Hann window (periodic form, as used for spectral analysis)."""
    wy = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(h) / h)
    wx = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(w) / w)
    return np.outer(wy, wx)


def log_power_spectrum(images: np.ndarray, *, shift: bool = False) -> np.ndarray:
    """Hann-windowed log power spectrum of an image ``(h, w)`` or a stack ``(n, h, w)``.

    Unshifted (DC at [0, 0]) unless ``shift``; float64. ``log`` is natural; ``+tiny`` avoids -inf.
    """
    a = np.asarray(images, dtype=np.float64)
    single = a.ndim == 2
    if single:
        a = a[None]
    if a.ndim != 3:
        raise ValueError(f"images must be (h, w) or (n, h, w), got shape {a.shape}")
    h, w = a.shape[1:]
    a = (a - a.mean(axis=(1, 2), keepdims=True)) * hann2d(h, w)
    p = np.abs(np.fft.fft2(a)) ** 2
    lp = np.log(p + 1e-30 * (1.0 + p.max(axis=(1, 2), keepdims=True)))
    if shift:
        lp = np.fft.fftshift(lp, axes=(1, 2))
    return lp[0] if single else lp


def frequency_grid(h: int, w: int):
    """(ky, kx, k) in cycles/px for an unshifted (h, w) spectrum, and the radial shell index."""
    ky = np.fft.fftfreq(h)[:, None] * np.ones((1, w))
    kx = np.fft.fftfreq(w)[None, :] * np.ones((h, 1))
    k = np.hypot(ky, kx)
    shell = np.rint(k * min(h, w)).astype(np.int64)
    return ky, kx, k, shell


def significance(
    logp: np.ndarray, shell: np.ndarray, valid: np.ndarray, *, quantile: float = 0.25, halfwidth: int = 1
) -> np.ndarray:
    """``log P`` minus the radial background: per shell, the ``quantile`` of ``log P`` over the
    ``valid`` pixels of shells ``s - halfwidth .. s + halfwidth``. Stack-aware; ``-inf`` outside
    ``valid``.

    A low quantile over an annulus rather than the shell median: in small windows (32 px) a lattice
    peak's Hann main lobe covers a large part of a shell, which would lift a median.
    """
    lp = logp if logp.ndim == 3 else logp[None]
    n = lp.shape[0]
    flat = lp.reshape(n, -1)
    sh = shell.ravel()
    vflat = valid.ravel()
    out = np.full_like(flat, -np.inf)
    for s in np.unique(sh[vflat]):
        ring = vflat & (np.abs(sh - s) <= halfwidth)
        bg = np.quantile(flat[:, ring], quantile, axis=1)
        here = np.flatnonzero(vflat & (sh == s))
        out[:, here] = flat[:, here] - bg[:, None]
    out = out.reshape(lp.shape)
    return out if logp.ndim == 3 else out[0]


def noise_ratio(n_bins: int, quantile: float = 0.25) -> float:
    """Ratio of the largest of ``n_bins`` exponential-noise bins to the noise ``quantile``:
    ``ln N / -ln(1 - q)``."""
    return math.log(max(n_bins, 2)) / -math.log(1.0 - quantile)


def _search_mask(h, w, k, shell, min_period_px, max_period_px):
    """Searched frequencies: K_MIN_BINS..Nyquist, within the period limits, and not the columns
    kx = 0, +-1/w. Scan-line artefacts (per-line gain/offset noise of a STEM raster) put their power
    in the kx = 0 column, and the Hann window leaks a quarter of it into kx = +-1/w."""
    kmin = max(K_MIN_BINS / min(h, w), 1.0 / max_period_px if max_period_px else 0.0)
    kmax = min(0.5, 1.0 / min_period_px)
    m = (shell >= K_MIN_BINS) & (k >= kmin) & (k <= kmax)
    m[:, SCAN_LINE_COLUMNS] = False
    return m


# ---------------------------------------------------------------------------------------------
# batched crystallinity (fft encoder)


def crystallinity_stack(
    stack: np.ndarray,
    *,
    min_period_px: float = 2.0,
    max_period_px: float | None = None,
    family_rel: float = 0.02,
    noise_factor: float = 2.5,
    min_angle_deg: float = 20.0,
) -> dict:
    """Vectorised lattice statistics for a stack of windows ``(n, h, w)``.

    Returns a dict of per-window arrays (natural-log significances, see the module docstring):

    - ``peak``: significance of the strongest peak;
    - ``lattice2d``: significance of the strongest peak at least ``min_angle_deg`` away in direction
      from the strongest one. A 2-D lattice projection has two independent reciprocal vectors, so
      both are strong; in amorphous speckle the runner-up is an order statistic below the maximum.
      This is the crystallinity the ``fft`` encoder thresholds (1-D fringes alone count as not
      crystalline);
    - ``period_px``: period of the lowest-frequency local maximum with at least ``family_rel`` of
      the strongest peak's power, sub-bin (parabolic) position (NaN where ``peak`` is below the
      threshold);
    - ``log_threshold``: ``ln(noise_factor * noise_ratio(N))`` for this window size (scalar);
    - ``logp``, ``valid``: the log power spectra and the search mask.

    No 2-D lattice indexing here (small windows have few bins); see :func:`find_lattice_peak`.
    """
    a = np.asarray(stack, dtype=np.float64)
    if a.ndim != 3:
        raise ValueError(f"stack must be (n, h, w), got shape {a.shape}")
    n, h, w = a.shape
    ky, kx, k, shell = frequency_grid(h, w)
    valid = _search_mask(h, w, k, shell, min_period_px, max_period_px)
    if not valid.any():
        raise ValueError(f"windows of {h}x{w} px are too small for a lattice search")
    logp = log_power_spectrum(a)
    s = significance(logp, shell, valid)
    flat = s.reshape(n, -1)
    i1 = flat.argmax(axis=1)
    s1 = flat[np.arange(n), i1]
    theta = np.mod(np.arctan2(ky, kx), np.pi).ravel()
    d = np.abs(theta[None, :] - theta[i1][:, None])
    d = np.minimum(d, np.pi - d)
    s2 = np.where(d >= math.radians(min_angle_deg), flat, -np.inf).max(axis=1)
    log_thr = math.log(noise_factor * noise_ratio(int(valid.sum()) // 2))
    lm = _local_maxima(s).reshape(n, -1)
    strong = lm & (flat >= (s1[:, None] + math.log(family_rel))) & (flat >= log_thr)
    kcand = np.where(strong, k.ravel()[None, :], np.inf)
    ib = kcand.argmin(axis=1)
    found = np.isfinite(kcand[np.arange(n), ib]) & (s1 >= log_thr)
    # sub-bin (parabolic, on log P) position of that peak, vectorised
    iy, ix = np.divmod(ib, w)
    lpn = logp
    r = np.arange(n)
    c0 = lpn[r, iy, ix]
    offs = []
    for (a, b) in ((lpn[r, (iy - 1) % h, ix], lpn[r, (iy + 1) % h, ix]),
                   (lpn[r, iy, (ix - 1) % w], lpn[r, iy, (ix + 1) % w])):
        curv = a - 2 * c0 + b
        with np.errstate(divide="ignore", invalid="ignore"):
            offs.append(np.where(curv < 0, np.clip(0.5 * (a - b) / curv, -0.5, 0.5), 0.0))
    kyr = ky.ravel()[ib] + offs[0] / h
    kxr = kx.ravel()[ib] + offs[1] / w
    with np.errstate(divide="ignore"):  # windows without a peak sit at k = 0: their period is NaN
        period = np.where(found, 1.0 / np.hypot(kyr, kxr), np.nan)
    return {"peak": s1, "lattice2d": s2, "period_px": period, "log_threshold": log_thr,
            "logp": logp, "valid": valid}


# ---------------------------------------------------------------------------------------------
# single image estimator


def _parabolic(lp: np.ndarray, iy: int, ix: int):
    """Sub-bin offsets (dy, dx) and Gaussian sigmas (in bins) of the peak at (iy, ix), wrap-around."""
    h, w = lp.shape
    c = lp[iy, ix]
    res = []
    for (a, b) in ((lp[(iy - 1) % h, ix], lp[(iy + 1) % h, ix]), (lp[iy, (ix - 1) % w], lp[iy, (ix + 1) % w])):
        curv = a - 2 * c + b
        if curv < 0:
            off = float(np.clip(0.5 * (a - b) / curv, -0.5, 0.5))
            sig = math.sqrt(-1.0 / curv)
        else:
            off, sig = 0.0, 1.0
        res.append((off, sig))
    return res[0][0], res[1][0], res[0][1], res[1][1]


def _local_maxima(s: np.ndarray) -> np.ndarray:
    """8-neighbour local maxima (frequency wrap-around) of ``(h, w)`` or ``(n, h, w)`` maps."""
    m = np.ones(s.shape, dtype=bool)
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            if dy or dx:
                m &= s >= np.roll(np.roll(s, dy, axis=-2), dx, axis=-1)
    return m & np.isfinite(s)


def find_lattice_peak(
    image: np.ndarray,
    pixel_size_nm: float,
    *,
    min_period_px: float = 2.0,
    max_period_nm: float = 2.0,
    family_rel: float = 0.02,
    noise_factor: float = 4.0,
    max_index: int = 4,
    fundamental_rel: float = 0.12,
    superlattice_rel: float = 0.002,
) -> LatticePeak:
    """Lattice period of an image from its windowed FFT (see the module docstring).

    ``pixel_size_nm`` > 0. Periods longer than ``max_period_nm`` (default 2 nm, above every simple
    oxide's cell) or shorter than ``min_period_px`` are not searched. Only peaks with at least
    ``fundamental_rel`` of the strongest peak's power may be basis vectors (step 5); weaker peaks at
    fractional positions of that basis are superlattice reflections (step 7).
    """
    img = np.asarray(image, dtype=np.float64)
    if img.ndim != 2 or min(img.shape) < 8:
        raise ValueError(f"image must be a 2-D array of at least 8x8 px, got shape {img.shape}")
    if not np.all(np.isfinite(img)):
        raise ValueError("image contains NaN or infinite values")
    if not (isinstance(pixel_size_nm, (int, float, np.floating)) and pixel_size_nm > 0):
        raise ValueError(f"pixel_size_nm must be a positive number, got {pixel_size_nm!r}")
    if family_rel <= 0 or family_rel > 1:
        raise ValueError(f"family_rel must be in (0, 1], got {family_rel!r}")
    if not (0 < superlattice_rel <= 1 and 0 < fundamental_rel <= 1):
        raise ValueError(f"superlattice_rel and fundamental_rel must be in (0, 1], got {superlattice_rel!r}, "
                         f"{fundamental_rel!r}")
    h, w = img.shape
    ky, kx, k, shell = frequency_grid(h, w)
    valid = _search_mask(h, w, k, shell, min_period_px, max_period_nm / pixel_size_nm)
    if not valid.any():
        raise ValueError(f"image {h}x{w} px is too small to search periods up to {max_period_nm} nm")
    logp = log_power_spectrum(img)
    s = significance(logp, shell, valid)
    threshold = noise_factor * noise_ratio(int(valid.sum()) // 2)
    ls = math.log(threshold)

    imax = int(np.argmax(s))
    sy, sx = divmod(imax, w)
    smax = float(s[sy, sx])
    strength = math.exp(min(smax, 700.0))

    def refined(iy, ix):
        dy, dx, sgy, sgx = _parabolic(logp, iy, ix)
        return np.array([ky[iy, ix] + dy / h, kx[iy, ix] + dx / w]), (sgy / h, sgx / w)

    gs, _ = refined(sy, sx)
    is_cryst = smax >= ls
    basis = None
    n_indexed = 1
    if is_cryst:
        # family members only need to beat the noise maximum itself: the lattice is established
        cand, cidx = _strong_peaks(s, smax + math.log(family_rel), ls - math.log(noise_factor), h, w, refined)
        strong = np.array([s[a, b] >= smax + math.log(max(fundamental_rel, family_rel)) for a, b in cidx], dtype=bool)
        basis = _find_basis(cand[strong], gs, 1.5 / min(h, w), max_index)
    if basis is not None:
        B = basis
        idx = _index(B, cand, 1.5 / min(h, w), max_index)
        rows = [(cand[m], ij) for m, ij in enumerate(idx) if ij is not None]
        n_indexed = len(rows)
        G = np.array([r[0] for r in rows])  # (m, 2)
        IJ = np.array([r[1] for r in rows], dtype=np.float64)  # (m, nb)
        sol, *_ = np.linalg.lstsq(IJ, G, rcond=None)  # (nb, 2): rows are basis vectors
        g1 = sol[0]
        # width of the measured peak closest to g1 (or -g1)
        dist = np.minimum(np.hypot(*(cand - g1).T), np.hypot(*(cand + g1).T))
        _, sig = refined(*cidx[int(np.argmin(dist))])
    else:
        g1 = gs
        _, sig = refined(sy, sx)
    kmag = float(np.hypot(*g1))
    period_px = 1.0 / kmag
    sl_px, sl_index = None, None
    if basis is not None:
        sl_px, sl_index = _superlattice(s, smax + math.log(superlattice_rel), ls, h, w, refined, sol.T, max_index)
    sigma_k = float(np.hypot(sig[0] * abs(g1[0]) / kmag, sig[1] * abs(g1[1]) / kmag))
    uncertainty_nm = pixel_size_nm * sigma_k / kmag**2
    angle = math.degrees(math.atan2(-g1[0], g1[1]))  # image y points down
    angle = (angle + 90.0) % 180.0 - 90.0  # direction of the +-g1 pair, in [-90, 90)
    return LatticePeak(
        period_nm=float(period_px * pixel_size_nm),
        period_px=float(period_px),
        strength=float(strength),
        uncertainty_nm=float(uncertainty_nm),
        is_crystalline=bool(is_cryst),
        threshold=float(threshold),
        g_px=(float(g1[0]), float(g1[1])),
        angle_deg=float(angle),
        n_indexed=int(n_indexed),
        image_shape=(int(h), int(w)),
        superlattice_nm=None if sl_px is None else float(sl_px * pixel_size_nm),
        superlattice_index=sl_index,
    )


def _strong_peaks(s, log_rel, log_thr, h, w, refined, radius_bins=2.0, radius_rel=0.03, keep=24):
    """Local maxima of ``s`` above both thresholds, strongest first, with non-maximum suppression
    (a peak smeared by scan jitter or split by two nearly equal lattices counts once); at most
    ``keep``. Returns (sub-bin positions (m, 2) in cycles/px (ky, kx), integer indices (m, 2))."""
    lm = _local_maxima(s) & (s >= max(log_thr, log_rel))
    cy, cx = np.nonzero(lm)
    o = np.argsort(-s[cy, cx], kind="stable")
    kept_pos, kept_idx = [], []
    for a, b in zip(cy[o], cx[o]):
        g, _ = refined(a, b)
        r = max(radius_bins / min(h, w), radius_rel * float(np.hypot(*g)))
        if all(np.hypot(*(g - q)) > r for q in kept_pos):
            kept_pos.append(g)
            kept_idx.append((int(a), int(b)))
            if len(kept_pos) >= keep:
                break
    return np.array(kept_pos).reshape(-1, 2), kept_idx


def _superlattice(s, log_rel, log_thr, h, w, refined, B, max_index, denominators=(2, 3, 4)):
    """The superlattice reflection with the largest d: a peak above the lattice threshold ``log_thr``
    (and ``log_rel``) that the fundamental basis ``B`` (2, nb) does not index with integers but does
    with a fraction of denominator 2, 3 or 4 (half-order spots of octahedral tilts, a commensurate
    modulation). Returns (period px, fractional coordinates) or (None, None)."""
    cand, _ = _strong_peaks(s, log_rel, log_thr, h, w, refined, keep=48)
    tol = 1.5 / min(h, w)
    best = None
    for g in cand:
        if _index(B, g[None], tol, max_index)[0] is not None:
            continue
        c, *_ = np.linalg.lstsq(B, g, rcond=None)
        for q in denominators:
            ci = np.rint(c * q) / q
            if np.any(ci != 0) and np.all(np.abs(ci) <= max_index) and np.hypot(*(B @ ci - g)) <= tol + 0.015 * np.hypot(*g):
                k = float(np.hypot(*g))
                if best is None or k < best[0]:
                    best = (k, tuple(float(v) for v in ci))
                break
    return (None, None) if best is None else (1.0 / best[0], best[1])


def _find_basis(cand: np.ndarray, gs: np.ndarray, tol_abs: float, max_index: int):
    """Shortest reciprocal basis (columns of a (2, nb) matrix) among ``cand`` that indexes the
    strongest peak ``gs``: g1 shortest first, then its shortest non-collinear partner (no longer
    than ``gs``) that makes ``gs = i g1 + j g2`` with small integers and ``i != 0``; a single g1
    (1-D fringes) when no partner does."""
    norms = np.hypot(cand[:, 0], cand[:, 1])
    order = np.argsort(norms, kind="stable")
    ngs = float(np.hypot(*gs))
    sin_min = math.sin(math.radians(20))
    for i1 in order:
        g1 = cand[i1]
        if norms[i1] > ngs * 1.02 + tol_abs:
            break
        for i2 in order:
            g2 = cand[i2]
            if norms[i2] > ngs * 1.02 + tol_abs:
                break
            if abs(g1[0] * g2[1] - g1[1] * g2[0]) <= sin_min * norms[i1] * norms[i2]:
                continue
            B = np.stack([g1, g2], axis=1)
            ij = _index(B, gs[None], tol_abs, max_index)[0]
            if ij is not None and ij[0] != 0:  # g1 must take part (gs = 0 g1 + 1 g2 proves nothing)
                return B
        ij = _index(g1[:, None], gs[None], tol_abs, max_index)[0]
        if ij is not None:
            return g1[:, None]
    return None


def _index(B: np.ndarray, G: np.ndarray, tol_abs: float, max_index: int):
    """Integer coordinates of each row of G in basis B (2, nb), or None where it does not index."""
    out = []
    for g in G:
        c, *_ = np.linalg.lstsq(B, g, rcond=None)
        ci = np.rint(c)
        if np.all(np.abs(ci) <= max_index) and np.any(ci != 0):
            r = np.hypot(*(B @ ci - g))
            if r <= tol_abs + 0.015 * np.hypot(*g):
                out.append(tuple(ci.astype(int)))
                continue
        out.append(None)
    return out


# ---------------------------------------------------------------------------------------------
# chip size


def suggest_chip_px(
    haadf: np.ndarray,
    pixel_size_nm: float,
    min_cells: float = 1,
    *,
    session: str | None = None,
    **peak_kwargs,
) -> tuple[int, dict]:
    """Chip size (px) so that one chip spans at least ``min_cells`` lattice periods per side.

    The preprint chose 0.5-1 nm chips (10-20 px): about one to two perovskite cells. Returns
    ``(chip_px, derivation)``; ``derivation`` holds the lattice peak and the rule, for provenance.
    Raises ``SessionError`` (``session`` given) or ``ValueError`` when no lattice is found: then the
    chip size cannot be derived and must be set explicitly (``chip_px`` in session.yaml).
    """
    if not (isinstance(min_cells, (int, float, np.integer, np.floating)) and min_cells > 0):
        raise ValueError(f"min_cells must be a positive number, got {min_cells!r}")
    peak = find_lattice_peak(haadf, pixel_size_nm, **peak_kwargs)
    if not peak.is_crystalline:
        msg = (
            "no crystal lattice found in the HAADF image (strongest FFT peak/background ratio "
            f"{peak.strength:.3g} < threshold {peak.threshold:.3g}), so the chip size cannot be "
            "derived from the lattice period: set chip_px in session.yaml (the preprint used "
            "chips of 0.5-1 nm, 10-20 px)"
        )
        if session is not None:
            from mmlake.errors import SessionError

            raise SessionError(session, msg)
        raise ValueError("haadf: " + msg)
    chip_px = int(math.ceil(min_cells * peak.period_px - 1e-9))
    chip_px = max(chip_px, 2)
    h, w = np.asarray(haadf).shape
    if chip_px > min(h, w):
        raise ValueError(
            f"min_cells={min_cells}: a {chip_px} px chip does not fit the {h}x{w} px image"
        )
    derivation = {
        "rule": "chip_px = ceil(min_cells * lattice period_px)",
        "min_cells": float(min_cells),
        "chip_px": chip_px,
        "chip_nm": chip_px * float(pixel_size_nm),
        "pixel_size_nm": float(pixel_size_nm),
        "lattice": peak.as_dict(),
    }
    return chip_px, derivation
