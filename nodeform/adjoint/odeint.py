"""``nodeform.odeint`` on Tensors: the solve as one differentiable operation.

``odeint(func, y0, t, adjoint="continuous" | "backprop")`` returns a Tensor of shape
``(len(t), *y0.shape)`` that gradients flow through to ``y0``, to the parameters of
``func`` and to ``t``. With plain arrays and a plain function it is the integrator
:func:`nodeform.ode.odeint` and returns an array.

* ``"continuous"``: the solve is a single primitive of the autodiff whose VJP is the
  hand-derived adjoint of :mod:`nodeform.adjoint.continuous`. No graph is kept
  inside the solve; memory does not grow with the number of steps.
* ``"backprop"``: the solver's own operations are recorded (:mod:`.backprop`);
  exact for the discrete scheme, memory grows with the steps.
* A :class:`~nodeform.adjoint.numba_field.NumbaField` (or ``(f, f_vjp)``) as ``func``
  runs forward and adjoint solves compiled (continuous adjoint only). The same pair
  written as plain NumPy functions runs the same way in the reference loops.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nodeform.adjoint.backprop import odeint_backprop
from nodeform.adjoint.continuous import AugmentedLayout, TensorField, adjoint_sweep
from nodeform.adjoint.numba_field import NumbaField, augmented, vjp_handle
from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor, _toposort, enable_grad, is_grad_enabled
from nodeform.backend import get_xp
from nodeform.ode import api as ode_api
from nodeform.ode.api import _is_numba_function
from nodeform.ode.errors import SolverArgumentError

ADJOINTS = ("continuous", "backprop")


@dataclass
class SolveStats:
    """Evaluation counts of a differentiable solve, filled in as it runs.

    Pass one as ``odeint(..., stats=SolveStats())``: ``nfe_forward`` is known after
    the forward solve, ``nfe_backward`` after ``backward()``. Counts add up over
    calls, so one object can follow a whole training iteration (call :meth:`reset`).
    The one evaluation of ``func`` that checks its parameters are registered (continuous
    adjoint, when gradients are recorded) is not counted.
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_forward: int = 0
    steps_backward: int = 0

    def reset(self):
        self.nfe_forward = self.nfe_backward = self.steps_forward = self.steps_backward = 0


def _bad(msg):
    return SolverArgumentError(msg)


def _is_tensor_call(func, y0, t, params):
    return (isinstance(y0, Tensor) or isinstance(t, Tensor) or params is not None
            or hasattr(func, "parameters") or isinstance(func, (NumbaField, tuple)))


def _find_params(func, params):
    if params is None:
        params = list(func.parameters()) if hasattr(func, "parameters") else []
    elif isinstance(params, Tensor):
        params = [params]
    params = list(params)
    for k, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise _bad(f"`params[{k}]` is a {type(p).__name__}; parameters must be Tensors "
                       "(`nf.Tensor(x, requires_grad=True)`).")
    return [p for p in params if p.requires_grad]


def _name_of(func, tensor):
    """The variable name under which ``func`` can see ``tensor``, if any (for messages)."""
    code = getattr(func, "__code__", None) or getattr(getattr(func, "forward", None), "__code__", None)
    if code is None:
        return None
    closure = getattr(func, "__closure__", None) or ()
    for name, cell in zip(code.co_freevars, closure):
        try:
            if cell.cell_contents is tensor:
                return name
        except ValueError:
            pass
    glb = getattr(func, "__globals__", {})
    for name in code.co_names:
        if glb.get(name) is tensor:
            return name
    return None


def check_registered(func, params, t0, y0_data, shape, dtype):
    """Raise if ``func`` uses a Tensor requiring grad that is not among ``params``.

    Such a Tensor would get no gradient from the continuous adjoint (whose forward
    solve keeps no graph): the most common silent bug of adjoint libraries.
    """
    xp = get_xp(y0_data)
    with enable_grad():
        z = Tensor(y0_data.reshape(shape)).requires_grad_(True)
        tt = Tensor(xp.asarray(t0, dtype=dtype)).requires_grad_(True)
        out = func(tt, z)
    if not isinstance(out, Tensor):
        raise _bad(f"`func(t, y)` must return a Tensor on the Tensor path, got {type(out).__name__}.")
    if tuple(out.shape) != tuple(shape):
        raise _bad(f"`func(t, y)` returned shape {tuple(out.shape)} but `y0` has shape "
                   f"{tuple(shape)}; it must return dy/dt shaped like y.")
    if not out.requires_grad:
        return
    known = {id(z), id(tt)} | {id(p) for p in params}
    for leaf in _toposort(out):
        if leaf.is_leaf and leaf.requires_grad and id(leaf) not in known:
            name = _name_of(func, leaf)
            what = f"`{name}`" if name else f"a Tensor of shape {leaf.shape} ({leaf.dtype})"
            raise _bad(
                f"`func` uses {what} that requires grad but is not among its parameters, so the "
                "continuous adjoint would silently give it no gradient. Register it: make it "
                "an attribute of the nn.Module `func` (then `func.parameters()` finds it), or "
                "pass `params=[...]` listing every Tensor to differentiate, or use "
                "adjoint='backprop'.")


class _Problem:
    """One differentiable solve: settings, the stored forward states, the backward pass."""

    def __init__(self, func, params, t_vals, shape, dtype, method, rtol, atol, options,
                 adj_method, adj_rtol, adj_atol, adj_options, stats, t_requires_grad):
        self.func, self.params, self.t_vals = func, params, t_vals
        self.shape, self.dtype = shape, dtype
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.adj = (adj_method, adj_rtol, adj_atol, adj_options)
        self.stats, self.with_t = stats, t_requires_grad
        self.numba = isinstance(func, NumbaField)
        self._cache = None

    # ---------------------------------------------------------------- forward
    def forward(self, y0):
        if self.numba:
            nf_ = self.func
            theta = self._theta()
            sol = ode_api.solve(nf_.f, y0.ravel(), self.t_vals, method=self.method, rtol=self.rtol,
                                atol=self.atol, args=(theta,) + tuple(nf_.args), **self.options)
        else:
            self.field = TensorField(self.func, self.params, self.shape, self.dtype)
            sol = ode_api.solve(self.field.f, y0, self.t_vals, method=self.method, rtol=self.rtol,
                                atol=self.atol, **self.options)
        if self.stats is not None:
            self.stats.nfe_forward += sol.stats["nfev"]
            self.stats.steps_forward += sol.stats["n_accepted"]
        self.ys = sol.ys.reshape((len(self.t_vals),) + tuple(self.shape))
        return self.ys

    def _theta(self):
        return np.ascontiguousarray(self.params[0].data, dtype=np.float64)

    # ---------------------------------------------------------------- backward
    def grads(self, g):
        if self._cache is not None and self._cache[0] is g:
            return self._cache[1]
        if is_grad_enabled():
            raise NotImplementedError(
                "gradients of gradients through the continuous adjoint are not supported "
                "(`backward(create_graph=True)` reached an odeint node). Use adjoint='backprop', "
                "whose tape can be differentiated again.")
        xp = get_xp(g.data)
        n = int(np.prod(self.shape))
        G = g.data.reshape(len(self.t_vals), n)
        ys = [self.ys[i].reshape(n) for i in range(len(self.t_vals))]
        p = int(sum(q.size for q in self.params))
        layout = AugmentedLayout(n, p, self.with_t)
        adj_method, adj_rtol, adj_atol, adj_options = self.adj
        nfev = [0]
        steps = [0]
        if self.numba:
            nf_ = self.func
            theta = self._theta()
            extra = tuple(nf_.args)

            def f_eval(t, z):
                nfev[0] += 1
                return nf_.f(float(t), z, theta, *extra)

            # a function-pointer handle keeps the compiled adjoint loop cached across processes;
            # a plain NumPy pair (not njit) runs the same augmented dynamics in the reference loop
            compiled = _is_numba_function(nf_.f_vjp)
            vjp = vjp_handle(nf_.f_vjp, theta, extra) if compiled else None
            vjp = nf_.f_vjp if vjp is None else vjp
            aug_f = augmented if compiled else augmented.py_func

            def solve_back(s, t_from, t_to):
                sol = ode_api.solve(aug_f, s, [t_from, t_to], method=adj_method, rtol=adj_rtol,
                                    atol=adj_atol, args=(vjp, theta, n, p, self.with_t, extra),
                                    **adj_options)
                nfev[0] += sol.stats["nfev"]
                steps[0] += sol.stats["n_accepted"]
                return sol.ys[-1]
        else:
            field = self.field
            count0 = field.nfev

            def f_eval(t, z):
                return field.f(t, z).reshape(n)

            def aug(t, s):
                z, a, _, _ = layout.unpack(s)
                fz, gz, gth, gt = field.vjp(t, z, a, self.with_t)
                out = xp.empty_like(s)
                out[:n], out[n:2 * n], out[2 * n:2 * n + p] = fz.ravel(), -gz.ravel(), -gth
                if self.with_t:
                    out[-1] = -gt
                return out

            def solve_back(s, t_from, t_to):
                sol = ode_api.solve(aug, s, [t_from, t_to], method=adj_method, rtol=adj_rtol,
                                    atol=adj_atol, **adj_options)
                steps[0] += sol.stats["n_accepted"]
                return sol.ys[-1]
        g_z0, g_theta, g_t = adjoint_sweep(self.t_vals, ys, G, f_eval, solve_back, layout, xp,
                                           self.dtype)
        if not self.numba:
            nfev[0] = field.nfev - count0
        if self.stats is not None:
            self.stats.nfe_backward += nfev[0]
            self.stats.steps_backward += steps[0]
        out = {"y0": g_z0.reshape(self.shape),
               "t": None if g_t is None else xp.asarray(g_t, dtype=self.dtype)}
        off = 0
        for k, q in enumerate(self.params):
            out[k] = g_theta[off:off + q.size].reshape(q.shape)
            off += q.size
        self._cache = (g, out)
        return out


def _odeint_forward(y0, t, *params, problem):
    return problem.forward(y0)


def _odeint_vjp(i, g, ans, y0, t, *params, problem):
    grads = problem.grads(g)
    key = "y0" if i == 0 else ("t" if i == 1 else i - 2)
    return Tensor(grads[key])


odeint_p = defprim("odeint", _odeint_forward, vjp_i=_odeint_vjp)


def odeint(func, y0, t, method="dopri5", rtol=ode_api.DEFAULT_RTOL, atol=ode_api.DEFAULT_ATOL,
           args=(), adjoint="continuous", params=None, adjoint_method=None, adjoint_rtol=None,
           adjoint_atol=None, adjoint_options=None, stats=None, **options):
    """Solve ``dy/dt = func(t, y)`` and return the states at ``t``, differentiably.

    Parameters
    ----------
    func : callable ``func(t, y)``, nn Module, NumbaField or ``(f, f_vjp)``
        With Tensors, ``func`` maps ``(t, y)`` to a Tensor shaped like ``y``; ``t`` is a
        Python float, or a 0-d Tensor while time gradients are computed.
    y0 : array or Tensor, shape (*state)
    t : array_like or Tensor, shape (n_out,)
        Strictly monotone; ``t[0]`` is the start.
    method, rtol, atol, args, **options
        As :func:`nodeform.solve` (``step_size``, ``first_step``, ``max_steps``, ...).
    adjoint : {"continuous", "backprop"}
        How gradients are computed (see the module docstring).
    params : Tensor or list of Tensor, optional
        The parameters to differentiate; default: ``func.parameters()`` when ``func`` is
        a Module. For a NumbaField, the flat ``theta`` Tensor.
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options
        Settings of the backward solve; default to the forward ones.
    stats : SolveStats, optional
        Receives the forward and backward evaluation counts.

    Returns
    -------
    Tensor, shape (n_out, *y0.shape) on the Tensor path; ndarray otherwise.
    """
    if not _is_tensor_call(func, y0, t, params):
        return ode_api.odeint(func, y0, t, method=method, rtol=rtol, atol=atol, args=args, **options)
    if adjoint not in ADJOINTS:
        raise _bad(f"`adjoint` must be one of {ADJOINTS}, got {adjoint!r}.")
    if args:
        raise _bad("`args` is for plain array solves; on the Tensor path close over extra "
                   "arguments in `func` (or use a NumbaField's own `args`).")
    if isinstance(func, tuple):
        func = NumbaField(*func) if len(func) == 2 else NumbaField(func[0], func[1], tuple(func[2]))
    t_tensor = t if isinstance(t, Tensor) else None
    t_vals = np.asarray(t.numpy() if t_tensor is not None else t, dtype=np.float64)
    if t_vals.ndim != 1 or t_vals.size < 2:
        raise _bad(f"`t` must be a 1-d sequence of at least two times, got shape {t_vals.shape}.")
    t_list = t_vals.tolist()
    y0_t = y0 if isinstance(y0, Tensor) else Tensor(y0)
    if y0_t.dtype.kind != "f":
        raise _bad(f"`y0` must be floating point, got dtype {y0_t.dtype}.")
    plist = _find_params(func, params)
    numba = isinstance(func, NumbaField)
    if numba:
        if adjoint != "continuous":
            raise _bad("a NumbaField runs the continuous adjoint only; for adjoint='backprop' "
                       "use `field.reference(theta)` as `func`.")
        if len(plist) != 1 or plist[0].ndim != 1:
            raise _bad("a NumbaField needs `params` = one flat theta Tensor of shape (p,) with "
                       "requires_grad=True.")
        if y0_t.dtype != np.float64 or get_xp(y0_t.data) is not np:
            raise _bad("the Numba path runs on float64 NumPy arrays only; pass y0 as such.")
    if adjoint == "backprop":
        return odeint_backprop(func, y0_t, t_tensor, t_list, method, rtol, atol, options, stats)
    with_t = t_tensor is not None and t_tensor.requires_grad
    if not numba and is_grad_enabled() and (y0_t.requires_grad or plist or with_t):
        check_registered(func, plist, t_list[0], y0_t.data, y0_t.shape, y0_t.dtype)
    adj_options = dict(options if adjoint_options is None else adjoint_options)
    adj_options.pop("trace", None)
    problem = _Problem(func, plist, t_list, y0_t.shape, y0_t.dtype, method, rtol, atol, options,
                       adjoint_method or method, adjoint_rtol or rtol,
                       atol if adjoint_atol is None else adjoint_atol, adj_options, stats, with_t)
    t_arg = t_tensor if t_tensor is not None else t_vals
    return odeint_p(y0_t, t_arg, *plist, problem=problem)
