"""Losses: cross-entropy from logits, mean squared error, Gaussian NLL, Gaussian KL.

Each takes Tensors (or arrays) and returns a Tensor; ``reduction`` is
``"mean"`` (default), ``"sum"`` or ``"none"`` (one value per example / entry).
All are built from primitives, so they need no VJP of their own and their
gradients of gradients work.
"""
from __future__ import annotations

import math

from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor
from nodeform.backend import get_xp, host_bool, host_float

#: log(2 pi), the constant of the Gaussian log-density.
LOG_2PI = math.log(2.0 * math.pi)
_REDUCTIONS = ("mean", "sum", "none")


def _t(x):
    return x if isinstance(x, Tensor) else Tensor(x)


def _reduce(v, reduction, name):
    if reduction == "mean":
        return v.mean()
    if reduction == "sum":
        return v.sum()
    if reduction == "none":
        return v
    raise ValueError(f"`{name}`: `reduction` must be one of {_REDUCTIONS}, got {reduction!r}.")


def cross_entropy(logits, labels, reduction="mean"):
    """Softmax cross-entropy from unnormalized logits, stable for any logit size.

    Computed as ``-log_softmax(logits)[i, labels[i]]``; ``log_softmax`` subtracts
    the row maximum inside ``logsumexp``, so large logits do not overflow.

    Parameters
    ----------
    logits : Tensor, shape (N, K)
    labels : int array, shape (N,)
        Class indices in ``[0, K)``.
    reduction : {"mean", "sum", "none"}

    Returns
    -------
    Tensor, shape () or (N,)
    """
    logits = _t(logits)
    y = labels.data if isinstance(labels, Tensor) else labels
    xp = get_xp(logits.data)
    y = xp.asarray(y)
    if logits.ndim != 2 or y.shape != (logits.shape[0],):
        raise ValueError(f"`cross_entropy`: logits have shape {tuple(logits.shape)} and labels "
                         f"{tuple(y.shape)}; expected (N, K) and (N,).")
    if y.dtype.kind not in "iu":
        raise TypeError(f"`cross_entropy`: `labels` must be integer class indices, got dtype {y.dtype}.")
    k = logits.shape[1]
    if y.size and host_bool(((y < 0) | (y >= k)).any()):   # one host sync (y may live on a GPU)
        raise ValueError(f"`cross_entropy`: labels must lie in [0, {k}), got values from "
                         f"{int(y.min())} to {int(y.max())}.")
    # A one-hot mask picks the true class: a multiply, cheaper to differentiate than a gather.
    onehot = (y[:, None] == xp.arange(k)[None, :]).astype(logits.dtype)
    nll = -(F.log_softmax(logits, axis=1) * onehot).sum(axis=1)
    return _reduce(nll, reduction, "cross_entropy")


def accuracy(logits, labels):
    """Fraction of rows whose largest logit is the label (a float, not differentiable)."""
    z = logits.data if isinstance(logits, Tensor) else logits
    y = labels.data if isinstance(labels, Tensor) else labels
    return host_float((get_xp(z).argmax(z, axis=1) == y).mean())


def mse_loss(pred, target, reduction="mean"):
    """Mean squared error ``(pred - target)**2``, averaged over every entry by default."""
    pred, target = _t(pred), _t(target)
    if tuple(pred.shape) != tuple(target.shape):
        raise ValueError(f"`mse_loss`: `pred` has shape {tuple(pred.shape)} but `target` has "
                         f"{tuple(target.shape)}; they must match.")
    d = pred - target
    return _reduce(d * d, reduction, "mse_loss")


def gaussian_nll(x, mean, logvar, reduction="mean"):
    """Negative log-density of ``x`` under ``N(mean, exp(logvar))``, per entry.

    ``0.5 * (log(2 pi) + logvar + (x - mean)**2 / exp(logvar))``. ``logvar`` may be a
    Tensor (learned noise) or a number, and broadcasts against ``x``.

    Returns
    -------
    Tensor
        Reduced over every entry with ``reduction`` (``"none"`` keeps x's shape).
    """
    x, mean = _t(x), _t(mean)
    logvar = logvar if isinstance(logvar, Tensor) else Tensor(get_xp(x.data).asarray(logvar, dtype=x.dtype))
    d = x - mean
    v = 0.5 * (LOG_2PI + logvar + d * d * F.exp(-logvar))
    return _reduce(v, reduction, "gaussian_nll")


def kl_diag_gaussians(mu1, logvar1, mu2=0.0, logvar2=0.0, reduction="mean"):
    """``KL(N(mu1, diag exp(logvar1)) || N(mu2, diag exp(logvar2)))``, summed over the last axis.

    Per entry: ``0.5 * (logvar2 - logvar1 + (exp(logvar1) + (mu1 - mu2)**2) / exp(logvar2) - 1)``;
    the default second distribution is the standard normal (the VAE prior).

    Parameters
    ----------
    mu1, logvar1 : Tensor, shape (N, D)
    mu2, logvar2 : Tensor or float, broadcastable to (N, D)

    Returns
    -------
    Tensor, shape () or (N,)
    """
    mu1, logvar1 = _t(mu1), _t(logvar1)
    mu2 = mu2 if isinstance(mu2, Tensor) else Tensor(get_xp(mu1.data).asarray(mu2, dtype=mu1.dtype))
    logvar2 = logvar2 if isinstance(logvar2, Tensor) else Tensor(get_xp(mu1.data).asarray(logvar2, dtype=mu1.dtype))
    if tuple(mu1.shape) != tuple(logvar1.shape):
        raise ValueError(f"`kl_diag_gaussians`: `mu1` {tuple(mu1.shape)} and `logvar1` "
                         f"{tuple(logvar1.shape)} must have the same shape.")
    d = mu1 - mu2
    per = 0.5 * (logvar2 - logvar1 + (F.exp(logvar1) + d * d) * F.exp(-logvar2) - 1.0)
    return _reduce(per.sum(axis=-1), reduction, "kl_diag_gaussians")
