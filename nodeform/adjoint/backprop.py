"""Backprop through the solver (discretize-then-optimize; the paper's RK-Net).

The reference engine of :mod:`nodeform.ode.loops` combines states only with
Tensor arithmetic, so running it on a Tensor ``y0`` records every stage of every
step on the tape. ``backward()`` then differentiates the numerical solution
itself, with its step sequence held fixed. On a fixed grid (``step_size=`` or a
fixed-step method) that *is* the exact derivative of the numerical solution, which
is why it is the oracle the continuous adjoint is tested against. The price is
memory: the tape holds every stage, so memory grows with the number of steps.

With adaptive steps, the step sizes are chosen on raw values and are not
differentiated, but they do depend on the inputs (continuously, between changes in
the number of rejected steps). So the gradient is that of the numerical solution
*with the step sequence frozen*; it differs from the derivative of the adaptive
solution by about the tolerance (chapters/ch03_adjoint.py, section 5, measures
2e-5 relative at rtol 1e-4, against 4e-10 on a fixed grid).

Gradients with respect to the output times: when ``t`` requires a gradient, each
interval ``[t_{i-1}, t_i]`` is solved in the rescaled
time ``s = (t - t_{i-1}) / (t_i - t_{i-1})`` in ``[0, 1]``, where
``dy/ds = (t_i - t_{i-1}) f(t_{i-1} + s (t_i - t_{i-1}), y)``. Runge–Kutta methods are
invariant under this affine change of time (the steps, error estimates and
controller decisions are the same), and now ``t_i`` enter as Tensors, so the tape
differentiates them exactly too.
"""
from __future__ import annotations

from nodeform.autodiff.functions import stack
from nodeform.autodiff.tensor import Tensor
from nodeform.ode.api import solve


def odeint_backprop(func, y0, t, t_vals, method, rtol, atol, options, stats=None):
    """Solve with the Tensor path; returns a Tensor ``(len(t), *y0.shape)``.

    Parameters
    ----------
    func : callable ``func(t, y) -> Tensor``
    y0 : Tensor
    t : Tensor or None
        The output times as a Tensor when their gradient is wanted.
    t_vals : list of float
    """
    if not (isinstance(t, Tensor) and t.requires_grad):
        sol = solve(func, y0, t_vals, method=method, rtol=rtol, atol=atol, **options)
        _add_stats(stats, sol)
        return stack(sol.ys)
    ys = [y0]
    opts = dict(options)
    for i in range(1, len(t_vals)):
        t_start, span = t[i - 1], t[i] - t[i - 1]
        scale = abs(t_vals[i] - t_vals[i - 1])
        for key in ("step_size", "first_step", "max_step"):
            if options.get(key) is not None:
                opts[key] = options[key] / scale

        def g(s, y, t_start=t_start, span=span):
            return func(t_start + s * span, y) * span
        sol = solve(g, ys[-1], [0.0, 1.0], method=method, rtol=rtol, atol=atol, **opts)
        _add_stats(stats, sol)
        ys.append(sol.ys[-1])
    return stack(ys)


def _add_stats(stats, sol):
    if stats is not None:
        stats.nfe_forward += sol.stats["nfev"]
        stats.steps_forward += sol.stats["n_accepted"]
        stats.syncs_forward += sol.host_syncs
