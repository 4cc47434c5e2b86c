"""Optimizers and learning-rate schedules."""
import numpy as np
import pytest

import nodeform as nf
from nodeform import nn, optim


def _quadratic_problem(rng, n=6):
    """Loss 0.5 p^T H p - b^T p, H with eigenvalues in [1, 4]; returns (param, loss_fn, optimum)."""
    q, _ = np.linalg.qr(rng.standard_normal((n, n)))
    h = q @ np.diag(np.linspace(1, 4, n)) @ q.T
    b = rng.standard_normal(n)
    p = nn.Parameter(rng.standard_normal(n))

    def loss():
        return 0.5 * (p * (nf.Tensor(h) @ p)).sum() - (nf.Tensor(b) * p).sum()
    return p, loss, np.linalg.solve(h, b)


def _run(opt, loss, steps):
    for _ in range(steps):
        opt.zero_grad()
        loss().backward()
        opt.step()


@pytest.mark.parametrize("make", [
    lambda ps: optim.SGD(ps, lr=0.02),
    lambda ps: optim.SGD(ps, lr=0.02, momentum=0.9),
    lambda ps: optim.SGD(ps, lr=0.02, momentum=0.9, nesterov=True),
    lambda ps: optim.RMSprop(ps, lr=0.01),
    lambda ps: optim.Adam(ps, lr=0.05)])
def test_optimizer_converges_on_quadratic(rng, make):
    p, loss, opt_p = _quadratic_problem(rng)
    start = np.linalg.norm(p.data - opt_p)
    _run(make([p]), loss, 600)
    assert np.linalg.norm(p.data - opt_p) < 1e-2 * start


def test_sgd_momentum_constant_gradient_closed_form(rng):
    # With a constant gradient g the buffer after k steps is g (1 - mu^k) / (1 - mu).
    p = nn.Parameter(np.zeros(3))
    g = rng.standard_normal(3)
    opt = optim.SGD([p], lr=0.1, momentum=0.5)
    total = np.zeros(3)
    for k in range(1, 6):
        p.grad = nf.Tensor(g)
        opt.step()
        total += g * (1 - 0.5 ** k) / (1 - 0.5)
    np.testing.assert_allclose(p.data, -0.1 * total, rtol=1e-12)


def test_sgd_weight_decay_shrinks(rng):
    p = nn.Parameter(np.ones(3))
    opt = optim.SGD([p], lr=0.1, weight_decay=0.5)
    p.grad = nf.Tensor(np.zeros(3))
    opt.step()
    np.testing.assert_allclose(p.data, 1 - 0.1 * 0.5)


def test_adam_first_step_is_lr_times_sign(rng):
    # After bias correction m/sqrt(v) = g/|g| on step 1, whatever the gradient's scale.
    p = nn.Parameter(np.zeros(4))
    g = rng.standard_normal(4) * np.array([1e-3, 1, 10, 1e3])
    p.grad = nf.Tensor(g)
    optim.Adam([p], lr=0.01).step()
    np.testing.assert_allclose(p.data, -0.01 * g / (np.abs(g) + 1e-8), rtol=1e-9)
    assert np.all(np.abs(np.abs(p.data) - 0.01) < 1e-4)


def test_optimizer_skips_parameters_without_grad(rng):
    a, b = nn.Parameter(np.ones(2)), nn.Parameter(np.ones(2))
    a.grad = nf.Tensor(np.ones(2))
    optim.Adam([a, b], lr=0.1).step()
    np.testing.assert_array_equal(b.data, 1)
    assert not np.allclose(a.data, 1)


@pytest.mark.parametrize("cls,kw", [(optim.SGD, dict(lr=0.01, momentum=0.9)),
                                    (optim.RMSprop, dict(lr=0.01)), (optim.Adam, dict(lr=0.01))])
def test_optimizer_state_dict_resume_exact(rng, cls, kw):
    p1, loss1, _ = _quadratic_problem(np.random.default_rng(3))
    o1 = cls([p1], **kw)
    _run(o1, loss1, 10)
    p2, loss2, _ = _quadratic_problem(np.random.default_rng(3))
    o2 = cls([p2], **kw)
    _run(o2, loss2, 5)
    saved_p, saved_o = p2.data.copy(), o2.state_dict()
    p3, loss3, _ = _quadratic_problem(np.random.default_rng(3))
    p3.data = saved_p
    o3 = cls([p3], **kw).load_state_dict(saved_o)
    _run(o3, loss3, 5)
    np.testing.assert_array_equal(p3.data, p1.data)
    assert o3.step_count == 10


def test_optimizer_load_state_dict_rejects_wrong_shape(rng):
    p = nn.Parameter(np.ones(3))
    with pytest.raises(ValueError, match=r"`momentum.0` has shape \(2,\) but parameter 0 has shape"):
        optim.SGD([p], lr=0.1, momentum=0.9).load_state_dict(
            {"step_count": np.array(1), "momentum.0": np.zeros(2)})
    with pytest.raises(KeyError, match="does not fit SGD"):
        optim.SGD([p], lr=0.1).load_state_dict({"step_count": np.array(1), "exp_avg.0": np.zeros(3)})


def test_optimizer_rejects_bad_arguments():
    with pytest.raises(ValueError, match="`params` is empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(TypeError, match=r"`params\[0\]`"):
        optim.SGD([nf.Tensor(np.ones(2))], lr=0.1)
    with pytest.raises(ValueError, match="`nesterov=True` needs"):
        optim.SGD([nn.Parameter(np.ones(2))], lr=0.1, nesterov=True)


def test_schedules_values():
    s = optim.StepLR(1.0, step_size=3, gamma=0.5)
    assert [s(k) for k in range(7)] == [1, 1, 1, 0.5, 0.5, 0.5, 0.25]
    pw = optim.multistep(0.1, [9, 13])
    assert [pw(k) for k in (0, 8, 9, 12, 13, 100)] == pytest.approx([0.1, 0.1, 0.01, 0.01, 0.001, 0.001])
    with pytest.raises(ValueError, match="one more entry"):
        optim.PiecewiseConstant([1, 2], [0.1])


def test_optimizer_follows_schedule(rng):
    p = nn.Parameter(np.zeros(1))
    opt = optim.SGD([p], lr=optim.PiecewiseConstant([2], [1.0, 0.1]))
    lrs = []
    for _ in range(4):
        lrs.append(opt.current_lr())
        p.grad = nf.Tensor(np.ones(1))
        opt.step()
    assert lrs == [1.0, 1.0, 0.1, 0.1]
    np.testing.assert_allclose(p.data, -2.2)
