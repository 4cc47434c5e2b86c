"""The public entry points, ``odeint`` and ``solve``, and the one dispatch between engines.

``solve`` checks every argument (with errors that name it, say the rule and the fix),
then :func:`select_engine` picks the compiled Numba loop when the vector field is an
``@numba.njit`` function and ``y0`` a 1-D float64 NumPy array, and the reference
``xp`` loop otherwise (NumPy, CuPy, Tensors, any shape). ``NODEFORM_NUMBA=0`` in the
environment switches the Numba engine off; ``engine=`` forces one.
"""
from __future__ import annotations

import math
import numbers
import os
import warnings

import numpy as np

from nodeform.backend import get_xp, is_device_array, raw, require_host, sync_count
from nodeform.ode import errors as _st
# imported here, not in _run_numba: a function-level import costs about 1 µs per solve
from nodeform.ode._fnptr import check_field, field_handle, is_inplace
from nodeform.ode import controller as ctl
from nodeform.ode.errors import (MaxStepsError, NonFiniteError, SolverArgumentError, SolverError,
                                 StepSizeUnderflowError, max_steps_message, nonfinite_message,
                                 underflow_message)
from nodeform.ode.loops import (MAX_STEPS, check_vector_field_output, fixed_grid_counts,
                                integrate)
from nodeform.ode.solution import Solution
from nodeform.ode._adams_run import run_adams
from nodeform.ode.adams import ADAMS
from nodeform.ode.tableaus import METHODS, get_tableau

__all__ = ["odeint", "solve", "select_engine", "DEFAULT_RTOL", "DEFAULT_ATOL"]

#: Default tolerances (torchdiffeq's): tight enough that the solver error is far below a
#: training loss's noise, loose enough for a few hundred steps on the paper's problems.
DEFAULT_RTOL = 1e-7
DEFAULT_ATOL = 1e-9
#: Below ~100 ulps a relative tolerance cannot be met in float64; SciPy clamps there too.
MIN_RTOL = 100 * np.finfo(np.float64).eps
#: State dtypes refused: float16 keeps ~3 significant digits (eps 1e-3), so the error
#: estimate of a step is mostly round-off and no tolerance below 1e-3 can be met.
_TOO_SHORT_FLOATS = (np.float16,)

_OPTIONS = ("first_step", "max_steps", "step_size", "controller", "max_step", "trace", "throw",
            "engine", "specialize")
_OPTIONS_SET = frozenset(_OPTIONS)
_ENGINES = ("auto", "reference", "numba")
#: Options of the step-size control and of the outputs (see :func:`solve`). The compiled
#: engine has the defaults built in: other values run the reference engine (engine="auto")
#: or are refused with the reason (engine="numba").
_CONTROL_DEFAULTS = {"safety": ctl.SAFETY, "norm": "rms", "interpolant": "dense"}
_OPTIONS = _OPTIONS + tuple(_CONTROL_DEFAULTS)
_OPTIONS_SET = frozenset(_OPTIONS)
_INTERPOLANTS = ("dense", "linear")


# ----------------------------------------------------------------------------- validation

def _bad(message):
    return SolverArgumentError(message)


def _check_positive(name, value, allow_zero=False, integer=False):
    kind = numbers.Integral if integer else numbers.Real
    if isinstance(value, bool) or not isinstance(value, kind):
        raise _bad(f"`{name}` = {value!r} must be a {'whole' if integer else 'real'} number; "
                   f"got {type(value).__name__}.")
    ok = value >= 0 if allow_zero else value > 0
    if not ok or (isinstance(value, float) and math.isnan(value)):
        rule = "non-negative" if allow_zero else "positive"
        raise _bad(f"`{name}` = {value!r} must be {rule}. "
                   + ("Tolerances set the accepted error per step: e.g. rtol=1e-6, atol=1e-9."
                      if name in ("rtol", "atol") else f"Pass a {rule} value."))


def _check_atol(atol):
    """``atol`` must be positive: with 0 a state component that is 0 makes the error 0/0."""
    _check_positive("atol", atol, allow_zero=True)
    if atol == 0:
        raise _bad("`atol` = 0 leaves no error control for a state component that is (or "
                   "passes through) 0: its scaled error is 0/0, every step is rejected. Pass a "
                   "small positive `atol` (e.g. 1e-12 for values of order 1; 1e-300 for an "
                   "almost purely relative tolerance).")


#: Up to this many output times the checks run as a plain Python loop (cheaper than
#: NumPy's per-call overhead for the usual ``[t0, t1]``); longer ones are vectorized.
_FEW_TIMES = 16


def _check_times(t):
    """``t`` as a 1-D float64 array, checked finite and strictly monotone."""
    tp = type(t)
    if tp is list or tp is tuple or (tp is np.ndarray and t.dtype == np.float64):
        if 2 <= len(t) <= _FEW_TIMES:
            try:
                t_arr = np.array(t, dtype=np.float64) if tp is not np.ndarray else t
            except (TypeError, ValueError):  # e.g. Tensors inside: the full check converts
                t_arr = None
            if t_arr is not None and t_arr.ndim == 1 and _few_times_ok(t_arr.tolist()):
                return t_arr
    return _check_times_full(t)


def _few_times_ok(ts):
    """True when the floats ``ts`` are finite and strictly monotone (no message)."""
    a = ts[0]
    if not math.isfinite(a):
        return False
    up = ts[1] > a
    for b in ts[1:]:
        if not math.isfinite(b) or (b > a) != up or b == a:
            return False
        a = b
    return True


def _check_times_full(t):
    t_arr = np.asarray(raw(t) if not is_device_array(t) else raw(t).get(), dtype=np.float64)
    if t_arr.ndim != 1 or t_arr.size == 0:
        raise _bad(f"`t` must be a 1-D sequence of output times (t[0] is the start); got shape "
                   f"{t_arr.shape}. For one interval pass e.g. t=[0.0, 1.0].")
    if not np.all(np.isfinite(t_arr)):
        i = int(np.flatnonzero(~np.isfinite(t_arr))[0])
        raise _bad(f"`t[{i}]` = {t_arr[i]} is not finite; every output time must be a finite "
                   "number.")
    if t_arr.size >= 2:
        d = np.diff(t_arr)
        sign = np.sign(d[0])
        bad = np.flatnonzero(np.sign(d) != sign) if sign != 0 else np.array([0])
        if bad.size:
            i = int(bad[0]) + 1
            a, b = float(t_arr[i - 1]), float(t_arr[i])
            raise _bad(f"`t` must be strictly monotone (all increasing or all decreasing), but "
                       f"t[{i - 1}] = {a!r} and t[{i}] = {b!r} break the order. "
                       "Sort the times (np.sort, or [::-1] for backwards in time) and drop "
                       "duplicates (np.unique).")
    return t_arr


def _check_dtype(dtype):
    if dtype in _TOO_SHORT_FLOATS:
        raise _bad(f"`y0` has dtype {dtype}, which has too few digits for error control (about "
                   "3 significant digits: the error estimate of a step would be round-off). "
                   "Integrate in float32 or float64 (`y0.astype(np.float32)`) and cast the "
                   "result back if you need to.")


def _check_y0(y0):
    if type(y0) is np.ndarray and y0.dtype == np.float64 and y0.ndim:  # the common case
        return y0
    if hasattr(y0, "_is_tensor"):
        r = raw(y0)
        if r.dtype.kind != "f":
            raise _bad(f"`y0` has dtype {r.dtype}; the state must be floating point.")
        _check_dtype(r.dtype)
        return y0
    xp = get_xp(y0)
    arr = xp.asarray(y0)
    if arr.dtype.kind in "biu":
        arr = arr.astype(np.float64)
    if arr.dtype.kind != "f":
        raise _bad(f"`y0` has dtype {arr.dtype}; nodeform integrates real floating-point states "
                   "(float64 by default, float32 if you pass it). Split a complex state into "
                   "real and imaginary parts.")
    _check_dtype(arr.dtype)
    if arr.ndim == 0:
        raise _bad("`y0` is a scalar; pass an array of shape (n,) (e.g. np.array([y0])), so "
                   "that f receives and returns arrays.")
    return arr


def _is_numba_function(f):
    ok = type(f).__module__.startswith("numba") and hasattr(f, "py_func")
    if ok and hasattr(f, "get_compile_result"):  # a dispatcher class: remembered by type
        _NUMBA_TYPES.add(type(f))
    return ok


#: Types of ``@numba.njit`` dispatchers seen so far (select_engine's fast path).
_NUMBA_TYPES = set()
#: The native float64 dtype (a singleton: ``is`` is cheaper than ``== np.float64``).
_F64 = np.dtype(np.float64)


def select_engine(f, y0, engine="auto"):
    """``"numba"`` or ``"reference"``: the one place that decides which loop runs.

    Numba runs when ``f`` is an ``@numba.njit`` function, ``y0`` is a 1-D float64 NumPy
    array, and ``NODEFORM_NUMBA`` is not ``"0"``; ``engine="numba"`` insists (and says why
    it cannot), ``engine="reference"`` refuses.
    """
    if (engine == "auto" and type(y0) is np.ndarray and y0.ndim == 1 and y0.dtype is _F64
            and type(f) in _NUMBA_TYPES and os.environ.get("NODEFORM_NUMBA", "1") != "0"):
        return "numba"  # the common case, decided without building the reasons
    if engine not in _ENGINES:
        raise _bad(f"`engine` = {engine!r} is not one of {_ENGINES}.")
    if engine == "reference":
        return "reference"
    reasons = []
    if os.environ.get("NODEFORM_NUMBA", "1") == "0":
        reasons.append("NODEFORM_NUMBA=0 is set")
    # under NUMBA_DISABLE_JIT=1 njit functions are plain Python: engine="numba" then runs
    # the twin's code as Python, which is how one debugs it
    jit_off = engine == "numba" and os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0")
    if not (_is_numba_function(f) or jit_off):
        reasons.append("`f` is not an @numba.njit function")
    if not (isinstance(y0, np.ndarray) and y0.dtype == np.float64 and y0.ndim == 1):
        reasons.append("`y0` is not a 1-D float64 NumPy array")
    if not reasons:
        return "numba"
    if engine == "numba":
        raise _bad("`engine`='numba' cannot run: " + "; ".join(reasons) + ". Use "
                   "engine='auto' to fall back on the reference engine.")
    return "reference"


def _check_control(options):
    """The non-default ``safety``, ``norm`` and ``interpolant`` options, checked."""
    control = {}
    if "safety" in options and options["safety"] != ctl.SAFETY:
        try:
            control["safety"] = ctl.check_safety(options["safety"])
        except ValueError as exc:
            raise _bad(str(exc)) from None
    norm = options.get("norm", "rms")
    if not (isinstance(norm, str) and norm == "rms"):
        try:
            ctl.resolve_norm(norm)
        except ValueError as exc:
            raise _bad(str(exc)) from None
        control["norm"] = norm
    interpolant = options.get("interpolant", "dense")
    if interpolant not in _INTERPOLANTS:
        raise _bad(f"`interpolant` = {interpolant!r} is not one of {_INTERPOLANTS}; 'dense' is "
                   "the method's own dense output, 'linear' joins the step ends by straight "
                   "lines (less accurate: for experiments).")
    if interpolant != "dense":
        control["interpolant"] = interpolant
    return control


# ----------------------------------------------------------------------------- engines

# (tableau, controller) -> what the compiled loop needs from them (see _numba_plan)
_PLANS = {}


def _numba_plan(tab, controller):
    """The loop's tableau arrays and controller exponents, derived once per (tab, controller).

    Returns
    -------
    tuple
        ``(A, b, c, e, P, has_dense, fsal, err_order, alpha, beta, adaptive_loop,
        fixed_loop)``, arrays C-contiguous float64 (``P`` a dummy ``(s, 1)`` zero array
        without dense output; ``e``, ``alpha``, ``beta`` None for a fixed-step method). The
        loops are the compiled ones with the coefficients built in when ``tab`` is a
        built-in method (the object itself, not a copy under its name), else the generic ones.
    """
    key = (tab, controller)
    plan = _PLANS.get(key)
    if plan is None:
        from nodeform.ode import _numba_rk as nb
        builtin = METHODS.get(tab.name) is tab
        s = tab.n_stages
        f64 = (lambda a: np.ascontiguousarray(a, dtype=np.float64))
        alpha, beta = (ctl.controller_exponents(controller, tab.err_order) if tab.adaptive
                       else (None, None))
        plan = (f64(tab.A), f64(tab.b), f64(tab.c), None if tab.e is None else f64(tab.e),
                f64(tab.P) if tab.P is not None else np.zeros((s, 1)), tab.P is not None,
                bool(tab.fsal), tab.err_order, alpha, beta,
                nb.ADAPTIVE_LOOPS.get(tab.name if builtin else None, nb.solve_adaptive),
                nb.FIXED_LOOPS.get(tab.name if builtin else None, nb.solve_fixed))
        _PLANS[key] = plan
    return plan


# (loop, f) -> the loop with f compiled in (nodeform.ode._numba_rk.specialized), without
# a function-level import per solve
_SPECIALIZED = {}


def _run_numba(f, args, t_arr, y0, tab, rtol, atol, step_size, first_step, max_steps, max_step,
               controller, trace, specialize=False):
    if type(args) is not tuple:  # e.g. a namedtuple: the loops take a plain tuple
        args = tuple(args)
    inplace = is_inplace(f, args)  # f(t, y, out, *args) writes dy/dt into out
    jitted = hasattr(f, "get_compile_result")
    # the loops cache across processes only with a handle; fall back on the dispatcher.
    # specialize=True compiles f into the loop instead (per field, not cached on disk)
    fh = field_handle(f, args, inplace) if jitted and not specialize else None
    if fh is None and jitted:
        check_field(f, args, t_arr[0], y0, inplace)  # a clear error, not Numba's TypingError
    (A, b, c, e, P, has_dense, fsal, err_order, alpha, beta, adaptive_loop,
     fixed_loop) = _numba_plan(tab, controller)
    if step_size is not None or not tab.adaptive:
        counts = np.asarray(fixed_grid_counts(list(t_arr), step_size), dtype=np.int64)
        if counts.sum() > max_steps:
            raise MaxStepsError(
                f"a fixed grid with `step_size` = {step_size} needs {int(counts.sum())} steps, "
                f"more than `max_steps` = {max_steps}. Try: a larger `step_size`, or raise "
                "`max_steps`.", t=float(t_arr[0]), step=0)
        loop = fixed_loop
        loop_args = (args, t_arr, y0, A, b, c, fsal, counts)
    else:
        loop = adaptive_loop
        loop_args = (args, t_arr, y0, A, b, c, e, P, has_dense, fsal, err_order, float(rtol),
                     float(atol), -1.0 if first_step is None else float(first_step),
                     float(max_step), int(max_steps), alpha, beta, bool(trace))
    if fh is None:  # f compiled into the loop: never through the disk cache (see specialized)
        spec = _SPECIALIZED.get((loop, f))
        if spec is None:
            from nodeform.ode._numba_rk import specialized
            spec = _SPECIALIZED[(loop, f)] = specialized(loop, f)
        ys, info, bad, tr = spec(*loop_args)
    else:
        ys, info, bad, tr = loop(fh, *loop_args)
    st = info.tolist()  # one conversion, not one NumPy scalar per entry
    status = int(st[0])
    stats = {"nfev": int(st[2]), "n_steps": int(st[3]), "n_accepted": int(st[4]),
             "n_rejected": int(st[5])}
    trace_d = None
    if trace and tr.shape[0]:
        m = stats["n_steps"]
        trace_d = {"t": tr[:m, 0].copy(), "h": tr[:m, 1].copy(),
                   "error_ratio": tr[:m, 2].copy(), "accepted": tr[:m, 3] > 0.5}
    if status == _st.ST_OK:
        return ys, stats, trace_d
    raise_numba_failure(status, info, bad, f, args, t_arr, y0, ys, stats, max_steps,
                        cause_known=tab.adaptive and step_size is None)


def raise_numba_failure(status, info, bad, f, args, t_arr, y0, ys, stats, max_steps,
                        cause_known, nonfinite_by_shrinking=False):
    """Raise the :class:`SolverError` a compiled loop reported through ``info``.

    Shared by the Runge–Kutta and Adams loops (same ``info`` layout:
    ``[status, n_out, nfev, n_steps, n_accepted, n_rejected, t, h, (cause)]``).
    ``cause_known``: the loop records why a step went non-finite in ``info[8]``;
    ``nonfinite_by_shrinking``: else, a non-finite failure means the loop shrank ``h``
    to underflow while every try produced NaN/inf (the Adams loop), and says so.
    """
    t_fail, h_fail, step = float(info[6]), float(info[7]), stats["n_steps"]
    bad = None if bad < 0 else int(bad)
    if status == _st.ST_BAD_SHAPE:  # rerun the call in Python to build the precise message
        check_vector_field_output(f(float(t_arr[0]), y0, *args), y0, float(t_arr[0]))
        exc = SolverArgumentError("`f` returned an array of the wrong length during the solve; "
                                  "it must always return shape (n,) like `y`.")
    elif status == _st.ST_MAX_STEPS:
        exc = MaxStepsError(max_steps_message(max_steps, t_fail, float(t_arr[-1]), h_fail,
                                              stats["n_accepted"], stats["n_rejected"]),
                            t=t_fail, step=step)
    elif status == _st.ST_UNDERFLOW:
        exc = StepSizeUnderflowError(underflow_message(t_fail, step, h_fail), t=t_fail, step=step)
    elif status == _st.ST_NONFINITE_START:
        what = "derivative f(t0, y0)" if np.all(np.isfinite(y0)) else "initial state y0"
        exc = NonFiniteError(nonfinite_message(what, t_fail, 0), t=t_fail, step=0)
    elif status == _st.ST_NONFINITE and cause_known:
        from nodeform.ode._numba_rk import nonfinite_cause_words
        y_last = ys[max(int(info[1]) - 1, 0)] if info[1] > 0 else y0
        cause = nonfinite_cause_words(int(info[8]), bad, y_last)
        shrunk = (f" The step size was shrunk to h = {h_fail:.3g} without getting rid of them."
                  if step else "")
        exc = NonFiniteError(f"non-finite values (NaN or inf) at t = {t_fail:.17g}, step {step}: "
                             f"{cause}.{shrunk}", t=t_fail, step=step)
    elif nonfinite_by_shrinking:
        exc = NonFiniteError(underflow_message(t_fail, step, h_fail, bad), t=t_fail, step=step)
    else:
        exc = NonFiniteError(nonfinite_message("state", t_fail, step, bad), t=t_fail, step=step)
    exc.partial = [ys[i] for i in range(int(info[1]))]
    exc.stats = stats
    raise exc


def _stack(ys, xp):
    if ys and hasattr(ys[0], "_is_tensor"):
        return list(ys)
    return xp.stack(ys)


# ----------------------------------------------------------------------------- public API

def solve(f, y0, t, method="dopri5", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, args=(), **options):
    """Solve ``dy/dt = f(t, y, *args)``, ``y(t[0]) = y0``, and report how it went.

    Parameters
    ----------
    f : callable ``f(t, y, *args) -> dy/dt``
        Returns an array shaped and typed like ``y``. An ``@numba.njit`` function runs
        the whole solve compiled (1-D float64 ``y0``); there it may also be written in place,
        ``f(t, y, out, *args)`` writing dy/dt into ``out`` and returning nothing (detected
        from its ``3 + len(args)`` parameters; about 2x faster for small systems: no
        allocation per evaluation).
    y0 : array_like or Tensor, shape (*state)
        Any shape: a batch is just more axes (one step size for the whole batch).
        float64 (default) or float32; float16 is refused (too few digits).
    t : array_like, shape (n_out,)
        Output times, strictly increasing or strictly decreasing (backwards in time);
        ``t[0]`` is the start. Outputs cost no extra evaluations (dense output).
    method : str or ButcherTableau
        ``"dopri5"`` (default), ``"tsit5"``, ``"bosh3"`` (adaptive) or ``"euler"``,
        ``"midpoint"``, ``"rk4"`` (fixed grid); ``"adams"``: variable-order Adams PECE
        (:mod:`nodeform.ode.adams`; its trace also has the ``order`` of each step).
    rtol, atol : float
        Tolerances of the scaled RMS error ``err / (atol + rtol |y|)`` per step; both
        positive (``atol = 0`` is refused: a zero component would give 0/0).
    args : tuple
        Extra arguments passed to ``f``.
    **options
        ``step_size`` (fixed grid; for an adaptive pair it switches to fixed steps),
        ``first_step``, ``max_steps`` (default 10,000 attempted steps), ``max_step``,
        ``controller`` (``"pi"`` default, or ``"i"``), ``trace`` (record every step),
        ``throw`` (default True; False returns a failed ``Solution`` instead of raising),
        ``engine`` (``"auto"``, ``"reference"``, ``"numba"``), ``specialize`` (Numba engine:
        compile ``f`` into the loop instead of calling it through a pointer; for a small
        in-place field the pointer path is as fast (within 5%), so it pays off for larger
        fields that LLVM can optimize together with the stages, at the cost of one loop
        compile per field and process, 4-10 s, which the disk cache does not keep).
        Step-size control and outputs (for teaching and experiments; no library edit needed):
        ``controller`` may also be a pair ``(alpha, beta)`` of exponents in units of
        ``1/(q+1)`` (``(1, 0)`` is "i", ``(0.85, 0.2)`` is "pi"); ``safety`` (default 0.9,
        in (0, 1]); ``norm`` of the scaled error (``"rms"`` default, ``"max"``, or a
        callable ``norm(scaled_err) -> float``); ``interpolant`` (``"dense"`` default, or
        ``"linear"`` between step ends). The Numba engine honours exponent pairs; other
        values of ``safety``, ``norm`` and ``interpolant`` run the reference engine (or are
        refused with ``engine="numba"``).

    Returns
    -------
    Solution

    Raises
    ------
    SolverArgumentError
        A bad argument (also a ``ValueError``), or ``f`` returned a wrong shape/dtype.
    NonFiniteError, StepSizeUnderflowError, MaxStepsError
        The integration failed (with ``throw=True``); the message says where and what to try.
    """
    if options and not _OPTIONS_SET.issuperset(options):
        unknown = sorted(set(options) - _OPTIONS_SET)
        raise _bad(f"unknown option(s) {unknown}; the options are {list(_OPTIONS)}.")
    if not callable(f):
        raise _bad(f"`f` must be callable as f(t, y, *args); got {type(f).__name__}.")
    try:
        tab = ADAMS if (type(method) is str and method == "adams") else get_tableau(method)
    except ValueError as exc:
        raise _bad(str(exc).replace(" or pass", ", 'adams' (Adams PECE), or pass")) from None
    # the common case (positive float tolerances) is checked inline; anything else gets the
    # full check and its message
    if not (type(rtol) is float and rtol > 0.0):
        _check_positive("rtol", rtol)
    if not (type(atol) is float and atol > 0.0):
        _check_atol(atol)
    if rtol < MIN_RTOL:
        warnings.warn(f"`rtol` = {rtol} is below {MIN_RTOL:.1e}, which float64 cannot meet; "
                      f"using {MIN_RTOL:.1e}.", stacklevel=2)
        rtol = MIN_RTOL
    if options:
        step_size = options.get("step_size")
        first_step = options.get("first_step")
        max_steps = options.get("max_steps", MAX_STEPS)
        max_step = options.get("max_step", math.inf)
        controller = options.get("controller", "pi")
        trace = bool(options.get("trace", False))
        throw = bool(options.get("throw", True))
        if step_size is not None:
            _check_positive("step_size", step_size)
        if first_step is not None:
            _check_positive("first_step", first_step)
        if not (type(max_steps) is int and max_steps > 0):
            _check_positive("max_steps", max_steps, integer=True)
        if not (type(max_step) is float and max_step > 0.0):
            _check_positive("max_step", max_step)
        if controller not in ctl.CONTROLLERS:
            try:
                ctl.controller_exponents(controller, 1)
            except ValueError as exc:
                raise _bad(str(exc)) from None
            controller = tuple(float(v) for v in controller)
        control = _check_control(options)
    else:  # the defaults (valid by construction): a repeated small solve skips the checks
        step_size = first_step = None
        max_steps, max_step, controller = MAX_STEPS, math.inf, "pi"
        trace, throw, control = False, True, {}
    if control and (step_size is not None or not getattr(tab, "adaptive", False)
                    or not hasattr(tab, "P")):
        raise _bad(f"{sorted(control)} apply to the adaptive Runge-Kutta pairs (dopri5, tsit5, "
                   "bosh3 or your own pair) without `step_size`; here they would do nothing. "
                   "Leave them out, or use an adaptive pair.")
    if not isinstance(args, tuple):
        raise _bad(f"`args` must be a tuple of extra arguments for f; got "
                   f"{type(args).__name__}. Wrap a single one as (value,).")
    t_arr = _check_times(t)
    y0 = _check_y0(y0)
    opt_engine = options.get("engine", "auto") if options else "auto"
    if opt_engine == "numba" or _is_numba_function(f):
        require_host(y0, "the Numba engine (an @numba.njit `f`, or engine='numba')")
    engine = select_engine(f, y0, opt_engine)
    if control and engine == "numba":
        if options.get("engine") == "numba":
            raise _bad(f"`engine`='numba' cannot honour {sorted(control)}: the compiled loop has "
                       "the default safety factor, RMS norm and dense output built in. Use "
                       "engine='auto' (it runs the reference engine for these options).")
        engine = "reference"
    xp = np if engine == "numba" else get_xp(y0)
    syncs0 = sync_count()
    try:
        if tab is ADAMS:
            ys, stats, tr = run_adams(engine, f, args, t_arr, y0, rtol, atol, step_size,
                                      first_step, max_steps, max_step, trace,
                                      controller=options.get("controller"),
                                      specialize=bool(options.get("specialize", False)))
            ys = ys if engine == "numba" else _stack(ys, xp)  # the Numba loop returns an array
        elif engine == "numba":
            ys, stats, tr = _run_numba(f, args, t_arr, y0, tab, rtol, atol, step_size,
                                       first_step, max_steps, max_step, controller, trace,
                                       bool(options.get("specialize", False)))
        else:
            fa = f if not args else (lambda tt, yy: f(tt, yy, *args))
            ys, stats, tr = integrate(fa, t_arr.tolist(), y0, tab, rtol=rtol, atol=atol,
                                      step_size=step_size, first_step=first_step,
                                      max_steps=max_steps, max_step=max_step,
                                      controller=controller, trace=trace, **control)
            ys = _stack(ys, xp)
            if tr is not None:
                tr = {"t": np.asarray(tr["t"]), "h": np.asarray(tr["h"]),
                      "error_ratio": np.asarray(tr["error_ratio"]),
                      "accepted": np.asarray(tr["accepted"], dtype=bool)}
    except SolverError as exc:
        if throw or isinstance(exc, SolverArgumentError):
            raise
        partial = exc.partial or [y0]
        if hasattr(partial[0], "_is_tensor"):
            ys = list(partial)
        else:
            pr = [xp.asarray(p) for p in partial]
            ys = xp.full((len(t_arr),) + tuple(pr[0].shape), xp.nan, dtype=pr[0].dtype)
            for i, p in enumerate(pr):
                ys[i] = p
        return Solution(ts=t_arr, ys=ys, stats=exc.stats or {}, status=exc.status, message=str(exc),
                        method=tab.name, engine=engine, host_syncs=sync_count() - syncs0)
    return Solution(ts=t_arr, ys=ys, stats=stats, trace=tr, method=tab.name, engine=engine,
                    host_syncs=sync_count() - syncs0)


def odeint(f, y0, t, method="dopri5", rtol=DEFAULT_RTOL, atol=DEFAULT_ATOL, args=(), **options):
    """The states at the times ``t``: ``solve(...).ys``, shape ``(len(t), *y0.shape)``.

    Same arguments as :func:`solve`; raises on failure (``throw`` is always True).
    """
    if "throw" in options:
        raise _bad("`odeint` always raises on failure; use `solve(..., throw=False)` to get a "
                   "Solution with a status instead.")
    return solve(f, y0, t, method=method, rtol=rtol, atol=atol, args=args, **options).ys
