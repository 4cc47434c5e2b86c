"""The derivative table: every primitive's forward code beside its VJPs.

Read a row as "forward; then, for each argument, how a cotangent ``g`` of the
output becomes a cotangent of that argument". ``ans`` is the output. VJPs use
Tensor operations only (rule 3 of :mod:`nodeform.autodiff.primitive`), so each
row is also differentiable. Masks (``x > 0``) are constants: their derivative
is zero almost everywhere.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor
from nodeform.backend import get_xp


def _r(x):
    """The raw array (or number) inside ``x``."""
    return x._data if isinstance(x, Tensor) else x


def _xp(x):
    x = _r(x)
    return np if type(x) is np.ndarray or not hasattr(x, "__cuda_array_interface__") else get_xp(x)


def shape(x):
    """Shape of a Tensor, array or Python number."""
    return np.shape(_r(x)) if not hasattr(_r(x), "shape") else _r(x).shape


def unbroadcast(g, target_shape):
    """Sum ``g`` over the axes that broadcasting added or stretched, back to ``target_shape``."""
    if g.shape == tuple(target_shape):
        return g
    extra = g.ndim - len(target_shape)
    if extra > 0:
        g = g.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, n in enumerate(target_shape) if n == 1 and g.shape[i] != 1)
    if axes:
        g = g.sum(axis=axes, keepdims=True)
    return g


def _norm_axis(axis, ndim):
    if axis is None:
        return tuple(range(ndim))
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    return tuple(sorted(a % ndim if ndim else 0 for a in axes))


def _keepdims_shape(xshape, axis):
    axes = _norm_axis(axis, len(xshape))
    return tuple(1 if i in axes else n for i, n in enumerate(xshape))


def _expand(g, xshape, axis, keepdims):
    """Undo a reduction: reshape ``g`` to keep the reduced axes, then broadcast to ``xshape``."""
    if not keepdims:
        g = g.reshape(_keepdims_shape(xshape, axis))
    return g.broadcast_to(xshape)


def _count(xshape, axis):
    axes = _norm_axis(axis, len(xshape))
    return int(np.prod([xshape[a] for a in axes])) if axes else 1


def _mask(cond, like):
    """A boolean condition as a 0/1 constant of ``like``'s dtype."""
    cond = cond if hasattr(cond, "astype") else np.asarray(cond)
    return cond.astype(_r(like).dtype)


def _logsumexp(x, axis=None, keepdims=False):
    xp = _xp(x)
    m = xp.max(x, axis=axis, keepdims=True)
    m = xp.where(xp.isfinite(m), m, 0)
    out = xp.log(xp.sum(xp.exp(x - m), axis=axis, keepdims=True)) + m
    return out if keepdims else xp.squeeze(out, axis=_norm_axis(axis, x.ndim))


def _softplus(x):
    return _xp(x).logaddexp(0, x)


def _sigmoid(x):
    xp = _xp(x)
    return xp.exp(-xp.logaddexp(0, -x))


def _scatter(g, index, shape):
    """Zeros of ``shape`` with ``g`` added at ``index`` (the adjoint of ``x[index]``)."""
    xp = _xp(g)
    out = xp.zeros(shape, dtype=g.dtype)
    if _is_basic(index):
        out[index] = g
    else:
        xp.add.at(out, index, g)
    return out


def _is_basic(index):
    items = index if isinstance(index, tuple) else (index,)
    return all(isinstance(i, (int, np.integer, slice)) or i is None or i is Ellipsis for i in items)


def _pad_slices(pad_width, ans_shape):
    return tuple(slice(lo, n - hi) for (lo, hi), n in zip(pad_width, ans_shape))


def _concat_slice(i, args, axis, ndim):
    start = sum(shape(a)[axis] for a in args[:i])
    idx = [slice(None)] * ndim
    idx[axis % ndim] = slice(start, start + shape(args[i])[axis])
    return tuple(idx)


def _einsum_parse(spec, n):
    if "->" not in spec or "." in spec:
        raise ValueError(f"`einsum` needs an explicit output ('ij,jk->ik') and no ellipsis; got {spec!r}.")
    ins, out = spec.replace(" ", "").split("->")
    ins = ins.split(",")
    if len(ins) != n:
        raise ValueError(f"`einsum` spec {spec!r} names {len(ins)} operands but {n} were given.")
    for s in ins + [out]:
        if len(set(s)) != len(s):
            raise ValueError(f"`einsum` does not support repeated indices within one operand "
                             f"(traces, diagonals): {s!r} in {spec!r}.")
    return ins, out


def _einsum_vjp(i, g, ans, *ops, spec):
    ins, out = _einsum_parse(spec, len(ops))
    others = [s for k, s in enumerate(ins) if k != i]
    keep = "".join(c for c in ins[i] if c in out or any(c in s for s in others))
    sub = ",".join([out] + others) + "->" + keep
    gi = einsum(sub, g, *[o for k, o in enumerate(ops) if k != i])
    if keep != ins[i]:   # indices summed away in operand i alone: broadcast back
        gi = gi.reshape(tuple(shape(ops[i])[k] if c in keep else 1 for k, c in enumerate(ins[i])))
        gi = gi.broadcast_to(shape(ops[i]))
    return gi


def _swap(x):
    axes = list(range(x.ndim))
    axes[-1], axes[-2] = axes[-2], axes[-1]
    return x.transpose(tuple(axes))


def _tie_weights(g, x, y, greater):
    """1 where ``x`` wins, 0.5 on a tie (the two share the gradient), 0 where it loses."""
    xr, yr = _r(x), _r(y)
    win = (xr > yr) if greater else (xr < yr)
    return _mask(win, g) + 0.5 * _mask(xr == yr, g)


# Banner rows: name, forward(raw), then one VJP per argument.
# ===================================================================== elementwise, binary
add = defprim("add", lambda x, y: x + y,
              lambda g, ans, x, y: unbroadcast(g, shape(x)),
              lambda g, ans, x, y: unbroadcast(g, shape(y)))
sub = defprim("sub", lambda x, y: x - y,
              lambda g, ans, x, y: unbroadcast(g, shape(x)),
              lambda g, ans, x, y: unbroadcast(-g, shape(y)))
mul = defprim("mul", lambda x, y: x * y,
              lambda g, ans, x, y: unbroadcast(g * y, shape(x)),
              lambda g, ans, x, y: unbroadcast(g * x, shape(y)))
div = defprim("div", lambda x, y: x / y,
              lambda g, ans, x, y: unbroadcast(g / y, shape(x)),
              lambda g, ans, x, y: unbroadcast(-g * ans / y, shape(y)))
power = defprim("pow", lambda x, y: x ** y,
                lambda g, ans, x, y: unbroadcast(g * y * x ** (y - 1), shape(x)),
                lambda g, ans, x, y: unbroadcast(
                    g * ans * log(where(_r(x) > 0, x, 1.0)), shape(y)))
maximum = defprim("maximum", lambda x, y: _xp(x).maximum(x, y),
                  lambda g, ans, x, y: unbroadcast(g * _tie_weights(g, x, y, True), shape(x)),
                  lambda g, ans, x, y: unbroadcast(g * _tie_weights(g, y, x, True), shape(y)))
minimum = defprim("minimum", lambda x, y: _xp(x).minimum(x, y),
                  lambda g, ans, x, y: unbroadcast(g * _tie_weights(g, x, y, False), shape(x)),
                  lambda g, ans, x, y: unbroadcast(g * _tie_weights(g, y, x, False), shape(y)))
where = defprim("where", lambda c, x, y: _xp(x).where(c, x, y),
                None,
                lambda g, ans, c, x, y: unbroadcast(g * _mask(_r(c), g), shape(x)),
                lambda g, ans, c, x, y: unbroadcast(g * _mask(~_r(c), g), shape(y)))

# ===================================================================== elementwise, unary
neg      = defprim("neg",      lambda x: -x,                 lambda g, ans, x: -g)
exp      = defprim("exp",      lambda x: _xp(x).exp(x),      lambda g, ans, x: g * ans)
log      = defprim("log",      lambda x: _xp(x).log(x),      lambda g, ans, x: g / x)
sqrt     = defprim("sqrt",     lambda x: _xp(x).sqrt(x),     lambda g, ans, x: g * 0.5 / ans)
absolute = defprim("abs",      lambda x: _xp(x).abs(x),      lambda g, ans, x: g * _xp(x).sign(_r(x)))
sin      = defprim("sin",      lambda x: _xp(x).sin(x),      lambda g, ans, x: g * cos(x))
cos      = defprim("cos",      lambda x: _xp(x).cos(x),      lambda g, ans, x: -g * sin(x))
tanh     = defprim("tanh",     lambda x: _xp(x).tanh(x),     lambda g, ans, x: g * (1.0 - ans * ans))
sigmoid  = defprim("sigmoid",  _sigmoid,                     lambda g, ans, x: g * ans * (1.0 - ans))
relu     = defprim("relu",     lambda x: _xp(x).maximum(x, 0), lambda g, ans, x: g * _mask(_r(x) > 0, g))
softplus = defprim("softplus", _softplus,                    lambda g, ans, x: g * sigmoid(x))
elu      = defprim("elu",      lambda x, alpha=1.0: _xp(x).where(x > 0, x, alpha * _xp(x).expm1(_xp(x).minimum(x, 0))),
                   lambda g, ans, x, alpha=1.0: _elu_vjp(g, ans, x, alpha))
astype   = defprim("astype",   lambda x, dtype: x.astype(dtype),
                   lambda g, ans, x, dtype: g.astype(_r(x).dtype))


def _elu_vjp(g, ans, x, alpha):
    """VJP of ``elu``: ``g`` where ``x > 0``, else ``g * alpha * exp(x) = g * (ans + alpha)``.

    Exercise ex1_11 of chapter 1 (in a student copy this is a stub: every test that
    differentiates ``elu`` needs it, e.g. the ``elu`` case of tests/test_autodiff_primitives.py
    and the ``elu`` fields of tests/test_adjoint_numba.py).
    """
    # BEGIN SOLUTION ex1_11
    return where(_r(x) > 0, g, g * (ans + alpha))
    # END SOLUTION ex1_11


# ===================================================================== reductions
sum_ = defprim("sum", lambda x, axis=None, keepdims=False: _xp(x).sum(x, axis=axis, keepdims=keepdims),
               lambda g, ans, x, axis=None, keepdims=False: _expand(g, shape(x), axis, keepdims))
mean = defprim("mean", lambda x, axis=None, keepdims=False: _xp(x).mean(x, axis=axis, keepdims=keepdims),
               lambda g, ans, x, axis=None, keepdims=False:
                   _expand(g, shape(x), axis, keepdims) * (1.0 / _count(shape(x), axis)))
max_ = defprim("max", lambda x, axis=None, keepdims=False: _xp(x).max(x, axis=axis, keepdims=keepdims),
               lambda g, ans, x, axis=None, keepdims=False: _max_vjp(g, ans, x, axis, keepdims))
logsumexp = defprim("logsumexp", _logsumexp,
                    lambda g, ans, x, axis=None, keepdims=False:
                        _expand(g, shape(x), axis, keepdims)
                        * exp(x - _expand(ans, shape(x), axis, keepdims)))


def _max_vjp(g, ans, x, axis, keepdims):
    xr = _r(x)
    a = _r(ans) if keepdims else _r(ans).reshape(_keepdims_shape(xr.shape, axis))
    hit = _mask(xr == a, g)
    hit = hit / hit.sum(axis=_norm_axis(axis, xr.ndim), keepdims=True)   # ties share the gradient
    return _expand(g, xr.shape, axis, keepdims) * hit


# ===================================================================== shape
reshape = defprim("reshape", lambda x, shape: x.reshape(shape),
                  lambda g, ans, x, shape: g.reshape(_r(x).shape))
transpose = defprim("transpose", lambda x, axes: x.transpose(axes),
                    lambda g, ans, x, axes: g.transpose(tuple(np.argsort(axes))))
broadcast_to = defprim("broadcast_to", lambda x, shape: _xp(x).broadcast_to(x, shape),
                       lambda g, ans, x, shape: unbroadcast(g, _r(x).shape))
getitem = defprim("getitem", lambda x, index: x[index],
                  lambda g, ans, x, index: scatter(g, index=index, shape=_r(x).shape))
scatter = defprim("scatter", _scatter,
                  lambda g, ans, x, index, shape: getitem(g, index=index))
pad = defprim("pad", lambda x, pad_width, value=0.0: _xp(x).pad(x, pad_width, constant_values=value),
              lambda g, ans, x, pad_width, value=0.0: g[_pad_slices(pad_width, ans.shape)])
concatenate = defprim("concatenate", lambda *xs, axis=0: _xp(xs[0]).concatenate(xs, axis=axis),
                      vjp_i=lambda i, g, ans, *xs, axis=0: g[_concat_slice(i, xs, axis, g.ndim)])
stack = defprim("stack", lambda *xs, axis=0: _xp(xs[0]).stack(xs, axis=axis),
                vjp_i=lambda i, g, ans, *xs, axis=0:
                    g[(slice(None),) * (axis % g.ndim) + (i,)])

# ===================================================================== linear algebra
matmul = defprim("matmul", lambda x, y: x @ y,
                 lambda g, ans, x, y: unbroadcast(g @ _swap(y), shape(x)),
                 lambda g, ans, x, y: unbroadcast(_swap(x) @ g, shape(y)))
einsum_p = defprim("einsum", lambda *ops, spec: _xp(ops[0]).einsum(spec, *ops, optimize=len(ops) > 2),
                   vjp_i=lambda i, g, ans, *ops, spec: _einsum_vjp(i, g, ans, *ops, spec=spec))


def einsum(spec, *operands):
    """Einstein summation with an explicit output, e.g. ``einsum('bij,jk->bik', x, w)``."""
    _einsum_parse(spec, len(operands))
    return einsum_p(*operands, spec=spec)
