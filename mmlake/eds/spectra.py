"""Chip spectra as the quantification sees them (:func:`chip_spectra`: energy crop, rebinning) and
as exspy sees them (:func:`exspy_signal`: an ``EDSTEMSpectrum`` whose navigation space is the chip
grid, or one spectrum per row)."""

from __future__ import annotations

import math

import numpy as np

from mmlake.eds.kfactors import LineSetup


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


def exspy_signal(data: np.ndarray, offset: float, scale: float, beam_kev: float, res_ev: float,
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
