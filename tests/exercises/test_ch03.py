"""Checks of chapter 3's exercises (chapters/ch03_adjoint.py).

References: explicit formulas, Jacobians by central differences, and the library's
``nf.odeint(..., adjoint="continuous" | "backprop")``. Run one with
``python -m nodeform classroom check ex3_10``.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.testing import numerical_jacobian
from exercise_helpers import close

SHAPE = (3, 2)


@pytest.fixture
def problem(rng):
    W = rng.standard_normal((2, 2))
    z = rng.standard_normal(SHAPE)
    g = rng.standard_normal(SHAPE)
    return W, z, g


@pytest.mark.ex3_7
def test_ex3_7_start_values(ch03, problem):
    W, z, g = problem
    a, a_W, a_t, dL_dtN = ch03.start_values(1.3, z, g, W)
    close(a, g, "a at t_N", "the adjoint starts at the direct cotangent g_N")
    assert a is not g, ("start_values returned g_N itself; the sweep then changes the caller's "
                        "array. Hint: return g_N.copy()")
    close(a_W, np.zeros(W.size), "a_W at t_N (flat, W.size entries)", "np.zeros(W.size)")
    expected = float((g * ch03.f_array(1.3, z, W)).sum())
    close(dL_dtN, expected, "dL/dt_N", "dL/dt_N = g_N . f(z_N, t_N): sum of the products")
    close(a_t, -expected, "a_t at t_N", "a_t starts at -dL/dt_N")


@pytest.mark.ex3_8
@pytest.mark.parametrize("with_time", [True, False])
def test_ex3_8_observation_jump(ch03, problem, with_time):
    W, z, g = problem
    a = np.full(SHAPE, 0.25)
    a_new, a_t_new, dL_dti = ch03.observation_jump(a, 0.5, g, 0.8, z, W, with_time)
    close(a_new, a + g, "a after the jump", "a jumps by the direct cotangent: a + g_i")
    expected = float((g * ch03.f_array(0.8, z, W)).sum()) if with_time else 0.0
    close(dL_dti, expected, f"dL/dt_i (with_time={with_time})",
          "g_i . f(z_i, t_i) when with_time, else 0.0 (no gradient for t_0 from a jump)")
    close(a_t_new, 0.5 - expected, "a_t after the jump", "a_t - dL/dt_i")


@pytest.mark.ex3_9
def test_ex3_9_augmented_dynamics_against_jacobians(ch03, problem, rng):
    W, z, a = problem
    t, n = 0.4, z.size
    s = np.concatenate([z.ravel(), a.ravel(), rng.standard_normal(W.size), [0.7]])
    got = np.asarray(ch03.augmented_dynamics(t, s, W, SHAPE), dtype=float)
    assert got.shape == s.shape, (f"augmented_dynamics should return a flat array like s, shape "
                                  f"{s.shape}; got {got.shape}. Hint: np.concatenate of the "
                                  "four raveled parts")
    f = ch03.f_array
    J_z = numerical_jacobian(lambda zz: f(t, zz.reshape(SHAPE), W).ravel(), z.ravel())
    J_W = numerical_jacobian(lambda ww: f(t, z, ww.reshape(W.shape)).ravel(), W.ravel())
    J_t = numerical_jacobian(lambda tt: f(tt[0], z, W).ravel(), np.array([t]))
    close(got[:n], f(t, z, W).ravel(), "the z part (f itself)", "the first block is f(t, z, W)")
    close(got[n:2 * n], -a.ravel() @ J_z, "the a part, -a df/dz", "negate a^T df/dz from nf.vjp",
          rtol=1e-7, atol=1e-9)
    close(got[2 * n:2 * n + W.size], -a.ravel() @ J_W, "the a_W part, -a df/dW",
          "negate a^T df/dW (the VJP's cotangent for W), raveled", rtol=1e-7, atol=1e-9)
    close(got[-1], -(a.ravel() @ J_t)[0], "the a_t part, -a df/dt",
          "negate a^T df/dt (the VJP's cotangent for t; pass t as a float array)",
          rtol=1e-7, atol=1e-9)


@pytest.mark.ex3_10
def test_ex3_10_backward_sweep_equals_odeint(ch03, problem):
    W0, Z0, _ = problem
    t_obs = np.array([0.0, 0.4, 1.1])
    tol = dict(rtol=1e-8, atol=1e-10)
    zs = nf.solve(lambda t, z: ch03.f_array(t, z, W0), Z0, t_obs, **tol).ys
    g = 2 * zs
    g[0] = 0.0
    dz0, dW, dt, nfev, path, z_end = ch03.backward_sweep(t_obs, zs, g, W0, **tol)
    Wt, z0t, tt = (nf.Tensor(v, requires_grad=True) for v in (W0, Z0, t_obs))
    zs_lib = nf.odeint(lambda t, z: ch03.f_tensor(t, z, Wt), z0t, tt, params=[Wt], **tol)
    (zs_lib[1:] ** 2.0).sum().backward()
    hint = ("start_values at t_N; for i = N..1 solve the augmented state from t_i to t_(i-1), "
            "restart z from zs[i-1], then observation_jump (with_time only for i-1 >= 1); "
            "dL/dt_0 is the final a_t")
    close(dz0, z0t.grad.data, "dL/dz0", hint, rtol=1e-6, atol=1e-8)
    close(dW, Wt.grad.data, "dL/dW", hint, rtol=1e-6, atol=1e-8)
    close(dt, tt.grad.data, "dL/dt_i for all three times", hint, rtol=1e-6, atol=1e-8)
    close(z_end, zs[0], "z at the end of the sweep (restart=True)",
          "with restarts z is the stored zs[0] at the end")
    assert nfev > 0, f"nfev should count the backward solves' evaluations, got {nfev}"


def _field(W):
    return lambda t, z: nf.tanh(z @ W.T) * nf.cos(2.0 * t)


@pytest.mark.ex3_11
def test_ex3_11_rk_step_tensor_value_and_gradient(ch03, problem):
    W0, Z0, _ = problem
    Wt, z0t = nf.Tensor(W0, requires_grad=True), nf.Tensor(Z0, requires_grad=True)
    y1 = ch03.rk_step_tensor(_field(Wt), 0.2, z0t, 0.1, nf.RK4)
    assert hasattr(y1, "_is_tensor"), (f"rk_step_tensor should return a Tensor (recorded), got "
                                       f"{type(y1).__name__}")
    (y1 ** 2.0).sum().backward()
    mine = (y1.data.copy(), z0t.grad.data.copy(), Wt.grad.data.copy())
    Wt.grad = z0t.grad = None
    zs = nf.odeint(_field(Wt), z0t, [0.2, 0.3], params=[Wt], adjoint="backprop", method="rk4",
                   step_size=0.1)
    (zs[-1] ** 2.0).sum().backward()
    hint = ("stage i evaluates f at t + c[i] h and y + h sum_j A[i, j] K[j]; the result is "
            "y + h sum_j b[j] K[j], all in Tensor operations")
    close(mine[0], zs[-1].data, "the state after one rk4 step", hint)
    close(mine[1], z0t.grad.data, "d|y1|^2/dy0 through the recorded step", hint)
    close(mine[2], Wt.grad.data, "d|y1|^2/dW through the recorded step", hint)


@pytest.mark.ex3_12
def test_ex3_12_backprop_solve_equals_library(ch03, problem):
    W0, Z0, _ = problem
    Wt, z0t = nf.Tensor(W0, requires_grad=True), nf.Tensor(Z0, requires_grad=True)
    grid = np.linspace(0.0, 1.0, 11)
    ys = ch03.backprop_solve(_field(Wt), z0t, grid, nf.RK4)
    assert len(ys) == len(grid), (f"backprop_solve should return one state per grid time "
                                  f"({len(grid)}, y0 included), got {len(ys)}")
    (ys[-1] ** 2.0).sum().backward()
    mine = (z0t.grad.data.copy(), Wt.grad.data.copy())
    Wt.grad = z0t.grad = None
    zs = nf.odeint(_field(Wt), z0t, [0.0, 1.0], params=[Wt], adjoint="backprop", method="rk4",
                   step_size=0.1)
    (zs[-1] ** 2.0).sum().backward()
    hint = "one rk_step_tensor(f, t, y, t_next - t, tab) per interval, as floats"
    close(mine[0], z0t.grad.data, "dL/dz0 by backprop through your solve", hint, rtol=1e-10)
    close(mine[1], Wt.grad.data, "dL/dW by backprop through your solve", hint, rtol=1e-10)
