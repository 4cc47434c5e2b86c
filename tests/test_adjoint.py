"""Gradients through a solve: continuous adjoint vs backprop vs finite differences.

Tolerances: the continuous adjoint differentiates the exact flow to the solver's
tolerance, backprop differentiates the numerical solution exactly; they differ by
O(rtol). Each test states the tolerance it asserts next to the solve's rtol.
"""
import tracemalloc

import numpy as np
import pytest
from scipy.linalg import expm

import nodeform as nf
from nodeform.nn import Linear, Module


def _grads(func_maker, y0, t, params, adjoint, **kw):
    """Gradients of L = sum(c * ys) w.r.t. y0, params, t for one adjoint method."""
    y0t = nf.Tensor(y0, requires_grad=True)
    tt = nf.Tensor(t, requires_grad=True)
    ps = [nf.Tensor(p, requires_grad=True) for p in params]
    ys = nf.odeint(func_maker(*ps), y0t, tt, params=ps, adjoint=adjoint, **kw)
    c = np.cos(np.arange(ys.size)).reshape(ys.shape)
    (ys * c).sum().backward()
    return [y0t.grad.data, tt.grad.data] + [p.grad.data for p in ps]


def linear(A):
    return lambda t, y: y @ A.T


def mlp_tanh(W1, b1, W2):
    return lambda t, y: nf.tanh(y @ W1.T + b1) @ W2.T


def time_dependent(W):
    return lambda t, y: nf.tanh(y @ W.T) * nf.cos(t * 2.0) + nf.sin(t)


FIELDS = {
    "linear": (linear, lambda r: [r.standard_normal((3, 3)) * 0.5], (3,)),
    "mlp_tanh_batched": (mlp_tanh, lambda r: [r.standard_normal((8, 2)), r.standard_normal(8),
                                              r.standard_normal((2, 8)) * 0.5], (4, 2)),
    "time_dependent": (time_dependent, lambda r: [r.standard_normal((2, 2))], (3, 2)),
}
TIMES = {"forward_3obs": np.array([0.0, 0.3, 0.8, 1.2]),
         "backward_2obs": np.array([1.0, 0.4, -0.5])}


@pytest.mark.parametrize("rtol", [1e-6, 1e-9])
@pytest.mark.parametrize("tname", TIMES)
@pytest.mark.parametrize("fname", FIELDS)
def test_continuous_adjoint_matches_backprop(fname, tname, rtol, rng):
    """Adjoint and backprop agree to 100 x rtol, relative to the largest gradient entry.

    (atol = rtol / 100. Measured worst gaps over these cases: 0.6, 15 and 2 x rtol at
    rtol 1e-5, 1e-7, 1e-9.)
    """
    maker, sample, shape = FIELDS[fname]
    params = sample(rng)
    y0 = rng.standard_normal(shape)
    t = TIMES[tname]
    kw = dict(rtol=rtol, atol=rtol * 1e-2)
    g_adj = _grads(maker, y0, t, params, "continuous", **kw)
    g_bp = _grads(maker, y0, t, params, "backprop", **kw)
    for name, a, b in zip(["y0", "t"] + [f"param{k}" for k in range(len(params))], g_adj, g_bp):
        scale = np.abs(b).max() + 1e-12
        assert np.abs(a - b).max() <= 100 * rtol * scale, (name, np.abs(a - b).max() / scale)


@pytest.mark.parametrize("fname", FIELDS)
def test_backprop_matches_finite_differences_exactly(fname, rng):
    """Backprop through a fixed RK4 grid is exact for the discrete scheme: FD to 1e-6."""
    maker, sample, shape = FIELDS[fname]
    params = sample(rng)
    y0 = rng.standard_normal(shape)

    def fun(y0, *ps):
        return nf.odeint(maker(*ps), y0, [0.0, 0.5, 1.0], params=list(ps), adjoint="backprop",
                         method="rk4", step_size=0.05)
    r = nf.gradcheck(fun, y0, *params, rtol=1e-6, mode="dot")
    assert r.ok, r.text


@pytest.mark.parametrize("fname", FIELDS)
def test_continuous_adjoint_matches_finite_differences(fname, rng):
    """rtol 1e-11 adaptive solves: the adjoint matches central differences to 1e-4 relative."""
    maker, sample, shape = FIELDS[fname]
    params = sample(rng)
    y0 = rng.standard_normal(shape)

    def fun(y0, t, *ps):
        return nf.odeint(maker(*ps), y0, t, params=list(ps), rtol=1e-11, atol=1e-13)
    r = nf.gradcheck(fun, y0, np.array([0.0, 0.6, 1.0]), *params, rtol=1e-4, atol=1e-7,
                     mode="dot", eps=1e-5)
    assert r.ok, r.text


def test_linear_adjoint_matches_matrix_exponential(rng):
    """L = c . z(T) for z' = A z: dL/dz0 = expm(A^T T) c, dL/dT = c . A z(T) (to 1e-8)."""
    A = rng.standard_normal((3, 3)) * 0.5
    y0, c, T = rng.standard_normal(3), rng.standard_normal(3), 1.3
    y0t = nf.Tensor(y0, requires_grad=True)
    tt = nf.Tensor(np.array([0.0, T]), requires_grad=True)
    ys = nf.odeint(linear(A), y0t, tt, rtol=1e-11, atol=1e-13)
    (ys[-1] * c).sum().backward()
    zT = expm(A * T) @ y0
    np.testing.assert_allclose(y0t.grad.data, expm(A.T * T) @ c, rtol=1e-8)
    np.testing.assert_allclose(tt.grad.data[1], c @ (A @ zT), rtol=1e-8)
    np.testing.assert_allclose(tt.grad.data[0], -c @ (expm(A * T) @ (A @ y0)), rtol=1e-8)


def test_time_gradient_identity_of_the_start_time(rng):
    """dL/dt0 = -(dL/dz0 - g0) . f(z0, t0): Algorithm 2's a_t against the flow identity."""
    W = rng.standard_normal((2, 2))
    func = time_dependent(nf.Tensor(W))
    y0t = nf.Tensor(rng.standard_normal((3, 2)), requires_grad=True)
    tt = nf.Tensor(np.array([0.2, 0.7, 1.1]), requires_grad=True)
    ys = nf.odeint(func, y0t, tt, rtol=1e-10, atol=1e-12)
    (ys[1:] ** 2.0).sum().backward()                       # g0 = 0
    f0 = func(0.2, nf.Tensor(y0t.data)).data
    np.testing.assert_allclose(tt.grad.data[0], -(y0t.grad.data * f0).sum(), rtol=1e-7)


def test_unregistered_parameter_raises_with_its_name(rng):
    W = nf.Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    b = nf.Tensor(rng.standard_normal(2), requires_grad=True)
    func = lambda t, y: nf.tanh(y @ W) + b  # noqa: E731
    y0 = nf.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(ValueError, match=r"`b` that requires grad but is not among its parameters"):
        nf.odeint(func, y0, [0.0, 1.0], params=[W])
    ys = nf.odeint(func, y0, [0.0, 1.0], params=[W, b])     # registered: fine
    ys.sum().backward()
    assert b.grad is not None and np.abs(b.grad.data).sum() > 0


class _Field(Module):
    def __init__(self, rng):
        super().__init__()
        self.l1 = Linear(2, 16, rng=rng)
        self.l2 = Linear(16, 2, rng=rng)

    def forward(self, t, y):
        return self.l2(nf.tanh(self.l1(y)))


def test_module_parameters_are_found(rng):
    field = _Field(rng)
    y0 = nf.Tensor(rng.standard_normal((5, 2)))
    ys = nf.odeint(field, y0, [0.0, 0.5], rtol=1e-8, atol=1e-10)
    (ys ** 2.0).sum().backward()
    ref = nf.odeint(field, y0, [0.0, 0.5], rtol=1e-8, atol=1e-10, adjoint="backprop")
    grads = [p.grad.data.copy() for p in field.parameters()]
    field.zero_grad()
    (ref ** 2.0).sum().backward()
    for g, p in zip(grads, field.parameters()):
        np.testing.assert_allclose(g, p.grad.data, rtol=1e-5, atol=1e-8)


def test_stats_count_forward_and_backward_evaluations(rng):
    W = nf.Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    calls = [0]

    def func(t, y):
        calls[0] += 1
        return nf.tanh(y @ W)
    stats = nf.SolveStats()
    ys = nf.odeint(func, nf.Tensor(np.ones(2)), [0.0, 1.0], params=[W], stats=stats)
    n_fwd = calls[0]
    assert stats.nfe_forward > 0 and stats.nfe_backward == 0
    assert n_fwd == stats.nfe_forward                      # parameters found during the solve
    ys.sum().backward()
    assert stats.nfe_backward == calls[0] - n_fwd > 0


def test_second_order_through_continuous_adjoint_is_refused(rng):
    W = nf.Tensor(rng.standard_normal((2, 2)), requires_grad=True)
    ys = nf.odeint(lambda t, y: nf.tanh(y @ W), nf.Tensor(np.ones(2)), [0.0, 1.0], params=[W])
    with pytest.raises(NotImplementedError, match="adjoint='backprop'"):
        ys.sum().backward(create_graph=True)


def test_bad_adjoint_name(rng):
    with pytest.raises(ValueError, match="`adjoint` must be one of"):
        nf.odeint(lambda t, y: y, nf.Tensor(np.ones(2)), [0.0, 1.0], adjoint="discrete")


def test_array_call_still_returns_array():
    ys = nf.odeint(lambda t, y: -y, np.ones(2), [0.0, 1.0], rtol=1e-10, atol=1e-12)
    assert isinstance(ys, np.ndarray)
    np.testing.assert_allclose(ys[-1], np.exp(-1.0), rtol=1e-9)


def _peak_memory(adjoint, t1, rng):
    W1 = nf.Tensor(rng.standard_normal((32, 2)), requires_grad=True)
    W2 = nf.Tensor(rng.standard_normal((2, 32)) * 0.3, requires_grad=True)
    y0 = nf.Tensor(rng.standard_normal((64, 2)))
    tracemalloc.start()
    ys = nf.odeint(lambda t, y: nf.tanh(y @ W1.T) @ W2.T, y0, [0.0, t1], params=[W1, W2],
                   adjoint=adjoint, method="rk4", step_size=0.05)
    (ys[-1] ** 2.0).sum().backward()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak


def test_adjoint_memory_is_flat_while_backprop_grows(rng):
    """16x more steps: the adjoint's peak memory stays within 1.5x, backprop's grows > 8x."""
    adj = [_peak_memory("continuous", t1, rng) for t1 in (0.5, 8.0)]
    bp = [_peak_memory("backprop", t1, rng) for t1 in (0.5, 8.0)]
    assert adj[1] / adj[0] < 1.5, adj
    assert bp[1] / bp[0] > 8.0, bp
