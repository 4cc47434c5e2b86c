# %% [markdown]
# # Chapter 7 — Latent ODEs for irregularly sampled time series
#
# **Goal.** Build the paper's generative time-series model (Chen et al. 2018, Sec. 5 and
# App. E): a recognition RNN reads a sequence backwards and proposes a distribution over an
# initial latent state $z_0$; a time-invariant neural ODE carries $z_0$ to every observation
# time; a decoder maps latent states to data. Train it by the ELBO on spirals observed at
# 30, 50 or 100 irregular times, extrapolate 100 steps beyond the data, and compare with RNN
# baselines (Table 2, Figs. 8–9). Then fit a Poisson process whose rate is a function of a
# latent ODE state, with the integral of the rate solved in the same ODE call (Fig. 7).
#
# **You will learn** how to batch sequences observed at different times into *one* solve
# (the union of their times plus a mask), how the ELBO of a latent ODE is assembled from
# pieces you already have (chapters 1–3), and how much an under-specified protocol can
# move a paper's headline numbers.
#
# Prerequisites: chapter 1 (autodiff), chapter 3 (`nf.odeint` and its two gradient
# methods). Modules used: `nodeform.odeint`, `nodeform.nn` (`RNNCell`, `gaussian_nll`,
# `kl_diag_gaussians`), `nodeform.optim`, `nodeform.data.spirals`,
# `nodeform.data.events`, `nodeform.models.latent_ode`, `nodeform.models.spiral_protocol`.
# Time to work through: about 90 minutes (training Table 2 from scratch takes about two hours on
# two cores; the committed results make the full run take seconds).

# %%
import json
import os
import time

import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import nodeform as nf
from nodeform import nn, optim
from nodeform.data.events import TOY_RATE_MAX, poisson_events, toy_rate
from nodeform.data.spirals import make_spirals, subsample
from nodeform.models.latent_ode import LatentODE, PoissonLatentODE
from nodeform.experiments import table2_spirals
from nodeform.models.spiral_protocol import Protocol, prepare, run_protocol
from nodeform.plotting import figures_dir, is_quick, savefig

QUICK = is_quick()
#: Milestones of the full run (iterations per model): the last is the table's.
TABLE2_MILESTONES = (100, 250, 500, 750, 1000, 1250, 1500, 1750, 2000, 2500, 3000, 3500, 4000)
#: Trainings of every model (seeds of the weights and of the latent ODE's noise; the data are
#: the same): the table gives their mean and range, the figures use the first.
TABLE2_SEEDS = (0, 1)
T_START = time.perf_counter()

# %% [markdown]
# ## 1. The data: spirals, irregularly observed
#
# The paper's data set: 1,000 two-dimensional spirals, each starting at a different point,
# 100 equally spaced time steps, half clockwise and half counter-clockwise, Gaussian noise;
# each model sees $n \in \{30, 50, 100\}$ of the 100 points (drawn without replacement) and
# is scored on the 100 time points that follow. The counter-clockwise curve is that of the
# paper-era torchdiffeq example (`nodeform/data/spirals.py` states every parameter): an
# Archimedean arm $r = 0.3\,\theta$ around $(+5, 0)$. The clockwise one is the same arm
# mirrored ($y \to -y$) and moved to $(-5, 0)$, so the two directions differ only in
# direction; torchdiffeq's own clockwise arm, $r = 15/\theta$, is kept as an alternative
# (`cw_curve="torchdiffeq"`; section 4 says why it was dropped and what it gives). Both arms
# are orbits of *autonomous* planar systems ($\dot r = 0.3$, $\dot\theta = \pm 1$ in curve
# time), so a time-invariant latent ODE can represent them, and every spiral
# can use the same model times $t_k = k\,\Delta t$, whatever its start.

# %%
data = make_spirals(seed=0, cw_curve=Protocol.cw_curve)     # the arms of the adopted protocol (section 4)
mean, scale = data.normalizer()
print(f"{len(data.noisy)} spirals, {data.n_points} observed + {data.n_extrap} held-out points, "
      f"{data.clockwise.sum()} clockwise; dt = {data.t[1]:.4f}")
print(f"normalization: mean {np.round(mean, 3)}, scale {scale:.3f}; the noise 0.3 is "
      f"{0.3 / scale:.4f} in normalized units")
# 1000 spirals, 100 observed + 100 held-out points, 500 clockwise; dt = 0.0378

# %% [markdown]
# ## 2. The model, written out
#
# **Generative model** (paper eqs. 11–13): $z_{t_0} \sim \mathcal N(0, I)$;
# $z_{t_1}, \dots, z_{t_N} = \mathrm{ODESolve}(z_{t_0}, f, \theta_f, t_0, \dots, t_N)$;
# $x_{t_i} \sim \mathcal N(\mathrm{dec}(z_{t_i}), \sigma^2 I)$. The field $f(z)$ does not
# depend on $t$, so a trajectory can be run past the data (extrapolation).
#
# **Inference.** A recognition RNN reads the observations **backwards in time**, each with
# the gap to the previous observation (to $t_0$ for the first, so the network knows where
# $z_0$ sits), and outputs $q(z_0 \mid x) = \mathcal N(\mu, \mathrm{diag}\,\sigma_q^2)$.
#
# **The ELBO.** For any $q$, Jensen's inequality on
# $\log p(x) = \log \mathbb E_{q(z_0)}[p(x \mid z_0)\,p(z_0)/q(z_0)]$ gives
#
# $$\log p(x) \ge \mathbb E_{q(z_0)}\Big[\sum_i \log p(x_{t_i} \mid z_{t_i})\Big]
#   - \mathrm{KL}\big(q(z_0 \mid x)\,\|\,\mathcal N(0, I)\big),$$
#
# because $z_{t_i}$ is a deterministic function of $z_0$. The expectation is estimated with
# one sample $z_0 = \mu + \sigma_q \odot \varepsilon$, $\varepsilon \sim \mathcal N(0, I)$ (the
# reparameterization makes it differentiable in $\mu, \sigma_q$), and the KL between
# diagonal Gaussians is analytic: $\tfrac12\sum_j(\sigma_{q,j}^2 + \mu_j^2 - 1 - \log\sigma_{q,j}^2)$.
# (App. E prints $\log p(z_0) - \log q$ without the minus sign; this is the standard form.)
#
# **One solve for the whole batch.** Sequence $i$ is observed at its own times. Stack all
# $z_0^{(i)}$ into one state of shape $(N, 4)$, solve once to the **union** of the batch's
# times, decode everything, and let a mask $m_{ik}$ (1 where sequence $i$ observed union
# time $k$) pick the likelihood terms. One adaptive solve instead of $N$: the step size is
# shared (the error norm covers every sequence), and every operation is a batched array
# operation. Here is the whole model in about forty lines of Tensor code.

# %%
def minimal_neg_elbo(W, x, t, mask, eps, obs_std, dt_scale):
    """-ELBO per sequence, averaged. W: dict of Tensors; x (N, T, 2); t (T,); mask (N, T)."""
    N = len(x)
    n = mask.sum(axis=1)
    assert np.all(n == n[0]), "this minimal version wants the same count per sequence"
    idx = np.nonzero(mask)[1].reshape(N, n[0])                    # (N, n) observed columns
    gaps = np.diff(t[idx], axis=1, prepend=0.0) / dt_scale        # to the previous obs (t0 = 0)
    x_obs = nf.Tensor(x[np.arange(N)[:, None], idx])              # (N, n, 2)
    g = nf.Tensor(gaps[..., None])
    h = nf.Tensor(np.zeros((N, 25)))
    for k in range(n[0] - 1, -1, -1):                             # backwards in time
        inp = nf.concatenate([x_obs[:, k], g[:, k]], axis=1)      # (N, 3)
        h = nf.tanh(inp @ W["Wih"].T + W["bih"] + h @ W["Whh"].T)
    out = h @ W["Wo"].T + W["bo"]                                 # (N, 8)
    mu, logvar = out[:, :4], out[:, 4:]
    z0 = mu + nf.exp(0.5 * logvar) * nf.Tensor(eps)               # reparameterized sample

    def f(t_, z):                                                 # time-invariant dynamics (ELU)
        return nf.elu(z @ W["W1"].T + W["b1"]) @ W["W2"].T + W["b2"]
    cols = np.flatnonzero(mask.any(axis=0))                       # the union of times
    drop = int(t[cols[0]] > 0.0)                                  # start the solve at t0 = 0
    grid = np.concatenate([[0.0], t[cols]]) if drop else t[cols]
    zs = nf.odeint(f, z0, grid, params=[W[k] for k in ("W1", "b1", "W2", "b2")],
                   adjoint="backprop", rtol=1e-3, atol=1e-4)[drop:]  # (T_u, N, 4): ONE solve
    xhat = nf.swapaxes(nf.relu(zs @ W["D1"].T + W["c1"]) @ W["D2"].T + W["c2"], 0, 1)   # ReLU decoder
    var = obs_std ** 2
    nll = 0.5 * (np.log(2 * np.pi * var) + (nf.Tensor(x[:, cols]) - xhat) ** 2 / var)
    nll = (nll * nf.Tensor(mask[:, cols, None].astype(float))).sum(axis=(1, 2))
    kl = 0.5 * (nf.exp(logvar) + mu * mu - 1.0 - logvar).sum(axis=1)
    return (nll + kl).mean()


# %% [markdown]
# The package's `LatentODE` (in `nodeform/models/latent_ode.py`) is the same model with
# the parts as modules (`nn.RNNCell`, `nn.Linear`), padding for sequences of unequal
# length, and a choice of gradient method. Give the written-out version the package
# model's weights and the same noise $\varepsilon$, and both must agree.

# %%
P0 = Protocol()                                  # the adopted protocol (section 4)
D30 = prepare(P0, 30)
xs, ms = D30["x_tr"][:64], D30["m_tr"][:64]
pkg = LatentODE(obs_std=D30["obs_std"], dt_scale=data.t[1], rng=0, dyn_act=P0.dyn_act, dec_act=P0.dec_act)
(W1, b1), (W2, b2) = pkg.field.unflatten(pkg.theta)
enc = pkg.encoder
W = {"Wih": enc.cell.ih.weight, "bih": enc.cell.ih.bias, "Whh": enc.cell.hh.weight,
     "Wo": enc.out.weight, "bo": enc.out.bias, "W1": W1, "b1": b1, "W2": W2, "b2": b2,
     "D1": pkg.dec1.weight, "c1": pkg.dec1.bias, "D2": pkg.dec2.weight, "c2": pkg.dec2.bias}
eps = np.random.default_rng(7).standard_normal((64, 4))
mine = minimal_neg_elbo(W, xs, D30["t"], ms, eps, D30["obs_std"], data.t[1])
theirs, _ = pkg.loss(xs, D30["t"], ms, np.random.default_rng(7), grad="backprop")
mine.backward()
g_mine = [p.grad.copy() if isinstance(p.grad, np.ndarray) else p.grad.data.copy() for p in pkg.parameters()]
pkg.zero_grad()
theirs.backward()
g_pkg = [p.grad if isinstance(p.grad, np.ndarray) else p.grad.data for p in pkg.parameters()]
rel = max(np.abs(a - b).max() / (np.abs(b).max() + 1e-300) for a, b in zip(g_mine, g_pkg))
print(f"-ELBO written out {float(mine.data):.10f}, package {float(theirs.data):.10f}; "
      f"largest relative gradient difference {rel:.1e}")
assert abs(float(mine.data) - float(theirs.data)) <= 1e-10 * abs(float(theirs.data))   # same number
assert rel <= 1e-9                                                                     # same gradient

# %% [markdown]
# The package adds a **Numba fast path**: the dynamics' parameters are one flat vector laid
# out as `nf.mlp_field` expects, so the same weights can run through the compiled field with
# hand-derived VJPs and the continuous adjoint (`grad="numba"`). The tests check it against
# the autodiff model (`tests/test_models_latent_ode.py`). Which one is faster depends on the
# batch: at the full batch of 800 the adjoint's 99 restarts (one per observation time) cost
# more than backprop through ~30 dopri5 evaluations, so training here uses `grad="backprop"`
# (see `bench/bench_latent_ode.py`).
#
# ## 3. A Poisson process with a latent rate (Fig. 7)
#
# Events at $t_1 < \dots < t_N$ in $[t_s, t_e]$ from a process of rate $\lambda(t)$ have
# log-likelihood (paper Sec. 5)
#
# $$\log p(t_1, \dots, t_N \mid t_s, t_e) = \sum_i \log\lambda(z(t_i)) - \int_{t_s}^{t_e}\lambda(z(t))\,dt .$$
#
# Let $\lambda = \mathrm{softplus}(w^\top z + b)$ depend on a latent ODE state. The integral is
# one more state component: $\dot\Lambda = \lambda(z)$, $\Lambda(t_s) = 0$, so
# $[z, \Lambda]$ is solved **in the same call**, to the union of all event times, and
# $\Lambda(t_e)$ is the integral. The toy data: 4 realizations of a process with the known
# rate $3 + 2\sin(0.9t)$ on $(0, 10]$, generated by thinning.

# %%
ev, ev_mask = poisson_events(toy_rate, 10.0, TOY_RATE_MAX, n_realizations=4, seed=0)
print(f"{int(ev_mask.sum())} events in {len(ev)} realizations")
pp = PoissonLatentODE(latent_dim=2, hidden=20, rng=1)
opt = optim.Adam(pp.parameters(), lr=0.03)
iters_pp = 15 if QUICK else 200
for it in range(iters_pp):
    opt.zero_grad()
    nll_pp = -pp.log_likelihood(ev, 0.0, 10.0, event_mask=ev_mask, rtol=1e-4, atol=1e-6).mean()
    nll_pp.backward()
    opt.step()
    if it % 100 == 0 or it == iters_pp - 1:
        print(f"  it {it:4d}  -log p per realization {float(nll_pp.data):8.3f}")
tt = np.linspace(0.0, 10.0, 400)
lam_fit = pp.rate_curve(tt)
with nf.no_grad():
    ll_true = float(np.mean([np.log(toy_rate(e[m])).sum() for e, m in zip(ev, ev_mask)])
                    - (30.0 + 2.0 * (1 - np.cos(9.0)) / 0.9))
print(f"-log p per realization: fitted {float(nll_pp.data):.3f}, true rate {-ll_true:.3f}")

fig, ax = plt.subplots(figsize=(7, 3))
ax.plot(tt, toy_rate(tt), "k--", label="true rate")
ax.plot(tt, lam_fit, "C3", label="learned $\\lambda(z(t))$")
for i, (e, m) in enumerate(zip(ev, ev_mask)):
    ax.plot(e[m], np.full(m.sum(), -0.3 - 0.25 * i), "|", color="C0", ms=5)
ax.set_xlabel("t")
ax.set_ylabel("rate")
ax.set_title(f"Fig. 7: Poisson process fit (ticks: events of the {len(ev)} realizations)")
ax.legend(loc="upper right")
savefig(fig, "ch07_poisson")

# %% [markdown]
# ## 4. The protocol (what the paper leaves open, and what it does to Table 2)
#
# paper.md §4 fixes the sizes (latent 4, RNN 25, dynamics and decoder one hidden layer of
# 20), the data's size and shape, and that RMSE is measured on 100 extrapolated test
# points. Everything below is our choice; `Protocol` in
# `nodeform/models/spiral_protocol.py` holds them and the results file repeats them. The rule
# where the paper is silent: follow torchdiffeq's `examples/latent_ode.py`, the only public
# trace of the authors' code, unless it cannot apply (it has no sub-sampling and no
# extrapolation).
#
# | choice | adopted | why |
# |---|---|---|
# | counter-clockwise arm, noise 0.3 | torchdiffeq's ($r = 0.3\theta$ around $(+5, 0)$) | the only public trace of the generator |
# | clockwise arm | the same arm mirrored, around $(-5, 0)$ | the paper says only "half clockwise, half counter-clockwise"; torchdiffeq's arm $r = 15/\theta$ was written for 100 points without extrapolation: past the observed span its radius grows from at most 3.1 to 15 (alternative below) |
# | start range | uniform (real) in grid steps [100, 300) | 200 points must fit on the 500-point curve |
# | train / test | first 800 / last 200 | the paper does not say; 800 matches the timing anchor's batch |
# | model time step | the curve's own, $6\pi/499 \approx 0.038$ | time scaling does not change the data |
# | normalization | $(x - \bar x)/s$, one scale $s \approx 4.1$ from the training observations | the paper's RMSEs (0.13–0.39) only make sense on data of unit scale: in raw units a 0.16 RMSE would beat the noise (0.3) |
# | likelihood std | the true noise, 0.3 / s ≈ 0.073 | the generator knows it; every model uses the same |
# | activations | dynamics ELU, decoder ReLU (recognition RNN tanh) | torchdiffeq's; a tanh decoder saturates (below) |
# | RNN gaps input | Δt divided by the grid step | keeps inputs O(1) |
# | RNN baseline output | $\hat x_{k+1} = x_k + \mathrm{out}(h_k)$ | predicting the increment is the stronger baseline |
# | extra RNN row | $\hat x_{k+1} = x_k + \Delta_k\,\mathrm{out}(h_k)$ | not the paper's; a baseline whose rollout step scales with the gap (below) |
# | optimizer | Adam, lr 0.01, full batch, no gradient clipping | torchdiffeq's example (clipping: alternative below) |
# | iterations | 4,000 per model, the same for all | twice torchdiffeq's 2,000; the curves are printed at 13 milestones |
# | trainings | two per model (weight seeds 0 and 1, same data); the table gives both and their mean | the RNNs' scores jump between neighbouring milestones and between seeds |
# | precision | latent ODE float32 (torch's default), RNNs float64 | float32 is about 1.3x faster here; at 100 iterations it scored as float64 did |
# | gradient | backprop through dopri5, rtol 1e-3, atol 1e-4 | the fastest at this batch size here |
# | RMSE | per point, on normalized data, against the noisy held-out points (also against the noiseless truth) | "predictive RMSE on test set" |
# | z0 for prediction | the posterior mean | a deterministic prediction |
#
# **Alternatives tried** (full batch, Adam 0.01; RMSE on the 100 extrapolated test points
# against the noisy points, n = 30 / 50 / 100; one training, weight seed 0, unless a range is
# given):
#
# | protocol | iterations | latent ODE | RNN (x, Δt) | RNN (x) | extra: RNN step × Δt |
# |---|---|---|---|---|---|
# | raw units, torchdiffeq arms, tanh, no clipping | 400 | 2.91 (= 0.73 normalized) at n = 30 | 1.51 (0.38) | 3.27 (0.82) | – |
# | torchdiffeq arms, tanh, no clipping, float64 (session 1) | 800 | 0.526 / 0.559 / 0.999 | 6.46 / 0.580 / 0.597 | 0.760 / 0.888 / 0.332 | – |
# | torchdiffeq arms, tanh, clipping at 100 (session 2) | 2,000 | 0.549 / 0.432 / 0.643 | 1.448 / 0.416 / 0.527 | 0.792 / 0.907 / 0.338 | – |
# | mirrored arms, tanh, clipping at 100 | 4,000 | 0.531 / 0.369 / 0.533 | 0.415 / 0.264 / 0.284 | 0.888 / 1.003 / 0.845 | 0.684 / 0.313 / 0.226 |
# | mirrored, ELU / ReLU, clipping at 100 (seed 0; seed 1) | 4,000 | 0.208 / 0.221 / 0.486; 0.203 / 0.288 / 0.435 | as above; 1.104 / 0.341 / 0.615 | as above; 0.873 / 1.154 / 0.201 | as above; 0.324 / 0.290 / 0.698 |
# | mirrored, ELU / ReLU, clipping at 1e4, n = 100 only | 4,000 | – / – / 0.684 | | | |
# | **adopted**: mirrored, ELU / ReLU, no clipping (seed 0; seed 1) | 4,000 | 0.105 / 0.169 / 0.136; 0.220 / 0.188 / 0.170 | 0.343 / 0.231 / 0.284; 0.630 / 0.401 / 0.764 | 1.273 / 1.179 / 0.362; 0.879 / 0.955 / 0.361 | 0.484 / 0.202 / 0.177; 1.226 / 0.238 / 0.364 |
# | same, seed 2, n = 100 only | 4,000 | – / – / 0.391 | – / – / 0.321 | – / – / 0.865 | |
# | torchdiffeq arms, ELU / ReLU, no clipping | 4,000 | 0.311 / 0.252 / 0.348 | not trained | not trained | |
#
# * **The decoder's activation** is the largest single effect. A quarter (25%) of the
#   extrapolated test points lie at radii that no training spiral reaches in its observed
#   span (the arms grow outwards). A decoder with one hidden layer of tanh units is bounded
#   and flattens there: with tanh (mirrored arms, 2,000 iterations) the latent ODE's RMSE at
#   n = 30 was 0.40 on the points inside the trained radii and 0.72 on those outside; with
#   torchdiffeq's ReLU decoder (and ELU dynamics) the whole n = 30 RMSE fell to 0.15–0.21.
# * **Gradient clipping** (global norm 100) was introduced for the tanh model, whose
#   recognition RNN's gradient exploded at n = 100 (4e6 at iteration 250). With ELU / ReLU it
#   hurts: typical norms are 1e3–1e4, so the clip acts on every step and an encoder spike
#   shrinks every other parameter's step with it; the n = 100 latent ODE stalled near 0.5.
#   The RNN (x, Δt), in turn, does better with the clip at n = 30; the table below also gives
#   each RNN the better of the two settings.
# * **The clockwise arm.** With torchdiffeq's arm the clockwise extrapolations reach radius 15
#   against at most 3.1 in any observed span; that error dominated the tanh model at n = 100
#   (0.850 clockwise, 0.303 counter-clockwise), and with the adopted activations the latent ODE
#   scores 2–3x what it scores on the mirrored arms (0.311 / 0.252 / 0.348).
# * **Training is a lottery at n = 100 for every model.** Two RNN (x, Δt) trainings that
#   differ only in the last bit of the gap input (the scaled-step RNN at n = 100, where every
#   gap is 1) scored 0.46 and 0.80 after 250 iterations; a latent ODE at n = 100 with the clip
#   at 1e4 (the unclipped run's norm exceeded it on 97 of 4,000 steps) ended at 0.68 against
#   0.14 with none. Hence two
#   trainings per model and the milestone tables in `bench/RESULTS-latent-ode.md`.
# * **The metric.** Against the noiseless truth every number drops by at most 0.03 (the noise
#   is 0.073 in normalized units). The results file also splits the error by direction, over
#   the first 50 points, and gives the mean of per-spiral RMSEs. A perfect model scores
#   0.073 against the noisy points; the adopted latent ODE at n = 30 (first training) scores
#   0.105 against them and 0.076 against the truth.
# %%
TABLE2_JSON = figures_dir() / "ch07_table2.json"              # the results file (figures/, committed)
TABLE2_WEIGHTS = figures_dir() / "ch07_table2_models.npz"     # the nine trained models behind it
trained = {}
if QUICK:                                      # a few iterations, only to exercise the code
    proto = Protocol(iters_ode=6, iters_rnn=6)
    print("protocol:", proto)
    results = run_protocol(proto, keep=trained)
else:
    if TABLE2_JSON.exists() and TABLE2_WEIGHTS.exists() and "milestone" in json.loads(TABLE2_JSON.read_text()):
        print(f"reusing {TABLE2_JSON} and {TABLE2_WEIGHTS} (delete them to train again: about two hours on two cores)")
        results = json.loads(TABLE2_JSON.read_text())
        with np.load(TABLE2_WEIGHTS) as z:
            weights = {k: z[k] for k in z.files}
    else:                                      # train (or finish) every group and seed in runs/
        dirs = []
        for seed in TABLE2_SEEDS:
            out = os.path.join("runs", f"table2_s{seed}")
            dirs.append(out)
            for group in ("ode", "rnn", "rnn_step"):
                done = os.path.join(out, f"{group}.json")
                if os.path.exists(done) and json.load(open(done))["milestone_reached"] >= TABLE2_MILESTONES[-1]:
                    print(f"reusing the finished {group} run in {out}")
                    continue
                table2_spirals.run(group, Protocol(ode_dtype="float32", init_seed=seed,
                                                   iters_ode=TABLE2_MILESTONES[-1],
                                                   iters_rnn=TABLE2_MILESTONES[-1]),
                                   milestones=TABLE2_MILESTONES, out=out)
        results, weights = table2_spirals.collect(dirs[0], milestone=TABLE2_MILESTONES[-1])
        results["seeds"] = table2_spirals.summarize(dirs, milestone=TABLE2_MILESTONES[-1])
        np.savez(TABLE2_WEIGHTS, **weights)
    print("protocol:", results["protocol"]["ode"], "| iterations per model:", results["milestone"])
    for n in (30, 50, 100):
        trained[n] = table2_spirals.load_models(weights, results["protocol"]["ode"], n)

# %% [markdown]
# ## 5. Table 2

# %%
PAPER = {"rnn": {"30": 0.3937, "50": 0.3202, "100": 0.1813},
         "latent_ode": {"30": 0.1642, "50": 0.1502, "100": 0.1346}}
rows = [("RNN (x, Δt)", "rnn_dt"), ("RNN (x only)", "rnn"), ("extra: RNN (x, Δt), step × Δt", "rnn_dt_step"),
        ("Latent ODE", "latent_ode")]
rows = [r for r in rows if r[1] in results["results"]["30"]]
print(f"{'Predictive RMSE, test set':32s}" + "".join(f"{n + '/100':>18s}" for n in results["results"]))
for label, key in rows:
    line = f"{label:32s}"
    for n, res in results["results"].items():
        paper = PAPER["latent_ode" if key == "latent_ode" else "rnn"][n] if key != "rnn_dt_step" else None
        line += f"{res[key]['noisy']:9.4f} ({paper if paper else '  -  '})"
    print(line)
print("(first training; the paper's in brackets; RMSE against the noisy held-out points, normalized units)")
if "seeds" in results:
    S = results["seeds"]
    print(f"\nover {len(S['dirs'])} trainings: mean (min-max) at iteration {S['milestone']}; "
          f"then the mean over the last {S['last']} milestones")
    for label, key in rows:
        print(f"{label:32s}" + "".join(f"  {S['rmse'][n][key]['mean']:.3f} ({S['rmse'][n][key]['min']:.3f}-"
                                       f"{S['rmse'][n][key]['max']:.3f}) / {S['rmse'][n][key]['last_mean_mean']:.3f}"
                                       for n in S["rmse"]))
for n, res in results["results"].items():
    print(f"n={n}: against the noiseless truth: " +
          ", ".join(f"{k} {v['truth']:.4f}" for k, v in res.items()))
results["paper"] = PAPER
results["quick"] = QUICK
TABLE2_JSON.write_text(json.dumps(results, indent=1, default=float))
print(f"wrote {TABLE2_JSON}")

# %% [markdown]
# **Have the curves flattened?** The full run scores every model on the test set at each
# milestone of its training (`nodeform.experiments.table2_spirals`); left, the test RMSE
# against iterations, right, the training loss (per sequence: -ELBO for the latent ODE,
# the next-step Gaussian NLL for the RNNs, on different scales, so only their shapes compare).

# %%
if not QUICK:
    fig, axes = plt.subplots(1, 2, figsize=(13, 4.2))
    styles = {"latent_ode": "-", "rnn_dt": "--", "rnn": ":", "rnn_dt_step": "-."}
    for name, by_it in results["rmse_by_milestone"].items():
        kind, n = name.rsplit("_n", 1)
        its = sorted(map(int, by_it))
        c = {"30": "C0", "50": "C1", "100": "C2"}[n]
        axes[0].plot(its, [by_it[str(i)] for i in its], styles[kind], color=c, marker=".",
                     label=f"{kind} n={n}")
        cur = np.array(results["curves"][name])
        if kind == "latent_ode":
            axes[1].plot(cur[:, 0], cur[:, 1] / int(n), color=c, lw=0.8, label=f"latent ODE n={n}")
    axes[0].set_yscale("log")
    axes[0].set_xlabel("iteration")
    axes[0].set_ylabel("test RMSE, 100 extrapolated points")
    axes[0].axvline(results["milestone"], color="0.6", lw=0.8)
    axes[0].legend(fontsize=7, ncol=3)
    axes[1].set_ylim(-3, 5)
    axes[1].set_xlabel("iteration")
    axes[1].set_ylabel("-ELBO per observed point")
    axes[1].legend(fontsize=8)
    fig.suptitle("Table 2 training: test RMSE at milestones (left), latent ODE loss (right)")
    savefig(fig, "ch07_training_curves")

# %% [markdown]
# **What the full run gave** (2026-12-02, 15:25–16:02 UTC, two processes under `nice`, one
# thread each, on two cores shared with other jobs, load average 2–4; `python -m
# nodeform.experiments.table2_spirals --group ode|rnn|rnn_step --ode-dtype float32
# --init-seed 0|1` with the `Protocol` defaults, then this chapter; `figures/ch07_table2.json`).
# Mean of two trainings (range) at 4,000 iterations, RMSE against the noisy held-out points:
#
# | RMSE, normalized, 4,000 iterations | 30/100 | 50/100 | 100/100 |
# |---|---|---|---|
# | RNN (x, Δt) | 0.487 (0.343–0.630) | 0.316 (0.231–0.401) | 0.524 (0.284–0.764) |
# | RNN (x only) | 1.076 (0.879–1.273) | 1.067 (0.955–1.179) | 0.362 (0.361–0.362) |
# | extra: RNN (x, Δt), step × Δt | 0.855 (0.484–1.226) | 0.220 (0.202–0.238) | 0.271 (0.177–0.364) |
# | **Latent ODE** | **0.162** (0.105–0.220) | **0.179** (0.169–0.188) | **0.153** (0.136–0.170) |
# | paper, RNN | 0.3937 | 0.3202 | 0.1813 |
# | paper, Latent ODE | 0.1642 | 0.1502 | 0.1346 |
#
# * **Latent ODE below the RNN at every n**: yes, in each of the two paired trainings and
#   against every RNN row, including the extra one (closest: n = 50, 0.169 vs 0.202, and
#   n = 100, 0.170 vs 0.361 / 0.136 vs 0.177). It also holds against every RNN trained with
#   clipping (alternatives table; closest: RNN (x), seed 1, n = 100, 0.201). But a third pair
#   of trainings at n = 100 (seed 2) gave latent ODE 0.391, RNN (x, Δt) 0.321, RNN (x) 0.865:
#   there the latent ODE loses. Over the three seeds at n = 100 the means are 0.232 vs 0.456 /
#   0.529, so the ranking holds on average, not in every training.
# * **At or below the paper's RMSE**: at n = 30 the mean equals the paper's (0.162 vs
#   0.1642); at n = 50 and 100 it is 0.03 and 0.02 above (0.179 vs 0.150, 0.153 vs 0.135),
#   with single trainings at 0.169 and 0.136 (and 0.232 at n = 100 with the third training). The n = 30 model of the first training is at
#   the noise floor: 0.076 against the truth, where the noise is 0.073.
# * The RNNs are not weaker than the paper's: the RNN (x, Δt) at n = 50 (0.231–0.401) and the
#   extra one (0.20–0.24) straddle the paper's 0.3202, and the paper's single RNN row does not
#   say which variant it is. Their test RMSE still jumps by 2–3x between neighbouring
#   milestones (curves above; all in the results file), so their numbers are snapshots of an
#   oscillating training: the mean over the last four milestones is given as well.
# * Without Δt the RNN steps in observations, not time, so at n < 100 its rollout runs 2–3x
#   too fast (RMSE about 1); with Δt as an input it learns the average step between
#   observations and scales it only weakly with the gap. Multiplying its output by the gap
#   (the extra row) fixes that at n = 50 and 100 but not reliably at n = 30.
#
# Details, milestone tables, the diagnosis and what was not done: `bench/RESULTS-latent-ode.md`.
#
# ## 6. Reconstruction, extrapolation and the latent space (Figs. 8 and 9)
#
# The n = 30 models trained for Table 2 (in quick mode they have trained only a few
# iterations, so the quick pictures show untrained models).

# %%
D, ode, rnn, _ = trained[30]
t_all = np.concatenate([D["t"], D["t_ext"]])
k_show = [0, int(np.flatnonzero(data.clockwise[data.test])[0])]
if k_show[0] == k_show[1]:
    k_show[0] = int(np.flatnonzero(~data.clockwise[data.test])[0])
samples, _ = ode.predict(D["x_te"], D["t"], D["m_te"], t_all, n_samples=5, rng=np.random.default_rng(0))
mean_path, lat = ode.predict(D["x_te"], D["t"], D["m_te"], t_all)
rnn_ext = rnn.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"])
truth = (data.truth[data.test] - D["mean"]) / D["scale"]

fig, axes = plt.subplots(1, 3, figsize=(14, 4.3))
P = data.n_points
for j, k in enumerate(k_show):
    obs = D["m_te"][k]
    for ax in axes[:2]:
        ax.plot(*truth[k].T, color="0.7", lw=1)
        ax.plot(*D["x_te"][k, obs].T, "k.", ms=4)
    axes[0].plot(*rnn_ext[k].T, "C3", lw=1.5)
    for s in samples[:, k]:
        axes[1].plot(*s[:P].T, "C0", lw=0.8, alpha=0.7)
        axes[1].plot(*s[P - 1:].T, "C3", lw=0.8, alpha=0.7)
axes[0].set_title("(a) RNN (x, Δt): extrapolation (red)")
axes[1].set_title("(b) Latent ODE: reconstruction (blue),\nextrapolation (red)")
shown = truth[k_show].reshape(-1, 2)
for ax in axes[:2]:                       # frame the true spirals; a diverging rollout leaves it
    ax.set_xlim(shown[:, 0].min() - 0.5, shown[:, 0].max() + 0.5)
    ax.set_ylim(shown[:, 1].min() - 0.5, shown[:, 1].max() + 0.5)
cw = data.clockwise[data.test]
for k in range(min(len(lat), 60)):
    axes[2].plot(lat[k, :, 0], lat[k, :, 1], color="C3" if cw[k] else "C0", lw=0.6, alpha=0.7)
axes[2].set_title("(c) latent trajectories, dims 1–2 (red: clockwise)")
for ax in axes[:2]:
    ax.set_aspect("equal")
savefig(fig, "ch07_spirals")

# %% [markdown]
# Fig. 9: vary **one** dimension of $z_{t_0}$ and decode. We take the dimension whose
# posterior means separate the two directions best (largest difference of class means over
# the pooled std), start from the average posterior mean, and sweep that dimension across
# the range the test posteriors cover; colour runs from purple to red over time.

# %%
mu_te, _ = ode.posterior(D["x_te"], D["t"], D["m_te"])
mu_te = mu_te.data
sep = np.abs(mu_te[cw].mean(0) - mu_te[~cw].mean(0)) / (mu_te.std(0) + 1e-12)
dim = int(np.argmax(sep))
lo_, hi_ = np.percentile(mu_te[:, dim], [5, 95])
vals = np.linspace(lo_, hi_, 5)
fig, axes = plt.subplots(1, len(vals), figsize=(3 * len(vals), 3))
for ax, v in zip(axes, vals):
    z0 = mu_te.mean(0).copy()
    z0[dim] = v
    with nf.no_grad():
        zs = ode.trajectories(nf.Tensor(z0[None]), t_all, grad="continuous")
        xd = ode.decode(zs).data[:, 0]
    ax.scatter(xd[:, 0], xd[:, 1], c=t_all, cmap="rainbow", s=4)
    ax.set_title(f"z0[{dim}] = {v:.2f}")
    ax.set_xticks([])
    ax.set_yticks([])
fig.suptitle(f"Fig. 9: decoding as z0[{dim}] varies (separation of directions {sep[dim]:.1f})")
savefig(fig, "ch07_latent_sweep")
print(f"chapter ran in {time.perf_counter() - T_START:.1f} s")

# %% [markdown]
# ## Summary
#
# * A latent ODE is three parts you already had: an RNN (reading backwards, with time gaps),
#   `nf.odeint` on a time-invariant MLP field, and a decoder; its loss is the ELBO with one
#   reparameterized sample and the analytic KL.
# * Sequences observed at different times share **one** solve over the union of their
#   times; a mask selects each sequence's terms.
# * The Poisson likelihood needs an integral of the rate; adding it as a state solves it in
#   the same call.
# * Table 2 depends on choices the paper does not state; the scale of the data alone moves
#   every RMSE by a factor of four, and the decoder's activation decides whether the latent
#   ODE can extrapolate at all: a tanh decoder cannot place points beyond the radii it was
#   trained on, a ReLU decoder can (0.53 → 0.10–0.22 at n = 30). A gradient clip that rescued
#   one model stalled another. State the protocol with the numbers, and train more than once.
#
# ## Exercises
#
# * **ex7_1** Replace the backward RNN by one that reads forwards. What happens to the
#   reconstruction of the *first* observed points, and why does reading backwards suit an
#   encoder of $z_{t_0}$?
# * **ex7_2** Train with `grad="numba"` and with `grad="backprop"` for 100 iterations each.
#   Are the loss curves the same? Time them at batch 100 and at batch 800 and explain the
#   crossover (count the backward solves of the continuous adjoint).
# * **ex7_3** Give the latent dynamics an explicit time input (`nf.mlp_field(4, (20,),
#   time_input=True)`). Does extrapolation improve or degrade? Relate your answer to the
#   spirals being orbits of autonomous systems.
# * **ex7_4** Derive the log-likelihood of the Poisson process from the limit of Bernoulli
#   trials on a fine grid, then check `poisson_log_likelihood` against it for
#   $\lambda(t) = e^{a t}$, where the integral is closed-form.
# * **ex7_5** Evaluate the RMSE against the noiseless truth instead of the noisy points. By
#   how much can a perfect model beat the noisy-target RMSE? Which reading of "predictive
#   RMSE" makes the paper's 0.1346 at n = 100 plausible?
