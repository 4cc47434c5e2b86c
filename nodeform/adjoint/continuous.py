r"""The continuous adjoint, derived by hand (Chen et al. 2018, Sec. 2, Alg. 1–2, App. B–C).

Setting
-------
The state follows :math:`\dot z(t) = f(z(t), t, \theta)` from :math:`z(t_0)`, and a loss
:math:`L` depends on the states at observation times :math:`t_0 < t_1 < \dots < t_N`
(or all decreasing). Write :math:`g_i = \partial L / \partial z(t_i)` for the direct
cotangents, the ones the rest of the graph hands us.

The adjoint ODE (paper eq. 4)
-----------------------------
Let :math:`a(t) = dL/dz(t)`: how the loss changes when the state at time :math:`t` is
nudged and the rest of the trajectory follows. For a small step :math:`\epsilon`,
:math:`z(t+\epsilon) = z(t) + \epsilon f(z(t), t, \theta) + O(\epsilon^2)`, so by the
chain rule

.. math::  a(t) = a(t+\epsilon)\,\frac{\partial z(t+\epsilon)}{\partial z(t)}
          = a(t+\epsilon) \Big(I + \epsilon \frac{\partial f}{\partial z}\Big) + O(\epsilon^2),

and letting :math:`\epsilon \to 0`,

.. math::  \frac{da}{dt} = -a(t)^\top \frac{\partial f(z(t), t, \theta)}{\partial z}.

It runs *backwards*, from :math:`a(t_N) = g_N`. Only the vector–Jacobian product
:math:`a^\top \partial f/\partial z` appears, about the cost of one evaluation of f.

Parameters and time (paper eq. 5, App. B.2)
-------------------------------------------
Treat :math:`\theta` and :math:`t` as extra states with :math:`\dot\theta = 0`,
:math:`\dot t = 1`. The augmented Jacobian has only its first block row non-zero,
so the same argument gives, with :math:`a_\theta(t_N) = 0`,

.. math::  \frac{da_\theta}{dt} = -a^\top \frac{\partial f}{\partial \theta}, \qquad
           \frac{dL}{d\theta} = a_\theta(t_0) = -\int_{t_N}^{t_0} a^\top \frac{\partial f}{\partial\theta}\,dt,

.. math::  \frac{da_t}{dt} = -a^\top \frac{\partial f}{\partial t}, \qquad
           a_t(t_N) = -\frac{dL}{dt_N} = -g_N^\top f(z(t_N), t_N).

Observation times (Fig. 2, App. C–D)
------------------------------------
Between observations the ODEs above hold. At :math:`t_i` the loss also depends on
:math:`z(t_i)` directly, so the adjoint jumps: :math:`a \leftarrow a + g_i`. The output
time :math:`t_i` itself only moves where the trajectory is read, so
:math:`dL/dt_i = g_i^\top f(z(t_i), t_i)` for :math:`i \ge 1`; and :math:`a_t`, which is
:math:`-a^\top f` along the way, jumps with :math:`a`: :math:`a_t \leftarrow a_t - g_i^\top f`.
At the start, :math:`dL/dt_0 = a_t(t_0)` and :math:`dL/dz(t_0) = a(t_0) + g_0`.

The algorithm (Algorithm 2, with restarts)
------------------------------------------
1. Forward: solve for :math:`z(t_i)` with no graph kept; store only these states.
2. Backward, for :math:`i = N, \dots, 1`: integrate the augmented state
   ``[z | a | a_theta | a_t]`` from :math:`t_i` to :math:`t_{i-1}` with the adjoint
   tolerances. Then restart :math:`z` from the stored :math:`z(t_{i-1})` (running f
   backwards drifts; restarting keeps the error from piling up), add :math:`g_{i-1}`
   to :math:`a`, and subtract :math:`g_{i-1}^\top f` from :math:`a_t`.

Memory holds the stored outputs and one augmented state, whatever the number of
steps: the method's point. The price: the gradient is that of the *exact* flow,
computed to the solver's tolerance, not the exact gradient of the numerical
solution; it agrees with backprop through the solver to O(rtol), and its backward
solve can be unstable where f is (see chapter 3). Use ``adjoint="backprop"`` for
the derivative of the numerical solution itself (exact on a fixed grid; with adaptive
steps, with the step sequence frozen).

Derived and checked three ways in chapters/ch03_adjoint.py.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from nodeform.autodiff.tensor import Tensor, backprop, enable_grad, no_grad, watching
from nodeform.backend import host_float
from nodeform.ode.errors import VectorFieldError

# ============================================================ the augmented state layout
# s = [ z (n) | a (n) | a_theta (p) | a_t (1 if time gradients are wanted) ]


@dataclass(frozen=True)
class AugmentedLayout:
    """Where each block of the flat augmented state lives."""

    n: int        # state size
    p: int        # number of parameters (all blocks flattened)
    with_t: bool  # whether a_t is carried

    @property
    def size(self):
        return 2 * self.n + self.p + (1 if self.with_t else 0)

    def pack(self, xp, z, a, a_theta, a_t, dtype):
        s = xp.empty(self.size, dtype=dtype)
        n, p = self.n, self.p
        s[:n], s[n:2 * n], s[2 * n:2 * n + p] = z.ravel(), a.ravel(), a_theta
        if self.with_t:
            s[-1] = a_t
        return s

    def unpack(self, s):
        """``(z, a, a_theta, a_t)`` views into ``s``."""
        n, p = self.n, self.p
        return s[:n], s[n:2 * n], s[2 * n:2 * n + p], (s[-1] if self.with_t else 0.0)


# ============================================================ the vector field and its VJPs
class TensorField:
    """Evaluate a Tensor vector field ``func(t, y)`` and its VJPs on raw arrays.

    Parameters
    ----------
    func : callable ``func(t, y) -> Tensor``
    params : list of Tensor
        The parameters that receive gradients.
    shape : tuple
        Shape of the state ``y``.
    dtype : dtype
    admit : callable, optional
        ``admit(tensors, t)``: called from :meth:`vjp` with the Tensors requiring grad
        that ``func`` read from outside but that are neither parameters nor in
        ``self.known``; it raises, or adds their ids to ``self.known``. A parameter
        missed there would silently get no gradient.
    """

    def __init__(self, func, params, shape, dtype, admit=None):
        self.func, self.params, self.shape, self.dtype = func, params, shape, dtype
        self.admit = admit
        self.known = {id(p) for p in params}
        self.nfev = 0

    def f(self, t, y):
        """``f(t, y)`` on arrays, no graph."""
        self.nfev += 1
        with no_grad():
            out = self.func(t, Tensor(y.reshape(self.shape)))
        if not isinstance(out, Tensor):
            raise VectorFieldError(
                f"`func(t, y)` returned a {type(out).__name__} at t = {float(t):.6g}; with Tensors "
                "it must return a Tensor shaped like y, built with nodeform operations "
                "(`nf.tanh`, `@`, ...), so that its gradient can be taken.", t=float(t))
        return out.data

    def vjp(self, t, y, a, with_t):
        """``f``, ``a^T df/dy``, ``a^T df/dtheta`` (flat), ``a^T df/dt`` at ``(t, y)``."""
        self.nfev += 1
        xp = _xp(y)
        with enable_grad(), watching() as seen:
            z = Tensor(y.reshape(self.shape)).requires_grad_(True)
            tt = Tensor(xp.asarray(t, dtype=self.dtype)).requires_grad_(True) if with_t else t
            out = self.func(tt, z)
            inputs = [z] + ([tt] if with_t else []) + self.params
            if not isinstance(out, Tensor) or not out.requires_grad:
                gs = [None] * len(inputs)
            else:
                # parameters are leaves here (their cotangents are partial derivatives);
                # retain_graph: func may use Tensors computed from them outside it
                gs = backprop(out, a.reshape(self.shape), inputs, retain_graph=True,
                              stop_at_inputs=True)
        if self.admit is not None:
            known = self.known
            new = [x for k, x in seen.read.items() if k not in known and x is not z and x is not tt]
            if new:
                self.admit(new, float(t))
        gs = [g.data if g is not None else xp.zeros(i.shape, self.dtype) for g, i in zip(gs, inputs)]
        g_theta = (xp.concatenate([g.ravel() for g in gs[1 + with_t:]])
                   if self.params else xp.zeros(0, self.dtype))
        g_t = host_float(gs[1]) if with_t else 0.0
        return out.data, gs[0], g_theta, g_t


def _xp(a):
    from nodeform.backend import get_xp, host_float
    return get_xp(a)


# ============================================================ the backward sweep
def adjoint_sweep(t_vals, ys, cotangents, f_eval, solve_back, layout, xp, dtype, restart=True):
    """Algorithm 2 with observation jumps and restarts.

    Parameters
    ----------
    t_vals : sequence of float, shape (N+1,)
    ys : list of arrays
        The stored forward states ``z(t_i)``, flat, shape (n,) each.
    cotangents : array, shape (N+1, n)
        ``g_i = dL/dz(t_i)``.
    f_eval : callable ``f_eval(t, z) -> array (n,)``
        Used for the time gradients.
    solve_back : callable ``solve_back(s, t_from, t_to) -> s``
        Integrates the augmented dynamics over one interval.
    layout : AugmentedLayout
    restart : bool
        Restart ``z`` from the stored ``z(t_i)`` at each observation (default). False
        carries the backward-reconstructed ``z`` on (for experiments: it drifts).

    Returns
    -------
    g_z0 : array (n,)
    g_theta : array (p,)
    g_t : array (N+1,) or None
    """
    N = len(t_vals) - 1
    g = cotangents
    g_t = np.zeros(N + 1) if layout.with_t else None
    # ---- initial augmented state at t_N: [z(t_N), g_N, 0, -g_N . f(z_N, t_N)]
    a = g[N].copy()
    a_theta = xp.zeros(layout.p, dtype=dtype)
    a_t = 0.0
    if layout.with_t:
        dl_dtN = host_float((g[N] * f_eval(t_vals[N], ys[N])).sum())
        g_t[N] = dl_dtN
        a_t = -dl_dtN
    # ---- backwards, one observation interval at a time
    z = ys[N]
    for i in range(N, 0, -1):
        s = layout.pack(xp, ys[i] if restart else z, a, a_theta, a_t, dtype)
        s = solve_back(s, t_vals[i], t_vals[i - 1])
        z_new, a_new, a_theta_new, a_t = layout.unpack(s)
        z, a, a_theta = z_new.copy(), a_new.copy(), a_theta_new.copy()
        a_t = host_float(a_t)
        # restart z from the stored forward state (done in pack, if restart); jump a and a_t
        a = a + g[i - 1]
        if layout.with_t and i - 1 >= 1:
            dl_dti = host_float((g[i - 1] * f_eval(t_vals[i - 1], ys[i - 1])).sum())
            g_t[i - 1] = dl_dti
            a_t -= dl_dti
    if layout.with_t:
        g_t[0] = a_t
    return a, a_theta, g_t
