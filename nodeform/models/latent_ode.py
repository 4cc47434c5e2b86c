"""The latent ODE for irregularly sampled time series, its RNN baselines, the Poisson process.

Paper Sec. 5 and App. E (taught in chapters/ch07_latent_ode.py). The generative model::

    z0 ~ N(0, I),   z(t) = ODESolve(z0, f, t0, t),   x(t_i) ~ N(dec(z(t_i)), sigma^2 I)

with a *time-invariant* field ``f(z)`` (one hidden layer of 20), a decoder with
one hidden layer of 20, latent size 4; the hidden activations are tanh by default and
ELU (field) / ReLU (decoder) in chapter 7's protocol, as in torchdiffeq's example. Inference: a recognition RNN (25 units) reads a
sequence's observations **backwards in time**, each with the gap to the previous
observation (to ``t0`` for the first), and outputs ``q(z0 | x) = N(mu, diag exp(logvar))``;
one reparameterized sample ``z0 = mu + exp(logvar / 2) eps`` is solved to every
observation time. The loss is the negative ELBO per sequence::

    -ELBO = sum_i -log N(x_i | dec(z(t_i)), sigma^2) + KL(q(z0 | x) || N(0, I))

**One solve per batch.** The sequences of a batch are observed at different times;
their latent states are stacked into one state of shape ``(N, 4)`` and solved once
to the *union* of the batch's observation times, and a mask keeps, for each
sequence, only the times it observed. The adaptive step size is then shared by the
batch (its error norm covers every sequence), which is what a per-sequence loop
would not give, and the cost is one solve instead of N.

The dynamics' parameters are one flat vector ``theta`` laid out as
:func:`nodeform.mlp_field` expects, so the same parameters run either through the
autodiff (``field.reference(theta)``, both gradient methods) or through the Numba
fast path (forward and adjoint solves compiled, continuous adjoint).
"""
from __future__ import annotations

import math

import numpy as np

from nodeform.adjoint.numba_field import mlp_field
from nodeform.adjoint.odeint import odeint
from nodeform.autodiff import functions as F
from nodeform.autodiff.tensor import Tensor, no_grad
from nodeform.backend import DEFAULT_DTYPE, get_xp, host_float, is_device_array
from nodeform.nn import init
from nodeform.nn.layers import Linear, as_tensor
from nodeform.nn.losses import gaussian_nll, kl_diag_gaussians
from nodeform.nn.module import Module, Parameter
from nodeform.nn.rnn import RNNCell

#: Solver tolerances of the training solves (the issue's timing setting).
RTOL, ATOL = 1e-3, 1e-4
#: Activations of the decoder's hidden layer (the dynamics take those of ``mlp_field``).
DECODER_ACTIVATIONS = ("tanh", "relu", "elu", "softplus")
GRAD_METHODS = ("numba", "continuous", "backprop")


# ------------------------------------------------------------------ batches of irregular times
def compact(mask):
    """Per-row positions of the observed entries of a ``(N, T)`` mask, padded at the end.

    Returns
    -------
    idx : ndarray of int, shape (N, K)
        ``K`` = the largest row count; row ``i`` lists the columns where ``mask[i]`` is
        true, increasing, then repeats its last one.
    valid : ndarray of bool, shape (N, K)
    """
    mask = np.asarray(mask, dtype=bool)
    if mask.ndim != 2:
        raise ValueError(f"`mask` must have shape (N, T), got {mask.shape}.")
    counts = mask.sum(axis=1)
    if counts.min() < 1:
        raise ValueError(f"every sequence needs at least one observation; row "
                         f"{int(np.argmin(counts))} of `mask` has none.")
    K = int(counts.max())
    order = np.argsort(~mask, axis=1, kind="stable")[:, :K]        # observed columns first
    valid = np.arange(K)[None, :] < counts[:, None]
    last = order[np.arange(len(mask)), counts - 1]
    return np.where(valid, order, last[:, None]), valid


def union_grid(t, mask):
    """The columns observed by at least one sequence: ``(cols, t[cols], mask[:, cols])``."""
    t, mask = np.asarray(t, dtype=np.float64), np.asarray(mask, dtype=bool)
    if t.ndim != 1 or mask.ndim != 2 or mask.shape[1] != t.size:
        raise ValueError(f"`t` (T,) and `mask` (N, T) disagree: shapes {t.shape} and {mask.shape}.")
    if np.any(np.diff(t) <= 0):
        raise ValueError("`t` must be strictly increasing.")
    cols = np.flatnonzero(mask.any(axis=0))
    return cols, t[cols], mask[:, cols]


def previous_gaps(t_obs, valid, t0):
    """Gap of each valid observation to the previous valid one of its row (to ``t0`` for the first).

    Parameters
    ----------
    t_obs : ndarray, shape (N, K)
    valid : ndarray of bool, shape (N, K)
    t0 : float

    Returns
    -------
    ndarray, shape (N, K); 0 at invalid entries.
    """
    prev = np.full(t_obs.shape[0], float(t0))
    gaps = np.zeros_like(t_obs, dtype=np.float64)
    for k in range(t_obs.shape[1]):
        v = valid[:, k]
        gaps[:, k] = np.where(v, t_obs[:, k] - prev, 0.0)
        prev = np.where(v, t_obs[:, k], prev)
    return gaps


def _elman_steps(cell, inputs, valid, order):
    """Run an :class:`RNNCell` over data ``inputs`` (N, K, I) in the given step ``order``.

    ``inputs`` is an array (data: no gradient flows into it), so each step's input
    projection ``x_k W_ih^T + b`` is a product with a constant: no slice of a taped
    Tensor, whose adjoint would write a full (N, K, ·) array at every step. Where
    ``valid[:, k]`` is false (padding) the state is left as it was.

    Returns
    -------
    list of Tensor
        The state after each step, in ``order``, each (N, H).
    """
    wih_t, b, whh_t = cell.ih.weight.T, cell.ih.bias, cell.hh.weight.T
    xp = get_xp(inputs)                                  # ``valid`` is on the host: no sync
    h = cell.initial_state(inputs.shape[0])
    out = []
    for k in order:
        h_new = F.tanh(Tensor(inputs[:, k]) @ wih_t + b + h @ whh_t)
        if valid[:, k].all():
            h = h_new
        else:                                                    # padding leaves h as it was
            m = Tensor(xp.asarray(valid[:, k:k + 1].astype(inputs.dtype)))
            h = h_new * m + h * (1.0 - m)
        out.append(h)
    return out


# ------------------------------------------------------------------ the recognition network
class Recognition(Module):
    """An RNN read backwards in time, giving ``q(z0 | x)`` (paper App. E).

    Input at each observation: ``[x_i, (t_i - t_{i-1}) / dt_scale]``. Output: the mean
    and log-variance of ``z0``.

    Shapes: ``x`` (N, K, D), ``gaps`` (N, K), ``valid`` (N, K) -> ``mu, logvar`` (N, L).
    """

    def __init__(self, obs_dim=2, latent_dim=4, hidden=25, dt_scale=1.0, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        rng = init.as_rng(rng)
        self.latent_dim, self.dt_scale = int(latent_dim), float(dt_scale)
        self.cell = RNNCell(obs_dim + 1, hidden, rng=rng, dtype=dtype)
        self.out = Linear(hidden, 2 * latent_dim, rng=rng, dtype=dtype)

    def forward(self, x, gaps, valid):
        if isinstance(x, Tensor) and x.requires_grad:
            raise ValueError("`x` must be data (an array or a Tensor without gradient): the "
                             "recognition network does not differentiate its inputs.")
        x = _values(x)
        xp = get_xp(x)
        K = gaps.shape[1]
        g = xp.asarray((gaps / self.dt_scale).astype(x.dtype)[..., None])           # one copy
        inp = xp.concatenate([x, g], axis=2)
        h = _elman_steps(self.cell, inp, valid, range(K - 1, -1, -1))[-1]
        out = self.out(h)
        L = self.latent_dim
        return out[:, :L], out[:, L:]


# ------------------------------------------------------------------ the latent ODE
def _values(x):
    """The values of a batch as an array: device arrays stay on the device, the rest become NumPy."""
    x = x.data if isinstance(x, Tensor) else x
    return x if is_device_array(x) else np.asarray(x)


def _gather(x, idx):
    """``x[n, idx[n, k]]`` (N, K, D) from ``x`` (N, T, D); the host index is copied to x's device."""
    rows = np.arange(len(idx))[:, None]
    xp = get_xp(x)
    if xp is not np:
        rows, idx = xp.asarray(rows), xp.asarray(idx)
    return x[rows, idx]


class LatentODE(Module):
    """Recognition RNN, latent dynamics ``f(z)``, decoder; the negative ELBO (module docstring).

    Parameters
    ----------
    obs_dim, latent_dim, rnn_hidden, dyn_hidden, dec_hidden : int
        The paper's sizes by default: 2, 4, 25, 20, 20.
    obs_std : float
        Std of the Gaussian likelihood ``p(x | z)`` (fixed, in data units).
    dt_scale : float
        Time gaps are divided by it before entering the RNN (keeps inputs O(1)).
    rng : Generator or int
    dyn_act : {"tanh", "softplus", "elu"}
        Hidden activation of the dynamics (the paper does not say; torchdiffeq's example: ELU).
    dec_act : {"tanh", "relu", "elu", "softplus"}
        Hidden activation of the decoder (torchdiffeq's example: ReLU). A saturating one
        (tanh) bounds the decoded positions, a piecewise-linear one does not.
    """

    def __init__(self, obs_dim=2, latent_dim=4, rnn_hidden=25, dyn_hidden=20, dec_hidden=20,
                 obs_std=0.1, dt_scale=1.0, rng=None, dtype=DEFAULT_DTYPE, dyn_act="tanh",
                 dec_act="tanh"):
        super().__init__()
        if dec_act not in DECODER_ACTIVATIONS:
            raise ValueError(f"`dec_act` must be one of {DECODER_ACTIVATIONS}, got {dec_act!r}.")
        rng = init.as_rng(rng)
        self.latent_dim, self.obs_std = int(latent_dim), float(obs_std)
        self.dyn_act, self.dec_act = dyn_act, dec_act
        self.encoder = Recognition(obs_dim, latent_dim, rnn_hidden, dt_scale, rng=rng, dtype=dtype)
        self.field = mlp_field(latent_dim, (dyn_hidden,), dyn_act)    # time-invariant f(z)
        self.theta = Parameter(self.field.init_theta(rng).astype(dtype))
        self.dec1 = Linear(latent_dim, dec_hidden, rng=rng, dtype=dtype)
        self.dec2 = Linear(dec_hidden, obs_dim, rng=rng, dtype=dtype)

    # -------------------------------------------------------------- parts
    def decode(self, z):
        """``(..., L) -> (..., D)``: one hidden layer (``dec_act`` units)."""
        return self.dec2(getattr(F, self.dec_act)(self.dec1(z)))

    def dynamics(self, presliced=False):
        """``f(t, z)`` on Tensors, built from the current ``theta`` (the autodiff model).

        ``presliced=True`` cuts ``theta`` into layers once, outside ``f`` (fewer taped
        operations per evaluation; for backprop through the solver, whose tape is
        shared by all evaluations). The continuous adjoint needs ``f`` to read
        ``theta`` itself, which the default does.
        """
        if not presliced:
            return self.field.reference(self.theta)
        (W1, b1), (W2, b2) = self.field.unflatten(self.theta)
        W1t, W2t = W1.T, W2.T
        act = getattr(F, self.dyn_act)

        def f(t, z):
            return act(z @ W1t + b1) @ W2t + b2
        return f

    def trajectories(self, z0, t, t0=0.0, grad="numba", solver=None, stats=None):
        """Solve every row of ``z0`` to the times ``t`` in **one** solve.

        Parameters
        ----------
        z0 : Tensor, shape (N, L)
        t : ndarray, shape (T,)
            Increasing, ``t[0] >= t0``.
        grad : {"numba", "continuous", "backprop"}
            How the solve is differentiated: the compiled field with the continuous
            adjoint, the autodiff field with the continuous adjoint, or backprop
            through the solver. ``"numba"`` falls back to ``"continuous"`` for
            non-float64 data and for data on a GPU (the compiled field is CPU-only).
        solver : dict, optional
            Settings of the solve (``method``, ``rtol``, ``atol``, ``step_size``, ...);
            default dopri5 at ``RTOL``, ``ATOL``.

        Returns
        -------
        Tensor, shape (T, N, L)
        """
        if grad not in GRAD_METHODS:
            raise ValueError(f"`grad` must be one of {GRAD_METHODS}, got {grad!r}.")
        z0 = as_tensor(z0)
        t = np.asarray(t, dtype=np.float64)
        if t.ndim != 1 or t.size < 1 or t[0] < t0 or np.any(np.diff(t) <= 0):
            raise ValueError(f"`t` must be a strictly increasing 1-d array starting at or after "
                             f"t0={t0}, got shape {t.shape} from {t.min() if t.size else None}.")
        grid = t if t[0] == t0 else np.concatenate([[float(t0)], t])
        drop = grid.size - t.size
        if grid.size == 1:                          # only t0 asked for
            return z0.reshape((1,) + tuple(z0.shape))
        N, L = z0.shape
        opts = {"rtol": RTOL, "atol": ATOL} | dict(solver or {})
        if grad == "numba" and z0.dtype == np.float64 and not is_device_array(z0.data):
            ys = odeint(self.field, z0.reshape(N * L), grid, params=[self.theta], stats=stats,
                        **opts).reshape(grid.size, N, L)
        else:
            adj = "backprop" if grad == "backprop" else "continuous"
            ys = odeint(self.dynamics(presliced=adj == "backprop"), z0, grid, params=[self.theta],
                        adjoint=adj, stats=stats, **opts)
        return ys[drop:] if drop else ys

    def posterior(self, x, t, mask, t0=0.0):
        """``mu, logvar`` of ``q(z0 | x)`` for a batch on a grid.

        Parameters
        ----------
        x : ndarray, shape (N, T, D)
            Values on the time grid; only entries where ``mask`` is true are read.
        t : ndarray, shape (T,)
        mask : ndarray of bool, shape (N, T)
        """
        idx, valid = compact(mask)                   # the index structure stays on the host
        t_obs = np.asarray(t)[idx]
        gaps = previous_gaps(t_obs, valid, t0)
        return self.encoder(Tensor(_gather(_values(x).astype(self.theta.dtype, copy=False), idx)),
                            gaps, valid)

    # -------------------------------------------------------------- the loss
    def loss(self, x, t, mask, rng, t0=0.0, grad="numba", kl_weight=1.0, solver=None, stats=None):
        """The negative ELBO, averaged over the batch's sequences.

        Parameters
        ----------
        x : ndarray, shape (N, T, D)
        t : ndarray, shape (T,)
        mask : ndarray of bool, shape (N, T)
            Which grid times each sequence observed.
        rng : Generator
            Source of the reparameterization noise.
        kl_weight : float
            Multiplies the KL term (1 is the ELBO).
        grad, solver, stats
            As :meth:`trajectories`.

        Returns
        -------
        loss : Tensor, shape ()
        info : dict
            ``nll`` and ``kl`` (per sequence, batch means, floats).
        """
        x = _values(x).astype(self.theta.dtype, copy=False)
        xp = get_xp(x)
        idx, valid = compact(mask)                                          # on the host
        rows = np.arange(len(idx))[:, None]
        x_obs = _gather(x, idx)                                             # (N, K, D)
        mu, logvar = self.encoder(Tensor(x_obs), previous_gaps(np.asarray(t)[idx], valid, t0), valid)
        eps = xp.asarray(rng.standard_normal(mu.shape).astype(mu.dtype))   # host noise: one copy
        z0 = mu + F.exp(0.5 * logvar) * Tensor(eps)                # reparameterized sample
        cols, t_u, _ = union_grid(t, mask)
        zs = self.trajectories(z0, t_u, t0, grad=grad, solver=solver, stats=stats)   # (T_u, N, L): one solve
        # decode only the (time, sequence) pairs observed: K of the T_u rows per sequence
        # (at n = 30 of 100 that is 30% of the decoder's work of decoding all of them)
        pos = np.searchsorted(cols, idx)
        if xp is not np:                                                     # index arrays on the device
            pos, rows = xp.asarray(pos), xp.asarray(rows)
        z_obs = zs[pos, rows]                                                # (N, K, L)
        xhat = self.decode(z_obs)                                            # (N, K, D)
        logvar_x = 2.0 * math.log(self.obs_std)
        nll = gaussian_nll(Tensor(x_obs), xhat, logvar_x, reduction="none")
        if not valid.all():                                                  # padding of short rows
            nll = nll * Tensor(xp.asarray(valid[..., None].astype(x.dtype)))
        nll = nll.sum(axis=(1, 2))                                           # (N,)
        kl = kl_diag_gaussians(mu, logvar, reduction="none")                 # (N,)
        loss = (nll + kl_weight * kl).mean()
        return loss, {"nll": host_float(nll.data.mean()), "kl": host_float(kl.data.mean())}

    # -------------------------------------------------------------- prediction
    def predict(self, x, t, mask, t_pred, t0=0.0, n_samples=0, rng=None):
        """Decoded trajectories at ``t_pred`` (no gradients).

        With ``n_samples=0`` the posterior mean ``mu`` is decoded, shape (N, T', D);
        otherwise ``n_samples`` posterior samples, shape (n_samples, N, T', D).
        Also returns the latent states ``(N, T', L)`` of the mean.
        """
        with no_grad():
            mu, logvar = self.posterior(x, t, mask, t0)
            xp = get_xp(mu.data)
            zs = self.trajectories(mu, t_pred, t0, grad="continuous")
            mean = xp.swapaxes(self.decode(zs).data, 0, 1)
            lat = xp.swapaxes(zs.data, 0, 1)
            if not n_samples:
                return mean, lat
            rng = init.as_rng(rng)
            out = []
            for _ in range(int(n_samples)):
                noise = xp.asarray(rng.standard_normal(mu.shape).astype(mu.dtype))
                z0 = mu.data + xp.exp(0.5 * logvar.data) * noise
                zs = self.trajectories(Tensor(z0), t_pred, t0, grad="continuous")
                out.append(xp.swapaxes(self.decode(zs).data, 0, 1))
            return xp.stack(out), lat


# ------------------------------------------------------------------ the RNN baselines
class RNNBaseline(Module):
    """An RNN (25 units) that predicts the next observation, with or without the time gap.

    At observation ``x_k`` it reads ``[x_k, (t_{k+1} - t_k) / dt_scale]`` (or ``x_k`` alone)
    and predicts ``x_{k+1} = x_k + out(h_k)``; trained by the Gaussian NLL of the
    predictions with teacher forcing, extrapolated by feeding its own predictions.

    With ``scaled_step=True`` (an extra baseline, not one of the paper's two) the
    increment is multiplied by the gap: ``x_{k+1} = x_k + Δ_k out(h_k)`` with
    ``Δ_k = (t_{k+1} - t_k) / dt_scale``, so ``out`` is a velocity and a rollout at
    gap 1 moves one grid step's worth, whatever the average gap seen in training.
    """

    def __init__(self, obs_dim=2, hidden=25, time_input=True, obs_std=0.1, dt_scale=1.0, rng=None,
                 dtype=DEFAULT_DTYPE, scaled_step=False):
        super().__init__()
        if scaled_step and not time_input:
            raise ValueError("`scaled_step=True` multiplies the output by the time gap, so it needs "
                             "`time_input=True` (the model must be given the gaps).")
        rng = init.as_rng(rng)
        self.time_input, self.obs_std, self.dt_scale = bool(time_input), float(obs_std), float(dt_scale)
        self.scaled_step = bool(scaled_step)
        self.cell = RNNCell(obs_dim + int(self.time_input), hidden, rng=rng, dtype=dtype)
        self.out = Linear(hidden, obs_dim, rng=rng, dtype=dtype)

    def step(self, x, gap, h):
        """One step: ``x`` (N, D) Tensor, ``gap`` (N,) array -> ``(h, prediction)``."""
        inp = x
        if self.time_input:
            g = get_xp(x.data).asarray((gap / self.dt_scale).astype(x.dtype)[:, None])    # host gaps: one copy
            inp = F.concatenate([x, Tensor(g)], axis=1)
        h = self.cell(inp, h)
        if self.scaled_step:
            return h, x + Tensor(g) * self.out(h)
        return h, x + self.out(h)

    def loss(self, x, t, mask):
        """Mean over sequences of the summed next-step Gaussian NLL (shapes as LatentODE.loss)."""
        idx, valid = compact(mask)
        xs = Tensor(_gather(_values(x), idx))                # (N, K, D)
        xp = get_xp(xs.data)
        ts = np.asarray(t)[idx]
        K = idx.shape[1]
        if K < 2:
            raise ValueError("`mask` must give some sequence two observations (one to read, one to predict).")
        inp = xs.data[:, :-1]
        if self.time_input:
            gaps = (ts[:, 1:] - ts[:, :-1]) / self.dt_scale
            inp = xp.concatenate([inp, xp.asarray(gaps.astype(inp.dtype)[..., None])], axis=2)
        # the state before predicting x_{k+1} has read x_0..x_k; padding (valid false at
        # k + 1) leaves it as it was, and its term is masked out below
        hs = _elman_steps(self.cell, inp, valid[:, 1:], range(K - 1))
        step = self.out(F.stack(hs, axis=1))                            # (N, K-1, D)
        if self.scaled_step:
            step = Tensor(xp.asarray(gaps.astype(xs.dtype)[..., None])) * step
        pred = xs[:, :-1] + step
        logvar_x = 2.0 * math.log(self.obs_std)
        nll = gaussian_nll(xs[:, 1:], pred, logvar_x, reduction="none")
        if not valid.all():
            nll = nll * Tensor(xp.asarray(valid[:, 1:, None].astype(xs.dtype)))
        return nll.sum(axis=(1, 2)).mean()

    def predict(self, x, t, mask, t_pred):
        """Read the observations, then roll out to ``t_pred`` (after the last one): (N, T', D)."""
        idx, valid = compact(mask)
        t = np.asarray(t)
        t_pred = np.asarray(t_pred, dtype=np.float64)
        with no_grad():
            xs = Tensor(_gather(_values(x), idx))
            xp = get_xp(xs.data)
            ts = t[idx]
            N, K = idx.shape
            h = self.cell.initial_state(N)
            last = ts[np.arange(N), valid.sum(axis=1) - 1]
            if np.any(last >= t_pred[0]):
                raise ValueError("`t_pred` must start after every sequence's last observation.")
            pred = None
            for k in range(K):                   # the last valid step predicts x(t_pred[0])
                nxt_valid = valid[:, k + 1] if k + 1 < K else np.zeros(N, bool)
                nxt = ts[:, k + 1] if k + 1 < K else ts[:, k]
                gap = np.where(nxt_valid, nxt - ts[:, k], t_pred[0] - ts[:, k])
                h_new, p = self.step(xs[:, k], gap, h)
                v = xp.asarray(valid[:, k][:, None])
                h = Tensor(xp.where(v, h_new.data, h.data))
                pred = p if pred is None else Tensor(xp.where(v, p.data, pred.data))
            out = [pred.data]
            for j in range(1, t_pred.size):
                h, pred = self.step(pred, np.full(N, t_pred[j] - t_pred[j - 1]), h)
                out.append(pred.data)
        return xp.stack(out, axis=1)


# ------------------------------------------------------------------ the Poisson process
def poisson_log_likelihood(dynamics, rate, z0, event_times, t_start, t_end, event_mask=None,
                           params=(), adjoint="backprop", rtol=1e-6, atol=1e-8, **options):
    """``sum_i log lambda(z(t_i)) - int_{t_start}^{t_end} lambda(z(t)) dt`` per sequence.

    The integral is a fifth state component: the augmented state ``[z, Lambda]`` with
    ``dLambda/dt = lambda(z)`` is solved in the same call as ``z``, to the union of the
    batch's event times (paper Sec. 5, eq. for ``log p(t_1 .. t_N | t_start, t_end)``).

    Parameters
    ----------
    dynamics : callable ``(t, z) -> dz``, Tensors (N, L)
    rate : callable ``z -> lambda``, (N, L) -> (N,), positive
    z0 : Tensor, shape (N, L)
        State at ``t_start``.
    event_times : ndarray, shape (N, M)
        In ``(t_start, t_end]``; entries where ``event_mask`` is false are ignored.
    params : list of Tensor
        Parameters of ``dynamics`` and ``rate`` (needed by the continuous adjoint).
    adjoint, rtol, atol, **options
        Passed to :func:`nodeform.odeint` (``method``, ``step_size``, ...).

    Returns
    -------
    Tensor, shape (N,)
    """
    z0 = as_tensor(z0)
    ev = np.atleast_2d(np.asarray(event_times, dtype=np.float64))
    mask = np.ones(ev.shape, bool) if event_mask is None else np.asarray(event_mask, dtype=bool)
    N, L = z0.shape
    if ev.shape[0] != N or mask.shape != ev.shape:
        raise ValueError(f"`event_times` {ev.shape} and `event_mask` {mask.shape} must be (N={N}, M).")
    if np.any(mask & ((ev <= t_start) | (ev > t_end))):
        raise ValueError(f"every event must lie in (t_start, t_end] = ({t_start}, {t_end}].")
    t_u = np.unique(np.concatenate([[t_start, t_end], ev[mask]]))
    hit = np.zeros((t_u.size, N))                                   # events per (time, sequence)
    rows = np.nonzero(mask)
    np.add.at(hit, (np.searchsorted(t_u, ev[rows]), rows[0]), 1.0)

    def aug(t, s):                                                  # s = [z | Lambda], (N, L + 1)
        z = s[:, :L]
        return F.concatenate([dynamics(t, z), rate(z).reshape(N, 1)], axis=1)

    s0 = F.concatenate([z0, Tensor(np.zeros((N, 1), z0.dtype))], axis=1)
    S = odeint(aug, s0, t_u, params=list(params), adjoint=adjoint, rtol=rtol, atol=atol,
               **options)                                                      # (T, N, L+1)
    lam = rate(S[:, :, :L].reshape(t_u.size * N, L)).reshape(t_u.size, N)
    log_term = (F.log(lam) * Tensor(hit)).sum(axis=0)
    return log_term - S[-1, :, L]


class PoissonLatentODE(Module):
    """A latent trajectory ``z(t)`` from a learned ``z0`` and a rate ``softplus(w . z + b)``.

    The toy model of Fig. 7: one process, ``z0`` a parameter (no encoder), dynamics
    one hidden layer of ``hidden`` tanh units.
    """

    def __init__(self, latent_dim=2, hidden=20, rng=None, dtype=DEFAULT_DTYPE):
        super().__init__()
        rng = init.as_rng(rng)
        self.latent_dim = int(latent_dim)
        self.z0 = Parameter(rng.standard_normal(latent_dim).astype(dtype))
        self.f1 = Linear(latent_dim, hidden, rng=rng, dtype=dtype)
        self.f2 = Linear(hidden, latent_dim, rng=rng, dtype=dtype)
        self.head = Linear(latent_dim, 1, rng=rng, dtype=dtype)

    def dynamics(self, t, z):
        return self.f2(F.tanh(self.f1(z)))

    def rate(self, z):
        return F.softplus(self.head(z)).reshape(-1)

    def log_likelihood(self, event_times, t_start, t_end, event_mask=None, **kw):
        """Per realization (row of ``event_times``), all sharing this process's ``z0``."""
        n = np.atleast_2d(event_times).shape[0]
        z0 = F.broadcast_to(self.z0.reshape(1, -1), (n, self.latent_dim))
        return poisson_log_likelihood(self.dynamics, self.rate, z0, event_times, t_start, t_end,
                                      event_mask, params=self.parameters(), **kw)

    def rate_curve(self, t):
        """``lambda(z(t))`` at increasing times ``t`` starting at the process start (array)."""
        with no_grad():
            zs = odeint(self.dynamics, self.z0.reshape(1, -1), np.asarray(t, dtype=np.float64),
                        params=self.parameters(), rtol=1e-6, atol=1e-8)
            return self.rate(zs.reshape(-1, self.latent_dim)).data
