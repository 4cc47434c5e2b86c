"""Every failure raises a SolverError whose message says what, where and what to try."""
import numpy as np
import pytest

import nodeform
from nodeform import (MaxStepsError, NonFiniteError, SolverArgumentError, SolverError,
                      StepSizeUnderflowError, VectorFieldError)
from ode_problems import Y0, linear, vdp


def blowup(t, y):
    return y * y  # y(t) = 1 / (1 - t) from y(0) = 1: singular at t = 1


def test_times_not_monotone():
    with pytest.raises(SolverArgumentError, match=r"`t` must be strictly monotone.*t\[1\] = 1\.0 "
                       r"and t\[2\] = 1\.0.*np\.unique"):
        nodeform.odeint(linear, Y0, [0.0, 1.0, 1.0, 2.0])
    with pytest.raises(ValueError, match="strictly monotone"):  # also a ValueError
        nodeform.odeint(linear, Y0, [0.0, 2.0, 1.0])


@pytest.mark.parametrize("name,value", [("rtol", 0.0), ("rtol", -1e-6), ("atol", -1.0)])
def test_tolerances_not_positive(name, value):
    with pytest.raises(SolverArgumentError, match=rf"`{name}` = {value!r} must be"):
        nodeform.odeint(linear, Y0, [0.0, 1.0], **{name: value})


def test_f_returns_wrong_shape():
    with pytest.raises(VectorFieldError, match=r"returned shape \(3,\) but `y` has shape \(2,\)"):
        nodeform.odeint(lambda t, y: np.zeros(3), Y0, [0.0, 1.0])


def test_f_returns_wrong_dtype():
    with pytest.raises(VectorFieldError, match=r"returned dtype float32 but `y` has dtype "
                       r"float64.*astype"):
        nodeform.odeint(lambda t, y: y.astype(np.float32), Y0, [0.0, 1.0])


def test_f_returns_a_list():
    with pytest.raises(VectorFieldError, match=r"returned a list, not an array"):
        nodeform.odeint(lambda t, y: [y[1], -y[0]], Y0, [0.0, 1.0])


def test_nonfinite_initial_derivative():
    with pytest.raises(NonFiniteError, match=r"derivative f\(t0, y0\) at t = 0, step 0"):
        nodeform.odeint(lambda t, y: y / 0.0, Y0, [0.0, 1.0])
    with pytest.raises(NonFiniteError, match=r"initial state y0"):
        nodeform.odeint(linear, np.array([np.nan, 1.0]), [0.0, 1.0])


def test_nonfinite_state_fixed_step_names_stage_and_time():
    with pytest.raises(NonFiniteError, match=r"state in stage \d at t = [\d.]+, step \d+.*"
                       r"smaller `step_size`") as info:
        nodeform.odeint(blowup, np.array([1.0]), [0.0, 2.0], method="rk4", step_size=0.1)
    assert 0.5 < info.value.t < 1.5 and info.value.step > 0  # near the singularity at t = 1


def test_step_size_underflow_hints_at_stiffness_or_singularity():
    with pytest.raises(StepSizeUnderflowError, match=r"step size underflow at t = [\d.]+, step "
                       r"\d+.*singularity.*stiff") as info:
        nodeform.odeint(blowup, np.array([1.0]), [0.0, 2.0], rtol=1e-6, atol=1e-9)
    assert abs(info.value.t - 1.0) < 1e-3


def test_max_steps_reached_says_where_and_what_to_try():
    with pytest.raises(MaxStepsError, match=r"`max_steps` = 20 steps and stopped at t = "
                       r"[\d.]+ of t_end = 20.*raise `max_steps`"):
        nodeform.odeint(vdp, [2.0, 0.0], [0.0, 20.0], rtol=1e-8, max_steps=20)


def test_throw_false_returns_partial_solution():
    sol = nodeform.solve(vdp, [2.0, 0.0], [0.0, 1.0, 20.0], rtol=1e-8, max_steps=50, throw=False)
    assert not sol.success and sol.status == MaxStepsError.status
    assert "max_steps" in sol.message and sol.stats["n_steps"] == 50
    assert np.all(np.isfinite(sol.ys[:2])) and np.all(np.isnan(sol.ys[2]))


def test_unknown_option_and_method_are_named():
    with pytest.raises(SolverArgumentError, match=r"unknown option\(s\) \['max_stpes'\]"):
        nodeform.odeint(linear, Y0, [0.0, 1.0], max_stpes=10)
    with pytest.raises(SolverArgumentError, match=r"`method` = 'rk45' is not a known method"):
        nodeform.odeint(linear, Y0, [0.0, 1.0], method="rk45")


def test_all_errors_share_the_base_class():
    for exc in (MaxStepsError, NonFiniteError, StepSizeUnderflowError, VectorFieldError,
                SolverArgumentError):
        assert issubclass(exc, SolverError)
