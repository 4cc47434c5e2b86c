"""The reference integration loops: fixed grid and adaptive, in ``xp`` code.

This is the engine the adjoint (backprop through the solver, the continuous adjoint)
drives. Its contract:

1. ``f(t, y)`` is called with a Python float ``t`` and a state shaped like ``y0``
   (any shape: batches are just more axes; one step size is shared by the batch).
   Every output is checked (:func:`checked_field`): shape, dtype, and array or
   Tensor like ``y0``, so a wrong return on any call is an error, never a broadcast.
2. ``y`` and the stages are combined only with ``+`` and ``*`` by Python floats
   (see :mod:`nodeform.ode.rk`), stages are kept in Python lists, so ``y0`` may be a
   NumPy array, a CuPy array or a nodeform Tensor; the outputs are of the same kind.
3. Error norms, finiteness checks and step-size decisions use plain arrays
   (``nodeform.backend.raw``) and Python floats; they are not differentiated.
4. ``t_out`` may decrease (integration backwards in time); ``t`` and ``h`` are
   Python floats (float64) whatever the state's dtype.
5. Failures raise a :class:`~nodeform.ode.errors.SolverError` whose ``partial``
   holds the outputs reached so far.

Entry points: :func:`integrate` (picks fixed or adaptive from the tableau),
:func:`integrate_fixed`, :func:`integrate_adaptive`. Each returns
``(ys, stats, trace)``: ``ys`` a list of ``len(t_out)`` states (``ys[0]`` is
``y0``), ``stats`` a dict (``nfev``, ``n_steps``, ``n_accepted``, ``n_rejected``),
``trace`` a dict of lists (``t, h, error_ratio, accepted``) or None.

Taught in chapters/ch02_ode_solvers.py.
"""
from __future__ import annotations

import contextlib
import math

from nodeform.backend import get_xp, host_bool, host_float, raw
from nodeform.ode import controller as ctl
from nodeform.ode.errors import (MaxStepsError, NonFiniteError, StepSizeUnderflowError,
                                 VectorFieldError, max_steps_message, nonfinite_message,
                                 underflow_message)
from nodeform.ode.rk import dense_eval, rk_step, weighted_sum

__all__ = ["MAX_STEPS", "integrate", "integrate_fixed", "integrate_adaptive",
           "check_vector_field_output", "checked_field", "min_step_size", "new_stats",
           "fixed_grid_counts"]

#: Default bound on attempted steps. A healthy solve of the paper's models takes tens to
#: hundreds of steps; 10,000 stops a solve that has gone stiff or diverged in seconds
#: instead of hanging (torchdiffeq's default is effectively infinite, diffrax's is 4096).
MAX_STEPS = 10_000
#: A step must move t by at least this many float64 ulps of t (SciPy uses 10 as well):
#: below it, t + h == t up to round-off and the loop would spin. The floor is taken of
#: ``max(|t|, |t_end - t_start|)``, not of ``|t|`` alone: at t = 0 one ulp of t is 5e-324,
#: so a floor proportional to |t| would let h shrink to 0 and the loop "accept" empty
#: steps until `max_steps` (the Numba engine uses the same rule).
UNDERFLOW_ULPS = 10
#: float64 machine epsilon: ``EPS * |t|`` is within a factor 2 of one ulp of t.
EPS = 2.220446049250313e-16


def new_stats():
    """Fresh counters: evaluations, attempted / accepted / rejected steps."""
    return {"nfev": 0, "n_steps": 0, "n_accepted": 0, "n_rejected": 0}


def min_step_size(t, span):
    """The smallest step allowed at ``t`` in a solve over an interval of length ``span``."""
    return UNDERFLOW_ULPS * EPS * max(abs(t), span)


def check_vector_field_output(out, y, t, step=0):
    """Raise :class:`VectorFieldError` unless ``f(t, y)`` is shaped and typed like ``y``."""
    r, yr = raw(out), raw(y)
    is_t, y_is_t = hasattr(out, "_is_tensor"), hasattr(y, "_is_tensor")
    if is_t != y_is_t:
        raise VectorFieldError(
            f"`f(t, y)` returned a {type(out).__name__} at t = {t:.6g} but the state is a "
            f"{type(y).__name__}; " + (
                "for gradients pass `y0` as a Tensor (`nodeform.odeint(func, nf.Tensor(y0), "
                "t)`), or return plain values (`out.numpy()`)." if is_t else
                "on Tensors f must return a Tensor built with nodeform operations (an array "
                "carries no gradient)."), t=t, step=step)
    if not (hasattr(r, "shape") and hasattr(r, "dtype")):
        raise VectorFieldError(
            f"`f(t, y)` returned a {type(out).__name__}, not an array; return an array shaped "
            f"like `y` {tuple(yr.shape)}, e.g. `np.array([...])` or `np.stack(...)`.", t=t,
            step=step)
    if tuple(r.shape) != tuple(yr.shape):
        raise VectorFieldError(
            f"`f(t, y)` returned shape {tuple(r.shape)} but `y` has shape {tuple(yr.shape)} (at "
            f"t = {t:.6g}, step {step}); f must return dy/dt with exactly the shape of y (check "
            "for a missing or extra batch axis, or an accidental broadcast).", t=t, step=step)
    if r.dtype != yr.dtype:
        raise VectorFieldError(
            f"`f(t, y)` returned dtype {r.dtype} but `y` has dtype {yr.dtype} (at t = {t:.6g}, "
            f"step {step}); return the same floating dtype as y (e.g. `.astype(y.dtype)`), or "
            "pass `y0` in the dtype you want to integrate in.", t=t, step=step)


def checked_field(f, y0, stats):
    """``f`` with its output checked at every call (shape, dtype, array or Tensor like ``y0``).

    The check is two attribute comparisons per call; only a mismatch pays for the message.
    A later call returning ``(1,)`` for a ``(2,)`` state would otherwise broadcast silently.
    """
    kind, shape, dtype = type(y0), raw(y0).shape, raw(y0).dtype
    tensor = hasattr(y0, "_is_tensor")

    def f_checked(t, y):
        out = f(t, y)
        if type(out) is not kind:
            check_vector_field_output(out, y, t, stats["n_steps"])
            return out
        r = out.data if tensor else out
        if r.shape != shape or r.dtype != dtype:
            check_vector_field_output(out, y, t, stats["n_steps"])
        return out
    return f_checked


def _nonfinite_cause(y, K, y_new, h, tab):
    """Why a step's error ratio was not finite, in words: which stage, and whose fault.

    Called only on the failure path. A stage ``K_i = f(t_i, y_i)`` that is NaN/inf
    while its input ``y_i`` is finite is ``f``'s doing; an input that is not finite
    means the state itself overflowed float64.
    """
    for i, k in enumerate(K):
        if _all_finite(k):
            continue
        acc = weighted_sum(K, tab.A_terms[i]) if i else None
        y_i = y if acc is None else y + acc * h
        if _all_finite(y_i):
            return (f"`f` returned NaN/inf (stage {i}) for a finite state, and still does "
                       "with the smallest step: f itself is not finite here (a division by "
                       "zero, a log/sqrt of a negative, an overflow inside f, a NaN "
                       "parameter), not the solver diverging")
        return _overflow_words(y)
    if not _all_finite(y_new):
        return _overflow_words(y)
    return (f"the error estimate overflowed float64 (|y| up to {_max_abs(y):.3g}, the "
                  "derivatives near the float64 maximum): rescale the problem")


def _max_abs(y):
    r = raw(y)
    return host_float(get_xp(r).abs(r).max()) if r.size else 0.0


def _overflow_words(y):
    return (f"the state overflowed float64 (|y| up to {_max_abs(y):.3g} before the step, the "
            "largest float64 is 1.8e308): a step of any size leaves the representable range. "
            "Rescale the state (or `y0`) so that its entries stay far below 1e300")


def _first_nonfinite_stage(K):
    for i, k in enumerate(K):
        xp = get_xp(k)
        if not host_bool(xp.isfinite(raw(k)).all()):
            return i
    return None


def _all_finite(x):
    xp = get_xp(x)
    return host_bool(xp.isfinite(raw(x)).all())


def _untaped(y):
    """``no_grad()`` when ``y`` is a Tensor (work the gradient does not need), else nothing."""
    if hasattr(y, "_is_tensor"):
        from nodeform.autodiff.tensor import no_grad
        return no_grad()
    return contextlib.nullcontext()


def _fail(exc, ys, stats=None):
    exc.partial = ys
    exc.stats = stats
    return exc


def fixed_grid_counts(t_out, step_size):
    """Steps per output interval: 1 each without ``step_size``, else ``ceil(|dt| / step_size)``.

    The grid always contains the output times, so fixed-step outputs need no interpolation.
    """
    counts = []
    for k in range(1, len(t_out)):
        span = abs(t_out[k] - t_out[k - 1])
        # the 1e-12 slack keeps an interval of exactly n steps from becoming n + 1 by round-off
        counts.append(1 if step_size is None else max(1, math.ceil(span / step_size - 1e-12)))
    return counts


# ============================================================================= fixed grid

def integrate_fixed(f, t_out, y0, tab, step_size=None, max_steps=MAX_STEPS):
    """Integrate on a fixed grid that contains every output time.

    Parameters
    ----------
    f : callable ``f(t, y)``
    t_out : sequence of float, shape (n_out,)
        Strictly monotone output times; ``t_out[0]`` is the start.
    y0 : array or Tensor, any shape
    tab : ButcherTableau
        Any method; an embedded pair uses its propagated weights ``b``.
    step_size : float, optional
        Largest step; each output interval is split into equal steps no longer than it.
        Default: one step per output interval.
    max_steps : int
        Refuse (before starting) a grid with more steps than this.

    Returns
    -------
    ys : list of n_out states
    stats : dict
    trace : None
    """
    t_out = [float(t) for t in t_out]
    stats = new_stats()
    ys = [y0]
    if len(t_out) == 1:
        return ys, stats, None
    counts = fixed_grid_counts(t_out, step_size)
    if sum(counts) > max_steps:
        raise _fail(MaxStepsError(
            f"a fixed grid with `step_size` = {step_size} needs {sum(counts)} steps, more than "
            f"`max_steps` = {max_steps}. Try: a larger `step_size`, or raise `max_steps`.",
            t=t_out[0], step=0), ys, stats)
    y = y0
    f = checked_field(f, y0, stats)
    f0 = f(t_out[0], y)
    stats["nfev"] += 1
    if not _all_finite(f0):
        raise _fail(NonFiniteError(nonfinite_message(
            "derivative f(t0, y0)" if _all_finite(y0) else "initial state y0", t_out[0], 0),
            t=t_out[0], step=0), ys, stats)
    for k in range(1, len(t_out)):
        ta, n = t_out[k - 1], counts[k - 1]
        h = (t_out[k] - ta) / n
        for i in range(n):
            t = ta + i * h
            if i == n - 1:
                h_i = t_out[k] - t  # land exactly on the output time
            else:
                h_i = h
            y_new, K, _ = rk_step(f, t, y, f0, h_i, tab)
            stats["nfev"] += tab.n_stages - 1
            stats["n_steps"] += 1
            stats["n_accepted"] += 1
            if not _all_finite(y_new):
                stage = _first_nonfinite_stage(K)
                raise _fail(NonFiniteError(nonfinite_message("state", t, stats["n_steps"], stage),
                                           t=t, step=stats["n_steps"]), ys, stats)
            y = y_new
            if tab.fsal:
                f0 = K[-1]
            elif not (k == len(t_out) - 1 and i == n - 1):  # no derivative after the end
                f0 = f(t + h_i, y)
                stats["nfev"] += 1
        ys.append(y)
    return ys, stats, None


# ============================================================================= adaptive

def integrate_adaptive(f, t_out, y0, tab, rtol, atol, first_step=None, max_steps=MAX_STEPS,
                       max_step=math.inf, controller="pi", trace=False, safety=ctl.SAFETY,
                       norm=None, interpolant="dense"):
    """Integrate with error control; outputs come from dense output, at no extra cost.

    Parameters
    ----------
    f : callable ``f(t, y)``
    t_out : sequence of float, shape (n_out,)
        Strictly monotone output times (increasing or decreasing); ``t_out[0]`` is the start.
    y0 : array or Tensor, any shape
    tab : ButcherTableau
        An embedded pair (``tab.adaptive``).
    rtol, atol : float
        Relative and absolute tolerance of the scaled RMS error norm.
    first_step : float, optional
        Size of the first step; default: Hairer's heuristic (one extra evaluation).
    max_steps : int
        Most attempted steps (accepted + rejected) before :class:`MaxStepsError`.
    max_step : float
        Largest step size allowed.
    controller : {"pi", "i"} or (float, float)
        Or the exponents ``(alpha, beta)`` in units of ``1/(q+1)``.
    trace : bool
        Record every attempted step.
    safety : float
        Fraction of the predicted step the controller aims for, in (0, 1].
    norm : {"rms", "max"} or callable, optional
        The error norm of the scaled error (:func:`controller.resolve_norm`); RMS by default.
    interpolant : {"dense", "linear"}
        Outputs inside a step from the method's dense output (default) or by linear
        interpolation between the step's ends (for teaching: it costs accuracy).

    Returns
    -------
    ys : list of n_out states
    stats : dict
    trace : dict of lists or None
        ``t`` (start of the step), ``h`` (signed), ``error_ratio``, ``accepted``.
    """
    t_out = [float(t) for t in t_out]
    stats = new_stats()
    tr = {"t": [], "h": [], "error_ratio": [], "accepted": []} if trace else None
    ys = [y0]
    n_out = len(t_out)
    if n_out == 1:
        return ys, stats, tr
    t0, t_end = t_out[0], t_out[-1]
    direction = 1.0 if t_end > t0 else -1.0
    alpha, beta = ctl.controller_exponents(controller, tab.err_order)
    norm_fn = ctl.resolve_norm(norm)
    linear = interpolant == "linear"
    t, y = t0, y0
    span = abs(t_end - t0)
    f = checked_field(f, y0, stats)
    f0 = f(t, y)
    stats["nfev"] += 1
    if not _all_finite(f0):
        raise _fail(NonFiniteError(nonfinite_message(
            "derivative f(t0, y0)" if _all_finite(y0) else "initial state y0", t, 0),
            t=t, step=0), ys, stats)
    if first_step is None:
        with _untaped(y):   # the probe evaluation only chooses h: nothing to differentiate
            h_abs = ctl.select_initial_step(f, t, y, f0, direction, tab.err_order, rtol, atol,
                                            abs(t_end - t0))
        stats["nfev"] += 1
    else:
        h_abs = float(first_step)
    h_abs = min(h_abs, max_step)
    ratio_prev = 1.0
    after_reject = False
    bad_cause = None  # why the latest rejected try was not finite (words), or None
    k = 1  # next output to produce
    while k < n_out:
        if stats["n_steps"] >= max_steps:
            raise _fail(MaxStepsError(max_steps_message(
                max_steps, t, t_end, h_abs * direction, stats["n_accepted"], stats["n_rejected"]),
                t=t, step=stats["n_steps"]), ys, stats)
        if h_abs < UNDERFLOW_ULPS * EPS * max(abs(t), span):   # min_step_size(t, span)
            if bad_cause is not None:
                raise _fail(NonFiniteError(
                    f"non-finite values (NaN or inf) at t = {t:.17g}, step {stats['n_steps']}: "
                    f"{bad_cause}. The step size was shrunk to h = {h_abs * direction:.3g} "
                    "without getting rid of them.", t=t, step=stats["n_steps"]), ys, stats)
            raise _fail(StepSizeUnderflowError(
                underflow_message(t, stats["n_steps"], h_abs * direction),
                t=t, step=stats["n_steps"]), ys, stats)
        # without dense output the steps must land on every output time
        t_stop = t_end if tab.P is not None else t_out[k]
        t_new = t + direction * h_abs
        if direction * (t_new - t_stop) > 0:
            t_new = t_stop
        h = t_new - t
        y_new, K, err = rk_step(f, t, y, f0, h, tab)
        stats["nfev"] += tab.n_stages - 1
        stats["n_steps"] += 1
        ratio = ctl.error_ratio(raw(err), raw(y), raw(y_new), rtol, atol, norm_fn)
        finite = math.isfinite(ratio)
        accepted = finite and ratio <= 1.0
        if tr is not None:
            tr["t"].append(t)
            tr["h"].append(h)
            tr["error_ratio"].append(ratio)
            tr["accepted"].append(accepted)
        if not finite:
            # a too-large step can overflow an explicit method: shrink hard and retry
            bad_cause = _nonfinite_cause(y, K, y_new, h, tab)
            stats["n_rejected"] += 1
            h_abs = abs(h) * ctl.MIN_FACTOR
            after_reject = True
            continue
        if not accepted:
            stats["n_rejected"] += 1
            h_abs = abs(h) * ctl.step_factor(ratio, ratio_prev, alpha, beta, after_reject,
                                             safety)
            after_reject = True
            bad_cause = None
            continue
        # ---- accepted: emit every output time inside (t, t_new], then move on
        while k < n_out and direction * (t_out[k] - t_new) <= 0:
            if t_out[k] == t_new:
                ys.append(y_new)
            else:
                theta = (t_out[k] - t) / h
                ys.append(y + (y_new - y) * theta if linear else dense_eval(y, K, tab, theta, h))
            k += 1
        factor = ctl.step_factor(ratio, ratio_prev, alpha, beta, after_reject, safety)
        stats["n_accepted"] += 1
        ratio_prev = max(ratio, ctl.ERR_FLOOR)
        after_reject = False
        bad_cause = None
        t, y = t_new, y_new
        if k < n_out:
            if tab.fsal:
                f0 = K[-1]
            else:
                f0 = f(t, y)
                stats["nfev"] += 1
        h_abs = min(abs(h) * factor, max_step)
    return ys, stats, tr


def integrate(f, t_out, y0, tab, rtol=1e-7, atol=1e-9, step_size=None, first_step=None,
              max_steps=MAX_STEPS, max_step=math.inf, controller="pi", trace=False,
              safety=ctl.SAFETY, norm=None, interpolant="dense"):
    """Fixed grid for methods without an error estimate or when ``step_size`` is given,
    adaptive otherwise. Arguments and return value as in :func:`integrate_fixed` and
    :func:`integrate_adaptive` (no argument validation here: see ``nodeform.solve``).
    """
    if step_size is not None or not tab.adaptive:
        return integrate_fixed(f, t_out, y0, tab, step_size=step_size, max_steps=max_steps)
    return integrate_adaptive(f, t_out, y0, tab, rtol, atol, first_step=first_step,
                              max_steps=max_steps, max_step=max_step, controller=controller,
                              trace=trace, safety=safety, norm=norm, interpolant=interpolant)
