"""The Numba twins of the reference loops: the whole solve compiled.

Same algorithm, same operation order as :mod:`nodeform.ode.loops` and
:mod:`nodeform.ode.rk` (sums over nonzero weights left to right, the same controller
and the same clamps), so the two engines agree to round-off. Differences by design:
NumPy float64 only, 1-D state, the stages live in a preallocated ``K`` of shape
``(s, n)``, and failures come back as a status code that the Python side turns into
the same :class:`~nodeform.ode.errors.SolverError` the reference raises.

The vector field is an ``@numba.njit`` function ``f(t, y, *args) -> dy``, or in place
``f(t, y, out, *args)`` writing dy/dt into ``out`` (one scratch row in the generated steps,
a row of ``K`` in the generic one: no allocation per evaluation; told apart by the number of parameters, see :func:`nodeform.ode._fnptr.is_inplace`);
``args`` is a tuple passed through unchanged. Each built-in method
(:data:`~nodeform.ode.tableaus.METHODS`) has its own compiled loop whose step is
straight-line code with the tableau's nonzero coefficients as literals (generated from
the tableau when first compiled, see :func:`_step_source`), so nothing is looked up or
skipped at run time; a user-defined
:class:`~nodeform.ode.tableaus.ButcherTableau` runs the generic loop, which reads the
tableau from arrays. Both share one body (:func:`_adaptive_body`, :func:`_fixed_body`) and
add the same terms in the same order. ``f`` normally arrives as a function-pointer handle
(see :mod:`nodeform.ode._fnptr`): the loop is then specialized per type of ``args`` only,
and ``cache=True`` loads it from disk in a second process. When ``f`` cannot be called
through a pointer (it returns a non-contiguous or non-float64 array, say), ``f`` is
compiled into the loop instead: a wrapper per (loop, ``f``) holds it as a global,
recompiled in every process (:func:`specialized`: never through the disk cache).
``solve(..., specialize=True)`` takes that path on purpose (``f`` inlined by LLVM): for a
small in-place field no faster than the pointer path (the step's operations are inlined
into the loop, so a call through the pointer costs a few ns), for one loop compile per
field and process.

Debug with ``NUMBA_DISABLE_JIT=1`` (the same code runs as Python), switch the compiled
engine off with ``NODEFORM_NUMBA=0``.
"""
from __future__ import annotations

import math

import numpy as np
from numba import njit, types
from numba.extending import overload


__all__ = ["solve_adaptive", "solve_fixed", "ADAPTIVE_LOOPS", "FIXED_LOOPS", "ST_OK",
           "ST_MAX_STEPS", "ST_UNDERFLOW", "ST_NONFINITE_START", "ST_NONFINITE", "ST_BAD_SHAPE"]

from nodeform.ode._fnptr import field_call, field_function, is_inplace_type
from nodeform.ode.errors import (ST_BAD_SHAPE, ST_MAX_STEPS, ST_NONFINITE, ST_NONFINITE_START,
                                 ST_OK, ST_UNDERFLOW)
from nodeform.ode.tableaus import METHODS

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
#: NumPy's pairwise summation: leaves of at most this many terms, summed with 8
#: accumulators (numpy/_core/src/umath/loops_utils.h.src, PW_BLOCKSIZE). The error norm
#: sums the same way, so it equals the reference engine's ``np.mean`` bit for bit.
PW_BLOCKSIZE = 128
#: NumPy's pairwise leaf adds fewer than this many terms one by one, left to right, from 0.0
#: (its 8 accumulators start at 8 terms).
PW_UNROLL = 8
#: The tag of the generic, array-driven step (user-defined tableaus).
GENERIC = "generic"


@njit(cache=True, inline="always")
def _all_finite(x):
    for i in range(x.shape[0]):
        if not np.isfinite(x[i]):
            return False
    return True


@njit(cache=True, inline="always")
def _eval(f, t, y, args, K, i):
    """K[i] = f(t, y, *args) (an in-place f writes K[i] itself); False when f returned the
    wrong length."""
    out = field_call(f, t, y, args, K, i)
    if out.shape[0] != K.shape[1]:
        return False
    if out.ctypes.data != K[i].ctypes.data:  # an in-place field wrote K[i] already
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
def _stages(f, args, t, y, h, A, c, K, y_stage, acc, shift):
    """Stages 1..s-1 into K; y_stage ends as the last stage's state.

    K[0] must hold f(t, y), or, with ``shift``, K[s-1] does (FSAL) and is copied first.
    Returns ``K[s-1]``, or an empty array when f returned a wrong length.
    """
    s, n = K.shape
    if shift:
        for m in range(n):
            K[0, m] = K[s - 1, m]
    for i in range(1, s):
        if _weighted(K, A[i], i, acc):
            for m in range(n):
                y_stage[m] = y[m] + acc[m] * h
        else:
            for m in range(n):
                y_stage[m] = y[m]
        if not _eval(f, t + c[i] * h, y_stage, args, K, i):
            return acc[:0]
    return K[s - 1]


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


@njit(inline="always", error_model="numpy")
def hairer_probe(y0, f0, direction, rtol, atol, span, probe):
    """First half of Hairer's first step: ``h0`` and ``d1``; writes the probe point ``y0 + h0 f0``.

    Shared by the RK and Adams loops (see controller.select_initial_step); the caller
    evaluates f at ``(t0 + direction h0, probe)`` and passes it to :func:`hairer_step`.
    """
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
        probe[m] = y0[m] + f0[m] * (direction * h0)
    return h0, d1


@njit(inline="always", error_model="numpy")
def hairer_step(y0, f0, f1, h0, d1, err_order, rtol, atol, span):
    """Second half of Hairer's first step, from ``f1`` = f at the probe point of :func:`hairer_probe`."""
    n = y0.shape[0]
    d2 = 0.0
    for m in range(n):
        sc = atol + abs(y0[m]) * rtol
        d2 += ((f1[m] - f0[m]) / sc) ** 2
    d2 = (math.sqrt(d2 / n) if n else 0.0) / h0
    if not np.isfinite(d2):
        d2 = 0.0
    if d1 <= 1e-15 and d2 <= 1e-15:
        h1 = max(1e-6, h0 * 1e-3)
    else:
        h1 = (0.01 / max(d1, d2)) ** (1.0 / (err_order + 1))
    return min(100.0 * h0, h1, span)


@njit(inline="always", error_model="numpy")
def _initial_step(f, args, t0, y0, f0, direction, err_order, rtol, atol, span, scratch, K):
    """Hairer's first step (see controller.select_initial_step); uses K[1] as scratch."""
    h0, d1 = hairer_probe(y0, f0, direction, rtol, atol, span, scratch)
    if not _eval(f, t0 + direction * h0, scratch, args, K, 1):
        return -1.0
    return hairer_step(y0, f0, K[1], h0, d1, err_order, rtol, atol, span)


@njit(cache=True)
def _first_bad_stage(K, upto):
    for i in range(upto):
        if not _all_finite(K[i]):
            return i
    return -1


# Why a step's error ratio was not finite (info[8] of the adaptive loop; words in
# :func:`nonfinite_cause_words`), found on the failure path only.
CAUSE_NONE = 0
CAUSE_F_NONFINITE = 1     # f returned NaN/inf for a finite stage state: f's own doing
CAUSE_STATE_OVERFLOW = 2  # a stage state (or the new state) overflowed float64
CAUSE_ERROR_OVERFLOW = 3  # stages and state finite, the error estimate overflowed
CAUSE_ZERO_SCALE = 4      # atol = 0 and a component 0: its scaled error is 0/0


@njit(cache=True, error_model="numpy")
def _nonfinite_cause(K, A, y, y_new, h, rtol, atol, scratch):
    """``(first non-finite stage or -1, CAUSE_*)`` of a step whose error ratio is NaN/inf.

    A stage ``K_i`` that is not finite although its state ``y + h sum_j A_ij K_j`` is
    finite is f's doing; a stage state that is not finite means the state overflowed.
    """
    s, n = K.shape
    for i in range(s):
        if _all_finite(K[i]):
            continue
        ok = True
        for m in range(n):
            acc = 0.0
            for j in range(i):
                if A[i, j] != 0.0:
                    acc += K[j, m] * A[i, j]
            scratch[m] = y[m] + acc * h
        ok = _all_finite(scratch)
        return i, CAUSE_F_NONFINITE if ok else CAUSE_STATE_OVERFLOW
    if not _all_finite(y_new):
        return -1, CAUSE_STATE_OVERFLOW
    for m in range(n):
        if atol + rtol * max(abs(y[m]), abs(y_new[m])) == 0.0:
            return -1, CAUSE_ZERO_SCALE
    return -1, CAUSE_ERROR_OVERFLOW


def nonfinite_cause_words(cause, stage, y):
    """The real cause of a non-finite failure of the adaptive loop, in words (Python side)."""
    big = float(np.max(np.abs(y))) if np.size(y) else 0.0
    if cause == CAUSE_F_NONFINITE:
        return (f"`f` returned NaN/inf (stage {stage}) for a finite state, and still does with "
                "the smallest step: f itself is not finite here (a division by zero, a log/sqrt "
                "of a negative, an overflow inside f, a NaN parameter), not the solver diverging")
    if cause == CAUSE_STATE_OVERFLOW:
        return (f"the state overflowed float64 (|y| up to {big:.3g} before the step, the largest "
                "float64 is 1.8e308): a step of any size leaves the representable range. Rescale "
                "the state (or `y0`) so that its entries stay far below 1e300")
    if cause == CAUSE_ZERO_SCALE:
        return ("`atol` = 0 and a state component is 0, so its error scale atol + rtol |y| is 0 "
                "and its scaled error 0/0: no step can be accepted. Pass a small positive `atol` "
                "(e.g. 1e-12 for values of order 1)")
    return (f"the error estimate overflowed float64 (|y| up to {big:.3g}, the derivatives near "
            "the float64 maximum): rescale the problem")


@njit(cache=True)
def _pairwise_leaf(x, lo, n):
    """``sum(x[lo:lo + n])`` for ``n <= PW_BLOCKSIZE``, in NumPy's order (8 accumulators)."""
    if n < PW_UNROLL:
        res = 0.0
        for i in range(lo, lo + n):
            res += x[i]
        return res
    r0 = x[lo]
    r1 = x[lo + 1]
    r2 = x[lo + 2]
    r3 = x[lo + 3]
    r4 = x[lo + 4]
    r5 = x[lo + 5]
    r6 = x[lo + 6]
    r7 = x[lo + 7]
    stop = lo + n - n % 8
    i = lo + 8
    while i < stop:
        r0 += x[i]
        r1 += x[i + 1]
        r2 += x[i + 2]
        r3 += x[i + 3]
        r4 += x[i + 4]
        r5 += x[i + 5]
        r6 += x[i + 6]
        r7 += x[i + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < lo + n:
        res += x[i]
        i += 1
    return res


#: Depth of the explicit stack of :func:`_pairwise_sum`: each level halves n, so 64 levels
#: cover any array that fits in memory.
PW_MAX_DEPTH = 64


@njit(cache=True)
def _pairwise_sum(x, n):
    """``sum(x[:n])`` in NumPy's pairwise order (see :data:`PW_BLOCKSIZE`).

    Independent accumulators in each leaf (no long dependency chain for large states) and
    the same bits as ``np.sum`` / ``np.mean`` (checked by the tests). NumPy's recursion
    (halve n, rounded down to a multiple of 8, sum both halves, add) runs on an explicit
    stack: Numba cannot load a recursive function from its on-disk cache.
    """
    if n <= PW_BLOCKSIZE:
        return _pairwise_leaf(x, 0, n)
    st_lo = np.empty(PW_MAX_DEPTH, np.int64)
    st_n = np.empty(PW_MAX_DEPTH, np.int64)
    st_phase = np.empty(PW_MAX_DEPTH, np.int64)  # 0: start, 1: left pending, 2: right pending
    st_left = np.empty(PW_MAX_DEPTH)
    st_lo[0] = 0
    st_n[0] = n
    st_phase[0] = 0
    sp = 1
    result = 0.0
    while sp > 0:
        top = sp - 1
        lo = st_lo[top]
        m = st_n[top]
        n2 = m // 2
        n2 -= n2 % 8
        done = False
        v = 0.0
        if m <= PW_BLOCKSIZE:
            v = _pairwise_leaf(x, lo, m)
            done = True
        elif st_phase[top] == 0:  # descend into the left half
            st_phase[top] = 1
            st_lo[sp] = lo
            st_n[sp] = n2
            st_phase[sp] = 0
            sp += 1
        elif st_phase[top] == 1:  # left half summed (in st_left): descend into the right
            st_phase[top] = 2
            st_lo[sp] = lo + n2
            st_n[sp] = m - n2
            st_phase[sp] = 0
            sp += 1
        if done:
            sp -= 1
            # deliver v to the parent: the left half is stored, the right half completes it
            while sp > 0 and st_phase[sp - 1] == 2:
                v = st_left[sp - 1] + v
                sp -= 1
            if sp == 0:
                result = v
            else:
                st_left[sp - 1] = v
    return result


@njit(cache=True, inline="always")
def _rms_of_squares(sq, n):
    """``sqrt(mean(sq[:n]))`` as the reference's ``rms_norm`` computes it (0 when n = 0)."""
    return math.sqrt(_pairwise_sum(sq, n) / n) if n > 0 else 0.0


# ----------------------------------------------------------------------------- the step
# Four step operations, each a stub whose compiled version depends on a literal ``tag``:
# a built-in method's name selects straight-line code generated from its tableau, any
# other tag the generic array-driven code above. In Python (NUMBA_DISABLE_JIT=1) the stubs
# run the generic code, which gives the same numbers.
#
# To save passes over the state, the generated code moves data inside the passes that
# read it anyway: the FSAL copy K[0] = K[s-1] happens in the first stage's pass of the
# next step (``shift``), each stage's f result is stored in K in the next stage's pass,
# and for an FSAL method the last result is stored by the error-ratio pass (the stages
# return it as ``o``; a loop without that pass calls :func:`_step_store_last`).

def _step_stages(tag, f, args, t, y, h, A, c, K, y_stage, acc, shift):
    """Stages 1..s-1 into K (K[0] holds f(t, y), or K[s-1] does with ``shift``).

    Returns ``o``, f's result for the last stage: stored in ``K[s-1]`` already, except
    for a generated FSAL method (see above); wrong length when f returned one.
    """
    return _stages(f, args, t, y, h, A, c, K, y_stage, acc, shift)


def _step_store_last(tag, K, o):
    """``K[s-1] = o`` where the stages left it to the next pass (generated FSAL methods)."""
    pass


def _step_combine(tag, y, K, b, h, out, acc):
    """out = y + (sum_j K_j b_j) h over the nonzero weights."""
    _combine(y, K, b, h, out, acc)


def _step_ratio(tag, K, e, h, y, y_new, rtol, atol, acc, sq, o):
    """The scaled RMS error ratio of the step (controller.error_ratio); ``sq`` is scratch.

    ``o`` is the last stage's f result, stored in K[s-1] here when the stages did not.
    """
    return _generic_ratio(K, e, h, y, y_new, rtol, atol, acc, sq)


@njit(cache=True, inline="always")
def _generic_ratio(K, e, h, y, y_new, rtol, atol, acc, sq):
    n = y.shape[0]
    _weighted(K, e, K.shape[0], acc)
    for m in range(n):
        sc = atol + rtol * max(abs(y[m]), abs(y_new[m]))
        x = acc[m] * h / sc
        sq[m] = x * x
    return _rms_of_squares(sq, n)


def _terms_expr(terms):
    """``K[j, m] * w_j + ...`` for ``terms = ((j, w_j), ...)``, left to right (rk.weighted_sum)."""
    return " + ".join(f"K[{j}, m] * {w!r}" for j, w in terms)


def _step_source(tab, what, inplace=False):
    """Source of the straight-line ``what`` operation ("stages", "combine", "ratio") for ``tab``.

    Every coefficient is written with ``repr`` (exact round trip), zero weights are left
    out, and each sum runs left to right, as :func:`nodeform.ode.rk.weighted_sum` does.
    ``inplace`` (stages only): ``f`` is an in-place field, called as
    ``f(t, y_stage, acc, *args)`` right here, writing into the scratch ``acc``, which the
    next pass reads; no variable, view or check per call (an array assigned to a variable
    around a call through a pointer costs Numba two reference-count calls each side, about
    20 ns, as much as a small field itself).
    """
    s = tab.n_stages
    last = s - 1
    if what == "stages":
        # f's result for stage i is not copied into K[i] on its own: the pass that builds
        # stage i+1's state reads it once as ``o``, stores it in K[i] and uses it in the
        # sum (``o`` is consumed before f runs again, so it may be any array, even f's
        # input). With ``shift`` the first pass also copies K[s-1] into K[0] (FSAL).
        lines = ["def impl(tag, f, args, t, y, h, A, c, K, y_stage, acc, shift):",
                 "    n = y.shape[0]"]
        res = "acc" if inplace else "o"  # where f's last result is
        for i in range(1, s):
            terms = tab.A_terms[i]
            variants = [("    ", None)]
            if i == 1:  # with and without the FSAL shift
                lines.append("    if shift:")
                variants = [("        ", "shift"), ("    ", None)]
            for ind, kind in variants:
                if i == 1 and kind is None:
                    lines.append("    else:")
                    ind = "        "
                lines.append(f"{ind}for m in range(n):")
                fresh = None  # (stage index, local name) read once in this pass
                if kind == "shift":
                    lines.append(f"{ind}    o_m = K[{last}, m]")
                    lines.append(f"{ind}    K[0, m] = o_m")
                    fresh = 0
                elif i > 1:
                    lines.append(f"{ind}    o_m = {res}[m]")
                    lines.append(f"{ind}    K[{i - 1}, m] = o_m")
                    fresh = i - 1
                if terms:
                    expr = " + ".join((f"o_m * {w!r}" if j == fresh else f"K[{j}, m] * {w!r}")
                                      for j, w in terms)
                    lines.append(f"{ind}    y_stage[m] = y[m] + ({expr}) * h")
                else:
                    lines.append(f"{ind}    y_stage[m] = y[m]")
            if inplace:  # writes into the scratch ``acc`` (unused here otherwise)
                lines.append(f"    f(t + {tab.c_list[i]!r} * h, y_stage, acc, *args)")
            else:
                lines.append(f"    o = f(t + {tab.c_list[i]!r} * h, y_stage, *args)")
                lines.append("    if o.shape[0] != n:")
                lines.append("        return o")
        if not tab.fsal:  # an FSAL method's error-ratio pass stores it (or _step_store_last)
            lines.append("    for m in range(n):")
            lines.append(f"        K[{last}, m] = {res}[m]")
        lines.append(f"    return {res}")
    elif what == "store_last":
        lines = ["def impl(tag, K, o):"]
        if tab.fsal:
            lines += ["    for m in range(o.shape[0]):",
                      f"        K[{last}, m] = o[m]"]
        else:
            lines.append("    pass")
    elif what == "combine":
        lines = ["def impl(tag, y, K, b, h, out, acc):",
                 "    for m in range(y.shape[0]):",
                 f"        out[m] = y[m] + ({_terms_expr(tab.b_terms)}) * h"]
    else:
        lines = ["def impl(tag, K, e, h, y, y_new, rtol, atol, acc, sq, o):",
                 "    n = y.shape[0]",
                 "    for m in range(n):"]
        terms = tab.e_terms
        if tab.fsal:
            lines += ["        o_m = o[m]",
                      f"        K[{last}, m] = o_m"]
            expr = " + ".join((f"o_m * {w!r}" if j == last else f"K[{j}, m] * {w!r}")
                              for j, w in terms)
        else:
            expr = _terms_expr(terms)
        body = lines[3:]  # the pass's common lines, after "for m in range(n):"
        body += ["        sc = atol + rtol * max(abs(y[m]), abs(y_new[m]))",
                 f"        x = ({expr}) * h / sc"]
        # below 8 components NumPy's pairwise sum is a plain left-to-right sum from 0.0
        # (see _pairwise_leaf): accumulated here in the same order, the same bits, with no
        # store of the squares and no call
        lines = lines[:2] + [f"    if n < {PW_UNROLL}:",
                             "        ss = 0.0",
                             "        for m in range(n):"]
        lines += ["    " + ln for ln in body] + ["            ss += x * x",
                                                 "        return math.sqrt(ss / n) if n > 0 else 0.0",
                                                 "    for m in range(n):"]
        lines += body + ["        sq[m] = x * x",
                         "    return _rms_of_squares(sq, n)"]
    return "\n".join(lines) + "\n"


# (method name, operation) -> the generated implementation, built on first use
_GENERATED = {}


def _generated(tag, what, generic, inplace=False):
    """The implementation of ``what`` for the literal ``tag``: generated, or ``generic``."""
    if not isinstance(tag, types.StringLiteral) or tag.literal_value not in METHODS:
        return generic
    name = tag.literal_value
    key = (name, what, inplace)
    if key not in _GENERATED:
        namespace = {"math": math, "_eval": _eval, "_rms_of_squares": _rms_of_squares,
                     "field_call": field_call}
        exec(compile(_step_source(METHODS[name], what, inplace), f"<nodeform {name} {what}>",
                     "exec"), namespace)
        _GENERATED[key] = namespace["impl"]
    return _GENERATED[key]


# The two operations of every adaptive step are inlined into the loop (Numba IR): as
# separate functions each call increfs and decrefs their arrays (about 10 calls into the
# runtime per step), 15% of a Van der Pol solve (44 -> 37 µs). The price is compile time:
# about 2.5 s more CPU per loop compile (in-place dopri5 5.7 -> 8.4 s; chapters 1-3
# --quick from an empty cache 30.1 -> 31.5 s CPU). combine (non-FSAL pairs only) and
# store_last (fixed grid) stay calls: inlining them bought nothing measurable.
@overload(_step_stages, prefer_literal=True, inline="always")
def _step_stages_impl(tag, f, args, t, y, h, A, c, K, y_stage, acc, shift):
    def generic(tag, f, args, t, y, h, A, c, K, y_stage, acc, shift):
        return _stages(f, args, t, y, h, A, c, K, y_stage, acc, shift)
    return _generated(tag, "stages", generic, is_inplace_type(f, args))


@overload(_step_store_last, prefer_literal=True)
def _step_store_last_impl(tag, K, o):
    def generic(tag, K, o):
        pass
    return _generated(tag, "store_last", generic)


@overload(_step_combine, prefer_literal=True)
def _step_combine_impl(tag, y, K, b, h, out, acc):
    def generic(tag, y, K, b, h, out, acc):
        _combine(y, K, b, h, out, acc)
    return _generated(tag, "combine", generic)


@overload(_step_ratio, prefer_literal=True, inline="always")
def _step_ratio_impl(tag, K, e, h, y, y_new, rtol, atol, acc, sq, o):
    def generic(tag, K, e, h, y, y_new, rtol, atol, acc, sq, o):
        return _generic_ratio(K, e, h, y, y_new, rtol, atol, acc, sq)
    return _generated(tag, "ratio", generic)


@njit(cache=True)
def _dense(y, K, P, theta, h, out):
    """out = y + h sum_i w_i(theta) K_i over the nonzero weights (rk.dense_eval)."""
    s = K.shape[0]
    for m in range(y.shape[0]):
        acc = 0.0
        for i in range(s):
            w = 0.0
            p = theta
            for q in range(P.shape[1]):
                w += P[i, q] * p
                p *= theta
            if w != 0.0:
                acc += K[i, m] * w
        out[m] = y[m] + acc * h


# ----------------------------------------------------------------------------- the loops

@njit(inline="always")
def _adaptive_body(tag, f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol,
                   atol, first_step, max_step, max_steps, alpha, beta, trace):
    """The adaptive loop, shared by :func:`solve_adaptive` and the per-method loops."""
    f = field_function(f, args)
    n_out = t_out.shape[0]
    n = y0.shape[0]
    s = A.shape[0]
    ys = np.full((n_out, n), np.nan)
    info = np.zeros(9)
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
    span = abs(t_end - t0)
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
    if not np.isfinite(h_abs):  # 0/0 in the error scale (atol = 0 and a zero component)
        info[0] = ST_NONFINITE
        info[2] = nfev
        info[6] = t
        info[8] = CAUSE_ZERO_SCALE
        return ys, info, -1, tr
    h_abs = min(h_abs, max_step)
    prev_pow = 1.0  # ratio_prev ** beta with ratio_prev = 1 before the first step
    after_reject = False
    shift = False  # the FSAL shift K[0] = K[s-1] is pending
    bad_stage = -1
    cause = CAUSE_NONE
    k = 1
    status = ST_OK
    h = h_abs * direction
    while k < n_out:
        if n_steps >= max_steps:
            status = ST_MAX_STEPS
            h = h_abs * direction
            break
        # not proportional to |t| alone: at t = 0 that floor would be 0 (issue 8, item 11);
        # the reference engine uses the same rule (loops.min_step_size)
        min_step = UNDERFLOW_ULPS * EPS * max(abs(t), span)
        if h_abs < min_step:
            status = ST_NONFINITE if cause != CAUSE_NONE else ST_UNDERFLOW
            h = h_abs * direction
            break
        t_stop = t_end if has_dense else t_out[k]
        t_new = t + direction * h_abs
        if direction * (t_new - t_stop) > 0:
            t_new = t_stop
        h = t_new - t
        o = _step_stages(tag, f, args, t, y, h, A, c, K, y_new, wsum, shift)
        shift = False
        if o.shape[0] != n:
            status = ST_BAD_SHAPE
            break
        nfev += s - 1
        n_steps += 1
        if not fsal:
            _step_combine(tag, y, K, b, h, y_new, wsum)
        ratio = _step_ratio(tag, K, e, h, y, y_new, rtol, atol, wsum, scratch, o)
        finite = np.isfinite(ratio)
        accepted = finite and ratio <= 1.0
        if trace:
            tr[n_steps - 1, 0] = t
            tr[n_steps - 1, 1] = h
            tr[n_steps - 1, 2] = ratio
            tr[n_steps - 1, 3] = 1.0 if accepted else 0.0
        if not finite:
            bad_stage, cause = _nonfinite_cause(K, A, y, y_new, h, rtol, atol, scratch)
            n_rej += 1
            h_abs = abs(h) * MIN_FACTOR
            after_reject = True
            continue
        if not accepted:
            n_rej += 1
            h_abs = abs(h) * _step_factor(ratio, prev_pow, alpha, after_reject)
            after_reject = True
            bad_stage = -1
            cause = CAUSE_NONE
            continue
        while k < n_out and direction * (t_out[k] - t_new) <= 0:
            if t_out[k] == t_new:
                for m in range(n):
                    ys[k, m] = y_new[m]
            else:
                _dense(y, K, P, (t_out[k] - t) / h, h, ys[k])
            k += 1
        factor = _step_factor(ratio, prev_pow, alpha, after_reject)
        n_acc += 1
        # the PI memory ratio_prev ** beta, computed once per accepted step (I: beta = 0)
        prev_pow = max(ratio, ERR_FLOOR) ** beta if beta != 0.0 else 1.0
        after_reject = False
        bad_stage = -1
        cause = CAUSE_NONE
        t = t_new
        y, y_new = y_new, y  # the new state becomes y; the old buffer is reused
        if k < n_out:
            if fsal:  # K[0] = K[s-1], done by the next step's first pass
                shift = True
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
    info[8] = cause
    return ys, info, bad_stage, tr


@njit(cache=True, error_model="numpy")
def solve_adaptive(f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol, atol,
                   first_step, max_step, max_steps, alpha, beta, trace):
    """Compiled twin of :func:`nodeform.ode.loops.integrate_adaptive` (any tableau).

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
    info : ndarray, shape (9,) float64
        status, n_out_done, nfev, n_steps, n_accepted, n_rejected, t_fail, h_fail, cause
        (``CAUSE_*``: why the last rejected step was not finite)
    bad_stage : int
    tr : ndarray, shape (n_trace, 4)
        t, h, error ratio, accepted (1.0/0.0) per attempted step.

    Notes
    -----
    The built-in methods have their own loops with the same arguments
    (:data:`ADAPTIVE_LOOPS`): they ignore ``A, b, c, e`` (their coefficients are
    compiled in) and must be given their own tableau's arrays.
    """
    return _adaptive_body(GENERIC, f, args, t_out, y0, A, b, c, e, P, has_dense, fsal,
                          err_order, rtol, atol, first_step, max_step, max_steps, alpha, beta,
                          trace)


@njit(cache=True, error_model="numpy")
def solve_adaptive_bosh3(f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol,
                         atol, first_step, max_step, max_steps, alpha, beta, trace):
    """:func:`solve_adaptive` with Bogacki–Shampine 3(2) compiled in."""
    return _adaptive_body("bosh3", f, args, t_out, y0, A, b, c, e, P, has_dense, fsal,
                          err_order, rtol, atol, first_step, max_step, max_steps, alpha, beta,
                          trace)


@njit(cache=True, error_model="numpy")
def solve_adaptive_dopri5(f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol,
                          atol, first_step, max_step, max_steps, alpha, beta, trace):
    """:func:`solve_adaptive` with Dormand–Prince 5(4) compiled in."""
    return _adaptive_body("dopri5", f, args, t_out, y0, A, b, c, e, P, has_dense, fsal,
                          err_order, rtol, atol, first_step, max_step, max_steps, alpha, beta,
                          trace)


@njit(cache=True, error_model="numpy")
def solve_adaptive_tsit5(f, args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol,
                         atol, first_step, max_step, max_steps, alpha, beta, trace):
    """:func:`solve_adaptive` with Tsitouras 5(4) compiled in."""
    return _adaptive_body("tsit5", f, args, t_out, y0, A, b, c, e, P, has_dense, fsal,
                          err_order, rtol, atol, first_step, max_step, max_steps, alpha, beta,
                          trace)


@njit(inline="always")
def _fixed_body(tag, f, args, t_out, y0, A, b, c, fsal, counts):
    """The fixed-grid loop, shared by :func:`solve_fixed` and the per-method loops."""
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
            o = _step_stages(tag, f, args, t, y, h, A, c, K, y_new, wsum, False)
            if o.shape[0] != n:
                info[0] = ST_BAD_SHAPE
                return ys, info, -1, tr
            _step_store_last(tag, K, o)
            nfev += s - 1
            n_steps += 1
            if not fsal:
                _step_combine(tag, y, K, b, h, y_new, wsum)
            if not _all_finite(y_new):
                info[0] = ST_NONFINITE
                info[1] = k
                info[2] = nfev
                info[3] = n_steps
                info[4] = n_steps
                info[6] = t
                info[7] = h
                return ys, info, _first_bad_stage(K, s), tr
            y, y_new = y_new, y  # the new state becomes y; the old buffer is reused
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


@njit(cache=True)
def solve_fixed(f, args, t_out, y0, A, b, c, fsal, counts):
    """Compiled twin of :func:`nodeform.ode.loops.integrate_fixed` (any tableau).

    ``counts[k]`` is the number of equal steps between ``t_out[k]`` and ``t_out[k+1]``.
    Returns ``ys, info, bad_stage, tr`` as :func:`solve_adaptive` (``tr`` empty). The
    fixed-step methods have their own loops (:data:`FIXED_LOOPS`), same arguments.
    """
    return _fixed_body(GENERIC, f, args, t_out, y0, A, b, c, fsal, counts)


@njit(cache=True)
def solve_fixed_euler(f, args, t_out, y0, A, b, c, fsal, counts):
    """:func:`solve_fixed` with Euler's method compiled in."""
    return _fixed_body("euler", f, args, t_out, y0, A, b, c, fsal, counts)


@njit(cache=True)
def solve_fixed_midpoint(f, args, t_out, y0, A, b, c, fsal, counts):
    """:func:`solve_fixed` with the midpoint method compiled in."""
    return _fixed_body("midpoint", f, args, t_out, y0, A, b, c, fsal, counts)


@njit(cache=True)
def solve_fixed_rk4(f, args, t_out, y0, A, b, c, fsal, counts):
    """:func:`solve_fixed` with the classic RK4 compiled in."""
    return _fixed_body("rk4", f, args, t_out, y0, A, b, c, fsal, counts)


#: The adaptive loop of each built-in embedded pair, by name (others: solve_adaptive).
ADAPTIVE_LOOPS = {"bosh3": solve_adaptive_bosh3, "dopri5": solve_adaptive_dopri5,
                  "tsit5": solve_adaptive_tsit5}
#: The fixed-grid loop of each built-in fixed-step method, by name (an embedded pair on a
#: fixed grid, or a user tableau: solve_fixed).
FIXED_LOOPS = {"euler": solve_fixed_euler, "midpoint": solve_fixed_midpoint,
               "rk4": solve_fixed_rk4}


# (cached loop) -> the same loop without the disk cache, for a field passed as a dispatcher
_UNCACHED = {}


def uncached(loop):
    """``loop`` compiled without Numba's disk cache: for an ``f`` passed as a dispatcher.

    A loop specialized on a dispatcher type (``specialize=True``, or a field without a
    function-pointer handle) must not go to the disk cache: its cache key names the
    dispatcher by its address, and a later process whose *other* field lands on the same
    address would load the wrong code. Compiled once per process and field instead.
    """
    nc = _UNCACHED.get(loop)
    if nc is None:
        nc = njit(error_model="numpy")(loop.py_func)
        _UNCACHED[loop] = nc
    return nc


# (cached loop, f) -> that loop with f compiled in, taking the loop's arguments but f
_SPECIALIZED = {}
#: The loops' arguments after ``f``, as the specialized wrappers spell them.
_ADAPTIVE_PARAMS = ("args, t_out, y0, A, b, c, e, P, has_dense, fsal, err_order, rtol, atol, "
                    "first_step, max_step, max_steps, alpha, beta, trace")
_FIXED_PARAMS = "args, t_out, y0, A, b, c, fsal, counts"


def specialized(loop, f):
    """``loop`` with the field ``f`` compiled in: called as ``loop``, without its first argument.

    The field is a compile-time constant of the generated loop (a global of its source),
    not an argument: Numba types a dispatcher argument in Python on every call (about
    8 µs, a quarter of a small solve), while the remaining arguments are numbers, arrays
    and tuples, which it types in C. ``f`` is then a direct call that LLVM inlines into
    the stages. One compile per (loop, field) and process; never from the disk cache (its
    key would name the dispatcher by address, see :func:`uncached`).
    """
    key = (loop, f)
    fn = _SPECIALIZED.get(key)
    if fn is not None:
        return fn
    name = loop.py_func.__name__
    adaptive = name.startswith("solve_adaptive")
    tag = name.split("_", 2)[2] if name.count("_") >= 2 else GENERIC
    params = _ADAPTIVE_PARAMS if adaptive else _FIXED_PARAMS
    body = "_adaptive_body" if adaptive else "_fixed_body"
    src = (f"def {name}({params}):\n"
           f"    return {body}({tag!r}, FIELD, {params})\n")
    namespace = {"_adaptive_body": _adaptive_body, "_fixed_body": _fixed_body, "FIELD": f}
    exec(compile(src, f"<nodeform {name} with a field compiled in>", "exec"), namespace)
    py = namespace[name]
    py._nodeform_field = f  # for the compile log (nodeform.ode._fnptr.install_compile_log)
    fn = njit(error_model="numpy")(py)
    _SPECIALIZED[key] = fn
    return fn
