"""Cliff-Lorimer: line intensities -> atomic %, through exspy and in closed form, with the
propagation of the intensities' covariance.

exspy's CL (``quantification(method="CL", composition_units="atomic")``) computes weight fractions
``w_i = k_i I_i / sum_j k_j I_j`` (linear in I: negative noise intensities of absent elements stay
negative) and converts them to atomic fractions ``x_i = (w_i / M_i) / sum_j (w_j / M_j)``. Together:

    x_i = u_i / S,   u_i = k_i I_i / M_i,   S = sum_j u_j

:func:`cl_atomic_percent` is that formula (vectorised; used for bootstrap replicates, where calling
exspy thousands of times would cost minutes); tests check it equals exspy's output. Its Jacobian
``d x_i / d I_l = (delta_il - x_i) k_l / (M_l S)`` propagates a covariance of the intensities
(Poisson counting error from :meth:`mmlake.eds.fit.LineFit.line_covariance`) to the atomic
percents (:func:`cl_covariance`; first-order, accurate while the relative error of S is small).

exspy returns zeros for a spectrum with no intensity above 0.1 counts; such rows are NaN here
(``no_line``), as are rows without counts.
"""

from __future__ import annotations

import numpy as np

from mmlake.eds.kfactors import LineSetup
from mmlake.eds.lines import atomic_weight

#: exspy's CL ignores intensities at or below this many counts when it picks reference lines
EXSPY_MIN_INTENSITY = 0.1


def _u(I: np.ndarray, setup: LineSetup) -> np.ndarray:
    k = np.asarray(setup.kfactors, dtype=np.float64)
    M = np.array([atomic_weight(el) for el in setup.elements])
    return np.asarray(I, dtype=np.float64) * (k / M)[None, :], k / M


def cl_atomic_percent(I: np.ndarray, setup: LineSetup) -> np.ndarray:
    """At.% ``(n, m)`` of intensities ``(n, m)`` (``setup.lines`` order) in closed form; NaN rows
    where no intensity exceeds exspy's 0.1-count threshold (exspy would return zeros)."""
    u, _ = _u(np.atleast_2d(I), setup)
    S = u.sum(axis=1, keepdims=True)
    ok = (np.atleast_2d(I) > EXSPY_MIN_INTENSITY).any(axis=1, keepdims=True) & (S != 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(ok, 100.0 * u / S, np.nan)


def cl_jacobian(I: np.ndarray, setup: LineSetup) -> np.ndarray:
    """``d at% / d I`` ``(n, m, m)``: ``100 (delta_il - x_i) k_l / (M_l S)``."""
    u, kM = _u(np.atleast_2d(I), setup)
    S = u.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        x = u / S[:, None]
        eye = np.eye(u.shape[1])[None]
        return 100.0 * (eye - x[:, :, None]) * (kM[None, None, :] / S[:, None, None])


def cl_covariance(I: np.ndarray, cov_I: np.ndarray, setup: LineSetup) -> np.ndarray:
    """Covariance ``(n, m, m)`` of the at.% of intensities ``I (n, m)`` with covariance ``cov_I``."""
    J = cl_jacobian(I, setup)
    return np.einsum("nij,njk,nlk->nil", J, cov_I, J)


def exspy_cliff_lorimer(s, setup: LineSetup, I: np.ndarray, valid: np.ndarray, nav_shape) -> np.ndarray:
    """exspy's Cliff-Lorimer of the given intensities; returns (n_valid, m) at.%.

    These are the two functions ``EDSTEMSpectrum.quantification(method="CL",
    composition_units="atomic")`` runs (exspy 0.3, ``signals/eds_tem.py``): ``quantification_cliff_
    lorimer`` on the stacked intensities, then ``material.weight_to_atomic`` and ``nan_to_num``,
    called on the arrays. The signal method wraps them in HyperSpy signals (stack, split, deep copies
    of the metadata): ~6 s CPU per call on 2 cores even for 4 chips, the largest single cost of a
    small ingest. ``tests/test_eds.py`` checks this equals the signal method on the same intensities.
    ``s`` and ``nav_shape`` are kept for callers that pass the session's signal."""
    from exspy import material
    from exspy._misc.eds import utils as utils_eds

    n, m = I.shape
    intens = np.where(valid[:, None], I, 0.0).T.astype(np.float64)  # (m, n): elements first, as exspy wants
    factors = [setup.kfactor(line) for line in setup.lines]
    weight = utils_eds.quantification_cliff_lorimer(intens, factors, absorption_correction=None, mask=None) * 100.0
    atomic = np.nan_to_num(material.weight_to_atomic(weight, list(setup.elements)))
    return np.asarray(atomic, dtype=np.float64).T.reshape(n, m)[valid]


def exspy_cliff_lorimer_signals(s, setup: LineSetup, I: np.ndarray, valid: np.ndarray, nav_shape) -> np.ndarray:
    """The same through ``s.quantification`` on HyperSpy intensity signals (the reference the array
    path is tested against). The intensity signals are built as exspy builds them (navigation-only,
    carrying their line name) and handed over in REVERSE order: matching k-factors by line name must
    not care about the order exspy returns them in."""
    from hyperspy.signals import BaseSignal

    n = I.shape[0]
    ints = []
    for j in reversed(range(len(setup.lines))):
        data = np.where(valid, I[:, j], 0.0).reshape(nav_shape)
        sig = BaseSignal(data).transpose(signal_axes=[])
        sig.metadata.General.title = f"X-ray line intensity of {setup.lines[j]}"
        sig.metadata.set_item("Sample.elements", [setup.elements[j]])
        sig.metadata.set_item("Sample.xray_lines", [setup.lines[j]])
        ints.append(sig)
    factors = [setup.kfactor(sig.metadata.Sample.xray_lines[0]) for sig in ints]
    comp = s.quantification(ints, method="CL", factors=factors, composition_units="atomic",
                            navigation_mask=None, plot_result=False, show_progressbar=False)
    out = np.full((n, len(setup.lines)), np.nan)
    for c in comp:
        j = setup.lines.index(c.metadata.Sample.xray_lines[0])
        out[:, j] = np.asarray(c.data, dtype=np.float64).reshape(n)
    return out[valid]
