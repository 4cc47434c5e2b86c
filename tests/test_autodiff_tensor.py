"""Tensor behaviour: accumulation, graph freeing, no_grad, the functional API, errors."""
import numpy as np
import pytest
from hypothesis import given, settings, strategies as st
from hypothesis.extra import numpy as hnp

import nodeform as nf
from tests.conftest import BACKENDS


def test_grad_accumulates_over_two_backward_calls(rng):
    x = nf.Tensor(rng.standard_normal(3), requires_grad=True)
    (x * x).sum().backward()
    (3.0 * x).sum().backward()
    np.testing.assert_allclose(x.grad.data, 2 * x.data + 3)


def test_shared_subexpression_sums_cotangents():
    x = nf.Tensor(np.array(1.5), requires_grad=True)
    y = nf.tanh(x)
    z = y * y + y            # dz/dx = (2y + 1)(1 - y^2)
    z.backward()
    t = np.tanh(1.5)
    assert x.grad.item() == pytest.approx((2 * t + 1) * (1 - t * t), rel=1e-14)


def test_deep_graph_does_not_hit_recursion_limit():
    x = nf.Tensor(np.array([1.0]), requires_grad=True)
    y = x
    for _ in range(20000):
        y = y * 1.0001
    y.sum().backward()
    assert x.grad.item() == pytest.approx(1.0001 ** 20000, rel=1e-10)


def test_backward_twice_through_freed_graph_raises():
    x = nf.Tensor(np.ones(2), requires_grad=True)
    y = (nf.exp(x) * 2.0).sum()
    y.backward()
    with pytest.raises(RuntimeError, match="second time.*retain_graph=True"):
        y.backward()


def test_retain_graph_allows_second_pass():
    x = nf.Tensor(np.ones(2), requires_grad=True)
    y = (nf.exp(x) * 2.0).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.data, 4 * np.e)


def test_nonscalar_backward_needs_seed():
    x = nf.Tensor(np.ones((2, 3)), requires_grad=True)
    with pytest.raises(ValueError, match=r"shape \(2, 3\) needs a seed"):
        (x * 2.0).backward()
    (x * 2.0).backward(np.full((2, 3), 0.5))
    np.testing.assert_allclose(x.grad.data, 1.0)


def test_seed_of_wrong_shape_is_rejected():
    x = nf.Tensor(np.ones(3), requires_grad=True)
    with pytest.raises(ValueError, match=r"seed `grad` has shape \(2,\)"):
        (x * 2.0).backward(np.ones(2))


def test_integer_tensor_cannot_require_grad():
    with pytest.raises(TypeError, match="only floating-point tensors can require gradients"):
        nf.Tensor(np.arange(3), requires_grad=True)


def test_python_floats_become_float64_and_float32_stays():
    assert nf.Tensor([1.0, 2.0]).dtype == np.float64
    x32 = nf.Tensor(np.ones(3, np.float32), requires_grad=True)
    y = (x32 * 2.5 + 1.0).sum()
    y.backward()
    assert y.dtype == np.float32 and x32.grad.dtype == np.float32


def test_broadcast_error_names_operation_and_shapes():
    with pytest.raises(ValueError, match=r"`\+`: shapes \(2, 3\) and \(4,\) cannot be broadcast"):
        nf.Tensor(np.ones((2, 3))) + nf.Tensor(np.ones(4))


def test_matmul_error_names_shapes():
    with pytest.raises(ValueError, match=r"`matmul`: shapes \(2, 3\) and \(4, 2\) do not align"):
        nf.Tensor(np.ones((2, 3))) @ nf.Tensor(np.ones((4, 2)))


def test_reshape_error():
    with pytest.raises(ValueError, match=r"cannot reshape a tensor of shape \(2, 3\)"):
        nf.Tensor(np.ones((2, 3))).reshape(4, 2)


def test_axis_out_of_range():
    with pytest.raises(ValueError, match="axis 2 is out of range"):
        nf.Tensor(np.ones((2, 3))).sum(axis=2)


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        (nf.Tensor(np.ones(2)) * 2.0).sum().backward()


def test_no_grad_records_nothing():
    x = nf.Tensor(np.ones(2), requires_grad=True)
    with nf.no_grad():
        y = x * 2.0
    assert not y.requires_grad and y.is_leaf


def test_detach_cuts_the_graph():
    x = nf.Tensor(np.array([2.0]), requires_grad=True)
    y = x * x.detach()          # gradient only through the first factor
    y.sum().backward()
    assert x.grad.item() == 2.0


def test_numpy_array_on_the_left_defers_to_tensor(rng):
    a = rng.standard_normal(3)
    x = nf.Tensor(rng.standard_normal(3), requires_grad=True)
    y = a * x + a
    assert isinstance(y, nf.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, a)


def test_grad_value_and_grad_vjp(rng):
    W = rng.standard_normal((2, 3))
    x = rng.standard_normal(3)
    f = lambda W, x: nf.tanh(W @ x).sum()  # noqa: E731
    value, (gW, gx) = nf.value_and_grad(f, argnums=(0, 1))(W, x)
    s = 1 - np.tanh(W @ x) ** 2
    assert value == pytest.approx(np.tanh(W @ x).sum())
    np.testing.assert_allclose(gW, np.outer(s, x))
    np.testing.assert_allclose(nf.grad(f, argnums=1)(W, x), W.T @ s)
    out, vjp_fn = nf.vjp(lambda W, x: nf.tanh(W @ x), W, x)
    v = rng.standard_normal(2)
    gW2, gx2 = vjp_fn(v)
    np.testing.assert_allclose(gx2, W.T @ (v * s))
    gW3, _ = vjp_fn(v)          # may be called again
    np.testing.assert_allclose(gW3, gW2)


def test_grad_of_nonscalar_function_is_rejected():
    with pytest.raises(ValueError, match="one element"):
        nf.grad(lambda x: x * 2.0)(np.ones(3))


def test_gradients_does_not_touch_grad_and_zero_for_unused():
    x = nf.Tensor(np.ones(2), requires_grad=True)
    u = nf.Tensor(np.ones(2), requires_grad=True)
    gx, gu = nf.gradients((x * 3.0).sum(), [x, u])
    np.testing.assert_allclose(gx.data, 3.0)
    np.testing.assert_allclose(gu.data, 0.0)
    assert x.grad is None


def test_indexing_with_repeated_fancy_index_accumulates():
    x = nf.Tensor(np.arange(4.0), requires_grad=True)
    x[np.array([1, 1, 3])].sum().backward()
    np.testing.assert_allclose(x.grad.data, [0, 2, 0, 1])


# ------------------------------------------------------------------ gradcheck itself
def test_gradcheck_detects_a_wrong_vjp_and_names_it():
    bad = nf.defprim("test_bad_square", lambda x: x * x, lambda g, ans, x: g * x)  # should be 2 g x
    try:
        r = nf.gradcheck(lambda x: bad(x), np.array([1.0, 2.0]))
        assert not r.ok and not r
        assert "argument 0" in r.text and "analytic" in r.text and "numeric" in r.text
        r2 = nf.gradcheck(lambda x: bad(x), np.random.default_rng(0).standard_normal(400), mode="dot")
        assert not r2.ok
    finally:
        from nodeform.autodiff.primitive import PRIMITIVES
        PRIMITIVES.pop("test_bad_square")


def test_gradcheck_detects_wrong_second_order():
    # first derivative right, but the VJP is written on raw data, so its own derivative is lost
    leaky = nf.defprim("test_leaky_cube", lambda x: x ** 3,
                       lambda g, ans, x: g * nf.Tensor(3 * x.data ** 2))
    try:
        x = np.array([0.5, -1.2])
        assert nf.gradcheck(lambda t: leaky(t), x).ok
        assert not nf.gradcheck(lambda t: leaky(t), x, order=2).ok
    finally:
        from nodeform.autodiff.primitive import PRIMITIVES
        PRIMITIVES.pop("test_leaky_cube")


def _sinh_forward(x):
    return np.sinh(x)


def test_defprim_same_place_replaces_and_a_clash_is_refused():
    # re-running a notebook cell registers the same name from the same function again: the
    # new primitive replaces the old one (here with a corrected VJP), with no error
    from nodeform.autodiff.primitive import PRIMITIVES
    try:
        wrong = nf.defprim("test_sinh", _sinh_forward, lambda g, ans, x: g * x)
        right = nf.defprim("test_sinh", _sinh_forward,
                           lambda g, ans, x: g * (nf.exp(x) + nf.exp(-x)) * 0.5)
        assert PRIMITIVES["test_sinh"] is right and right is not wrong
        x = nf.Tensor(np.array([0.3, -1.1]), requires_grad=True)
        PRIMITIVES["test_sinh"](x).sum().backward()
        np.testing.assert_allclose(x.grad.data, np.cosh([0.3, -1.1]), rtol=1e-14)
        # the same name from another place (a built-in's forward is in nodeform) is refused
        with pytest.raises(ValueError, match=r"a primitive called `tanh` is already registered "
                                             r"\(from nodeform"):
            nf.defprim("tanh", _sinh_forward, lambda g, ans, x: g)
        assert PRIMITIVES["tanh"].forward.__module__.startswith("nodeform")
    finally:
        PRIMITIVES.pop("test_sinh", None)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=0.0), "`eps` must be a positive number"),
    (dict(mode="fast"), "`mode` must be"),
    (dict(order=3), "`order` must be 1 or 2"),
    (dict(wrt=[5]), "`wrt` entry 5 is out of range"),
])
def test_gradcheck_rejects_bad_arguments(kwargs, match):
    with pytest.raises((ValueError, TypeError), match=match):
        nf.gradcheck(nf.tanh, np.ones(2), **kwargs)


# ------------------------------------------------------------------ properties
_shapes = hnp.array_shapes(min_dims=1, max_dims=3, min_side=1, max_side=3)


@settings(max_examples=40, deadline=None)
@given(st.data())
def test_broadcast_binary_ops_match_finite_differences(data):
    shape = data.draw(_shapes)
    bshape = data.draw(hnp.broadcastable_shapes(shape, min_dims=0, max_dims=3, max_side=3))
    op = data.draw(st.sampled_from(["add", "sub", "mul", "div"]))
    seed = data.draw(st.integers(0, 2 ** 16))
    r = np.random.default_rng(seed)
    a = r.standard_normal(shape)
    b = r.uniform(0.5, 1.5, bshape) * r.choice([-1, 1], bshape)
    f = getattr(nf, op)
    out = f(nf.Tensor(a), nf.Tensor(b))
    assert out.shape == np.broadcast_shapes(shape, bshape)
    assert nf.gradcheck(f, a, b).ok


_UNARY = ["tanh", "sigmoid", "softplus", "sin", "cos"]


@settings(max_examples=40, deadline=None)
@given(st.lists(st.sampled_from(_UNARY + ["bounded_exp", "square", "sum1", "mean0", "scale"]), min_size=1,
                max_size=6), st.integers(0, 2 ** 16))
def test_random_compositions_match_finite_differences(ops, seed):
    x = np.random.default_rng(seed).uniform(-1, 1, (3, 4))

    def f(t):
        for op in ops:
            if op == "sum1":
                t = t.sum(axis=-1, keepdims=True) * 0.5
            elif op == "mean0":
                t = t - t.mean(axis=0)
            elif op == "bounded_exp":      # exp of tanh: chains of it cannot overflow
                t = nf.exp(nf.tanh(t))
            elif op == "scale":
                t = t * 0.7 + 0.1
            else:
                t = getattr(nf, op)(t)
        return t
    assert nf.gradcheck(f, x, rtol=1e-4, atol=1e-7).ok


# ------------------------------------------------------------------ backends
@pytest.mark.parametrize("backend", BACKENDS)
def test_backend_parity(backend, rng):
    from nodeform.backend import get_backend, to_numpy
    xp = get_backend(backend)
    W, x = rng.standard_normal((3, 4)), rng.standard_normal((5, 4))

    def loss(W, x):
        return nf.logsumexp(nf.tanh(x @ W.T), axis=1).sum()
    ref_v, ref_g = nf.value_and_grad(loss)(W, x)
    v, g = nf.value_and_grad(loss)(xp.asarray(W), xp.asarray(x))
    assert type(g).__module__.split(".")[0] == backend
    assert v == pytest.approx(ref_v, rel=1e-12)
    np.testing.assert_allclose(to_numpy(g), ref_g, rtol=1e-12)


def test_gradcheck_reports_nonfinite_values():
    r = nf.gradcheck(lambda x: nf.exp(nf.exp(x)), np.array([1.0, 800.0]))
    assert not r.ok and "non-finite" in r.text
