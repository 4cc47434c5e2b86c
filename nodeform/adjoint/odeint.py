"""``nodeform.odeint`` on Tensors: the solve as one differentiable operation.

``odeint(func, y0, t, adjoint="continuous" | "backprop")`` returns a Tensor of shape
``(len(t), *y0.shape)`` that gradients flow through to ``y0``, to the parameters of
``func`` and to ``t``. With plain arrays and a plain function it is the integrator
:func:`nodeform.ode.odeint` and returns an array.

* ``"continuous"``: the solve is a single primitive of the autodiff whose VJP is the
  hand-derived adjoint of :mod:`nodeform.adjoint.continuous`. No graph is kept
  inside the solve; memory does not grow with the number of steps.
* ``"backprop"``: the solver's own operations are recorded (:mod:`.backprop`);
  the exact derivative of the numerical solution on a fixed grid (with adaptive steps,
  of the solution with its step sequence frozen); memory grows with the steps.
* A :class:`~nodeform.adjoint.numba_field.NumbaField` (or ``(f, f_vjp)``) as ``func``
  runs forward and adjoint solves compiled (continuous adjoint only). The same pair
  written as plain NumPy functions runs the same way in the reference loops.

Which Tensors get gradients (the continuous adjoint keeps no graph of the forward
solve, so it must know them): without ``params=``, every Tensor requiring grad that
``func`` reads at any evaluation of the forward solve (a Module's weights, a Tensor it
closes over) is found and registered, so ``odeint(lambda t, y: model(y), y0, t)``
differentiates ``model``'s weights. With ``params=`` only those are differentiated,
and reading any other Tensor requiring grad is an error naming it. One that ``func``
reads only during the backward solve (never in the forward one) is an error too.
"""
from __future__ import annotations

import inspect
from dataclasses import dataclass

import numpy as np

from nodeform.adjoint.backprop import odeint_backprop
from nodeform.adjoint.continuous import AugmentedLayout, TensorField, adjoint_sweep
from nodeform.adjoint.numba_field import (NumbaField, augmented_call, augmented_numpy,
                                          vjp_handle)
from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor, _toposort, is_grad_enabled, watching
from nodeform.backend import backend_name, get_xp, host_bool, is_device_array, sync_count, to_numpy
from nodeform.ode import api as ode_api
from nodeform.ode.api import _is_numba_function
from nodeform.ode.errors import NonFiniteError, SolverArgumentError, SolverError

ADJOINTS = ("continuous", "backprop")


@dataclass
class SolveStats:
    """Evaluation counts of a differentiable solve, filled in as it runs.

    Pass one as ``odeint(..., stats=SolveStats())``: ``nfe_forward`` is known after
    the forward solve, ``nfe_backward`` after ``backward()``. Counts add up over
    calls, so one object can follow a whole training iteration (call :meth:`reset`).
    """

    nfe_forward: int = 0
    nfe_backward: int = 0
    steps_forward: int = 0
    steps_backward: int = 0
    #: Host syncs (device values read as Python numbers, :func:`nodeform.backend.host_float`)
    #: of the forward solve and of the backward pass; about one per attempted step.
    syncs_forward: int = 0
    syncs_backward: int = 0

    def reset(self):
        self.nfe_forward = self.nfe_backward = self.steps_forward = self.steps_backward = 0
        self.syncs_forward = self.syncs_backward = 0


def _bad(msg):
    return SolverArgumentError(msg)


def _is_tensor_call(func, y0, t, params):
    return (isinstance(y0, Tensor) or isinstance(t, Tensor) or params is not None
            or hasattr(func, "parameters") or isinstance(func, (NumbaField, tuple)))


def _find_params(func, params):
    """``(parameters requiring grad, explicit)``: ``params`` as a list, or the Module's."""
    explicit = params is not None
    if params is None:
        params = list(func.parameters()) if hasattr(func, "parameters") else []
    elif isinstance(params, Tensor):
        params = [params]
    params = list(params)
    for k, p in enumerate(params):
        if not isinstance(p, Tensor):
            raise _bad(f"`params[{k}]` is a {type(p).__name__}; parameters must be Tensors "
                       "(`nf.Tensor(x, requires_grad=True)`).")
    return [p for p in params if p.requires_grad], explicit


# Module class -> whether its forward can take (t, y)
_TAKES_T = {}


def _check_module_field(func):
    """Refuse a Module whose ``forward`` takes only ``x``: a field is called as ``func(t, y)``."""
    from nodeform.nn.module import Module, Sequential
    if not isinstance(func, Module):
        return
    cls = type(func)
    ok = _TAKES_T.get(cls)
    if ok is None:
        if cls.forward is Sequential.forward:
            ok = False
        else:
            try:
                sig = inspect.signature(func.forward)
            except (TypeError, ValueError):
                ok = True
            else:
                kinds = [q.kind for q in sig.parameters.values()]
                ok = (inspect.Parameter.VAR_POSITIONAL in kinds
                      or sum(k in (inspect.Parameter.POSITIONAL_ONLY,
                                   inspect.Parameter.POSITIONAL_OR_KEYWORD) for k in kinds) >= 2)
        _TAKES_T[cls] = ok
    if not ok:
        raise _bad(
            f"`func` is a {cls.__name__} whose forward takes one input (x), but a vector field is "
            "called as `func(t, y)`: t would be fed to its first layer. Pass "
            "`lambda t, y: model(y)` (the model's parameters are found and differentiated), or "
            "write a Module with `forward(self, t, y)`.")


def _name_of(func, tensor):
    """The variable name under which ``func`` can see ``tensor``, if any (for messages).

    Looks at ``func``'s closure and globals, and inside Modules found there (or ``func``
    itself) by parameter name, ``model.0.weight``.
    """
    from nodeform.nn.module import Module
    code = getattr(func, "__code__", None) or getattr(getattr(func, "forward", None), "__code__", None)
    seen = [("", func)] if isinstance(func, Module) else []
    if code is not None:
        closure = getattr(func, "__closure__", None) or ()
        for name, cell in zip(code.co_freevars, closure):
            try:
                seen.append((name, cell.cell_contents))
            except ValueError:
                pass
        glb = getattr(func, "__globals__", {})
        seen += [(name, glb[name]) for name in code.co_names if name in glb]
    for name, v in seen:
        if v is tensor:
            return name
    for name, v in seen:
        if isinstance(v, Module):
            for pname, p in v.named_parameters():
                if p is tensor:
                    return f"{name}.{pname}" if name else pname
    return None


def _describe(func, tensor):
    name = _name_of(func, tensor)
    return f"`{name}`" if name else f"a Tensor of shape {tuple(tensor.shape)} ({tensor.dtype})"


class _Registrar:
    """Decides what happens to Tensors requiring grad that ``func`` reads from outside.

    Without ``params=`` (``explicit`` False) the ones read during the forward solve
    become parameters of the solve. With ``params=``, a Tensor read from outside is
    fine only when every leaf it is computed from is a parameter (its gradient then
    flows through its graph); anything else is an error naming it.
    """

    def __init__(self, func, explicit):
        self.func, self.explicit = func, explicit
        self.field = None

    def _check_covered(self, x, known, when):
        missing = ([x] if x.is_leaf else
                   [leaf for leaf in _toposort(x) if leaf.is_leaf and leaf.requires_grad
                    and id(leaf) not in known])
        if missing:
            raise _bad(
                f"`func` uses {_describe(self.func, missing[0])} that requires grad but is not "
                f"among its parameters ({when}), so the continuous adjoint would silently give "
                "it no gradient. Register it: list it in `params=[...]`, or leave `params` out "
                "to have every Tensor the field reads found and differentiated, or use "
                "adjoint='backprop'.")

    def forward(self, found, known):
        """The Tensors to add as parameters after the forward solve read ``found``."""
        if not self.explicit:
            return list(found)
        for x in found:
            self._check_covered(x, known, "read during the forward solve")
            known.add(id(x))
        return []

    def backward(self, new, t):
        """``TensorField.admit``: Tensors first read during the backward solve, at ``t``."""
        known = self.field.known
        for x in new:
            if not self.explicit:
                raise _bad(
                    f"`func` read {_describe(self.func, x)}, a Tensor that requires grad, at "
                    f"t = {t:.6g} during the backward (adjoint) solve but never during the "
                    "forward solve, so it was not found as a parameter and would get no "
                    "gradient. Pass `params=[...]` listing every Tensor to differentiate "
                    "(this one included), or use adjoint='backprop'.")
            self._check_covered(x, known, f"read at t = {t:.6g} during the backward solve")
            known.add(id(x))


def _backward_error(exc, t_from, t_to):
    """``exc`` from the backward solve of one interval, told as what it is; same class."""
    msg = (f"the backward (adjoint) solve of `odeint`, integrating [z, a, a_theta] from "
           f"t = {t_from:.6g} back to t = {t_to:.6g}, failed at t = "
           f"{exc.t if exc.t is not None else t_from:.6g}: ")
    if isinstance(exc, NonFiniteError):
        msg += ("the adjoint state became NaN/inf. Likely causes: a NaN/inf parameter or "
                "loss gradient, f or its VJP not finite along the backward trajectory, or "
                "an unstable backward solve (try tighter `adjoint_rtol`/`adjoint_atol`, or "
                "adjoint='backprop'). The solver said: ")
    try:
        new = type(exc)(msg + str(exc), t=exc.t, step=exc.step)
    except TypeError:
        return exc
    new.partial, new.stats = exc.partial, exc.stats
    return new


#: Options of the backward solve that the compiled (NumbaField) adjoint does not take.
_CONTROL = {"norm", "safety", "interpolant"}


def seminorm(m):
    """The RMS norm of the first ``m`` entries of a flat augmented error (``[z, a]``)."""
    from nodeform.ode.controller import rms_norm

    def norm(x):
        return rms_norm(x[:m])
    norm.__name__ = f"seminorm_{m}"
    return norm


def parts_norm(sizes):
    """The largest RMS norm of consecutive parts of a flat augmented error.

    ``sizes`` are the lengths of the parts, in order (the backward solve's ``[z, a,
    a_theta of each parameter, a_t]``). torchdiffeq's default adjoint norm is of this
    kind: no part's error may hide behind a large, well-resolved one, so the backward
    solve is stricter than one RMS over everything (``norm="rms"``) when the parts'
    errors differ in size.
    """
    from nodeform.ode.controller import rms_norm
    bounds = np.cumsum([0] + [int(k) for k in sizes])
    spans = [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]
    if not spans:
        raise ValueError(f"`sizes` must hold at least one positive part length, got {sizes!r}.")

    def norm(x):
        return max(rms_norm(x[a:b]) for a, b in spans)
    norm.__name__ = f"parts_norm_{len(spans)}"
    return norm


class _Problem:
    """One differentiable solve: settings, the stored forward states, the backward pass."""

    restart = True   # set per solve by odeint(adjoint_restart=...)

    def __init__(self, func, params, t_vals, shape, dtype, method, rtol, atol, options,
                 adj_method, adj_rtol, adj_atol, adj_options, stats, t_requires_grad,
                 registrar=None):
        self.func, self.params, self.t_vals = func, params, t_vals
        self.registrar = registrar
        self.shape, self.dtype = shape, dtype
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options
        self.adj = (adj_method, adj_rtol, adj_atol, adj_options)
        self.stats, self.with_t = stats, t_requires_grad
        self.numba = isinstance(func, NumbaField)
        self._cache = None
        self.ys = None

    # ---------------------------------------------------------------- forward
    def forward(self, y0):
        """Solve; with a registrar, also find the parameters ``func`` reads (``self.params``)."""
        if self.numba:
            nf_ = self.func
            theta = self._theta()
            sol = ode_api.solve(nf_.f, y0.ravel(), self.t_vals, method=self.method, rtol=self.rtol,
                                atol=self.atol, args=(theta,) + tuple(nf_.args), **self.options)
        elif self.registrar is None:
            self.field = TensorField(self.func, self.params, self.shape, self.dtype)
            sol = ode_api.solve(self.field.f, y0, self.t_vals, method=self.method, rtol=self.rtol,
                                atol=self.atol, **self.options)
        else:
            reg = self.registrar
            field = self.field = TensorField(self.func, self.params, self.shape, self.dtype,
                                             admit=reg.backward)
            reg.field = field
            with watching() as seen:     # every evaluation shows what it reads
                sol = ode_api.solve(field.f, y0, self.t_vals, method=self.method,
                                    rtol=self.rtol, atol=self.atol, **self.options)
            found = seen.outside(field.known)
            if found:
                extra = reg.forward(found, field.known)
                self.params = field.params = self.params + extra
                field.known.update(id(x) for x in extra)
        if self.stats is not None:
            self.stats.nfe_forward += sol.stats["nfev"]
            self.stats.steps_forward += sol.stats["n_accepted"]
            self.stats.syncs_forward += sol.host_syncs
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
        syncs0 = sync_count()
        n = int(np.prod(self.shape))
        G = g.data.reshape(len(self.t_vals), n)
        if not host_bool(xp.isfinite(G).all()):
            i = int(np.argwhere(~np.isfinite(to_numpy(G)).any(axis=1))[0][0])
            raise NonFiniteError(
                f"the gradient arriving at the output of `odeint` (dL/dy at t = "
                f"{self.t_vals[i]:.6g}, output {i}) is NaN/inf, so the backward solve cannot "
                "start: the loss or what follows the solve is not finite. Check the loss "
                "(a log of 0, a division by 0) before looking at the solver.", t=self.t_vals[i])
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

            def solve_back(s, t_from, t_to):
                if compiled:
                    aug_f, aug_args = augmented_call(nf_.f_vjp, vjp, theta, n, p, self.with_t,
                                                     extra)
                else:
                    aug_f, aug_args = augmented_numpy, (vjp, theta, n, p, self.with_t, extra)
                try:
                    sol = ode_api.solve(aug_f, s, [t_from, t_to], method=adj_method,
                                        rtol=adj_rtol, atol=adj_atol, args=aug_args,
                                        **adj_options)
                except SolverError as exc:
                    raise _backward_error(exc, t_from, t_to) from exc
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
                try:
                    sol = ode_api.solve(aug, s, [t_from, t_to], method=adj_method, rtol=adj_rtol,
                                        atol=adj_atol, **adj_options)
                except SolverError as exc:
                    raise _backward_error(exc, t_from, t_to) from exc
                steps[0] += sol.stats["n_accepted"]
                return sol.ys[-1]
        if adj_options.get("norm") == "seminorm":
            adj_options = dict(adj_options, norm=seminorm(2 * n))
        elif adj_options.get("norm") == "parts":
            sizes = [n, n] + [int(q.size) for q in self.params] + ([1] if self.with_t else [])
            adj_options = dict(adj_options, norm=parts_norm(sizes))
        g_z0, g_theta, g_t = adjoint_sweep(self.t_vals, ys, G, f_eval, solve_back, layout, xp,
                                           self.dtype, restart=self.restart)
        if not self.numba:
            nfev[0] = field.nfev - count0
        if self.stats is not None:
            self.stats.nfe_backward += nfev[0]
            self.stats.steps_backward += steps[0]
            self.stats.syncs_backward += sync_count() - syncs0
        out = {"y0": g_z0.reshape(self.shape),
               "t": None if g_t is None else xp.asarray(g_t, dtype=self.dtype)}
        off = 0
        for k, q in enumerate(self.params):
            out[k] = g_theta[off:off + q.size].reshape(q.shape)
            off += q.size
        self._cache = (g, out)
        return out


def _odeint_forward(y0, t, *params, problem):
    return problem.ys if problem.ys is not None else problem.forward(y0)


def _odeint_vjp(i, g, ans, y0, t, *params, problem):
    grads = problem.grads(g)
    key = "y0" if i == 0 else ("t" if i == 1 else i - 2)
    return Tensor(grads[key])


odeint_p = defprim("odeint", _odeint_forward, vjp_i=_odeint_vjp)


def odeint(func, y0, t, method="dopri5", rtol=ode_api.DEFAULT_RTOL, atol=ode_api.DEFAULT_ATOL,
           args=(), adjoint="continuous", params=None, adjoint_method=None, adjoint_rtol=None,
           adjoint_atol=None, adjoint_options=None, stats=None, adjoint_restart=True,
           **options):
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
        The parameters to differentiate. Default: found by themselves, i.e. every Tensor
        requiring grad that ``func`` reads during the forward solve (a Module's
        parameters, Tensors it closes over); ``odeint(lambda t, y: model(y), y0, t)``
        differentiates ``model``. Given, exactly these: reading another Tensor that
        requires grad is then an error naming it. For a NumbaField, the flat ``theta``.
    adjoint_method, adjoint_rtol, adjoint_atol, adjoint_options
        Settings of the backward solve; default to the forward ones. In
        ``adjoint_options``, ``norm="seminorm"`` measures the backward error on ``[z, a]``
        only, leaving out ``a_theta`` and ``a_t``, which feed nothing back (Kidger et al.
        2021: fewer backward steps, same gradient accuracy in practice);
        ``norm="parts"`` takes the largest RMS of the parts ``z``, ``a``, each
        parameter's ``a_theta`` and ``a_t`` (torchdiffeq's default: stricter, more
        backward steps). A NumbaField whose VJP is compiled takes neither; one written
        in NumPy (run by the reference loop) takes both.
    adjoint_restart : bool
        Restart the backward solve's ``z`` from the stored forward state at every output
        time (default). False lets the reconstructed ``z`` run on (for experiments:
        chapter 3, exercise ex3_2).
    stats : SolveStats, optional
        Receives the forward and backward evaluation counts.

    Returns
    -------
    Tensor, shape (n_out, *y0.shape) on the Tensor path; ndarray otherwise. With a plain
    array ``y0``, a ``func`` that returns Tensors switches to the Tensor path (so its
    parameters get gradients) and a Tensor comes back.

    Raises
    ------
    SolverArgumentError
        Bad arguments; a Module whose ``forward`` takes only ``x`` (a field is
        ``func(t, y)``); a Tensor requiring grad read by ``func`` that cannot get a
        gradient (see ``params``). Errors raised by ``func`` itself come back as raised.
    SolverError
        The forward solve failed, or the backward one (the message says which).
    """
    if not _is_tensor_call(func, y0, t, params):
        if _is_numba_function(func):
            return ode_api.odeint(func, y0, t, method=method, rtol=rtol, atol=atol, args=args,
                                  **options)
        try:
            return ode_api.odeint(_no_tensors(func), y0, t, method=method, rtol=rtol, atol=atol,
                                  args=args, **options)
        except _ReturnedTensor:   # a Tensor field on an array y0: solve it differentiably
            field = func if not args else (lambda tt, yy: func(tt, yy, *args))
            return odeint(field, Tensor(y0), t, method=method, rtol=rtol, atol=atol,
                          adjoint=adjoint, adjoint_method=adjoint_method,
                          adjoint_rtol=adjoint_rtol, adjoint_atol=adjoint_atol,
                          adjoint_options=adjoint_options, stats=stats, **options)
    if adjoint not in ADJOINTS:
        raise _bad(f"`adjoint` must be one of {ADJOINTS}, got {adjoint!r}.")
    if args:
        raise _bad("`args` is for plain array solves; on the Tensor path close over extra "
                   "arguments in `func` (or use a NumbaField's own `args`).")
    if isinstance(func, tuple):
        func = NumbaField(*func) if len(func) == 2 else NumbaField(func[0], func[1], tuple(func[2]))
    _check_module_field(func)
    t_tensor = t if isinstance(t, Tensor) else None
    t_vals = np.asarray(t.numpy() if t_tensor is not None else t, dtype=np.float64)
    if t_vals.ndim != 1 or t_vals.size < 2:
        raise _bad(f"`t` must be a 1-d sequence of at least two times, got shape {t_vals.shape}.")
    t_list = t_vals.tolist()
    y0_t = y0 if isinstance(y0, Tensor) else Tensor(y0)
    if y0_t.dtype.kind != "f":
        raise _bad(f"`y0` must be floating point, got dtype {y0_t.dtype}.")
    plist, explicit = _find_params(func, params)
    numba = isinstance(func, NumbaField)
    if numba:
        if adjoint != "continuous":
            raise _bad("a NumbaField runs the continuous adjoint only; for adjoint='backprop' "
                       "use `field.reference(theta)` as `func`.")
        if len(plist) != 1 or plist[0].ndim != 1:
            raise _bad("a NumbaField needs `params` = one flat theta Tensor of shape (p,) with "
                       "requires_grad=True.")
        func.check_theta(plist[0])
        if is_device_array(y0_t.data):
            raise _bad("a NumbaField runs on the CPU only (compiled with Numba), but `y0` is a "
                       f"{backend_name(get_xp(y0_t.data))} device array; use `field.reference(theta)` "
                       "as `func` to run on the GPU, or pass float64 NumPy arrays.")
        if y0_t.dtype != np.float64:
            raise _bad("the Numba path runs on float64 NumPy arrays only; pass y0 as such.")
    if adjoint == "backprop":
        if adjoint_restart is not True:
            raise _bad("`adjoint_restart` applies to the continuous adjoint; adjoint='backprop' "
                       "has no backward solve to restart (leave it out).")
        return odeint_backprop(func, y0_t, t_tensor, t_list, method, rtol, atol, options, stats)
    with_t = t_tensor is not None and t_tensor.requires_grad
    # while gradients are recorded, every forward evaluation reports what func reads
    registrar = _Registrar(func, explicit) if not numba and is_grad_enabled() else None
    adj_options = dict(options if adjoint_options is None else adjoint_options)
    adj_options.pop("trace", None)
    if not isinstance(adjoint_restart, bool):
        raise _bad(f"`adjoint_restart` must be True or False, got {adjoint_restart!r}.")
    compiled_only = sorted(_CONTROL & set(adj_options))
    if numba and _is_numba_function(func.f_vjp) and (not adjoint_restart or compiled_only):
        what = ((["`adjoint_restart=False`"] if not adjoint_restart else [])
                + [f"`{k}` in the backward options" for k in compiled_only])
        raise _bad(f"a NumbaField's backward solve runs compiled, with restarts and the default "
                   f"error norm, safety and interpolant; {' and '.join(what)} need the Tensor "
                   "path: pass `field.reference(theta)` as `func` (with `params=theta`).")
    problem = _Problem(func, plist, t_list, y0_t.shape, y0_t.dtype, method, rtol, atol, options,
                       adjoint_method or method, adjoint_rtol or rtol,
                       atol if adjoint_atol is None else adjoint_atol, adj_options, stats, with_t,
                       registrar)
    problem.forward(y0_t.data)   # outside the primitive: func's errors come back unchanged
    problem.restart = adjoint_restart
    t_arg = t_tensor if t_tensor is not None else t_vals
    return odeint_p(y0_t, t_arg, *problem.params, problem=problem)


class _ReturnedTensor(Exception):
    """Internal: an array solve's field returned a Tensor (see :func:`odeint`)."""


def _no_tensors(func):
    def f(t, y, *args):
        out = func(t, y, *args)
        if isinstance(out, Tensor):
            raise _ReturnedTensor
        return out
    return f


def _is_numba_function(f):
    return type(f).__module__.startswith("numba") and hasattr(f, "py_func")
