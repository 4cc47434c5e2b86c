"""Test helpers: the catalog of primitives with input samplers, and numerical oracles.

``CASES`` lists, for every registered primitive, a function that exercises it on
Tensors and a sampler of float64 inputs inside the primitive's smooth domain
(away from kinks like ``abs`` at 0, ties of ``max``, ``log`` of negatives). The
test suite runs :func:`nodeform.gradcheck` on each, first and second order, and
fails if a registered primitive has no case.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import numpy as np

import nodeform as nf


@dataclass(frozen=True)
class Case:
    """One catalog entry: ``fun(*tensors) -> Tensor`` exercising ``prim`` on ``sample(rng)``."""

    prim: str
    fun: Callable
    sample: Callable
    second_order: bool = True
    label: str = ""

    @property
    def id(self):
        return f"{self.prim}{'-' + self.label if self.label else ''}"


def _n(*shape):
    return lambda rng: [rng.standard_normal(shape)]


def _pos(*shape):
    return lambda rng: [rng.uniform(0.5, 2.0, shape)]


def _away(*shape):
    """Normal samples pushed away from zero (kinks of abs, relu, elu)."""
    def s(rng):
        x = rng.standard_normal(shape)
        return [x + np.sign(x) * 0.1]
    return s


def _distinct(*shape):
    """Values with no ties, so max/argmax is unique."""
    def s(rng):
        n = int(np.prod(shape))
        return [(rng.permutation(n) * 0.37 + rng.uniform(0, 0.1, n)).reshape(shape)]
    return s


def _two(sa, sb, pos_b=False, separated=False):
    def s(rng):
        a = rng.standard_normal(sa)
        b = rng.uniform(0.5, 2.0, sb) if pos_b else rng.standard_normal(sb)
        if separated:   # |a - b| >= 0.1 so maximum/minimum are smooth
            d = np.broadcast_to(a, np.broadcast_shapes(sa, sb))
            b = b + 0.0
            close = np.abs(np.broadcast_to(b, d.shape) - d) < 0.1
            if close.any():
                return s(rng)
        return [a, b]
    return s


CASES = [
    # elementwise, binary (with broadcasting)
    Case("add", lambda x, y: x + y, _two((3, 4), (4,))),
    Case("sub", lambda x, y: x - y, _two((3, 1), (1, 4))),
    Case("mul", lambda x, y: x * y, _two((2, 3, 4), (3, 1))),
    Case("div", lambda x, y: x / y, _two((3, 4), (4,), pos_b=True)),
    Case("pow", lambda x, y: x ** y, lambda rng: [rng.uniform(0.5, 2, (3, 4)), rng.normal(0, 1, (4,))]),
    Case("pow", lambda x: x ** 3.0, _n(5), label="const"),
    Case("maximum", nf.maximum, _two((3, 4), (4,), separated=True)),
    Case("minimum", nf.minimum, _two((3, 4), (3, 1), separated=True)),
    Case("where", lambda x, y: nf.where(x.data > 0, x * 2.0, y * y), _two((3, 4), (4,))),
    # elementwise, unary
    Case("neg", lambda x: -x, _n(3, 2)),
    Case("exp", nf.exp, _n(3, 2)),
    Case("log", nf.log, _pos(3, 2)),
    Case("sqrt", nf.sqrt, _pos(3, 2)),
    Case("abs", nf.abs, _away(3, 2)),
    Case("sin", nf.sin, _n(4)),
    Case("cos", nf.cos, _n(4)),
    Case("tanh", nf.tanh, _n(3, 2)),
    Case("sigmoid", nf.sigmoid, _n(3, 2)),
    Case("relu", nf.relu, _away(3, 2)),
    Case("softplus", nf.softplus, lambda rng: [rng.normal(0, 3, (3, 2))]),
    Case("elu", lambda x: nf.elu(x, alpha=0.7), _away(3, 2)),
    Case("astype", lambda x: nf.astype(x * x, np.float64), _n(3)),
    # reductions
    Case("sum", lambda x: x.sum(axis=1), _n(3, 4)),
    Case("sum", lambda x: x.sum(axis=(0, 2), keepdims=True), _n(2, 3, 2), label="keepdims"),
    Case("mean", lambda x: x.mean(axis=0), _n(3, 4)),
    Case("mean", lambda x: x.mean(), _n(3, 4), label="all"),
    Case("max", lambda x: x.max(axis=1), _distinct(3, 4)),
    Case("max", lambda x: x.max(), _distinct(3, 4), label="all"),
    Case("logsumexp", lambda x: nf.logsumexp(x, axis=-1), lambda rng: [rng.normal(0, 5, (3, 4))]),
    # shape
    Case("reshape", lambda x: x.reshape(4, 3) * x.reshape(4, 3), _n(3, 4)),
    Case("transpose", lambda x: x.transpose((2, 0, 1)) * 1.5, _n(2, 3, 4)),
    Case("broadcast_to", lambda x: nf.broadcast_to(x, (2, 3, 4)) ** 2.0, _n(3, 1)),
    Case("getitem", lambda x: x[1:, ::2] * x[1:, ::2], _n(3, 4)),
    Case("getitem", lambda x: x[np.array([0, 2, 0])] * 2.0, _n(3, 4), label="fancy"),
    Case("scatter", lambda x: nf.autodiff.vjps.scatter(x * x, index=(slice(1, 3),), shape=(4, 2)),
         _n(2, 2)),
    Case("pad", lambda x: nf.pad(x, ((1, 0), (2, 1))) ** 2.0, _n(2, 3)),
    Case("concatenate", lambda x, y: nf.concatenate([x, y * y, x], axis=1), _two((2, 3), (2, 2))),
    Case("stack", lambda x, y: nf.stack([x * y, y], axis=1), _two((2, 3), (2, 3))),
    # linear algebra
    Case("matmul", lambda x, y: x @ y, _two((2, 3, 4), (4, 5))),
    Case("matmul", lambda x, y: nf.tanh(x @ y), _two((4,), (4, 2)), label="vector"),
    Case("einsum", lambda x, y: nf.einsum("bij,jk->bik", x, y), _two((2, 3, 4), (4, 2))),
    Case("einsum", lambda x, y: nf.einsum("ij,kj->i", x, y) ** 2.0, _two((3, 4), (2, 4)), label="sumout"),
    # convolution (nodeform/nn/conv.py): x (2, 3, 5, 4), 2x3 kernel, stride (2, 1), pad (1, 0) -> 12 rows of 18
    Case("im2col", lambda x: nf.nn.im2col(x, ksize=(2, 3), stride=(2, 1), padding=(1, 0)) ** 2.0,
         _n(2, 3, 5, 4)),
    Case("col2im", lambda c: nf.nn.col2im(c * c, x_shape=(2, 3, 5, 4), ksize=(2, 3), stride=(2, 1),
                                          padding=(1, 0)), _n(12, 18)),
    # group normalization as one primitive (nodeform/nn/norm.py): 2 groups of 2 channels
    Case("group_norm", lambda x, w, b: nf.tanh(nf.nn.group_norm(x, w, b, 2)),
         lambda rng: [rng.standard_normal((2, 4, 3, 2)), rng.standard_normal(4), rng.standard_normal(4)]),
    # the RK state combination y + h sum_j w_j K_j (nodeform/ode/rk_tape.py), squared so the
    # second-order check sees a nonzero second derivative
    Case("rk_combine", lambda y, k1, k2: nf.ode.rk_tape.rk_combine(
        y, k1 * k1, k2, weights=(0.3, -1.7), h=0.25) ** 2.0,
         lambda rng: [rng.standard_normal((2, 3)), rng.standard_normal((2, 3)),
                      rng.standard_normal((2, 3))]),
    # a whole solve as one primitive whose VJP is the continuous adjoint (nodeform/adjoint);
    # a fixed RK4 grid keeps the finite differences smooth (no step-size switching)
    Case("odeint", lambda y0, W: nf.odeint(lambda t, y: nf.tanh(y @ W), y0, [0.0, 0.3, 0.7],
                                           params=[W], method="rk4", step_size=0.01),
         lambda rng: [rng.standard_normal((2, 3)), rng.standard_normal((3, 3)) * 0.5],
         second_order=False),
]


def builtin_primitive_names():
    """Names of the primitives nodeform itself registers (user primitives excluded)."""
    from nodeform.autodiff.primitive import PRIMITIVES
    return sorted(name for name, p in PRIMITIVES.items()
                  if getattr(p.forward, "__module__", "").startswith("nodeform"))


def numerical_jacobian(fun, x, eps=1e-6):
    """The Jacobian of ``fun: array -> array`` at ``x`` by central differences.

    Returns
    -------
    ndarray, shape (fun(x).size, x.size)
    """
    x = np.asarray(x, dtype=np.float64)
    cols = []
    for i in range(x.size):
        e = np.zeros(x.size)
        e[i] = eps
        e = e.reshape(x.shape)
        cols.append((np.asarray(fun(x + e)) - np.asarray(fun(x - e))).ravel() / (2 * eps))
    return np.stack(cols, axis=1)


def check(name, ok, detail=""):
    """A chapter's "check yourself": print ``CHECK <name> passed`` or raise AssertionError.

    The chapters close each section with one; ``tests/test_chapters.py`` reads the
    ``CHECK ... passed`` lines of a quick run, so a check that stops passing (or stops
    running) fails the test suite.

    Parameters
    ----------
    name : str
        Short id, e.g. ``"ch02.adaptive_loop_equals_solve"``.
    ok : bool
        The condition checked.
    detail : str
        What was compared and with which tolerance; printed either way.
    """
    if not bool(ok):
        raise AssertionError(f"CHECK {name} FAILED: {detail}")
    print(f"CHECK {name} passed" + (f" ({detail})" if detail else ""))
