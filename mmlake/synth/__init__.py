"""Seeded ground-truth synthetic STEM sessions: LaFeO3 film on SrTiO3 with a Cr or Pt cap.

Cross-sections like the preprint's (Sections II and IV; Table II): SrTiO3 substrate at the bottom, a
LaFeO3 film in the middle, a polycrystalline-looking Cr or Pt cap on top. Options: vertical defect
domains in the film ("defective" samples: rotated, expanded, column-disordered lattice; slightly
La-poor / O-rich) and an irradiation-amorphised triangle at the top of the film (0.1 dpa: no lattice
order, O-rich). Every session carries an integer truth map at HAADF resolution with the classes of
``docs/conventions.md`` (0 substrate, 1 film_ordered, 2 film_disordered, 3 cap).

Per session folder (see :func:`write_session`)::

    haadf.hspy    Signal2D float32 (H, W), axes y/x in nm (scale = pixel size), Poisson + scan noise
    eds.hspy      EDSTEMSpectrum uint16 (H, W, n_channels), nav axes in nm, energy in keV,
                  gzip+shuffle, HDF5 chunks (16 rows, <=128 cols, all channels): read lazily in bands
    truth.npy     int8 (H, W) class ids (saved with allow_pickle=False)
    session.yaml  the manifest (campaign, sample, dose_dpa, ..., kfactors, support, synthetic: {...})

Physics, deliberately simple but consistent:

* HAADF: Gaussian atomic columns on the [001]-projected cubic perovskite (A column at the cell corner,
  B-O column at the centre, two pure-O columns at the edge centres), amplitude ~ sum Z^1.7 of the
  column. The column width (``COLUMN_SIGMA_NM``) is chosen so that the strongest non-zero FFT peak of
  every crystalline region is the (100)-type at d = a. Amorphous regions and the cap are smoothed
  speckle with the mean Z-contrast of their composition and atomic density, without any lattice.
* EDS: per pixel, total counts ~ Poisson(counts_per_pixel * yield); each count lands in a channel drawn
  from the region's spectrum: Gaussian X-ray lines (energies and family weights from exspy's database,
  FWHM from the detector resolution at Mn Ka scaled as exspy does) plus a Kramers bremsstrahlung with a
  low-energy absorption cut-off and a high-energy detector-efficiency roll-off. Only the family of each
  element's quantified line is emitted (e.g. Fe K, La L, Sr L, Pt L; no Fe L / La M / Pt M), and the
  quantified line's area is proportional to w_i / k_i (Cliff-Lorimer convention of conventions.md).

Everything is vectorised numpy; the EDS cube is generated in bands of ``BAND_ROWS`` rows, each band
from its own seed, so results are byte-identical whatever order (or thread) builds the bands.

Modules (each one reads in a sitting): :mod:`~mmlake.synth.spec` (constants, :class:`SessionSpec`,
the demo campaign), :mod:`~mmlake.synth.xray` (line database, detector, emission spectra),
:mod:`~mmlake.synth.geometry`, :mod:`~mmlake.synth.haadf`, :mod:`~mmlake.synth.eds` (the cube),
:mod:`~mmlake.synth.truth` (ground-truth summaries, manifest) and :mod:`~mmlake.synth.write` (folders on
disk). Everything public is re-exported here: ``from mmlake.synth import build_demo_campaign``.
"""

from __future__ import annotations

import numpy as np

from mmlake.synth.eds import _alias_table, _eds_band, _eds_model, _EdsModel, make_eds
from mmlake.synth.geometry import Geometry, make_geometry
from mmlake.synth.haadf import _column_weights, _mean_level, _render_perovskite, make_haadf
from mmlake.synth.spec import (
    _PEROVSKITE_SITES, _R_AMORPH, _R_CAP, _R_DEFECT, _R_FILM, _R_SUB, _REGION_TO_CLASS, _REGION_YIELD,
    A_DEFECT, A_LFO, A_STO, AMORPHOUS_DENSITY, BAND_ROWS, BREMS_HIGH_ROLLOFF_KEV, BREMS_LOW_CUTOFF_KEV,
    BREMS_WEIGHT, CLASS_NAMES, COLUMN_SIGMA_NM, DEFECT_AMP_VAR, DEFECT_JITTER_NM, DEMO_CAMPAIGN, EDS_CHUNK_COLS,
    EDS_GZIP_LEVEL, GENERATOR_VERSION, HAADF_Z_EXPONENT, KFACTORS, LATTICE_NM, QUANT_LINES, REGION_CLASS,
    REGION_COMPOSITION, REGION_NAMES, SessionSpec, _rng,
)
from mmlake.synth.truth import _regions_present, class_composition, class_lattice_nm, manifest, support_chips
from mmlake.synth.write import _eds_signal, _haadf_signal, _write_eds_hspy, build_demo_campaign, main, write_session
from mmlake.synth.xray import (
    _atomic_weight, _element_db, _gauss_binned, _line_energy, _mean_z, _z, atomic_percent_from_weights,
    bremsstrahlung, fwhm_kev, line_family, line_intensities, region_spectrum, weight_fractions,
)

__all__ = [
    "A_STO", "A_LFO", "A_DEFECT", "LATTICE_NM", "CLASS_NAMES", "REGION_NAMES", "REGION_CLASS", "REGION_COMPOSITION",
    "QUANT_LINES", "KFACTORS", "SessionSpec", "DEMO_CAMPAIGN", "Geometry", "make_geometry", "make_haadf", "make_eds",
    "make_arrays", "region_spectrum", "class_composition", "class_lattice_nm", "support_chips", "manifest",
    "write_session", "build_demo_campaign",
]


def make_arrays(spec: SessionSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(haadf float32 (H, W), eds uint16 (H, W, C), truth int8 (H, W)) in memory, no disk."""
    geom = make_geometry(spec)
    return make_haadf(spec, geom), make_eds(spec, geom), geom.truth
