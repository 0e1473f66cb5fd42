"""EDS chip features: summed spectra and Cliff-Lorimer composition through exspy, with counting errors.

Per chip (docs/conventions.md: EDS chip sums are float32 ``(n_chips, n_channels)``, channel energy
``offset + scale * i`` keV):

(a) the summed spectrum, optionally cropped to ``>= 0.2 keV`` (as the preprint's public code,
    ``isig['0.2:']``) and rebinned (:func:`chip_spectra`);
(b) Cliff-Lorimer atomic percents and their Poisson standard errors (:func:`quantify_chips`),
    vectorised by treating the chip grid as the navigation space of one exspy ``EDSTEMSpectrum``.
    The same code path quantifies ONE summed spectrum (:func:`quantify_spectrum`).

Modules: :mod:`~mmlake.eds.lines` (exspy's line database, detector width law),
:mod:`~mmlake.eds.kfactors` (line and k-factor choice, ``mmlake/data/kfactors.yaml``),
:mod:`~mmlake.eds.spectra` (cropping, the exspy signal), :mod:`~mmlake.eds.fit` (the shared linear
line fit and its Poisson covariance), :mod:`~mmlake.eds.cliff_lorimer` (exspy's CL, its closed form
and error propagation), :mod:`~mmlake.eds.quantify` (the two entry points), :mod:`~mmlake.eds.chipfit` (weighted sums of
chips from one fit: regions, bootstrap replicates), :mod:`~mmlake.eds.absorption` (opt-in thin-film
absorption correction).

Why a fit and not exspy's integration windows: on LaFeO3/SrTiO3 with a Cr or Pt cap the windows'
overlaps bias the result far beyond 2 at.% (La_Lb2 at 5.38 keV inside the Cr_Ka window, Ti_Ka at
4.51 keV leaking into the La_La window at 4.65 keV, Pt_Ll into Cu_Ka, Pt_La into Ga_Ka; see
tests/test_eds.py). The fit is the linear equivalent of the model fit (Gaussian families +
polynomial background) the preprint's public code ran per pixel with ``multifit``.
"""

from mmlake.eds.cliff_lorimer import cl_atomic_percent, cl_covariance, cl_jacobian
from mmlake.eds.fit import LineFit, _binned_gauss, design_matrix, fit_line_intensities, fit_lines
from mmlake.eds.kfactors import (EXTRANEOUS_ELEMENTS, EXTRANEOUS_LABEL, KFactorTable, LineSetup,
                                 load_kfactor_table, resolve_lines)
from mmlake.eds.lines import atomic_weight, element_lines, fwhm_kev, known_element, line_energy, line_family
from mmlake.eds.chipfit import ChipFit, fit_chips
from mmlake.eds.quantify import METHOD_VERSION, NO_COUNTS, NO_LINE, CLResult, quantify_chips, quantify_spectrum
from mmlake.eds.spectra import chip_spectra, exspy_signal

__all__ = [
    "ChipFit", "EXTRANEOUS_ELEMENTS", "EXTRANEOUS_LABEL", "fit_chips", "METHOD_VERSION", "NO_COUNTS", "NO_LINE", "CLResult", "KFactorTable",
    "LineFit", "LineSetup", "atomic_weight", "chip_spectra", "cl_atomic_percent", "cl_covariance", "cl_jacobian",
    "design_matrix", "element_lines", "exspy_signal", "fit_line_intensities", "fit_lines", "fwhm_kev",
    "known_element", "line_energy", "line_family", "load_kfactor_table", "quantify_chips", "quantify_spectrum",
    "resolve_lines", "_binned_gauss",
]
