"""Checks of chapter 4's code exercise (chapters/ch04_odenet_mnist.py).

Reference: the library's fixed-grid midpoint solver, ``nf.odeint(..., method="midpoint")``,
and the error's decay against an accurate solve. Run with
``python -m nodeform classroom check ex4_1``.
"""
import numpy as np
import pytest

import nodeform as nf
from exercise_helpers import close


def _field(rng):
    W1, W2 = rng.standard_normal((2, 16)), rng.standard_normal((16, 2)) * 0.5
    return lambda t, h: np.tanh(h @ W1) @ W2 * np.cos(3.0 * t)      # time-dependent on purpose


@pytest.mark.ex4_1
@pytest.mark.parametrize("L", [1, 3, 8])
def test_ex4_1_midpoint_blocks_equal_the_midpoint_rule(ch04, rng, L):
    f, h0 = _field(rng), rng.standard_normal((5, 2))
    got = ch04.resnet_midpoint(f, h0, L)
    expected = nf.odeint(f, h0, np.linspace(0.0, 1.0, L + 1), method="midpoint",
                         step_size=1.0 / L)[-1]
    close(got, expected, f"h_L after {L} two-stage blocks",
          "block k: t = k / L, h + (1/L) f(t + 1/(2L), h + 1/(2L) f(t, h)); f sees the time",
          rtol=1e-12, atol=1e-13)


@pytest.mark.ex4_1
def test_ex4_1_error_falls_like_one_over_L_squared(ch04, rng):
    f, h0 = _field(rng), rng.standard_normal((16, 2))
    z1 = nf.odeint(f, h0, [0.0, 1.0], rtol=1e-11, atol=1e-13)[-1]
    depths = np.array([8, 16, 32, 64])
    errors = [np.abs(ch04.resnet_midpoint(f, h0, int(L)) - z1).max() for L in depths]
    slope = np.polyfit(np.log(depths), np.log(errors), 1)[0]
    assert abs(slope + 2) < 0.25, (
        f"the error of L two-stage blocks should fall like 1/L**2 (slope -2), measured slope "
        f"{slope:.2f} (errors {['%.1e' % e for e in errors]}). Hint: slope -1 means an Euler "
        "step is left; check the half step 1/(2L) of the first stage")
