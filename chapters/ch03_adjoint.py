# %% [markdown]
# # Chapter 3 — Gradients through a solve: the adjoint method by hand
#
# **Goal.** Differentiate a loss through an ODE solve, two ways: by recording the
# solver's own operations (backprop through the solver, the paper's RK-Net), and by
# the **adjoint method** (Chen et al. 2018, Sec. 2, Algorithms 1–2, Fig. 2), which
# solves a second ODE backwards in time and needs memory independent of the number of
# steps. Build both, check them against the library and finite differences, measure
# memory and time, and use the adjoint to learn the dynamics of a spiral.
#
# **Learning goals.** After this chapter you can
# 1. derive the adjoint ODE and the parameter and time gradients from the chain rule;
# 2. write the full backward sweep: augmented dynamics, jumps at observations,
#    restarts from stored states, time gradients starting from $a_t(t_N) = -g_N^\top f$;
# 3. write backprop through a fixed-grid solver, and say exactly what it differentiates;
# 4. say what each costs (memory *and* time) and why the backward pass here takes more
#    evaluations than the forward one.
#
# **Prerequisites.** Chapter 1 (VJPs: `nf.vjp`), chapter 2 (RK steps, adaptive solves,
# local error). Refresher, *VJP of a vector field*: for $f(z, t, \theta)$, one reverse
# pass with cotangent $a$ gives $a^\top\partial f/\partial z$, $a^\top\partial
# f/\partial\theta$ and $a^\top\partial f/\partial t$ together, for about the cost of
# two or three evaluations of $f$.
#
# **Time to work through:** about 3 hours.
#
# **Where it lives.** `nodeform/adjoint/continuous.py` (the derivation and
# `adjoint_sweep`), `nodeform/adjoint/odeint.py` (the solve as one differentiable
# primitive), `nodeform/adjoint/backprop.py` (backprop through the solver),
# `nodeform/adjoint/numba_field.py` (the compiled version of section 8).
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
#   \frac{dL}{dt_0} = a_t(t_0),\ \ \dot a_t = -a^\top\frac{\partial f}{\partial t},\ \
#   a_t(t_1) = -\frac{dL}{dt_1}.$$
#
# Everything needed is a VJP of $f$ and $z(t)$ itself, which is recomputed backwards
# alongside $a$ instead of being stored.

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
from nodeform.testing import check

QUICK = is_quick()   # in a notebook: is_quick(True) for the quick run
rng = np.random.default_rng(0)

# %% [markdown]
# ## 2. Build: the backward sweep
#
# With observations at $t_0 < t_1 < \dots < t_N$ and $L$ reading every $z(t_i)$, let
# $g_i = \partial L/\partial z(t_i)$ be the direct cotangents. The sweep (Algorithm 2
# with the jumps of the paper's Fig. 2):
#
# 1. forward: solve for $z(t_i)$ and store only these $N+1$ states;
# 2. start at $t_N$ with $a = g_N$, $a_\theta = 0$, $dL/dt_N = g_N^\top f(z_N, t_N)$ and
#    $a_t = -dL/dt_N$;
# 3. for $i = N..1$: integrate the augmented state $[z, a, a_\theta, a_t]$ from $t_i$ back
#    to $t_{i-1}$; then **restart** $z$ from the stored $z(t_{i-1})$ (running $f$ backwards
#    drifts), and **jump**: $a \mathrel{+}= g_{i-1}$, and for $i-1 \ge 1$,
#    $dL/dt_{i-1} = g_{i-1}^\top f(z_{i-1}, t_{i-1})$, $a_t \mathrel{-}= dL/dt_{i-1}$;
# 4. at the end $dL/dz_0 = a$, $dL/d\theta = a_\theta$, $dL/dt_0 = a_t$.
#
# The vector field: $f(z, t, W) = \tanh(zW^\top)\cos 2t$ on a batch of three states
# $z$ of shape $(3, 2)$, so that $\partial f/\partial t \ne 0$.

# %%
def f_tensor(t, z, W):                       # z: (3, 2), W: (2, 2), t: scalar
    return nf.tanh(z @ W.T) * nf.cos(2.0 * t)


def f_array(t, z, W):
    return np.tanh(z @ W.T) * np.cos(2.0 * t)


def augmented_dynamics(t, s, W, shape, ft=f_tensor):
    """d/dt [z, a, a_W, a_t] = [f, -a^T df/dz, -a^T df/dW, -a^T df/dt] (flat)."""
    # BEGIN SOLUTION ex3_9
    n = int(np.prod(shape))
    z, a = s[:n].reshape(shape), s[n:2 * n].reshape(shape)
    fz, vjp_fn = nf.vjp(ft, np.asarray(t, dtype=float), z, W)
    a_dfdt, a_dfdz, a_dfdW = vjp_fn(a)
    return np.concatenate([fz.ravel(), -a_dfdz.ravel(), -a_dfdW.ravel(), [-float(a_dfdt)]])
    # END SOLUTION ex3_9


def start_values(t_N, z_N, g_N, W, fa=f_array):
    """a, a_W, a_t and dL/dt_N at the last observation."""
    # BEGIN SOLUTION ex3_7
    dL_dtN = float((g_N * fa(t_N, z_N, W)).sum())
    return g_N.copy(), np.zeros(W.size), -dL_dtN, dL_dtN
    # END SOLUTION ex3_7


def observation_jump(a, a_t, g_i, t_i, z_i, W, with_time, fa=f_array):
    """At an observation: a += g_i; dL/dt_i = g_i . f(z_i, t_i); a_t -= dL/dt_i."""
    # BEGIN SOLUTION ex3_8
    dL_dti = float((g_i * fa(t_i, z_i, W)).sum()) if with_time else 0.0
    return a + g_i, a_t - dL_dti, dL_dti
    # END SOLUTION ex3_8


def backward_sweep(t_obs, zs, g, W, rtol, atol, restart=True, n_dense=0, ft=f_tensor,
                   fa=f_array):
    """dL/dz0, dL/dW, dL/dt from the stored states zs (N+1, *shape) and cotangents g."""
    # BEGIN SOLUTION ex3_10
    N, shape, n = len(t_obs) - 1, zs.shape[1:], zs[0].size
    a, a_W, a_t, dL_dt_N = start_values(t_obs[N], zs[N], g[N], W, fa)
    dL_dt, z, nfev, path = np.zeros(N + 1), zs[N], 0, []
    dL_dt[N] = dL_dt_N
    for i in range(N, 0, -1):
        s = np.concatenate([z.ravel(), a.ravel(), a_W, [a_t]])
        t_grid = np.linspace(t_obs[i], t_obs[i - 1], max(2, n_dense))  # dense output is free
        sol = nf.solve(augmented_dynamics, s, t_grid, args=(W, shape, ft), rtol=rtol, atol=atol)
        nfev += sol.stats["nfev"]
        path.append((t_grid, sol.ys[:, :n], sol.ys[:, n:2 * n]))     # for the figure
        s = sol.ys[-1]
        z = zs[i - 1] if restart else s[:n].reshape(shape)             # restart from storage
        a, a_W, a_t = s[n:2 * n].reshape(shape), s[2 * n:-1], s[-1]
        a, a_t, dL_dt[i - 1] = observation_jump(a, a_t, g[i - 1], t_obs[i - 1], zs[i - 1], W,
                                                i - 1 >= 1, fa)
    dL_dt[0] = a_t
    return a, a_W.reshape(W.shape), dL_dt, nfev, path, z
    # END SOLUTION ex3_10


# %% [markdown]
# The check against the library: `nf.odeint(..., adjoint="continuous")` on the same
# field with the same tolerances, the loss $L = \sum_{i\ge1}|z(t_i)|^2$ (so $g_0 = 0$,
# $g_i = 2z(t_i)$), gradients with respect to $z_0$, $W$ and all four times.

# %%
W0 = rng.standard_normal((2, 2))
Z0 = rng.standard_normal((3, 2))                                    # a batch of 3 states
t_obs = np.array([0.0, 0.5, 1.0, 1.7])
tol = dict(rtol=1e-10, atol=1e-12)
zs = nf.solve(lambda t, z: f_array(t, z, W0), Z0, t_obs, **tol).ys  # (4, 3, 2), stored
g = 2 * zs
g[0] = 0.0
dz0, dW, dt, nfev_back, path, _ = backward_sweep(t_obs, zs, g, W0, **tol)

Wt, z0t, tt = (nf.Tensor(v, requires_grad=True) for v in (W0, Z0, t_obs))
stats = nf.SolveStats()
zs_lib = nf.odeint(lambda t, z: f_tensor(t, z, Wt), z0t, tt, params=[Wt], stats=stats, **tol)
(zs_lib[1:] ** 2.0).sum().backward()
for name, mine, lib in (("dL/dz0", dz0, z0t.grad.data), ("dL/dW", dW, Wt.grad.data),
                        ("dL/dt_i", dt, tt.grad.data)):
    print(f"{name:8s} built vs library: max relative difference "
          f"{np.abs(mine - lib).max() / np.abs(lib).max():.1e}")
print("dL/dt_i:", np.round(dt, 8))
check("ch03.backward_sweep_equals_odeint",
      all(np.allclose(m, lib, rtol=1e-9, atol=1e-9 * np.abs(lib).max())
          for m, lib in ((dz0, z0t.grad.data), (dW, Wt.grad.data), (dt, tt.grad.data))),
      "built sweep: dL/dz0, dL/dW, dL/dt_i equal nf.odeint(adjoint='continuous') to rtol 1e-9")

# %% [markdown]
# **Time gradients by finite differences.** The identity
# $dL/dt_0 = -(dL/dz_0 - g_0)^\top f(z_0, t_0)$ holds for *any* $a$ the sweep returns,
# so it cannot catch a wrong $a$. A direct check can: move each $t_i$ by $\pm\epsilon$,
# re-solve, and difference the loss.

# %%
def loss_at_times(times):
    zz = nf.odeint(lambda t, z: f_array(t, z, W0), Z0, times, rtol=1e-12, atol=1e-14)
    return float((zz[1:] ** 2).sum())


eps = 1e-4
fd = np.array([(loss_at_times(t_obs + eps * e) - loss_at_times(t_obs - eps * e)) / (2 * eps)
               for e in np.eye(len(t_obs))])
print("dL/dt_i by finite differences:", np.round(fd, 8))
check("ch03.time_gradients_fd", np.allclose(dt, fd, rtol=1e-6, atol=1e-6 * np.abs(fd).max()),
      f"dL/dt_i of the sweep equal central differences (eps 1e-4) to 1e-6 "
      f"(worst {np.abs(dt - fd).max() / np.abs(fd).max():.1e})")

# %% [markdown]
# ## 3. The paper's Fig. 2, and why the sweep restarts
#
# Below: the forward trajectory $z(t)$, the one reconstructed backwards by the sweep,
# and the adjoint $a(t)$, which jumps by $g_i$ at each observation. With restarts, $z$
# is reset to the stored state at each $t_i$. Without them, the backward solve of $z$
# runs on from wherever it got to, and its error grows the further it goes: harmlessly
# here at a tight tolerance on a 2-D field, badly on a system that contracts forwards
# (then backwards it *expands*: errors grow like $e^{\lambda t}$). We measure the drift on
# the spiral of section 8, $\dot y = y^{\odot 3}A$, at rtol $10^{-6}$ over
# $t\in[0, 10]$, 21 observations.

# %%
_, _, _, _, path_fig, _ = backward_sweep(t_obs, zs, g, W0, **tol, n_dense=30)
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
t_dense = np.linspace(0, t_obs[-1], 200)
z_dense = nf.odeint(lambda t, z: f_array(t, z, W0), Z0, t_dense, **tol)
for k, color in zip(range(2), ("C0", "C1")):
    axes[0].plot(t_dense, z_dense[:, 0, k], color=color, lw=2, alpha=0.5,
                 label=f"z_{k + 1}(t), forward solve")
    for j, (tg, zb, ab) in enumerate(path_fig):
        axes[0].plot(tg, zb[:, k], "--", color=color, lw=1,
                     label=f"z_{k + 1}(t), reconstructed backwards" if j == 0 else None)
        axes[1].plot(tg, ab[:, k], "-", color=color, label=f"a_{k + 1}(t)" if j == 0 else None)
for ti in t_obs[1:]:
    for ax in axes:
        ax.axvline(ti, color="0.8", lw=0.8, zorder=0)
axes[0].set_xlabel("time t")
axes[0].set_ylabel("state (first batch element)")
axes[0].set_title("z(t): forward, and reconstructed backwards")
axes[1].set_xlabel("time t (the sweep runs right to left)")
axes[1].set_ylabel("adjoint a(t) = dL/dz(t)")
axes[1].set_title("a(t): jumps by dL/dz(t_i) at each observation (grey)")
for ax in axes:
    ax.legend(fontsize=8)
fig.suptitle("The backward sweep, as in the paper's Fig. 2", y=1.02)
savefig(fig, "ch03_adjoint_sweep")

A_true = np.array([[-0.1, 2.0], [-2.0, -0.1]])


def spiral_tensor(t, z, A):
    return (z ** 3.0) @ A


def spiral_array(t, z, A):
    return (z ** 3) @ A


t_sp = np.linspace(0.0, 10.0, 21)
z_sp = nf.solve(lambda t, z: (z ** 3) @ A_true, np.array([[2.0, 0.0]]), t_sp, rtol=1e-6,
                atol=1e-8).ys
drift = {}
for restart in (True, False):
    _, _, _, _, _, z_back = backward_sweep(t_sp, z_sp, 2 * z_sp, A_true, rtol=1e-6, atol=1e-8,
                                           restart=restart, ft=spiral_tensor, fa=spiral_array)
    drift[restart] = np.abs(z_back - z_sp[0]).max()
    print(f"restarts {'on ' if restart else 'off'}: |z reconstructed at t0 - stored z(t0)| = "
          f"{drift[restart]:.1e}")
check("ch03.restarts", drift[True] == 0.0 and drift[False] > 1e-8,
      "with restarts z(t0) is the stored state; without, the backward solve has drifted")

# %% [markdown]
# ## 4. Evaluations: why the backward pass costs more here
#
# The paper's Fig. 3c reports that the backward pass of a trained ODE-Net takes
# *about half* the evaluations of the forward pass. Here it takes more:

# %%
print(f"forward {stats.nfe_forward} evaluations, backward {stats.nfe_backward} "
      f"(ratio {stats.nfe_backward / stats.nfe_forward:.1f}); the built sweep: {nfev_back}")

# %% [markdown]
# Three reasons, all about the solver rather than the adjoint itself. (1) The paper
# used an Adams method (LSODE/VODE through SciPy's `odeint`): a multistep method
# needs one evaluation per step whatever its order, and its order and step adapt to the
# smoother backward problem; dopri5 spends 6 evaluations per step. (2) The backward
# error norm runs over the whole augmented state $[z, a, a_\theta, a_t]$, and the
# adjoint components, not $z$, set the step. (3) Each backward interval starts afresh
# (first-step heuristic included). Evaluation counts are not time either: each backward
# evaluation is a VJP, about 2–3x the cost of $f$ (section 6 measures time).

# %%
check("ch03.backward_nfe", stats.nfe_backward > stats.nfe_forward,
      "with dopri5 the backward solve takes more evaluations than the forward solve")

# %% [markdown]
# ## 5. Build: backprop through a fixed-grid solver
#
# The alternative (the paper's RK-Net): run the RK steps of chapter 2 on Tensors, so
# every stage is recorded, and call `backward()`. On a **fixed grid** this is exactly
# the derivative of the numerical solution.

# %%
def rk_step_tensor(f, t, y, h, tab):
    """One RK step on Tensors: every stage is recorded on the tape."""
    # BEGIN SOLUTION ex3_11
    K = [f(t, y)]
    for i in range(1, tab.n_stages):
        acc = None
        for j in range(i):
            if tab.A[i, j] != 0.0:
                acc = K[j] * float(tab.A[i, j]) if acc is None else acc + K[j] * float(tab.A[i, j])
        K.append(f(t + float(tab.c[i]) * h, y if acc is None else y + acc * h))
    acc = None
    for j in range(tab.n_stages):
        if tab.b[j] != 0.0:
            acc = K[j] * float(tab.b[j]) if acc is None else acc + K[j] * float(tab.b[j])
    return y + acc * h
    # END SOLUTION ex3_11


def backprop_solve(f, y0, t_grid, tab):
    # BEGIN SOLUTION ex3_12
    ys, y = [y0], y0
    for t, t_next in zip(t_grid[:-1], t_grid[1:]):
        y = rk_step_tensor(f, float(t), y, float(t_next - t), tab)
        ys.append(y)
    return ys
    # END SOLUTION ex3_12


grid = np.linspace(0.0, 1.7, 35)
Wt.grad = z0t.grad = None
ys_bp = backprop_solve(lambda t, z: f_tensor(t, z, Wt), z0t, grid, nf.RK4)
(ys_bp[-1] ** 2.0).sum().backward()
mine_bp = (z0t.grad.data.copy(), Wt.grad.data.copy())
Wt.grad = z0t.grad = None
zs_bp = nf.odeint(lambda t, z: f_tensor(t, z, Wt), z0t, [0.0, 1.7], params=[Wt],
                  adjoint="backprop", method="rk4", step_size=0.05)
(zs_bp[-1] ** 2.0).sum().backward()
print("built backprop vs library backprop (rk4, h = 0.05): max difference "
      f"{max(np.abs(m - lib).max() for m, lib in zip(mine_bp, (z0t.grad.data, Wt.grad.data))):.1e}")
check("ch03.backprop_fixed_grid_equals_library",
      all(np.allclose(m, lib, rtol=1e-12, atol=1e-14)
          for m, lib in zip(mine_bp, (z0t.grad.data, Wt.grad.data))),
      "built backprop through rk4 equals nf.odeint(adjoint='backprop', step_size=0.05) to 1e-12")

# %% [markdown]
# **What "exact" means.** On the fixed grid, the backprop gradient is the derivative of
# the function $\theta \mapsto$ numerical solution: central differences of that same
# numerical solution agree to their own accuracy. With *adaptive* steps it is not: the
# step sizes depend continuously on $\theta$ (through the error estimate) and are not
# differentiated — backprop differentiates the numerical solution *with the step
# sequence frozen*. The difference is of the order of the tolerance. Measured, as a
# directional derivative along a random $V$:

# %%
V = rng.standard_normal(W0.shape)


def numerical_loss(W, **solver):
    zz = nf.odeint(lambda t, z: f_array(t, z, W), Z0, [0.0, 1.7], **solver)
    return float((zz[-1] ** 2).sum())


def backprop_grad_W(**solver):
    Wt.grad = None
    zz = nf.odeint(lambda t, z: f_tensor(t, z, Wt), nf.Tensor(Z0), [0.0, 1.7], params=[Wt],
                   adjoint="backprop", **solver)
    (zz[-1] ** 2.0).sum().backward()
    return Wt.grad.data.copy()


rows = {}
for label, solver in (("fixed grid, rk4, h = 0.05", dict(method="rk4", step_size=0.05)),
                      ("adaptive dopri5, rtol 1e-4", dict(rtol=1e-4, atol=1e-6))):
    bp = float((backprop_grad_W(**solver) * V).sum())
    fd = (numerical_loss(W0 + 1e-6 * V, **solver) - numerical_loss(W0 - 1e-6 * V, **solver)) / 2e-6
    rows[label] = abs(bp - fd) / abs(fd)
    print(f"{label:28s}: backprop {bp:.10f}, differences of the numerical solution {fd:.10f}, "
          f"relative difference {rows[label]:.1e}")
check("ch03.backprop_exact_on_fixed_grid",
      rows["fixed grid, rk4, h = 0.05"] < 1e-8 and rows["adaptive dopri5, rtol 1e-4"] > 1e-8,
      "on a fixed grid backprop = derivative of the numerical solution (to 1e-8); adaptive: not")

# %% [markdown]
# ## 6. Three ways to the same gradient, and their cost
#
# Backprop through the solver differentiates the numerical solution with its step
# sequence frozen (section 5); the adjoint differentiates the *exact* flow, computed to
# the solver's tolerance; central differences approximate either. They must agree to
# about the tolerance, and the gap must shrink with it. We measure the gap on an MLP
# vector field with a batch, against both at rtol $10^{-12}$.

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
check("ch03.three_ways", abs(np.sum(g_ref * U) - fd) < 1e-6 * abs(fd)
      and gap["continuous"][-1] < 1e-5 and gap["backprop"][-1] < 1e-5
      and gap["continuous"][-1] < gap["continuous"][0],
      "adjoint = finite differences to 1e-6; both gradients converge as rtol shrinks")
print("rtol      | adjoint vs tight | backprop vs tight")
for r, a, b in zip(rtols, gap["continuous"], gap["backprop"]):
    print(f"{r:8.0e}  | {a:16.2e} | {b:16.2e}")

fig, ax = plt.subplots(figsize=(5.5, 4))
for k, m, label in (("continuous", "o-", "continuous adjoint"),
                    ("backprop", "s--", "backprop through the solver")):
    ax.loglog(rtols, gap[k], m, label=label)
ax.loglog(rtols, rtols, "k:", lw=0.8, label="error = rtol (guide)")
ax.set_xlabel("solver rtol (atol = rtol / 100)")
ax.set_ylabel("relative error of dL/dW1 vs rtol 1e-12")
ax.set_title("Both gradients converge as the tolerance shrinks")
ax.legend()
savefig(fig, "ch03_gradient_agreement")

# %% [markdown]
# ## 7. Memory and time: why the adjoint exists, and what it costs
#
# Backprop keeps every stage of every step on the tape; the adjoint keeps the outputs
# and one augmented state. We integrate the same field over longer and longer spans
# (more steps) and record the peak memory of forward plus backward with `tracemalloc`,
# and the time of forward plus backward. The adjoint's time goes into a second solve of
# a bigger system (more evaluations, section 4), each evaluation a VJP; backprop's into
# recording every stage and then a reverse pass through all of them. Which is slower
# depends on the field and the machine: measure, as here.

# %%
Wa = nf.Tensor(rng.standard_normal((64, 2)), requires_grad=True)
Wb = nf.Tensor(rng.standard_normal((2, 64)) * 0.3, requires_grad=True)
y0_mem = nf.Tensor(rng.standard_normal((256, 2)))


def run(adjoint, t1, stats):
    zs = nf.odeint(lambda t, z: nf.tanh(z @ Wa.T) @ Wb.T, y0_mem, [0.0, t1], params=[Wa, Wb],
                   adjoint=adjoint, rtol=1e-6, atol=1e-8, stats=stats)
    (zs[-1] ** 2.0).sum().backward()


def peak(adjoint, t1, repeats=1 if QUICK else 3):
    """Peak MiB (traced), forward evaluations, and the best time of untraced runs."""
    stats = nf.SolveStats()
    tracemalloc.start()
    run(adjoint, t1, stats)
    mib = tracemalloc.get_traced_memory()[1] / 2 ** 20
    tracemalloc.stop()
    seconds = []
    for _ in range(repeats):        # the fastest run: least disturbed by other processes
        t0 = time.perf_counter()
        run(adjoint, t1, nf.SolveStats())
        seconds.append(time.perf_counter() - t0)
    return mib, stats.nfe_forward, min(seconds)


spans = [1.0, 2.0, 4.0] if QUICK else [1.0, 2.0, 4.0, 8.0, 16.0]
mem = {k: [peak(k, s) for s in spans] for k in ("continuous", "backprop")}
for k, rows in mem.items():
    print(f"{k:>10}: " + ", ".join(f"t1={s:g}: {m:.1f} MiB, {1e3 * sec:.0f} ms ({n} evals)"
                                   for s, (m, n, sec) in zip(spans, rows)))
labels = {"continuous": "continuous adjoint", "backprop": "backprop through the solver"}
fig, axes = plt.subplots(1, 2, figsize=(11, 4))
for k, m in (("continuous", "o-"), ("backprop", "s--")):
    axes[0].plot([n for _, n, _ in mem[k]], [mb for mb, _, _ in mem[k]], m, label=labels[k])
    axes[1].plot([n for _, n, _ in mem[k]], [1e3 * sec for _, _, sec in mem[k]], m,
                 label=labels[k])
axes[0].set_ylabel("peak memory, forward + backward (MiB)")
axes[0].set_title("Adjoint memory is flat; backprop grows with the steps")
axes[1].set_ylabel("time, forward + backward (ms)")
axes[1].set_title("Time: both grow with the steps")
for ax in axes:
    ax.set_xlabel("function evaluations of the forward solve")
    ax.legend()
savefig(fig, "ch03_memory")
ratio_t = mem["continuous"][-1][2] / mem["backprop"][-1][2]
print(f"at t1 = {spans[-1]:g}: adjoint time / backprop time = {ratio_t:.2f}")
check("ch03.memory_and_time", mem["continuous"][-1][0] < mem["backprop"][-1][0] / 5
      and mem["backprop"][-1][0] > 1.5 * mem["backprop"][0][0],
      "adjoint peak memory at the longest span is under 1/5 of backprop's, which grows with steps")

# %% [markdown]
# ## 8. Learning a spiral
#
# The demo that ships with torchdiffeq (`examples/ode_demo.py`): data from
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
n_iters, batch_time, batch_size = (100 if QUICK else 2000), 10, 20
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
# where the fit goes wrong: amplitude (radius) and phase (angle) errors along the way
r_true, r_fit = np.hypot(*y_true.T), np.hypot(*y_fit.T)
phase = np.angle(np.exp(1j * (np.arctan2(y_fit[:, 1], y_fit[:, 0])
                              - np.arctan2(y_true[:, 1], y_true[:, 0]))))
for t_q in (2.5, 5.0, 12.5, 25.0):
    k = int(np.argmin(np.abs(t_data - t_q)))
    print(f"t = {t_q:5.1f}: radius error {abs(r_fit[k] - r_true[k]):.3f}, "
          f"phase error {abs(phase[k]):.2f} rad")
check("ch03.spiral_learns", np.mean(losses[-20:]) < 0.5 * np.mean(losses[:20]),
      "the batch loss of the last 20 iterations is under half that of the first 20")

fig, axes = plt.subplots(1, 4, figsize=(19, 4))
axes[0].semilogy(losses, color="0.6", lw=0.6, label="batch L1 loss")
axes[0].semilogy(np.arange(19, len(losses)), np.convolve(losses, np.ones(20) / 20, mode="valid"),
                 "k", label="mean of the last 20 iterations")
axes[0].set_xlabel("iteration")
axes[0].set_ylabel("L1 loss on the batch of windows")
axes[0].set_title("Training loss")
axes[0].legend(fontsize=8)
axes[1].plot(t_data, y_true[:, 0], "g-", label="true x")
axes[1].plot(t_data, y_true[:, 1], "b-", label="true y")
axes[1].plot(t_data, y_fit[:, 0], "g--", label="learned x")
axes[1].plot(t_data, y_fit[:, 1], "b--", label="learned y")
axes[1].set_xlabel("time t")
axes[1].set_ylabel("state")
axes[1].set_title("Trajectories from y0 = (2, 0)")
axes[1].legend(fontsize=8)
axes[2].plot(y_true[:, 0], y_true[:, 1], "g-", label="true")
axes[2].plot(y_fit[:, 0], y_fit[:, 1], "b--", label="learned")
axes[2].set_title("Phase portrait")
axes[2].legend(fontsize=8)
g = np.linspace(-2, 2, 21)
X, Y = np.meshgrid(g, g)
grid = np.stack([X.ravel(), Y.ravel()], axis=1)
with nf.no_grad():
    V = model(0.0, nf.Tensor(grid)).data
T = (grid ** 3) @ A_true
axes[3].quiver(X, Y, T[:, 0], T[:, 1], color="g", alpha=0.5, label="true field")
axes[3].quiver(X, Y, V[:, 0], V[:, 1], color="b", alpha=0.5, label="learned field")
axes[3].set_title("Vector fields")
axes[3].legend(fontsize=8)
for ax in axes[2:]:
    ax.set_xlim(-2.2, 2.2)
    ax.set_ylim(-2.2, 2.2)
    ax.set_xlabel("x")
    ax.set_ylabel("y")
savefig(fig, "ch03_spiral")

# %% [markdown]
# **Why the learned trajectory drifts in phase after $t pprox 5$.** Training only
# ever sees windows of 10 points ($\Delta t = 0.225$), so it fits the *local* field
# well; integrating from $y_0$ over the whole of $[0, 25]$ compounds a small error in
# the speed of rotation into a phase error that grows with $t$, while the radius (the
# slow decay of the spiral) stays close — see the printed radius and phase errors. The
# inner turns, where $|y|$ is small and $y^{\odot 3}$ tiny, are slow and poorly sampled
# by short windows. Longer windows (or a curriculum that lengthens them) fix the phase
# at a higher cost per iteration: try it in exercise ex3_6.

# %% [markdown]
# ## 9. The same adjoint, compiled
#
# Each backward evaluation above runs a small autodiff graph in Python. For the common
# case of an MLP vector field, `nf.mlp_field` gives the pair $(f, \text{VJP of } f)$ as
# Numba functions over one flat parameter vector $\theta$, with the VJPs derived by hand
# layer by layer: $g \leftarrow g \odot \tanh'$, $\partial W = g^\top x$,
# $\partial b = \sum_\text{rows} g$, $g \leftarrow g W$. Then the forward solve *and* the
# adjoint solve run inside the compiled loop of chapter 2. Same algorithm, same numbers:

# %%
# The first call compiles the forward and adjoint loops (about a minute without a cache),
# so a quick run skips this section; tests/test_adjoint_numba.py checks the same thing.
field = nf.mlp_field(2, (64,), "tanh")                     # theta: W1 (64,2), b1, W2 (2,64), b2
theta0 = field.init_theta(np.random.default_rng(3), scale=2.0)
Z0 = np.random.default_rng(4).standard_normal((512, 2))     # a batch of 512 states


def forward_and_gradient(func_for):
    theta = nf.Tensor(theta0, requires_grad=True)
    zs = nf.odeint(func_for(theta), nf.Tensor(Z0), [0.0, 1.0], params=theta, rtol=1e-6, atol=1e-8)
    (zs[-1] ** 2.0).sum().backward()
    return theta.grad.data


timings = {}
engines = (("autodiff (NumPy)", field.reference), ("compiled (Numba)", lambda th: field))
for name, func_for in (() if QUICK else engines):
    forward_and_gradient(func_for)                          # warm-up (Numba: load or compile)
    t0 = time.perf_counter()
    for _ in range(3):
        g = forward_and_gradient(func_for)
    timings[name] = ((time.perf_counter() - t0) / 3, g)
if QUICK:
    print("section 9 skipped in quick mode (it compiles the adjoint loops)")
else:
    (t_ref, g_ref), (t_nb, g_nb) = timings.values()
    print(f"forward + gradient: autodiff {1e3 * t_ref:.1f} ms, compiled {1e3 * t_nb:.1f} ms "
          f"({t_ref / t_nb:.1f}x); gradients agree to "
          f"{np.abs(g_nb - g_ref).max() / np.abs(g_ref).max():.1e}")
    check("ch03.compiled_adjoint", np.allclose(g_nb, g_ref, rtol=1e-9,
                                               atol=1e-9 * np.abs(g_ref).max()),
          "compiled adjoint gradient equals the autodiff one to rtol 1e-9")

# %% [markdown]
# ## Summary
#
# * The adjoint $a(t) = \partial L/\partial z(t)$ obeys $\dot a = -a^\top\partial f/\partial z$,
#   solved backwards with $z$ recomputed alongside; parameter and time gradients are
#   integrals of VJPs along the way (Algorithms 1–2). Observations add jumps; the sweep
#   restarts $z$ from the stored states. You built it, and it equals `nf.odeint`'s to
#   1e-9; its time gradients match finite differences.
# * Backprop through the solver is the exact derivative of the numerical solution on a
#   fixed grid; with adaptive steps it differentiates the frozen step sequence, off by
#   about the tolerance. The adjoint is exact for the flow up to the tolerance: the two
#   agree to O(rtol), and both match finite differences.
# * The adjoint's memory does not grow with the number of steps; backprop's does. The
#   adjoint pays in time: a second solve of a bigger system, each evaluation a VJP; with
#   dopri5 the backward solve takes more evaluations than the forward one (the paper's
#   Adams method took about half).
# * With it, a 50-unit MLP learns the spiral's dynamics from short windows.
# * For MLP vector fields, hand-derived VJPs let both solves run compiled (`nf.mlp_field`).
#
# ## Exercises
#
# Code exercises sit between `# BEGIN SOLUTION exN_M` and `# END SOLUTION exN_M` in the
# built code above; in a student copy (`python -m nodeform classroom make DIR`) each is a
# `raise NotImplementedError(...)` with a hint. Check one with
# `python -m nodeform classroom check ex3_10`, all with `python -m nodeform classroom grade`.
# Suggested order: ex3_7, ex3_8, ex3_9, ex3_10, ex3_12, ex3_11, then the open ones. The
# open ones need no edit inside the library: restarts and the backward error norm are
# options of `nf.odeint` (`adjoint_restart=False`, `adjoint_options=dict(norm="seminorm")`).
#
# | id | level | what | where |
# |---|---|---|---|
# | ex3_1 | ★★ | *open:* Algorithm 1 alone (below) | a new cell |
# | ex3_2 | ★★ | *open:* restarts off: how the gradient error grows (below) | `nf.odeint(..., adjoint_restart=False)` |
# | ex3_3 | ★★★ | *open:* Euler in both solves: adjoint against backprop (below) | `nf.odeint(..., method="euler")` |
# | ex3_4 | ★★ | *open:* the seminorm (below) | `adjoint_options=dict(norm="seminorm")` |
# | ex3_5 | ★★ | *open:* the spiral trained with backprop: time and memory (below) | section 8 |
# | ex3_6 | ★★★ | *open:* the spiral with longer windows (below) | section 8 |
# | ex3_7 | ★ | `start_values`: the adjoint state at the last observation | `start_values`, section 2 |
# | ex3_8 | ★ | `observation_jump`: the jump at an observation | `observation_jump`, section 2 |
# | ex3_9 | ★★ | `augmented_dynamics`: $d/dt\,[z, a, a_W, a_t]$ from one VJP | `augmented_dynamics`, section 2 |
# | ex3_10 | ★★★ | `backward_sweep`: Algorithm 2 with jumps and restarts | `backward_sweep`, section 2 |
# | ex3_11 | ★★ | `rk_step_tensor`: an RK step recorded on the tape | `rk_step_tensor`, section 5 |
# | ex3_12 | ★ | `backprop_solve`: a fixed-grid solve on Tensors | `backprop_solve`, section 5 |
#
# **ex3_1.** Write Algorithm 1 alone (one interval, no time gradients) from
# `augmented_dynamics`: one backward solve from $t_1$ to $t_0$, and check it against
# `backward_sweep` with two observation times.
#
# **ex3_2.** Take $\dot z = Mz$ with $M = \begin{bmatrix}-1 & 2\\ -2 & -1\end{bmatrix}$ (it
# contracts forwards, so backwards it expands), $z_0 = (2, 0)$, $t\in[0, 10]$,
# $L = \sum_{i\ge1} \lvert z(t_i)\rvert^2$, and the gradient with respect to $M$. Compute it
# with `nf.odeint(..., params=[M], adjoint_restart=False)` and with the default restarts,
# at rtol $10^{-6}$, atol $10^{-8}$, for 2, 6, 11, 21 and 41 equally spaced observations,
# against a reference with restarts at rtol $10^{-10}$. Tabulate the relative errors and
# explain the difference (and why it vanishes with 2 observations).
#
# **ex3_3.** Use `method="euler", step_size=0.05` for the forward and the backward solve
# (`adjoint_method="euler", adjoint_options=dict(step_size=0.05)`), on the field of
# section 2. Why do the continuous adjoint and backprop now disagree by $O(h)$, and which
# one is the exact gradient of the loss the optimizer actually sees?
#
# **ex3_4.** The backward error norm runs over $[z, a, a_\theta, a_t]$; the seminorm
# (Kidger, Chen, Lyons 2021) leaves out $a_\theta$ and $a_t$, which feed nothing back.
# For the MLP field of section 6 at rtol $10^{-6}$, compare `stats.nfe_backward` and the
# gradient error (against rtol $10^{-12}$) with `adjoint_options=dict(norm="seminorm")`
# and without.
#
# **ex3_5.** Train the spiral with `adjoint="backprop"` and compare the time per iteration
# and the peak memory (`tracemalloc`, as in section 7) with the adjoint.
#
# **ex3_6.** Train the spiral with windows of 40 points instead of 10 (same number of
# iterations) and compare the printed phase error at $t = 25$ and the time per iteration.
