"""Group normalization (Wu & He, 2018) [1]_, the normalization of the paper's ODE-Net.

The C channels are split into G groups; each example's values in a group are
shifted to mean 0 and scaled to variance 1, then a per-channel scale ``gamma``
and shift ``beta`` are applied::

    y = (x - mean_g) / sqrt(var_g + eps) * gamma + beta

Unlike batch normalization, nothing depends on the other examples of a batch,
so train and eval modes compute the same thing and no running statistics are
kept: a good fit for an ODE vector field, which is evaluated many times per
batch.

The layer is one primitive, :func:`group_norm`, with a hand-derived VJP. With
``m`` values per group, ``xhat = (x - mean) * rstd`` and ``gh = g * gamma``::

    d beta  = sum over (N, H, W) of g
    d gamma = sum over (N, H, W) of g * xhat
    d x     = rstd * (gh - mean_g(gh) - xhat * mean_g(gh * xhat))

(the last line: differentiate ``xhat`` through the mean and through ``rstd``,
whose derivative is ``-rstd^3 (x - mean) / m``). The composed version,
:func:`group_norm_composed`, is the same formula built from six primitives; it is
kept as the oracle the fused one is tested against. The fused forward works in
channels-last order (the memory order :func:`nodeform.nn.conv2d` returns), so
it makes no copy of its input. The VJP is written with Tensor operations and
recomputes the statistics from ``x`` when a graph is being recorded, so
gradients of gradients are exact.

References
----------
.. [1] Y. Wu and K. He, "Group Normalization", ECCV 2018.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff import functions as F
from nodeform.autodiff.primitive import defprim
from nodeform.autodiff.tensor import Tensor, is_grad_enabled
from nodeform.backend import DEFAULT_DTYPE, get_xp
from nodeform.nn.layers import as_tensor
from nodeform.nn.module import Module, Parameter

#: Added to the variance before the square root, as PyTorch does, so a constant group does not divide by 0.
GROUPNORM_EPS = 1e-5


# ======================================================================== the primitive
# Work channels-last, (N, S, C) with S the spatial positions: the memory order conv2d returns,
# and with C (not the 2 channels of a group) as the contiguous axis every pass is a fast one.
def _channels_last(x):
    """``x`` (N, C, *S) as (N, S, C); a view when ``x`` is channels-last in memory."""
    n, c = x.shape[:2]
    return x.transpose((0,) + tuple(range(2, x.ndim)) + (1,)).reshape(n, -1, c)


def _channels_first(y, shape):
    """Inverse of :func:`_channels_last`: (N, S, C) -> (N, C, *S) (a transposed view)."""
    n, c = shape[:2]
    yl = y.reshape((n,) + tuple(shape[2:]) + (c,))
    return yl.transpose((0, len(shape) - 1) + tuple(range(1, len(shape) - 1)))


def _group_mean(v, groups, m):
    """Per-channel sums ``v`` (N, C) -> each group's mean over ``m`` values, repeated per channel."""
    n, c = v.shape
    gm = v.reshape(n, groups, c // groups).sum(axis=2, keepdims=True) * (1.0 / m)   # (N, G, 1)
    if isinstance(gm, Tensor):
        return F.broadcast_to(gm, (n, groups, c // groups)).reshape(n, 1, c)
    return get_xp(gm).broadcast_to(gm, (n, groups, c // groups)).reshape(n, 1, c)


def _group_norm(x, weight, bias, groups, eps, cache):
    xl = _channels_last(x)                                               # (N, S, C)
    m = xl.shape[1] * (xl.shape[2] // groups)                            # values per group
    mu = _group_mean(xl.sum(axis=1), groups, m)                          # (N, 1, C)
    d = xl - mu
    var = _group_mean(get_xp(x).einsum("nsc,nsc->nc", d, d), groups, m)
    rstd = 1.0 / get_xp(x).sqrt(var + eps)                               # (N, 1, C)
    cache["stats"] = (mu, rstd)
    if weight is not None:
        d *= rstd * weight
        d += bias
    else:
        d *= rstd
    return _channels_first(d, x.shape)


def _group_norm_grads(g, x, weight, groups, eps, cache):
    """``(dx, dgamma, dbeta)`` for cotangent ``g``, computed once per ``g`` (Tensor operations)."""
    if cache.get("g") is g:
        return cache["grads"]
    xl = _channels_last(x if isinstance(x, Tensor) else Tensor(x))
    m = xl.shape[1] * (xl.shape[2] // groups)
    if is_grad_enabled() and isinstance(x, Tensor) and x.requires_grad:
        mu = _group_mean(xl.sum(axis=1), groups, m)                      # differentiable statistics
        d = xl - mu
        rstd = (_group_mean((d * d).sum(axis=1), groups, m) + eps) ** -0.5
    else:
        mu, rstd = cache["stats"]
        d = xl - mu
    xhat = d * rstd                                                      # (N, S, C)
    gl = _channels_last(g)
    p = (gl * xhat).sum(axis=1)                                          # (N, C)
    q = gl.sum(axis=1)                                                   # (N, C)
    if weight is not None:
        gh, p_h, q_h = gl * weight, p * weight, q * weight
    else:
        gh, p_h, q_h = gl, p, q
    dx = rstd * (gh - _group_mean(q_h, groups, m) - xhat * _group_mean(p_h, groups, m))
    dx = _channels_first(dx, tuple(x.shape))
    dgamma, dbeta = (p.sum(axis=0), q.sum(axis=0)) if weight is not None else (None, None)
    cache["g"], cache["grads"] = g, (dx, dgamma, dbeta)
    return cache["grads"]


_group_norm_p = defprim(
    "group_norm", _group_norm,
    lambda g, ans, x, w, b, groups, eps, cache: _group_norm_grads(g, x, w, groups, eps, cache)[0],
    lambda g, ans, x, w, b, groups, eps, cache: _group_norm_grads(g, x, w, groups, eps, cache)[1],
    lambda g, ans, x, w, b, groups, eps, cache: _group_norm_grads(g, x, w, groups, eps, cache)[2])


def group_norm(x, weight, bias, groups, eps=GROUPNORM_EPS):
    """Group normalization as one primitive with a hand-derived VJP.

    Parameters
    ----------
    x : Tensor, shape (N, C, *S)
    weight, bias : Tensor, shape (C,), or both None
    groups : int
        Divides C.
    eps : float

    Returns
    -------
    Tensor, shape (N, C, *S), in channels-last memory order.
    """
    if (weight is None) != (bias is None):
        raise ValueError("`group_norm`: give both `weight` and `bias`, or neither.")
    return _group_norm_p(x, weight, bias, groups=int(groups), eps=float(eps), cache={})


def group_norm_composed(x, weight, bias, groups, eps=GROUPNORM_EPS):
    """The same as :func:`group_norm` from six primitives (the oracle in the tests)."""
    shape = tuple(x.shape)
    g = x.reshape(shape[0], groups, -1)                                  # (N, G, C/G * S)
    mu = g.mean(axis=2, keepdims=True)
    d = g - mu
    var = (d * d).mean(axis=2, keepdims=True)
    y = (d / F.sqrt(var + eps)).reshape(shape)
    if weight is not None:
        bshape = (1, shape[1]) + (1,) * (len(shape) - 2)
        y = y * weight.reshape(bshape) + bias.reshape(bshape)
    return y


class GroupNorm(Module):
    """Normalize each group of channels of each example.

    Parameters
    ----------
    num_groups : int
        Must divide ``num_channels``. ``num_groups=1`` is layer norm over (C, H, W);
        ``num_groups=num_channels`` is instance norm.
    num_channels : int
    eps : float
    affine : bool
        Learn ``gamma`` (ones) and ``beta`` (zeros) of shape (C,).

    Shapes: (N, C, ...) -> same shape.
    """

    def __init__(self, num_groups, num_channels, eps=GROUPNORM_EPS, affine=True, dtype=DEFAULT_DTYPE):
        super().__init__()
        if num_groups < 1 or num_channels % num_groups:
            raise ValueError(f"`num_groups`={num_groups} must be >= 1 and divide `num_channels`="
                             f"{num_channels}; try min(32, num_channels) for a power-of-two width.")
        self.num_groups, self.num_channels, self.eps = int(num_groups), int(num_channels), float(eps)
        self.weight = Parameter(np.ones(num_channels, dtype)) if affine else None
        self.bias = Parameter(np.zeros(num_channels, dtype)) if affine else None

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 2 or x.shape[1] != self.num_channels:
            raise ValueError(f"`GroupNorm({self.num_groups}, {self.num_channels})`: input has shape "
                             f"{tuple(x.shape)} but the layer expects (N, {self.num_channels}, ...).")
        return group_norm(x, self.weight, self.bias, self.num_groups, self.eps)

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
