"""Adaptive accuracy against exact and high-accuracy references; SciPy parity; batches;
backward in time; the Tensor contract of the reference engine."""
import numpy as np
import pytest
from scipy.integrate import solve_ivp

import nodeform
from nodeform.ode import integrate
from nodeform.ode.tableaus import DOPRI5
from ode_problems import Y0, harmonic, kepler, kepler_y0, linear, linear_exact, vdp

ADAPTIVE = ["bosh3", "dopri5", "tsit5"]


@pytest.mark.parametrize("method", ADAPTIVE)
def test_adaptive_error_scales_with_tolerance(method):
    ts = np.linspace(0.0, 10.0, 21)
    exact = np.array([linear_exact(t) for t in ts])
    errs = []
    for tol in (1e-4, 1e-6, 1e-8):
        ys = nodeform.odeint(linear, Y0, ts, method=method, rtol=tol, atol=tol)
        errs.append(np.abs(ys - exact).max())
    # each 100x tighter tolerance must buy a clearly smaller error, and stay near tol
    assert errs[1] < errs[0] / 10 and errs[2] < errs[1] / 10, errs
    assert errs[2] < 1e-8 * 100, errs


@pytest.mark.parametrize("controller", ["i", "pi"])
def test_harmonic_oscillator_many_outputs_free(controller):
    ts_few, ts_many = [0.0, 20.0], np.linspace(0.0, 20.0, 401)
    few = nodeform.solve(harmonic, [1.0, 0.0], ts_few, rtol=1e-8, atol=1e-10,
                         controller=controller)
    many = nodeform.solve(harmonic, [1.0, 0.0], ts_many, rtol=1e-8, atol=1e-10,
                          controller=controller)
    exact = np.stack([np.cos(ts_many), -np.sin(ts_many)], axis=1)
    assert np.abs(many.ys - exact).max() < 1e-6
    assert many.stats == few.stats  # dense output: 400 more outputs, not one more evaluation


def test_kepler_orbit_returns_after_one_period():
    e = 0.5
    y0 = kepler_y0(e)
    ys = nodeform.odeint(kepler, y0, [0.0, np.pi, 2 * np.pi], method="dopri5",
                         rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(ys[-1], y0, atol=1e-7)
    np.testing.assert_allclose(ys[1][:2], [-(1 + e), 0.0], atol=1e-7)  # aphelion at half period


@pytest.mark.parametrize("method", ADAPTIVE)
def test_van_der_pol_against_scipy_dop853(method):
    ts = np.linspace(0.0, 20.0, 41)
    ref = solve_ivp(vdp, (0, 20), [2.0, 0.0], method="DOP853", rtol=1e-12, atol=1e-12,
                    t_eval=ts).y.T
    errs = []
    for rtol in (1e-5, 1e-7):
        ys = nodeform.odeint(vdp, [2.0, 0.0], ts, method=method, rtol=rtol, atol=rtol * 1e-3)
        errs.append(np.abs(ys - ref).max())
    assert errs[1] < errs[0] / 5 and errs[1] < 1e-7 * 1e3, errs


@pytest.mark.parametrize("controller", ["i", "pi"])
def test_dopri5_evaluations_match_scipy_rk45(controller):
    for rtol, atol in ((1e-6, 1e-9), (1e-4, 1e-7)):
        sp = solve_ivp(vdp, (0, 20), [2.0, 0.0], method="RK45", rtol=rtol, atol=atol)
        sol = nodeform.solve(vdp, [2.0, 0.0], [0.0, 20.0], rtol=rtol, atol=atol,
                             controller=controller)
        assert abs(sol.stats["nfev"] - sp.nfev) <= 0.25 * sp.nfev, (sol.stats, sp.nfev)


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_backward_in_time_returns_to_start(method):
    opts = {"step_size": 0.01} if method == "rk4" else {"rtol": 1e-10, "atol": 1e-12}
    fwd = nodeform.odeint(linear, Y0, [0.0, 1.0, 3.0], method=method, **opts)
    back = nodeform.odeint(linear, fwd[-1], [3.0, 1.0, 0.0], method=method, **opts)
    np.testing.assert_allclose(back[1], linear_exact(1.0), atol=1e-8)
    np.testing.assert_allclose(back[-1], Y0, atol=1e-8)


def test_batched_y0_of_any_shape_matches_one_by_one(rng):
    y0 = rng.standard_normal((3, 4, 2))

    def f(t, y):  # the same linear field on the last axis
        return np.stack([-0.1 * y[..., 0] - y[..., 1], y[..., 0] - 0.1 * y[..., 1]], axis=-1)

    ts = [0.0, 0.5, 2.0]
    ys = nodeform.odeint(f, y0, ts, rtol=1e-10, atol=1e-12)
    assert ys.shape == (3, 3, 4, 2)
    exact = np.stack([np.einsum("ij,abj->abi", linear_exact(t, np.eye(2)), y0) for t in ts])
    np.testing.assert_allclose(ys, exact, atol=1e-8)


def test_float32_state_keeps_its_dtype():
    ys = nodeform.odeint(lambda t, y: -y, np.ones(3, dtype=np.float32), [0.0, 1.0],
                         rtol=1e-5, atol=1e-6)
    assert ys.dtype == np.float32
    np.testing.assert_allclose(ys[-1], np.exp(-1.0), rtol=1e-4)


def test_trace_records_every_attempted_step():
    sol = nodeform.solve(vdp, [2.0, 0.0], [0.0, 20.0], rtol=1e-6, atol=1e-9, trace=True,
                         first_step=1.0)  # a too-large first step forces rejections
    tr = sol.trace
    assert len(tr["t"]) == sol.stats["n_steps"]
    assert tr["accepted"].sum() == sol.stats["n_accepted"]
    assert sol.stats["n_rejected"] >= 1
    assert np.all(tr["error_ratio"][tr["accepted"]] <= 1.0)
    assert np.all(tr["error_ratio"][~tr["accepted"]] > 1.0)
    np.testing.assert_allclose(np.sum(tr["h"][tr["accepted"]]), 20.0, rtol=1e-12)


# ----------------------------------------------------------------------------- Tensor contract

class StrictTensor:
    """A stand-in Tensor that allows only what the engine contract promises: + - * / with
    Python floats or StrictTensors, and ``.data`` for raw(). Anything else fails loudly."""

    _is_tensor = True
    __array_ufunc__ = None  # numpy must not swallow it into an object array
    ops = []

    def __init__(self, data):
        self.data = np.asarray(data)

    @staticmethod
    def _val(other, op):
        if isinstance(other, StrictTensor):
            return other.data
        assert type(other) is float, f"engine used {op} with {type(other).__name__}"
        return other

    def __add__(self, o):
        StrictTensor.ops.append("+")
        return StrictTensor(self.data + self._val(o, "+"))

    def __sub__(self, o):
        StrictTensor.ops.append("-")
        return StrictTensor(self.data - self._val(o, "-"))

    def __mul__(self, o):
        StrictTensor.ops.append("*")
        return StrictTensor(self.data * self._val(o, "*"))

    def __truediv__(self, o):
        StrictTensor.ops.append("/")
        return StrictTensor(self.data / self._val(o, "/"))

    __radd__ = __add__
    __rmul__ = __mul__


def strict_linear(t, y):
    assert isinstance(t, float) and isinstance(y, StrictTensor)
    return StrictTensor(y.data @ np.array([[-0.1, 1.0], [-1.0, -0.1]]))  # rows: (M y)^T


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_reference_engine_runs_on_tensors(method):
    y0 = np.array([[1.0, 0.5], [0.2, -0.3]])  # a batch of two states
    ts = [0.0, 0.7, 2.0]
    step = 0.01 if method == "rk4" else None
    ys, stats, _ = integrate(strict_linear, ts, StrictTensor(y0), nodeform.ode.get_tableau(method),
                             rtol=1e-9, atol=1e-12, step_size=step)
    assert all(isinstance(y, StrictTensor) for y in ys)
    exact = [np.stack([linear_exact(t, row) for row in y0]) for t in ts]
    for y, e in zip(ys, exact):
        np.testing.assert_allclose(y.data, e, atol=1e-7)
    assert set(StrictTensor.ops) <= {"+", "-", "*", "/"}
    sol = nodeform.solve(strict_linear, StrictTensor(y0), ts[::-1], rtol=1e-9, atol=1e-12)
    assert isinstance(sol.ys, list) and len(sol.ys) == 3  # backwards, Tensors stay a list


def test_reference_engine_with_nodeform_tensor_if_available():
    ad = pytest.importorskip("nodeform.autodiff")
    Tensor = getattr(ad, "Tensor", None)
    if Tensor is None:
        pytest.skip("nodeform.autodiff.Tensor not there yet")
    W = Tensor(np.array([[-0.1, 1.0], [-1.0, -0.1]]))

    def f(t, y):
        return y @ W

    y0 = Tensor(np.array([[1.0, 0.5]]))
    ys, _, _ = integrate(f, [0.0, 1.0], y0, DOPRI5, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ys[-1].data[0], linear_exact(1.0, np.array([1.0, 0.5])), atol=1e-7)
