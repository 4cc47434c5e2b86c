"""Checks of chapter 2's exercises (chapters/ch02_ode_solvers.py and nodeform/ode/controller.py).

The library's own pieces (nodeform/ode/rk.py, controller.py, nf.solve) are the reference:
the chapter's functions must reproduce them. Run one with
``python -m nodeform classroom check ex2_7``.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.ode import METHODS
from nodeform.ode import controller as ctl
from nodeform.ode import rk
from exercise_helpers import close

VDP0 = np.array([2.0, 0.0])


def vdp(t, y):
    return np.array([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])


@pytest.mark.ex2_5
def test_ex2_5_euler_equals_library(ch02):
    got = ch02.euler(vdp, 0.5, VDP0, 2.5, 40)
    lib = nf.odeint(vdp, VDP0, [0.5, 2.5], method="euler", step_size=0.05)[-1]
    close(got, lib, "euler(vdp, 0.5, y0, 2.5, 40)",
          "h = (t1 - t0) / n and the k-th step evaluates f at t0 + k h (not at 0 + k h)")


@pytest.mark.ex2_5
def test_ex2_5_euler_is_first_order(ch02):
    exact = np.exp(-1.0)
    errs = [abs(ch02.euler(lambda t, y: -y, 0.0, np.array([1.0]), 1.0, n)[0] - exact)
            for n in (100, 200)]
    assert 1.9 < errs[0] / errs[1] < 2.1, (
        f"halving h should halve Euler's error (order 1); the ratio was {errs[0] / errs[1]:.3f}")


@pytest.mark.ex2_6
@pytest.mark.parametrize("name", ["dopri5", "bosh3", "rk4"])
def test_ex2_6_rk_step_equals_library(ch02, name):
    tab, t, y, h = METHODS[name], 0.3, np.array([1.5, -0.4]), 0.2
    f0 = vdp(t, y)
    y_new, K, err = ch02.rk_step(vdp, t, y, f0, h, tab)
    y_lib, K_lib, err_lib = rk.rk_step(vdp, t, y, f0, h, tab)
    close(np.asarray(K), np.stack(K_lib), f"the stages K of {name}",
          "K[i] = f(t + c[i] h, y + h * (A[i, :i] @ K[:i])), with K[0] = f0")
    close(y_new, y_lib, f"y_new of one {name} step", "y_new = y + h * (b @ K)")
    if err_lib is None:
        assert err is None, f"{name} has no embedded pair: err should be None, got {err!r}"
    else:
        close(err, err_lib, f"the error estimate of {name}", "err = h * (tab.e @ K)")


@pytest.mark.ex2_7
@pytest.mark.parametrize("rtol, atol", [(1e-6, 1e-9), (1e-3, 0.0), (0.0, 1e-4)])
def test_ex2_7_error_norm_equals_library(ch02, rng, rtol, atol):
    y, y_new, err = (rng.standard_normal(7) for _ in range(3))
    err = err * 1e-5
    got = ch02.error_norm(err, y, y_new, rtol, atol)
    assert isinstance(got, float), (f"error_norm should return a Python float, got "
                                    f"{type(got).__name__}. Hint: float(...)")
    close(got, ctl.error_ratio(err, y, y_new, rtol, atol), f"error_norm at rtol {rtol}, atol {atol}",
          "scale by atol + rtol * max(|y|, |y_new|) (elementwise), then the RMS: "
          "sqrt(mean(x ** 2))")


@pytest.mark.ex2_8
@pytest.mark.parametrize("y0, span", [(VDP0, 20.0), (np.array([1e-3, 0.0]), 0.5),
                                      (np.array([0.0, 0.0]), 3.0)])
def test_ex2_8_initial_step_equals_library(ch02, y0, span):
    f0 = vdp(0.0, y0)
    got = ch02.initial_step(vdp, 0.0, y0, f0, 4, 1e-6, 1e-9, span)
    lib = ctl.select_initial_step(vdp, 0.0, y0, f0, 1.0, 4, 1e-6, 1e-9, span)
    close(got, lib, f"initial_step for y0 = {y0}, span {span}",
          "d0, d1 = rms(y0 / scale), rms(f0 / scale); h0 = 1e-6 if either is below 1e-5; "
          "d2 from one Euler probe; h1 = max(1e-6, 1e-3 h0) if max(d1, d2) <= 1e-15",
          rtol=1e-12)


@pytest.mark.ex2_9
@pytest.mark.parametrize("ratio, ratio_prev, after_reject", [
    (0.3, 0.5, False), (0.3, 0.5, True), (2.5, 0.5, False), (1e-9, 1.0, False),
    (0.0, 1.0, False), (400.0, 1.0, True), (1.0, 0.01, False)])
@pytest.mark.parametrize("which", ["i", "pi"])
def test_ex2_9_next_step_equals_library(ch02, ratio, ratio_prev, after_reject, which):
    q = 4
    controller = ch02.i_factor if which == "i" else ch02.pi_factor
    got = ch02.next_step(0.1, ratio, ratio_prev, q, controller, after_reject)
    alpha, beta = ctl.controller_exponents(which, q)
    lib = 0.1 * ctl.step_factor(ratio, ratio_prev, alpha, beta, after_reject)
    close(got, lib, f"next_step(h=0.1, ratio={ratio}, ratio_prev={ratio_prev}, "
          f"after_reject={after_reject}) with the {which.upper()} controller",
          "MAX_FACTOR when ratio == 0; clamp to [MIN_FACTOR, MAX_FACTOR]; never above 1 when "
          "rejected (ratio > 1) or right after a rejection")


@pytest.mark.ex2_10
@pytest.mark.parametrize("name", ["dopri5", "tsit5", "bosh3"])
def test_ex2_10_dense_output_equals_library(ch02, name):
    tab, t, y, h = METHODS[name], 0.0, np.array([1.5, -0.4]), 0.25
    y_new, K, _ = rk.rk_step(vdp, t, y, vdp(t, y), h, tab)
    K = np.stack(K)
    for theta in (0.0, 0.3, 0.77, 1.0):
        close(ch02.dense_output(y, K, h, theta, tab), rk.dense_eval(y, list(K), tab, theta, h),
              f"dense_output of {name} at theta = {theta}",
              "w_i(theta) = sum_k P[i, k] theta ** (k + 1) (powers 1..degree); y + h (w @ K); "
              "at theta = 1 it is y_new")


@pytest.mark.ex2_11
@pytest.mark.parametrize("controller", ["i", "pi"])
def test_ex2_11_adaptive_solve_equals_solve(ch02, controller):
    t_out = np.linspace(0.0, 6.0, 13)
    ctrl = ch02.i_factor if controller == "i" else ch02.pi_factor
    ys, nfev, rejected, trace = ch02.adaptive_solve(vdp, VDP0, t_out, METHODS["dopri5"], 1e-5,
                                                    1e-8, ctrl)
    sol = nf.solve(vdp, VDP0, t_out, rtol=1e-5, atol=1e-8, controller=controller)
    hint = ("nfev starts at 2 (f0 and the first-step probe) and adds s - 1 per attempted step "
            "(FSAL); a rejected step shrinks h with after_reject=True and retries; the PI "
            "memory ratio_prev = max(ratio, 1e-4) is updated only on acceptance")
    assert (nfev, rejected) == (sol.stats["nfev"], sol.stats["n_rejected"]), (
        f"expected nfev {sol.stats['nfev']} and {sol.stats['n_rejected']} rejections (nf.solve, "
        f"{controller} controller), got nfev {nfev} and {rejected}. Hint: {hint}")
    close(ys, sol.ys, "the states at the 13 output times", "outputs inside a step come from "
          "dense_output with theta = (t_out[k] - t) / h; an output at the step's end is y_new",
          rtol=1e-10, atol=1e-12)
    assert len(trace) == sol.stats["n_steps"], (
        f"the trace should have one row per attempted step ({sol.stats['n_steps']}), got "
        f"{len(trace)}")


@pytest.mark.ex2_12
def test_ex2_12_max_norm_values():
    x = np.array([[0.5, -3.0], [2.0, 1.0]])
    got = ctl.max_norm(x)
    assert isinstance(got, float) and got == 3.0, (
        f"max_norm of [[0.5, -3], [2, 1]] should be the float 3.0 (largest |entry|), got {got!r}")
    assert ctl.max_norm(np.zeros(0)) == 0.0, "max_norm of an empty array should be 0.0"
    assert np.isnan(ctl.max_norm(np.array([1.0, np.nan]))), (
        "max_norm must return NaN when an entry is NaN, so that a non-finite step is rejected. "
        "Hint: xp.max propagates NaN; builtin max() does not")


@pytest.mark.ex2_12
def test_ex2_12_solve_with_max_norm():
    sol_max = nf.solve(vdp, VDP0, [0.0, 5.0], rtol=1e-6, atol=1e-9, norm="max", trace=True)
    sol_rms = nf.solve(vdp, VDP0, [0.0, 5.0], rtol=1e-6, atol=1e-9)
    assert sol_max.stats["nfev"] > sol_rms.stats["nfev"], (
        f"the max norm is never smaller than the RMS, so norm='max' should need more "
        f"evaluations than the default: got {sol_max.stats['nfev']} vs {sol_rms.stats['nfev']}")
    acc = sol_max.trace["accepted"]
    assert np.all(sol_max.trace["error_ratio"][acc] <= 1.0), "accepted steps have ratio <= 1"
