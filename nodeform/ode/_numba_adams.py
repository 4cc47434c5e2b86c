"""The Numba twin of the Adams PECE loop (:mod:`nodeform.ode.adams`): the whole solve compiled.

Same algorithm, same constants and the same floating-point operations in the same order
as the reference :func:`~nodeform.ode.adams.integrate_adams` (weighted sums left to
right over the differences, the coefficients by the same quadrature), so the two
engines take the same steps and orders and agree to round-off; only the RMS norms
differ, in the last bit: they sum in another order for long states, and take the mean
as a product with 1/n (exact for n a power of 2). NumPy float64 only, 1-D state; failures come
back as a status code (:mod:`nodeform.ode.errors`) that the Python side turns into the
same error the reference raises.

The vector field arrives as a function-pointer handle (:mod:`nodeform.ode._fnptr`), so
the loop is compiled once per type of ``args`` and loaded from Numba's disk cache in
later processes; a field that cannot be called through a pointer (or ``specialize=True``)
is passed as the dispatcher itself (the loop is then recompiled per process). Both forms
of field work: ``f(t, y, *args) -> dy`` and the in-place ``f(t, y, out, *args)``, which
writes straight into the loop's arrays (no allocation per evaluation).

What one step costs, and why the loop is laid out as it is (issue 13). A step is one
long chain of dependent operations (geometry, coefficients, prediction, f, corrector,
norm, f, differences, step proposal), so the loop shortens the chain rather than the
operation count: all arrays are allocated once per solve and no array view is made
inside the loop (each costs reference-count updates); the differences move on in place;
the divisions of the step geometry are independent of each other (beta's running
product is a chain of multiplications only); the quadrature's seven running products
live in registers; the prediction and the corrector's sum share one pass over the
differences, and the three error norms are summed in the corrector's pass; 1/n is
formed once; the order k + 1 estimate is computed only when that order is a candidate;
the field is called without an intermediate function (an in-place field writes straight
into the loop's array); the error model is NumPy's (no divisor here can be zero).

Debug with ``NUMBA_DISABLE_JIT=1`` (the same code runs as Python).
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload

from nodeform.ode import adams as _ref
from nodeform.ode._fnptr import field_function, is_inplace
from nodeform.ode._numba_rk import hairer_probe, hairer_step
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
# rows of the scratch array W (each of the state's length), allocated once per solve
_Y, _Y_NEW, _P, _FV, _PHIK, _SCALE = 0, 1, 2, 3, 4, 5
_N_SCRATCH = 6
# rows of the coefficient array C (each of length MAX_ORDER + 3)
_TS, _ALPHA, _BETA, _RATIO, _G, _GS, _CW = 0, 1, 2, 3, 4, 5, 6
_N_COEF = 7


_GAUSS = []  # the arrays, built on first use (no work at import time)
if _ref.GAUSS_NODES != 7:  # _step_coefficients names the seven nodes one by one
    raise ImportError(f"nodeform.ode.adams.GAUSS_NODES = {_ref.GAUSS_NODES}, but the compiled "
                      "Adams loop's _step_coefficients is written for 7 nodes; update both.")


def gauss_arrays():
    """The reference's Gauss–Legendre nodes and weights on [0, 1] as float64 arrays."""
    if not _GAUSS:
        x, w = _ref.gauss_legendre()
        _GAUSS.append((np.array(x), np.array(w)))
    return _GAUSS[0]


@njit(cache=True, inline="always", error_model="numpy")
def _coefficients(alpha, J, s, x, w, g, pv, wv):
    """g[j] = int_0^s P_j for j <= J (as adams.integration_coefficients).

    The loops run j outside and the nodes inside (the reference runs them the other way
    round): each node's product and each g[j]'s sum see the same operations in the same
    order, so the numbers are identical, but the nodes' products no longer form one long
    chain of dependent multiplications (about 2x faster per step). ``pv``, ``wv``:
    scratch of the nodes' size. Used for dense output; the step itself (s = 1) uses
    :func:`_step_coefficients`.
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


@njit(cache=True, inline="always", error_model="numpy")
def _step_coefficients(alpha, J, x, om, w, g0, g):
    """g[j] = int_0^1 P_j for j <= J: :func:`_coefficients` at s = 1, the same numbers.

    Each node's running product and weight live in registers (seven named scalars:
    ``GAUSS_NODES`` = 7): the products of one j are independent of each other and of
    the sums, so the chain per j is one multiplication. ``om`` = 1 - x and ``g0`` =
    sum(w) (summed left to right from 0.0) are the step-independent parts.
    """
    x0, x1, x2, x3, x4, x5, x6 = x[0], x[1], x[2], x[3], x[4], x[5], x[6]
    w0, w1, w2, w3, w4, w5, w6 = w[0], w[1], w[2], w[3], w[4], w[5], w[6]
    o0, o1, o2, o3, o4, o5, o6 = om[0], om[1], om[2], om[3], om[4], om[5], om[6]
    p0, p1, p2, p3, p4, p5, p6 = x0, x1, x2, x3, x4, x5, x6
    g[0] = g0
    for j in range(1, J + 1):
        g[j] = (0.0 + w0 * p0 + w1 * p1 + w2 * p2 + w3 * p3 + w4 * p4 + w5 * p5
                + w6 * p6)
        if j < J:
            aj = alpha[j]
            p0 *= 1.0 - aj * o0
            p1 *= 1.0 - aj * o1
            p2 *= 1.0 - aj * o2
            p3 *= 1.0 - aj * o3
            p4 *= 1.0 - aj * o4
            p5 *= 1.0 - aj * o5
            p6 *= 1.0 - aj * o6


@njit(cache=True, inline="always", error_model="numpy")
def _proposal(est, j, bias):
    return 1.0 / (bias * est ** (1.0 / (j + 1)) + TINY)


@njit(cache=True, inline="always", error_model="numpy")
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


@njit(cache=True, inline="always")
def _all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


def _call_into(f, t, y, args, out):
    """out = f(t, y, *args); an in-place field ``f(t, y, out, *args)`` writes ``out`` itself.

    Returns False when a returning field gave an array of another length than ``out``.
    (Python version, for ``NUMBA_DISABLE_JIT=1``; the compiled one picks the form by type.)
    """
    if is_inplace(f, args):
        f(t, y, out, *args)
        return True
    r = f(t, y, *args)
    if r.shape[0] != out.shape[0]:
        return False
    out[:] = r
    return True


@overload(_call_into, inline="always", jit_options={"cache": True})
def _call_into_impl(f, t, y, args, out):
    if ((isinstance(f, types.FunctionType) and f.signature.return_type == types.none)
            or (isinstance(f, types.Dispatcher) and is_inplace(f.dispatcher, args.types))):
        def impl(f, t, y, args, out):
            f(t, y, out, *args)
            return True
        return impl

    def impl_returning(f, t, y, args, out):
        r = f(t, y, *args)
        if r.shape[0] != out.shape[0]:
            return False
        for m in range(out.shape[0]):
            out[m] = r[m]
        return True
    return impl_returning


@njit(cache=True, error_model="numpy")
def solve_adams(f, args, t_out, y0, rtol, atol, first_step, max_step, max_steps, max_order,
                trace, gx, gw):
    """Compiled twin of :func:`nodeform.ode.adams.integrate_adams`.

    Parameters
    ----------
    f : njit field ``f(t, y, *args) -> ndarray, shape (n,)`` or ``f(t, y, out, *args)``
        (in place), or its handle (:func:`nodeform.ode._fnptr.field_handle`)
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
    phi = np.empty((cap, n))      # Phi_j(n), updated in place after each accepted step
    W = np.empty((_N_SCRATCH, n))
    y = W[_Y]                     # y_n
    y_new = W[_Y_NEW]             # y_{n+1}
    p = W[_P]                     # the prediction
    fv = W[_FV]                   # f at the prediction, then at y_{n+1}
    phik = W[_PHIK]               # Phi^p_k
    scale = W[_SCALE]
    f0 = phi[0]
    # the per-step coefficient vectors: rows of one array (one allocation)
    C = np.empty((_N_COEF, cap + 1))
    ts_hist = C[_TS]
    alpha = C[_ALPHA]
    beta = C[_BETA]
    ratio = C[_RATIO]
    g = C[_G]
    gs = C[_GS]
    cw = C[_CW]
    nq = gx.shape[0]
    Q = np.empty((3, nq))         # quadrature scratch, and 1 - x (step-independent)
    pv = Q[0]
    wv = Q[1]
    gom = Q[2]
    g0 = 0.0
    for m in range(nq):
        gom[m] = 1.0 - gx[m]
        g0 += gw[m]
    for m in range(n):
        y[m] = y0[m]
    # 1/n for the RMS norms: a product with it is off the step's chain (a division is not)
    inv_n = 1.0 / n if n > 0 else 0.0
    t0 = t_out[0]
    t_end = t_out[n_out - 1]
    direction = 1.0 if t_end > t0 else -1.0
    span = abs(t_end - t0)
    nfev = 0
    n_steps = 0
    n_acc = 0
    n_rej = 0
    t = t0
    ok = _call_into(f, t, y, args, f0)
    nfev += 1
    if not ok:
        info[0] = ST_BAD_SHAPE
        return ys, info, -1, tr
    if not (_all_finite(f0) and _all_finite(y)):
        info[0] = ST_NONFINITE_START
        info[2] = nfev
        info[6] = t
        return ys, info, -1, tr
    if first_step <= 0.0:
        # Hairer's first step for order 1 (as controller.select_initial_step)
        h0, d1 = hairer_probe(y, f0, direction, rtol, atol, span, p)
        ok = _call_into(f, t + direction * h0, p, args, fv)
        nfev += 1
        if not ok:
            info[0] = ST_BAD_SHAPE
            return ys, info, -1, tr
        h_abs = hairer_step(y, f0, fv, h0, d1, 1, rtol, atol, span)
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
        # the divisions are independent (one vectorized loop); the running product of
        # beta is a chain of multiplications only
        for j in range(1, jmax + 1):
            alpha[j] = h / (t_new - ts_hist[j])
            ratio[j] = (t_new - ts_hist[j - 1]) / (t - ts_hist[j])
        for j in range(1, jmax + 1):
            beta[j] = beta[j - 1] * ratio[j]
        _step_coefficients(alpha, jmax + 1, gx, gom, gw, g0, g)
        # ---- P, E, C
        for j in range(k):
            cw[j] = h * g[j] * beta[j]
        # one pass over the differences: the prediction p = y + sum_j h g_j Phi*_j, and
        # sum_j Phi*_j (kept in phik until the corrector needs it)
        for m in range(n):
            a = phi[0, m] * cw[0]
            b = phi[0, m] * beta[0]
            for j in range(1, k):
                a = a + phi[j, m] * cw[j]
                b = b + phi[j, m] * beta[j]
            p[m] = y[m] + a
            phik[m] = b
        ok = _call_into(f, t_new, p, args, fv)
        nfev += 1
        n_steps += 1
        if not ok:
            status = ST_BAD_SHAPE
            break
        hgk = h * g[k]
        # the corrector, and the squared scaled norms of the order-k, k-1 and k-2 estimates
        # in the same pass (Phi^p_{j-1} = Phi^p_j + Phi*_{j-1}: one axpy each)
        b1 = beta[k - 1] if k >= 2 else 0.0
        b2 = beta[k - 2] if k >= 3 else 0.0
        s0 = 0.0
        s1 = 0.0
        s2 = 0.0
        for m in range(n):
            pk = fv[m] - phik[m]
            phik[m] = pk
            yn = p[m] + pk * hgk
            y_new[m] = yn
            sc = atol + rtol * max(abs(y[m]), abs(yn))
            scale[m] = sc
            x = pk / sc
            s0 += x * x
            if k >= 2:
                a1 = pk + phi[k - 1, m] * b1
                x = a1 / sc
                s1 += x * x
                if k >= 3:
                    x = (a1 + phi[k - 2, m] * b2) / sc
                    s2 += x * x
        erk = abs(h * (g[k] - g[k - 1])) * math.sqrt(s0 * inv_n)
        erk_down = np.inf
        erk_down2 = np.inf
        if k >= 2:
            erk_down = abs(h * (g[k - 1] - g[k - 2])) * math.sqrt(s1 * inv_n)
            if k >= 3:
                erk_down2 = abs(h * (g[k - 2] - g[k - 3])) * math.sqrt(s2 * inv_n)
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
                for j in range(k):
                    cw[j] = h * gs[j] * beta[j]
                hgs = h * gs[k]
                for m in range(n):
                    a = phi[0, m] * cw[0]
                    for j in range(1, k):
                        a = a + phi[j, m] * cw[j]
                    ys[kk, m] = y[m] + a + phik[m] * hgs
            kk += 1
        n_acc += 1
        n_fail = 0
        bad_stage = -1
        for i in range(min(nts, cap - 1), 0, -1):
            ts_hist[i] = ts_hist[i - 1]
        ts_hist[0] = t_new
        nts = min(nts + 1, cap)
        t = t_new
        for m in range(n):
            y[m] = y_new[m]
        if kk >= n_out:
            break
        # ---- E: the derivative at the accepted point; the differences move on in place:
        # Phi_0(n+1) = f_{n+1}, Phi_{j+1}(n+1) = Phi_j(n+1) - beta_j Phi_j(n)
        ok = _call_into(f, t, y, args, fv)
        nfev += 1
        if not ok:
            status = ST_BAD_SHAPE
            break
        # the order k + 1 is a candidate only after k + 1 steps at order k (see _select):
        # otherwise its estimate is not needed, and its norm stays off the step's chain
        want_up = q >= k + 1 and k < max_order and n_same >= k + 1
        s_up = 0.0
        for m in range(n):
            cur = fv[m]
            for j in range(jmax + 1):
                old = phi[j, m]
                phi[j, m] = cur
                cur = cur - old * beta[j]
            phi[jmax + 1, m] = cur
            if want_up:
                x = phi[k + 1, m] / scale[m]
                s_up += x * x
        erk_up = np.inf
        if want_up:
            erk_up = abs(h * (g[k + 1] - g[k])) * math.sqrt(s_up * inv_n)
        q = min(jmax + 2, cap)
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


# ----------------------------------------------------------------------------- field compiled in
_WITH_FIELD = {}  # f -> solve_adams with f compiled in (this process only)
_BODY = []        # solve_adams without the disk cache, specialized per field by Numba
#: solve_adams's parameters after ``f``, as the wrapper spells them.
_PARAMS = ("args, t_out, y0, rtol, atol, first_step, max_step, max_steps, max_order, trace, "
           "gx, gw")


def with_field(f):
    """:func:`solve_adams` with the njit field ``f`` compiled in; called without ``f``.

    For ``specialize=True`` and for fields that have no function-pointer handle. ``f`` is
    a global of a small generated wrapper, not an argument: Numba would type a dispatcher
    argument in Python on every call (about 10 µs, a sixth of a Van der Pol solve),
    while the other arguments it types in C. The loop is compiled once per field and
    process and never goes to the disk cache (its key would name the dispatcher by
    address, and another field could land on the same address in a later process).
    """
    fn = _WITH_FIELD.get(f)
    if fn is None:
        if not _BODY:
            _BODY.append(njit(error_model="numpy")(solve_adams.py_func))
        src = (f"def solve_adams_with_field({_PARAMS}):\n"
               f"    return BODY(FIELD, {_PARAMS})\n")
        # __name__: the compile log then names this module, not "your njit function"
        namespace = {"BODY": _BODY[0], "FIELD": f, "__name__": __name__}
        exec(compile(src, "<nodeform solve_adams with a field compiled in>", "exec"), namespace)
        fn = njit(error_model="numpy")(namespace["solve_adams_with_field"])
        _WITH_FIELD[f] = fn
    return fn
