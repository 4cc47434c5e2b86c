# %% [markdown]
# # Chapter 3 — Gradients through a solve: the adjoint method by hand
#
# **Goal.** Differentiate a loss through an ODE solve, two ways: by recording the
# solver's own operations (backprop through the solver, the paper's RK-Net), and by
# the **adjoint method** (Chen et al. 2018, Sec. 2, Algorithms 1–2), which solves a
# second ODE backwards in time and needs memory independent of the number of steps.
# Then check them against each other and against finite differences, measure the
# memory, and use the adjoint to learn the dynamics of a spiral.
#
# Prerequisites: chapter 1 (VJPs), chapter 2 (the solvers). Modules used:
# `nodeform.odeint`, `nodeform.solve`, `nodeform.vjp`, `nodeform.nn`, `nodeform.optim`.
#
# ## 1. The derivation
#
# Let $\dot z = f(z, t, \theta)$ and let a loss $L$ depend on $z(t_1)$. Define the
# **adjoint** $a(t) = \partial L/\partial z(t)$. Over a short step $\epsilon$,
# $z(t+\epsilon) = z(t) + \epsilon f(z(t), t, \theta) + O(\epsilon^2)$, so the chain rule gives
# $a(t) = a(t+\epsilon)\,(I + \epsilon\,\partial f/\partial z) + O(\epsilon^2)$ and, as
# $\epsilon\to 0$,
#
# $$\frac{da(t)}{dt} = -a(t)^\top \frac{\partial f}{\partial z}, \qquad a(t_1) = \frac{\partial L}{\partial z(t_1)} .$$
#
# Treating $\theta$ and $t$ as states with $\dot\theta = 0$ and $\dot t = 1$ gives, by the
# same argument, the parameter and time gradients
#
# $$\frac{dL}{d\theta} = -\int_{t_1}^{t_0} a^\top \frac{\partial f}{\partial\theta}\,dt, \qquad
#   \frac{dL}{dt_1} = a(t_1)^\top f(z(t_1), t_1), \qquad
#   \frac{dL}{dt_0} = a_t(t_0),\ \ \dot a_t = -a^\top\frac{\partial f}{\partial t}.$$
#
# Everything needed is a **vector–Jacobian product** of $f$ — one reverse pass of
# chapter 1 per evaluation — and $z(t)$ itself, which is recomputed backwards alongside
# $a$ instead of being stored. That is Algorithm 1: integrate the augmented state
# $[z, a, a_\theta]$ from $t_1$ back to $t_0$ in one solve.

# %%
import time
import tracemalloc

import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import nodeform as nf
from nodeform import nn, optim
from nodeform.plotting import is_quick, savefig

QUICK = is_quick()
rng = np.random.default_rng(0)

# %% [markdown]
# ## 2. Algorithm 1, written out
#
# Here it is in twenty lines over plain arrays: `nf.solve` integrates, `nf.vjp` gives
# $a^\top\partial f/\partial z$ and $a^\top\partial f/\partial\theta$ in one reverse pass.

# %%
def f_tensor(z, W):                      # f(z, θ) = tanh(z W^T), z: (2,), W: (2, 2)
    return nf.tanh(z @ W.T)


def algorithm1(W, z1, dL_dz1, t0, t1, rtol=1e-10, atol=1e-12):
    """Return dL/dz(t0) and dL/dW by integrating [z, a, a_W] backwards from t1 to t0."""
    n, p = z1.size, W.size

    def augmented(t, s):
        z, a = s[:n], s[n:2 * n]
        fz, vjp_fn = nf.vjp(f_tensor, z, W)
        a_dfdz, a_dfdW = vjp_fn(a)
        return np.concatenate([fz, -a_dfdz, -a_dfdW.ravel()])

    s1 = np.concatenate([z1, dL_dz1, np.zeros(p)])
    s0 = nf.solve(augmented, s1, [t1, t0], rtol=rtol, atol=atol).ys[-1]
    return s0[n:2 * n], s0[2 * n:].reshape(W.shape)


W0 = rng.standard_normal((2, 2))
z0 = np.array([1.0, -0.5])
z1 = nf.solve(lambda t, z: np.tanh(z @ W0.T), z0, [0.0, 1.0], rtol=1e-10, atol=1e-12).ys[-1]
dL_dz0, dL_dW = algorithm1(W0, z1, 2 * z1, 0.0, 1.0)        # L = |z(1)|^2

# The library's odeint does the same (plus observation times and time gradients):
Wt = nf.Tensor(W0, requires_grad=True)
z0t = nf.Tensor(z0, requires_grad=True)
zs = nf.odeint(lambda t, z: f_tensor(z, Wt), z0t, [0.0, 1.0], params=[Wt], rtol=1e-10, atol=1e-12)
(zs[-1] ** 2.0).sum().backward()
print("Algorithm 1 by hand: dL/dz0 =", np.round(dL_dz0, 8))
print("nodeform.odeint:     dL/dz0 =", np.round(z0t.grad.data, 8))
assert np.allclose(dL_dz0, z0t.grad.data, atol=1e-8) and np.allclose(dL_dW, Wt.grad.data, atol=1e-8)

# %% [markdown]
# ## 3. Many observation times (Fig. 2) and time gradients (Algorithm 2)
#
# When the loss reads the state at $t_0 < t_1 < \dots < t_N$, the backward solve is cut at
# each $t_i$: there the adjoint **jumps** by the direct cotangent $\partial L/\partial z(t_i)$,
# and $z$ restarts from the stored forward state (running $f$ backwards drifts). Each
# output time gets $dL/dt_i = g_i^\top f(z(t_i), t_i)$, and the start time gets
# $a_t(t_0)$ of Algorithm 2. `nodeform/adjoint/continuous.py` is this, line by line. We
# check the time gradients against an identity the flow satisfies,
# $dL/dt_0 = -(dL/dz_0 - g_0)^\top f(z_0, t_0)$:

# %%
def f_td(t, z):
    return nf.tanh(z @ Wt.T) * nf.cos(2.0 * t)


z0t = nf.Tensor(rng.standard_normal((3, 2)), requires_grad=True)     # a batch of 3 states
tt = nf.Tensor(np.array([0.0, 0.5, 1.0, 1.7]), requires_grad=True)
stats = nf.SolveStats()
zs = nf.odeint(f_td, z0t, tt, params=[Wt], rtol=1e-10, atol=1e-12, stats=stats)   # (4, 3, 2)
(zs[1:] ** 2.0).sum().backward()
f0 = f_td(0.0, nf.Tensor(z0t.data)).data
print("dL/dt_i by the adjoint:", np.round(tt.grad.data, 8))
print("identity for dL/dt_0:  ", round(-(z0t.grad.data * f0).sum(), 8))
print(f"evaluations: forward {stats.nfe_forward}, backward {stats.nfe_backward}")

# %% [markdown]
# ## 4. Three ways to the same gradient
#
# Backprop through the solver differentiates the *numerical* solution exactly; the
# adjoint differentiates the *exact* flow to the solver's tolerance; central
# differences approximate either. They must agree to about the tolerance, and the
# gap must shrink with it. We measure the gap on an MLP vector field with a batch.

# %%
W1 = nf.Tensor(rng.standard_normal((16, 2)), requires_grad=True)
W2 = nf.Tensor(rng.standard_normal((2, 16)) * 0.5, requires_grad=True)
Y0 = rng.standard_normal((8, 2))


def mlp(t, z):
    return nf.tanh(z @ W1.T) @ W2.T


def grad_W1(adjoint, rtol):
    W1.grad = W2.grad = None
    zs = nf.odeint(mlp, nf.Tensor(Y0), [0.0, 0.5, 1.0], params=[W1, W2], adjoint=adjoint,
                   rtol=rtol, atol=rtol * 1e-2)
    (zs ** 2.0).sum().backward()
    return W1.grad.data.copy()


g_ref = grad_W1("continuous", 1e-12)
rtols = [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8] if not QUICK else [1e-3, 1e-5, 1e-7]
gap = {"continuous": [], "backprop": []}
for r in rtols:
    for k in gap:
        gap[k].append(np.abs(grad_W1(k, r) - g_ref).max() / np.abs(g_ref).max())
# finite differences of the loss in one random direction of W1 (tight solve)
U = rng.standard_normal(W1.shape)


def loss_at(W):
    with nf.no_grad():
        zs = nf.odeint(lambda t, z: nf.tanh(z @ W.T) @ W2.T, nf.Tensor(Y0), [0.0, 0.5, 1.0],
                       rtol=1e-12, atol=1e-14)
    return float((zs.data ** 2).sum())


eps = 1e-5
fd = (loss_at(W1.data + eps * U) - loss_at(W1.data - eps * U)) / (2 * eps)
print(f"directional derivative: adjoint {np.sum(g_ref * U):.10f}, finite differences {fd:.10f}")
print("rtol      | adjoint vs tight | backprop vs tight")
for r, a, b in zip(rtols, gap["continuous"], gap["backprop"]):
    print(f"{r:8.0e}  | {a:16.2e} | {b:16.2e}")

fig, ax = plt.subplots(figsize=(5.5, 4))
for k, m in (("continuous", "o-"), ("backprop", "s--")):
    ax.loglog(rtols, gap[k], m, label=f"{k} (rtol)")
ax.loglog(rtols, rtols, "k:", lw=0.8, label="= rtol")
ax.set_xlabel("solver rtol (atol = rtol / 100)")
ax.set_ylabel("relative error of dL/dW1 vs rtol 1e-12")
ax.set_title("Both gradients converge as the tolerance shrinks")
ax.legend()
savefig(fig, "ch03_gradient_agreement")

# %% [markdown]
# ## 5. Memory: why the adjoint exists
#
# Backprop keeps every stage of every step on the tape; the adjoint keeps the outputs
# and one augmented state. We integrate the same field over longer and longer spans
# (more steps) and record the peak memory of forward plus backward with `tracemalloc`.

# %%
Wa = nf.Tensor(rng.standard_normal((64, 2)), requires_grad=True)
Wb = nf.Tensor(rng.standard_normal((2, 64)) * 0.3, requires_grad=True)
y0_mem = nf.Tensor(rng.standard_normal((256, 2)))


def peak(adjoint, t1):
    y0 = y0_mem
    stats = nf.SolveStats()
    tracemalloc.start()
    zs = nf.odeint(lambda t, z: nf.tanh(z @ Wa.T) @ Wb.T, y0, [0.0, t1], params=[Wa, Wb],
                   adjoint=adjoint, rtol=1e-6, atol=1e-8, stats=stats)
    (zs[-1] ** 2.0).sum().backward()
    mib = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    return mib, stats.nfe_forward


spans = [1.0, 2.0, 4.0] if QUICK else [1.0, 2.0, 4.0, 8.0, 16.0]
mem = {k: [peak(k, s) for s in spans] for k in ("continuous", "backprop")}
for k, rows in mem.items():
    print(f"{k:>10}: " + ", ".join(f"t1={s:g}: {m:.1f} MiB ({n} evals)" for s, (m, n) in zip(spans, rows)))

fig, ax = plt.subplots(figsize=(5.5, 4))
for k, m in (("continuous", "o-"), ("backprop", "s--")):
    ax.plot([n for _, n in mem[k]], [mb for mb, _ in mem[k]], m, label=k)
ax.set_xlabel("function evaluations of the forward solve")
ax.set_ylabel("peak memory, forward + backward (MiB)")
ax.set_title("Adjoint memory is flat; backprop grows with the steps")
ax.legend()
savefig(fig, "ch03_memory")

# %% [markdown]
# ## 6. Learning a spiral
#
# The demo that ships with torchdiffeq (paper.md §5.1): data from
# $\dot y = (y^{\odot 3}) A$, $A = \begin{bmatrix}-0.1 & 2\\ -2 & -0.1\end{bmatrix}$,
# $y_0 = (2, 0)$ on 1,000 points of $[0, 25]$; the model is
# $f(t, y) = \mathrm{MLP}(y^{\odot 3})$ with 50 tanh units, trained with the adjoint on
# batches of 20 short windows of 10 points (L1 loss, RMSprop $10^{-3}$).

# %%
A_true = np.array([[-0.1, 2.0], [-2.0, -0.1]])
t_data = np.linspace(0.0, 25.0, 1000)
y_true = nf.odeint(lambda t, y: (y ** 3) @ A_true, np.array([2.0, 0.0]), t_data,
                   rtol=1e-9, atol=1e-11)                              # (1000, 2)


class Spiral(nn.Module):
    def __init__(self, rng):
        super().__init__()
        self.l1, self.l2 = nn.Linear(2, 50, rng=rng), nn.Linear(50, 2, rng=rng)
        for layer in (self.l1, self.l2):             # N(0, 0.1^2) weights, zero biases
            layer.weight.data[...] = rng.normal(0.0, 0.1, layer.weight.shape)
            layer.bias.data[...] = 0.0

    def forward(self, t, y):
        return self.l2(nf.tanh(self.l1(y ** 3.0)))


model = Spiral(np.random.default_rng(1))
opt = optim.RMSprop(model.parameters(), lr=1e-3)
n_iters, batch_time, batch_size = (300 if QUICK else 2000), 10, 20
stats = nf.SolveStats()
losses = []
t_start = time.perf_counter()
for it in range(n_iters):
    idx = rng.choice(len(t_data) - batch_time, batch_size, replace=False)
    y0_b = nf.Tensor(y_true[idx])                                     # (20, 2)
    target = np.stack([y_true[idx + k] for k in range(batch_time)])  # (10, 20, 2)
    opt.zero_grad()
    pred = nf.odeint(model, y0_b, t_data[:batch_time], rtol=1e-6, atol=1e-8, stats=stats)
    loss = nf.abs(pred - target).mean()
    loss.backward()
    opt.step()
    losses.append(loss.item())
train_s = time.perf_counter() - t_start
with nf.no_grad():
    y_fit = nf.odeint(model, nf.Tensor(np.array([2.0, 0.0])), t_data, rtol=1e-6, atol=1e-8).data
full_err = np.abs(y_fit - y_true).mean()
print(f"{n_iters} iterations in {train_s:.1f} s ({1e3 * train_s / n_iters:.1f} ms each); "
      f"NFE per iteration forward {stats.nfe_forward / n_iters:.0f}, backward "
      f"{stats.nfe_backward / n_iters:.0f}")
print(f"batch L1 loss: first 20 iterations {np.mean(losses[:20]):.4f}, last 20 "
      f"{np.mean(losses[-20:]):.4f}; whole-trajectory mean |error| from y0: {full_err:.4f}")
assert np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]), "the spiral fit did not learn"

fig, axes = plt.subplots(1, 3, figsize=(14, 4))
axes[0].plot(t_data, y_true[:, 0], "g-", label="true x")
axes[0].plot(t_data, y_true[:, 1], "b-", label="true y")
axes[0].plot(t_data, y_fit[:, 0], "g--", label="learned x")
axes[0].plot(t_data, y_fit[:, 1], "b--", label="learned y")
axes[0].set_xlabel("t")
axes[0].set_title("Trajectories")
axes[0].legend(fontsize=8)
axes[1].plot(y_true[:, 0], y_true[:, 1], "g-", label="true")
axes[1].plot(y_fit[:, 0], y_fit[:, 1], "b--", label="learned")
axes[1].set_title("Phase portrait")
axes[1].legend(fontsize=8)
g = np.linspace(-2, 2, 21)
X, Y = np.meshgrid(g, g)
grid = np.stack([X.ravel(), Y.ravel()], axis=1)
with nf.no_grad():
    V = model(0.0, nf.Tensor(grid)).data
T = (grid ** 3) @ A_true
axes[2].quiver(X, Y, T[:, 0], T[:, 1], color="g", alpha=0.5, label="true field")
axes[2].quiver(X, Y, V[:, 0], V[:, 1], color="b", alpha=0.5, label="learned field")
axes[2].set_title("Vector fields")
axes[2].legend(fontsize=8)
for ax in axes[1:]:
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
savefig(fig, "ch03_spiral")

# %% [markdown]
# ## 7. The same adjoint, compiled
#
# Each backward evaluation above runs a small autodiff graph in Python. For the common
# case of an MLP vector field, `nf.mlp_field` gives the pair $(f, \text{VJP of } f)$ as
# Numba functions over one flat parameter vector $\theta$, with the VJPs derived by hand
# layer by layer: $g \leftarrow g \odot \tanh'$, $\partial W = g^\top x$,
# $\partial b = \sum_\text{rows} g$, $g \leftarrow g W$. Then the forward solve *and* the
# adjoint solve run inside the compiled loop of chapter 2. Same algorithm, same numbers:

# %%
field = nf.mlp_field(2, (64,), "tanh")                     # theta: W1 (64,2), b1, W2 (2,64), b2
theta0 = field.init_theta(np.random.default_rng(3), scale=2.0)
Z0 = np.random.default_rng(4).standard_normal((512, 2))     # a batch of 512 states


def forward_and_gradient(func_for):
    theta = nf.Tensor(theta0, requires_grad=True)
    zs = nf.odeint(func_for(theta), nf.Tensor(Z0), [0.0, 1.0], params=theta, rtol=1e-6, atol=1e-8)
    (zs[-1] ** 2.0).sum().backward()
    return theta.grad.data


timings = {}
for name, func_for in (("autodiff (NumPy)", field.reference), ("compiled (Numba)", lambda th: field)):
    forward_and_gradient(func_for)                          # warm-up (Numba: load or compile)
    t0 = time.perf_counter()
    for _ in range(3):
        g = forward_and_gradient(func_for)
    timings[name] = ((time.perf_counter() - t0) / 3, g)
(t_ref, g_ref), (t_nb, g_nb) = timings.values()
print(f"forward + gradient: autodiff {1e3 * t_ref:.1f} ms, compiled {1e3 * t_nb:.1f} ms "
      f"({t_ref / t_nb:.1f}x); gradients agree to {np.abs(g_nb - g_ref).max() / np.abs(g_ref).max():.1e}")
assert np.allclose(g_nb, g_ref, rtol=1e-9, atol=1e-9 * np.abs(g_ref).max())

# %% [markdown]
# ## Summary
#
# * The adjoint $a(t) = \partial L/\partial z(t)$ obeys $\dot a = -a^\top\partial f/\partial z$,
#   solved backwards with $z$ recomputed alongside; parameter and time gradients are
#   integrals of VJPs along the way (Algorithms 1–2). Observations add jumps.
# * Backprop through the solver is exact for the discrete scheme; the adjoint is exact
#   for the flow up to the tolerance: the two agree to O(rtol), and both match finite
#   differences.
# * The adjoint's memory does not grow with the number of steps; backprop's does.
# * With it, a 50-unit MLP learns the spiral's dynamics from short windows.
# * For MLP vector fields, hand-derived VJPs let both solves run compiled (`nf.mlp_field`).
#
# ## Exercises
#
# 1. **ex3_1** Extend `algorithm1` to return $dL/dt_0$ and $dL/dt_1$ (Algorithm 2), and
#    check them against `nf.odeint` with `t` requiring a gradient.
# 2. **ex3_2** Remove the restart of $z$ at observation times from a copy of
#    `adjoint_sweep` and measure how the gradient error grows with the number of
#    observations on the spiral (a contracting system: running it backwards expands).
# 3. **ex3_3** Use the Euler method for both solves. Why does the continuous adjoint now
#    disagree with backprop by O(h), and which one is the right gradient of the loss the
#    optimizer actually sees?
# 4. **ex3_4** Replace the adjoint's error norm over $[z, a, a_\theta]$ by one over
#    $[z, a]$ only (a "seminorm", Kidger et al. 2021). Count the backward evaluations.
# 5. **ex3_5** Train the spiral with `adjoint="backprop"` and compare time per iteration
#    and peak memory with the adjoint.
