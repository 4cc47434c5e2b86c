"""One explicit Runge–Kutta step and its dense output, in reference (``xp``) code.

The Tensor contract: the state ``y`` and the stages ``K_i`` are only ever combined
with ``+``, ``*`` by Python floats, and calls of ``f(t, y)``, with the array or
Tensor on the left of each operator. So the same code runs on NumPy arrays, CuPy
arrays and nodeform Tensors (backprop through the solver). Stages live in a Python
list, never in a preallocated array. Sums are accumulated left to right over the
nonzero weights, in the same order as the Numba twin (:mod:`nodeform.ode._numba_rk`),
so both engines give the same numbers up to the norm's round-off.

Taught in chapters/ch02_ode_solvers.py.
"""
from __future__ import annotations

__all__ = ["weighted_sum", "rk_stages", "rk_step", "dense_terms", "dense_eval"]


def weighted_sum(K, terms):
    """``sum_j w_j K_j`` over ``terms = ((j, w_j), ...)``, left to right; None if empty."""
    acc = None
    for j, w in terms:
        term = K[j] * w
        acc = term if acc is None else acc + term
    return acc


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
        acc = weighted_sum(K, tab.A_terms[i])
        y_stage = y if acc is None else y + acc * h
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
    err : array/Tensor or None
        The local error estimate ``h sum_i e_i K_i`` (None without an embedded pair).
    """
    K, y_last = rk_stages(f, t, y, f0, h, tab)
    if tab.fsal:
        y_new = y_last
    else:
        acc = weighted_sum(K, tab.b_terms)
        y_new = y + acc * h
    err = None
    if tab.e_terms is not None:
        err = weighted_sum(K, tab.e_terms) * h
    return y_new, K, err


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
    acc = weighted_sum(K, dense_terms(tab, theta))
    return y if acc is None else y + acc * h
