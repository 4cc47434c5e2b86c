"""Toy event data with a known rate: inhomogeneous Poisson processes by thinning (chapter 7, Fig. 7).

The paper fits a latent ODE with a Poisson-process likelihood to "a toy data set"
(its rate, network and training are unverified, paper.md §4); this module makes one
whose true rate is known, so the learned rate can be drawn against it.
"""
from __future__ import annotations

import numpy as np


def toy_rate(t):
    """The true rate of the toy process: ``3 + 2 sin(0.9 t)`` events per unit time (>= 1)."""
    return 3.0 + 2.0 * np.sin(0.9 * np.asarray(t, dtype=np.float64))


#: An upper bound of :func:`toy_rate` (thinning needs one).
TOY_RATE_MAX = 5.0


def poisson_events(rate, t_end, rate_max, n_realizations=1, seed=0):
    """Event times of a Poisson process with rate ``rate(t)`` on ``(0, t_end]``, by thinning.

    Candidates come from a homogeneous process of rate ``rate_max``; each is kept with
    probability ``rate(t) / rate_max`` (Lewis and Shedler, 1979).

    Parameters
    ----------
    rate : callable ``t (ndarray) -> ndarray``
        Must satisfy ``0 <= rate(t) <= rate_max`` on the window.
    t_end, rate_max : float
    n_realizations : int
    seed : int

    Returns
    -------
    times : ndarray, shape (n_realizations, M)
        Each row increasing, padded at the end with ``t_end``.
    mask : ndarray of bool, shape (n_realizations, M)
        True at real events.
    """
    if not (t_end > 0 and rate_max > 0):
        raise ValueError(f"`t_end` and `rate_max` must be positive, got {t_end} and {rate_max}.")
    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(int(n_realizations)):
        n = rng.poisson(rate_max * t_end)
        cand = np.sort(rng.uniform(0.0, t_end, n))
        lam = np.asarray(rate(cand), dtype=np.float64)
        if np.any(lam < 0) or np.any(lam > rate_max * (1 + 1e-12)):
            raise ValueError(f"`rate` must lie in [0, rate_max={rate_max}] on the window; got values "
                             f"from {lam.min():.3g} to {lam.max():.3g}.")
        rows.append(cand[rng.uniform(0.0, rate_max, n) < lam])
    M = max(1, max(len(r) for r in rows))
    times = np.full((len(rows), M), float(t_end))
    mask = np.zeros((len(rows), M), bool)
    for i, r in enumerate(rows):
        times[i, :len(r)], mask[i, :len(r)] = r, True
    return times, mask
