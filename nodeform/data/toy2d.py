r"""2-D toy densities for chapter 6: two circles, two moons and Rezende & Mohamed's energies.

Samplers (maximum likelihood, paper Fig. 5)
-------------------------------------------
:func:`two_circles` and :func:`two_moons` draw points on curves and add isotropic
Gaussian noise, as scikit-learn's ``make_circles(noise=0.06, factor=0.5)`` and
``make_moons(noise=0.05)`` do (the generators of the PyTorch anchor in PERF-NOTES),
written here without scikit-learn. Two ways to place the points on the curves:

* ``angles="random"`` (default): each point draws its curve and angle at random, so a
  batch is an i.i.d. sample of the density;
* ``angles="even"``: as scikit-learn, half the points on each curve at evenly spaced
  angles, shuffled, then the noise. A *stratified* sample of the same density: the
  curve positions carry no sampling noise, only the Gaussian noise does. Chapter 6
  trains on such batches, as the anchor did: on the two circles, 1,000 steps end about
  0.05 nats lower than on i.i.d. ones (bench/RESULTS-cnf.md).

Because the noise model is known, the data density itself is a one-dimensional
integral over the curve parameter,

.. math::  p(x) = \sum_c \pi_c \int_0^{\Theta_c} \mathcal N\big(x;\, \gamma_c(\theta), \sigma^2 I\big)
           \,\frac{d\theta}{\Theta_c},

which :func:`data_log_density` evaluates by quadrature; :func:`data_entropy` averages
``-log p`` over many samples (Monte Carlo), the floor no model's test NLL can go below.

Energies (density matching, paper Fig. 4)
-----------------------------------------
:func:`energy` gives the test energies U1-U4 of Rezende & Mohamed (2015, Table 1) as
unnormalized log-densities ``log p~(z) = -U(z)`` written with Tensor operations, so the
reverse KL ``E_q[log q - log p~]`` can be differentiated through them.
"""
from __future__ import annotations

import numpy as np

from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor

#: The noise levels of the anchor (PERF-NOTES, after scikit-learn's examples).
CIRCLES_NOISE = 0.06
CIRCLES_FACTOR = 0.5
MOONS_NOISE = 0.05
#: Quadrature nodes per curve in :func:`data_log_density`. The node spacing (at most
#: 2 pi / 500 ~ 0.013 along a curve) is a quarter of the noise (0.05); the midpoint rule
#: on a Gaussian that smooth errs by about exp(-2 pi^2 (sigma / h)^2) ~ 1e-130,
#: far below the Monte Carlo error.
QUAD_NODES = 500


def _rng(seed):
    return seed if isinstance(seed, np.random.Generator) else np.random.default_rng(seed)


def _check_n(n):
    if not isinstance(n, (int, np.integer)) or n < 1:
        raise ValueError(f"`n` must be a positive integer number of samples, got {n!r}.")
    return int(n)


# ============================================================ curves
def _circles_curves(factor):
    """``[(weight, theta_max, gamma(theta) -> (k, 2))]`` for the two circles."""
    def outer(th):
        return np.stack([np.cos(th), np.sin(th)], axis=-1)

    def inner(th):
        return factor * np.stack([np.cos(th), np.sin(th)], axis=-1)
    return [(0.5, 2 * np.pi, outer), (0.5, 2 * np.pi, inner)]


def _moons_curves():
    """``[(weight, theta_max, gamma)]`` for the two moons (scikit-learn's coordinates)."""
    def upper(th):
        return np.stack([np.cos(th), np.sin(th)], axis=-1)

    def lower(th):
        return np.stack([1.0 - np.cos(th), 0.5 - np.sin(th)], axis=-1)
    return [(0.5, np.pi, upper), (0.5, np.pi, lower)]


#: How :func:`two_circles` and :func:`two_moons` place points on the curves.
ANGLES = ("random", "even")


def _even_angles(k, th_max):
    """``k`` evenly spaced angles as scikit-learn's samplers place them: a full turn
    leaves out its end (it is the start); a half turn includes both ends."""
    closed = np.isclose(th_max, 2 * np.pi)
    return np.linspace(0.0, th_max, k, endpoint=not closed)


def _sample_curves(curves, n, noise, rng, angles="random"):
    if angles not in ANGLES:
        raise ValueError(f"`angles` must be one of {ANGLES}, got {angles!r}: 'random' draws "
                         "each point's curve and angle, 'even' spaces them as scikit-learn.")
    x = np.empty((n, 2))
    if angles == "even":            # two curves of equal weight: n // 2 on the first
        sizes = [n // 2, n - n // 2]
        parts = [gamma(_even_angles(k, th_max)) for k, (_, th_max, gamma) in zip(sizes, curves)]
        x[:] = np.concatenate(parts)[rng.permutation(n)]
        return x + noise * rng.standard_normal((n, 2))
    weights = np.array([c[0] for c in curves])
    which = rng.choice(len(curves), size=n, p=weights / weights.sum())
    for k, (_, th_max, gamma) in enumerate(curves):
        idx = np.flatnonzero(which == k)
        x[idx] = gamma(rng.uniform(0.0, th_max, size=idx.size))
    return x + noise * rng.standard_normal((n, 2))


def two_circles(n, seed=None, noise=CIRCLES_NOISE, factor=CIRCLES_FACTOR, angles="random"):
    """``n`` points of two concentric circles (radii 1 and ``factor``) plus Gaussian noise.

    Parameters
    ----------
    n : int
    seed : int, Generator or None
    noise : float
        Standard deviation of the noise added to each coordinate.
    factor : float
        Radius of the inner circle, in (0, 1).
    angles : {"random", "even"}
        I.i.d. points, or scikit-learn's evenly spaced ones (see the module docstring).

    Returns
    -------
    ndarray, shape (n, 2), float64
    """
    if not 0.0 < factor < 1.0:
        raise ValueError(f"`factor` must lie in (0, 1), got {factor}.")
    return _sample_curves(_circles_curves(factor), _check_n(n), float(noise), _rng(seed), angles)


def two_moons(n, seed=None, noise=MOONS_NOISE, angles="random"):
    """``n`` points of two interleaved half circles plus Gaussian noise, shape (n, 2).

    ``angles`` as :func:`two_circles`.
    """
    return _sample_curves(_moons_curves(), _check_n(n), float(noise), _rng(seed), angles)


DATASETS = {"circles": (two_circles, lambda: _circles_curves(CIRCLES_FACTOR), CIRCLES_NOISE),
            "moons": (two_moons, _moons_curves, MOONS_NOISE)}


def _dataset(name):
    if name not in DATASETS:
        raise ValueError(f"`name` must be one of {sorted(DATASETS)}, got {name!r}.")
    return DATASETS[name]


def sample(name, n, seed=None, angles="random"):
    """``n`` samples of the dataset ``name`` ("circles" or "moons"), shape (n, 2).

    ``angles``: "random" (i.i.d.) or "even" (scikit-learn's; see the module docstring).
    """
    return _dataset(name)[0](n, seed, angles=angles)


# ============================================================ the data's own density
def data_log_density(name, x, nodes=QUAD_NODES):
    """``log p(x)`` of the noise model behind ``name``, by midpoint quadrature over the curves.

    Parameters
    ----------
    name : {"circles", "moons"}
    x : array, shape (k, 2)

    Returns
    -------
    ndarray, shape (k,)
    """
    _, curves_fn, noise = _dataset(name)
    x = np.asarray(x, dtype=np.float64)
    logs = []
    for w, th_max, gamma in curves_fn():
        c = gamma((np.arange(nodes) + 0.5) * th_max / nodes)          # (nodes, 2)
        d2 = ((x[:, None, :] - c[None, :, :]) ** 2).sum(-1)          # (k, nodes)
        lg = -0.5 * d2 / noise ** 2 - np.log(2 * np.pi * noise ** 2)
        m = lg.max(axis=1, keepdims=True)
        logs.append(np.log(w) + m[:, 0] + np.log(np.exp(lg - m).mean(axis=1)))
    return np.logaddexp(logs[0], logs[1])


def data_entropy(name, n=20000, seed=0):
    """The differential entropy ``-E[log p(x)]`` of the data in nats, by Monte Carlo.

    The standard error is about ``std(log p) / sqrt(n)`` (about 0.005 at the default
    ``n``); returns ``(entropy, standard_error)``.
    """
    x = sample(name, n, seed)
    lp = np.concatenate([data_log_density(name, x[i:i + 2000]) for i in range(0, n, 2000)])
    return float(-lp.mean()), float(lp.std() / np.sqrt(n))


# ============================================================ Rezende & Mohamed energies
def _t(z):
    return z if isinstance(z, Tensor) else Tensor(np.asarray(z, dtype=np.float64))


def _w1(z1):
    return F.sin(z1 * (2 * np.pi / 4))


def _logsumexp2(a, b):
    return F.logsumexp(F.stack([a, b], axis=-1), axis=-1)


def _u1(z1, z2):
    r = F.sqrt(z1 * z1 + z2 * z2)
    return 0.5 * ((r - 2.0) / 0.4) ** 2 - _logsumexp2(-0.5 * ((z1 - 2.0) / 0.6) ** 2,
                                                      -0.5 * ((z1 + 2.0) / 0.6) ** 2)


def _u2(z1, z2):
    return 0.5 * ((z2 - _w1(z1)) / 0.4) ** 2


def _u3(z1, z2):
    w2 = 3.0 * F.exp(-0.5 * ((z1 - 1.0) / 0.6) ** 2)
    d = z2 - _w1(z1)
    return -_logsumexp2(-0.5 * (d / 0.35) ** 2, -0.5 * ((d + w2) / 0.35) ** 2)


def _u4(z1, z2):
    w3 = 3.0 * F.sigmoid((z1 - 1.0) / 0.3)
    d = z2 - _w1(z1)
    return -_logsumexp2(-0.5 * (d / 0.4) ** 2, -0.5 * ((d + w3) / 0.35) ** 2)


ENERGIES = {"U1": _u1, "U2": _u2, "U3": _u3, "U4": _u4}


def energy(name, z):
    """The energy ``U(z)`` of Rezende & Mohamed's target ``name`` ("U1" ... "U4").

    Parameters
    ----------
    name : str
    z : Tensor or array, shape (k, 2)

    Returns
    -------
    Tensor, shape (k,)
        ``exp(-U)`` is the unnormalized target density.
    """
    if name not in ENERGIES:
        raise ValueError(f"`name` must be one of {sorted(ENERGIES)}, got {name!r}.")
    z = _t(z)
    if z.ndim != 2 or z.shape[1] != 2:
        raise ValueError(f"`z` must have shape (k, 2), got {tuple(z.shape)}.")
    return ENERGIES[name](z[:, 0], z[:, 1])


#: U2-U4 do not decay along z1 (exp(-U) is not integrable); Rezende & Mohamed show them on
#: [-4, 4]^2. ``target_log_density`` adds the soft wall (z1 / WALL)^8 / 2 to them: below
#: 0.05 for |z1| < 3, 3 at |z1| = 5, so the target is a proper density of that picture.
WALL = 4.0


def target_log_density(name, wall=True):
    """The unnormalized log-density ``z -> -U(z)`` of ``name``, on Tensors (k, 2) -> (k,).

    With ``wall`` (default), U2-U4 get the soft wall of :data:`WALL` in ``z1``, which makes
    ``exp(-U)`` integrable (a reverse KL to an improper target has no minimum).
    """
    if name not in ENERGIES:
        raise ValueError(f"`name` must be one of {sorted(ENERGIES)}, got {name!r}.")
    if not wall or name == "U1":
        return lambda z: -energy(name, z)

    def logp(z):
        z = _t(z)
        return -energy(name, z) - 0.5 * (z[:, 0] * (1.0 / WALL)) ** 8
    return logp


def log_normalizer(name, wall=True, half_width=8.0, n=801):
    """``log Z = log int exp(-U)`` of :func:`target_log_density` by the midpoint rule on a grid.

    The grid ``[-half_width, half_width]^2`` (n x n) holds all the mass of U1-U4 (with the
    wall); the targets are smooth on the grid spacing (0.02), so the rule is accurate to
    far below the Monte Carlo error of a KL estimate.
    """
    g = (np.arange(n) + 0.5) * (2 * half_width / n) - half_width
    Z1, Z2 = np.meshgrid(g, g, indexing="ij")
    lp = target_log_density(name, wall)(np.stack([Z1.ravel(), Z2.ravel()], axis=1)).numpy()
    m = lp.max()
    return float(m + np.log(np.exp(lp - m).sum() * (2 * half_width / n) ** 2))
