"""Tableau identities, order conditions, and the messages of broken tableaus."""
import numpy as np
import pytest

from nodeform.ode.order_conditions import order_residuals
from nodeform.ode.tableaus import METHODS, ButcherTableau, hermite_dense_matrix

ALL = sorted(METHODS)
ADAPTIVE = [m for m in ALL if METHODS[m].adaptive]


@pytest.mark.parametrize("name", ALL)
def test_tableau_identities(name):
    tab = METHODS[name]
    np.testing.assert_allclose(tab.A.sum(axis=1), tab.c, atol=1e-14)
    assert abs(tab.b.sum() - 1) < 1e-14
    assert np.all(np.triu(tab.A) == 0)
    if tab.adaptive:
        assert abs(tab.e.sum()) < 1e-14


@pytest.mark.parametrize("name", ALL)
def test_tableau_order_conditions(name):
    tab = METHODS[name]
    for p, cond, r in order_residuals(tab.A, tab.c, tab.b, tab.order):
        assert abs(r) < 1e-13, f"{name}: order-{p} condition {cond} off by {r}"
    if tab.order < 5:  # and the method is not of higher order by accident
        res = order_residuals(tab.A, tab.c, tab.b, tab.order + 1)
        assert max(abs(r) for p, _, r in res if p == tab.order + 1) > 1e-6


@pytest.mark.parametrize("name", ADAPTIVE)
def test_embedded_order_conditions(name):
    tab = METHODS[name]
    for p, cond, r in order_residuals(tab.A, tab.c, tab.b_hat, tab.err_order):
        assert abs(r) < 1e-13, f"{name} embedded: order-{p} {cond} off by {r}"
    res = order_residuals(tab.A, tab.c, tab.b_hat, tab.err_order + 1)
    assert max(abs(r) for p, _, r in res if p == tab.err_order + 1) > 1e-6


@pytest.mark.parametrize("name", ADAPTIVE)
def test_dense_output_reaches_b_at_theta_one(name):
    tab = METHODS[name]
    assert tab.fsal
    np.testing.assert_allclose(tab.dense_weights(1.0), tab.b, atol=1e-12)
    np.testing.assert_allclose(tab.dense_weights(0.0), 0.0, atol=0)


@pytest.mark.parametrize("name", ["dopri5", "tsit5"])
def test_dense_output_order_conditions(name):
    # the interpolant b(theta) must satisfy the quadrature conditions sum b_i(theta) c_i^k
    # = theta^(k+1)/(k+1) for k = 0..3 (order 4 continuous extension)
    tab = METHODS[name]
    for theta in (0.1, 0.37, 0.8):
        w = tab.dense_weights(theta)
        for k in range(4):
            assert abs(w @ tab.c ** k - theta ** (k + 1) / (k + 1)) < 1e-12


def test_hermite_matches_scipy_rk23_interpolant():
    # SciPy's RK23 uses the same cubic Hermite interpolant; its P is the reference number
    from scipy.integrate._ivp.rk import RK23
    np.testing.assert_allclose(hermite_dense_matrix(METHODS["bosh3"].b), RK23.P, atol=1e-15)


def test_tableau_rejects_bad_row_sum():
    with pytest.raises(ValueError, match=r"row 1 of `A` sums to 0\.4 but `c\[1\]` = 0\.5"):
        ButcherTableau("bad", c=[0, 0.5], A=[[0, 0], [0.4, 0]], b=[0, 1], order=2)


def test_tableau_rejects_weights_not_summing_to_one():
    with pytest.raises(ValueError, match=r"sum\(`b`\) = 0\.9"):
        ButcherTableau("bad", c=[0, 0.5], A=[[0, 0], [0.5, 0]], b=[0, 0.9], order=2)


def test_tableau_rejects_error_weights_not_summing_to_zero():
    with pytest.raises(ValueError, match=r"sum\(`e`\)"):
        ButcherTableau("bad", c=[0, 1], A=[[0, 0], [1, 0]], b=[0.5, 0.5], order=2,
                       b_hat=[0.9, 0.0], err_order=1)


def test_tableau_rejects_implicit_entries():
    with pytest.raises(ValueError, match="strictly lower triangular"):
        ButcherTableau("bad", c=[0.5], A=[[0.5]], b=[1.0], order=1)


# ---- the claimed order is checked against the order conditions

# A 4-stage tableau that meets the four "linear" conditions b A^(k-1) 1 = 1/k! (so on
# y' = My it looks 4th order) but fails b.c^2 = 1/3: on a non-linear problem it is 2nd order.
LIN4 = dict(c=[0, 1 / 4, 1 / 2, 1],
            A=[[0, 0, 0, 0], [1 / 4, 0, 0, 0], [0, 1 / 2, 0, 0], [0, 0, 1, 0]],
            b=[0, 2 / 3, 0, 1 / 3])


def test_tableau_refuses_claimed_order_it_does_not_meet():
    with pytest.raises(ValueError, match=r"`order` = 4 but `b` fails the order-3 condition "
                                         r"b\.c\^2 = 1/3 \(b gives 0\.375"):
        ButcherTableau("lin4", order=4, **LIN4)
    # the order it really has is accepted
    assert ButcherTableau("lin4", order=2, **LIN4).order == 2


def test_tableau_refuses_embedded_order_it_does_not_meet():
    # Heun-Euler 2(1): b_hat = Euler is order 1, not 2
    with pytest.raises(ValueError, match=r"`err_order` = 2 but `b_hat` fails the order-2 "
                                         r"condition b\.c = 1/2"):
        ButcherTableau("heun_euler", c=[0, 1], A=[[0, 0], [1, 0]], b=[0.5, 0.5], order=2,
                       b_hat=[1.0, 0.0], err_order=2)


def test_tableau_refuses_one_wrong_digit_of_dopri5():
    from nodeform.ode.tableaus import DOPRI5
    b = DOPRI5.b.copy()
    b[2] += 1e-4          # a typo in the 4th decimal of 500/1113, compensated so sum(b) = 1
    b[3] -= 1e-4
    A = DOPRI5.A.copy()
    A[-1] = b
    with pytest.raises(ValueError, match=r"order-2 condition b\.c = 1/2"):
        ButcherTableau("dopri5_typo", c=DOPRI5.c, A=A, b=b, order=5)


@pytest.mark.parametrize("problem", ["linear", "van_der_pol"])
def test_linear_conditions_alone_give_order_two_on_a_nonlinear_problem(problem):
    # y' = My tests only the linear conditions: slope 4. Van der Pol sees the failed b.c^2 = 1/3:
    # slope 2. The convergence test on a linear problem alone would miss the wrong tableau.
    from scipy.linalg import expm
    from nodeform.ode.api import odeint
    tab = ButcherTableau("lin4", order=2, **LIN4)
    T, y0 = 2.0, np.array([2.0, 0.0])
    if problem == "linear":
        M = np.array([[-0.1, -1.0], [1.0, -0.1]])
        f, ref = (lambda t, y: M @ y), expm(M * T) @ y0
    else:
        def f(t, y):
            return np.array([y[1], (1.0 - y[0] ** 2) * y[1] - y[0]])
        ref = odeint(f, y0, [0.0, T], rtol=1e-13, atol=1e-13)[-1]
    hs = T / np.array([32, 64, 128, 256])
    errs = [np.abs(odeint(f, y0, [0.0, T], method=tab, step_size=h)[-1] - ref).max() for h in hs]
    slope = np.polyfit(np.log(hs), np.log(errs), 1)[0]
    assert abs(slope - (4.0 if problem == "linear" else 2.0)) < 0.15, slope
