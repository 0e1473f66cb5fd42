"""FFT physics descriptor: a chip encoder that needs no weights.

For each chip a square window is analysed (see :mod:`mmlake.lattice` for the spectrum and the peak
statistics):

- **Window**. Chips are 10-20 px, i.e. one to three lattice periods: too few for a spectrum to
  resolve a lattice peak. When ``encode`` gets the whole HAADF ``image`` the chips were cut from
  (grid origin (0, 0), ``chip_index = row * n_cols + col``), each chip is analysed through a
  ``max(window_px, chip_px)`` square window centred on the chip (image edges mirror-padded). Without
  ``image`` the chip itself is the window (works when chips span >= ~4 periods). The grid is
  checked against the image (chips 0, 1, n_cols and the last must equal their tiles, which catches
  a transposed grid).
- **Binned spectrum** (``n_radial * n_angular`` values): Hann-windowed ``log`` power, minus its mean
  over the searched band (so overall contrast drops out), averaged in ``n_radial`` equal-width
  radial bins from 3 frequency bins to Nyquist and ``n_angular`` orientation bins over [0, 180)
  degrees (the power spectrum of a real image is centro-symmetric).
- **crystallinity** (``features[:, -3]``): ``ln(ratio2 / threshold)``, ``ratio2`` the
  peak/background power ratio of the strongest peak at least 20 degrees in direction away from the
  strongest peak (a 2-D lattice has two independent reciprocal vectors, both strong; in amorphous
  speckle the runner-up is an order statistic below the maximum), ``threshold`` the lattice
  threshold for this window size (``noise_factor`` times the ratio the largest noise bin would
  reach). ``> 0`` means a lattice: the encoder's own threshold is 0 (``is_crystalline``).
- **peak_strength** (``features[:, -2]``): ``ln(ratio1 / threshold)`` of the strongest peak alone.
- **period_px** (``features[:, -1]``): period of the lowest-frequency significant local maximum
  (>= ``family_rel`` of the strongest's power), 0 where the window has no significant peak.

Defaults (48 px window, ``noise_factor`` 2.5) were chosen on the synthetic demo campaign
(mmlake.synth: 0.035-0.071 nm pixels, 10-20 px chips): 48 px is 1.7-3.4 nm, 4-9 lattice periods.
Larger windows resolve weak (defect) lattices better but mix more neighbouring chips at region
boundaries, where most remaining errors are.

Runs in numpy on the CPU (vectorised over chips, batched by ``batch_size``); ``device`` is
validated like the other encoders' but not used: the whole step is a few FFTs per chip.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from mmlake.chips import ChipGrid, centred_windows
from mmlake.encoders.base import ChipEncoder, check_batch_size, check_chips
from mmlake.encoders.device import resolve_device


class FFTEncoder(ChipEncoder):
    name = "fft"
    version = "1"
    weights_id = "none"

    def __init__(
        self,
        window_px: int = 48,
        n_radial: int = 8,
        n_angular: int = 8,
        noise_factor: float = 2.5,
        family_rel: float = 0.02,
        min_period_px: float = 2.0,
    ):
        for nm, v, lo in (("window_px", window_px, 8), ("n_radial", n_radial, 1), ("n_angular", n_angular, 1)):
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < lo:
                raise ValueError(f"{nm} must be an integer >= {lo}, got {v!r}")
        if not noise_factor > 0:
            raise ValueError(f"noise_factor must be > 0, got {noise_factor!r}")
        if not 0 < family_rel <= 1:
            raise ValueError(f"family_rel must be in (0, 1], got {family_rel!r}")
        self.window_px = int(window_px)
        self.n_radial = int(n_radial)
        self.n_angular = int(n_angular)
        self.noise_factor = float(noise_factor)
        self.family_rel = float(family_rel)
        self.min_period_px = float(min_period_px)
        self.dim = self.n_radial * self.n_angular + 3

    crystallinity_index = -3
    peak_strength_index = -2
    period_index = -1

    @property
    def feature_names(self) -> list[str]:
        names = [f"logp_r{r}_a{a}" for r in range(self.n_radial) for a in range(self.n_angular)]
        return names + ["crystallinity", "peak_strength", "period_px"]

    @property
    def config(self) -> dict[str, Any]:
        return {
            "window_px": self.window_px,
            "n_radial": self.n_radial,
            "n_angular": self.n_angular,
            "noise_factor": self.noise_factor,
            "family_rel": self.family_rel,
            "min_period_px": self.min_period_px,
        }

    @staticmethod
    def is_crystalline(features: np.ndarray) -> np.ndarray:
        """Boolean per chip: the crystallinity feature is above the encoder's threshold (0)."""
        return np.asarray(features)[:, FFTEncoder.crystallinity_index] > 0

    # -----------------------------------------------------------------------------------------
    def _windows(self, chips: np.ndarray, image: np.ndarray | None):
        n, p, _ = chips.shape
        if image is None:
            return p, lambda sl: chips[sl].astype(np.float64)
        img = np.asarray(image)
        if img.ndim != 2:
            raise ValueError(f"image must be the 2-D HAADF image, got shape {img.shape}")
        H, W = img.shape
        n_rows, n_cols = H // p, W // p
        if n_rows * n_cols != n:
            raise ValueError(
                f"image {H}x{W} px with chip_px={p} gives a {n_rows}x{n_cols} grid "
                f"({n_rows * n_cols} chips) but {n} chips were given"
            )
        for ci in sorted({0, min(1, n - 1), min(n_cols, n - 1), n - 1}):  # catches a transposed grid
            r, c = divmod(ci, n_cols)
            if not np.allclose(img[r * p:(r + 1) * p, c * p:(c + 1) * p], chips[ci], rtol=1e-5, atol=1e-5):
                raise ValueError(
                    f"chip {ci} does not equal image tile (row {r}, col {c}): chips must be cut from "
                    "`image` on the grid origin (0, 0), chip_index = row * n_cols + col"
                )
        return centred_windows(img, ChipGrid(p, n_rows, n_cols), self.window_px)

    def _bins(self, w: int):
        from mmlake.lattice import K_MIN_BINS, SCAN_LINE_COLUMNS, frequency_grid

        ky, kx, k, shell = frequency_grid(w, w)
        valid = (shell >= K_MIN_BINS) & (k <= 0.5)
        valid[:, SCAN_LINE_COLUMNS] = False  # scan-line artefacts (see mmlake.lattice._search_mask)
        k_lo = K_MIN_BINS / w
        rb = np.clip(((k - k_lo) / (0.5 - k_lo) * self.n_radial).astype(int), 0, self.n_radial - 1)
        theta = np.mod(np.arctan2(-ky, kx), np.pi)
        ab = np.clip((theta / np.pi * self.n_angular).astype(int), 0, self.n_angular - 1)
        bin_id = np.where(valid, rb * self.n_angular + ab, -1).ravel()
        nb = self.n_radial * self.n_angular
        M = np.zeros((w * w, nb))
        on = bin_id >= 0
        M[np.flatnonzero(on), bin_id[on]] = 1.0
        cnt = M.sum(axis=0)
        M[:, cnt > 0] /= cnt[cnt > 0]
        return M, valid.ravel()

    def encode(self, chips, batch_size=256, device="cpu", *, image=None) -> np.ndarray:
        from mmlake.lattice import crystallinity_stack

        chips = check_chips(chips)
        batch_size = check_batch_size(batch_size)
        resolve_device(device)  # same validation as every encoder; computation is numpy/CPU
        n = chips.shape[0]
        out = np.zeros((n, self.dim), dtype=np.float32)
        if n == 0:
            return out
        w, get = self._windows(chips, image)
        M, vflat = self._bins(w)
        for s in range(0, n, batch_size):
            sl = slice(s, min(n, s + batch_size))
            win = get(sl)
            st = crystallinity_stack(
                win, min_period_px=self.min_period_px, family_rel=self.family_rel,
                noise_factor=self.noise_factor,
            )
            lp = st["logp"].reshape(len(win), -1)
            lp = lp - lp[:, vflat].mean(axis=1, keepdims=True)
            out[sl, : M.shape[1]] = lp @ M
            out[sl, -3] = st["lattice2d"] - st["log_threshold"]
            out[sl, -2] = st["peak"] - st["log_threshold"]
            out[sl, -1] = np.nan_to_num(st["period_px"], nan=0.0)
        return out
