"""The Numba fast path: hand-derived MLP VJPs and compiled adjoint solves vs the autodiff path.

One MLP architecture per activation is compiled (the architecture travels as data,
so a single compilation serves them all and is cached on disk).
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.adjoint.numba_field import mlp_f, mlp_vjp


@pytest.mark.parametrize("activation", ["tanh", "softplus", "elu"])
@pytest.mark.parametrize("time_input", [False, True])
def test_mlp_vjp_matches_autodiff(activation, time_input, rng):
    """Hand-written VJPs equal reverse mode through the reference Tensor model (1e-12)."""
    field = nf.mlp_field(3, (7, 5), activation, time_input)
    theta = field.init_theta(rng)
    y, a, t = rng.standard_normal(4 * 3), rng.standard_normal(4 * 3), 0.37
    dy, g_y, g_theta, g_t = mlp_vjp(t, y, theta, a, *field.args)
    np.testing.assert_allclose(dy, mlp_f(t, y, theta, *field.args), rtol=1e-14)
    th = nf.Tensor(theta, requires_grad=True)
    yt = nf.Tensor(y.reshape(4, 3), requires_grad=True)
    tt = nf.Tensor(np.array(t), requires_grad=True)
    out = field.reference(th)(tt, yt)
    np.testing.assert_allclose(out.data.ravel(), dy, rtol=1e-12)
    out.backward(a.reshape(4, 3))
    np.testing.assert_allclose(g_y, yt.grad.data.ravel(), rtol=1e-10, atol=1e-13)
    np.testing.assert_allclose(g_theta, th.grad.data, rtol=1e-10, atol=1e-13)
    assert g_t == pytest.approx(tt.grad.item() if time_input else 0.0, rel=1e-10, abs=1e-13)


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
