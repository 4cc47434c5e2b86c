"""The spiral data set of the latent ODE experiment (paper Sec. 5.1; chapter 7).

The paper states: 1,000 two-dimensional spirals, each starting at a different
point, sampled at 100 equally spaced times; half clockwise, half
counter-clockwise; Gaussian observation noise; the models see n ∈ {30, 50, 100}
of the 100 points (sampled without replacement) and are scored on the 100 time
points that follow. Everything else is open (paper.md §4). The curves here are
those of the paper-era torchdiffeq example (``examples/latent_ode.py``), the only
public trace of the original generator:

* counter-clockwise: angle ``θ = s``, radius ``r = b θ``, centred at ``(+5, 0)``;
* clockwise: angle ``θ = 6π + 1 - s``, radius ``r = 50 b / θ``, centred at ``(-5, 0)``;

with ``b = 0.3`` and curve time ``s`` on a grid of step ``6π / 499`` (500 points on
``[0, 6π]``). Each spiral starts at a curve time drawn uniformly (a real number,
so every start differs) and takes 200 consecutive grid points: 100 observed, 100
held out for extrapolation. Both curves are orbits of autonomous planar systems
(``r' = b, θ' = 1`` and ``r' = r² / (50 b), θ' = -1``), so a time-invariant latent
ODE can represent them, and every spiral may use the same model times
``t_k = k Δt`` whatever its start.

Design choices beyond the paper (stated in chapter 7): exactly half of the
spirals are clockwise (a seeded permutation, not a coin per spiral); the start
range is grid steps [100, 300) so that 200 points fit on the curve; the model
time step ``dt`` is a parameter (the curve's own step by default); the train /
test split is the first 800 / last 200 spirals.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np

#: Curve time grid of torchdiffeq's example: 500 points on [0, 6π] (its generator's default;
#: its ``main`` defines ``ntotal = 1000`` but does not pass it, paper.md §4.1).
CURVE_POINTS = 500
CURVE_SPAN = 6.0 * np.pi
CURVE_STEP = CURVE_SPAN / (CURVE_POINTS - 1)
#: Radius growth of the Archimedean arm (torchdiffeq's ``b``).
SPIRAL_B = 0.3
#: Centres of the two arms, so the two directions also differ in position.
CENTRE_CCW, CENTRE_CW = 5.0, -5.0
#: Observation noise std of torchdiffeq's example, in data units.
NOISE_STD = 0.3
#: Number of training spirals (the rest are the test set).
N_TRAIN = 800


CW_CURVES = ("torchdiffeq", "mirror")


def spiral_curve(s, clockwise, cw_curve="torchdiffeq"):
    """Points of the noiseless spiral arm at curve times ``s``.

    Parameters
    ----------
    s : ndarray, shape (...)
        Curve times in ``[0, 6π]``.
    clockwise : bool or ndarray of bool, broadcastable to ``s``
    cw_curve : {"torchdiffeq", "mirror"}
        The clockwise arm: torchdiffeq's ``r = 50 b / θ`` around ``(-5, 0)``, whose radius
        grows without bound near the end of the curve, or the counter-clockwise arm
        mirrored (``y -> -y``) and moved to ``(-5, 0)``, which grows like it.

    Returns
    -------
    ndarray, shape (..., 2)
    """
    if cw_curve not in CW_CURVES:
        raise ValueError(f"`cw_curve` must be one of {CW_CURVES}, got {cw_curve!r}.")
    s = np.asarray(s, dtype=np.float64)
    cw = np.broadcast_to(np.asarray(clockwise, dtype=bool), s.shape)
    if cw_curve == "mirror":
        r = SPIRAL_B * s
        return np.stack([r * np.cos(s) + np.where(cw, CENTRE_CW, CENTRE_CCW),
                         np.where(cw, -1.0, 1.0) * r * np.sin(s)], axis=-1)
    th_ccw = s
    th_cw = 6.0 * np.pi + 1.0 - s
    th = np.where(cw, th_cw, th_ccw)
    r = np.where(cw, 50.0 * SPIRAL_B / th_cw, SPIRAL_B * th_ccw)
    cx = np.where(cw, CENTRE_CW, CENTRE_CCW)
    return np.stack([r * np.cos(th) + cx, r * np.sin(th)], axis=-1)


@dataclass
class Spirals:
    """A spiral data set: noiseless and noisy trajectories on a shared model-time grid.

    Attributes
    ----------
    t : ndarray, shape (n_points + n_extrap,)
        Model times ``k * dt``; the first ``n_points`` are the observed span.
    truth, noisy : ndarray, shape (n_spirals, n_points + n_extrap, 2)
    clockwise : ndarray of bool, shape (n_spirals,)
    start : ndarray, shape (n_spirals,)
        Curve time of each spiral's first point.
    n_points, n_extrap, n_train : int
    """

    t: np.ndarray
    truth: np.ndarray
    noisy: np.ndarray
    clockwise: np.ndarray
    start: np.ndarray
    n_points: int
    n_extrap: int
    n_train: int

    @property
    def train(self):
        """Index slice of the training spirals."""
        return slice(0, self.n_train)

    @property
    def test(self):
        """Index slice of the test spirals."""
        return slice(self.n_train, len(self.clockwise))

    def normalizer(self):
        """``(mean (2,), scale)`` of the training set's noisy observed points.

        One scale for both coordinates keeps the spirals' shape (and the noise
        isotropic); ``(x - mean) / scale`` is the normalized data.
        """
        obs = self.noisy[self.train, :self.n_points].reshape(-1, 2)
        return obs.mean(axis=0), float(obs.std())


def make_spirals(n_spirals=1000, n_points=100, n_extrap=100, noise_std=NOISE_STD, dt=None,
                 start_range=None, n_train=N_TRAIN, seed=0, cw_curve="torchdiffeq",
                 curve_points=CURVE_POINTS):
    """Generate the spiral data set (see the module docstring for the curves).

    Parameters
    ----------
    n_spirals : int
        Even: exactly half are clockwise.
    n_points, n_extrap : int
        Observed grid points, then held-out points for extrapolation.
    noise_std : float
        Std of the Gaussian noise added to every coordinate (data units).
    dt : float, optional
        Model-time step between grid points (the curve step by default; any
        positive value rescales time without changing the points).
    start_range : (float, float), optional
        Start of each spiral, uniform, in curve grid steps; the spiral must fit:
        ``start_range[1] + n_points + n_extrap - 1 <= curve_points - 1``. Default
        ``(100, curve_points - n_points - n_extrap)``: [100, 300) on the 500-point curve.
    n_train : int
        The first ``n_train`` spirals are the training set.
    seed : int
    cw_curve : {"torchdiffeq", "mirror"}
        See :func:`spiral_curve`.
    curve_points : int
        Grid points on the curve's ``[0, 6π]``: 500 (torchdiffeq's generator default) or
        e.g. 1000 (the ``ntotal`` its ``main`` defines), which halves the angle a spiral's
        200 points cover.

    Returns
    -------
    Spirals
    """
    n_spirals, n_points, n_extrap = int(n_spirals), int(n_points), int(n_extrap)
    if n_spirals < 2 or n_spirals % 2:
        raise ValueError(f"`n_spirals` must be an even number >= 2 (half are clockwise), got {n_spirals}.")
    if n_points < 1 or n_extrap < 0:
        raise ValueError(f"`n_points` must be >= 1 and `n_extrap` >= 0, got {n_points} and {n_extrap}.")
    curve_points = int(curve_points)
    if curve_points < n_points + n_extrap + 1:
        raise ValueError(f"`curve_points` must exceed n_points + n_extrap = {n_points + n_extrap}, "
                         f"got {curve_points}.")
    step = CURVE_SPAN / (curve_points - 1)
    dt = step if dt is None else dt
    if start_range is None:
        start_range = (100, curve_points - n_points - n_extrap)
    lo, hi = float(start_range[0]), float(start_range[1])
    if not 0 <= lo < hi or hi + n_points + n_extrap - 1 > curve_points - 1:
        raise ValueError(f"`start_range` {start_range} must satisfy 0 <= lo < hi and hi + n_points + "
                         f"n_extrap - 1 <= {curve_points - 1} (the curve has {curve_points} grid points); "
                         "shorten the spirals or move the range.")
    if not dt > 0:
        raise ValueError(f"`dt` must be positive, got {dt}.")
    if not 0 < n_train < n_spirals:
        raise ValueError(f"`n_train` must lie in (0, n_spirals={n_spirals}), got {n_train}.")
    rng = np.random.default_rng(seed)
    clockwise = np.zeros(n_spirals, dtype=bool)
    clockwise[rng.permutation(n_spirals)[:n_spirals // 2]] = True
    start = rng.uniform(lo, hi, size=n_spirals) * step
    m = n_points + n_extrap
    s = start[:, None] + np.arange(m) * step                           # (N, m) curve times
    truth = spiral_curve(s, clockwise[:, None], cw_curve)                # (N, m, 2)
    noisy = truth + noise_std * rng.standard_normal(truth.shape)
    return Spirals(t=np.arange(m) * float(dt), truth=truth, noisy=noisy, clockwise=clockwise,
                   start=start, n_points=n_points, n_extrap=n_extrap, n_train=int(n_train))


def subsample(n_spirals, n_points, n_obs, seed=0):
    """For each spiral, ``n_obs`` of the ``n_points`` observed indices, without replacement.

    Returns
    -------
    ndarray of int, shape (n_spirals, n_obs)
        Sorted indices into the time grid (each row increasing).
    """
    if not 1 <= int(n_obs) <= int(n_points):
        raise ValueError(f"`n_obs` must lie in [1, n_points={n_points}], got {n_obs}.")
    rng = np.random.default_rng([int(seed), int(n_obs)])
    keys = rng.random((int(n_spirals), int(n_points)))
    return np.sort(np.argsort(keys, axis=1)[:, :int(n_obs)], axis=1)


def checksum(*arrays, decimals=8):
    """A short SHA-256 of arrays rounded to ``decimals`` (immune to last-bit libm differences)."""
    h = hashlib.sha256()
    for a in arrays:
        a = np.asarray(a)
        if a.dtype.kind == "f":
            a = np.round(a, decimals) + 0.0                     # + 0.0 turns -0.0 into 0.0
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]
