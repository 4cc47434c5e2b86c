"""One explicit Runge–Kutta step and its dense output, in reference (``xp``) code.

The Tensor contract: the state ``y`` and the stages ``K_i`` are only ever combined
with ``+``, ``*`` by Python floats, and calls of ``f(t, y)``, with the array or
Tensor on the left of each operator. So the same code runs on NumPy arrays, CuPy
arrays and nodeform Tensors (backprop through the solver). Stages live in a Python
list, never in a preallocated array. Sums are accumulated left to right over the
nonzero weights, in the same order as the Numba twin (:mod:`nodeform.ode._numba_rk`),
so both engines give the same numbers up to the norm's round-off.

Every state the step builds, ``y + h sum_j a_ij K_j``, goes through :func:`combine`.
On arrays it is :func:`combine_arrays`; on Tensors it is one primitive of the tape
(:mod:`nodeform.ode.rk_tape`) with the same forward code, so backprop through the
solver records one node per stage instead of two per term, and keeps no partial
sums alive. The error estimate is only read by the step-size controller, never
differentiated, so it is computed on the raw arrays (:func:`error_estimate`).

Taught in chapters/ch02_ode_solvers.py.
"""
from __future__ import annotations

from nodeform.backend import get_xp, raw

__all__ = ["weighted_sum", "combine", "combine_arrays", "error_estimate", "rk_stages", "rk_step",
           "dense_terms", "dense_eval"]


def weighted_sum(K, terms):
    """``sum_j w_j K_j`` over ``terms = ((j, w_j), ...)``, left to right; None if empty."""
    acc = None
    for j, w in terms:
        term = K[j] * w
        acc = term if acc is None else acc + term
    return acc


def combine_arrays(y, *ks, weights, h):
    """``y + h sum_j w_j k_j`` on plain arrays, with one output buffer and one scratch buffer.

    The arithmetic is exactly that of ``y + weighted_sum(...) * h`` (the products
    ``k_j * w_j`` summed left to right, times ``h``, plus ``y``), so the values are the
    same to the bit; only the temporaries are fewer. The result has the memory layout
    of ``k_1`` (a channels-last stage stays channels-last).

    Parameters
    ----------
    y : ndarray, any shape
    *ks : ndarray, each shaped like ``y`` (at least one)
    weights : tuple of float, one per ``k``
    h : float

    Returns
    -------
    ndarray, shape of ``y``
    """
    xp = get_xp(ks[0])
    acc = ks[0] * weights[0]
    if len(ks) > 1:
        tmp = xp.empty_like(acc)
        for k, w in zip(ks[1:], weights[1:]):
            xp.multiply(k, w, out=tmp)
            acc += tmp
    acc *= h
    acc += y
    return acc


def combine(y, K, terms, h):
    """``y + h sum_j w_j K_j`` over ``terms = ((j, w_j), ...)``; ``y`` itself if ``terms`` is empty.

    Arrays go to :func:`combine_arrays`; nodeform Tensors to the ``rk_combine``
    primitive, whose VJP is hand-written (:mod:`nodeform.ode.rk_tape`); any other
    Tensor-like type gets the operators ``+`` and ``*`` of the engine's contract.

    Parameters
    ----------
    y : array or Tensor, any shape
    K : list of arrays or Tensors shaped like ``y``
    terms : tuple of (int, float)
    h : float
    """
    if not terms:
        return y
    ks = [K[j] for j, _ in terms]
    weights = tuple(float(w) for _, w in terms)
    if not (hasattr(y, "_is_tensor") or any(hasattr(k, "_is_tensor") for k in ks)):
        return combine_arrays(y, *ks, weights=weights, h=h)
    from nodeform.ode.rk_tape import Tensor, rk_combine
    if isinstance(y, Tensor) and all(isinstance(k, Tensor) for k in ks):
        return rk_combine(y, *ks, weights=weights, h=float(h))
    return y + weighted_sum(K, terms) * h


def error_estimate(K, tab, h):
    """The local error estimate ``h sum_i e_i K_i`` as a plain array (Tensors are read, not taped).

    Only the step-size controller uses it, so backprop through the solver need not
    record it. None for a method without an embedded pair.
    """
    if tab.e_terms is None:
        return None
    return weighted_sum([raw(k) for k in K], tab.e_terms) * h


def rk_stages(f, t, y, f0, h, tab):
    """All stages of one step.

    Parameters
    ----------
    f : callable ``f(t, y)``
    t, h : float
        Time and signed step (negative when integrating backwards).
    y : array or Tensor, any shape
    f0 : array or Tensor
        ``f(t, y)``, the first stage (known from the previous step or FSAL).
    tab : ButcherTableau

    Returns
    -------
    K : list of s arrays/Tensors, each shaped like ``y``
    y_last : array/Tensor
        The state the last stage was evaluated at; for an FSAL method this *is*
        ``y_new`` (same operations as :func:`rk_step` would do).
    """
    K = [f0]
    y_stage = y
    for i in range(1, tab.n_stages):
        y_stage = combine(y, K, tab.A_terms[i], h)
        K.append(f(t + tab.c_list[i] * h, y_stage))
    return K, y_stage


def rk_step(f, t, y, f0, h, tab):
    """One step of the method ``tab`` from ``(t, y)`` with step ``h``.

    Parameters
    ----------
    f, t, y, f0, h, tab
        As in :func:`rk_stages`.

    Returns
    -------
    y_new : array/Tensor, shape of ``y``
        The propagated solution (order ``tab.order``).
    K : list of s arrays/Tensors
        The stages; with FSAL, ``K[-1] = f(t + h, y_new)``.
    err : array or None
        The local error estimate ``h sum_i e_i K_i`` (None without an embedded pair), a
        plain array even on Tensors (:func:`error_estimate`).
    """
    K, y_last = rk_stages(f, t, y, f0, h, tab)
    y_new = y_last if tab.fsal else combine(y, K, tab.b_terms, h)
    return y_new, K, error_estimate(K, tab, h)


def dense_terms(tab, theta):
    """``((i, w_i), ...)``, the nonzero dense-output weights at ``theta`` as Python floats.

    ``w_i = sum_k P[i, k] theta^(k+1)`` accumulated term by term (as the Numba twin does).
    """
    P = tab.P
    terms = []
    for i in range(P.shape[0]):
        w, p = 0.0, theta
        for k in range(P.shape[1]):
            w += float(P[i, k]) * p
            p *= theta
        if w != 0.0:
            terms.append((i, w))
    return tuple(terms)


def dense_eval(y, K, tab, theta, h):
    """The interpolated state ``y(t + theta h) = y + h sum_i w_i(theta) K_i``.

    Parameters
    ----------
    y : array/Tensor
        State at the start of the step.
    K : list of arrays/Tensors
        The stages of the step.
    tab : ButcherTableau
        Must have dense output (``tab.P``).
    theta : float
        In [0, 1].
    h : float
        Signed step.
    """
    return combine(y, K, dense_terms(tab, theta), h)
