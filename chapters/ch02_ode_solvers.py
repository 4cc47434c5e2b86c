# %% [markdown]
# # Chapter 2 — ODE solvers: from Euler to Dormand–Prince, and why Numba
#
# **Why the paper needs it.** An ODE-Net's forward pass *is* `odeint(f, z0, [0, 1])`
# (Chen et al. 2018, Sec. 3), and the adjoint of Sec. 2 is a second solve backwards in
# time. The number of function evaluations (NFE) the solver chooses is the model's
# depth; Sec. 3 of the paper is about exactly that.
#
# **Learning goals.** After this chapter you can
# 1. write Euler's method and a general explicit Runge–Kutta step from a Butcher
#    tableau, and check a tableau's order conditions;
# 2. measure a method's order, and say why a linear test problem is not enough;
# 3. write the adaptive loop: error norm, first step, I and PI controllers, dense
#    output — and get *exactly* the evaluation count of `nf.solve`;
# 4. say what a tolerance controls (the local error, not the global one), and what
#    stiffness does to an explicit solver;
# 5. say why the compiled loop is fast, with a measured number.
#
# **Prerequisites.** Chapter 1 is not needed (the solver has no autodiff inside).
# Taylor series; NumPy. Refresher, *local and global error*: the local error of a step
# is what one step from the **exact** $y(t_n)$ gets wrong,
# $y(t_n + h) - \Phi_h(y(t_n))$; a method of order $p$ has local error $O(h^{p+1})$.
# The global error $y(T) - y_N$ is what is left after $T/h$ steps: each local error is
# carried along (and amplified or damped) by the flow, so it is $O(h^p)$ — one order
# less — and depends on the problem's stability, not only on the method.
#
# **Time to work through:** about 2.5 hours.
#
# **Where it lives.** `nodeform/ode/`: `tableaus.py` (the methods as data),
# `order_conditions.py`, `rk.py` (one step, dense output), `controller.py` (norm,
# first step, I/PI), `loops.py` (the reference loops), `_numba_rk.py` (the compiled twin).

# %%
import time

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from fractions import Fraction  # noqa: E402
from numba import njit  # noqa: E402
from scipy.integrate import solve_ivp  # noqa: E402
from scipy.linalg import expm  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform.ode import METHODS  # noqa: E402
from nodeform.ode.order_conditions import order_residuals  # noqa: E402
from nodeform.plotting import is_quick, savefig  # noqa: E402
from nodeform.testing import check  # noqa: E402

QUICK = is_quick()   # in a notebook: is_quick(True) for the quick run
print(f"quick mode: {QUICK}")

# %% [markdown]
# ## 1. Euler's method, built
#
# Euler follows the tangent: $y_{n+1} = y_n + h f(t_n, y_n)$. Its local error is
# $\tfrac{h^2}{2}y''$ (the first Taylor term it ignores), so over $T/h$ steps the
# global error is $O(h)$: order 1. Our test problems: a damped rotation $y' = My$
# (exact solution $e^{Mt}y_0$) and Van der Pol ($\mu = 1$), which is non-linear.

# %%
M = np.array([[-0.1, -1.0], [1.0, -0.1]])
y0_lin = np.array([1.0, 0.5])
T = 2.0
exact_lin = expm(M * T) @ y0_lin


def linear(t, y):
    return M @ y


def vdp_py(t, y, mu=1.0):
    return np.array([y[1], mu * (1.0 - y[0] ** 2) * y[1] - y[0]])


def euler(f, t0, y0, t1, n):
    """n Euler steps from (t0, y0) to t1."""
    # BEGIN SOLUTION ex2_5
    h, y = (t1 - t0) / n, y0
    for k in range(n):
        y = y + h * f(t0 + k * h, y)
    return y
    # END SOLUTION ex2_5


errs = [np.abs(euler(linear, 0.0, y0_lin, T, n) - exact_lin).max() for n in (100, 200, 400)]
print("Euler errors at n = 100, 200, 400:", ", ".join(f"{e:.2e}" for e in errs),
      f"-> each halving of h divides the error by {errs[0] / errs[1]:.2f}, {errs[1] / errs[2]:.2f}")
lib = nf.odeint(linear, y0_lin, [0.0, T], method="euler", step_size=T / 100)[-1]
check("ch02.euler", np.allclose(euler(linear, 0.0, y0_lin, T, 100), lib, rtol=1e-14, atol=0)
      and 1.9 < errs[0] / errs[1] < 2.1,
      "built Euler equals nf.odeint(method='euler') to 1e-14; error halves with h (order 1)")

# %% [markdown]
# ## 2. A method is its tableau
#
# Runge–Kutta methods sample $f$ at several *stages* inside the step and combine them
# so that more Taylor terms cancel:
#
# $$K_i = f\Big(t + c_i h,\; y + h\sum_{j<i} A_{ij} K_j\Big), \qquad
#   y_{n+1} = y + h \sum_i b_i K_i .$$
#
# The numbers $(c, A, b)$ are the whole method. Here is Dormand–Prince 5(4), the
# method of the paper's experiments (as in torchdiffeq) and SciPy's `RK45`, with a second
# row of weights $\hat b$ of order 4 for the error estimate:

# %%
def print_tableau(tab):
    frac = lambda x: str(Fraction(x).limit_denominator(10 ** 7))  # noqa: E731
    w = 14
    for i in range(tab.n_stages):
        print(f"{frac(tab.c[i]):>{w}} |" + "".join(f"{frac(a):>{w}}" for a in tab.A[i, :i]))
    print(" " * w + "-+" + "-" * (w * (tab.n_stages - 1)))
    for label, wts in (("b", tab.b), ("b_hat", tab.b_hat)):
        print(f"{label:>{w}} |" + "".join(f"{frac(x):>{w}}" for x in wts))


dp = METHODS["dopri5"]
print_tableau(dp)

# %% [markdown]
# A method has order $p$ when its Taylor expansion matches the exact solution's up to
# $h^p$. Each rooted tree with at most $p$ nodes gives one *order condition* on
# $(c, A, b)$ (Butcher): 1, 1, 2, 4, 9 of them at orders 1..5, e.g. $\sum b_i = 1$,
# $b\cdot c = 1/2$, $b\cdot c^2 = 1/3$, $b\cdot Ac = 1/6$. Residuals for the Dormand–Prince
# weights:

# %%
worst = {}
for label, w, p in (("b", dp.b, 5), ("b_hat", dp.b_hat, 5)):
    for order, cond, r in order_residuals(dp.A, dp.c, w, p):
        worst[label, order] = max(worst.get((label, order), 0.0), abs(r))
    print(f"{label:6s}", " ".join(f"order {k}: {worst[label, k]:.1e}" for k in range(1, 6)))
check("ch02.dopri5_order_conditions",
      max(worst["b", k] for k in range(1, 6)) < 1e-15
      and max(worst["b_hat", k] for k in range(1, 5)) < 1e-15 and worst["b_hat", 5] > 1e-4,
      "b meets all 17 conditions to order 5, b_hat all 8 to order 4 (to 1e-15) and fails at 5")

# %% [markdown]
# **Why the conditions, and not just a convergence plot.** On $y' = My$ every stage is
# a matrix polynomial in $hM$, so only the conditions $b\,A^{k-1}\mathbf 1 = 1/k!$ are
# tested (one per order: the "tall" trees). A tableau can meet those four and fail
# $b\cdot c^2 = 1/3$: it then looks 4th order on the linear problem and is 2nd order
# on anything non-linear. `ButcherTableau(..., order=p)` checks every condition up to
# $p$ and refuses such a claim:

# %%
LIN4 = dict(c=[0, 1 / 4, 1 / 2, 1], A=[[0, 0, 0, 0], [1 / 4, 0, 0, 0], [0, 1 / 2, 0, 0],
                                       [0, 0, 1, 0]], b=[0, 2 / 3, 0, 1 / 3])
print("--- EXPECTED FAILURE, shown on purpose: claiming order 4 for LIN4 ---")
try:
    nf.ButcherTableau("lin4", order=4, **LIN4)
    refused = False
except ValueError as exc:
    print(exc)
    refused = "b.c^2 = 1/3" in str(exc)
print("--- end of the expected failure ---")
lin4 = nf.ButcherTableau("lin4", order=2, **LIN4)       # the order it really has


def rk_step(f, t, y, f0, h, tab):
    """One explicit RK step: stages K (s, n), y_new, and the error estimate (or None)."""
    # BEGIN SOLUTION ex2_6
    K = np.empty((tab.n_stages,) + y.shape)
    K[0] = f0
    for i in range(1, tab.n_stages):
        K[i] = f(t + tab.c[i] * h, y + h * (tab.A[i, :i] @ K[:i]))
    y_new = y + h * (tab.b @ K)
    err = None if tab.e is None else h * (tab.e @ K)
    return y_new, K, err
    # END SOLUTION ex2_6


def fixed_solve(f, y0, t1, n, tab):
    """n equal steps of `tab` from (0, y0) to t1."""
    h, y = t1 / n, y0
    for k in range(n):
        y = rk_step(f, k * h, y, f(k * h, y), h, tab)[0]
    return y


vdp_ref = nf.odeint(vdp_py, np.array([2.0, 0.0]), [0.0, 1.0], rtol=1e-13, atol=1e-13)[-1]
problems = {"y' = My": (linear, y0_lin, T, exact_lin),
            "Van der Pol": (vdp_py, np.array([2.0, 0.0]), 1.0, vdp_ref)}
steps = {1: [64, 128, 256, 512], 2: [32, 64, 128, 256], 3: [16, 32, 64, 128],
         4: [16, 32, 64, 128], 5: [8, 16, 32, 64]}
fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), sharey=True)
slopes = {}
LINEAR, VDP = problems
print(f"{'method':9s} {'order':>7s} {LINEAR:>8s} {VDP:>12s}")
for name, tab in list(METHODS.items()) + [("lin4", lin4)]:
    ns = steps[4] if name == "lin4" else steps[tab.order]
    for ax, (pname, (f, y0, t1, ref)) in zip(axes, problems.items()):
        hs = np.array([t1 / n for n in ns])
        errs = [np.abs(fixed_solve(f, y0, t1, n, tab) - ref).max() for n in ns]
        slopes[name, pname] = np.polyfit(np.log(hs), np.log(errs), 1)[0]
        ax.loglog(hs, errs, "o-" if name != "lin4" else "k^--",
                  label=f"{name} (slope {slopes[name, pname]:.2f})")
    print(f"{name:9s} {tab.order:7d} {slopes[name, LINEAR]:8.2f} {slopes[name, VDP]:12.2f}")
for ax, (pname, (_, _, t1, _)) in zip(axes, problems.items()):
    ax.set_xlabel("step size h")
    ax.set_ylabel(f"global error at t = {t1:g} (max over components)")
    ax.set_title(f"Fixed-step convergence on {pname}, t in [0, {t1:g}]")
    ax.legend(fontsize=8)
savefig(fig, "ch02_convergence")
y_lib = nf.odeint(vdp_py, np.array([2.0, 0.0]), [0.0, T], method="rk4", step_size=T / 16)[-1]
low = [n for n in METHODS if METHODS[n].order < 5]
check("ch02.rk_step_and_orders",
      refused and np.allclose(fixed_solve(vdp_py, np.array([2.0, 0.0]), T, 16, METHODS["rk4"]),
                              y_lib, rtol=1e-13, atol=1e-15)
      and all(abs(slopes[n, LINEAR] - METHODS[n].order) < 0.3 for n in METHODS)
      and all(abs(slopes[n, VDP] - METHODS[n].order) < 0.3 for n in low)
      and all(slopes[n, VDP] > 4.7 for n in ("dopri5", "tsit5"))
      and abs(slopes["lin4", LINEAR] - 4) < 0.3 and abs(slopes["lin4", VDP] - 2) < 0.3,
      "built RK step equals nf.odeint(rk4) to 1e-13; slopes within 0.3 of the order (the "
      "5th-order pairs at least 4.7 on Van der Pol); LIN4 refused at order 4, slope 4 on "
      "y' = My and 2 on Van der Pol")

# %% [markdown]
# Read the table by rows. Every method shows its order on $y' = My$; on Van der Pol the
# methods up to order 4 do too, the 5th-order pairs show *steeper* slopes (about 6):
# at these step sizes their small $h^5$ error coefficient is still hidden under the
# $h^6$ term (pre-asymptotic; halve $h$ twice more and the slope falls towards 5, until
# round-off takes over). LIN4 is the warning: slope 4 on the linear problem, 2 on the
# non-linear one.

# %% [markdown]
# ## 3. The adaptive loop, built
#
# An embedded pair computes a second solution $\hat y$ of order $q = p - 1$ from the
# *same* stages, so $\text{err} = h\sum_i (b_i - \hat b_i) K_i$ costs nothing extra: it
# estimates the **local** error of the lower-order solution, $\approx C h^{q+1}$.
# Four small pieces turn it into a step-size choice:
#
# * the **error norm**: scale each component by $\text{atol} + \text{rtol}\max(|y|,
#   |y_{new}|)$ and take the RMS, $r$; the step is accepted when $r \le 1$;
# * the **I controller**: if $\text{err} \approx C h^{q+1}$, the step that would give
#   $r = 1$ is $h\,r^{-1/(q+1)}$; aim for 90% of it (safety factor 0.9) and never
#   shrink by more than 5x or grow by more than 10x per step, nor grow right after a
#   rejection;
# * the **PI controller** (Hairer's DOPRI5 code): $h\cdot 0.9\,r^{-0.85/(q+1)}\,
#   r_{prev}^{\,0.2/(q+1)}$, which remembers the last accepted ratio and damps the
#   accept/reject zig-zag;
# * the **first step** (Hairer's heuristic): one Euler probe estimates the second
#   derivative, and $h_0$ is chosen so that $h_0^{q+1}\max(\|f\|, \|f'\|) = 0.01$.
#
# **Dense output.** The stages of an accepted step also determine a polynomial
# $y(t_n + \theta h) = y_n + h\sum_i w_i(\theta) K_i$ (Shampine's quartic for
# Dormand–Prince), so the outputs the user asks for cost no evaluations.

# %%
SAFETY, MIN_FACTOR, MAX_FACTOR = 0.9, 0.2, 10.0   # as nodeform/ode/controller.py
PI_ALPHA, PI_BETA = 0.85, 0.2                     # PI exponents, in units of 1/(q+1)


def error_norm(err, y, y_new, rtol, atol):
    """RMS of the error scaled by atol + rtol * max(|y|, |y_new|); <= 1 accepts."""
    # BEGIN SOLUTION ex2_7
    scale = atol + rtol * np.maximum(np.abs(y), np.abs(y_new))
    return float(np.sqrt(np.mean((err / scale) ** 2)))
    # END SOLUTION ex2_7


def initial_step(f, t0, y0, f0, q, rtol, atol, span):
    """Hairer's first step: one Euler probe to estimate y''."""
    # BEGIN SOLUTION ex2_8
    scale = atol + rtol * np.abs(y0)
    rms = lambda x: float(np.sqrt(np.mean(x ** 2)))          # noqa: E731
    d0, d1 = rms(y0 / scale), rms(f0 / scale)
    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, span)
    d2 = rms((f(t0 + h0, y0 + h0 * f0) - f0) / scale) / h0
    h1 = max(1e-6, h0 * 1e-3) if max(d1, d2) <= 1e-15 else (0.01 / max(d1, d2)) ** (1 / (q + 1))
    return min(100 * h0, h1, span)
    # END SOLUTION ex2_8


def i_factor(ratio, ratio_prev, q):
    return SAFETY * ratio ** (-1 / (q + 1))


def pi_factor(ratio, ratio_prev, q):
    return SAFETY * ratio ** (-PI_ALPHA / (q + 1)) * ratio_prev ** (PI_BETA / (q + 1))


def next_step(h, ratio, ratio_prev, q, controller, after_reject):
    """The next |h| after a step with error ratio `ratio`, clamped."""
    # BEGIN SOLUTION ex2_9
    factor = MAX_FACTOR if ratio == 0 else controller(ratio, ratio_prev, q)
    factor = min(MAX_FACTOR, max(MIN_FACTOR, factor))
    if ratio > 1 or after_reject:          # rejected, or just after one: never grow
        factor = min(1.0, factor)
    return h * factor
    # END SOLUTION ex2_9


def dense_output(y, K, h, theta, tab):
    """y(t + theta h) from the stages of the step (tab.P: polynomial weights per stage)."""
    # BEGIN SOLUTION ex2_10
    w = tab.P @ theta ** np.arange(1, tab.P.shape[1] + 1)     # w_i(theta), (s,)
    return y + h * (w @ K)
    # END SOLUTION ex2_10


def adaptive_solve(f, y0, t_out, tab, rtol, atol, controller):
    """Adaptive solve of an FSAL pair with dense output; returns ys, nfev, rejected, trace."""
    # BEGIN SOLUTION ex2_11
    t, y, t_end = t_out[0], y0, t_out[-1]
    f0, q = f(t, y), tab.err_order
    h = initial_step(f, t, y, f0, q, rtol, atol, t_end - t)
    nfev, rejected, ratio_prev, after_reject = 2, 0, 1.0, False
    ys, k, trace = [y0], 1, []
    while k < len(t_out):
        t_new = min(t + h, t_end)
        y_new, K, err = rk_step(f, t, y, f0, t_new - t, tab)
        nfev += tab.n_stages - 1                           # K[0] came for free (FSAL)
        ratio = error_norm(err, y, y_new, rtol, atol)
        trace.append((t, t_new - t, ratio, ratio <= 1))
        if not ratio <= 1:                                 # rejected (or not finite)
            rejected += 1
            h = next_step(t_new - t, ratio, ratio_prev, q, controller, True)
            after_reject = True
            continue
        while k < len(t_out) and t_out[k] <= t_new:        # outputs inside this step
            ys.append(y_new if t_out[k] == t_new else
                      dense_output(y, K, t_new - t, (t_out[k] - t) / (t_new - t), tab))
            k += 1
        h = next_step(t_new - t, ratio, ratio_prev, q, controller, after_reject)
        ratio_prev, after_reject = max(ratio, 1e-4), False
        t, y, f0 = t_new, y_new, K[-1]                     # FSAL: last stage = f(t_new, y_new)
    return np.array(ys), nfev, rejected, np.array(trace)
    # END SOLUTION ex2_11


# %% [markdown]
# Now the check: the same Van der Pol solve by our 60 lines and by `nf.solve` (whose
# reference engine is `nodeform/ode/loops.py`), with each controller. Same algorithm,
# same constants: the evaluation counts must be *equal*, and the states equal to
# round-off (our sums over stages are done by `@`, the library's term by term).

# %%
vdp_y0 = np.array([2.0, 0.0])
t_out = np.linspace(0.0, 20.0, 41)
built = {}
for cname, ctrl in (("i", i_factor), ("pi", pi_factor)):
    ys, nfev, rej, trace = adaptive_solve(vdp_py, vdp_y0, t_out, dp, 1e-6, 1e-9, ctrl)
    sol = nf.solve(vdp_py, vdp_y0, t_out, rtol=1e-6, atol=1e-9, controller=cname, trace=True)
    built[cname] = (ys, nfev, rej, trace, sol)
    print(f"{cname.upper()} controller: built nfev {nfev}, rejected {rej} | nf.solve nfev "
          f"{sol.stats['nfev']}, rejected {sol.stats['n_rejected']} | max |state difference| "
          f"{np.abs(ys - sol.ys).max():.1e}")
check("ch02.adaptive_loop_equals_solve",
      all(b[1] == b[4].stats["nfev"] and b[2] == b[4].stats["n_rejected"]
          and np.allclose(b[0], b[4].ys, rtol=1e-10, atol=1e-12) for b in built.values()),
      "I and PI: equal nfev and rejections, states equal to rtol 1e-10 (dense output included)")

# %% [markdown]
# Van der Pol alternates slow and fast phases; watch $h$ follow them, and the I
# controller zig-zag between accepted and rejected steps where the PI controller
# settles.

# %%
fig, axes = plt.subplots(2, 1, figsize=(7.5, 5.5), sharex=True)
for cname, color, label in (("i", "C0", "I controller"), ("pi", "C1", "PI controller")):
    tr = built[cname][3]
    acc = tr[:, 3] > 0.5
    axes[0].semilogy(tr[acc, 0], np.abs(tr[acc, 1]), ".-", color=color, ms=3, lw=0.8,
                     label=f"{label}: accepted ({acc.sum()})")
    axes[0].semilogy(tr[~acc, 0], np.abs(tr[~acc, 1]), "x", color=color, ms=7,
                     label=f"{label}: rejected ({(~acc).sum()})")
    axes[1].plot(tr[:, 0], tr[:, 2], ".", color=color, ms=3, label=label)
dense = nf.odeint(vdp_py, vdp_y0, np.linspace(0, 20, 400), rtol=1e-6, atol=1e-9)
axes[0].set_ylabel("step size |h|")
axes[0].legend(fontsize=7, ncol=2)
axes[1].axhline(1.0, color="k", lw=0.8)
axes[1].set_yscale("log")
axes[1].set_ylabel("error ratio r (accept if r <= 1)")
axes[1].set_xlabel("time t")
axes[1].legend(fontsize=7, loc="lower left")
ax2 = axes[1].twinx()
ax2.plot(np.linspace(0, 20, 400), dense[:, 0], color="0.6", lw=0.8)
ax2.set_ylabel("solution x(t) (grey)", color="0.5")
fig.suptitle("Van der Pol, dopri5, rtol 1e-6, atol 1e-9: step sizes and error ratios")
savefig(fig, "ch02_step_control")

# %% [markdown]
# **Dense output: outputs for free.** Asking for more output times does not shorten a
# single step:

# %%
nfevs = []
for n_out in (2, 11, 1000):
    ys_n, nfev_n, _, _ = adaptive_solve(vdp_py, vdp_y0, np.linspace(0, 20, n_out), dp, 1e-6,
                                        1e-9, pi_factor)
    nfevs.append((nfev_n, nf.solve(vdp_py, vdp_y0, np.linspace(0, 20, n_out), rtol=1e-6,
                                   atol=1e-9).stats["nfev"]))
    print(f"{n_out:5d} output times -> nfev built {nfevs[-1][0]}, nf.solve {nfevs[-1][1]}")
dense_ref = solve_ivp(vdp_py, (0, 20), vdp_y0, method="DOP853", rtol=1e-13, atol=1e-13,
                      t_eval=np.linspace(0, 20, 1000)).y.T
print(f"error of the 1000 dense outputs against DOP853 at rtol 1e-13: "
      f"{np.abs(ys_n - dense_ref).max():.1e} (as small as at the step ends: see section 4)")
check("ch02.dense_output", len({a for a, b in nfevs} | {b for a, b in nfevs}) == 1,
      "the same nfev for 2, 11 and 1000 output times, built and library")

# %% [markdown]
# ## 4. What a tolerance controls
#
# The controller keeps each step's **local** error estimate below
# $\text{atol} + \text{rtol}|y|$. Nothing bounds the global error: local errors are
# carried along by the flow and add up, and on Van der Pol the fast phases amplify
# them. So "rtol $10^{-6}$" does not mean "6 correct digits at $t = 20$". Measured
# against SciPy's DOP853 at rtol $10^{-13}$:

# %%
ts = np.linspace(0, 20, 41)
ref = solve_ivp(vdp_py, (0, 20), vdp_y0, method="DOP853", rtol=1e-13, atol=1e-13, t_eval=ts).y.T
tols = [1e-4, 1e-6, 1e-8] if QUICK else [1e-3, 1e-4, 1e-5, 1e-6, 1e-7, 1e-8, 1e-9, 1e-10]
print(f"{'rtol':>7s} {'global error at 41 times':>25s} {'/ rtol':>8s}")
glob = []
for tol in tols:
    e = np.abs(nf.odeint(vdp_py, vdp_y0, ts, rtol=tol, atol=tol * 1e-3) - ref).max()
    glob.append(e / tol)
    print(f"{tol:7.0e} {e:25.2e} {e / tol:8.1f}")
check("ch02.tolerance_is_local", max(glob) > 3,
      f"the global error exceeds rtol by up to {max(glob):.0f}x: the tolerance bounds local error")

# %% [markdown]
# ## 5. Work–precision against SciPy
#
# Cost is function evaluations; accuracy is the error at the 41 output times.
# nodeform's dopri5 and SciPy's `RK45` are the same Dormand–Prince pair. With
# `controller="i"` nodeform uses SciPy's I controller (same safety factor, clamps and
# first step), so those two curves nearly coincide; the default PI controller spends a
# few percent fewer evaluations here. tsit5 (Tsitouras 5(4)) usually buys a little more
# accuracy per evaluation; bosh3 (order 3) is the cheap pair for loose tolerances.

# %%
fig, ax = plt.subplots(figsize=(6.5, 4.5))
curves = [("bosh3", "pi", "o-", "nodeform bosh3 3(2), PI controller"),
          ("dopri5", "pi", "o-", "nodeform dopri5 5(4), PI controller"),
          ("dopri5", "i", "d:", "nodeform dopri5 5(4), I controller"),
          ("tsit5", "pi", "o-", "nodeform tsit5 5(4), PI controller")]
for name, ctrl, style, label in curves:
    pts = []
    for tol in tols:
        # bosh3 (order 3) needs tens of thousands of steps at 1e-10: lift the 10,000 guard
        sol = nf.solve(vdp_py, vdp_y0, ts, method=name, rtol=tol, atol=tol * 1e-3,
                       max_steps=200_000, controller=ctrl)
        pts.append((sol.stats["nfev"], np.abs(sol.ys - ref).max()))
    ax.loglog(*zip(*pts), style, label=label)
nfev_i, nfev_scipy = [], []
for sp_name, label in (("RK23", "SciPy RK23, I controller"), ("RK45", "SciPy RK45, I controller")):
    pts = []
    for tol in tols:
        s = solve_ivp(vdp_py, (0, 20), vdp_y0, method=sp_name, rtol=tol, atol=tol * 1e-3,
                      t_eval=ts)
        pts.append((s.nfev, np.abs(s.y.T - ref).max()))
        if sp_name == "RK45":
            nfev_scipy.append(s.nfev)
            nfev_i.append(nf.solve(vdp_py, vdp_y0, [0, 20], rtol=tol, atol=tol * 1e-3,
                                   controller="i").stats["nfev"])
    ax.loglog(*zip(*pts), "s--", label=label)
for tol, a, b in zip(tols, nfev_i, nfev_scipy):
    print(f"rtol {tol:g}: nodeform dopri5 (I controller) nfev {a}, SciPy RK45 nfev {b} "
          f"({100 * (a - b) / b:+.1f}%)")
ax.set_xlabel("function evaluations")
ax.set_ylabel("max error at 41 output times")
ax.set_title("Work-precision, Van der Pol mu = 1, t in [0, 20]")
ax.legend(fontsize=7)
savefig(fig, "ch02_work_precision")
check("ch02.i_controller_like_scipy",
      all(abs(a - b) <= 0.05 * b for a, b in zip(nfev_i, nfev_scipy)),
      "dopri5 with controller='i' spends within 5% of SciPy RK45's evaluations at every rtol")

# %% [markdown]
# ## 6. Stiffness: when stability, not accuracy, limits the step
#
# Take $y' = \lambda\,(y - \cos t) - \sin t$ with $\lambda = -1000$: the solution
# $y = \cos t$ is smooth, but any deviation decays like $e^{\lambda t}$. An explicit
# method is stable only while $h\lambda$ lies in its stability region (for dopri5 the
# negative real axis down to about $-3.3$), so $h$ stays near $3.3/1000$ whatever the
# tolerance: the controller keeps growing $h$, the error explodes, the step is rejected.
# An implicit method (SciPy's `Radau`) takes steps as long as accuracy allows.

# %%
lam = -1000.0


def stiff(t, y):
    return lam * (y - np.cos(t)) - np.sin(t)


t_stiff = 2.0 if QUICK else 10.0
print(f"{'rtol':>7s} {'dopri5 nfev':>12s} {'median h |lambda|':>18s} {'Radau nfev':>11s}")
stiff_rows = []
for tol in ([1e-3, 1e-6] if QUICK else [1e-3, 1e-4, 1e-5, 1e-6, 1e-8]):
    sol = nf.solve(stiff, np.array([1.0]), [0.0, t_stiff], rtol=tol, atol=tol, trace=True)
    acc = sol.trace["accepted"]
    hl = float(np.median(np.abs(sol.trace["h"][acc]))) * abs(lam)
    rad = solve_ivp(stiff, (0, t_stiff), [1.0], method="Radau", rtol=tol, atol=tol)
    stiff_rows.append((sol.stats["nfev"], hl, rad.nfev))
    print(f"{tol:7.0e} {sol.stats['nfev']:12d} {hl:18.2f} {rad.nfev:11d}")
nf0 = stiff_rows[0][0]
check("ch02.stiffness", all(2.0 < hl < 3.6 for _, hl, _ in stiff_rows[:2])
      and stiff_rows[1][0] < 1.5 * nf0 and stiff_rows[0][2] < nf0 / 5,
      "h|lambda| stays near dopri5's stability limit ~3.3; nfev hardly grows from rtol 1e-3 to "
      "1e-6; Radau needs 5x fewer evaluations at rtol 1e-3")

# %% [markdown]
# ## 7. Why Numba: the speed table
#
# The reference engine is readable Python over arrays: each step costs tens of
# microseconds of interpreter work, like SciPy's. When the vector field is itself an
# `@numba.njit` function, `nf.solve` runs the *same* loop compiled (its Numba twin,
# `nodeform/ode/_numba_rk.py`): no Python per step at all. Both give the same numbers
# to round-off; the test suite checks it. The first call compiles (reported apart);
# `python bench/bench_solvers.py` measures the full table against SciPy.

# %%
@njit(cache=True)
def vdp(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] ** 2) * y[1] - y[0]])


def best_time(fn, repeats):
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


t0 = time.perf_counter()
sol_nb = nf.solve(vdp, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6, atol=1e-9)
compile_s = time.perf_counter() - t0
sol_ref = nf.solve(vdp_py, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6, atol=1e-9)
reps = 5 if QUICK else 21
t_numba = best_time(lambda: nf.solve(vdp, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6,
                                     atol=1e-9), reps * 10)
t_ref = best_time(lambda: nf.solve(vdp_py, vdp_y0, [0.0, 20.0], args=(1.0,), rtol=1e-6,
                                   atol=1e-9), reps)
t_scipy = best_time(lambda: solve_ivp(vdp_py, (0, 20), vdp_y0, args=(1.0,), rtol=1e-6,
                                      atol=1e-9), reps)
print(f"first call (compile or load from cache + solve): {compile_s:.2f} s")
print(f"{'engine':28s} {'ms / solve':>10s} {'speed-up vs SciPy RK45':>23s}")
for label, t in (("SciPy solve_ivp RK45", t_scipy), ("nodeform reference (Python)", t_ref),
                 ("nodeform Numba twin", t_numba)):
    print(f"{label:28s} {t * 1e3:10.3f} {t_scipy / t:22.1f}x")
print(f"measured here: the compiled loop is {t_scipy / t_numba:.0f}x faster than SciPy and "
      f"{t_ref / t_numba:.0f}x faster than the reference loop (timings on a shared machine "
      "are noisy)")

fig, ax = plt.subplots(figsize=(6.5, 3))
labels = ["SciPy RK45 (Python loop)", "nodeform reference (Python loop)", "nodeform Numba twin"]
bars = ax.barh(labels, [t_scipy * 1e3, t_ref * 1e3, t_numba * 1e3], color=["0.6", "C0", "C1"])
ax.bar_label(bars, labels=[f"{t * 1e3:.3g} ms" for t in (t_scipy, t_ref, t_numba)], padding=3,
             fontsize=8)
ax.set_xscale("log")
ax.set_xlim(right=max(t_scipy, t_ref) * 1e3 * 8)
ax.set_xlabel("milliseconds per solve (log scale)")
ax.set_title("Van der Pol, dopri5, rtol 1e-6, atol 1e-9, t in [0, 20]")
savefig(fig, "ch02_speed")
check("ch02.numba_twin", sol_nb.stats["nfev"] == sol_ref.stats["nfev"]
      and np.allclose(sol_nb.ys, sol_ref.ys, rtol=1e-12, atol=1e-14) and t_numba < t_ref,
      "the compiled loop: same nfev, same states to 1e-12, and faster than the reference loop")

# %% [markdown]
# ## 8. When it fails, it says why
#
# $y' = y^2$ from $y(0)=1$ blows up at $t = 1$. An adaptive solver notices: the step
# size shrinks until float64 can no longer advance $t$.

# %%
print("--- EXPECTED FAILURE, shown on purpose: y' = y^2 blows up at t = 1 ---")
try:
    nf.odeint(lambda t, y: y * y, np.array([1.0]), [0.0, 2.0])
    failed = None
except nf.SolverError as exc:
    print(type(exc).__name__, ":", exc)
    failed = exc
print("--- end of the expected failure ---")
sol = nf.solve(lambda t, y: y * y, np.array([1.0]), [0.0, 0.5, 2.0], throw=False)
print("throw=False ->", sol.status, sol.ys.ravel())
check("ch02.blowup_reported", failed is not None and abs(failed.t - 1.0) < 1e-3
      and np.isclose(sol.ys[1, 0], 2.0, rtol=1e-6) and np.isnan(sol.ys[2, 0]),
      "the solve stops within 1e-3 of t = 1 and says so; throw=False keeps y(0.5) = 2")

# %% [markdown]
# ## Summary
#
# - A Runge–Kutta method is its tableau $(c, A, b[, \hat b])$; order is a set of
#   algebraic conditions (17 up to order 5) that `ButcherTableau` checks. A linear test
#   problem sees only one condition per order: measure order on a non-linear problem too.
# - You built Euler, the RK step, the adaptive loop (error norm, first step, I and PI
#   controllers) and dense output in about 100 lines; they reproduce `nf.solve`'s
#   evaluation counts exactly.
# - The tolerance bounds each step's local error; the global error can be much larger.
# - Stiff problems pin an explicit method's step to its stability limit, whatever the
#   tolerance.
# - The compiled twin runs the same algorithm with the interpreter removed from the
#   loop; the speed-up is measured above, not assumed (it varies with the machine and
#   its load; `bench/bench_solvers.py` gives the full table).
#
# ## Exercises
#
# Code exercises sit between `# BEGIN SOLUTION exN_M` and `# END SOLUTION exN_M` in the
# built code above (or in the library where named); in a student copy
# (`python -m nodeform classroom make DIR`) each is a `raise NotImplementedError(...)`
# with a hint. Check one with `python -m nodeform classroom check ex2_7`, all with
# `python -m nodeform classroom grade`. Suggested order: ex2_5, ex2_6, ex2_7, ex2_8,
# ex2_9, ex2_10, ex2_11, then the open ones. None of them needs an edit inside the
# library: the solver's knobs are keyword arguments of `nf.solve` / `nf.odeint`
# (`safety=`, `controller=` with a pair of exponents, `norm=`, `interpolant=`), honoured
# by both engines (the compiled one refuses what it cannot do, with a message).
#
# | id | level | what | where |
# |---|---|---|---|
# | ex2_1 | ★★ | *open:* Heun's third-order method and Kutta's 3/8 rule as tableaus (below) | a new cell |
# | ex2_2 | ★★ | *open:* the safety factor (below) | `nf.solve(..., safety=)` |
# | ex2_3 | ★★ | *open:* linear interpolation instead of dense output (below) | `nf.solve(..., interpolant=)` |
# | ex2_4 | ★★ | *open:* a very stiff problem, read from the trace (below) | `nf.solve(..., trace=True)` |
# | ex2_5 | ★ | `euler`: n fixed Euler steps | `euler`, section 1 |
# | ex2_6 | ★★ | `rk_step`: one explicit RK step from a tableau, with the error estimate | `rk_step`, section 2 |
# | ex2_7 | ★ | `error_norm`: the scaled RMS error ratio | `error_norm`, section 3 |
# | ex2_8 | ★★ | `initial_step`: Hairer's first step | `initial_step`, section 3 |
# | ex2_9 | ★★ | `next_step`: the controller's factor, clamps, no growth after a rejection | `next_step`, section 3 |
# | ex2_10 | ★★ | `dense_output`: the interpolant of a step | `dense_output`, section 3 |
# | ex2_11 | ★★★ | `adaptive_solve`: the loop, with exactly `nf.solve`'s evaluation count | `adaptive_solve`, section 3 |
# | ex2_12 | ★ | the library's max norm, behind `nf.solve(..., norm="max")` | `max_norm` in `nodeform/ode/controller.py` |
#
# **ex2_1.** Write Heun's third-order method ($c = (0, 1/3, 2/3)$, $b = (1/4, 0, 3/4)$)
# and Kutta's 3/8 rule ($c = (0, 1/3, 2/3, 1)$, $b = (1, 3, 3, 1)/8$) as
# `nf.ButcherTableau(name, c=, A=, b=, order=)`, and confirm the orders by measured
# slopes on Van der Pol with `fixed_solve` (step counts 16 to 128 on $[0, 1]$).
#
# **ex2_2.** (a) Show that if the error model $\text{err} = C h^{q+1}$ is exact, the I
# controller's step $h\,\text{safety}\,r^{-1/(q+1)}$ makes the next ratio
# $\text{safety}^{q+1}$ (about 0.59 for dopri5 at 0.9). (b) Measure: Van der Pol on
# $[0, 20]$ at rtol $10^{-6}$, atol $10^{-9}$ with `nf.solve(..., safety=s,
# controller="i", trace=True)` for $s \in \{0.5, 0.7, 0.9, 0.99\}$; tabulate `nfev`,
# `n_rejected` and the median accepted error ratio, and explain both ends. The
# compiled engine has the default built in: with `vdp` (the `@njit` field of section 7),
# `safety=` falls back on the reference engine, and `engine="numba"` refuses it.
#
# **ex2_3.** Solve Van der Pol on $[0, 20]$ at rtol $10^{-6}$, atol $10^{-9}$ with 1,000
# output times, once with the default dense output and once with
# `interpolant="linear"`, and measure the error at the outputs against the DOP853
# reference of section 3. Is `nfev` the same? Why must an interpolant have order at
# least $q$ for the outputs to be as accurate as the steps?
#
# **ex2_4.** Solve the stiff problem of section 6 with $\lambda = -10^5$ on $[0, 0.1]$
# at rtol = atol = $10^{-6}$ (`nf.solve(stiff5, np.array([1.0]), [0.0, 0.1], rtol=1e-6,
# atol=1e-6, trace=True)`; the default `max_steps` suffices; on $[0, 10]$ it would need
# about 300,000 steps and stops with `MaxStepsError`, which says so). From the trace:
# how many steps, how many rejected, the median $h\lvert\lambda\rvert$, and what limits
# $h$? Repeat with `controller="i"` and compare the rejections.
