"""Dense layers, activations as modules, and the small shape layers.

``Linear`` computes ``y = x W^T + b`` with ``W`` of shape (out, in), as PyTorch
stores it, so state dicts line up with the paper's code. ``ConcatLinear`` is the
ODE-Net trick for time: ``t`` is appended to the input as one more feature, so
the vector field ``f(z, t)`` can depend on time.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor
from nodeform.backend import DEFAULT_DTYPE, get_xp
from nodeform.nn import init
from nodeform.nn.module import Module, Parameter


def as_tensor(x):
    """``x`` unchanged if it is a Tensor, else wrapped (arrays keep their dtype)."""
    return x if isinstance(x, Tensor) else Tensor(x)


def check_input(layer, x, ndim, axis=None, size=None, expect=""):
    """Raise a ``ValueError`` naming ``layer`` when ``x`` has the wrong rank or axis size."""
    shape = tuple(x.shape)
    if len(shape) != ndim or (axis is not None and shape[axis] != size):
        raise ValueError(f"`{layer}`: input has shape {shape} but the layer expects {expect}.")


class Linear(Module):
    """Affine map ``y = x W^T + b``.

    Parameters
    ----------
    in_features, out_features : int
    bias : bool
    rng : Generator, int or None
        Source of the initial weights (see :mod:`nodeform.nn.init`).
    dtype : dtype

    Shapes: ``x`` (..., in_features) -> (..., out_features).
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        w, b = init.torch_default((self.out_features, self.in_features), rng, dtype, bias)
        self.weight = Parameter(w)
        self.bias = Parameter(b) if bias else None

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 1 or x.shape[-1] != self.in_features:
            raise ValueError(f"`{self.name()}`: input has shape {tuple(x.shape)} but the layer "
                             f"expects (..., {self.in_features}).")
        y = x @ self.weight.T
        return y + self.bias if self.bias is not None else y

    def name(self):
        return f"{type(self).__name__}({self.in_features}->{self.out_features})"

    def extra_repr(self):
        return f"{self.in_features} -> {self.out_features}, bias={self.bias is not None}"


class ConcatLinear(Linear):
    """``Linear`` on ``[x, t]``: time enters as one extra input feature (the ODE-Net's ``ConcatLinear``).

    Shapes: ``t`` scalar, ``x`` (N, in_features) -> (N, out_features). The weight has
    ``in_features + 1`` columns, the last one for ``t``.
    """

    def __init__(self, in_features, out_features, bias=True, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__(in_features + 1, out_features, bias, rng, dtype)
        self.in_features = int(in_features)

    def forward(self, t, x):
        x = as_tensor(x)
        check_input(self.name(), x, 2, -1, self.in_features, f"(N, {self.in_features})")
        tt = F.broadcast_to(F.reshape(as_tensor(t), 1, 1), (x.shape[0], 1)) \
            if isinstance(t, Tensor) else Tensor(get_xp(x.data).full((x.shape[0], 1), float(t), x.dtype))
        y = F.concatenate([x, F.astype(tt, x.dtype) if tt.dtype != x.dtype else tt], axis=1) \
            @ self.weight.T
        return y + self.bias if self.bias is not None else y


class Flatten(Module):
    """Merge every axis after the first: (N, ...) -> (N, prod(...))."""

    def forward(self, x):
        x = as_tensor(x)
        return x.reshape(x.shape[0], -1)


class GlobalAvgPool2d(Module):
    """Mean over the spatial axes: (N, C, H, W) -> (N, C)."""

    def forward(self, x):
        x = as_tensor(x)
        check_input("GlobalAvgPool2d", x, 4, expect="(N, C, H, W)")
        return x.mean(axis=(2, 3))


class Identity(Module):
    """Returns its input."""

    def forward(self, x):
        return x


class Lambda(Module):
    """Wrap a function of one Tensor as a module (no parameters)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(as_tensor(x))

    def extra_repr(self):
        return getattr(self.fn, "__name__", "fn")


# ======================================================================== activations
class Tanh(Module):
    """``tanh(x)`` elementwise."""

    def forward(self, x):
        return F.tanh(as_tensor(x))


class ReLU(Module):
    """``max(x, 0)`` elementwise."""

    def forward(self, x):
        return F.relu(as_tensor(x))


class Sigmoid(Module):
    """``1 / (1 + exp(-x))`` elementwise."""

    def forward(self, x):
        return F.sigmoid(as_tensor(x))


class Softplus(Module):
    """``log(1 + exp(x))`` elementwise."""

    def forward(self, x):
        return F.softplus(as_tensor(x))


class ELU(Module):
    """``x`` for ``x > 0``, else ``alpha (exp(x) - 1)``."""

    def __init__(self, alpha=1.0):
        super().__init__()
        self.alpha = float(alpha)

    def forward(self, x):
        return F.elu(as_tensor(x), self.alpha)

    def extra_repr(self):
        return f"alpha={self.alpha}"
