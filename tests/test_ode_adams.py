"""The Adams PECE solver (method="adams"), proven like every other method.

Coefficients against the textbook values, measured order at fixed order, exact
solutions forwards and backwards, SciPy's DOP853 and LSODA, dense output, the error
family, gradients through odeint with both adjoints, and the Numba twin against the
reference engine.
"""

import numpy as np
import pytest
from scipy.integrate import solve_ivp

import nodeform as nf
from nodeform import MaxStepsError, NonFiniteError, SolverArgumentError, StepSizeUnderflowError
from nodeform.ode.adams import MAX_ORDER, integrate_adams, integration_coefficients
from ode_problems import Y0, harmonic, kepler, kepler_y0, linear, linear_exact, vdp


# ----------------------------------------------------------------------------- coefficients

def test_adams_coefficients_constant_step_are_adams_bashforth():
    """With equal steps (alpha_i = 1/(i+1)) g_j are the AB coefficients gamma_j (HNW III.1)."""
    gamma = [1, 1 / 2, 5 / 12, 3 / 8, 251 / 720, 95 / 288, 19087 / 60480, 5257 / 17280,
             1070017 / 3628800]
    alpha = [1.0 / (i + 1) for i in range(len(gamma))]
    g = integration_coefficients(alpha, len(gamma) - 1)
    np.testing.assert_allclose(g, gamma, rtol=1e-14)


def test_adams_coefficients_integrate_the_interpolant(rng):
    """Variable steps: sum_j g_j(s) Phi*_j integrates the Newton interpolant of a polynomial
    of degree k-1 exactly, so the predictor is exact for y' = that polynomial."""
    k = 6
    ts = np.cumsum(rng.uniform(0.3, 1.0, k))[::-1]        # t_n > t_{n-1} > ...
    t_n, h = ts[0], 0.7
    c = rng.standard_normal(k)

    def P(t):
        return np.polyval(c, t)
    # modified divided differences Phi*_j(n) = prod_{i<j} psi_i * f[t_n..t_{n-j}]
    dd = [P(t) for t in ts]
    table = [dd[0]]
    for j in range(1, k):
        dd = [(dd[i] - dd[i + 1]) / (ts[i] - ts[i + j]) for i in range(k - j)]
        table.append(dd[0])
    psi = [t_n + h - ts[i] for i in range(k)]
    phistar = [table[j] * np.prod(psi[:j]) for j in range(k)]
    alpha = [h / p for p in psi]
    antider = np.polyint(c)
    for s in (1.0, 0.35):
        g = integration_coefficients(alpha, k - 1, s)
        got = h * sum(gj * pj for gj, pj in zip(g, phistar))
        want = np.polyval(antider, t_n + s * h) - np.polyval(antider, t_n)
        assert abs(got - want) < 1e-12 * max(1.0, abs(want)), (s, got, want)


# ----------------------------------------------------------------------------- order

@pytest.mark.parametrize("order,tols", [(1, [1e-3, 3e-4, 1e-4, 3e-5]),
                                        (2, [1e-5, 1e-6, 1e-7, 1e-8]),
                                        (4, [1e-6, 1e-7, 1e-8, 1e-9])])
def test_adams_measured_order_at_fixed_order(order, tols):
    """Order k (k-point predictor, corrector on k+1 points) converges with order k+1:
    on the Kepler orbit (non-linear), log error vs log evaluations has slope -(k+1)."""
    y0 = kepler_y0(0.3)
    errs, nfev = [], []
    for tol in tols:
        ys, st, tr = integrate_adams(kepler, [0.0, 2 * np.pi], y0, tol, tol, max_order=order,
                                     trace=True, max_steps=10 ** 5)
        assert max(tr["order"]) == order and tr["order"][-1] == order
        errs.append(np.abs(ys[-1] - y0).max())   # the orbit closes after one period
        nfev.append(st["nfev"])
    slope = np.polyfit(np.log(nfev), np.log(errs), 1)[0]
    assert abs(slope + (order + 1)) < 0.4, (slope, nfev, errs)


def test_adams_raises_order_on_smooth_problems():
    """A smooth problem at a tight tolerance ends up at a high order (>= 8)."""
    sol = nf.solve(linear, Y0, [0.0, 10.0], method="adams", rtol=1e-12, atol=1e-12, trace=True)
    orders = sol.trace["order"]
    assert orders.min() >= 1 and orders.max() <= MAX_ORDER
    assert np.median(orders[sol.trace["accepted"]]) >= 8


# ----------------------------------------------------------------------------- accuracy

@pytest.mark.parametrize("direction", [1.0, -1.0])
def test_adams_exact_solution_both_directions(direction):
    """y' = M y against expm: error within 20 tol (1 + |y|), shrinking 100x per 1000x tol.

    (Measured: 5-11 tol (1 + |y|); dopri5 spends 2.6x the evaluations for 1-2.)
    """
    ts = direction * np.linspace(0.0, 10.0, 21)
    exact = np.array([linear_exact(t) for t in ts])
    errs = []
    for tol in (1e-6, 1e-9):
        ys = nf.odeint(linear, Y0, ts, method="adams", rtol=tol, atol=tol)
        errs.append(np.abs(ys - exact).max() / (1.0 + np.abs(exact).max()))
    assert errs[0] < 20 * 1e-6 and errs[1] < 20 * 1e-9, errs
    assert errs[1] < errs[0] / 100, errs


def test_adams_agrees_with_dop853_and_lsoda_on_van_der_pol():
    """rtol 1e-10: Adams within 1e-6 of DOP853 at 1e-13, and as close as LSODA gets."""
    ts = np.linspace(0.0, 20.0, 41)
    ref = solve_ivp(vdp, (0, 20), [2.0, 0.0], method="DOP853", rtol=1e-13, atol=1e-13,
                    t_eval=ts).y.T
    ls = solve_ivp(vdp, (0, 20), [2.0, 0.0], method="LSODA", rtol=1e-10, atol=1e-10,
                   t_eval=ts).y.T
    ys = nf.odeint(vdp, [2.0, 0.0], ts, method="adams", rtol=1e-10, atol=1e-10)
    err, err_ls = np.abs(ys - ref).max(), np.abs(ls - ref).max()
    assert err < 1e-6 and err < 10 * err_ls, (err, err_ls)


def test_adams_dense_output_is_free_and_accurate():
    """400 more output times cost no evaluation; they are as accurate as the steps."""
    few = nf.solve(harmonic, [1.0, 0.0], [0.0, 20.0], method="adams", rtol=1e-9, atol=1e-9)
    ts = np.linspace(0.0, 20.0, 401)
    many = nf.solve(harmonic, [1.0, 0.0], ts, method="adams", rtol=1e-9, atol=1e-9)
    assert many.stats == few.stats
    exact = np.stack([np.cos(ts), -np.sin(ts)], axis=1)
    assert np.abs(many.ys - exact).max() < 1e-7
    np.testing.assert_array_equal(many.ys[-1], few.ys[-1])


def test_adams_dense_output_continuous_at_the_steps():
    """Just before and at an accepted step the interpolant meets the step's value."""
    sol = nf.solve(kepler, kepler_y0(0.5), [0.0, 3.0], method="adams", rtol=1e-8, atol=1e-8,
                   trace=True)
    t_step = sol.trace["t"][sol.trace["accepted"]][10]   # the start of an accepted step
    eps = 1e-9 * max(1.0, abs(t_step))
    a = nf.odeint(kepler, kepler_y0(0.5), [0.0, t_step - eps, 3.0], method="adams",
                  rtol=1e-8, atol=1e-8)[1]
    b = nf.odeint(kepler, kepler_y0(0.5), [0.0, t_step, 3.0], method="adams",
                  rtol=1e-8, atol=1e-8)[1]
    assert np.abs(a - b).max() < 1e-7


def test_adams_evaluations_counted_inside_f():
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return vdp(t, y)
    sol = nf.solve(f, [2.0, 0.0], [0.0, 5.0], method="adams", rtol=1e-7, atol=1e-7, trace=True)
    st = sol.stats
    assert st["nfev"] == calls[0]
    # f0, the first-step probe, one per attempted step, one per accepted step but the last
    assert st["nfev"] == 2 + st["n_steps"] + st["n_accepted"] - 1
    assert st["n_steps"] == st["n_accepted"] + st["n_rejected"] == len(sol.trace["order"])
    assert int((~sol.trace["accepted"]).sum()) == st["n_rejected"]


def test_adams_batches_and_float32():
    """Any state shape; float32 stays float32."""
    from ode_problems import M
    y0 = np.stack([Y0, 2 * Y0, -Y0]).astype(np.float32)   # (3, 2)
    MT = M.T.astype(np.float32)
    ys = nf.odeint(lambda t, y: y @ MT, y0, [0.0, 1.0], method="adams", rtol=1e-5, atol=1e-6)
    assert ys.dtype == np.float32 and ys.shape == (2, 3, 2)
    np.testing.assert_allclose(ys[-1, 0], linear_exact(1.0), rtol=1e-4)


# ----------------------------------------------------------------------------- errors

def test_adams_rejects_step_size():
    with pytest.raises(SolverArgumentError, match="`step_size`"):
        nf.solve(linear, Y0, [0.0, 1.0], method="adams", step_size=0.1)


def test_adams_rejects_controller():
    with pytest.raises(SolverArgumentError, match="`controller`"):
        nf.solve(linear, Y0, [0.0, 1.0], method="adams", controller="i")


def test_adams_unknown_method_lists_adams():
    with pytest.raises(SolverArgumentError, match="'adams'"):
        nf.solve(linear, Y0, [0.0, 1.0], method="adams5")


def test_adams_max_steps_and_partial_solution():
    with pytest.raises(MaxStepsError, match="`max_steps` = 20"):
        nf.odeint(vdp, [2.0, 0.0], [0.0, 10.0, 20.0], method="adams", max_steps=20)
    sol = nf.solve(vdp, [2.0, 0.0], [0.0, 1.0, 20.0], method="adams", max_steps=40, throw=False)
    assert sol.status == MaxStepsError.status and not sol.success
    assert np.isfinite(sol.ys[1]).all() and np.isnan(sol.ys[2]).all()


def test_adams_blow_up_is_reported():
    """y' = y^2, y(0) = 1 blows up at t = 1."""
    with pytest.raises((StepSizeUnderflowError, NonFiniteError), match=r"t = (0\.99|1\.0)"):
        nf.odeint(lambda t, y: y * y, np.array([1.0]), [0.0, 2.0], method="adams")


def test_adams_nonfinite_start_and_bad_shape():
    with pytest.raises(NonFiniteError, match="initial state"):
        nf.odeint(linear, np.array([np.nan, 1.0]), [0.0, 1.0], method="adams")
    with pytest.raises(SolverArgumentError, match="shape"):
        nf.odeint(lambda t, y: y[:1], Y0, [0.0, 1.0], method="adams")


# ----------------------------------------------------------------------------- gradients

def _mlp_grads(adjoint, rng_seed, rtol):
    rng = np.random.default_rng(rng_seed)
    W1, b1, W2 = rng.standard_normal((8, 2)), rng.standard_normal(8), rng.standard_normal((2, 8))
    y0 = rng.standard_normal((4, 2))
    ps = [nf.Tensor(p, requires_grad=True) for p in (W1, b1, W2 * 0.5)]
    y0t = nf.Tensor(y0, requires_grad=True)
    tt = nf.Tensor(np.array([0.0, 0.3, 0.8, 1.2]), requires_grad=True)
    ys = nf.odeint(lambda t, y: nf.tanh(y @ ps[0].T + ps[1]) @ ps[2].T, y0t, tt, params=ps,
                   adjoint=adjoint, method="adams", rtol=rtol, atol=rtol * 1e-2)
    c = np.cos(np.arange(ys.size)).reshape(ys.shape)
    (ys * c).sum().backward()
    return [y0t.grad.data, tt.grad.data] + [p.grad.data for p in ps]


def test_adams_continuous_adjoint_matches_backprop():
    """rtol 1e-9: the two gradients agree to 100 x rtol relative (measured: ~20 x rtol)."""
    rtol = 1e-9
    for a, b in zip(_mlp_grads("continuous", 0, rtol), _mlp_grads("backprop", 0, rtol)):
        assert np.abs(a - b).max() <= 100 * rtol * np.abs(b).max()


def test_adams_backprop_gradcheck(rng):
    """Backprop differentiates the Adams steps with the step sizes held; the step sizes
    themselves move with the inputs, which changes the solution by O(tol). At rtol 1e-11
    central differences agree to 1e-4 relative (at rtol 1e-6 they differ by ~2e-4)."""
    W = rng.standard_normal((2, 2))
    y0 = rng.standard_normal(2)

    def fun(y0, W):
        return nf.odeint(lambda t, y: nf.tanh(y @ W) * 1.5, y0, [0.0, 0.5, 1.0], params=[W],
                         adjoint="backprop", method="adams", rtol=1e-11, atol=1e-13)
    r = nf.gradcheck(fun, y0, W, rtol=1e-4, atol=1e-7, mode="dot", eps=1e-5)
    assert r.ok, r.text


def test_adams_continuous_adjoint_gradcheck(rng):
    W = rng.standard_normal((2, 2))
    y0 = rng.standard_normal(2)

    def fun(y0, W):
        return nf.odeint(lambda t, y: nf.tanh(y @ W) * 1.5, y0, [0.0, 0.5, 1.0], params=[W],
                         method="adams", rtol=1e-11, atol=1e-13)
    r = nf.gradcheck(fun, y0, W, rtol=1e-4, atol=1e-7, mode="dot", eps=1e-5)
    assert r.ok, r.text


def test_adams_backward_nfe_counts_the_backward_solve(rng):
    """SolveStats: forward NFE = the calls f saw in the forward solve; backward NFE = the
    calls of the augmented dynamics (one VJP each) that the backward solve made."""
    W = nf.Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    calls = [0]

    def func(t, y):
        calls[0] += 1
        return nf.tanh(y @ W)
    stats = nf.SolveStats()
    ys = nf.odeint(func, nf.Tensor(np.ones(2)), [0.0, 1.0], params=[W], stats=stats,
                   method="adams", rtol=1e-6, atol=1e-8)
    n_fwd = calls[0]
    assert n_fwd == stats.nfe_forward                      # no extra registration call
    ys.sum().backward()
    assert stats.nfe_backward == calls[0] - n_fwd > 0


# ----------------------------------------------------------------------------- Numba twin

def _numba_field():
    from test_ode_numba import quad_linear   # one njit field for every Numba test file
    return quad_linear


@pytest.mark.parametrize("case", ["linear_forward", "linear_backward", "quad_dense"])
def test_adams_numba_matches_reference(case):
    """Same evaluations, steps and orders; states equal up to the RMS norms' summation order."""
    from ode_problems import M
    f = _numba_field()
    if case == "linear_forward":
        y0, ts, args, tol = Y0, np.array([0.0, 10.0]), (M, 0.0), 1e-9
    elif case == "linear_backward":
        y0, ts, args, tol = Y0, np.array([3.0, 1.0, -7.0]), (M, 0.0), 1e-6
    else:
        y0, ts, args, tol = Y0 * 0.3, np.linspace(0.0, 4.0, 9), (M, 0.2), 1e-7
    a = nf.solve(f, y0, ts, args=args, method="adams", rtol=tol, atol=tol, trace=True,
                 engine="numba")
    b = nf.solve(f, y0, ts, args=args, method="adams", rtol=tol, atol=tol, trace=True,
                 engine="reference")
    assert a.engine == "numba" and b.engine == "reference"
    assert a.stats == b.stats
    np.testing.assert_array_equal(a.trace["order"], b.trace["order"])
    np.testing.assert_allclose(a.trace["h"], b.trace["h"], rtol=1e-12)
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-12, atol=1e-14)


def test_adams_numba_failures_match_reference():
    f = _numba_field()
    blow = (np.zeros((1, 1)), 1.0)   # y' = y^2
    for engine in ("numba", "reference"):
        with pytest.raises((StepSizeUnderflowError, NonFiniteError),
                           match=r"t = (0\.99|1\.0)"):
            nf.odeint(f, np.array([1.0]), [0.0, 2.0], args=blow, method="adams", engine=engine)
        with pytest.raises(MaxStepsError, match="`max_steps` = 7"):
            nf.odeint(f, np.array([1.0]), [0.0, 0.9], args=blow, method="adams", max_steps=7,
                      engine=engine)
    sa = nf.solve(f, np.array([1.0]), [0.0, 0.5, 2.0], args=blow, method="adams",
                  engine="numba", throw=False)
    sb = nf.solve(f, np.array([1.0]), [0.0, 0.5, 2.0], args=blow, method="adams",
                  engine="reference", throw=False)
    assert sa.status == sb.status < 0 and sa.stats == sb.stats
    np.testing.assert_allclose(sa.ys[1], 2.0, rtol=1e-5)   # y(0.5) = 1 / (1 - 0.5)


@pytest.mark.slow
def test_adams_numba_field_adjoint_matches_reference_model(rng):
    """The compiled adjoint (NumbaField) with method='adams' against the Tensor path."""
    field = nf.mlp_field(2, (8,))
    theta = field.init_theta(rng)
    y0 = rng.standard_normal(2 * 3)
    grads = []
    for func in (field, field.reference):
        th = nf.Tensor(theta.copy(), requires_grad=True)
        y0t = nf.Tensor(y0.copy(), requires_grad=True)
        fn = func if func is field else func(th)
        ys = nf.odeint(fn, y0t, [0.0, 1.0], params=th, method="adams", rtol=1e-9, atol=1e-11)
        (ys[-1] * ys[-1]).sum().backward()
        grads.append((y0t.grad.data, th.grad.data))
    for a, b in zip(*grads):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-9)
