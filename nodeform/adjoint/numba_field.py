"""The Numba fast path: small neural vector fields with hand-derived VJPs, all compiled.

A vector field for this path is a pair of ``@numba.njit`` functions over a flat
parameter vector ``theta`` (shape ``(p,)``) and a flat state ``y`` (shape ``(n,)``),
with optional extra arguments ``*args`` passed through unchanged:

* ``f(t, y, theta, *args) -> dy``, shape ``(n,)``;
* ``f_vjp(t, y, theta, a, *args) -> (dy, a_dfdy, a_dfdtheta, a_dfdt)``: the value of f
  and the three vector–Jacobian products of the adjoint method (shapes ``(n,)``,
  ``(n,)``, ``(p,)`` and a float). Returning ``dy`` too saves recomputing the forward
  activations.

Give it to :func:`nodeform.odeint` as a :class:`NumbaField` (or a tuple
``(f, f_vjp)`` / ``(f, f_vjp, args)``) with ``params=theta`` (a Tensor); the forward
solve and the backward (adjoint) solve both run in the compiled loop of
:mod:`nodeform.ode._numba_rk`, the augmented dynamics being :func:`augmented`.

:func:`mlp_field` builds the pair for an MLP ``R^d -> R^d`` (tanh / softplus / ELU
hidden layers, a linear output, optionally t as an extra input), applied row-wise
to a batch stored flat as ``(batch * d,)``. Its architecture travels as an int64
array in ``args``, so the functions are compiled once for every architecture and
cached on disk (``cache=True``). The VJPs are derived by hand, layer by layer,
and tested against the autodiff of :meth:`NumbaField.reference`.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np
from numba import njit, types
from numba.extending import intrinsic, overload

from nodeform.ode._fnptr import STATE, args_key, build_function, function_handle, is_handle_type

ACTIVATIONS = {"tanh": 0, "softplus": 1, "elu": 2}

# arch = [d, time_input, activation, n_layers, size_0, size_1, ..., size_L]
_ARCH_HEAD = 4


# exp(y) = 2^k exp(r), y = k ln2 + r, |r| <= ln2 / 2; ln2 split in two so k * LN2_HI is exact
_LOG2E = 1.4426950408889634
_LN2_HI = 0.6931471803691238
_LN2_LO = 1.9082149292705877e-10
# below this, exp(-2|x|) underflows and tanh(x) = +-1 to the last bit
_TANH_CLAMP = -700.0


@njit(cache=True)
def _tanh(a):
    """tanh of a C-contiguous array, written so LLVM vectorizes it.

    Numba calls the scalar libm ``tanh`` element by element (about 10 ns each, while
    NumPy's SIMD tanh takes about 1 ns); this tanh is ``-expm1(-2|x|) / (2 + expm1(-2|x|))``
    with ``expm1`` by range reduction and a degree-13 Taylor polynomial on
    ``|r| <= ln2 / 2`` (truncation below 1e-17), in branch-free passes over the array.
    Agrees with ``np.tanh`` to a few ulps, also for tiny ``x``.
    """
    x = a.ravel()
    n = x.size
    q = np.empty(n)
    kbits = np.empty(n, dtype=np.int64)
    for i in range(n):
        y = -2.0 * abs(x[i])
        y = max(y, _TANH_CLAMP)
        kf = math.floor(y * _LOG2E + 0.5)
        r = (y - kf * _LN2_HI) - kf * _LN2_LO
        q[i] = r * (1.0 + r * (1 / 2 + r * (1 / 6 + r * (1 / 24 + r * (1 / 120 + r * (
            1 / 720 + r * (1 / 5040 + r * (1 / 40320 + r * (1 / 362880 + r * (
                1 / 3628800 + r * (1 / 39916800 + r * (1 / 479001600 + r / 6227020800))))))))))))
        kbits[i] = np.int64(kf) << 52
    e = q + 1.0                        # exp(r), then times 2^k by adding k to the exponent bits
    bits = e.view(np.int64)
    for i in range(n):
        bits[i] += kbits[i]
    out = np.empty(n)
    for i in range(n):
        em1 = q[i] if kbits[i] == 0 else e[i] - 1.0      # expm1(-2|x|), accurate near 0
        t = -em1 / (2.0 + em1)
        out[i] = t if x[i] >= 0 else -t
    return out.reshape(a.shape)


@njit(cache=True)
def _act(x, kind):
    if kind == 0:
        return _tanh(x)
    if kind == 1:
        return np.logaddexp(0.0, x)
    return np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))


@njit(cache=True)
def _act_grad(pre, post, kind):
    """d act / d pre, from the pre-activation and the activation."""
    if kind == 0:
        return 1.0 - post * post
    if kind == 1:
        return 1.0 / (1.0 + np.exp(-pre))
    return np.where(pre > 0, 1.0, post + 1.0)


@njit(cache=True)
def _input(t, y, arch):
    d, time_input = arch[0], arch[1]
    B = y.shape[0] // d
    z = y.reshape(B, d)
    if time_input == 0:
        return z.copy()
    x = np.empty((B, d + 1))
    x[:, :d] = z
    x[:, d] = t
    return x


@njit(cache=True)
def mlp_f(t, y, theta, arch):
    """The MLP vector field: ``y`` (batch*d,) -> dy (batch*d,)."""
    kind, L = arch[2], arch[3]
    x = _input(t, y, arch)
    off = 0
    for l in range(L):
        n_in, n_out = arch[_ARCH_HEAD + l], arch[_ARCH_HEAD + l + 1]
        W = theta[off:off + n_out * n_in].reshape(n_out, n_in)
        b = theta[off + n_out * n_in:off + n_out * n_in + n_out]
        off += n_out * n_in + n_out
        pre = x @ W.T + b
        x = _act(pre, kind) if l < L - 1 else pre
    return x.ravel()


@njit(cache=True)
def mlp_vjp(t, y, theta, a, arch):
    """``(f, a^T df/dy, a^T df/dtheta, a^T df/dt)`` of :func:`mlp_f`, by hand.

    Forward keeps each layer's input ``x_l`` and pre-activation; backward walks the
    layers in reverse: ``g <- g * act'(pre)``, ``dW = g^T x_l``, ``db = sum_rows g``,
    ``g <- g W``.
    """
    d, time_input, kind, L = arch[0], arch[1], arch[2], arch[3]
    x = _input(t, y, arch)
    xs = [x]
    pres = [x]
    offs = np.zeros(L + 1, dtype=np.int64)
    for l in range(L):
        n_in, n_out = arch[_ARCH_HEAD + l], arch[_ARCH_HEAD + l + 1]
        W = theta[offs[l]:offs[l] + n_out * n_in].reshape(n_out, n_in)
        b = theta[offs[l] + n_out * n_in:offs[l] + n_out * n_in + n_out]
        offs[l + 1] = offs[l] + n_out * n_in + n_out
        pre = x @ W.T + b
        pres.append(pre)
        x = _act(pre, kind) if l < L - 1 else pre
        xs.append(x)
    out = xs[L].ravel().copy()
    B = y.shape[0] // d
    g = a.reshape(B, d).copy()
    g_theta = np.zeros_like(theta)
    for l in range(L - 1, -1, -1):
        n_in, n_out = arch[_ARCH_HEAD + l], arch[_ARCH_HEAD + l + 1]
        if l < L - 1:
            g = g * _act_grad(pres[l + 1], xs[l + 1], kind)
        W = theta[offs[l]:offs[l] + n_out * n_in].reshape(n_out, n_in)
        gW = g.T @ xs[l]
        g_theta[offs[l]:offs[l] + n_out * n_in] = gW.ravel()
        g_theta[offs[l] + n_out * n_in:offs[l + 1]] = g.sum(axis=0)
        g = g @ W
    g_y = g[:, :d].copy().ravel()
    g_t = g[:, d].sum() if time_input else 0.0
    return out, g_y, g_theta, g_t


#: What ``f_vjp`` must return for the pointer path: ``(dy, a_dfdy, a_dfdtheta, a_dfdt)``.
VJP_RETURN = types.Tuple((STATE, STATE, STATE, types.float64))

# (f_vjp, type key of (theta, *args)) -> handle, or None (then the dispatcher is passed)
_VJP_HANDLES = {}


def vjp_handle(f_vjp, theta, args):
    """A function-pointer handle of ``f_vjp`` for :func:`augmented`, memoized; or None.

    Passing the handle instead of the dispatcher ``f_vjp`` in the augmented field's
    arguments keeps the compiled adjoint loop's cache key the same in every process
    (see :mod:`nodeform.ode._fnptr`), so a second process does not recompile it. None
    when ``f_vjp`` does not compile to ``VJP_RETURN(float64, float64[::1], theta,
    float64[::1], *args)`` exactly: pass ``f_vjp`` itself then (recompiled per process).
    """
    key = (f_vjp, args_key((theta,) + tuple(args)))
    if key not in _VJP_HANDLES:
        try:
            sig = VJP_RETURN(types.float64, STATE, numba.typeof(theta), STATE,
                             *(numba.typeof(x) for x in args))
        except Exception:  # noqa: BLE001 - no Numba type: keep the dispatcher path
            _VJP_HANDLES[key] = None
        else:
            _VJP_HANDLES[key] = function_handle(f_vjp, sig)
    return _VJP_HANDLES[key]


@intrinsic
def _vjp_from_handle(typingctx, handle, theta, args):
    fnty = types.FunctionType(VJP_RETURN(types.float64, STATE, theta, STATE, *args.types))

    def codegen(context, builder, signature, llargs):
        c_addr = builder.extract_value(llargs[0], 0)
        jit_addr = builder.extract_value(llargs[0], 1)
        return build_function(context, builder, fnty, c_addr, jit_addr)
    return fnty(handle, theta, args), codegen


def vjp_function(f_vjp, theta, args):
    """Inside compiled code: the callable ``f_vjp``, from a handle or the dispatcher itself."""
    return f_vjp


@overload(vjp_function, jit_options={"cache": True})
def _vjp_function_impl(f_vjp, theta, args):
    if is_handle_type(f_vjp):
        return lambda f_vjp, theta, args: _vjp_from_handle(f_vjp, theta, args)
    return lambda f_vjp, theta, args: f_vjp


@njit(cache=True)
def augmented(t, s, f_vjp, theta, n, p, with_t, args):
    """The adjoint's augmented dynamics on ``s = [z | a | a_theta | a_t]`` (see continuous.py).

    ``d/dt [z, a, a_theta, a_t] = [f, -a^T df/dz, -a^T df/dtheta, -a^T df/dt]``.
    ``f_vjp`` is the njit VJP function or its :func:`vjp_handle` (which lets the compiled
    adjoint loop cache across processes).
    """
    f_vjp = vjp_function(f_vjp, theta, args)
    z = s[:n]
    a = s[n:2 * n]
    dy, g_y, g_theta, g_t = f_vjp(t, z, theta, a, *args)
    out = np.empty_like(s)
    out[:n] = dy
    out[n:2 * n] = -g_y
    out[2 * n:2 * n + p] = -g_theta
    if with_t:
        out[2 * n + p] = -g_t
    return out


@dataclass
class NumbaField:
    """A compiled vector field for the Numba fast path (see the module docstring).

    Attributes
    ----------
    f, f_vjp : numba dispatchers
    args : tuple
        Extra arguments passed to both.
    sizes : tuple of int, optional
        Layer sizes, for an MLP built by :func:`mlp_field`.
    activation : str, optional
    time_input : bool
    """

    f: object
    f_vjp: object
    args: tuple = ()
    sizes: tuple = ()
    activation: str = "tanh"
    time_input: bool = False

    @property
    def n_params(self):
        """Length of ``theta`` for an MLP field."""
        return int(sum(o * i + o for i, o in zip(self.sizes[:-1], self.sizes[1:])))

    def init_theta(self, rng, scale=1.0):
        """Glorot-like random parameters, shape ``(n_params,)``."""
        parts = []
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            parts.append(rng.standard_normal(n_out * n_in) * scale / np.sqrt(n_in))
            parts.append(np.zeros(n_out))
        return np.concatenate(parts)

    def unflatten(self, theta):
        """``[(W_0, b_0), ...]`` views of a flat ``theta`` (Tensors or arrays)."""
        out, off = [], 0
        for n_in, n_out in zip(self.sizes[:-1], self.sizes[1:]):
            W = theta[off:off + n_out * n_in].reshape(n_out, n_in)
            b = theta[off + n_out * n_in:off + n_out * n_in + n_out]
            off += n_out * n_in + n_out
            out.append((W, b))
        return out

    def reference(self, theta):
        """The same field as an autodiff function ``func(t, y)`` of Tensors (for checks)."""
        import nodeform as nf
        act = {"tanh": nf.tanh, "softplus": nf.softplus, "elu": nf.elu}[self.activation]
        d = self.sizes[-1]

        def func(t, y):
            layers = self.unflatten(theta)      # sliced inside: each call builds its own graph
            z = y.reshape(-1, d)
            x = z
            if self.time_input:
                tt = t if isinstance(t, nf.Tensor) else nf.Tensor(np.asarray(t, dtype=float))
                x = nf.concatenate([z, nf.broadcast_to(tt.reshape(1, 1), (z.shape[0], 1))], axis=1)
            for k, (W, b) in enumerate(layers):
                x = x @ W.T + b
                if k < len(layers) - 1:
                    x = act(x)
            return x.reshape(y.shape)
        return func


def mlp_field(dim, hidden, activation="tanh", time_input=False):
    """An MLP vector field ``R^dim -> R^dim`` for the Numba path.

    Parameters
    ----------
    dim : int
        State dimension ``d``; the flat state holds ``batch`` rows of ``d``.
    hidden : sequence of int
        Hidden layer widths, e.g. ``(64,)``.
    activation : {"tanh", "softplus", "elu"}
    time_input : bool
        Feed ``t`` as an extra input of the first layer.

    Returns
    -------
    NumbaField
        ``theta`` layout: for each layer, ``W`` (out, in) row-major, then ``b`` (out,).
    """
    if activation not in ACTIVATIONS:
        raise ValueError(f"`activation` must be one of {sorted(ACTIVATIONS)}, got {activation!r}.")
    hidden = tuple(int(h) for h in hidden)
    if not hidden or min(hidden) < 1 or int(dim) < 1:
        raise ValueError(f"`dim` and every entry of `hidden` must be positive integers, got "
                         f"dim={dim}, hidden={hidden}.")
    sizes = (int(dim) + (1 if time_input else 0),) + hidden + (int(dim),)
    arch = np.array([dim, int(time_input), ACTIVATIONS[activation], len(sizes) - 1] + list(sizes),
                    dtype=np.int64)
    return NumbaField(mlp_f, mlp_vjp, (arch,), sizes, activation, bool(time_input))
