"""The Numba twin against the reference engine: same numbers, same failures.

One njit vector field serves every test here, so the suite compiles the loops once
(about 2-3 s): f(t, y) = A y + p y*y covers linear systems (p = 0) and a finite-time
blow-up (A = 0, p = 1).
"""
import os

import numpy as np
import pytest
from numba import njit

import nodeform
from nodeform import MaxStepsError, NonFiniteError, SolverArgumentError, StepSizeUnderflowError
from ode_problems import M, Y0, linear_exact


@njit(cache=True)
def quad_linear(t, y, A, p):
    out = np.empty_like(y)
    for i in range(y.shape[0]):
        acc = p * y[i] * y[i]
        for j in range(y.shape[0]):
            acc += A[i, j] * y[j]
        out[i] = acc
    return out


LIN = (M, 0.0)
BLOW = (np.zeros((1, 1)), 1.0)


def both(y0, t, args, **kw):
    a = nodeform.solve(quad_linear, y0, t, args=args, engine="numba", **kw)
    b = nodeform.solve(quad_linear, y0, t, args=args, engine="reference", **kw)
    assert a.engine == "numba" and b.engine == "reference"
    return a, b


@pytest.mark.parametrize("method,controller", [("dopri5", "pi"), ("dopri5", "i"),
                                               ("tsit5", "pi"), ("bosh3", "pi")])
def test_numba_matches_reference_adaptive(method, controller):
    ts = np.linspace(0.0, 10.0, 37)
    a, b = both(Y0, ts, LIN, method=method, controller=controller, rtol=1e-7, atol=1e-9,
                trace=True)
    assert a.stats == b.stats
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.trace["h"], b.trace["h"], rtol=1e-12)
    np.testing.assert_array_equal(a.trace["accepted"], b.trace["accepted"])
    assert np.abs(a.ys[-1] - linear_exact(10.0)).max() < 1e-6


@pytest.mark.parametrize("method", ["euler", "midpoint", "rk4", "dopri5"])
def test_numba_matches_reference_fixed_step(method):
    a, b = both(Y0, [0.0, 0.3, 2.0], LIN, method=method, step_size=0.05)
    assert a.stats == b.stats
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-13, atol=1e-15)


def test_numba_backward_in_time():
    a, b = both(linear_exact(2.0), [2.0, 1.0, 0.0], LIN, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(a.ys, b.ys, rtol=1e-13, atol=1e-15)
    np.testing.assert_allclose(a.ys[-1], Y0, atol=1e-8)


def test_numba_failures_match_reference():
    # the blow-up (y' = y^2, y(5) = 1, singular at t = 6) is solved over [5, 7]: there the
    # minimum step max(|t|, |t_end - t_start|) * 10 eps is 10 eps |t| under both the old and
    # the new rule (issue 8), so the two engines agree whichever rule each has
    for kw, exc in [({"max_steps": 7}, MaxStepsError), ({}, StepSizeUnderflowError)]:
        args = LIN if "max_steps" in kw else BLOW
        y0 = Y0 if "max_steps" in kw else np.array([1.0])
        ts = [0.0, 10.0] if "max_steps" in kw else [5.0, 7.0]
        msgs = []
        for engine in ("numba", "reference"):
            with pytest.raises(exc) as info:
                nodeform.odeint(quad_linear, y0, ts, args=args, engine=engine,
                                rtol=1e-8, atol=1e-10, **kw)
            msgs.append(str(info.value))
        assert msgs[0] == msgs[1]


def test_numba_nonfinite_start_and_fixed_step_blowup():
    with pytest.raises(NonFiniteError, match="initial state y0"):
        nodeform.odeint(quad_linear, np.array([np.nan, 1.0]), [0.0, 1.0], args=LIN)
    with pytest.raises(NonFiniteError, match=r"in the state in stage \d at t = "):
        nodeform.odeint(quad_linear, np.array([1.0]), [0.0, 2.0], args=BLOW, method="rk4",
                        step_size=0.1)


def test_numba_engine_is_the_default_for_njit_fields():
    if os.environ.get("NUMBA_DISABLE_JIT", "0") not in ("", "0"):
        pytest.skip("NUMBA_DISABLE_JIT=1: njit functions are plain Python")
    assert nodeform.solve(quad_linear, Y0, [0.0, 1.0], args=LIN).engine == "numba"


def test_numba_switch_off_and_forced_engine(monkeypatch):
    monkeypatch.setenv("NODEFORM_NUMBA", "0")
    sol = nodeform.solve(quad_linear, Y0, [0.0, 1.0], args=LIN)
    assert sol.engine == "reference"
    monkeypatch.setenv("NUMBA_DISABLE_JIT", "0")
    with pytest.raises(SolverArgumentError, match="NODEFORM_NUMBA=0 is set"):
        nodeform.solve(quad_linear, Y0, [0.0, 1.0], args=LIN, engine="numba")
    monkeypatch.delenv("NODEFORM_NUMBA")
    with pytest.raises(SolverArgumentError, match="not a 1-D float64 NumPy array"):
        nodeform.solve(quad_linear, np.ones((2, 2)), [0.0, 1.0], args=LIN, engine="numba")


def test_user_tableau_runs_the_generic_loop_with_the_same_numbers():
    """A copy of dopri5 goes through the array-driven loop; the built-in through the one
    with its coefficients compiled in: both must give the reference's numbers exactly."""
    from nodeform.ode import _numba_rk as nb
    from nodeform.ode.api import _numba_plan
    from nodeform.ode.tableaus import DOPRI5, ButcherTableau
    mine = ButcherTableau("dopri5", c=DOPRI5.c, A=DOPRI5.A, b=DOPRI5.b, order=5,
                          b_hat=DOPRI5.b_hat, err_order=4, P=DOPRI5.P)
    assert _numba_plan(mine, "pi")[10] is nb.solve_adaptive
    assert _numba_plan(DOPRI5, "pi")[10] is nb.solve_adaptive_dopri5
    ts = np.linspace(0.0, 10.0, 11)
    kw = dict(args=LIN, rtol=1e-7, atol=1e-9, trace=True)
    a = nodeform.solve(quad_linear, Y0, ts, method=mine, engine="numba", **kw)
    b = nodeform.solve(quad_linear, Y0, ts, method="dopri5", engine="numba", **kw)
    r = nodeform.solve(quad_linear, Y0, ts, method="dopri5", engine="reference", **kw)
    assert a.stats == b.stats == r.stats
    np.testing.assert_array_equal(a.ys, b.ys)
    np.testing.assert_array_equal(a.trace["error_ratio"], b.trace["error_ratio"])
    np.testing.assert_allclose(a.ys, r.ys, rtol=1e-13, atol=1e-15)


def test_error_norm_sums_in_numpys_pairwise_order():
    from nodeform.ode._numba_rk import _pairwise_sum
    rng = np.random.default_rng(0)
    for n in (1, 7, 8, 9, 127, 128, 129, 300, 1000, 20001):
        x = rng.standard_normal(n) ** 2 * 10.0 ** rng.uniform(-5, 5, n)
        assert _pairwise_sum(x, n) / n == np.mean(x)


@njit(cache=True)
def aliasing_field(t, y, A, buf, mode):
    """mode 0: A y written into ``buf`` (an argument, overwritten by every call) and
    ``buf`` returned; mode 1: dy/dt = y by returning the input array itself."""
    if mode == 1:
        return y
    for i in range(y.shape[0]):
        acc = 0.0
        for j in range(y.shape[0]):
            acc += A[i, j] * y[j]
        buf[i] = acc
    return buf


@pytest.mark.parametrize("method,kw", [("dopri5", {"rtol": 1e-7, "atol": 1e-9}),
                                       ("rk4", {"step_size": 0.05})])
def test_numba_fields_returning_aliased_arrays(method, kw):
    """The loops read each result of f before calling f again: a field that returns an
    argument buffer it overwrites, or its own input, gives the numbers of a fresh array."""
    ts = np.linspace(0.0, 2.0, 5)
    buf = np.empty_like(Y0)
    a = nodeform.solve(aliasing_field, Y0, ts, args=(M, buf, 0), method=method,
                       engine="numba", **kw)
    r = nodeform.solve(quad_linear, Y0, ts, args=LIN, method=method, engine="reference", **kw)
    assert a.stats == r.stats
    np.testing.assert_allclose(a.ys, r.ys, rtol=1e-13, atol=1e-15)
    eye = (np.eye(Y0.shape[0]), 0.0)
    a = nodeform.solve(aliasing_field, Y0, ts, args=(M, buf, 1), method=method,
                       engine="numba", **kw)
    r = nodeform.solve(quad_linear, Y0, ts, args=eye, method=method, engine="reference", **kw)
    assert a.stats == r.stats
    np.testing.assert_allclose(a.ys, r.ys, rtol=1e-13, atol=1e-15)
