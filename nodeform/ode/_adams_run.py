"""``solve(..., method="adams")``: run the Adams engine (reference or Numba) for ``api.solve``.

Kept apart from :mod:`nodeform.ode.api` so that the dispatch there is two lines; the
arguments arrive already checked.
"""
from __future__ import annotations

import numpy as np

from nodeform.ode import errors as _st
from nodeform.ode._fnptr import (args_key, check_field, field_handle, install_compile_log,
                                 is_inplace)
from nodeform.ode.adams import MAX_ORDER, integrate_adams
from nodeform.ode.errors import SolverArgumentError

__all__ = ["run_adams"]

# (f, args_key(args), specialize) -> (loop, its f argument or None, Gauss nodes, weights)
_PLANS = {}


def _plan(f, args, t_arr, y0, specialize, memo=True):
    """What :func:`_run_numba` needs for ``f``: the loop, ``f``'s handle, the constants.

    With a function-pointer handle the cached loop takes the handle; ``specialize=True``,
    or a field without a handle, gets the loop with ``f`` compiled in (checked first, so
    that a wrong field gets a clear error rather than Numba's TypingError).
    """
    from nodeform.ode import _numba_adams as nb
    inplace = is_inplace(f, args)  # f(t, y, out, *args) writes dy/dt into out
    jitted = hasattr(f, "get_compile_result")
    fh = field_handle(f, args, inplace) if jitted and not specialize else None
    if fh is not None:
        loop, f_arg = nb.solve_adams, fh
    elif jitted:
        check_field(f, args, t_arr[0], y0, inplace)
        install_compile_log()  # this loop compiles in every process: say so
        loop, f_arg = nb.with_field(f), None
    else:  # NUMBA_DISABLE_JIT=1 (engine="numba" as Python, for debugging): f as it is
        loop, f_arg = nb.solve_adams, f
    x, w = nb.gauss_arrays()
    plan = (loop, f_arg, x, w)
    if memo:
        _PLANS[(f, args_key(args), specialize)] = plan
    return plan


def _trace_arrays(tr):
    return {"t": np.asarray(tr["t"], dtype=np.float64), "h": np.asarray(tr["h"], dtype=np.float64),
            "error_ratio": np.asarray(tr["error_ratio"], dtype=np.float64),
            "accepted": np.asarray(tr["accepted"], dtype=bool),
            "order": np.asarray(tr["order"], dtype=np.int64)}


def run_adams(engine, f, args, t_arr, y0, rtol, atol, step_size, first_step, max_steps,
              max_step, trace, max_order=MAX_ORDER, controller=None, specialize=False):
    """``(ys, stats, trace)`` as the RK engines return them; ``ys`` a list of states
    (reference engine) or an array of shape ``(n_out, n)`` (Numba engine).

    ``specialize`` (Numba engine): compile ``f`` into the loop instead of calling it
    through a function pointer (one loop compile per field and process, not cached).

    Raises the :class:`~nodeform.ode.errors.SolverError` of a failed solve, with
    ``partial`` and ``stats`` set.
    """
    if step_size is not None:
        raise SolverArgumentError(
            f"`step_size` = {step_size} does not apply to method='adams', which chooses its "
            "own steps and orders; drop `step_size` (use `max_step` to bound the steps), or "
            "pick a fixed-grid method such as 'rk4'.")
    if controller is not None:
        raise SolverArgumentError(
            f"`controller` = {controller!r} does not apply to method='adams', which chooses its "
            "steps and orders from its own error estimates (nodeform/ode/adams.py); drop "
            "`controller`.")
    if engine == "numba":
        return _run_numba(f, args, t_arr, y0, rtol, atol, first_step, max_steps, max_step,
                          trace, max_order, specialize)
    fa = f if not args else (lambda tt, yy: f(tt, yy, *args))
    ys, stats, tr = integrate_adams(fa, t_arr.tolist(), y0, rtol, atol, first_step=first_step,
                                    max_steps=max_steps, max_step=max_step,
                                    max_order=max_order, trace=trace)
    return ys, stats, (None if tr is None else _trace_arrays(tr))


def _run_numba(f, args, t_arr, y0, rtol, atol, first_step, max_steps, max_step, trace,
               max_order, specialize=False):
    if type(args) is not tuple:  # e.g. a namedtuple: the loop takes a plain tuple
        args = tuple(args)
    try:  # the field's handle (or None) and the compiled loop's constants, once per field
        plan = _PLANS[(f, args_key(args), specialize)]
    except KeyError:
        plan = _plan(f, args, t_arr, y0, specialize)
    except TypeError:  # an unhashable argument: no memo
        plan = _plan(f, args, t_arr, y0, specialize, memo=False)
    loop, f_arg, x, w = plan
    rest = (args, t_arr, y0, rtol if type(rtol) is float else float(rtol),
            atol if type(atol) is float else float(atol),
            -1.0 if first_step is None else float(first_step), float(max_step),
            int(max_steps), int(max_order), bool(trace), x, w)
    ys, info, bad, tr = loop(*rest) if f_arg is None else loop(f_arg, *rest)
    st = info.tolist()  # one conversion, not one NumPy scalar per entry
    status = int(st[0])
    stats = {"nfev": int(st[2]), "n_steps": int(st[3]), "n_accepted": int(st[4]),
             "n_rejected": int(st[5])}
    trace_d = None
    if trace:
        m = stats["n_steps"]
        trace_d = {"t": tr[:m, 0].copy(), "h": tr[:m, 1].copy(),
                   "error_ratio": tr[:m, 2].copy(), "accepted": tr[:m, 3] > 0.5,
                   "order": tr[:m, 4].astype(np.int64)}
    if status == _st.ST_OK:
        return ys, stats, trace_d
    from nodeform.ode.api import raise_numba_failure
    raise_numba_failure(status, info, bad, f, args, t_arr, y0, ys, stats, max_steps,
                        cause_known=False, nonfinite_by_shrinking=True)
