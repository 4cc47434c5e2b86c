# %% [markdown]
# # Chapter 5 — Adaptive computation: Figure 3, and the paper's own solver family
#
# **Goal.** An ODE-Net has no fixed depth: the solver decides how many times it
# evaluates the network (NFE, the number of function evaluations), trading accuracy
# for computation. The paper's Fig. 3 (Sec. 3, "Statistics of a trained ODE-Net")
# makes four claims about that trade: (a) the numerical error is controlled by the
# tolerance, (b) the forward time is proportional to the NFE, (c) the backward pass
# (the adjoint) needs about **half** the forward NFE, and (d) the NFE grows during
# training. The paper measured them with an *Adams* method (LSODE, through SciPy);
# torchdiffeq's users, who run Dormand–Prince, do not see (c) (`paper.md` §2.4).
# This chapter builds the Adams family, then measures Fig. 3 with both solvers on
# the same trained model, and says which claims hold for which solver and why.
#
# Prerequisites: chapter 2 (adaptive Runge–Kutta, error control, dense output),
# chapter 3 (the adjoint), chapter 4 (the ODE-Net). Modules used: `nodeform.solve`
# and `nodeform.odeint` with `method="adams"`, `nodeform.ode.integration_coefficients`,
# `nodeform.SolveStats`, `nodeform.models.odenet.ODEBlock`, `nodeform.nn`,
# `nodeform.optim`, `nodeform.data`. Time to work through: about an hour.
#
# ## 1. Counting evaluations
#
# The NFE is what a solve costs: every evaluation of $f$ is one pass through the
# network. `Solution.stats["nfev"]` counts them; here is the count checked against a
# counter inside $f$ itself.

# %%
import os

# The matrices here are small ((256, 64) at most): one BLAS thread is as fast as two, and
# on a busy machine multithreaded OpenBLAS spins waiting for descheduled threads (measured
# 40x slower per evaluation at load 15 on 2 cores). Must be set before NumPy is imported.
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import time  # noqa: E402

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform import nn, optim  # noqa: E402
from nodeform.models.odenet import ODEBlock  # noqa: E402
from nodeform.ode import integration_coefficients  # noqa: E402
from nodeform.plotting import is_quick, savefig  # noqa: E402

QUICK = is_quick()
T_START = time.perf_counter()


def kepler(t, y):                        # a non-linear test problem: one orbit, period 2 pi
    r3 = (y[0] ** 2 + y[1] ** 2) ** 1.5
    return np.array([y[2], y[3], -y[0] / r3, -y[1] / r3])


E = 0.5
Y_KEPLER = np.array([1 - E, 0.0, 0.0, np.sqrt((1 + E) / (1 - E))])
calls = [0]


def counted(t, y):
    calls[0] += 1
    return kepler(t, y)


for method in ("dopri5", "adams"):
    calls[0] = 0
    sol = nf.solve(counted, Y_KEPLER, [0.0, 2 * np.pi], method=method, rtol=1e-8, atol=1e-8)
    err = np.abs(sol.ys[-1] - Y_KEPLER).max()            # the orbit closes after one period
    print(f"{method:7s} NFE {sol.stats['nfev']:5d} (counter in f: {calls[0]}), "
          f"steps {sol.stats['n_accepted']}, rejected {sol.stats['n_rejected']}, error {err:.1e}")
    assert sol.stats["nfev"] == calls[0]
# dopri5  NFE ~1,300 ...; adams NFE ~700: same tolerance, half the evaluations

# %% [markdown]
# ## 2. Adams methods, built
#
# A Runge–Kutta step evaluates $f$ six times *inside* the step and forgets them.
# A multistep method keeps the derivatives of past steps: over $[t_n, t_{n+1}]$,
# $y_{n+1} = y_n + \int f$, and Adams replaces $f$ by the polynomial through the last
# $k$ derivatives and integrates it exactly. With variable steps the polynomial is
# kept in Newton form: with $\psi_i = t_{n+1} - t_{n-i}$, the *modified divided
# differences* $\Phi^*_j(n) = \prod_{i<j}\psi_i\, f[t_n,\dots,t_{n-j}]$ and
# $\alpha_i = h/\psi_i$, one step of order $k$ in PECE form
# (Hairer–Nørsett–Wanner I, §III.5; Shampine–Gordon 1975) is
#
# * **P**redict: $p = y_n + h\sum_{j<k} g_j \Phi^*_j(n)$ (Adams–Bashforth),
# * **E**valuate $f_p = f(t_{n+1}, p)$,
# * **C**orrect: $y_{n+1} = p + h g_k \Phi^p_k$, $\Phi^p_k = f_p - \sum_{j<k}\Phi^*_j(n)$
#   (Adams–Moulton on $k+1$ points, so order $k+1$),
# * **E**valuate $f_{n+1}$ and update the differences:
#   $\Phi_0(n+1) = f_{n+1}$, $\Phi_{j+1}(n+1) = \Phi_j(n+1) - \Phi^*_j(n)$.
#
# **Two evaluations per step, whatever the order.** The corrector minus the predictor
# estimates the local error, $\mathrm{ERK}(k) = |h(g_k - g_{k-1})|\,\|\Phi^p_k\|$. The
# coefficients $g_j = \int_0^1 P_j$, $P_j(s) = s\prod_{i=1}^{j-1}(1-\alpha_i(1-s))$, obey
# Shampine–Gordon's recursion $g_{j,q} = g_{j-1,q} - \alpha_{j-1} g_{j-1,q+1}$,
# $g_{0,q} = 1/q$, $g_j = g_{j,1}$. Here is the whole method at a fixed order, in about
# fifty lines:

# %%
def adams_coefficients(alpha, J):
    """g_0..g_J by Shampine–Gordon's recursion (alpha[0] = 1)."""
    gq = [1.0 / q for q in range(1, J + 2)]              # g_{0,q}, q = 1..J+1
    g = [gq[0]]
    for j in range(1, J + 1):
        gq = [gq[i] - alpha[j - 1] * gq[i + 1] for i in range(len(gq) - 1)]
        g.append(gq[0])
    return g


def rms(x):
    return float(np.sqrt(np.mean(x * x)))


def adams_pece(f, t0, y0, t1, k, tol, h=1e-3):
    """Variable-step Adams PECE of order k (k-point predictor); returns y(t1), NFE."""
    t, y = t0, np.asarray(y0, dtype=float)
    phi, ts, nfev = [f(t, y)], [t], 1                    # Phi_j(n), t_n, t_{n-1}, ...
    while t < t1:
        h = min(h, t1 - t)
        t_new, kk = t + h, min(k, len(phi))              # order limited by the history
        psi = [t_new - ts[i] for i in range(kk)]
        beta = [1.0]
        for j in range(1, kk):
            beta.append(beta[-1] * psi[j - 1] / (t - ts[j]))
        g = adams_coefficients([h / p for p in psi], kk)
        star = [b * ph for b, ph in zip(beta, phi)]      # Phi*_j(n)
        p = y + h * sum(gj * s for gj, s in zip(g, star))            # P
        fp = f(t_new, p)                                              # E
        nfev += 1
        phik = fp - sum(star)
        y_new = p + h * g[kk] * phik                                  # C
        err = abs(h * (g[kk] - g[kk - 1])) * rms(phik / (tol + tol * np.abs(y_new)))
        if err > 1.0:                                    # reject: retry, history untouched
            h *= max(0.2, 0.9 * err ** (-1.0 / (kk + 1)))
            continue
        t, y = t_new, y_new
        new = [f(t, y)]                                               # E
        nfev += 1
        for s in star:
            new.append(new[-1] - s)
        phi, ts = new[:k + 1], ([t] + ts)[:k + 1]
        h *= min(2.0, 0.9 * max(err, 1e-10) ** (-1.0 / (kk + 1)))
    return y, nfev


# the recursion against the package's coefficients (Gauss–Legendre quadrature of P_j)
rng = np.random.default_rng(0)
alpha = [1.0] + list(rng.uniform(0.05, 0.9, 12))
assert np.allclose(adams_coefficients(alpha, 12), integration_coefficients(alpha, 12),
                   rtol=1e-12, atol=1e-15)
print("order  NFE(ours)  error(ours)  NFE(package)  error(package)")
for k in (1, 2, 4, 8):
    tol = {1: 1e-5, 2: 1e-7, 4: 1e-8, 8: 1e-10}[k]
    y_ours, n_ours = adams_pece(kepler, 0.0, Y_KEPLER, 2 * np.pi, k, tol)
    ys, st, _ = nf.ode.integrate_adams(kepler, [0.0, 2 * np.pi], Y_KEPLER, tol, tol,
                                       max_order=k, max_steps=10 ** 5)
    e_ours, e_pkg = np.abs(y_ours - Y_KEPLER).max(), np.abs(ys[-1] - Y_KEPLER).max()
    print(f"{k:5d}  {n_ours:9d}  {e_ours:11.1e}  {st['nfev']:12d}  {e_pkg:14.1e}")
    # the same method at the same tolerance: errors within a factor 5 of each other
    assert 0.2 < e_ours / e_pkg < 5.0
    # and cost the same within a factor 2 (the package adds order/step selection)
    assert 0.5 < n_ours / st["nfev"] < 2.0

# %% [markdown]
# The package's version (`nodeform/ode/adams.py`, compiled twin in
# `nodeform/ode/_numba_adams.py`) adds what makes it a production method: **variable
# order** 1–12 (after each step the orders $k-1$, $k$, $k+1$ each propose a step from
# their error estimates, biased towards keeping the order as LSODE does), a start
# phase that doubles the step and raises the order each step, restarts at order 1
# after repeated rejections, dense output from the step's own polynomial (outputs
# cost no evaluations), and the same statistics, errors and Tensor support as the
# Runge–Kutta methods — so `nf.odeint(..., method="adams")` trains with either
# adjoint. On the DETEST problems it needs fewer evaluations than SciPy's LSODA at the
# same tolerance (`bench/RESULTS-adams.md`).
#
# Work against accuracy on the orbit, at equal tolerances. Compare the *errors* too:
# at loose tolerances Adams' fewer evaluations come with a larger global error (a
# multistep method carries its start-up and its variable-step history along), so the
# honest comparison is at equal error; once the tolerance is tight, the high orders pay
# off and Adams needs a fraction of dopri5's evaluations for the same accuracy.

# %%
print(" rtol    NFE dopri5  err dopri5   NFE adams  err adams  (median order)")
for tol in ([1e-4, 1e-7, 1e-10] if QUICK else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]):
    d = nf.solve(kepler, Y_KEPLER, [0.0, 2 * np.pi], rtol=tol, atol=tol)
    a = nf.solve(kepler, Y_KEPLER, [0.0, 2 * np.pi], method="adams", rtol=tol, atol=tol,
                 trace=True)
    print(f"{tol:6.0e}  {d.stats['nfev']:10d}  {np.abs(d.ys[-1] - Y_KEPLER).max():10.1e}  "
          f"{a.stats['nfev']:10d}  {np.abs(a.ys[-1] - Y_KEPLER).max():9.1e}  "
          f"({int(np.median(a.trace['order']))})")

# %% [markdown]
# ## 3. A small ODE-Net on MNIST
#
# Fig. 3 is about a *trained* ODE-Net. Chapter 4's convolutional ODE-Net costs seconds
# per batch in NumPy, too slow to sweep tolerances here, so this chapter uses the
# same structure with a small fully connected vector field: a linear stem
# (784 -> 32, tanh), one ODE block (`ODEBlock` of chapter 4, $t\in[0,1]$, field
# $32 \to 64 \to 32$ with tanh and $t$ as an input, continuous adjoint), and a linear
# head (32 -> 10). Trained with Adam on the embedded 4,000 MNIST digits, at the
# paper's classification tolerance $10^{-3}$, once with each solver.

# %%
class Field(nn.Module):
    """dz/dt = W2 [tanh(W1 [z, t]), t]; shapes (N, dim) -> (N, dim)."""

    def __init__(self, dim, hidden, rng):
        super().__init__()
        self.l1 = nn.ConcatLinear(dim, hidden, rng=rng)
        self.l2 = nn.ConcatLinear(hidden, dim, rng=rng)

    def forward(self, t, z):
        return self.l2(t, nf.tanh(self.l1(t, z)))


class SmallODENet(nn.Module):
    """(N, 1, 28, 28) -> (N, 10): stem, one ODE block, head."""

    def __init__(self, method, tol=1e-3, dim=32, hidden=64, seed=0):
        super().__init__()
        r = np.random.default_rng(seed)
        self.stem = nn.Linear(784, dim, rng=r)
        self.block = ODEBlock(Field(dim, hidden, r), rtol=tol, atol=tol, method=method)
        self.head = nn.Linear(dim, 10, rng=r)

    def features(self, x):                                   # (N, 784) -> z(0), (N, dim)
        return nf.tanh(self.stem(x.reshape(x.shape[0], -1)))

    def forward(self, x):
        return self.head(self.block(self.features(x)))


def array_field(func):
    """``func`` (a Tensor Module) as a plain-array vector field, for solves without gradients."""
    def f(t, z):
        with nf.no_grad():
            return func(t, nf.Tensor(z)).data
    return f


data = nf.data.load_mnist_5k()
TRAIN_TOL = 1e-3
EPOCHS, ITERS, BATCH = (2, 4, 64) if QUICK else (10, 31, 128)
N_PROBE = 64 if QUICK else 256
x_probe = data.x_test[:N_PROBE]                                 # fixed batch for the NFE probes
history = {}
models = {}
for method in ("dopri5", "adams"):
    model = SmallODENet(method, TRAIN_TOL)
    opt = optim.Adam(model.parameters(), lr=3e-3)
    order = np.random.default_rng(1)
    log = {"epoch": [], "nfe_f": [], "nfe_b": [], "probe": {"dopri5": [], "adams": []}}
    t0 = time.perf_counter()
    for epoch in range(1, EPOCHS + 1):
        nf_f, nf_b = [], []
        for it in range(ITERS):
            idx = order.integers(0, len(data.y_train), BATCH)
            loss = nn.cross_entropy(model(data.x_train[idx]), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            nf_f.append(model.block.stats.nfe_forward)
            nf_b.append(model.block.stats.nfe_backward)
        log["epoch"].append(epoch)
        log["nfe_f"].append(np.mean(nf_f))
        log["nfe_b"].append(np.mean(nf_b))
        with nf.no_grad():                                  # both solvers on this model
            z0 = model.features(x_probe).data
            for m in ("dopri5", "adams"):
                s = nf.solve(array_field(model.block.func), z0, [0.0, 1.0], method=m,
                             rtol=TRAIN_TOL, atol=TRAIN_TOL)
                log["probe"][m].append(s.stats["nfev"])
    with nf.no_grad():
        err = float((model(data.x_test).data.argmax(1) != data.y_test).mean())
    history[method], models[method] = log, model
    print(f"trained with {method}: {time.perf_counter() - t0:.1f} s, test error {100 * err:.1f}%, "
          f"NFE forward/backward per batch in the last epoch {log['nfe_f'][-1]:.0f}/"
          f"{log['nfe_b'][-1]:.0f}")

# %% [markdown]
# ## 4. Figure 3, with both solvers
#
# On the model trained with Adams (the paper's solver), a sweep over tolerances
# $\text{rtol} = \text{atol} = \tau$ with each solver, on a fixed batch of 256 test
# images (64 in quick mode):
#
# * **numerical error**: the RMS difference of $z(1)$ from a reference solve at
#   $\tau = 10^{-10}$, relative to the RMS of $z(1)$ (the paper does not say which
#   error it plotted; `paper.md` §2.4);
# * **time**: the forward solve's wall-clock time, the best of several repeats (on a
#   shared machine the median mostly measures the other users; the best repeat is the
#   closest to an idle machine);
# * **NFE backward**: one forward and backward pass of the loss (cross-entropy of the
#   head's logits), the adjoint solved at the same $\tau$ with the same method.

# %%
net = models["adams"]
with nf.no_grad():
    z0 = net.features(x_probe).data                          # (N_PROBE, 32)
func = net.block.func
f_arr = array_field(func)
z_ref = nf.odeint(f_arr, z0, [0.0, 1.0], rtol=1e-10, atol=1e-10)[-1]
taus = [1e-1, 1e-3, 1e-5] if QUICK else [1e-1, 3e-2, 1e-2, 3e-3, 1e-3, 3e-4, 1e-4, 1e-5,
                                         1e-6, 1e-7]
sweep = {m: {k: [] for k in ("tau", "nfe_f", "err", "time", "nfe_b", "steps_f", "steps_b",
                             "t_back")} for m in ("dopri5", "adams")}
for m in ("dopri5", "adams"):
    for tau in taus:
        with nf.no_grad():
            sol = nf.solve(f_arr, z0, [0.0, 1.0], method=m, rtol=tau, atol=tau)
            times = []
            for _ in range(3 if QUICK else 7):
                t0 = time.perf_counter()
                nf.solve(f_arr, z0, [0.0, 1.0], method=m, rtol=tau, atol=tau)
                times.append(time.perf_counter() - t0)
        err = rms(sol.ys[-1] - z_ref) / rms(z_ref)
        stats = nf.SolveStats()
        zt = nf.Tensor(z0, requires_grad=True)
        z1 = nf.odeint(func, zt, [0.0, 1.0], method=m, rtol=tau, atol=tau, stats=stats)[-1]
        loss = nn.cross_entropy(net.head(z1), data.y_test[:N_PROBE])
        t0 = time.perf_counter()
        loss.backward()
        t_back = time.perf_counter() - t0
        row = sweep[m]
        row["tau"].append(tau)
        row["nfe_f"].append(sol.stats["nfev"])
        row["err"].append(err)
        row["time"].append(float(np.min(times)))
        row["nfe_b"].append(stats.nfe_backward)
        row["steps_f"].append(stats.steps_forward)
        row["steps_b"].append(stats.steps_backward)
        row["t_back"].append(t_back)
        assert stats.nfe_forward == sol.stats["nfev"]       # same solve, same count

for m in ("dopri5", "adams"):
    print(f"\n{m}:   tau   NFE-F  rel. error   time (ms)  NFE-B  B/F   steps F/B")
    r = sweep[m]
    for i, tau in enumerate(r["tau"]):
        print(f"      {tau:7.0e}  {r['nfe_f'][i]:5d}  {r['err'][i]:10.1e}  "
              f"{1e3 * r['time'][i]:9.1f}"
              f"  {r['nfe_b'][i]:5d}  {r['nfe_b'][i] / r['nfe_f'][i]:4.2f}  "
              f"{r['steps_f'][i]:4d}/{r['steps_b'][i]}")

# %%
COLORS = {"dopri5": "tab:blue", "adams": "tab:red"}
fig, axes = plt.subplots(1, 4, figsize=(16, 3.6))
for m in ("dopri5", "adams"):
    r = sweep[m]
    kw = dict(color=COLORS[m], marker="o", ms=4, label=m)
    axes[0].loglog(r["nfe_f"], r["err"], **kw)
    axes[1].plot(r["nfe_f"], 1e3 * np.array(r["time"]), **kw)
    axes[2].plot(r["nfe_f"], r["nfe_b"], **kw)
    h = history[m]
    axes[3].plot(h["epoch"], h["nfe_f"], color=COLORS[m], marker="o", ms=4,
                 label=f"{m} (training, per batch)")
top = max(max(sweep[m]["nfe_f"]) for m in sweep)
axes[2].plot([0, top], [0, top / 2], "k:", lw=1, label="backward = forward / 2 (paper)")
axes[2].plot([0, top], [0, top], "k--", lw=0.7, label="backward = forward")
titles = ["(a) NFE Forward vs numerical error", "(b) NFE Forward vs time",
          "(c) NFE Backward vs NFE Forward", "(d) NFE Forward over training"]
xlabels = ["NFE Forward", "NFE Forward", "NFE Forward", "Training epoch"]
ylabels = ["relative error of z(1)", "forward time, best of repeats (ms)", "NFE Backward",
           "NFE Forward"]
for ax, ti, xl, yl in zip(axes, titles, xlabels, ylabels):
    ax.set_title(ti, fontsize=10)
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    ax.legend(fontsize=7)
fig.tight_layout()
savefig(fig, "ch05_fig3")

# %% [markdown]
# ## 5. What reproduces, with which solver, and why
#
# The statements below are computed from the sweep above (the numbers are this run's).

# %%
def slope(x, y):
    return float(np.polyfit(np.log(x), np.log(y), 1)[0])


summary = {}
for m in ("dopri5", "adams"):
    r = sweep[m]
    ratio = np.array(r["nfe_b"]) / np.array(r["nfe_f"])
    per_nfe = np.array(r["time"]) / np.array(r["nfe_f"])
    summary[m] = dict(
        err_slope=slope(r["nfe_f"], r["err"]),
        time_per_nfe_spread=float(per_nfe.max() / per_nfe.min()),
        ratio_median=float(np.median(ratio)), ratio_min=float(ratio.min()),
        ratio_max=float(ratio.max()),
        back_eval_cost=float(np.median(np.array(r["t_back"]) / np.array(r["nfe_b"]))
                             / np.median(per_nfe)),
        growth=history[m]["nfe_f"][-1] / history[m]["nfe_f"][0])
    s = summary[m]
    print(f"{m}: (a) error ~ NFE^{s['err_slope']:.1f}; (b) time per NFE varies "
          f"{s['time_per_nfe_spread']:.2f}x over the sweep; (c) NFE-B / NFE-F median "
          f"{s['ratio_median']:.2f} (range {s['ratio_min']:.2f}-{s['ratio_max']:.2f}); "
          f"one backward evaluation costs {s['back_eval_cost']:.1f} forward ones; "
          f"(d) training NFE grew {s['growth']:.2f}x from the first to the last epoch")
print("paper: (a) error falls with NFE, (b) time proportional to NFE, (c) NFE-B about 0.5 "
      "NFE-F, (d) NFE grows during training")
probe = {m: history["adams"]["probe"][m] for m in ("dopri5", "adams")}
print("NFE at tau = 1e-3 of the Adams-trained model after each epoch:",
      {m: [int(v) for v in probe[m]] for m in probe})

# %% [markdown]
# **Why (c) comes out as it does: what the backward error control sees.** The backward
# solve integrates $[z, a, a_\theta]$ with the same rtol and atol as the forward one. Its
# $z$ part retraces the forward trajectory, so it needs about the forward's steps. The
# adjoint parts $a = \partial L/\partial z$ and $a_\theta$ are *gradients*: for a mean
# loss over a batch they are small, mostly below atol, and the error control barely
# sees them. Multiply the loss by a constant and the gradient problem is the same up to
# that factor — but now the adjoint parts count, and the backward NFE grows:

# %%
print("loss scale | dopri5 NFE-F  NFE-B | adams NFE-F  NFE-B   (tau = 1e-3)")
scaled = {}
for scale in (1.0, 1e3, 1e6):
    row = []
    for m in ("dopri5", "adams"):
        stats = nf.SolveStats()
        zt = nf.Tensor(z0, requires_grad=True)
        z1 = nf.odeint(func, zt, [0.0, 1.0], method=m, rtol=1e-3, atol=1e-3, stats=stats)[-1]
        (nn.cross_entropy(net.head(z1), data.y_test[:N_PROBE]) * scale).backward()
        row += [stats.nfe_forward, stats.nfe_backward]
    scaled[scale] = row
    print(f"{scale:10.0e} | {row[0]:12d} {row[1]:6d} | {row[2]:11d} {row[3]:6d}")
# the backward cost grows with the loss scale, for both solvers; the forward does not
assert scaled[1e6][1] > scaled[1.0][1] and scaled[1e6][3] > scaled[1.0][3]
assert scaled[1e6][0] == scaled[1.0][0] and scaled[1e6][2] == scaled[1.0][2]

# %% [markdown]
# **The numbers behind "near one".** Two things make up NFE-B / NFE-F: evaluations per
# step in each direction, and the backward step count against the forward one; both are
# printed below. One candidate reason for a ratio a little below one: the backward error
# norm is the RMS over the whole augmented state $[z, a, a_\theta]$, so where the
# adjoint parts are far below atol only $z$ counts, diluted by $\sqrt{n_z / n_{aug}}$,
# and the backward steps can be a little longer. The test: the same backward solve
# (dopri5, which takes a custom norm) with the RMS over the $z$ part only; if the
# dilution were the reason, NFE-B would rise to NFE-F.

# %%
n_z = z0.size
n_theta = sum(q.data.size for q in func.parameters())
n_aug = 2 * n_z + n_theta
for m in ("dopri5", "adams"):
    r = sweep[m]
    per_f = np.median(np.array(r["nfe_f"]) / np.array(r["steps_f"]))
    per_b = np.median(np.array(r["nfe_b"]) / np.array(r["steps_b"]))
    st = np.median(np.array(r["steps_b"]) / np.array(r["steps_f"]))
    print(f"{m}: evaluations per accepted step forward {per_f:.1f}, backward {per_b:.1f}; "
          f"backward / forward accepted steps, median over tau: {st:.2f}")
back = {}
for label, opts in (("RMS over [z, a, a_theta]", None),
                    ("RMS over z only", {"norm": lambda x: rms(x[:n_z])})):
    stats = nf.SolveStats()
    func.zero_grad()
    zt = nf.Tensor(z0, requires_grad=True)
    z1 = nf.odeint(func, zt, [0.0, 1.0], method="dopri5", rtol=1e-3, atol=1e-3, stats=stats,
                   adjoint_options=opts)[-1]
    nn.cross_entropy(net.head(z1), data.y_test[:N_PROBE]).backward()
    back[label] = (stats.nfe_forward, stats.nfe_backward)
    print(f"dopri5, tau = 1e-3, backward norm = {label:25s}: NFE-F {stats.nfe_forward}, "
          f"NFE-B {stats.nfe_backward} (B/F {stats.nfe_backward / stats.nfe_forward:.2f})")
a_theta = np.concatenate([q.grad.data.ravel() for q in func.parameters()])
print(f"augmented state: {n_z} + {n_z} + {n_theta} = {n_aug} components; dilution "
      f"sqrt(n_z / n_aug) = {np.sqrt(n_z / n_aug):.2f}; RMS of a(0) {rms(zt.grad.data):.1e} "
      f"and of a_theta {rms(a_theta):.1e} against atol 1e-3")

# %% [markdown]
# ### Why the backward pass can be cheaper: it runs the trajectory the other way
#
# **First, the paper's own solver.** The paper's Fig. 3 was made with SciPy's
# `odeint` (LSODA from Fortran ODEPACK: variable-order Adams, switching to BDF if it
# detects stiffness) and the adjoint of autograd, which solves the augmented state
# $[z, a, a_\theta]$ backwards with a second `odeint` call at the same tolerances
# (`paper.md` §2.4; the maintainer's answer in torchdiffeq issue #97). That recipe
# needs nothing but SciPy, so we can run it on our model. A counter inside each field
# does the counting:

# %%
from scipy.integrate import odeint as lsoda_odeint  # noqa: E402

params = list(func.parameters())
shape_z = z0.shape


def lsoda_counts(tau):
    """NFE of autograd's recipe with SciPy's LSODA: forward z, then [z, a, a_theta] backwards."""
    n = [0]

    def fwd(zf, t):                                   # odeint's argument order: (y, t)
        n[0] += 1
        return f_arr(t, zf.reshape(shape_z)).ravel()

    def aug(s, t):                           # d/dt [z, a, a_theta] = [f, -a f_z, -a f_theta]
        n[0] += 1
        z = nf.Tensor(s[:n_z].reshape(shape_z), requires_grad=True)
        for q in params:
            q.grad = None
        out = func(t, z)
        (out * nf.Tensor(-s[n_z:2 * n_z].reshape(shape_z))).sum().backward()
        return np.concatenate([out.data.ravel(), z.grad.data.ravel()]
                              + [q.grad.data.ravel() for q in params])

    zs, info_f = lsoda_odeint(fwd, z0.ravel(), [0.0, 1.0], rtol=tau, atol=tau, full_output=True)
    nfe_f, n[0] = n[0], 0
    zt = nf.Tensor(zs[-1].reshape(shape_z), requires_grad=True)
    nn.cross_entropy(net.head(zt), data.y_test[:N_PROBE]).backward()
    s1 = np.concatenate([zs[-1], zt.grad.data.ravel(), np.zeros(n_theta)])
    _, info_b = lsoda_odeint(aug, s1, [1.0, 0.0], rtol=tau, atol=tau, full_output=True)
    assert info_f["nfe"][-1] == nfe_f and info_b["nfe"][-1] == n[0]   # LSODA's own count agrees
    return nfe_f, n[0], int(info_f["nst"][-1]), int(info_b["nst"][-1]), int(info_b["mused"][-1])


lsoda_taus = [1e-3, 1e-5] if QUICK else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
print("LSODA + autograd's adjoint:  tau   NFE-F  NFE-B   B/F   steps F/B  (method: 1 = Adams)")
lsoda_rows = {}
for tau in lsoda_taus:
    nfe_f, nfe_b, st_f, st_b, meth = lsoda_counts(tau)
    lsoda_rows[tau] = (nfe_f, nfe_b)
    print(f"{tau:33.0e}  {nfe_f:5d}  {nfe_b:5d}  {nfe_b / nfe_f:4.2f}"
          f"   {st_f:4d}/{st_b:<4d}   {meth}")

# %% [markdown]
# The paper's solver gives about what ours give on this model: a ratio near one, not
# one half. So the solver is not the whole story. What is the backward solve doing?
# Its $z$ part retraces $z(t)$ from $z(1)$ back to $z(0)$, and section 5 showed that the
# adjoint parts barely enter its error control; perhaps **the backward solve costs what
# it costs to traverse the same trajectory in the other direction**, which need not be
# what the forward traversal costs.
#
# **The test: take the backward pass apart.** For each tolerance, with dopri5: the
# forward count (F); a solve of $z$ alone from $z(1)$ back to $z(0)$, no adjoint at all
# (Z←); and the adjoint's backward solve (B). Z← / F is what the *direction* costs:
# the same curve, traversed the other way, by the same solver. B / Z← is what the
# adjoint parts add or take away: through the error norm (the dilution of section 5)
# and through the first step, which the solver picks from norms of the whole augmented
# state.

# %%
z1_exact = nf.odeint(f_arr, z0, [0.0, 1.0], rtol=1e-10, atol=1e-10)[-1]
parts_taus = [1e-2, 1e-4, 1e-6] if QUICK else [1e-2, 1e-3, 1e-4, 1e-5, 1e-6, 1e-7]
print("dopri5     tau |    F   Z<-     B |  Z<-/F   B/Z<-    B/F")
parts = []
for tau in parts_taus:
    stats = nf.SolveStats()
    zt = nf.Tensor(z0, requires_grad=True)
    z1 = nf.odeint(func, zt, [0.0, 1.0], method="dopri5", rtol=tau, atol=tau, stats=stats)[-1]
    nn.cross_entropy(net.head(z1), data.y_test[:N_PROBE]).backward()
    nfe_zb = nf.solve(f_arr, z1_exact, [1.0, 0.0], rtol=tau, atol=tau).stats["nfev"]
    parts.append((stats.nfe_forward, nfe_zb, stats.nfe_backward))
    f_, zb, b_ = parts[-1]
    print(f"        {tau:7.0e} | {f_:4d}  {zb:4d}  {b_:4d} |  {zb / f_:5.2f}   {b_ / zb:5.2f}"
          f"  {b_ / f_:5.2f}")
F_, ZB, B_ = np.array(parts, dtype=float).T
# at this loss scale the adjoint parts never make the backward solve dearer than the
# direction alone (the loss-scale experiment of section 5 shows when they do)
assert np.all(B_ <= ZB + 7), (B_, ZB)

# %% [markdown]
# Two effects make up NFE-B / NFE-F, and neither is a property of the adjoint
# equations. **Direction** (Z← / F): the same curve traversed the other way can be
# cheaper or dearer. **The augmented state** (B / Z←): with the adjoint parts below
# atol, the RMS over $[z, a, a_\theta]$ is smaller than over $z$ alone, so the steps,
# the first one included, come out a little longer (and with a large gradient, as in
# the loss-scale experiment, shorter).
#
# Why would direction matter? An adaptive controller cuts a step at once when the
# error is too large but lets it grow only gradually (the PI controller remembers the
# last error, growth is capped, a multistep method starts at order one with a small
# step). A traversal that *starts* where the trajectory bends hardest pays for a slow
# ramp-up afterwards; one that *ends* there does not. Where along $t$ does the
# difficulty sit? The step sizes of the two traversals of $z$ (`trace=True`), and the
# same question on a problem whose answer we know: $y' = Ay$ with eigenvalues
# $\lambda, \lambda/2, -1/2$. For $\lambda < 0$ it contracts, so its fast modes act near
# $t = 0$ (front-loaded); for $\lambda > 0$ near $t = 1$.

# %%
tau_trace = 1e-5
tr_f = nf.solve(f_arr, z0, [0.0, 1.0], rtol=tau_trace, atol=tau_trace, trace=True).trace
tr_b = nf.solve(f_arr, z1_exact, [1.0, 0.0], rtol=tau_trace, atol=tau_trace, trace=True).trace


def linear_ratios(lam, tau):
    """B/F of dopri5, adams and LSODA for y' = diag(lam, lam/2, -1/2) y over [0, 1]."""
    A = np.diag([lam, lam / 2, -0.5])
    y0 = np.ones(3)
    y1 = nf.solve(lambda t, y: A @ y, y0, [0.0, 1.0], rtol=1e-12, atol=1e-12).ys[-1]
    out = []
    for m in ("dopri5", "adams"):
        f_ = nf.solve(lambda t, y: A @ y, y0, [0.0, 1.0], method=m, rtol=tau, atol=tau)
        b_ = nf.solve(lambda t, y: A @ y, y1, [1.0, 0.0], method=m, rtol=tau, atol=tau)
        out.append(b_.stats["nfev"] / f_.stats["nfev"])
    nf_ = lsoda_odeint(lambda y, t: A @ y, y0, [0.0, 1.0], rtol=tau, atol=tau,
                       full_output=True)[1]["nfe"][-1]
    nb_ = lsoda_odeint(lambda y, t: A @ y, y1, [1.0, 0.0], rtol=tau, atol=tau,
                       full_output=True)[1]["nfe"][-1]
    return out + [nb_ / nf_]


lams = [-20.0, -10.0, -5.0, -2.0, 0.0, 2.0, 5.0]
lin = {tau: np.array([linear_ratios(lam, tau) for lam in lams]) for tau in (1e-3, 1e-6)}
print("y' = diag(lam, lam/2, -1/2) y: NFE-B / NFE-F   (dopri5 / adams / LSODA)")
for tau, r in lin.items():
    print(f"  tau {tau:.0e}: " + "  ".join(f"lam {lam:+4.0f}: {a:.2f}/{b:.2f}/{c:.2f}"
                                          for lam, (a, b, c) in zip(lams, r)))
# many decay rates at once, as in a network's field: 64 components decaying at rates
# spread over 0.5-30, a random start
rates = -np.linspace(0.5, 30.0, 64)
y0_many = np.random.default_rng(0).standard_normal(64)
y1_many = y0_many * np.exp(rates)
many = []
for m in ("dopri5", "adams"):
    counts = [nf.solve(lambda t, y: rates * y, y_, span, method=m, rtol=1e-2, atol=1e-2)
              .stats["nfev"] for y_, span in ((y0_many, [0.0, 1.0]), (y1_many, [1.0, 0.0]))]
    many.append(tuple(counts))
many.append(tuple(lsoda_odeint(lambda y, t: rates * y, y_, span, rtol=1e-2, atol=1e-2,
                               full_output=True)[1]["nfe"][-1]
                  for y_, span in ((y0_many, [0.0, 1.0]), (y1_many, [1.0, 0.0]))))
print("64 decay rates in 0.5-30, tau 1e-2, NFE forward/backward: "
      + ", ".join(f"{m} {a}/{b} ({b / a:.2f})"
                  for m, (a, b) in zip(("dopri5", "adams", "LSODA"), many)))
A5 = np.diag([-5.0, -2.5, -0.5])
for label, start, span in (("forward ", np.ones(3), [0.0, 1.0]),
                           ("backward", np.exp(np.diag(A5)), [1.0, 0.0])):
    s = nf.solve(lambda t, y: A5 @ y, start, span, rtol=1e-3, atol=1e-3, trace=True)
    print(f"lam = -5, tau = 1e-3, {label}: NFE {s.stats['nfev']:3d}, steps h = "
          + " ".join(f"{abs(h):.3f}" for h in s.trace["h"])
          + "; error ratios " + " ".join(f"{e:.2f}" for e in s.trace["error_ratio"]))

fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
for tr, color, label in ((tr_f, "tab:blue", "forward, 0 -> 1"),
                         (tr_b, "tab:red", "backward, 1 -> 0")):
    t_, h_ = np.asarray(tr["t"]), np.asarray(tr["h"])
    ok = np.asarray(tr["accepted"], bool)
    axes[0].hlines(np.abs(h_[ok]), np.minimum(t_, t_ + h_)[ok], np.maximum(t_, t_ + h_)[ok],
                   color=color, lw=2.5, label=f"{label} ({ok.sum()} steps)")
axes[0].set_xlabel("t (each bar spans one accepted step)")
axes[0].set_ylabel("step size |h|")
axes[0].set_title(f"ODE-Net, z alone, dopri5, tau = {tau_trace:g}")
axes[0].legend(fontsize=7)
for j, (m, mk) in enumerate((("dopri5", "o"), ("adams", "s"), ("LSODA", "^"))):
    for tau, ls in ((1e-3, "-"), (1e-6, ":")):
        axes[1].plot(lams, lin[tau][:, j], ls, marker=mk, ms=4, color=f"C{j}",
                     label=f"{m}, tau {tau:g}")
axes[1].axhline(1.0, color="k", lw=0.7)
axes[1].axhline(0.5, color="k", lw=0.7, ls="--")
axes[1].set_yscale("log")
axes[1].set_xlabel("lambda (< 0: contracting, hard part near t = 0)")
axes[1].set_ylabel("NFE backward / NFE forward")
axes[1].set_title("y' = diag(lambda, lambda/2, -1/2) y over [0, 1]")
axes[1].legend(fontsize=6, ncol=2)
fig.tight_layout()
savefig(fig, "ch05_direction")

# %% [markdown]
# What the numbers say (the full run's are in the README):
#
# * **The adjoint's backward solve costs what $z$ alone costs going backwards.** In the
#   full run B = Z← at five of six tolerances (B / Z← = 1.00; 0.91 at $10^{-7}$). The
#   adjoint parts ride along; all of NFE-B / NFE-F below one is the direction, Z← / F
#   (0.70–1.00 here).
# * **Why the direction matters on this model.** Both traversals start with a short
#   first step (the first-step heuristic). The forward one starts in the part of the
#   trajectory that bends hardest, near $t = 0$, and spends several short steps there
#   before the controller lets them grow; the backward one starts where the curve is
#   easy, lengthens its steps at once, and reaches the hard part at the end, where the
#   last step is cut to land on $t = 0$ anyway.
# * **The same mechanism gives one half, and less, on the linear system**, with dopri5
#   and Adams at loose tolerances for contracting systems (the printed step sizes: at
#   $\lambda = -5$ the forward solve climbs from a short first step with error ratios far
#   below one; the backward one takes three long steps). Expanding systems
#   ($\lambda > 0$) give ratios above one. At tight tolerances the start-up is a small
#   part of a long solve and the ratios move towards one.
# * **LSODA shows the effect less** on the three-eigenvalue systems (0.76–1.1) and on
#   the ODE-Net (0.84–1.13): it changes its step and order only every few steps, and its
#   first step comes from the tolerance and $\|f\|$ in both directions. With many decay
#   rates at once (the 64-component system) it shows it as strongly as the others.

# %% [markdown]
# How to read it (the numbers printed above are this run's; the full run's are in the
# README):
#
# * **(a) and (b) reproduce with both solvers.** The error falls steeply with the NFE
#   (the tolerance controls it), and the forward time grows in proportion to the NFE.
#   On this network, though, **dopri5 reaches a given error with fewer evaluations
#   than Adams**: a solve over $[0, 1]$ takes only 10–30 Adams steps, and a multistep
#   method spends its first steps at low order building up its history (the start
#   phase), so the whole solve is mostly start-up. Adams wins on long solves with many
#   steps (the Kepler orbit above, the DETEST problems), not on short ones. Adams also
#   costs more *time* per evaluation here: its reference engine does per-step work on
#   whole arrays (differences, three error norms for the order choice) that is not small
#   next to one evaluation of this small network; a larger network hides it.
# * **(c), "backward about half of forward": the ratio is below one, but it is not
#   one half on this model, and it is not a property of the adjoint.** The full run
#   gives a median of 0.84 (dopri5) and 0.89 (Adams), and the paper's own solver
#   (SciPy's LSODA with autograd's adjoint recipe) gives 0.84–1.13. Taking the backward
#   pass apart shows why it comes out below one: it costs what traversing $z$ from
#   $t = 1$ back to $t = 0$ costs, and this model's trajectory, like a contracting
#   system's, is cheaper to traverse backwards, because the forward solve starts in
#   its hardest part. The ratio depends on where the trajectory is hard, on the
#   solver's start-up, and on how large the gradient is relative to atol (the
#   loss-scale experiment: a summed loss or a tighter atol makes the backward pass
#   costlier than the forward). The paper's one half is within what this mechanism
#   gives: 0.3–0.5 for the contracting linear systems with dopri5 and Adams, and
#   0.19–0.27 with all three solvers, LSODA included, on a system with 64 decay rates
#   at $\tau = 10^{-2}$. That the paper's model was front-loaded enough cannot be
#   checked, since the paper gives neither its trajectories nor its loss scaling
#   (`paper.md` §2.4). With torchdiffeq's dopri5, users see about one (PERF-NOTES).
#   The paper's reading, that the adjoint is "more computationally efficient" than
#   backpropagating through the solver, holds only when the trajectory is
#   front-loaded: backprop replays the forward's evaluations exactly, while the
#   adjoint pays for the backward traversal, which can cost more (λ > 0).
# * **What an evaluation costs.** A backward evaluation is a VJP: a forward pass *and* a
#   reverse pass of the network, a few times the cost of a forward evaluation (printed
#   above). So even at equal NFE the backward pass takes longer than the forward one;
#   NFE alone understates it.
# * **(d)** The NFE grows as the model trains (its dynamics become less smooth); with
#   the short training here the growth is modest, and Adams' count grows no faster than
#   dopri5's.

# %% [markdown]
# ## 6. Trading accuracy for speed at test time
#
# The paper suggests training at a tight tolerance and evaluating at a looser one.
# Here: the Adams-trained model ($\tau = 10^{-3}$ in training), evaluated on the 1,000
# test digits at other tolerances with each solver.

# %%
test_taus = [1e-1, 1e-3, 1e-5] if QUICK else [3e-1, 1e-1, 3e-2, 1e-2, 1e-3, 1e-4, 1e-5, 1e-6]
print("   tau   | dopri5: test error  NFE | adams: test error  NFE")
table = []
with nf.no_grad():
    z0_test = net.features(data.x_test).data
    for tau in test_taus:
        row = [tau]
        for m in ("dopri5", "adams"):
            sol = nf.solve(f_arr, z0_test, [0.0, 1.0], method=m, rtol=tau, atol=tau)
            logits = net.head(nf.Tensor(sol.ys[-1])).data
            row += [float((logits.argmax(1) != data.y_test).mean()), sol.stats["nfev"]]
        table.append(row)
        print(f"  {tau:7.0e} |        {100 * row[1]:5.2f}%  {row[2]:4d} |       "
              f"{100 * row[3]:5.2f}%  {row[4]:4d}")
errs = np.array([[r[1], r[3]] for r in table])
assert np.all(np.abs(errs - errs[test_taus.index(1e-3)]) < 0.1), "a tolerance broke the model"

# %% [markdown]
# Looser tolerances cut the evaluations several-fold while the test error barely moves
# — until the tolerance is so loose that the solver takes one or two huge steps. The
# model does not depend on the exact trajectory it was trained with, which is the
# paper's point: accuracy is a knob at test time.
#
# ## Summary
#
# * The NFE is an ODE-Net's depth, chosen by the solver; `Solution.stats`,
#   `SolveStats` and a counter inside $f$ agree on it.
# * Adams–Bashforth–Moulton in PECE form costs two evaluations per step at any order;
#   with variable order (1–12) it needs fewer evaluations than Dormand–Prince on long,
#   smooth solves at tight tolerances, and fewer than SciPy's LSODA on the DETEST
#   problems; on the ODE-Net's short solve over $[0, 1]$ its start-up makes it the
#   costlier of the two.
# * Fig. 3's (a), (b) and (d) reproduce with both solvers. (c), the backward pass
#   needing about half the forward evaluations, reproduces in direction but not in
#   size (0.84 dopri5, 0.89 Adams, 0.84–1.13 LSODA): the backward solve costs what
#   traversing $z$ from $t = 1$ to $t = 0$ costs, which is less when the trajectory is
#   hardest near $t = 0$ and more when it is hardest near $t = 1$ or the gradient is
#   large relative to atol. A backward evaluation costs a VJP, several forward ones.
# * A model trained at one tolerance can be evaluated at a looser one for a fraction
#   of the evaluations and nearly the same test error.
#
# ## Exercises
#
# 1. **ex5_1** Extend `adams_pece` with the order-$(k-1)$ estimate
#    $|h(g_{k-1}-g_{k-2})|\,\|\Phi^p_{k-1}\|$ and lower the order when it is smaller than
#    the order-$k$ one. Count the evaluations on the Kepler orbit against the fixed order.
# 2. **ex5_2** Take the backward pass apart for Adams as section 5 does for dopri5
#    (F, Z←, B), and plot the step sizes and orders (`trace=True`, `sol.trace["h"]`,
#    `sol.trace["order"]`) of both traversals of $z$. Where does the start-up at order
#    one spend its evaluations in each direction?
# 3. **ex5_3** Repeat the sweep of section 4 with `adjoint_rtol` ten times looser than
#    the forward tolerance. How do NFE-B and the gradient's error change?
# 4. **ex5_4** Train at $\tau = 10^{-1}$ instead of $10^{-3}$ and repeat section 6:
#    does a model trained with a loose solver still work at a tight one?

# %%
print(f"chapter 5 ran in {time.perf_counter() - T_START:.0f} s")
