"""The Table 2 protocol: every choice the paper leaves open, in one dataclass, and its runner.

Paper Sec. 5.1 fixes the data set's size and shape, the sizes of the models and
the metric's span (paper.md §4); :class:`Protocol` holds everything else, and
:func:`run_protocol` trains the latent ODE and the RNN baselines under it and
returns the six Table 2 numbers (plus the no-Δt RNN) with the choices attached, so a
results file always says how its numbers were made. Chapter 7 explains each choice
and what the alternatives gave.
"""
from __future__ import annotations

import time
from dataclasses import asdict, dataclass, field

import numpy as np

from nodeform import optim
from nodeform.adjoint.odeint import SolveStats
from nodeform.autodiff.tensor import Tensor
from nodeform.data.spirals import NOISE_STD, make_spirals, subsample
from nodeform.models.latent_ode import LatentODE, RNNBaseline


@dataclass
class Protocol:
    """The open choices of the spiral experiment (defaults: the protocol chapter 7 adopts).

    Attributes
    ----------
    noise_std : float
        Observation noise, data units (torchdiffeq's 0.3).
    dt : float or None
        Model-time step between grid points; None is the curve's own step
        (6π / (curve_points - 1)).
    curve_points : int
        Grid points on the spiral curve's [0, 6π] (:func:`nodeform.data.spirals.make_spirals`):
        500 puts 3.8 rad in the observed 100 points and 3.8 more in the extrapolated 100; 1000
        halves both.
    normalize : bool
        Train and score on ``(x - mean) / scale`` of the training observations.
    iters_ode, iters_rnn : int
        Full-batch Adam iterations.
    lr : float
        Adam's learning rate (at the first iteration, when ``lr_final`` is set).
    lr_final : float or None
        None: constant ``lr``. Otherwise the rate decays exponentially from ``lr`` to
        ``lr_final`` over the model's iterations (:func:`lr_schedule`), the same for every model.
    obs_std : float or None
        Likelihood std in the units trained on; None means the true noise std.
    grad : str
        Gradient method of the latent ODE's solve (see ``LatentODE.trajectories``).
    rmse_target : {"noisy", "truth"}
        What the extrapolation is compared with (both are reported).
    seed : int
        Seed of the data (spirals, noise, subsampling) and, unless ``init_seed`` is set,
        of the weights and the latent ODE's sampling noise.
    init_seed : int or None
        Seed of the weights and the latent ODE's noise alone (a second training of the
        same data); None: ``seed``. Used by ``nodeform.experiments.table2_spirals``.
    cw_curve : {"torchdiffeq", "mirror"}
        The clockwise arm (see :func:`nodeform.data.spirals.spiral_curve`). "mirror": the
        counter-clockwise arm reflected, so the two directions differ only in direction
        (the paper: "half clockwise, half counter-clockwise"); torchdiffeq's clockwise arm
        r = 15/θ grows from at most 3.1 in the observed spans to 15 in the extrapolated ones.
    clip_norm : float or None
        Before each Adam step the gradient of all parameters is scaled down to this
        global norm when it is larger (None: no clipping, as torchdiffeq's example; the
        default). Clipping at 100 rescued the tanh model at n = 100, whose recognition RNN's
        gradient exploded (4e6 at iteration 250); with ELU dynamics and a ReLU decoder it
        *hurts* there: typical norms are 1e3-1e4, so the clip acts on every step, and a
        spike in the encoder's gradient then shrinks every other parameter's step too
        (n = 100 latent ODE, 4,000 iterations, two seeds: 0.486 / 0.435 with the clip,
        0.136 / 0.170 without; a third seed without scored 0.391: chapter 7,
        bench/RESULTS-latent-ode.md).
    dyn_act, dec_act : str
        Hidden activations of the latent ODE's dynamics and decoder (the paper does not
        say; torchdiffeq's example, the only trace, uses ELU and ReLU, adopted here). A tanh
        decoder saturates: it cannot place points outside the radii it was trained on,
        which a quarter of the extrapolated test points are (chapter 7).
    ode_dtype : {"float64", "float32"}
        Precision of the latent ODE's training and prediction (float32 is torch's default
        and about 1.3x faster here; see bench/RESULTS-latent-ode.md).
    """

    noise_std: float = NOISE_STD
    dt: float | None = None
    curve_points: int = 500
    normalize: bool = True
    iters_ode: int = 4000
    iters_rnn: int = 4000
    lr: float = 0.01
    lr_final: float | None = None
    obs_std: float | None = None
    grad: str = "backprop"
    rmse_target: str = "noisy"
    seed: int = 0
    init_seed: int | None = None
    cw_curve: str = "mirror"
    ode_dtype: str = "float64"
    dyn_act: str = "elu"
    dec_act: str = "relu"
    clip_norm: float | None = None
    n_obs: tuple = field(default_factory=lambda: (30, 50, 100))


def prepare(p, n_obs):
    """Data for one ``n``: a dict of train / test arrays in the units trained on."""
    kw = {} if p.dt is None else {"dt": p.dt}
    d = make_spirals(noise_std=p.noise_std, seed=p.seed, cw_curve=p.cw_curve,
                     curve_points=p.curve_points, **kw)
    mean, scale = d.normalizer() if p.normalize else (np.zeros(2), 1.0)
    X, Y = (d.noisy - mean) / scale, (d.truth - mean) / scale
    idx = subsample(len(X), d.n_points, n_obs, seed=p.seed)
    mask = np.zeros((len(X), d.n_points), bool)
    mask[np.arange(len(X))[:, None], idx] = True
    P = d.n_points
    return {"data": d, "scale": scale, "mean": mean, "t": d.t[:P], "t_ext": d.t[P:],
            "x_tr": X[d.train, :P], "m_tr": mask[d.train], "x_te": X[d.test, :P], "m_te": mask[d.test],
            "y_te": X[d.test, P:], "truth_te": Y[d.test, P:], "obs_std": p.noise_std / scale,
            "cw_te": d.clockwise[d.test]}


def lr_schedule(p, iters):
    """Adam's learning rate for ``iters`` iterations under ``p``: a number or ``step -> lr``."""
    if p.lr_final is None:
        return p.lr
    if not p.lr_final > 0:
        raise ValueError(f"`lr_final` must be positive (or None), got {p.lr_final}.")
    lr0, ratio, total = float(p.lr), float(p.lr_final) / float(p.lr), float(max(1, int(iters) - 1))

    def lr(step):
        return lr0 * ratio ** (min(step, total) / total)
    return lr


#: The models of Table 2 (``rnn_dt_step`` is the extra RNN (x, Δt) whose output step is
#: multiplied by the gap, ``RNNBaseline(scaled_step=True)``, not one of the paper's rows).
MODEL_KINDS = ("latent_ode", "rnn_dt", "rnn", "rnn_dt_step")


def weight_seed(p):
    """Seed of the weights and the latent ODE's sampling noise: ``p.init_seed``, else ``p.seed``."""
    return p.seed if p.init_seed is None else p.init_seed


def make_model(kind, p, D, rng=None):
    """An untrained model of one of :data:`MODEL_KINDS` under ``p``, for the data ``D``.

    The latent ODE gets ``p``'s precision and activations; the RNNs run in float64.
    ``rng`` seeds the weights (None: unseeded, e.g. before loading a state dict).
    """
    step = D["t"][1] - D["t"][0]
    obs_std = p.obs_std or D["obs_std"]
    if kind == "latent_ode":
        return LatentODE(obs_std=obs_std, dt_scale=step, rng=rng, dtype=np.dtype(p.ode_dtype),
                         dyn_act=p.dyn_act, dec_act=p.dec_act)
    if kind not in MODEL_KINDS:
        raise ValueError(f"unknown model kind {kind!r}; expected one of {MODEL_KINDS}.")
    return RNNBaseline(time_input=kind != "rnn", obs_std=obs_std, dt_scale=step, rng=rng,
                       scaled_step=kind == "rnn_dt_step")


def clip_grad_norm(params, max_norm):
    """Scale the gradients of ``params`` in place so their global L2 norm is at most ``max_norm``.

    Returns the norm before clipping (``max_norm=None`` only measures it).
    """
    grads = [p.grad.data if isinstance(p.grad, Tensor) else p.grad for p in params if p.grad is not None]
    norm = float(np.sqrt(sum(float(np.sum(np.square(g, dtype=np.float64))) for g in grads)))
    if max_norm is not None and norm > max_norm:
        for g in grads:
            g *= max_norm / norm
    return norm


def rmse(pred, target):
    """Root of the mean squared error over every spiral, time point and coordinate."""
    return float(np.sqrt(np.mean((np.asarray(pred) - np.asarray(target)) ** 2)))


def train_latent_ode(p, D, iters=None, log_every=0, rng_seed=None):
    """Fit a :class:`LatentODE` on ``D`` (from :func:`prepare`); returns ``(model, history)``."""
    iters = p.iters_ode if iters is None else iters
    seed = weight_seed(p) if rng_seed is None else rng_seed
    model = make_model("latent_ode", p, D, rng=seed)
    opt = optim.Adam(model.parameters(), lr=lr_schedule(p, iters))
    rng = np.random.default_rng([seed, 1])
    hist, st = [], SolveStats()
    t0 = time.perf_counter()
    for it in range(iters):
        opt.zero_grad()
        loss, info = model.loss(D["x_tr"], D["t"], D["m_tr"], rng, grad=p.grad, stats=st)
        loss.backward()
        clip_grad_norm(model.parameters(), p.clip_norm)
        opt.step()
        hist.append((float(loss.data), st.nfe_forward, st.nfe_backward))
        st.reset()
        if log_every and (it % log_every == 0 or it == iters - 1):
            print(f"  latent ODE it {it:5d}  -ELBO {float(loss.data):10.2f}  kl {info['kl']:7.2f}  "
                  f"nfe {hist[-1][1]:3d}/{hist[-1][2]:4d}  {time.perf_counter() - t0:6.1f} s", flush=True)
    return model, hist


def train_rnn(p, D, time_input=True, iters=None, log_every=0, rng_seed=None):
    """Fit an :class:`RNNBaseline`; returns ``(model, history)``."""
    iters = p.iters_rnn if iters is None else iters
    seed = weight_seed(p) if rng_seed is None else rng_seed
    model = make_model("rnn_dt" if time_input else "rnn", p, D, rng=seed)
    opt = optim.Adam(model.parameters(), lr=lr_schedule(p, iters))
    hist = []
    t0 = time.perf_counter()
    for it in range(iters):
        opt.zero_grad()
        loss = model.loss(D["x_tr"], D["t"], D["m_tr"])
        loss.backward()
        clip_grad_norm(model.parameters(), p.clip_norm)
        opt.step()
        hist.append(float(loss.data))
        if log_every and (it % log_every == 0 or it == iters - 1):
            print(f"  RNN(dt={time_input}) it {it:5d}  nll {hist[-1]:10.2f}  "
                  f"{time.perf_counter() - t0:6.1f} s", flush=True)
    return model, hist


def scores(pred, D):
    """RMSE of an extrapolation ``(N_test, 100, 2)`` against the noisy points and the truth.

    Also per direction (``noisy_cw``, ``noisy_ccw``) and over the first 50 extrapolated
    points only (``noisy_first50``), to see where the error comes from, and the mean over
    spirals of each spiral's RMSE (``noisy_mean_of_per_spiral``), another reading of the metric.
    """
    cw = D["cw_te"]
    return {"noisy": rmse(pred, D["y_te"]), "truth": rmse(pred, D["truth_te"]),
            "noisy_data_units": rmse(pred, D["y_te"]) * D["scale"],
            "noisy_cw": rmse(pred[cw], D["y_te"][cw]), "noisy_ccw": rmse(pred[~cw], D["y_te"][~cw]),
            "noisy_first50": rmse(pred[:, :50], D["y_te"][:, :50]),
            "noisy_mean_of_per_spiral": float(np.mean(np.sqrt(np.mean((pred - D["y_te"]) ** 2,
                                                                        axis=(1, 2)))))}


def _run_one(p, n, iters_scale, log_every):
    """Train the three models at one ``n``: ``(results, data, [latent_ode, rnn_dt, rnn])``."""
    D = prepare(p, n)
    res = {}
    t0 = time.perf_counter()
    ode, h_ode = train_latent_ode(p, D, iters=max(1, int(p.iters_ode * iters_scale)),
                                  log_every=log_every)
    pred, _ = ode.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"])
    res["latent_ode"] = scores(pred, D) | {"train_s": time.perf_counter() - t0,
                                           "final_loss": h_ode[-1][0],
                                           "nfe_forward_last": h_ode[-1][1]}
    models = [ode]
    for ti, name in ((True, "rnn_dt"), (False, "rnn")):
        t0 = time.perf_counter()
        rnn, h = train_rnn(p, D, time_input=ti, iters=max(1, int(p.iters_rnn * iters_scale)),
                           log_every=log_every)
        pred = rnn.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"])
        res[name] = scores(pred, D) | {"train_s": time.perf_counter() - t0, "final_loss": h[-1]}
        models.append(rnn)
    print(f"n={n}: " + ", ".join(f"{k} {v['noisy']:.4f}" for k, v in res.items()), flush=True)
    return res, D, models


def _run_one_in_child(p, n, iters_scale, log_every):
    res, _, models = _run_one(p, n, iters_scale, log_every)
    return res, [m.state_dict() for m in models]


def run_protocol(p, log_every=0, iters_scale=1.0, keep=None, workers=1):
    """Train the three models at every ``n`` of ``p.n_obs``; returns a JSON-ready dict.

    Parameters
    ----------
    p : Protocol
    log_every : int
        Print the training loss every so many iterations (0: never).
    iters_scale : float
        Shortens every training (quick runs).
    keep : dict, optional
        Receives ``{n: (D, latent_ode, rnn_dt, rnn)}``: data and trained models, for figures.
    workers : int
        Train the ``n`` values in this many processes at once (results are identical:
        every training is seeded by ``p`` alone, :func:`weight_seed`).
    """
    out = {"protocol": asdict(p), "results": {}}
    if workers <= 1:
        for n in p.n_obs:
            res, D, models = _run_one(p, n, iters_scale, log_every)
            out["results"][str(n)] = res
            if keep is not None:
                keep[n] = (D, *models)
        return out
    from concurrent.futures import ProcessPoolExecutor
    with ProcessPoolExecutor(max_workers=int(workers)) as ex:
        futs = {n: ex.submit(_run_one_in_child, p, n, iters_scale, log_every) for n in p.n_obs}
        for n in p.n_obs:
            res, states = futs[n].result()
            out["results"][str(n)] = res
            if keep is not None:
                D = prepare(p, n)
                models = [make_model(kind, p, D) for kind in ("latent_ode", "rnn_dt", "rnn")]
                for m, st in zip(models, states):
                    m.load_state_dict(st)
                keep[n] = (D, *models)
    return out
