# %% [markdown]
# # Chapter 2 — ODE solvers: from Euler to Dormand–Prince, and why Numba
#
# **Goal.** Build the integrator every Neural ODE runs on: explicit Runge–Kutta
# methods written as *data* (a Butcher tableau), one engine that steps any of them,
# an error estimate that chooses the step size, dense output so that outputs cost
# nothing, and a compiled twin of the whole loop. Then measure all of it: the order
# of every method, the step-size controller at work, the cost per accuracy against
# SciPy, and the speed of the compiled loop.
#
# **Why the paper needs it.** An ODE-Net's forward pass *is* `odeint(f, z0, [0, 1])`
# (Chen et al. 2018, Sec. 3), and the adjoint of Sec. 2 is a second solve backwards in
# time. The number of function evaluations (NFE) the solver chooses is the model's
# depth; Sec. 3 of the paper is about exactly that.
#
# Prerequisites: chapter 1 is not needed here (the solver has no autodiff inside).
# Modules used: `nodeform.odeint`, `nodeform.solve`, `nodeform.ode.tableaus`,
# `nodeform.ode.order_conditions`.

# %%
import sys
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from numba import njit  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.linalg import expm  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform.ode import METHODS  # noqa: E402
from nodeform.ode.order_conditions import order_residuals  # noqa: E402
from nodeform.plotting import is_quick, savefig  # noqa: E402

QUICK = is_quick()
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. A method is its tableau
#
# Euler's method follows the tangent: $y_{n+1} = y_n + h f(t_n, y_n)$. Its error per
# step is $O(h^2)$ (the first Taylor term it ignores), so over $T/h$ steps the
# *global* error is $O(h)$: order 1. Runge–Kutta methods sample $f$ at several
# *stages* inside the step and combine them so that more Taylor terms cancel:
#
# $$K_i = f\Big(t + c_i h,\; y + h\sum_{j<i} A_{ij} K_j\Big), \qquad
#   y_{n+1} = y + h \sum_i b_i K_i .$$
#
# The numbers $(c, A, b)$ are the whole method. nodeform stores them in a
# `ButcherTableau` that checks itself when built: rows of $A$ sum to $c$,
# $\sum b = 1$, and for embedded pairs $\sum e = 0$. A mistyped digit fails at import
# with a message naming the broken identity.

# %%
for name, tab in METHODS.items():
    print(f"{name:9s} {tab!r}  evaluations per step: {tab.evals_per_step}")

try:
    nf.ButcherTableau("typo", c=[0, 0.5], A=[[0, 0], [0.4, 0]], b=[0, 1], order=2)
except ValueError as exc:
    print("\nA broken tableau says what is wrong:\n ", exc)

# %% [markdown]
# Order $p$ means: every *order condition* up to $p$ holds (one per rooted tree:
# 1, 1, 2, 4, 9 trees of orders 1..5). Here is the residual of each for the
# Dormand–Prince weights $b$ (order 5) and its embedded $\hat b$ (order 4):

# %%
dp = METHODS["dopri5"]
for label, w, p in (("b (order 5)", dp.b, 5), ("b_hat (order 4)", dp.b_hat, 5)):
    worst = {}
    for order, cond, r in order_residuals(dp.A, dp.c, w, p):
        worst[order] = max(worst.get(order, 0.0), abs(r))
    print(label, " ".join(f"order {k}: {v:.1e}" for k, v in worst.items()))
# expected: b satisfies all conditions to ~1e-16; b_hat breaks at order 5

# %% [markdown]
# ## 2. Measured convergence orders
#
# On $y' = My$ the exact solution is $e^{Mt} y_0$. Halving $h$ should divide the
# global error by $2^p$, so the slope of $\log(\text{error})$ against $\log h$ *is*
# the order. The embedded pairs run in fixed-step mode here (`step_size=`).

# %%
M = np.array([[-0.1, -1.0], [1.0, -0.1]])
y0 = np.array([1.0, 0.5])
T = 2.0
exact = expm(M * T) @ y0


def linear(t, y):
    return M @ y


steps = {1: [32, 64, 128, 256], 2: [16, 32, 64, 128], 3: [8, 16, 32, 64],
         4: [8, 16, 32, 64], 5: [8, 16, 32, 64]}
fig, ax = plt.subplots(figsize=(6, 4.2))
print(f"{'method':9s} {'expected':>8s} {'measured':>8s}")
for name, tab in METHODS.items():
    hs = np.array([T / n for n in steps[tab.order]])
    errs = [np.abs(nf.odeint(linear, y0, [0, T], method=name, step_size=h)[-1] - exact).max()
            for h in hs]
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    print(f"{name:9s} {tab.order:8d} {slope:8.2f}")
    ax.loglog(hs, errs, "o-", label=f"{name} (slope {slope:.2f})")
ax.set_xlabel("step size h")
ax.set_ylabel("global error at t = 2")
ax.set_title("Fixed-step convergence on y' = My")
ax.legend(fontsize=8)
savefig(fig, "ch02_convergence")

# %% [markdown]
# ## 3. Error estimation and step-size control
#
# An embedded pair computes a second solution $\hat y$ of lower order $q$ from the
# *same* stages, so $\text{err} = h\sum_i (b_i - \hat b_i) K_i \approx C h^{q+1}$
# costs nothing extra. Scaled by $\text{atol} + \text{rtol}\,|y|$ and reduced to an RMS
# number $r$, the step is accepted when $r \le 1$ and the next step is
# $h \cdot 0.9\, r^{-1/(q+1)}$ (the I controller), clamped to $[0.2h, 10h]$. The PI
# controller multiplies by $r_{\text{prev}}^{\,0.2/(q+1)}$ and uses $0.85/(q+1)$ as the
# exponent (Hairer's DOPRI5 values): it remembers the last error and damps the
# accept/reject zig-zag. The
# first step comes from Hairer's heuristic (one probe evaluation).
#
# Van der Pol ($\mu = 1$) alternates slow and fast phases; watch $h$ follow them.

# %%
@njit(cache=True)
def vdp(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] ** 2) * y[1] - y[0]])


def vdp_py(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] ** 2) * y[1] - y[0]])


vdp_y0 = np.array([2.0, 0.0])
fig, axes = plt.subplots(2, 1, figsize=(7, 5), sharex=True)
for controller, color in (("i", "C0"), ("pi", "C1")):
    sol = nf.solve(vdp_py, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6, atol=1e-9,
                   controller=controller, trace=True)
    tr = sol.trace
    print(f"controller {controller:2s}: {sol.stats}")
    acc = tr["accepted"]
    axes[0].semilogy(tr["t"][acc], np.abs(tr["h"][acc]), ".-", color=color, ms=3,
                     label=f"{controller}: accepted ({acc.sum()})")
    axes[0].semilogy(tr["t"][~acc], np.abs(tr["h"][~acc]), "x", color=color, ms=7,
                     label=f"{controller}: rejected ({(~acc).sum()})")
    axes[1].plot(tr["t"], tr["error_ratio"], ".", color=color, ms=3)
dense = nf.odeint(vdp_py, vdp_y0, np.linspace(0, 20, 400), args=(1.0,), rtol=1e-6, atol=1e-9)
axes[0].set_ylabel("|h|")
axes[0].legend(fontsize=7, ncol=2)
axes[1].axhline(1.0, color="k", lw=0.8)
axes[1].set_yscale("log")
axes[1].set_ylabel("error ratio r")
axes[1].set_xlabel("t")
ax2 = axes[1].twinx()
ax2.plot(np.linspace(0, 20, 400), dense[:, 0], color="0.6", lw=0.8)
ax2.set_ylabel("x(t)", color="0.5")
fig.suptitle("Van der Pol, dopri5, rtol 1e-6: step sizes and error ratios")
savefig(fig, "ch02_step_control")

# %% [markdown]
# ## 4. Dense output: outputs for free
#
# Between $t_n$ and $t_n + h$ the stages already determine a polynomial
# $y(t_n + \theta h) = y_n + h\sum_i w_i(\theta) K_i$ (Shampine's quartic for
# Dormand–Prince, Tsitouras' own for tsit5, cubic Hermite for bosh3). So asking for
# 1,000 output times does not shorten a single step.

# %%
for n_out in (2, 11, 1000):
    sol = nf.solve(vdp_py, vdp_y0, np.linspace(0, 20, n_out), args=(1.0,), rtol=1e-6,
                   atol=1e-9)
    print(f"{n_out:5d} output times -> nfev = {sol.stats['nfev']}")
# expected: the same nfev on every line

# %% [markdown]
# ## 5. Work–precision against SciPy
#
# Cost is function evaluations; accuracy is the error at the output times against
# SciPy's DOP853 at rtol 1e-13. dopri5 and SciPy's RK45 are the same pair with the same
# I controller constants, so their curves should nearly coincide; tsit5 usually buys a
# little more accuracy per evaluation.

# %%
ts = np.linspace(0, 20, 41)
ref = solve_ivp(vdp_py, (0, 20), vdp_y0, method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts,
                args=(1.0,)).y.T
tols = [1e-4, 1e-6, 1e-8] if QUICK else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
fig, ax = plt.subplots(figsize=(6, 4.2))
for name in ("bosh3", "dopri5", "tsit5"):
    pts = []
    for tol in tols:
        # bosh3 (order 3) needs tens of thousands of steps at 1e-10: lift the 10,000 guard
        sol = nf.solve(vdp_py, vdp_y0, ts, method=name, args=(1.0,), rtol=tol, atol=tol * 1e-3,
                       max_steps=200_000)
        pts.append((sol.stats["nfev"], np.abs(sol.ys - ref).max()))
    ax.loglog(*zip(*pts), "o-", label=f"nodeform {name}")
for sp_name, style in (("RK23", "s--"), ("RK45", "s--")):
    pts = []
    for tol in tols:
        s = solve_ivp(vdp_py, (0, 20), vdp_y0, method=sp_name, rtol=tol, atol=tol * 1e-3,
                      t_eval=ts, args=(1.0,))
        pts.append((s.nfev, np.abs(s.y.T - ref).max()))
    ax.loglog(*zip(*pts), style, label=f"SciPy {sp_name}")
for tol in (1e-6,):
    a = nf.solve(vdp_py, vdp_y0, [0, 20], args=(1.0,), rtol=tol, atol=tol * 1e-3, controller="i")
    b = solve_ivp(vdp_py, (0, 20), vdp_y0, rtol=tol, atol=tol * 1e-3, args=(1.0,))
    print(f"rtol {tol:g}: nodeform dopri5 (I controller) nfev {a.stats['nfev']}, "
          f"SciPy RK45 nfev {b.nfev} (expected: within a few percent)")
ax.set_xlabel("function evaluations")
ax.set_ylabel("max error at 41 output times")
ax.set_title("Work-precision, Van der Pol mu = 1, t in [0, 20]")
ax.legend(fontsize=8)
savefig(fig, "ch02_work_precision")

# %% [markdown]
# ## 6. Why Numba: the speed table
#
# The reference engine is readable Python over arrays: each step costs tens of
# microseconds of interpreter work, like SciPy's. When the vector field is itself an
# `@numba.njit` function, `nf.solve` runs the *same* loop compiled (its Numba twin,
# `nodeform/ode/_numba_rk.py`): no Python per step at all. Both give the same numbers
# to round-off; the test suite checks it. The first call compiles (reported apart);
# `python bench/bench_solvers.py` measures the full table against SciPy.

# %%
def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


t0 = time.perf_counter()
nf.solve(vdp, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6, atol=1e-9)
compile_s = time.perf_counter() - t0
reps = 5 if QUICK else 21
t_numba = best_time(lambda: nf.solve(vdp, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6,
                                     atol=1e-9), reps * 10)
t_ref = best_time(lambda: nf.solve(vdp_py, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6,
                                   atol=1e-9), reps)
t_scipy = best_time(lambda: solve_ivp(vdp_py, (0, 20), vdp_y0, args=(1.0,), rtol=1e-6,
                                      atol=1e-9), reps)
print(f"first call (compile + solve): {compile_s:.2f} s")
print(f"{'engine':28s} {'ms / solve':>10s} {'vs SciPy RK45':>14s}")
for label, t in (("SciPy solve_ivp RK45", t_scipy), ("nodeform reference (Python)", t_ref),
                 ("nodeform Numba twin", t_numba)):
    print(f"{label:28s} {t * 1e3:10.3f} {t_scipy / t:13.1f}x")
print("expected: reference ~ SciPy (both pay Python per step); Numba 50-200x faster")

fig, ax = plt.subplots(figsize=(5.5, 3))
labels = ["SciPy RK45", "reference", "Numba"]
ax.barh(labels, [t_scipy * 1e3, t_ref * 1e3, t_numba * 1e3], color=["0.6", "C0", "C1"])
ax.set_xscale("log")
ax.set_xlabel("ms per solve (log scale)")
ax.set_title("Van der Pol, dopri5, rtol 1e-6, atol 1e-9")
savefig(fig, "ch02_speed")

# %% [markdown]
# ## 7. When it fails, it says why
#
# $y' = y^2$ from $y(0)=1$ blows up at $t = 1$. An adaptive solver notices: the step
# size shrinks until float64 can no longer advance $t$.

# %%
try:
    nf.odeint(lambda t, y: y * y, np.array([1.0]), [0.0, 2.0])
except nf.SolverError as exc:
    print(type(exc).__name__, ":", exc)
sol = nf.solve(lambda t, y: y * y, np.array([1.0]), [0.0, 0.5, 2.0], throw=False)
print("throw=False ->", sol.status, sol.ys.ravel())

# %% [markdown]
# ## Summary
#
# - A Runge–Kutta method is its tableau $(c, A, b[, \hat b])$; consistency and order are
#   algebraic identities that the code checks, and measured slopes confirm them
#   (Euler 1, midpoint 2, bosh3 3, RK4 4, dopri5 and tsit5 5).
# - An embedded pair estimates the local error for free; an I or PI controller turns
#   it into the next step size; rejected steps are the price of a bold guess.
# - Dense output makes outputs free: NFE depends on the dynamics and the tolerance,
#   not on how many times you ask for.
# - dopri5 reproduces SciPy's RK45 evaluation counts; the compiled twin runs the same
#   algorithm two orders of magnitude faster than any Python-level loop.
#
# ## Exercises
#
# - **ex2_1** Write the tableau of Heun's third-order method and of Kutta's 3/8 rule as
#   `ButcherTableau`s; confirm their orders with `order_residuals` and by a measured
#   slope.
# - **ex2_2** The controller exponent: show that the I controller's exponent $1/(q+1)$ makes
#   the next error ratio about $0.9^{q+1}$ if the error model $C h^{q+1}$ is exact. Run
#   Van der Pol with SAFETY 0.5 and 0.99 (edit `nodeform.ode.controller.SAFETY`) and
#   explain the NFE and the rejection count.
# - **ex2_3** Replace the dense output of dopri5 by linear interpolation between steps.
#   How does the error at 1,000 output times change at rtol 1e-6? Why must any
#   interpolant be at least order $q$ for outputs to be as accurate as the steps?
# - **ex2_4** Solve Van der Pol with $\mu = 1000$ at rtol 1e-6 and read the trace: how
#   many steps, how many rejected, and what limits $h$? (Hint: stability, not accuracy.)

# %%
if __name__ == "__main__" and "--quick" not in sys.argv:
    print("done: figures ch02_convergence, ch02_step_control, ch02_work_precision, ch02_speed")
