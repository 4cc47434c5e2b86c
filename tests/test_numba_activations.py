"""The vectorizing softplus and ELU of the compiled MLP field agree with NumPy to a few ulps."""
import numpy as np

from nodeform.adjoint.numba_field import (_EXP_FLOOR, _act_grad_mul, _elu_inplace,
                                          _softplus_inplace)

SPECIAL = np.array([0.0, -0.0, 1e-300, -1e-300, 1e-10, -1e-10, 0.3465, -0.3466, 1.0, -1.0,
                    30.0, -30.0, 37.0, -37.0, 700.0, -700.0, -707.9, 800.0])


def _x(rng):
    return np.concatenate([rng.standard_normal(20000) * 5, np.linspace(-60, 60, 20001), SPECIAL])


def _ulps(got, want):
    return np.max(np.abs(got - want) / np.spacing(np.maximum(np.abs(want), np.finfo(float).tiny)))


def test_softplus_matches_logaddexp_to_a_few_ulps(rng):
    x = _x(rng)
    y = x.copy()
    _softplus_inplace(y, y.size)
    assert _ulps(y, np.logaddexp(0.0, x)) <= 4
    low = np.array([-708.5, -745.0, -1e4])          # true value subnormal or 0: returned as 0
    z = low.copy()
    _softplus_inplace(z, z.size)
    np.testing.assert_allclose(z, np.logaddexp(0.0, low), rtol=0, atol=3.3e-308)


def test_elu_matches_expm1_to_a_few_ulps(rng):
    x = np.concatenate([_x(rng), [-708.5, -1e4]])
    y = x.copy()
    _elu_inplace(y, y.size)
    assert _ulps(y, np.where(x > 0, x, np.expm1(np.minimum(x, 0.0)))) <= 4
    assert _EXP_FLOOR == -708.0


def test_activation_gradients_from_the_outputs(rng):
    pre = _x(rng)
    for kind, act, dact in ((1, lambda v: np.logaddexp(0.0, v), lambda v: 0.5 * (1 + np.tanh(v / 2))),
                            (2, lambda v: np.where(v > 0, v, np.expm1(np.minimum(v, 0.0))),
                             lambda v: np.where(v > 0, 1.0, np.exp(np.minimum(v, 0.0))))):
        g = np.ones_like(pre)
        _act_grad_mul(g, act(pre), pre.size, kind)
        # from the outputs the derivative is exact to about 1e-16 absolute (h + 1 for an ELU
        # output near -1 keeps one ulp of 1): within 1e-12 relative or 2e-16 absolute
        np.testing.assert_allclose(g, dact(pre), rtol=1e-12, atol=2e-16)
