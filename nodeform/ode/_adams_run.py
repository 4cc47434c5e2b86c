"""``solve(..., method="adams")``: run the Adams engine (reference or Numba) for ``api.solve``.

Kept apart from :mod:`nodeform.ode.api` so that the dispatch there is two lines; the
arguments arrive already checked.
"""
from __future__ import annotations

import numpy as np

from nodeform.ode import errors as _st
from nodeform.ode.adams import MAX_ORDER, integrate_adams
from nodeform.ode.errors import (MaxStepsError, NonFiniteError, SolverArgumentError,
                                 StepSizeUnderflowError, max_steps_message, nonfinite_message,
                                 underflow_message)
from nodeform.ode.loops import check_vector_field_output

__all__ = ["run_adams"]


def _trace_arrays(tr):
    return {"t": np.asarray(tr["t"], dtype=np.float64), "h": np.asarray(tr["h"], dtype=np.float64),
            "error_ratio": np.asarray(tr["error_ratio"], dtype=np.float64),
            "accepted": np.asarray(tr["accepted"], dtype=bool),
            "order": np.asarray(tr["order"], dtype=np.int64)}


def run_adams(engine, f, args, t_arr, y0, rtol, atol, step_size, first_step, max_steps,
              max_step, trace, max_order=MAX_ORDER, controller=None):
    """``(ys, stats, trace)`` as the RK engines return them; ``ys`` a list of states.

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
                          trace, max_order)
    fa = f if not args else (lambda tt, yy: f(tt, yy, *args))
    ys, stats, tr = integrate_adams(fa, t_arr.tolist(), y0, rtol, atol, first_step=first_step,
                                    max_steps=max_steps, max_step=max_step,
                                    max_order=max_order, trace=trace)
    return ys, stats, (None if tr is None else _trace_arrays(tr))


def _run_numba(f, args, t_arr, y0, rtol, atol, first_step, max_steps, max_step, trace,
               max_order):
    from nodeform.ode import _numba_adams as nb
    from nodeform.ode._fnptr import field_handle
    args = tuple(args)
    fh = field_handle(f, args) if hasattr(f, "get_compile_result") else None
    f_loop = f if fh is None else fh
    x, w = nb.gauss_arrays()
    ys, info, bad, tr = nb.solve_adams(
        f_loop, args, t_arr, y0, float(rtol), float(atol),
        -1.0 if first_step is None else float(first_step), float(max_step), int(max_steps),
        int(max_order), bool(trace), x, w)
    status = int(info[0])
    stats = {"nfev": int(info[2]), "n_steps": int(info[3]), "n_accepted": int(info[4]),
             "n_rejected": int(info[5])}
    trace_d = None
    if trace:
        m = stats["n_steps"]
        trace_d = {"t": tr[:m, 0].copy(), "h": tr[:m, 1].copy(),
                   "error_ratio": tr[:m, 2].copy(), "accepted": tr[:m, 3] > 0.5,
                   "order": tr[:m, 4].astype(np.int64)}
    if status == _st.ST_OK:
        return [ys[i] for i in range(ys.shape[0])], stats, trace_d
    t_fail, h_fail, step = float(info[6]), float(info[7]), stats["n_steps"]
    bad = None if bad < 0 else int(bad)
    if status == _st.ST_BAD_SHAPE:
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
    else:
        exc = NonFiniteError(underflow_message(t_fail, step, h_fail, bad), t=t_fail, step=step)
    exc.partial = [ys[i] for i in range(int(info[1]))]
    exc.stats = stats
    raise exc
