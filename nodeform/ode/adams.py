r"""Adaptive Adams–Bashforth–Moulton: variable step, variable order 1–12, PECE.

The paper's own experiments ran an Adams method (LSODE through SciPy). This module is
that family, written from the textbook ([1]_ Sec. III.5, [2]_ Ch. 5–6) in ``xp`` code,
so it runs on NumPy and CuPy arrays and on Tensors (backprop through the solver).

The method in one page
----------------------
A multistep method remembers the derivatives ``f_n, f_{n-1}, ...`` at past steps.
Over one step ``t_n -> t_{n+1} = t_n + h`` the ODE says
``y_{n+1} = y_n + \int f``; Adams replaces ``f`` by the polynomial through
the remembered points and integrates it exactly. In Newton form, with

* ``psi_i = t_{n+1} - t_{n-i}`` (``psi_0 = h``) and ``alpha_i = h / psi_i``,
* the *modified divided differences* ``Phi_j(n) = prod_{i<j} (t_n - t_{n-1-i})
  f[t_n, ..., t_{n-j}]`` (kept between steps), and
  ``Phi*_j(n) = beta_j Phi_j(n)`` with ``beta_j = prod_{i<j} psi_i / (t_n - t_{n-1-i})``,
* the integration coefficients ``g_j = \int_0^1 P_j(s) ds`` with ``P_0 = 1``,
  ``P_j(s) = s prod_{i=1}^{j-1} (1 - alpha_i (1 - s))``,

one step of order ``k`` is, in PECE form (Predict, Evaluate, Correct, Evaluate):

1. **P**: ``p = y_n + h sum_{j<k} g_j Phi*_j(n)`` (Adams–Bashforth, ``k`` points);
2. **E**: ``f_p = f(t_{n+1}, p)``;
3. **C**: ``y_{n+1} = p + h g_k Phi^p_k`` with
   ``Phi^p_k = f_p - sum_{j<k} Phi*_j(n)`` (Adams–Moulton on ``k + 1`` points:
   order ``k + 1``, the "local extrapolation" of Shampine–Gordon);
4. **E**: ``f_{n+1} = f(t_{n+1}, y_{n+1})`` and the differences move on:
   ``Phi_0(n+1) = f_{n+1}``, ``Phi_{j+1}(n+1) = Phi_j(n+1) - Phi*_j(n)``.

Two evaluations per accepted step, one per rejected step, whatever the order.

Error, order and step ([2]_ Ch. 6, LSODE's choices [3]_)
---------------------------------------------------------
The corrector minus the predictor, ``h g_k Phi^p_k``, measures the local error: the
order-``k`` estimate is ``ERK(k) = |h (g_k - g_{k-1})| ||Phi^p_k||`` (scaled RMS norm,
as for the Runge–Kutta pairs). The same expression at ``k - 1``, ``k - 2`` (predicted
differences) and at ``k + 1`` (the corrected difference ``Phi_{k+1}(n+1)``) says what
the neighbouring orders would have committed. ``ERK(k) <= 1`` accepts the step. Each
order ``j`` then proposes the step ``h (BIAS_j ERK(j))^{-1/(j+1)}``; the largest wins
(biased, as in LSODE, towards keeping the order; raising only after ``k + 1`` steps at
the same order). The integration starts at order 1 with Hairer's first step and, like
Shampine–Gordon's "phase 1", raises the order and doubles the step after every
step until the estimates say stop. A rejected step is retried from the last accepted
state with the history untouched; after three rejections in a row the order restarts
at 1. Outputs between steps come from the step's own polynomial (dense output at no
extra evaluation): ``y(t_n + s h) = y_n + h sum_{j<k} g_j(s) Phi*_j + h g_k(s) Phi^p_k``,
``g_j(s) = \int_0^s P_j``, which is ``y_{n+1}`` at ``s = 1``.

The coefficients ``g_j(s)`` are integrals of polynomials of degree ``j <= 13``;
Gauss–Legendre quadrature with 7 nodes integrates them exactly (up to rounding), for
the step (``s = 1``) and for dense output alike.

The Tensor contract is that of :mod:`nodeform.ode.loops`: states and differences are
combined only with ``+``, ``-`` and ``*`` by Python floats; norms and step decisions
use plain arrays. The Numba twin (:mod:`nodeform.ode._numba_adams`) does the same
operations in the same order.

Taught in chapters/ch05_adaptive_computation.py.

.. [1] E. Hairer, S. P. Nørsett, G. Wanner, "Solving Ordinary Differential
       Equations I", 2nd ed., Springer, 1993, Sec. III.5 (variable step size
       multistep methods) and III.7.
.. [2] L. F. Shampine, M. K. Gordon, "Computer Solution of Ordinary Differential
       Equations: the Initial Value Problem", Freeman, 1975.
.. [3] A. C. Hindmarsh, "ODEPACK, a systematized collection of ODE solvers", 1983.
"""
from __future__ import annotations

import functools
import math

import numpy as np

from nodeform.backend import get_xp, host_bool, raw
from nodeform.ode import controller as ctl
from nodeform.ode.errors import (MaxStepsError, NonFiniteError, StepSizeUnderflowError,
                                 max_steps_message, nonfinite_message, underflow_message)
from nodeform.ode.loops import (EPS, MAX_STEPS, UNDERFLOW_ULPS, check_vector_field_output,
                                new_stats)
from nodeform.ode.rk import weighted_sum

__all__ = ["MAX_ORDER", "ADAMS", "AdamsMethod", "integrate_adams", "integration_coefficients",
           "gauss_legendre"]

#: Highest order (predictor points). 12 is the ceiling of DE/STEP and LSODE's Adams: higher
#: orders gain little in float64 and the variable-step formulas lose stability.
MAX_ORDER = 12
#: Gauss–Legendre nodes for the coefficients: exact for degree 2 * 7 - 1 = 13 >= MAX_ORDER + 1.
GAUSS_NODES = 7
#: LSODE's biases on the three candidate orders' error estimates (lower, same, higher):
#: they favour keeping the order, since a change costs history and can oscillate.
BIAS_DOWN, BIAS_SAME, BIAS_UP = 1.3, 1.2, 1.4
#: Largest step growth per accepted step: variable-step Adams formulas stay stable for
#: bounded step ratios (Shampine–Gordon double at most).
MAX_GROWTH = 2.0
#: Smallest shrink per accepted step (a step that passes but barely).
MIN_SHRINK = 0.5
#: After a rejection the step shrinks by a factor in [REJECT_MIN, REJECT_MAX]: at least
#: 10% (else the retry fails again), at most 5x (one bad estimate must not collapse h).
REJECT_MIN, REJECT_MAX = 0.2, 0.9
#: Rejections in a row after which the order restarts at 1 (Shampine–Gordon: 3).
RESTART_AFTER = 3
#: Shrink of h after a rejection with NaN/inf (an overflow, not an error estimate).
NONFINITE_SHRINK = 0.25
#: Keeps ``ERK^(1/(j+1))`` away from zero in the step proposal (LSODE's 1e-6).
TINY = 1e-6


class AdamsMethod:
    """The marker that ``method="adams"`` resolves to (what a tableau is for RK methods)."""

    name = "adams"
    adaptive = True
    max_order = MAX_ORDER

    def __repr__(self):
        return "AdamsMethod('adams', orders 1-12, PECE)"


#: The one instance: ``solve(..., method="adams")`` runs :func:`integrate_adams`.
ADAMS = AdamsMethod()


# ============================================================================= coefficients

@functools.lru_cache(maxsize=None)
def gauss_legendre(n=GAUSS_NODES):
    """Nodes and weights of ``n``-point Gauss–Legendre on [0, 1], as tuples of floats."""
    x, w = np.polynomial.legendre.leggauss(n)
    return tuple(float(v) for v in (x + 1.0) / 2.0), tuple(float(v) for v in w / 2.0)


def integration_coefficients(alpha, J, s=1.0):
    """``g_j(s) = int_0^s P_j(u) du`` for ``j = 0..J``.

    Parameters
    ----------
    alpha : sequence of float
        ``alpha_i = h / psi_i``; entries ``1..J-1`` are used (``alpha_0 = 1``).
    J : int
        Highest index.
    s : float
        Upper limit: 1 for the step, in (0, 1] for dense output.

    Returns
    -------
    list of float, length J + 1
        With constant steps (``alpha_i = 1/(i+1)``) and ``s = 1`` these are the
        Adams–Bashforth coefficients ``1, 1/2, 5/12, 3/8, 251/720, ...``.
    """
    x, w = gauss_legendre()
    g = [0.0] * (J + 1)
    for xm, wm in zip(x, w):
        u = s * xm
        wt = s * wm
        g[0] += wt
        p = u
        for j in range(1, J + 1):
            g[j] += wt * p
            p *= 1.0 - alpha[j] * (1.0 - u) if j < J else 1.0
    return g


def _geometry(t, t_new, ts_hist, jmax):
    """``alpha_i`` (i <= jmax) and ``beta_j`` (j <= jmax) of the step ``t -> t_new``."""
    h = t_new - t
    alpha = [1.0]
    beta = [1.0]
    for j in range(1, jmax + 1):
        psi_prev = t_new - ts_hist[j - 1]            # psi_{j-1}(n)
        # beta_j = beta_{j-1} psi_{j-1}(n) / psi_{j-1}(n-1), the ratio formed first: the
        # divisions are then independent of each other (the compiled twin computes them
        # side by side; the same numbers here)
        beta.append(beta[j - 1] * (psi_prev / (t - ts_hist[j])))
        alpha.append(h / (t_new - ts_hist[j]))       # h / psi_j(n)
    return alpha, beta


def _scaled_rms(v, scale):
    """``||v / scale||_rms`` of plain arrays, as a Python float."""
    return ctl.rms_norm(v / scale)


def _proposal(est, j, bias):
    """The step factor order ``j`` proposes from its error estimate ``est``."""
    return 1.0 / (bias * est ** (1.0 / (j + 1)) + TINY)


# ============================================================================= the loop

def _fail(exc, ys, stats):
    exc.partial = ys
    exc.stats = stats
    return exc


def integrate_adams(f, t_out, y0, rtol, atol, first_step=None, max_steps=MAX_STEPS,
                    max_step=math.inf, max_order=MAX_ORDER, trace=False):
    """Integrate with the variable-step, variable-order Adams PECE method.

    Parameters
    ----------
    f : callable ``f(t, y)``
    t_out : sequence of float, shape (n_out,)
        Strictly monotone output times (increasing or decreasing); ``t_out[0]`` is the start.
    y0 : array or Tensor, any shape
    rtol, atol : float
        Tolerances of the scaled RMS error norm.
    first_step : float, optional
        Size of the first step; default: Hairer's heuristic for order 1 (one evaluation).
    max_steps : int
        Most attempted steps before :class:`MaxStepsError`.
    max_step : float
        Largest step size.
    max_order : int
        Highest order, 1..12 (``max_order = k`` with a ``k``-point predictor gives a
        propagated solution of order ``k + 1``).
    trace : bool
        Record every attempted step.

    Returns
    -------
    ys : list of n_out states
    stats : dict
        ``nfev``, ``n_steps``, ``n_accepted``, ``n_rejected``.
    trace : dict of lists or None
        ``t``, ``h``, ``error_ratio``, ``accepted`` and ``order`` per attempted step.
    """
    t_out = [float(t) for t in t_out]
    stats = new_stats()
    tr = ({"t": [], "h": [], "error_ratio": [], "accepted": [], "order": []} if trace
          else None)
    ys = [y0]
    n_out = len(t_out)
    if n_out == 1:
        return ys, stats, tr
    t0, t_end = t_out[0], t_out[-1]
    direction = 1.0 if t_end > t0 else -1.0
    span = abs(t_end - t0)
    xp = get_xp(raw(y0))
    t, y = t0, y0
    f0 = f(t, y)
    stats["nfev"] += 1
    check_vector_field_output(f0, y0, t)
    if not (host_bool(xp.isfinite(raw(f0)).all()) and host_bool(xp.isfinite(raw(y0)).all())):
        what = "initial state y0" if not host_bool(xp.isfinite(raw(y0)).all()) else \
            "derivative f(t0, y0)"
        raise _fail(NonFiniteError(nonfinite_message(what, t, 0), t=t, step=0), ys, stats)
    if first_step is None:
        h_abs = ctl.select_initial_step(f, t, y, f0, direction, 1, rtol, atol, span)
        stats["nfev"] += 1
    else:
        h_abs = float(first_step)
    h_abs = min(h_abs, max_step)
    cap = max_order + 2          # differences kept: Phi_0 .. Phi_{max_order + 1}
    phi = [f0]                   # Phi_j(n), j = 0 .. len(phi) - 1
    ts_hist = [t0]               # t_n, t_{n-1}, ... (at least len(phi) of them)
    k = 1                        # order of the next step
    phase1 = True                # start phase: raise the order and double h each step
    n_same = 0                   # accepted steps at the current order
    n_fail = 0                   # rejections in a row
    bad_stage = None
    kk = 1                       # next output to produce
    while kk < n_out:
        if stats["n_steps"] >= max_steps:
            raise _fail(MaxStepsError(max_steps_message(
                max_steps, t, t_end, h_abs * direction, stats["n_accepted"],
                stats["n_rejected"]), t=t, step=stats["n_steps"]), ys, stats)
        min_step = UNDERFLOW_ULPS * EPS * max(abs(t), span)
        if h_abs < min_step:
            exc = NonFiniteError if bad_stage is not None else StepSizeUnderflowError
            raise _fail(exc(underflow_message(t, stats["n_steps"], h_abs * direction, bad_stage),
                            t=t, step=stats["n_steps"]), ys, stats)
        t_new = t + direction * h_abs
        if direction * (t_new - t_end) > 0:
            t_new = t_end
        h = t_new - t
        q = len(phi)
        jmax = min(q - 1, k)                  # Phi*_j needed for j <= jmax
        alpha, beta = _geometry(t, t_new, ts_hist, jmax)
        g = integration_coefficients(alpha, jmax + 1)
        # ---- P, E, C
        p = y + weighted_sum(phi, tuple((j, h * g[j] * beta[j]) for j in range(k)))
        fp = f(t_new, p)
        stats["nfev"] += 1
        stats["n_steps"] += 1
        phik = fp - weighted_sum(phi, tuple((j, beta[j]) for j in range(k)))
        y_new = p + phik * (h * g[k])
        # ---- error estimates on plain arrays: orders k (acceptance), k-1, k-2
        yr, ynr = raw(y), raw(y_new)
        scale = atol + rtol * xp.maximum(xp.abs(yr), xp.abs(ynr))
        erk = abs(h * (g[k] - g[k - 1])) * _scaled_rms(raw(phik), scale)
        # Phi^p_{j-1} = Phi^p_j + Phi*_{j-1}: the lower orders' differences, one axpy each
        erk_down = erk_down2 = math.inf
        if k >= 2:
            acc = raw(phik) + raw(phi[k - 1]) * beta[k - 1]
            erk_down = abs(h * (g[k - 1] - g[k - 2])) * _scaled_rms(acc, scale)
            if k >= 3:
                acc = acc + raw(phi[k - 2]) * beta[k - 2]
                erk_down2 = abs(h * (g[k - 2] - g[k - 3])) * _scaled_rms(acc, scale)
        finite = math.isfinite(erk)
        accepted = finite and erk <= 1.0
        if tr is not None:
            tr["t"].append(t)
            tr["h"].append(h)
            tr["error_ratio"].append(erk)
            tr["accepted"].append(accepted)
            tr["order"].append(k)
        if not accepted:
            stats["n_rejected"] += 1
            n_fail += 1
            phase1 = False
            n_same = 0
            if not finite:
                bad_stage = 0
                h_abs = abs(h) * NONFINITE_SHRINK
                continue
            bad_stage = None
            if n_fail >= RESTART_AFTER:
                k = 1
                factor = MIN_SHRINK if erk < 2.0 ** 2 else REJECT_MIN
            else:
                if k >= 2 and erk_down <= erk:
                    k -= 1
                    est, bias = erk_down, BIAS_DOWN
                else:
                    est, bias = erk, BIAS_SAME
                factor = min(REJECT_MAX, max(REJECT_MIN, _proposal(est, k, bias)))
            h_abs = abs(h) * factor
            continue
        # ---- accepted: outputs inside (t, t_new] from the step's polynomial
        while kk < n_out and direction * (t_out[kk] - t_new) <= 0:
            if t_out[kk] == t_new:
                ys.append(y_new)
            else:
                s = (t_out[kk] - t) / h
                gs = integration_coefficients(alpha, k, s)
                terms = tuple((j, h * gs[j] * beta[j]) for j in range(k))
                ys.append(y + weighted_sum(phi, terms) + phik * (h * gs[k]))
            kk += 1
        stats["n_accepted"] += 1
        n_fail = 0
        bad_stage = None
        ts_hist = [t_new] + ts_hist[:cap - 1]
        t, y = t_new, y_new
        if kk >= n_out:
            break
        # ---- E: the derivative at the accepted point, and the new differences
        f_new = f(t, y)
        stats["nfev"] += 1
        new = [f_new]
        for j in range(jmax + 1):
            new.append(new[j] - phi[j] * beta[j])
        erk_up = math.inf
        if q >= k + 1 and k < max_order:
            erk_up = abs(h * (g[k + 1] - g[k])) * _scaled_rms(raw(new[k + 1]), scale)
        phi = new[:cap]
        # ---- the next order and step
        k_new, factor = _select(k, erk, erk_down, erk_down2, erk_up, n_same, phase1,
                                max_order, len(phi))
        if phase1 and (k_new <= k or factor < MAX_GROWTH):
            phase1 = False
        n_same = n_same + 1 if k_new == k else 0
        k = k_new
        h_abs = min(abs(h) * factor, max_step)
    return ys, stats, tr


def _select(k, erk, erk_down, erk_down2, erk_up, n_same, phase1, max_order, q):
    """``(k_new, factor)`` after an accepted step of order ``k``.

    Each candidate order proposes a step factor from its error estimate; the largest
    wins. Lowering needs ``k-1`` (and ``k-2``) to look no worse than ``k``; raising
    needs ``k + 1`` steps at this order (in phase 1: none) and the ``k+1`` estimate.
    """
    if phase1 and k < max_order and k < q and not (k >= 2 and erk_down <= erk):
        return k + 1, min(MAX_GROWTH, max(1.0, _proposal(erk, k, BIAS_SAME)))
    best_k, best = k, _proposal(erk, k, BIAS_SAME)
    if k >= 2 and max(erk_down, erk_down2 if k >= 3 else 0.0) <= erk:
        r = _proposal(erk_down, k - 1, BIAS_DOWN)
        if r > best:
            best_k, best = k - 1, r
    if n_same >= k + 1 and k < max_order and k < q and math.isfinite(erk_up):
        r = _proposal(erk_up, k + 1, BIAS_UP)
        if r > best:
            best_k, best = k + 1, r
    return best_k, min(MAX_GROWTH, max(MIN_SHRINK, best))
