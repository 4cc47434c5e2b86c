"""Group normalization (Wu & He, 2018) [1]_, the normalization of the paper's ODE-Net.

The C channels are split into G groups; each example's values in a group are
shifted to mean 0 and scaled to variance 1, then a per-channel scale ``gamma``
and shift ``beta`` are applied::

    y = (x - mean_g) / sqrt(var_g + eps) * gamma + beta

Unlike batch normalization, nothing depends on the other examples of a batch,
so train and eval modes compute the same thing and no running statistics are
kept: a good fit for an ODE vector field, which is evaluated many times per
batch. The gradient comes from the primitives (mean, sub, mul, sqrt).

References
----------
.. [1] Y. Wu and K. He, "Group Normalization", ECCV 2018.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff import functions as F
from nodeform.backend import DEFAULT_DTYPE
from nodeform.nn.layers import as_tensor
from nodeform.nn.module import Module, Parameter

#: Added to the variance before the square root, as PyTorch does, so a constant group does not divide by 0.
GROUPNORM_EPS = 1e-5


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
        shape = tuple(x.shape)
        g = x.reshape(shape[0], self.num_groups, -1)                      # (N, G, C/G * H * W)
        mu = g.mean(axis=2, keepdims=True)
        d = g - mu
        var = (d * d).mean(axis=2, keepdims=True)
        y = (d / F.sqrt(var + self.eps)).reshape(shape)
        if self.weight is not None:
            bshape = (1, self.num_channels) + (1,) * (len(shape) - 2)
            y = y * self.weight.reshape(bshape) + self.bias.reshape(bshape)
        return y

    def extra_repr(self):
        return f"{self.num_groups}, {self.num_channels}, eps={self.eps}"
