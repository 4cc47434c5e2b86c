r"""Continuous normalizing flows (paper Sec. 4, App. A) and the planar NF baseline.

The instantaneous change of variables (Theorem 1)
-------------------------------------------------
If :math:`dz/dt = f(z(t), t)` with ``f`` Lipschitz in ``z``, the log-density of a
particle carried by the flow changes as

.. math::  \frac{\partial \log p(z(t))}{\partial t} = -\operatorname{tr}\frac{\partial f}{\partial z(t)}.

So one solve of the augmented ODE ``[z, l]`` with ``dl/dt = -tr(df/dz)`` moves points
*and* their log-density. :class:`CNF` is that augmented field, ``forward(t, s)`` on
``s = [z | l]`` of shape (k, D+1), solved by :func:`nodeform.odeint` with either
gradient method. Time runs from ``t0`` (the base density) to ``t1`` (the data):

* :meth:`CNF.sample`: ``z ~ p0`` at ``t0``, ``l = log p0(z)``, solve to ``t1``; the result
  is a sample ``x`` and ``log q(x) = l(t1)``.
* :meth:`CNF.log_prob`: ``x`` at ``t1`` with ``l = 0``, solve back to ``t0``; then
  ``log q(x) = log p0(z(t0)) - l(t0)`` (``l(t0) = \int_{t0}^{t1} tr\,dt``).

The trace is either closed-form (a field that offers ``with_trace(t, z) -> (dz, tr)``,
like :class:`PlanarField`) or exact by autodiff: one vector–Jacobian product per
dimension, recorded with ``create_graph`` so that the trace itself can be
differentiated in training (gradients of gradients).

The planar CNF (paper eq. 9-10, "time dependence and gating")
-------------------------------------------------------------
:math:`dz/dt = \frac1M \sum_m \tilde u_m \tanh(w_m^\top z + b_m)`, with
:math:`\tilde u_m = u_m \odot \sigma(g_m)`, and ``(W, U, G, B)`` produced from ``t`` by a
hypernetwork ``1 -> H -> H -> 3MD + M`` (tanh), as in the paper-era code (paper.md §3).
The trace is a sum over units, :math:`\operatorname{tr} = \frac1M\sum_m (1-h_m^2)\, w_m^\top\tilde u_m`:
linear cost in ``M``. (The mean over units instead of the paper's sum follows that code;
it only rescales ``U``.)

The planar NF baseline (paper eq. 6-7, Rezende & Mohamed 2015)
--------------------------------------------------------------
:class:`PlanarNF`: ``K`` layers ``z <- z + \hat u \tanh(w^\top z + b)`` with
:math:`\log|\det| = \log(1 + (1-h^2)\, w^\top\hat u)`; ``\hat u`` is ``u`` moved along ``w`` so
that :math:`w^\top \hat u > -1`, which keeps every layer invertible.

Derived and checked in chapters/ch06_cnf.py. The fused NumPy and Numba paths of the
planar CNF are :mod:`nodeform.models._cnf_kernels` (``PlanarCNF(..., engine="numba")``).
"""
from __future__ import annotations

import math

import numpy as np

from nodeform.backend import get_xp, is_device_array
from nodeform.adjoint.odeint import odeint
from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor, enable_grad, gradients, is_grad_enabled, no_grad
from nodeform.nn.layers import Linear
from nodeform.nn.module import Module, Parameter

TRACES = ("closed", "exact")
ENGINES = ("autodiff", "numpy", "numba")
#: The anchor's settings (PERF-NOTES, paper.md §3.3): flow time, tolerances, base variance.
T0, T1 = 0.0, 10.0
RTOL = ATOL = 1e-5
BASE_VAR = 0.1
#: Bisection steps of the planar-layer inverse: the bracket starts at width 2 |w^T u|
#: (a few units at most) and halves each step; 80 halvings reach below float64 spacing.
INVERSE_ITERS = 80
#: ``w.u^ = -1 + MARGIN + softplus(w.u)``: Rezende & Mohamed's ``m`` lifted a little, because
#: softplus underflows to 0 for ``w.u < -37`` and ``w.u^ = -1`` makes a layer singular.
MARGIN = 1e-4


def _t(x):
    """A Tensor of ``x``: device arrays stay where they are; host values become float64."""
    if isinstance(x, Tensor):
        return x
    return Tensor(x) if is_device_array(x) else Tensor(np.asarray(x, dtype=np.float64))


def _like(ref, x):
    """``x`` (noise) as a Tensor on the device and in the dtype of ``ref``.

    ``ref`` is a Tensor, or a Module whose first parameter is used (float64 on the host
    when it has none, e.g. while a test has swapped its parameters for plain Tensors).
    """
    if isinstance(x, Tensor):
        return x
    if not isinstance(ref, Tensor):
        ref = next(iter(ref.parameters()), None)
        if ref is None:
            return Tensor(np.asarray(x, dtype=np.float64))
    return Tensor(get_xp(ref.data).asarray(x, dtype=ref.dtype))


def gaussian_log_prob(z, var=1.0):
    """``log N(z; 0, var I)`` row by row: Tensor (k, D) -> (k,)."""
    z = _t(z)
    d = z.shape[1]
    return -0.5 * (z * z).sum(axis=1) / var - 0.5 * d * math.log(2 * math.pi * var)


# ============================================================ the planar field
class HyperNet(Module):
    """``t -> (W, U, G, B)`` of the planar field: ``1 -> hidden -> hidden -> 3 M D + M``, tanh."""

    def __init__(self, dim, width, hidden=32, rng=None):
        super().__init__()
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        self.dim, self.width = int(dim), int(width)
        self.fc1 = Linear(1, hidden, rng=rng)
        self.fc2 = Linear(hidden, hidden, rng=rng)
        self.fc3 = Linear(hidden, 3 * self.width * self.dim + self.width, rng=rng)

    def forward(self, t):
        if isinstance(t, Tensor):
            tt = t.reshape(1, 1)
        else:                      # filled on the device: no host-to-device copy per evaluation
            w = self.fc1.weight.data
            tt = Tensor(get_xp(w).full((1, 1), float(t), dtype=w.dtype))
        p = self.fc3(F.tanh(self.fc2(F.tanh(self.fc1(tt))))).reshape(-1)
        M, D = self.width, self.dim
        W = p[:M * D].reshape(M, D)
        U = p[M * D:2 * M * D].reshape(M, D)
        G = p[2 * M * D:3 * M * D].reshape(M, D)
        B = p[3 * M * D:]
        return W, U, G, B


class PlanarField(Module):
    """The gated planar vector field of width ``M`` with a closed-form trace.

    Parameters
    ----------
    dim : int
        ``D``, the data dimension.
    width : int
        ``M``, the number of planar units.
    hidden : int
        Width of the hypernetwork's two hidden layers.
    rng : int or Generator, optional

    ``field(t, z)`` gives ``dz/dt`` (k, D); ``field.with_trace(t, z)`` gives
    ``(dz/dt, tr(df/dz))``, shapes (k, D) and (k,).
    """

    def __init__(self, dim=2, width=64, hidden=32, rng=None):
        super().__init__()
        if int(dim) < 1 or int(width) < 1 or int(hidden) < 1:
            raise ValueError(f"`dim`, `width` and `hidden` must be positive, got {dim}, {width}, "
                             f"{hidden}.")
        self.dim, self.width, self.hidden = int(dim), int(width), int(hidden)
        self.hyper = HyperNet(dim, width, hidden, rng)

    def units(self, t):
        """``(W, U~ = U * sigmoid(G), B)`` at time ``t``: shapes (M, D), (M, D), (M,)."""
        W, U, G, B = self.hyper(t)
        return W, U * F.sigmoid(G), B

    def with_trace(self, t, z):
        W, Ut, B = self.units(t)
        h = F.tanh(z @ W.T + B)                                    # (k, M)
        dz = (h @ Ut) * (1.0 / self.width)                         # (k, D)
        c = (W * Ut).sum(axis=1).reshape(-1, 1)                    # (M, 1): w_m . u~_m
        tr = ((1.0 - h * h) @ c).reshape(-1) * (1.0 / self.width)  # (k,)
        return dz, tr

    def forward(self, t, z):
        W, Ut, B = self.units(t)
        return (F.tanh(z @ W.T + B) @ Ut) * (1.0 / self.width)


def exact_trace(field, t, z):
    """``(f(t, z), tr(df/dz))`` by autodiff: one VJP per dimension of ``z`` (k, D).

    Row ``i`` of the batch only depends on row ``i`` of ``z``, so the VJP seeded with
    the unit vector ``e_d`` in every row gives ``df_d/dz`` row by row, whose ``d``-th
    entry is the diagonal term. When gradients are being recorded the VJPs are recorded
    too (``create_graph``), so the trace can be differentiated in its turn.
    """
    record = is_grad_enabled()
    with enable_grad():
        zz = z if z.requires_grad else Tensor(z.data).requires_grad_(True)
        f = field(t, zz)
        d = zz.shape[1]
        tr = None
        for k in range(d):
            seed = get_xp(f.data).zeros(f.shape, dtype=f.dtype)
            seed[:, k] = 1.0
            g = gradients(f, zz, seed=seed, create_graph=record, retain_graph=True)
            term = g[:, k]
            tr = term if tr is None else tr + term
    if not record:
        return f.detach(), tr.detach()
    return f, tr


# ============================================================ the augmented CNF
class CNF(Module):
    """A continuous normalizing flow: the augmented field ``[f, -tr(df/dz)]`` and its solves.

    Parameters
    ----------
    field : Module
        ``field(t, z) -> dz/dt`` on Tensors (k, D). With ``trace="closed"`` it must
        also offer ``with_trace(t, z) -> (dz/dt, tr)``.
    trace : {"closed", "exact"}
        Closed-form trace from the field, or the exact trace by autodiff (D VJPs).
    t0, t1 : float
        Base time and data time.
    base_var : float
        Variance of the Gaussian base density ``p0 = N(0, base_var I)``.
    """

    def __init__(self, field, trace="closed", t0=T0, t1=T1, base_var=BASE_VAR):
        super().__init__()
        if trace not in TRACES:
            raise ValueError(f"`trace` must be one of {TRACES}, got {trace!r}.")
        if trace == "closed" and not hasattr(field, "with_trace"):
            raise ValueError(f"`trace='closed'` needs a field with a `with_trace(t, z)` method; "
                             f"{type(field).__name__} has none: use trace='exact'.")
        if not base_var > 0:
            raise ValueError(f"`base_var` must be positive, got {base_var}.")
        self.field, self.trace = field, trace
        self.t0, self.t1, self.base_var = float(t0), float(t1), float(base_var)

    def field_and_trace(self, t, z):
        """``(dz/dt, tr(df/dz))`` at ``(t, z)``, shapes (k, D) and (k,)."""
        if self.trace == "closed":
            return self.field.with_trace(t, z)
        return exact_trace(self.field, t, z)

    def forward(self, t, s):
        """The augmented dynamics: ``s = [z | l]`` (k, D+1) -> ``[f | -tr]``."""
        d = s.shape[1] - 1
        dz, tr = self.field_and_trace(t, s[:, :d])
        return F.concatenate([dz, (-tr).reshape(-1, 1)], axis=1)

    def base_log_prob(self, z):
        return gaussian_log_prob(z, self.base_var)

    # ---------------------------------------------------------------- solves
    def integrate(self, z, l, ts, adjoint="continuous", rtol=RTOL, atol=ATOL, stats=None,
                  **options):
        """Solve the augmented ODE from ``(z, l)`` at ``ts[0]`` through ``ts``.

        Parameters
        ----------
        z : Tensor or array, shape (k, D)
        l : Tensor or array, shape (k,)
            The log-density channel at ``ts[0]``.
        ts : sequence of float, shape (n_out,)

        Returns
        -------
        zs : Tensor, shape (n_out, k, D)
        ls : Tensor, shape (n_out, k)
        """
        z, l = _t(z), _t(l)
        if z.ndim != 2 or l.shape != (z.shape[0],):
            raise ValueError(f"`z` must have shape (k, D) and `l` shape (k,), got "
                             f"{tuple(z.shape)} and {tuple(l.shape)}.")
        s0 = F.concatenate([z, l.reshape(-1, 1)], axis=1)
        ss = self._solve(s0, ts, adjoint, rtol, atol, stats, options)
        d = z.shape[1]
        return ss[:, :, :d], ss[:, :, d]

    def _solve(self, s0, ts, adjoint, rtol, atol, stats, options):
        return odeint(self, s0, list(ts), rtol=rtol, atol=atol, adjoint=adjoint, stats=stats,
                      **options)

    def log_prob(self, x, **kw):
        """``log q(x)`` (k,): solve ``[x, 0]`` from ``t1`` back to ``t0``."""
        x = _t(x)
        zs, ls = self.integrate(x, get_xp(x.data).zeros(x.shape[0], dtype=x.dtype), [self.t1, self.t0],
                                **kw)
        return self.base_log_prob(zs[-1]) - ls[-1]

    def sample(self, n, rng=None, ts=None, **kw):
        """``n`` samples and their ``log q``: solve from ``z ~ p0`` at ``t0`` to ``t1``.

        ``ts`` (starting at ``t0``) returns every intermediate time: shapes
        (n_out, n, D) and (n_out, n); otherwise (n, D) and (n,).
        """
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        d = self.field.dim
        z0 = _like(self, rng.standard_normal((int(n), d)) * math.sqrt(self.base_var))   # one copy
        ts_ = [self.t0, self.t1] if ts is None else list(ts)
        zs, ls = self.integrate(z0, self.base_log_prob(z0), ts_, **kw)
        return (zs[-1], ls[-1]) if ts is None else (zs, ls)


class PlanarCNF(CNF):
    """The paper's planar CNF: :class:`PlanarField` inside :class:`CNF`.

    Parameters
    ----------
    dim, width, hidden, rng
        As :class:`PlanarField`.
    trace : {"closed", "exact"}
    engine : {"autodiff", "numpy", "numba"}
        ``"autodiff"``: the field built from Tensor operations (either trace, either
        gradient method; the reference). ``"numpy"`` and ``"numba"``: the field, the
        closed-form trace and their VJPs written by hand in one fused function
        (:mod:`nodeform.models._cnf_kernels`), run by the reference loops or compiled
        (forward and adjoint solves); continuous adjoint, float64 NumPy only.
    t0, t1, base_var
        As :class:`CNF`.
    """

    def __init__(self, dim=2, width=64, hidden=32, trace="closed", engine="autodiff", t0=T0, t1=T1,
                 base_var=BASE_VAR, rng=None):
        super().__init__(PlanarField(dim, width, hidden, rng), trace, t0, t1, base_var)
        if engine not in ENGINES:
            raise ValueError(f"`engine` must be one of {ENGINES}, got {engine!r}.")
        if engine != "autodiff" and trace != "closed":
            raise ValueError(f"`engine='{engine}'` computes the closed-form trace; use "
                             "trace='closed' (or engine='autodiff' for the exact trace).")
        self.engine = engine

    def theta(self):
        """The hypernetwork's parameters as one flat Tensor (P,), differentiable."""
        return F.concatenate([p.reshape(-1) for p in self.parameters()])

    def fused_field(self, engine=None):
        """The hand-written ``(f, f_vjp)`` pair of this field as a :class:`~nodeform.NumbaField`."""
        from nodeform.models._cnf_kernels import planar_cnf_field
        f = self.field
        return planar_cnf_field(f.dim, f.width, f.hidden, engine or self.engine)

    def _solve(self, s0, ts, adjoint, rtol, atol, stats, options):
        if self.engine == "autodiff":
            return super()._solve(s0, ts, adjoint, rtol, atol, stats, options)
        if adjoint != "continuous":
            raise ValueError(f"`engine='{self.engine}'` runs the continuous adjoint only; use "
                             "adjoint='continuous' or engine='autodiff'.")
        s0 = _t(s0)
        if is_device_array(s0.data):
            raise ValueError(f"`engine='{self.engine}'` runs on the CPU only (hand-written NumPy/Numba "
                             "kernels), but the state is on a GPU; use engine='autodiff' there.")
        if s0.dtype != np.float64:
            raise ValueError(f"`engine='{self.engine}'` runs in float64; the state is {s0.dtype}.")
        theta = self.theta()
        if not theta.requires_grad:           # under no_grad: nothing is recorded anyway
            theta = Tensor(theta.data, requires_grad=True)
        return odeint(self.fused_field(), s0, list(ts), rtol=rtol, atol=atol, stats=stats,
                      params=[theta], **options)


# ============================================================ the planar NF baseline
class PlanarNF(Module):
    """``K`` planar layers ``z <- z + u^ tanh(w.z + b)`` with closed-form log-determinants.

    Parameters
    ----------
    dim : int
    n_layers : int
        ``K``.
    direction : {"sample", "density"}
        Which way the layers run. ``"sample"``: base -> data (cheap samples and their
        log q, for the reverse KL). ``"density"``: data -> base (cheap ``log q(x)``, for
        maximum likelihood). The other way inverts each layer numerically (no gradient).
    base_var : float
    init_scale : float
        Standard deviation of the initial ``w`` and of ``u^`` (each layer starts
        volume-preserving: ``w.u^ = 0``).
    rng : int or Generator, optional
    """

    def __init__(self, dim=2, n_layers=8, direction="sample", base_var=1.0, init_scale=0.1,
                 rng=None):
        super().__init__()
        if direction not in ("sample", "density"):
            raise ValueError(f"`direction` must be 'sample' or 'density', got {direction!r}.")
        if int(n_layers) < 1:
            raise ValueError(f"`n_layers` must be a positive integer, got {n_layers}.")
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        self.dim, self.n_layers, self.direction = int(dim), int(n_layers), direction
        self.base_var = float(base_var)
        w = rng.standard_normal((self.n_layers, self.dim)) * init_scale
        u = rng.standard_normal((self.n_layers, self.dim)) * init_scale
        # Start every layer volume-preserving (w.u^ = 0, u^ = u's part orthogonal to w): put
        # u's component along w where m(w.u) = 0. With u drawn near 0 instead, m(0) = -0.31
        # and each fresh layer contracts by 0.69 along w: 64 of them squash the data to a
        # point (a starting NLL above 20 nats on the circles, which 1,000 steps do not undo).
        wu0 = math.log(math.expm1(1.0 - MARGIN))                           # m(wu0) = 0
        u += ((wu0 - (w * u).sum(axis=1)) / (w * w).sum(axis=1))[:, None] * w
        self.w, self.u = Parameter(w), Parameter(u)
        self.b = Parameter(np.zeros(self.n_layers))

    def u_hats(self):
        """Every layer's ``u`` made invertible, ``u + (m(w.u) - w.u) w / |w|^2``, (K, D).

        ``m(x) = -1 + MARGIN + softplus(x)`` so that ``w.u^ = m(w.u) > -1``. All layers
        at once: a handful of Tensor operations instead of a handful per layer.
        """
        w, u = self.w, self.u
        wu = (w * u).sum(axis=1, keepdims=True)                             # (K, 1)
        return u + (F.softplus(wu) - 1.0 + MARGIN - wu) * w / ((w * w).sum(axis=1, keepdims=True) + 1e-12)

    def u_hat(self, k):
        """Layer ``k``'s invertible ``u^`` (D,)."""
        return self.u_hats()[k]

    def layers(self, z, upto=None):
        """Run the first ``upto`` layers on ``z`` (k, D): returns ``(z_K, sum log|det|)`` (k, D), (k,)."""
        z = _t(z)
        uh_all = self.u_hats()
        s_all = (self.w * uh_all).sum(axis=1)                               # (K,): w . u^
        logdet = 0.0
        for k in range(self.n_layers if upto is None else upto):
            h = F.tanh(z @ self.w[k] + self.b[k])                           # (k,)
            z = z + h.reshape(-1, 1) * uh_all[k]
            logdet = logdet + F.log(1.0 + (1.0 - h * h) * s_all[k])
        return z, logdet

    def inverse_layers(self, y, upto=None):
        """Invert the last ``upto`` layers (all by default), last first; arrays, no gradient.

        Each layer is inverted along ``w``: ``a = w.z`` solves the monotone scalar equation
        ``a + (w.u^) tanh(a + b) = w.y`` (bisection on ``[w.y - |w.u^|, w.y + |w.u^|]``),
        then ``z = y - u^ tanh(a + b)``. Returns ``(z, sum log|det|)`` of those layers at the
        recovered inputs.
        """
        with no_grad():
            xp = get_xp(_t(y).data)             # on a GPU the whole bisection stays there, no syncs
            z = xp.array(_t(y).data, dtype=np.float64)
            logdet = xp.zeros(z.shape[0])
            n = self.n_layers if upto is None else upto
            uh_all = self.u_hats().data.astype(np.float64)
            for k in range(self.n_layers - 1, self.n_layers - 1 - n, -1):
                w, uh = self.w.data[k].astype(np.float64), uh_all[k]
                b = self.b.data[k].astype(np.float64)
                s = w @ uh                          # 0-d: w . u^
                wy = z @ w
                lo, hi = wy - xp.abs(s) - 1e-12, wy + xp.abs(s) + 1e-12
                for _ in range(INVERSE_ITERS):
                    mid = 0.5 * (lo + hi)
                    above = mid + s * xp.tanh(mid + b) > wy
                    hi, lo = xp.where(above, mid, hi), xp.where(above, lo, mid)
                a = 0.5 * (lo + hi)
                h = xp.tanh(a + b)
                z = z - h[:, None] * uh
                logdet += xp.log1p((1.0 - h * h) * s)
        return z, logdet

    def base_log_prob(self, z):
        return gaussian_log_prob(z, self.base_var)

    def sample(self, n, rng=None):
        """``n`` samples and ``log q`` of each: shapes (n, D) and (n,)."""
        rng = np.random.default_rng(rng) if not isinstance(rng, np.random.Generator) else rng
        z0 = _like(self.w, rng.standard_normal((int(n), self.dim)) * math.sqrt(self.base_var))
        if self.direction == "sample":
            x, logdet = self.layers(z0)
            return x, self.base_log_prob(z0) - logdet
        x, logdet = self.inverse_layers(z0)
        return Tensor(x), self.base_log_prob(z0).detach() + Tensor(logdet)

    def log_prob(self, x):
        """``log q(x)`` (k,)."""
        x = _t(x)
        if self.direction == "density":
            z, logdet = self.layers(x)
            return self.base_log_prob(z) + logdet
        z, logdet = self.inverse_layers(x)
        return self.base_log_prob(Tensor(z)) - Tensor(logdet)


# ============================================================ losses
def reverse_kl(model, log_target, n, rng=None, **kw):
    """``E_q[log q(x) - log p~(x)]`` over ``n`` samples of ``model`` (density matching, Fig. 4).

    ``log_target`` maps a Tensor (n, D) to the unnormalized target log-density (n,);
    the value is the KL up to the target's unknown ``log Z``.
    """
    x, logq = model.sample(n, rng, **kw)
    return (logq - log_target(x)).mean()


def nll(model, x, **kw):
    """``-mean log q(x)`` in nats (maximum likelihood, Figs. 5-6)."""
    return -model.log_prob(x, **kw).mean()
