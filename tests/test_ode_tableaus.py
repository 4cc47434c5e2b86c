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
