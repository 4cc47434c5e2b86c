"""The Numba twins of the reference loops: the whole solve compiled.

Same algorithm, same operation order as :mod:`nodeform.ode.loops` and
:mod:`nodeform.ode.rk` (sums over nonzero weights left to right, the same controller
and the same clamps), so the two engines agree to round-off. Differences by design:
NumPy float64 only, 1-D state, the stages live in a preallocated ``K`` of shape
``(s, n)``, and failures come back as a status code that the Python side turns into
the same :class:`~nodeform.ode.errors.SolverError` the reference raises.

The vector field is an ``@numba.njit`` function ``f(t, y, *args)``; ``args`` is a
tuple passed through unchanged. The tableau arrives as arrays, so one compiled loop
serves every method. ``f`` normally arrives as a function-pointer handle (see
:mod:`nodeform.ode._fnptr`): the loop is then specialized per type of ``args`` only,
and ``cache=True`` loads it from disk in a second process. When ``f`` cannot be called
through a pointer (it returns a non-contiguous or non-float64 array, say), the
dispatcher itself is passed: the loop is specialized per ``f`` and recompiled in every
process.

Debug with ``NUMBA_DISABLE_JIT=1`` (the same code runs as Python), switch the compiled
engine off with ``NODEFORM_NUMBA=0``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit


__all__ = ["solve_adaptive", "solve_fixed", "ST_OK", "ST_MAX_STEPS", "ST_UNDERFLOW",
           "ST_NONFINITE_START", "ST_NONFINITE", "ST_BAD_SHAPE"]

from nodeform.ode._fnptr import field_function
from nodeform.ode.errors import (ST_BAD_SHAPE, ST_MAX_STEPS, ST_NONFINITE, ST_NONFINITE_START,
                                 ST_OK, ST_UNDERFLOW)

# the same constants as nodeform.ode.controller / loops (see the comments there)
SAFETY = 0.9
MIN_FACTOR = 0.2
MAX_FACTOR = 10.0
ERR_FLOOR = 1e-4
UNDERFLOW_ULPS = 10.0
EPS = 2.220446049250313e-16  # float64 machine epsilon
#: Up to this many state components the weighted sums keep one scalar accumulator per
#: component (fastest for small systems); above it they run as contiguous axpy loops over
#: the state, which vectorize (about 2x faster for a 2,000-component batch). Both orders
#: add the same terms in the same order, so the results are identical.
SMALL_N = 16


@njit(cache=True, inline="always")
def _all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True, inline="always")
def _eval(f, t, y, args, K, i):
    """K[i] = f(t, y, *args); False when f returned the wrong length."""
    out = f(t, y, *args)
    if out.shape[0] != K.shape[1]:
        return False
    for m in range(K.shape[1]):
        K[i, m] = out[m]
    return True


@njit(cache=True, inline="always")
def _weighted(K, w, upto, acc):
    """acc = sum_{j < upto, w_j != 0} K_j w_j, accumulated left to right (as rk.weighted_sum).

    j runs outside and m inside, so the inner loop is a contiguous, vectorizable axpy;
    returns False when every weight is zero (acc untouched).
    """
    n = K.shape[1]
    if n <= SMALL_N:  # few components: scalar accumulator per component, no stores per j
        any_w = False
        for m in range(n):
            am = 0.0
            for j in range(upto):
                a = w[j]
                if a != 0.0:
                    am += K[j, m] * a
                    any_w = True
            acc[m] = am
        return any_w
    first = True
    for j in range(upto):
        a = w[j]
        if a != 0.0:
            if first:
                for m in range(n):
                    acc[m] = K[j, m] * a
                first = False
            else:
                for m in range(n):
                    acc[m] += K[j, m] * a
    return not first


@njit(cache=True, inline="always")
def _stages(f, args, t, y, h, A, c, K, y_stage, acc):
    """Stages 1..s-1 into K (K[0] must hold f(t, y)); y_stage ends as the last stage's state."""
    s, n = K.shape
    for i in range(1, s):
        if _weighted(K, A[i], i, acc):
            for m in range(n):
                y_stage[m] = y[m] + acc[m] * h
        else:
            for m in range(n):
                y_stage[m] = y[m]
        if not _eval(f, t + c[i] * h, y_stage, args, K, i):
            return False
    return True


@njit(cache=True, inline="always")
def _combine(y, K, w, h, out, acc):
    """out = y + (sum_j K_j w_j) h over the nonzero weights w."""
    if _weighted(K, w, K.shape[0], acc):
        for m in range(out.shape[0]):
            out[m] = y[m] + acc[m] * h
    else:
        for m in range(out.shape[0]):
            out[m] = y[m]


@njit(cache=True, inline="always")
def _step_factor(ratio, prev_pow, alpha, after_reject):
    """controller.step_factor with ``prev_pow = ratio_prev ** beta`` precomputed."""
    if ratio == 0.0:
        factor = MAX_FACTOR
    else:
        factor = SAFETY * ratio ** (-alpha) * prev_pow
    if ratio > 1.0:
        return min(1.0, max(MIN_FACTOR, factor))
    factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
    if after_reject:
        return min(1.0, factor)
    return factor


@njit(cache=True)
def _rms(x):
    acc = 0.0
    for i in range(x.shape[0]):
        acc += x[i] * x[i]
    return math.sqrt(acc / x.shape[0]) if x.shape[0] > 0 else 0.0


@njit(cache=True)
def _initial_step(f, args, t0, y0, f0, direction, err_order, rtol, atol, span, scratch, K):
    """Hairer's first step (see controller.select_initial_step); uses K[1] as scratch."""
    n = y0.shape[0]
    d0 = 0.0
    d1 = 0.0
    for m in range(n):
        sc = atol + abs(y0[m]) * rtol
        d0 += (y0[m] / sc) ** 2
        d1 += (f0[m] / sc) ** 2
    d0 = math.sqrt(d0 / n) if n else 0.0
    d1 = math.sqrt(d1 / n) if n else 0.0
    h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
    h0 = min(h0, span)
    for m in range(n):
        scratch[m] = y0[m] + f0[m] * (direction * h0)
    if not _eval(f, t0 + direction * h0, scratch, args, K, 1):
        return -1.0
    d2 = 0.0
    for m in range(n):
        sc = atol + abs(y0[m]) * rtol
        d2 += ((K[1, m] - f0[m]) / sc) ** 2
    d2 = (math.sqrt(d2 / n) if n else 0.0) / h0
    if not np.isfinite(d2):
        d2 = 0.0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (err_order + 1))
    return min(100.0 * h0, h1, span)


@njit(cache=True)
def _first_bad_stage(K, upto):
    for i in range(upto):
        if not _all_finite(K[i]):
            return i
    return -1


@njit(cache=True)
def solve_adaptive(f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol, atol,
                   first_step, max_step, max_steps, alpha, beta, trace):
    """Compiled twin of :func:`nodeform.ode.loops.integrate_adaptive`.

    Parameters
    ----------
    f : njit function ``f(t, y, *args) -> ndarray, shape (n,)``, or its handle
        A handle ``(c_addr, jit_addr)`` from :func:`nodeform.ode._fnptr.field_handle`.
    args : tuple
    t_out : ndarray, shape (n_out,)
    y0 : ndarray, shape (n,)
    A, b, c, e, P : ndarray
        The tableau, shapes (s, s), (s,), (s,), (s,), (s, n_poly).
    has_dense, fsal : bool
    err_order : int
    rtol, atol, first_step, max_step : float
        ``first_step <= 0`` selects Hairer's heuristic.
    max_steps : int
    alpha, beta : float
        Controller exponents.
    trace : bool

    Returns
    -------
    ys : ndarray, shape (n_out, n)
    info : ndarray, shape (8,) float64
        status, n_out_done, nfev, n_steps, n_accepted, n_rejected, t_fail, h_fail
    bad_stage : int
    tr : ndarray, shape (n_trace, 4)
        t, h, error ratio, accepted (1.0/0.0) per attempted step.
    """
    f = field_function(f, args)
    n_out = t_out.shape[0]
    n = y0.shape[0]
    s = A.shape[0]
    ys = np.full((n_out, n), np.nan)
    info = np.zeros(8)
    tr = np.zeros((max_steps if trace else 0, 4))
    for m in range(n):
        ys[0, m] = y0[m]
    info[1] = 1
    if n_out == 1:
        return ys, info, -1, tr
    K = np.empty((s, n))
    y = y0.copy()
    y_new = np.empty(n)
    wsum = np.empty(n)
    scratch = np.empty(n)
    t0 = t_out[0]
    t_end = t_out[n_out - 1]
    direction = 1.0 if t_end > t0 else -1.0
    nfev = 0
    n_steps = 0
    n_acc = 0
    n_rej = 0
    t = t0
    ok = _eval(f, t, y, args, K, 0)
    nfev += 1
    if not ok:
        info[0] = ST_BAD_SHAPE
        return ys, info, -1, tr
    if not (_all_finite(K[0]) and _all_finite(y)):
        info[0] = ST_NONFINITE_START
        info[2] = nfev
        info[6] = t
        return ys, info, -1, tr
    if first_step <= 0.0:
        h_abs = _initial_step(f, args, t, y, K[0], direction, err_order, rtol, atol,
                              abs(t_end - t0), scratch, K)
        nfev += 1
        if h_abs < 0.0:
            info[0] = ST_BAD_SHAPE
            return ys, info, -1, tr
    else:
        h_abs = first_step
    h_abs = min(h_abs, max_step)
    prev_pow = 1.0  # ratio_prev ** beta with ratio_prev = 1 before the first step
    after_reject = False
    bad_stage = -1
    k = 1
    status = ST_OK
    h = h_abs * direction
    while k < n_out:
        if n_steps >= max_steps:
            status = ST_MAX_STEPS
            h = h_abs * direction
            break
        min_step = UNDERFLOW_ULPS * EPS * abs(t)
        if h_abs < min_step:
            status = ST_NONFINITE if bad_stage >= 0 else ST_UNDERFLOW
            h = h_abs * direction
            break
        t_stop = t_end if has_dense else t_out[k]
        t_new = t + direction * h_abs
        if direction * (t_new - t_stop) > 0:
            t_new = t_stop
        h = t_new - t
        if not _stages(f, args, t, y, h, A, c, K, y_new, wsum):
            status = ST_BAD_SHAPE
            break
        nfev += s - 1
        n_steps += 1
        if not fsal:
            _combine(y, K, b, h, y_new, wsum)
        _weighted(K, e, s, wsum)
        acc2 = 0.0
        for m in range(n):
            sc = atol + rtol * max(abs(y[m]), abs(y_new[m]))
            acc2 += (wsum[m] * h / sc) ** 2
        ratio = math.sqrt(acc2 / n) if n > 0 else 0.0
        finite = np.isfinite(ratio)
        accepted = finite and ratio <= 1.0
        if trace:
            tr[n_steps - 1, 0] = t
            tr[n_steps - 1, 1] = h
            tr[n_steps - 1, 2] = ratio
            tr[n_steps - 1, 3] = 1.0 if accepted else 0.0
        if not finite:
            bad_stage = _first_bad_stage(K, s)
            n_rej += 1
            h_abs = abs(h) * MIN_FACTOR
            after_reject = True
            continue
        if not accepted:
            n_rej += 1
            h_abs = abs(h) * _step_factor(ratio, prev_pow, alpha, after_reject)
            after_reject = True
            bad_stage = -1
            continue
        while k < n_out and direction * (t_out[k] - t_new) <= 0:
            if t_out[k] == t_new:
                for m in range(n):
                    ys[k, m] = y_new[m]
            else:
                theta = (t_out[k] - t) / h
                for m in range(n):
                    acc = 0.0
                    for i in range(s):
                        w = 0.0
                        p = theta
                        for q in range(P.shape[1]):
                            w += P[i, q] * p
                            p *= theta
                        if w != 0.0:
                            acc += K[i, m] * w
                    ys[k, m] = y[m] + acc * h
            k += 1
        factor = _step_factor(ratio, prev_pow, alpha, after_reject)
        n_acc += 1
        # the PI memory ratio_prev ** beta, computed once per accepted step (I: beta = 0)
        prev_pow = max(ratio, ERR_FLOOR) ** beta if beta != 0.0 else 1.0
        after_reject = False
        bad_stage = -1
        t = t_new
        for m in range(n):
            y[m] = y_new[m]
        if k < n_out:
            if fsal:
                for m in range(n):
                    K[0, m] = K[s - 1, m]
            else:
                if not _eval(f, t, y, args, K, 0):
                    status = ST_BAD_SHAPE
                    break
                nfev += 1
        h_abs = min(abs(h) * factor, max_step)
    info[0] = status
    info[1] = k
    info[2] = nfev
    info[3] = n_steps
    info[4] = n_acc
    info[5] = n_rej
    info[6] = t
    info[7] = h
    return ys, info, bad_stage, tr


@njit(cache=True)
def solve_fixed(f, args, t_out, y0, A, b, c, fsal, counts):
    """Compiled twin of :func:`nodeform.ode.loops.integrate_fixed`.

    ``counts[k]`` is the number of equal steps between ``t_out[k]`` and ``t_out[k+1]``.
    Returns ``ys, info, bad_stage, tr`` as :func:`solve_adaptive` (``tr`` empty).
    """
    f = field_function(f, args)
    n_out = t_out.shape[0]
    n = y0.shape[0]
    s = A.shape[0]
    ys = np.full((n_out, n), np.nan)
    info = np.zeros(8)
    tr = np.zeros((0, 4))
    for m in range(n):
        ys[0, m] = y0[m]
    info[1] = 1
    if n_out == 1:
        return ys, info, -1, tr
    K = np.empty((s, n))
    y = y0.copy()
    y_new = np.empty(n)
    wsum = np.empty(n)
    nfev = 0
    n_steps = 0
    t = t_out[0]
    if not _eval(f, t, y, args, K, 0):
        info[0] = ST_BAD_SHAPE
        return ys, info, -1, tr
    nfev += 1
    if not (_all_finite(K[0]) and _all_finite(y)):
        info[0] = ST_NONFINITE_START
        info[2] = nfev
        info[6] = t
        return ys, info, -1, tr
    for k in range(1, n_out):
        ta = t_out[k - 1]
        nk = counts[k - 1]
        hk = (t_out[k] - ta) / nk
        for i in range(nk):
            t = ta + i * hk
            h = t_out[k] - t if i == nk - 1 else hk
            if not _stages(f, args, t, y, h, A, c, K, y_new, wsum):
                info[0] = ST_BAD_SHAPE
                return ys, info, -1, tr
            nfev += s - 1
            n_steps += 1
            if not fsal:
                _combine(y, K, b, h, y_new, wsum)
            if not _all_finite(y_new):
                info[0] = ST_NONFINITE
                info[1] = k
                info[2] = nfev
                info[3] = n_steps
                info[4] = n_steps
                info[6] = t
                info[7] = h
                return ys, info, _first_bad_stage(K, s), tr
            for m in range(n):
                y[m] = y_new[m]
            if fsal:
                for m in range(n):
                    K[0, m] = K[s - 1, m]
            elif not (k == n_out - 1 and i == nk - 1):
                if not _eval(f, t + h, y, args, K, 0):
                    info[0] = ST_BAD_SHAPE
                    return ys, info, -1, tr
                nfev += 1
        for m in range(n):
            ys[k, m] = y[m]
    info[0] = ST_OK
    info[1] = n_out
    info[2] = nfev
    info[3] = n_steps
    info[4] = n_steps
    info[6] = t
    return ys, info, -1, tr
