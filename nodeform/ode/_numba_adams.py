"""The Numba twin of the Adams PECE loop (:mod:`nodeform.ode.adams`): the whole solve compiled.

Same algorithm, same constants and the same floating-point operations in the same order
as the reference :func:`~nodeform.ode.adams.integrate_adams` (weighted sums left to
right over the differences, the coefficients by the same quadrature), so the two
engines take the same steps and orders and agree to round-off; only the RMS norms sum
in another order (last-bit differences). NumPy float64 only, 1-D state; the
differences live in preallocated ``(MAX_ORDER + 2, n)`` arrays; failures come back as
a status code (:mod:`nodeform.ode.errors`) that the Python side turns into the same
error the reference raises.

The vector field ``f(t, y, *args)`` arrives as a function-pointer handle
(:mod:`nodeform.ode._fnptr`), so the loop is compiled once per type of ``args`` and
loaded from Numba's disk cache in later processes; a field that cannot be called
through a pointer is passed as the dispatcher itself (recompiled per process).

Debug with ``NUMBA_DISABLE_JIT=1`` (the same code runs as Python).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit

from nodeform.ode import adams as _ref
from nodeform.ode._fnptr import field_function
from nodeform.ode.errors import (ST_BAD_SHAPE, ST_MAX_STEPS, ST_NONFINITE, ST_NONFINITE_START,
                                 ST_OK, ST_UNDERFLOW)

__all__ = ["solve_adams", "gauss_arrays"]

# the reference's constants (see nodeform.ode.adams for why each has its value)
BIAS_DOWN, BIAS_SAME, BIAS_UP = _ref.BIAS_DOWN, _ref.BIAS_SAME, _ref.BIAS_UP
MAX_GROWTH, MIN_SHRINK = _ref.MAX_GROWTH, _ref.MIN_SHRINK
REJECT_MIN, REJECT_MAX = _ref.REJECT_MIN, _ref.REJECT_MAX
RESTART_AFTER = _ref.RESTART_AFTER
NONFINITE_SHRINK = _ref.NONFINITE_SHRINK
TINY = _ref.TINY
UNDERFLOW_ULPS = 10.0
EPS = 2.220446049250313e-16  # float64 machine epsilon


_GAUSS = []  # the arrays, built on first use (no work at import time)


def gauss_arrays():
    """The reference's Gauss–Legendre nodes and weights on [0, 1] as float64 arrays."""
    if not _GAUSS:
        x, w = _ref.gauss_legendre()
        _GAUSS.append((np.array(x), np.array(w)))
    return _GAUSS[0]


@njit(cache=True)
def _coefficients(alpha, J, s, x, w, g, pv, wv):
    """g[j] = int_0^s P_j for j <= J (as adams.integration_coefficients).

    The loops run j outside and the nodes inside (the reference runs them the other way
    round): each node's product and each g[j]'s sum see the same operations in the same
    order, so the numbers are identical, but the nodes' products no longer form one long
    chain of dependent multiplications (about 2x faster per step). ``pv``, ``wv``:
    scratch of the nodes' size.
    """
    nq = x.shape[0]
    acc = 0.0
    for m in range(nq):
        wv[m] = s * w[m]
        pv[m] = s * x[m]          # P_1(u_m) = u_m
        acc += wv[m]
    g[0] = acc
    for j in range(1, J + 1):
        acc = 0.0
        for m in range(nq):
            acc += wv[m] * pv[m]
        g[j] = acc
        if j < J:
            aj = alpha[j]
            for m in range(nq):
                pv[m] *= 1.0 - aj * (1.0 - s * x[m])


@njit(cache=True)
def _srms(v, scale):
    acc = 0.0
    n = v.shape[0]
    for m in range(n):
        x = v[m] / scale[m]
        acc += x * x
    return math.sqrt(acc / n) if n > 0 else 0.0


@njit(cache=True)
def _proposal(est, j, bias):
    return 1.0 / (bias * est ** (1.0 / (j + 1)) + TINY)


@njit(cache=True)
def _select(k, erk, erk_down, erk_down2, erk_up, n_same, phase1, max_order, q):
    if phase1 and k < max_order and k < q and not (k >= 2 and erk_down <= erk):
        return k + 1, min(MAX_GROWTH, max(1.0, _proposal(erk, k, BIAS_SAME)))
    best_k = k
    best = _proposal(erk, k, BIAS_SAME)
    if k >= 2 and max(erk_down, erk_down2 if k >= 3 else 0.0) <= erk:
        r = _proposal(erk_down, k - 1, BIAS_DOWN)
        if r > best:
            best_k = k - 1
            best = r
    if n_same >= k + 1 and k < max_order and k < q and np.isfinite(erk_up):
        r = _proposal(erk_up, k + 1, BIAS_UP)
        if r > best:
            best_k = k + 1
            best = r
    return best_k, min(MAX_GROWTH, max(MIN_SHRINK, best))


@njit(cache=True)
def _all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True)
def solve_adams(f, args, t_out, y0, rtol, atol, first_step, max_step, max_steps, max_order,
                trace, gx, gw):
    """Compiled twin of :func:`nodeform.ode.adams.integrate_adams`.

    Parameters
    ----------
    f : njit function ``f(t, y, *args) -> ndarray, shape (n,)``, or its handle
    args : tuple
    t_out : ndarray, shape (n_out,)
    y0 : ndarray, shape (n,)
    rtol, atol, first_step, max_step : float
        ``first_step <= 0`` selects Hairer's heuristic.
    max_steps, max_order : int
    trace : bool
    gx, gw : ndarray, shape (GAUSS_NODES,)
        Quadrature nodes and weights on [0, 1] (:func:`gauss_arrays`).

    Returns
    -------
    ys : ndarray, shape (n_out, n)
    info : ndarray, shape (8,)
        status, n_out_done, nfev, n_steps, n_accepted, n_rejected, t_fail, h_fail
    bad_stage : int
    tr : ndarray, shape (n_trace, 5)
        t, h, error ratio, accepted (1.0/0.0), order per attempted step.
    """
    f = field_function(f, args)
    n_out = t_out.shape[0]
    n = y0.shape[0]
    ys = np.full((n_out, n), np.nan)
    info = np.zeros(8)
    tr = np.zeros((max_steps if trace else 0, 5))
    for m in range(n):
        ys[0, m] = y0[m]
    info[1] = 1
    if n_out == 1:
        return ys, info, -1, tr
    cap = max_order + 2
    phi = np.empty((cap, n))
    new = np.empty((cap, n))
    ts_hist = np.empty(cap)
    alpha = np.empty(cap + 1)
    beta = np.empty(cap + 1)
    g = np.empty(cap + 1)
    gs = np.empty(cap + 1)
    pv = np.empty(gx.shape[0])
    wv = np.empty(gx.shape[0])
    y = y0.copy()
    y_new = np.empty(n)
    p = np.empty(n)
    phik = np.empty(n)
    scale = np.empty(n)
    acc = np.empty(n)
    t0 = t_out[0]
    t_end = t_out[n_out - 1]
    direction = 1.0 if t_end > t0 else -1.0
    span = abs(t_end - t0)
    nfev = 0
    n_steps = 0
    n_acc = 0
    n_rej = 0
    t = t0
    out = f(t, y, *args)
    nfev += 1
    if out.shape[0] != n:
        info[0] = ST_BAD_SHAPE
        return ys, info, -1, tr
    for m in range(n):
        phi[0, m] = out[m]
    if not (_all_finite(phi[0]) and _all_finite(y)):
        info[0] = ST_NONFINITE_START
        info[2] = nfev
        info[6] = t
        return ys, info, -1, tr
    if first_step <= 0.0:
        # Hairer's first step for order 1 (as controller.select_initial_step)
        d0 = 0.0
        d1 = 0.0
        for m in range(n):
            sc = atol + abs(y[m]) * rtol
            d0 += (y[m] / sc) ** 2
            d1 += (phi[0, m] / sc) ** 2
        d0 = math.sqrt(d0 / n) if n else 0.0
        d1 = math.sqrt(d1 / n) if n else 0.0
        h0 = 1e-6 if (d0 < 1e-5 or d1 < 1e-5) else 0.01 * d0 / d1
        h0 = min(h0, span)
        for m in range(n):
            p[m] = y[m] + phi[0, m] * (direction * h0)
        out = f(t + direction * h0, p, *args)
        nfev += 1
        if out.shape[0] != n:
            info[0] = ST_BAD_SHAPE
            return ys, info, -1, tr
        d2 = 0.0
        for m in range(n):
            sc = atol + abs(y[m]) * rtol
            d2 += ((out[m] - phi[0, m]) / sc) ** 2
        d2 = (math.sqrt(d2 / n) if n else 0.0) / h0
        if not np.isfinite(d2):
            d2 = 0.0
        if d1 <= 1e-15 and d2 <= 1e-15:
            h1 = max(1e-6, h0 * 1e-3)
        else:
            h1 = (0.01 / max(d1, d2)) ** (1.0 / 2.0)
        h_abs = min(100.0 * h0, h1, span)
    else:
        h_abs = first_step
    h_abs = min(h_abs, max_step)
    q = 1
    ts_hist[0] = t0
    nts = 1
    k = 1
    phase1 = True
    n_same = 0
    n_fail = 0
    bad_stage = -1
    kk = 1
    status = ST_OK
    h = h_abs * direction
    while kk < n_out:
        if n_steps >= max_steps:
            status = ST_MAX_STEPS
            h = h_abs * direction
            break
        min_step = UNDERFLOW_ULPS * EPS * max(abs(t), span)
        if h_abs < min_step:
            status = ST_NONFINITE if bad_stage >= 0 else ST_UNDERFLOW
            h = h_abs * direction
            break
        t_new = t + direction * h_abs
        if direction * (t_new - t_end) > 0:
            t_new = t_end
        h = t_new - t
        jmax = min(q - 1, k)
        alpha[0] = 1.0
        beta[0] = 1.0
        for j in range(1, jmax + 1):
            psi_prev = t_new - ts_hist[j - 1]
            beta[j] = beta[j - 1] * psi_prev / (t - ts_hist[j])
            alpha[j] = h / (t_new - ts_hist[j])
        _coefficients(alpha, jmax + 1, 1.0, gx, gw, g, pv, wv)
        # ---- P, E, C
        for m in range(n):
            a = phi[0, m] * (h * g[0] * beta[0])
            for j in range(1, k):
                a = a + phi[j, m] * (h * g[j] * beta[j])
            p[m] = y[m] + a
        out = f(t_new, p, *args)
        nfev += 1
        n_steps += 1
        if out.shape[0] != n:
            status = ST_BAD_SHAPE
            break
        for m in range(n):
            a = phi[0, m] * beta[0]
            for j in range(1, k):
                a = a + phi[j, m] * beta[j]
            phik[m] = out[m] - a
            y_new[m] = p[m] + phik[m] * (h * g[k])
            scale[m] = atol + rtol * max(abs(y[m]), abs(y_new[m]))
        erk = abs(h * (g[k] - g[k - 1])) * _srms(phik, scale)
        erk_down = np.inf
        erk_down2 = np.inf
        if k >= 2:
            b1 = beta[k - 1]
            for m in range(n):
                acc[m] = phik[m] + phi[k - 1, m] * b1
            erk_down = abs(h * (g[k - 1] - g[k - 2])) * _srms(acc, scale)
            if k >= 3:
                b2 = beta[k - 2]
                for m in range(n):
                    acc[m] = acc[m] + phi[k - 2, m] * b2
                erk_down2 = abs(h * (g[k - 2] - g[k - 3])) * _srms(acc, scale)
        finite = np.isfinite(erk)
        accepted = finite and erk <= 1.0
        if trace:
            tr[n_steps - 1, 0] = t
            tr[n_steps - 1, 1] = h
            tr[n_steps - 1, 2] = erk
            tr[n_steps - 1, 3] = 1.0 if accepted else 0.0
            tr[n_steps - 1, 4] = k
        if not accepted:
            n_rej += 1
            n_fail += 1
            phase1 = False
            n_same = 0
            if not finite:
                bad_stage = 0
                h_abs = abs(h) * NONFINITE_SHRINK
                continue
            bad_stage = -1
            if n_fail >= RESTART_AFTER:
                k = 1
                factor = MIN_SHRINK if erk < 2.0 ** 2 else REJECT_MIN
            else:
                if k >= 2 and erk_down <= erk:
                    k -= 1
                    est = erk_down
                    bias = BIAS_DOWN
                else:
                    est = erk
                    bias = BIAS_SAME
                factor = min(REJECT_MAX, max(REJECT_MIN, _proposal(est, k, bias)))
            h_abs = abs(h) * factor
            continue
        # ---- accepted: outputs inside (t, t_new]
        while kk < n_out and direction * (t_out[kk] - t_new) <= 0:
            if t_out[kk] == t_new:
                for m in range(n):
                    ys[kk, m] = y_new[m]
            else:
                s = (t_out[kk] - t) / h
                _coefficients(alpha, k, s, gx, gw, gs, pv, wv)
                for m in range(n):
                    a = phi[0, m] * (h * gs[0] * beta[0])
                    for j in range(1, k):
                        a = a + phi[j, m] * (h * gs[j] * beta[j])
                    ys[kk, m] = y[m] + a + phik[m] * (h * gs[k])
            kk += 1
        n_acc += 1
        n_fail = 0
        bad_stage = -1
        for i in range(min(nts, cap - 1), 0, -1):
            ts_hist[i] = ts_hist[i - 1]
        ts_hist[0] = t_new
        nts = min(nts + 1, cap)
        t = t_new
        y, y_new = y_new, y
        if kk >= n_out:
            break
        # ---- E: the derivative at the accepted point, and the new differences
        out = f(t, y, *args)
        nfev += 1
        if out.shape[0] != n:
            status = ST_BAD_SHAPE
            break
        for m in range(n):
            new[0, m] = out[m]
        for j in range(jmax + 1):
            for m in range(n):
                new[j + 1, m] = new[j, m] - phi[j, m] * beta[j]
        erk_up = np.inf
        if q >= k + 1 and k < max_order:
            erk_up = abs(h * (g[k + 1] - g[k])) * _srms(new[k + 1], scale)
        q = min(jmax + 2, cap)
        phi, new = new, phi
        k_new, factor = _select(k, erk, erk_down, erk_down2, erk_up, n_same, phase1, max_order,
                                q)
        if phase1 and (k_new <= k or factor < MAX_GROWTH):
            phase1 = False
        n_same = n_same + 1 if k_new == k else 0
        k = k_new
        h_abs = min(abs(h) * factor, max_step)
    info[0] = status
    info[1] = kk
    info[2] = nfev
    info[3] = n_steps
    info[4] = n_acc
    info[5] = n_rej
    info[6] = t
    info[7] = h
    return ys, info, bad_stage, tr
