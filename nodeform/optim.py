"""Optimizers (SGD with momentum, RMSprop, Adam) and learning-rate schedules.

An optimizer holds a list of parameters and, per parameter, its "slots" (the
momentum buffer, running averages). ``step()`` reads each ``p.grad`` and updates
``p.data`` in place; parameters with no gradient are left alone. The update
rules follow PyTorch's, so the paper's hyperparameters mean the same thing.

The learning rate is a number or a schedule: any callable ``step -> lr``, e.g.
:class:`StepLR` or :class:`PiecewiseConstant`. The optimizer counts its own
steps, so its whole state is ``step_count`` plus the slots: that is what
:meth:`Optimizer.state_dict` returns, as plain arrays ready for ``.npz``.
"""
from __future__ import annotations

import bisect

import numpy as np

from nodeform.autodiff.tensor import Tensor
from nodeform.backend import get_xp, to_numpy


# ======================================================================== schedules
class StepLR:
    """``lr * gamma ** (step // step_size)``: decay by ``gamma`` every ``step_size`` steps."""

    def __init__(self, lr, step_size, gamma=0.1):
        if step_size < 1:
            raise ValueError(f"`step_size` must be >= 1, got {step_size}.")
        self.lr, self.step_size, self.gamma = float(lr), int(step_size), float(gamma)

    def __call__(self, step):
        return self.lr * self.gamma ** (step // self.step_size)

    def __repr__(self):
        return f"StepLR(lr={self.lr}, step_size={self.step_size}, gamma={self.gamma})"


class PiecewiseConstant:
    """``values[k]`` for ``boundaries[k-1] <= step < boundaries[k]``.

    Parameters
    ----------
    boundaries : increasing sequence of int, length K
    values : sequence of float, length K + 1

    Examples
    --------
    The paper's MNIST schedule, lr 0.1 divided by 10 after epochs 9 and 13 (``E`` steps per epoch):
    ``PiecewiseConstant([9 * E, 13 * E], [0.1, 0.01, 0.001])``.
    """

    def __init__(self, boundaries, values):
        self.boundaries, self.values = [int(b) for b in boundaries], [float(v) for v in values]
        if len(self.values) != len(self.boundaries) + 1:
            raise ValueError(f"`values` needs one more entry than `boundaries` (got {len(self.values)} "
                             f"and {len(self.boundaries)}): one value per interval.")
        if any(b2 <= b1 for b1, b2 in zip(self.boundaries, self.boundaries[1:])):
            raise ValueError(f"`boundaries` must increase strictly, got {self.boundaries}.")

    def __call__(self, step):
        return self.values[bisect.bisect_right(self.boundaries, step)]

    def __repr__(self):
        return f"PiecewiseConstant(boundaries={self.boundaries}, values={self.values})"


def multistep(lr, milestones, gamma=0.1):
    """``lr`` multiplied by ``gamma`` at each step in ``milestones`` (a :class:`PiecewiseConstant`)."""
    return PiecewiseConstant(milestones, [lr * gamma ** k for k in range(len(milestones) + 1)])


# ======================================================================== base class
class Optimizer:
    """Base class: parameter list, learning rate (number or schedule), per-parameter slots.

    Subclasses name their slots in ``SLOTS`` and implement ``_update(i, p, g, lr)``,
    which changes ``p.data`` in place using ``self.slots[name][i]``.
    """

    SLOTS = ()

    def __init__(self, params, lr):
        self.params = list(params)
        if not self.params:
            raise ValueError("`params` is empty; pass `model.parameters()`.")
        for k, p in enumerate(self.params):
            if not (isinstance(p, Tensor) and p.requires_grad):
                raise TypeError(f"`params[{k}]` is a {type(p).__name__} that does not require a "
                                "gradient; pass `model.parameters()`.")
        if not callable(lr) and not float(lr) >= 0:
            raise ValueError(f"`lr` must be a number >= 0 or a schedule `step -> lr`, got {lr!r}.")
        self.lr = lr
        self.step_count = 0
        self.slots = {name: [None] * len(self.params) for name in self.SLOTS}

    def current_lr(self):
        """The learning rate the next ``step()`` will use."""
        return float(self.lr(self.step_count)) if callable(self.lr) else float(self.lr)

    def zero_grad(self):
        """Forget every parameter's gradient."""
        for p in self.params:
            p.grad = None

    def step(self):
        """Update every parameter that has a gradient, then count the step."""
        lr = self.current_lr()
        for i, p in enumerate(self.params):
            if p.grad is None:
                continue
            g = p.grad.data if isinstance(p.grad, Tensor) else p.grad
            if g.shape != p.shape:
                raise ValueError(f"gradient of parameter {i} has shape {g.shape}, parameter {p.shape}.")
            self._update(i, p, g.astype(p.dtype, copy=False), lr)
        self.step_count += 1

    def _slot(self, name, i, p):
        """Slot ``name`` of parameter ``i``, zeros on first use."""
        s = self.slots[name][i]
        if s is None:
            s = self.slots[name][i] = get_xp(p.data).zeros_like(p.data)
        return s

    def _update(self, i, p, g, lr):
        raise NotImplementedError

    # ------------------------------------------------------------ saving
    def state_dict(self):
        """``{"step_count": array, "<slot>.<i>": array}``: everything needed to continue exactly."""
        out = {"step_count": np.asarray(self.step_count, dtype=np.int64)}
        for name, arrs in self.slots.items():
            for i, a in enumerate(arrs):
                if a is not None:
                    out[f"{name}.{i}"] = to_numpy(a).copy()
        return out

    def load_state_dict(self, state):
        """Restore what :meth:`state_dict` returned; shapes must match the parameters."""
        if "step_count" not in state:
            raise KeyError("optimizer state has no `step_count`; pass what `state_dict()` returned.")
        for key in state:
            if key == "step_count":
                continue
            name, _, idx = key.rpartition(".")
            if name not in self.slots or not idx.isdigit() or int(idx) >= len(self.params):
                raise KeyError(f"optimizer state key `{key}` does not fit {type(self).__name__} "
                               f"with {len(self.params)} parameters and slots {list(self.SLOTS)}.")
            p = self.params[int(idx)]
            if tuple(np.shape(state[key])) != tuple(p.shape):
                raise ValueError(f"optimizer state `{key}` has shape {np.shape(state[key])} but "
                                 f"parameter {idx} has shape {p.shape}.")
        self.step_count = int(state["step_count"])
        self.slots = {name: [None] * len(self.params) for name in self.SLOTS}
        for key, a in state.items():
            if key != "step_count":
                name, _, idx = key.rpartition(".")
                p = self.params[int(idx)]
                self.slots[name][int(idx)] = get_xp(p.data).asarray(np.asarray(a), dtype=p.dtype).copy()
        return self


# ======================================================================== the optimizers
class SGD(Optimizer):
    """Stochastic gradient descent with optional momentum, Nesterov and L2 weight decay.

    ``g <- g + wd p;  b <- mu b + g;  p <- p - lr (g + mu b if nesterov else b)``
    (PyTorch's form; with ``momentum=0`` it is plain ``p <- p - lr g``).
    """

    SLOTS = ("momentum",)

    def __init__(self, params, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        super().__init__(params, lr)
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"`momentum` must be in [0, 1), got {momentum}.")
        if nesterov and momentum == 0:
            raise ValueError("`nesterov=True` needs `momentum` > 0.")
        self.momentum, self.nesterov, self.weight_decay = float(momentum), bool(nesterov), float(weight_decay)

    def _update(self, i, p, g, lr):
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        if self.momentum:
            b = self._slot("momentum", i, p)
            b *= self.momentum
            b += g
            g = g + self.momentum * b if self.nesterov else b
        p.data -= lr * g


class RMSprop(Optimizer):
    """Divide the step by a running root-mean-square of the gradient.

    ``s <- alpha s + (1 - alpha) g^2;  p <- p - lr g / (sqrt(s) + eps)``.
    """

    SLOTS = ("square_avg",)

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        self.alpha, self.eps, self.weight_decay = float(alpha), float(eps), float(weight_decay)

    def _update(self, i, p, g, lr):
        xp = get_xp(p.data)
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        s = self._slot("square_avg", i, p)
        s *= self.alpha
        s += (1.0 - self.alpha) * g * g
        p.data -= lr * g / (xp.sqrt(s) + self.eps)


class Adam(Optimizer):
    """Adam (Kingma & Ba, 2015): bias-corrected running means of ``g`` and ``g^2``.

    ``m <- b1 m + (1-b1) g;  v <- b2 v + (1-b2) g^2;
    p <- p - lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``, with ``t`` the step number.
    """

    SLOTS = ("exp_avg", "exp_avg_sq")

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        super().__init__(params, lr)
        b1, b2 = betas
        if not (0 <= b1 < 1 and 0 <= b2 < 1):
            raise ValueError(f"`betas` must both lie in [0, 1), got {betas}.")
        self.betas, self.eps, self.weight_decay = (float(b1), float(b2)), float(eps), float(weight_decay)

    def _update(self, i, p, g, lr):
        xp = get_xp(p.data)
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p.data
        m, v = self._slot("exp_avg", i, p), self._slot("exp_avg_sq", i, p)
        m *= b1
        m += (1.0 - b1) * g
        v *= b2
        v += (1.0 - b2) * g * g
        t = self.step_count + 1
        p.data -= (lr / (1.0 - b1 ** t)) * m / (xp.sqrt(v / (1.0 - b2 ** t)) + self.eps)
