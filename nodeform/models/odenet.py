"""The four models of Table 1 (Chen et al. 2018, Sec. 3): ODE-Net, RK-Net, ResNet, MLP.

The conv models share the downsampling stem and the head of torchdiffeq's
``odenet_mnist.py`` (``conv`` downsampling, the default there since 2019; see
``paper.md`` §2.2) and differ only in the middle::

    stem   (N, 1, 28, 28) -> conv3x3 1->64 -> GN ReLU -> conv4x4/2 -> GN ReLU -> conv4x4/2 -> (N, 64, 6, 6)
    middle ODE-Net / RK-Net: one ODEBlock;  ResNet: six pre-activation ResBlocks
    head   GN ReLU -> global average pool -> Linear 64->10                   -> (N, 10) logits

The ODE block integrates ``dz/dt = f(z, t)`` over t in [0, 1] with dopri5 at
rtol = atol = 1e-3, where ``f`` is GN -> ReLU -> ConcatConv -> GN -> ReLU ->
ConcatConv -> GN (no identity term: the ODE supplies it). ODE-Net gets its
gradients by the continuous adjoint (memory flat in the number of steps), RK-Net
by backprop through the solver's operations (memory grows with them).

Parameter counts against the paper's Table 1 (:data:`PAPER_PARAMS`):

* ODE-Net and RK-Net: 208,266 here, 0.22 M in the paper. No variant of the public
  code gives 0.22 M exactly (``paper.md`` §2.2: 0.207-0.233 M over the stem and
  time-concat choices); we keep the anchor's conv stem with time concatenation.
* ResNet: 576,778 here, 0.60 M in the paper: the paper's ResNet used the
  residual-block stem (601,482 = 0.60 M); we keep one stem for all rows so they
  differ only in the middle, as the anchor does.
* MLP 784-300-10: 238,510 = 0.24 M, as the paper (its row is LeCun et al. 1998).

Taught in chapters/ch04_odenet_mnist.py.
"""
from __future__ import annotations

import numpy as np

from nodeform.adjoint.odeint import ADJOINTS, SolveStats, odeint
from nodeform.backend import DEFAULT_DTYPE
from nodeform.nn import init
from nodeform.nn.conv import ConcatConv2d, Conv2d
from nodeform.nn.layers import Flatten, GlobalAvgPool2d, Linear, ReLU, as_tensor
from nodeform.nn.module import Module, Sequential
from nodeform.nn.norm import GroupNorm

#: Table 1 of the paper: parameters (millions) and test error (%), for printing beside ours.
PAPER_PARAMS = {"odenet": 0.22, "rknet": 0.22, "resnet": 0.60, "mlp": 0.24}
PAPER_TEST_ERROR = {"odenet": 0.42, "rknet": 0.47, "resnet": 0.41, "mlp": 1.60}
#: The PyTorch + torchdiffeq anchor on the embedded 4,000/1,000 split, 15 epochs (PERF-NOTES.md).
ANCHOR = {"odenet": dict(params=208_266, test_error=2.9, s_per_epoch=15.6, mem_mib=245),
          "rknet": dict(params=208_266, test_error=2.1, s_per_epoch=8.6, mem_mib=627),
          "resnet": dict(params=577_546, test_error=2.6, s_per_epoch=2.8, mem_mib=256),
          "mlp": dict(params=238_510, test_error=6.5, s_per_epoch=0.04, mem_mib=16)}
#: The paper's classification tolerance (rtol = atol), torchdiffeq's ``--tol`` default.
ODE_TOL = 1e-3
#: Channels of the feature maps the middle works on.
WIDTH = 64
MODELS = ("odenet", "rknet", "resnet", "mlp")


def norm(channels, dtype):
    """GroupNorm with min(32, C) groups, the anchor's normalization."""
    return GroupNorm(min(32, channels), channels, dtype=dtype)


def _rngs(rng, n):
    """``n`` independent generators from one seed, one per layer, so layer order fixes the init."""
    return [np.random.default_rng(s) for s in init.as_rng(rng).integers(0, 2**63 - 1, n)]


# ======================================================================== shared parts
def downsampling(width=WIDTH, rng=None, dtype=DEFAULT_DTYPE):
    """The conv stem: (N, 1, H, W) -> (N, width, H', W'); 28x28 -> 6x6, 8x8 -> 1x1."""
    r = _rngs(rng, 3)
    return Sequential(Conv2d(1, width, 3, 1, rng=r[0], dtype=dtype),
                      norm(width, dtype), ReLU(),
                      Conv2d(width, width, 4, 2, 1, rng=r[1], dtype=dtype),
                      norm(width, dtype), ReLU(),
                      Conv2d(width, width, 4, 2, 1, rng=r[2], dtype=dtype))


def head(width=WIDTH, classes=10, rng=None, dtype=DEFAULT_DTYPE):
    """GN -> ReLU -> global average pool -> Linear: (N, width, H, W) -> (N, classes)."""
    return Sequential(norm(width, dtype), ReLU(), GlobalAvgPool2d(),
                      Linear(width, classes, rng=rng, dtype=dtype))


# ======================================================================== the ODE block
class ODEFunc(Module):
    """The vector field ``f(t, z)``: GN ReLU ConcatConv GN ReLU ConcatConv GN.

    Shapes: ``t`` scalar, ``z`` (N, width, H, W) -> (N, width, H, W).
    """

    def __init__(self, width=WIDTH, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        r = _rngs(rng, 2)
        self.norm1 = norm(width, dtype)
        self.conv1 = ConcatConv2d(width, width, 3, 1, 1, rng=r[0], dtype=dtype)
        self.norm2 = norm(width, dtype)
        self.conv2 = ConcatConv2d(width, width, 3, 1, 1, rng=r[1], dtype=dtype)
        self.norm3 = norm(width, dtype)

    def forward(self, t, z):
        out = self.norm1(z).relu()
        out = self.conv1(t, out)
        out = self.norm2(out).relu()
        out = self.conv2(t, out)
        return self.norm3(out)


class ODEBlock(Module):
    """``z(1)`` of ``dz/dt = func(t, z)``, ``z(0) = x``: the ODE-Net's one "layer".

    Parameters
    ----------
    func : Module
        ``func(t, z)`` with ``z`` shaped like the input.
    rtol, atol : float
    method : str
        A tableau name of :func:`nodeform.solve` (dopri5 by default).
    adjoint : {"continuous", "backprop"}
        ``"continuous"``: ODE-Net; ``"backprop"``: RK-Net.
    options : dict, optional
        More solver options for :func:`nodeform.odeint` (``step_size`` for a fixed grid,
        ``max_steps``, ...).

    Attributes
    ----------
    stats : SolveStats
        The counts of the last call: ``nfe_forward`` after the forward pass,
        ``nfe_backward`` once ``backward()`` has run (0 for backprop, whose
        backward pass replays the tape and calls ``func`` no more).

    Shapes: (N, C, H, W) -> (N, C, H, W).
    """

    def __init__(self, func, rtol=ODE_TOL, atol=ODE_TOL, method="dopri5", adjoint="continuous",
                 options=None):
        super().__init__()
        if adjoint not in ADJOINTS:
            raise ValueError(f"`adjoint` must be one of {ADJOINTS}, got {adjoint!r}: "
                             "'continuous' is the ODE-Net, 'backprop' the RK-Net.")
        self.func = func
        self.rtol, self.atol, self.method, self.adjoint = float(rtol), float(atol), method, adjoint
        self.options = dict(options or {})
        object.__setattr__(self, "stats", SolveStats())

    def forward(self, x):
        stats = SolveStats()
        object.__setattr__(self, "stats", stats)
        zs = odeint(self.func, as_tensor(x), [0.0, 1.0], method=self.method, rtol=self.rtol,
                    atol=self.atol, adjoint=self.adjoint, stats=stats, **self.options)
        return zs[1]                                                    # (N, C, H, W)

    def extra_repr(self):
        return f"{self.method}, rtol={self.rtol:g}, atol={self.atol:g}, adjoint={self.adjoint!r}"


class ResBlock(Module):
    """Pre-activation residual block (He et al. 2016b): ``x + conv(relu(gn(conv(relu(gn(x))))))``."""

    def __init__(self, width=WIDTH, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        r = _rngs(rng, 2)
        self.norm1 = norm(width, dtype)
        self.conv1 = Conv2d(width, width, 3, 1, 1, bias=False, rng=r[0], dtype=dtype)
        self.norm2 = norm(width, dtype)
        self.conv2 = Conv2d(width, width, 3, 1, 1, bias=False, rng=r[1], dtype=dtype)

    def forward(self, x):
        out = self.conv1(self.norm1(x).relu())
        out = self.conv2(self.norm2(out).relu())
        return out + x


# ======================================================================== the four models
class _ConvNet(Module):
    """Stem, middle, head; ``self.middle`` set by the subclass."""

    def _build(self, middle, width, rng, dtype):
        r = _rngs(rng, 3)
        self.downsampling = downsampling(width, r[0], dtype)
        self.middle = middle(r[1])
        self.head = head(width, 10, r[2], dtype)

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim != 4 or x.shape[1] != 1:
            raise ValueError(f"`{type(self).__name__}`: input has shape {tuple(x.shape)}; expected "
                             "(N, 1, H, W) grayscale images, e.g. (128, 1, 28, 28).")
        return self.head(self.middle(self.downsampling(x)))


class ODENet(_ConvNet):
    """Stem, one ODE block (continuous adjoint), head. Shapes: (N, 1, 28, 28) -> (N, 10)."""

    ADJOINT = "continuous"

    def __init__(self, width=WIDTH, rtol=ODE_TOL, atol=ODE_TOL, method="dopri5", options=None,
                 rng=0, dtype=DEFAULT_DTYPE):
        super().__init__()
        self._build(lambda r: ODEBlock(ODEFunc(width, r, dtype), rtol, atol, method, self.ADJOINT,
                                       options), width, rng, dtype)

    @property
    def stats(self):
        """The ODE block's :class:`SolveStats` of the last call."""
        return self.middle.stats


class RKNet(ODENet):
    """ODE-Net with gradients by backprop through dopri5's operations (the paper's RK-Net)."""

    ADJOINT = "backprop"


class ResNet(_ConvNet):
    """Stem, ``blocks`` pre-activation residual blocks, head. Shapes: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self, width=WIDTH, blocks=6, rng=0, dtype=DEFAULT_DTYPE):
        super().__init__()
        self._build(lambda r: Sequential(*[ResBlock(width, q, dtype) for q in _rngs(r, blocks)]),
                    width, rng, dtype)


class MLP(Module):
    """784-300-10 with ReLU (the paper's 1-layer MLP row). Shapes: (N, 1, 28, 28) -> (N, 10)."""

    def __init__(self, hidden=300, in_features=784, rng=0, dtype=DEFAULT_DTYPE):
        super().__init__()
        r = _rngs(rng, 2)
        self.in_features = int(in_features)
        self.net = Sequential(Flatten(), Linear(in_features, hidden, rng=r[0], dtype=dtype), ReLU(),
                              Linear(hidden, 10, rng=r[1], dtype=dtype))

    def forward(self, x):
        x = as_tensor(x)
        if x.ndim < 2 or int(np.prod(x.shape[1:])) != self.in_features:
            raise ValueError(f"`MLP`: input has shape {tuple(x.shape)}; expected (N, ...) with "
                             f"{self.in_features} values per example, e.g. (128, 1, 28, 28).")
        return self.net(x)


_BUILDERS = {"odenet": ODENet, "rknet": RKNet, "resnet": ResNet, "mlp": MLP}


def build_model(name, **options):
    """One of Table 1's models by name.

    Parameters
    ----------
    name : {"odenet", "rknet", "resnet", "mlp"}
    **options
        Passed to the class: ``rng`` (seed), ``dtype``, ``width`` (conv models),
        ``rtol``/``atol``/``method``/``options`` (ODE models), ``blocks`` (ResNet), ``hidden`` (MLP).

    Returns
    -------
    Module mapping (N, 1, 28, 28) images to (N, 10) logits.
    """
    key = str(name).lower()
    if key not in _BUILDERS:
        raise ValueError(f"unknown model `{name}`; choose one of {', '.join(MODELS)}.")
    try:
        return _BUILDERS[key](**options)
    except TypeError as exc:
        raise TypeError(f"`build_model({key!r}, ...)`: {exc}. See `help({_BUILDERS[key].__name__})` "
                        "for the options this model takes.") from exc
