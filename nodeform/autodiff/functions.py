"""Public functions on Tensors (``nodeform.tanh(x)``, ...) and the Tensor's operators.

Each function checks its arguments, so that a mistake is reported in the user's
terms (the operation, the argument, the shapes) before a primitive runs. Composite
functions (``softmax``, ``log_softmax``, ``square``) are built from primitives, so
they need no VJP of their own.
"""
from __future__ import annotations

import builtins

import numpy as np

from nodeform.autodiff import vjps as P
from nodeform.autodiff.tensor import Tensor


def _shape(x):
    return P.shape(x)


def _broadcast_check(op, x, y):
    try:
        np.broadcast_shapes(_shape(x), _shape(y))
    except ValueError:
        raise ValueError(f"`{op}`: shapes {_shape(x)} and {_shape(y)} cannot be broadcast together "
                         "(NumPy rules: align trailing axes; each pair must be equal or 1). "
                         "Reshape one operand, e.g. add an axis with `x.reshape(...)`.") from None


def _binary(prim, op):
    def f(x, y):
        _broadcast_check(op, x, y)
        return prim(x, y)
    f.__name__ = prim.name
    f.__doc__ = f"Elementwise `{prim.name}` with NumPy broadcasting."
    return f


add = _binary(P.add, "+")
sub = _binary(P.sub, "-")
mul = _binary(P.mul, "*")
div = _binary(P.div, "/")
power = _binary(P.power, "**")
maximum = _binary(P.maximum, "maximum")
minimum = _binary(P.minimum, "minimum")

def _unary(prim, doc):
    def f(x):
        return prim(x)
    f.__name__ = prim.name
    f.__doc__ = doc
    return f


neg = _unary(P.neg, "``-x``.")
exp = _unary(P.exp, "``e**x`` elementwise.")
log = _unary(P.log, "Natural logarithm elementwise.")
sqrt = _unary(P.sqrt, "Square root elementwise.")
sin = _unary(P.sin, "Sine elementwise.")
cos = _unary(P.cos, "Cosine elementwise.")
tanh = _unary(P.tanh, "Hyperbolic tangent elementwise.")
sigmoid = _unary(P.sigmoid, "Logistic function ``1 / (1 + exp(-x))``, computed stably.")
relu = _unary(P.relu, "``max(x, 0)``; its derivative at 0 is taken as 0.")
softplus = _unary(P.softplus, "``log(1 + exp(x))``, computed stably.")
absolute = _unary(P.absolute, "``|x|``; its derivative at 0 is taken as 0.")
abs = absolute  # noqa: A001  (nodeform.abs mirrors numpy.abs)


def elu(x, alpha=1.0):
    """Exponential linear unit: ``x`` for ``x > 0``, ``alpha * (exp(x) - 1)`` otherwise."""
    return P.elu(x, alpha=float(alpha))


def where(cond, x, y):
    """``x`` where ``cond`` is true, else ``y``; ``cond`` is a constant boolean array."""
    c = cond.data if isinstance(cond, Tensor) else cond
    c = np.asarray(c) if not hasattr(c, "dtype") else c
    if c.dtype != bool:
        raise TypeError(f"`where`: `cond` must be boolean, got dtype {c.dtype}.")
    try:
        np.broadcast_shapes(c.shape, _shape(x), _shape(y))
    except ValueError:
        raise ValueError(f"`where`: shapes {c.shape}, {_shape(x)}, {_shape(y)} cannot be "
                         "broadcast together.") from None
    return P.where(c, x, y)


def _axis_check(op, x, axis):
    nd = len(_shape(x))
    axes = () if axis is None else ((axis,) if isinstance(axis, (int, np.integer)) else tuple(axis))
    for a in axes:
        if not -nd <= a < builtins.max(nd, 1):
            raise ValueError(f"`{op}`: axis {a} is out of range for a tensor of shape {_shape(x)}.")
    return axis if axis is None or isinstance(axis, (int, np.integer)) else tuple(axis)


def sum(x, axis=None, keepdims=False):  # noqa: A001
    """Sum over ``axis`` (all axes by default)."""
    return P.sum_(x, axis=_axis_check("sum", x, axis), keepdims=keepdims)


def mean(x, axis=None, keepdims=False):
    """Mean over ``axis`` (all axes by default)."""
    return P.mean(x, axis=_axis_check("mean", x, axis), keepdims=keepdims)


def max(x, axis=None, keepdims=False):  # noqa: A001
    """Maximum over ``axis``; tied maxima share the gradient equally."""
    return P.max_(x, axis=_axis_check("max", x, axis), keepdims=keepdims)


def logsumexp(x, axis=None, keepdims=False):
    """``log(sum(exp(x)))`` over ``axis``, computed without overflow."""
    return P.logsumexp(x, axis=_axis_check("logsumexp", x, axis), keepdims=keepdims)


def log_softmax(x, axis=-1):
    """``x - logsumexp(x)`` along ``axis``: stable log-probabilities from logits."""
    return x - logsumexp(x, axis=axis, keepdims=True)


def softmax(x, axis=-1):
    """Probabilities from logits along ``axis``."""
    return exp(log_softmax(x, axis))


def square(x):
    """``x * x``."""
    return x * x


def reshape(x, *shape):
    """A view with a new shape (one entry may be -1)."""
    shape = tuple(shape[0]) if len(shape) == 1 and isinstance(shape[0], (tuple, list)) else shape
    size = int(np.prod(_shape(x)))
    known = int(np.prod([s for s in shape if s != -1]))
    if shape.count(-1) > 1 or (-1 not in shape and known != size) \
            or (-1 in shape and (known == 0 or size % known)):
        raise ValueError(f"`reshape`: cannot reshape a tensor of shape {_shape(x)} "
                         f"({size} elements) into {shape}.")
    if -1 in shape:
        shape = tuple(size // known if s == -1 else s for s in shape)
    return P.reshape(x, shape=tuple(int(s) for s in shape))


def transpose(x, axes=None):
    """Permute axes (reverse them by default)."""
    nd = len(_shape(x))
    axes = tuple(range(nd))[::-1] if axes is None else tuple(int(a) % builtins.max(nd, 1) for a in axes)
    if sorted(axes) != list(range(nd)):
        raise ValueError(f"`transpose`: axes {axes} are not a permutation of a {nd}-d tensor's axes.")
    return P.transpose(x, axes=axes)


def swapaxes(x, a, b):
    """Exchange two axes."""
    axes = list(range(len(_shape(x))))
    axes[a], axes[b] = axes[b], axes[a]
    return transpose(x, axes)


def broadcast_to(x, shape):
    """Repeat ``x`` along broadcast axes to ``shape``."""
    shape = tuple(shape)
    try:
        if np.broadcast_shapes(_shape(x), shape) != shape:
            raise ValueError
    except ValueError:
        raise ValueError(f"`broadcast_to`: shape {_shape(x)} cannot be broadcast to {shape}.") from None
    return P.broadcast_to(x, shape=shape)


def _raw_index(index):
    if isinstance(index, tuple):
        return tuple(i.data if isinstance(i, Tensor) else i for i in index)
    if isinstance(index, Tensor):
        return index.data
    if isinstance(index, list):
        return np.asarray(index)
    return index


def getitem(x, index):
    """``x[index]``: integers, slices, ``None``, ``...``, integer and boolean arrays."""
    return P.getitem(x, index=_raw_index(index))


def pad(x, pad_width, value=0.0):
    """Pad with a constant; ``pad_width`` is ``((before, after), ...)`` per axis, or one int."""
    nd = len(_shape(x))
    if isinstance(pad_width, (int, np.integer)):
        pad_width = ((int(pad_width), int(pad_width)),) * nd
    pad_width = tuple((int(a), int(b)) for a, b in pad_width)
    if len(pad_width) != nd or any(a < 0 or b < 0 for a, b in pad_width):
        raise ValueError(f"`pad`: `pad_width` must give (before, after) >= 0 for each of the "
                         f"{nd} axes of shape {_shape(x)}, got {pad_width}.")
    return P.pad(x, pad_width=pad_width, value=value)


def concatenate(tensors, axis=0):
    """Join tensors along an existing axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("`concatenate` needs at least one tensor.")
    shapes = [_shape(t) for t in tensors]
    nd = len(shapes[0])
    ax = axis % nd if nd else 0
    if any(len(s) != nd or s[:ax] + s[ax + 1:] != shapes[0][:ax] + shapes[0][ax + 1:] for s in shapes):
        raise ValueError(f"`concatenate` along axis {axis}: shapes {shapes} must agree on every "
                         "other axis.")
    return P.concatenate(*tensors, axis=ax)


def stack(tensors, axis=0):
    """Join tensors of equal shape along a new axis."""
    tensors = list(tensors)
    if not tensors:
        raise ValueError("`stack` needs at least one tensor.")
    shapes = [_shape(t) for t in tensors]
    if len(set(shapes)) != 1:
        raise ValueError(f"`stack`: all tensors must have the same shape, got {shapes}.")
    return P.stack(*tensors, axis=axis % (len(shapes[0]) + 1))


def matmul(x, y):
    """Matrix product with NumPy's rules: batched over leading axes, 1-d operands promoted."""
    sx, sy = _shape(x), _shape(y)
    if len(sx) == 0 or len(sy) == 0:
        raise ValueError(f"`matmul`: operands must have at least one axis, got shapes {sx} and {sy}; "
                         "use `*` for scalars.")
    kx = sx[-1]
    ky = sy[-2] if len(sy) >= 2 else sy[0]
    if kx != ky:
        raise ValueError(f"`matmul`: shapes {sx} and {sy} do not align: the last axis of the "
                         f"first ({kx}) must equal the {'second-to-last' if len(sy) >= 2 else 'only'} "
                         f"axis of the second ({ky}).")
    try:
        np.broadcast_shapes(sx[:-2], sy[:-2])
    except ValueError:
        raise ValueError(f"`matmul`: batch axes of shapes {sx} and {sy} cannot be broadcast.") from None
    x = _as_t(x)
    y = _as_t(y)
    if len(sx) == 1 and len(sy) == 1:
        return sum(x * y)
    if len(sx) == 1:
        return reshape(P.matmul(reshape(x, 1, kx), y), sy[:-2] + sy[-1:])
    if len(sy) == 1:
        return reshape(P.matmul(x, reshape(y, ky, 1)), sx[:-1])
    return P.matmul(x, y)


def _as_t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


einsum = P.einsum


def astype(x, dtype):
    """Cast to ``dtype``; the gradient is cast back."""
    return P.astype(x, dtype=np.dtype(dtype))


# --------------------------------------------------------------------- Tensor operators
def _rev(f):
    return lambda self, other: f(other, self)


def _cmp(op):
    def f(self, other):
        o = other.data if isinstance(other, Tensor) else other
        return Tensor(op(self.data, o))
    return f


def _install():
    T = Tensor
    T.__add__, T.__radd__ = add, _rev(add)
    T.__sub__, T.__rsub__ = sub, _rev(sub)
    T.__mul__, T.__rmul__ = mul, _rev(mul)
    T.__truediv__, T.__rtruediv__ = div, _rev(div)
    T.__pow__, T.__rpow__ = power, _rev(power)
    T.__matmul__, T.__rmatmul__ = matmul, _rev(matmul)
    T.__neg__ = neg
    T.__pos__ = lambda self: self
    T.__abs__ = absolute
    T.__getitem__ = getitem
    T.__lt__, T.__le__ = _cmp(lambda a, b: a < b), _cmp(lambda a, b: a <= b)
    T.__gt__, T.__ge__ = _cmp(lambda a, b: a > b), _cmp(lambda a, b: a >= b)
    T.sum, T.mean, T.max, T.logsumexp = sum, mean, max, logsumexp
    T.reshape, T.transpose, T.broadcast_to, T.swapaxes = reshape, transpose, broadcast_to, swapaxes
    T.exp, T.log, T.sqrt, T.tanh, T.sigmoid, T.relu, T.softplus, T.elu = \
        exp, log, sqrt, tanh, sigmoid, relu, softplus, elu
    T.sin, T.cos, T.abs, T.square = sin, cos, absolute, square
    T.astype, T.pad = astype, pad
    T.T = property(lambda self: transpose(self))


_install()
