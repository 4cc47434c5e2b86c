"""Measured convergence orders on y' = M y (exact solution by the matrix exponential)."""
import numpy as np
import pytest

import nodeform
from ode_problems import Y0, linear, linear_exact
from nodeform.ode.tableaus import METHODS

T_END = 2.0
# steps per run: enough that the error is in the asymptotic regime, few enough that it
# stays far above round-off (order 5 at 64 steps is already ~1e-11; tsit5 is still
# pre-asymptotic at 4 steps)
STEPS = {1: [32, 64, 128, 256], 2: [16, 32, 64, 128], 3: [8, 16, 32, 64],
         4: [8, 16, 32, 64], 5: [8, 16, 32, 64]}


def measured_order(method, order):
    hs, errs = [], []
    for n in STEPS[order]:
        ys = nodeform.odeint(linear, Y0, [0.0, T_END], method=method, step_size=T_END / n)
        hs.append(T_END / n)
        errs.append(np.abs(ys[-1] - linear_exact(T_END)).max())
    return np.polyfit(np.log(hs), np.log(errs), 1)[0]


@pytest.mark.parametrize("name", sorted(METHODS))
def test_fixed_step_convergence_order(name):
    order = METHODS[name].order
    slope = measured_order(name, order)
    assert abs(slope - order) < 0.3, f"{name}: measured order {slope:.2f}, expected {order}"


@pytest.mark.parametrize("name", ["bosh3", "dopri5", "tsit5"])
def test_dense_output_order(name):
    # one step of size h, interpolate at theta = 0.5: local error of the interpolant
    # is O(h^(q+1)) with q = 3 (Hermite) or 4 (dopri5/tsit5 interpolants)
    tab = METHODS[name]
    q = 3 if name == "bosh3" else 4
    hs, errs = [0.2, 0.1, 0.05, 0.025], []
    for h in hs:
        ys = nodeform.odeint(linear, Y0, [0.0, h / 2, h], method=name, first_step=h,
                             rtol=1.0, atol=1.0)
        errs.append(np.abs(ys[1] - linear_exact(h / 2)).max())
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    # one-sided: tsit5's interpolant is still super-convergent at these h (slope ~5.4)
    assert slope > q + 1 - 0.3, f"{name}: dense local order {slope:.2f}, expected >= {q + 1}"
    assert tab.P is not None
