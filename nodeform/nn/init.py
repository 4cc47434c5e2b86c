"""Weight initializers, each drawing from a NumPy ``Generator`` you can seed.

Every layer takes ``rng=``: a ``np.random.Generator``, an int seed, or ``None``
for this module's default generator. The default generator is seeded at import
(:data:`DEFAULT_SEED`), so a script that builds the same layers in the same order
gets the same weights every run; :func:`manual_seed` restarts it.

The variance rules (for ``fan_in`` inputs per output unit):

* Glorot/Xavier uniform [1]_: ``U(-b, b)``, ``b = gain * sqrt(6 / (fan_in + fan_out))``.
* Kaiming/He uniform [2]_: ``U(-b, b)``, ``b = gain * sqrt(3 / fan_in)``; ``gain = sqrt(2)``
  keeps the variance of ReLU activations constant through depth.
* The layers' default is PyTorch's: Kaiming uniform with ``gain = 1/sqrt(3)``, that
  is ``b = 1 / sqrt(fan_in)``, for weights and biases alike, so results are
  comparable with the paper's PyTorch code.

References
----------
.. [1] X. Glorot and Y. Bengio, "Understanding the difficulty of training deep
   feedforward neural networks", AISTATS 2010.
.. [2] K. He et al., "Delving deep into rectifiers", ICCV 2015.
"""
from __future__ import annotations

import math

import numpy as np

from nodeform.backend import DEFAULT_DTYPE

#: Seed of the default generator at import, so unseeded scripts are still reproducible.
DEFAULT_SEED = 0
#: PyTorch's default gain for Linear/Conv weights (``kaiming_uniform_(a=sqrt(5))``).
TORCH_DEFAULT_GAIN = 1.0 / math.sqrt(3.0)

_DEFAULT = [np.random.default_rng(DEFAULT_SEED)]


def manual_seed(seed):
    """Restart the default generator used by layers built with ``rng=None``."""
    _DEFAULT[0] = np.random.default_rng(seed)


def as_rng(rng):
    """``rng`` as a Generator: a Generator is used as is, an int seeds a new one, ``None`` is the default."""
    if rng is None:
        return _DEFAULT[0]
    if isinstance(rng, np.random.Generator):
        return rng
    if isinstance(rng, (int, np.integer)):
        return np.random.default_rng(int(rng))
    raise TypeError(f"`rng` must be a numpy Generator, an int seed or None, got {type(rng).__name__}; "
                    "make one with `np.random.default_rng(seed)`.")


def fans(shape):
    """``(fan_in, fan_out)`` of a weight: ``(out, in)`` for Linear, ``(out, in, kh, kw)`` for Conv2d."""
    if len(shape) < 2:
        raise ValueError(f"`shape` {shape} has no fan-in: a weight needs at least 2 axes.")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def uniform(shape, bound, rng=None, dtype=DEFAULT_DTYPE):
    """Samples of ``U(-bound, bound)`` with the given shape."""
    return as_rng(rng).uniform(-bound, bound, size=shape).astype(dtype)


def kaiming_uniform(shape, rng=None, gain=math.sqrt(2.0), fan_in=None, dtype=DEFAULT_DTYPE):
    """He uniform: ``U(-b, b)`` with ``b = gain * sqrt(3 / fan_in)``."""
    fan_in = fans(shape)[0] if fan_in is None else fan_in
    return uniform(shape, gain * math.sqrt(3.0 / fan_in), rng, dtype)


def glorot_uniform(shape, rng=None, gain=1.0, dtype=DEFAULT_DTYPE):
    """Glorot/Xavier uniform: ``U(-b, b)`` with ``b = gain * sqrt(6 / (fan_in + fan_out))``."""
    fi, fo = fans(shape)
    return uniform(shape, gain * math.sqrt(6.0 / (fi + fo)), rng, dtype)


def torch_default(weight_shape, rng=None, dtype=DEFAULT_DTYPE, bias=True):
    """PyTorch's default ``(weight, bias)`` for Linear and Conv2d: both ``U(-1/sqrt(fan_in), 1/sqrt(fan_in))``."""
    rng = as_rng(rng)
    fan_in = fans(weight_shape)[0]
    w = kaiming_uniform(weight_shape, rng, gain=TORCH_DEFAULT_GAIN, dtype=dtype)
    b = uniform((weight_shape[0],), 1.0 / math.sqrt(fan_in), rng, dtype) if bias else None
    return w, b
