"""Step-size control: the error norm, the first step, and I / PI controllers.

All of this runs on plain arrays (``raw(...)``): step-size decisions are not
differentiated, and on CuPy each conversion to a Python float here is one device sync
(counted by :func:`nodeform.backend.host_float`); a step makes one, in :func:`error_ratio`.

An embedded pair gives the error estimate ``err`` of each step. Scaled by the
tolerance and reduced to one number (an RMS norm), ``ratio <= 1`` accepts the step.
Since ``err ~ C h^(q+1)`` (``q``: the embedded order), the step that would just
meet the tolerance is ``h * ratio^(-1/(q+1))``; a safety factor and clamps make it
robust. The PI controller also remembers the previous ratio, which damps the
accept/reject oscillation that a pure I controller shows where the step size is
limited by stability rather than accuracy ([2]_ Sec. IV.2).

Taught in chapters/ch02_ode_solvers.py.

.. [1] E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential
       Equations I", 2nd ed., Springer, 1993, Sec. II.4.
.. [2] E. Hairer, G. Wanner, "Solving Ordinary Differential Equations II",
       2nd ed., Springer, 1996, Sec. IV.2.
"""
from __future__ import annotations

import math

from nodeform.backend import get_xp, host_float, raw

__all__ = ["SAFETY", "MIN_FACTOR", "MAX_FACTOR", "PI_ALPHA", "PI_BETA", "CONTROLLERS", "NORMS",
           "controller_exponents", "step_factor", "rms_norm", "max_norm", "resolve_norm",
           "check_safety", "error_ratio", "select_initial_step"]

#: Aim for 90% of the step the error model predicts, since that model is only asymptotic;
#: a step that just misses the tolerance costs a whole rejected step (SciPy, Hairer use 0.9).
SAFETY = 0.9
#: Shrink at most 5x per try: one bad estimate must not collapse h (SciPy's value).
MIN_FACTOR = 0.2
#: Grow at most 10x per step: the error model is unreliable far from the current h.
MAX_FACTOR = 10.0
#: PI gains as multiples of 1/(q+1): beta = 0.2/k and alpha = 1/k - 0.75 beta, i.e. for
#: dopri5 (k = 5) beta = 0.04 and alpha = 0.17, the values of Hairer's DOPRI5 code ([2]_
#: Sec. IV.2). Measured on this project's benchmarks they spend fewer evaluations than
#: Gustafsson's more damped 0.7/k, 0.4/k (neural-ODE MLP 116 vs 152, Van der Pol 1340 vs
#: 1382, Lorenz 506 vs 602 at rtol 1e-6) while still rejecting fewer steps than the I
#: controller on Van der Pol (39 vs 63).
PI_BETA = 0.2
PI_ALPHA = 1.0 - 0.75 * PI_BETA
#: Smallest ratio the PI memory keeps: ratio 0 (e.g. y' = 0) must not divide by zero.
ERR_FLOOR = 1e-4
#: Names accepted by ``controller=`` (a pair of exponents is accepted too).
CONTROLLERS = ("i", "pi")
#: Names accepted by ``norm=`` (a callable is accepted too).
NORMS = ("rms", "max")


def controller_exponents(controller, err_order):
    """``(alpha, beta)`` of ``factor = safety * ratio^-alpha * ratio_prev^beta``.

    Parameters
    ----------
    controller : {"i", "pi"} or (float, float)
        A pair ``(a, b)`` gives the exponents in units of ``1/(q+1)``: ``alpha = a/(q+1)``,
        ``beta = b/(q+1)``; ``(1, 0)`` is the I controller, ``(0.85, 0.2)`` the PI one.
    err_order : int
        Order ``q`` of the embedded solution; ``k = q + 1``.
    """
    k = err_order + 1
    if isinstance(controller, str):
        if controller == "i":
            return 1.0 / k, 0.0
        if controller == "pi":
            return PI_ALPHA / k, PI_BETA / k
    elif isinstance(controller, (tuple, list)) and len(controller) == 2:
        a, b = controller
        if all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)
               for v in (a, b)) and a > 0 and b >= 0:
            return float(a) / k, float(b) / k
    raise ValueError(f"`controller` = {controller!r} is not one of {CONTROLLERS} nor a pair "
                     "(alpha, beta) of exponents in units of 1/(q+1) with alpha > 0, beta >= 0; "
                     "'i' is the classic controller (SciPy's, (1, 0)), 'pi' adds memory of the "
                     "last step ((0.85, 0.2)).")


def check_safety(safety):
    """``safety`` as a float in (0, 1]; a clear error otherwise."""
    if (isinstance(safety, bool) or not isinstance(safety, (int, float))
            or not 0.0 < safety <= 1.0):
        raise ValueError(f"`safety` = {safety!r} must be a number in (0, 1]: the fraction of the "
                         f"step the error model predicts that the controller aims for "
                         f"(default {SAFETY}).")
    return float(safety)


def step_factor(ratio, ratio_prev, alpha, beta, after_reject, safety=SAFETY):
    """How much to multiply ``h`` by after a step with error ``ratio``.

    Parameters
    ----------
    ratio : float
        Scaled RMS error of this step (accepted when <= 1).
    ratio_prev : float
        Ratio of the last accepted step (PI memory).
    alpha, beta : float
        From :func:`controller_exponents`.
    after_reject : bool
        True right after a rejection: then ``h`` may not grow (SciPy, Hairer).
    safety : float
        The fraction of the predicted step to aim for (``SAFETY`` by default).
    """
    if ratio == 0.0:
        factor = MAX_FACTOR
    else:
        factor = safety * ratio ** (-alpha) * ratio_prev ** beta
    if ratio > 1.0:  # rejected: shrink, never by more than MIN_FACTOR
        return min(1.0, max(MIN_FACTOR, factor))
    factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
    return min(1.0, factor) if after_reject else factor


def rms_norm(x):
    """Root-mean-square of a plain array, as a Python float."""
    xp = get_xp(x)
    return host_float(xp.sqrt(xp.mean(x * x))) if x.size else 0.0


def max_norm(x):
    """Largest absolute entry of a plain array, as a Python float (``norm="max"``).

    NaN stays NaN (a non-finite stage must reject the step); an empty array gives 0.0.
    Exercise ex2_12 of chapter 2 (a stub in a student copy; only ``norm="max"`` uses it).
    """
    # BEGIN SOLUTION ex2_12
    xp = get_xp(x)
    return host_float(xp.max(xp.abs(x))) if x.size else 0.0
    # END SOLUTION ex2_12


def resolve_norm(norm):
    """The function behind ``norm=``: ``"rms"`` (default), ``"max"``, or a callable.

    A callable receives the scaled error ``err / (atol + rtol max(|y|, |y_new|))`` as a
    plain array of the state's shape and returns a float; ``<= 1`` accepts the step.
    """
    if norm is None or norm == "rms" or norm is rms_norm:
        return rms_norm
    if norm == "max":
        return max_norm
    if callable(norm) and not isinstance(norm, str):
        return norm
    raise ValueError(f"`norm` = {norm!r} is not one of {NORMS} nor a callable "
                     "norm(scaled_error) -> float; 'rms' is the default, 'max' the strictest.")


def error_ratio(err, y, y_new, rtol, atol, norm=rms_norm):
    """Scaled error ``||err / (atol + rtol * max(|y|, |y_new|))||`` (RMS by default).

    Parameters
    ----------
    err, y, y_new : ndarray, same shape
        Plain arrays (pass ``raw(...)`` of Tensors).
    rtol, atol : float
    norm : callable, optional
        From :func:`resolve_norm`; the RMS norm by default.

    Returns
    -------
    ratio : float
        <= 1 accepts the step. NaN/inf when a stage was non-finite.
    """
    xp = get_xp(y)
    scale = atol + rtol * xp.maximum(xp.abs(y), xp.abs(y_new))
    return host_float(norm(err / scale))


def select_initial_step(f, t0, y0, f0, direction, err_order, rtol, atol, span):
    """Hairer's heuristic for the first step ([1]_ Sec. II.4), one extra evaluation.

    Take ``h0 = 0.01 ||y0|| / ||f0||`` (scaled norms), make an Euler step to estimate
    the second derivative ``d2``, and choose ``h1`` so that ``h1^(q+1) max(d1, d2)
    = 0.01``; return ``min(100 h0, h1, span)``. The Euler step is taken with ``+``
    and ``*`` on ``y0`` (Tensor-safe); only norms use plain arrays.

    Parameters
    ----------
    f : callable ``f(t, y)``
    t0 : float
    y0, f0 : array or Tensor
    direction : float
        +1.0 or -1.0.
    err_order : int
    rtol, atol : float
    span : float
        ``|t_end - t0|``; the first step never exceeds it.

    Returns
    -------
    h_abs : float
    """
    xp = get_xp(y0)
    y0r, f0r = raw(y0), raw(f0)
    scale = atol + xp.abs(y0r) * rtol
    d0, d1 = rms_norm(y0r / scale), rms_norm(f0r / scale)
    h0 = 1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1
    h0 = min(h0, span)
    y1 = y0 + f0 * (direction * h0)
    f1 = f(t0 + direction * h0, y1)
    d2 = rms_norm((raw(f1) - f0r) / scale) / h0
    if not math.isfinite(d2):
        d2 = 0.0  # the probe blew up; fall back on h0 alone and let the controller shrink
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (err_order + 1))
    return min(100 * h0, h1, span)
