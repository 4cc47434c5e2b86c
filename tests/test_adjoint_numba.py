"""The Numba fast path: hand-derived MLP VJPs and compiled adjoint solves vs the autodiff path.

One MLP architecture per activation is compiled (the architecture travels as data,
so a single compilation serves them all and is cached on disk).
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.adjoint.numba_field import _BLOCK, _tanh, mlp_f, mlp_vjp


def _check_vjp(field, batch, time_input, rng, scale=1.0):
    """f and the three VJPs of the compiled MLP against autodiff of `field.reference`."""
    d = field.sizes[-1]
    theta = field.init_theta(rng, scale)
    theta += 0.1 * rng.standard_normal(theta.size)          # nonzero biases
    y, a, t = rng.standard_normal(batch * d), rng.standard_normal(batch * d), 0.37
    dy, g_y, g_theta, g_t = mlp_vjp(t, y, theta, a, *field.args)
    np.testing.assert_allclose(dy, mlp_f(t, y, theta, *field.args), rtol=1e-14)
    th = nf.Tensor(theta, requires_grad=True)
    yt = nf.Tensor(y.reshape(batch, d), requires_grad=True)
    tt = nf.Tensor(np.array(t), requires_grad=True)
    out = field.reference(th)(tt, yt)
    np.testing.assert_allclose(out.data.ravel(), dy, rtol=1e-12, atol=1e-14)
    out.backward(a.reshape(batch, d))
    np.testing.assert_allclose(g_y, yt.grad.data.ravel(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_theta, th.grad.data, rtol=1e-10, atol=1e-13)
    assert g_t == pytest.approx(tt.grad.item() if time_input else 0.0, rel=1e-10, abs=1e-13)


@pytest.mark.parametrize("activation", ["tanh", "softplus", "elu"])
@pytest.mark.parametrize("time_input", [False, True])
def test_mlp_vjp_matches_autodiff(activation, time_input, rng):
    """Hand-written VJPs equal reverse mode through the reference Tensor model (1e-12)."""
    _check_vjp(nf.mlp_field(3, (7, 5), activation, time_input), 4, time_input, rng)


# The kernels take fused paths for 2 or 3 inputs (d = 2, with or without t) and for a
# 2-output last layer (with tanh' fused for tanh), a generic one otherwise, and work on
# blocks of _BLOCK batch rows: these cover each path, several layers, and batches that
# are not a multiple of the block (one row, a partial last block, several blocks).
@pytest.mark.parametrize("activation", ["tanh", "softplus", "elu"])
@pytest.mark.parametrize("time_input", [False, True])
@pytest.mark.parametrize("batch", [1, _BLOCK - 1, 2 * _BLOCK + 3])
def test_mlp_vjp_planar_paths_and_blocks(activation, time_input, batch, rng):
    """d = 2 through the fused kernels, 1 and 2 hidden layers, any batch size (1e-10)."""
    for hidden in ((16,), (8, 6)):
        field = nf.mlp_field(2, hidden, activation, time_input)
        _check_vjp(field, batch, time_input, rng, scale=2.0)


def test_mlp_vjp_wide_input(rng):
    """More than 3 inputs and more than 2 outputs: the generic layer kernels, looped
    (a side narrower than _BLAS_WIDTH) and by BLAS (the 9 -> 12 layer)."""
    _check_vjp(nf.mlp_field(5, (9, 12, 4, 7), "tanh", True), _BLOCK + 1, True, rng)


def test_tanh_is_accurate_to_a_few_ulps(rng):
    """The vectorized tanh against NumPy's: at most 4 ulps, from tiny to saturated x."""
    for scale in (1e-300, 1e-8, 1e-3, 0.3, 3.0, 30.0, 1e3):
        x = rng.standard_normal(20000) * scale
        ref = np.tanh(x)
        assert (np.abs(_tanh(x) - ref) <= 4 * np.spacing(np.abs(ref))).all()
    special = np.array([0.0, -0.0, np.inf, -np.inf, 800.0, -800.0])
    np.testing.assert_array_equal(_tanh(special), np.tanh(special))
    assert np.signbit(_tanh(np.array([-0.0])))[0]
    assert np.isnan(_tanh(np.array([np.nan])))[0]


def test_numba_adjoint_matches_reference_adjoint(rng):
    """Same algorithm, compiled: gradients agree with the reference path to 1e-9 relative."""
    field = nf.mlp_field(2, (16,), "tanh", time_input=True)
    theta0 = field.init_theta(rng)
    y0 = rng.standard_normal((8, 2))
    t = np.array([0.0, 0.5, 1.0])
    out = {}
    for name in ("numba", "reference"):
        theta = nf.Tensor(theta0, requires_grad=True)
        y0t = nf.Tensor(y0, requires_grad=True)
        tt = nf.Tensor(t, requires_grad=True)
        func = field if name == "numba" else field.reference(theta)
        stats = nf.SolveStats()
        ys = nf.odeint(func, y0t, tt, params=theta, rtol=1e-8, atol=1e-10, stats=stats)
        (ys ** 2.0).sum().backward()
        out[name] = (ys.data, y0t.grad.data, theta.grad.data, tt.grad.data, stats)
    for k in range(4):
        a, b = out["numba"][k], out["reference"][k]
        assert np.abs(a - b).max() <= 1e-9 * np.abs(b).max()
    assert out["numba"][4].nfe_forward == out["reference"][4].nfe_forward
    assert out["numba"][4].nfe_backward > 0


def test_numba_field_arguments_are_checked(rng):
    field = nf.mlp_field(2, (4,))
    theta = nf.Tensor(field.init_theta(rng), requires_grad=True)
    with pytest.raises(ValueError, match="continuous adjoint only"):
        nf.odeint(field, nf.Tensor(np.ones(2)), [0.0, 1.0], params=theta, adjoint="backprop")
    with pytest.raises(ValueError, match="one flat theta Tensor"):
        nf.odeint(field, nf.Tensor(np.ones(2)), [0.0, 1.0], params=[theta, theta * 1.0])
    with pytest.raises(ValueError, match="`activation` must be one of"):
        nf.mlp_field(2, (4,), "relu")
