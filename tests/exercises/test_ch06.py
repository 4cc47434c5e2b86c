"""Checks of chapter 6's code exercise (chapters/ch06_cnf.py).

Reference: the equation itself (the residual) and bisection's iteration count. Run with
``python -m nodeform classroom check ex6_5``.
"""
import math

import numpy as np
import pytest

#: Right-hand sides c = w . y of the test: the range a trained planar NF sees.
C = np.linspace(-4.0, 4.0, 201)


@pytest.mark.ex6_5
@pytest.mark.parametrize("s, b, most", [(0.5, 0.3, 8), (5.0, -2.0, 14), (50.0, 0.3, 16),
                                        (-0.999, 0.3, 25)])
def test_ex6_5_newton_solves_to_1e_12_in_few_iterations(ch06, s, b, most):
    a, its = ch06.invert_planar_newton(C.copy(), s, b, tol=1e-12)
    a = np.asarray(a, dtype=float)
    assert a.shape == C.shape, f"expected one root per entry of c, shape {C.shape}; got {a.shape}"
    resid = np.abs(a + s * np.tanh(a + b) - C).max()
    assert resid <= 1e-12, (
        f"s = {s}, b = {b}: max |a + s tanh(a + b) - c| = {resid:.1e}, expected <= 1e-12. "
        "Hint: stop only when every residual is below tol; keep converged entries fixed")
    bisection = math.ceil(math.log2(2 * abs(s) / 1e-13))
    assert its <= most, (
        f"s = {s}, b = {b}: {its} iterations, expected at most {most} (bisection alone needs "
        f"about {bisection}). Hint: take the Newton step a - g / g' with g' = 1 + s (1 - "
        "tanh(a + b)**2) when it stays in the bracket and at least halves the previous step")


@pytest.mark.ex6_5
def test_ex6_5_nothing_to_do_for_a_flat_layer(ch06):
    a, its = ch06.invert_planar_newton(C.copy(), 0.0, 0.7, tol=1e-12)
    assert its == 0 and np.array_equal(np.asarray(a, dtype=float), C), (
        f"with s = 0 the layer is the identity along w: a = c after 0 iterations; got "
        f"{its} iterations. Hint: start from a = c and test the residual before stepping")
