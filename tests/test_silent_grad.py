"""Issue 8, "Nothing silent": each test breaks nodeform the way a user did and checks
that the answer is right or the error says what happened (every one failed before).

Gradients of the continuous adjoint are checked against backprop through the solver
(they agree to O(rtol); the solves here run at rtol 1e-8, the asserts at 1e-5).
"""
import threading

import numpy as np
import pytest

import nodeform as nf
from nodeform import nn
from nodeform.ode import NonFiniteError, SolverArgumentError, VectorFieldError

RTOL, ATOL = 1e-8, 1e-10
T = [0.0, 0.5, 1.0]


def _model(rng):
    return nn.Sequential(nn.Linear(2, 8, rng=rng), nn.Tanh(), nn.Linear(8, 2, rng=rng))


def _grads_of(params, run):
    for p in params:
        p.grad = None
    (run() ** 2.0).sum().backward()
    return [None if p.grad is None else p.grad.data.copy() for p in params]


# ============================================================ item 1: parameters are found
def test_lambda_over_a_model_differentiates_its_weights(rng):
    """The most common way to fit data: no `params=`, a fixed y0. Used to lose every gradient."""
    model = _model(rng)
    y0 = nf.Tensor(rng.standard_normal((4, 2)))
    ps = model.parameters()
    run = (lambda adj: lambda: nf.odeint(lambda t, y: model(y), y0, T, rtol=RTOL, atol=ATOL,
                                         adjoint=adj))
    adjoint, backprop = _grads_of(ps, run("continuous")), _grads_of(ps, run("backprop"))
    for a, b in zip(adjoint, backprop):
        assert a is not None and np.abs(a).max() > 0
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_parameter_used_only_late_gets_its_gradient():
    """`v` enters only for t > 0.5: the check must see every evaluation, not just (t0, y0)."""
    w = nf.Tensor(np.array([0.3]), requires_grad=True)
    v = nf.Tensor(np.array([0.7]), requires_grad=True)

    def f(t, y):
        return -y * w + (y * v if float(t) > 0.5 else y * 0.0)
    y0 = nf.Tensor(np.array([1.0]))
    run = (lambda adj: lambda: nf.odeint(f, y0, [0.0, 1.0], rtol=RTOL, atol=ATOL, adjoint=adj))
    (gw, gv), (bw, bv) = _grads_of([w, v], run("continuous")), _grads_of([w, v], run("backprop"))
    assert gv is not None and abs(gv[0]) > 0.1
    np.testing.assert_allclose([gw, gv], [bw, bv], rtol=1e-5)


def test_explicit_params_missing_a_late_parameter_is_an_error_naming_it():
    w = nf.Tensor(np.array([0.3]), requires_grad=True)
    v = nf.Tensor(np.array([0.7]), requires_grad=True)

    def f(t, y):
        return -y * w + (y * v if t > 0.5 else y * 0.0)
    y0 = nf.Tensor(np.array([1.0]), requires_grad=True)
    with pytest.raises(SolverArgumentError, match=r"`v` that requires grad but is not among"):
        nf.odeint(f, y0, [0.0, 1.0], params=[w])


def test_a_module_parameter_named_in_the_error():
    model = _model(np.random.default_rng(0))
    other = nf.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(SolverArgumentError, match=r"`model\.0\.weight` that requires grad"):
        nf.odeint(lambda t, y: model(y) * other, nf.Tensor(np.ones((1, 2))), [0.0, 1.0],
                  params=[other])


def test_parameter_first_read_in_the_backward_solve_is_an_error():
    v = nf.Tensor(np.array([0.5]), requires_grad=True)
    late = [False]

    def f(t, y):
        return -y * v if late[0] else -y
    ys = nf.odeint(f, nf.Tensor(np.array([1.0]), requires_grad=True), [0.0, 1.0])
    late[0] = True
    with pytest.raises(SolverArgumentError, match=r"read `v`.*during the backward \(adjoint\) "
                       r"solve but never during the forward"):
        ys.sum().backward()


def test_array_y0_with_a_tensor_field_is_differentiable(rng):
    """A plain array y0 and a field of Tensors: a Tensor comes back, with gradients."""
    model = _model(rng)
    y0 = rng.standard_normal((3, 2))
    ys = nf.odeint(lambda t, y: model(y), y0, T, rtol=RTOL, atol=ATOL)
    assert isinstance(ys, nf.Tensor) and ys.shape == (3, 3, 2)
    got = _grads_of(model.parameters(), lambda: ys)
    want = _grads_of(model.parameters(), lambda: nf.odeint(
        lambda t, y: model(y), nf.Tensor(y0), T, rtol=RTOL, atol=ATOL, adjoint="backprop"))
    for a, b in zip(got, want):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8)


def test_computed_parameters_are_not_counted_twice():
    """`W2 = 2 W` made outside the field, both read inside: dL/dW as backprop has it."""
    W = nf.Tensor(np.array([[0.3, -0.2], [0.1, 0.4]]), requires_grad=True)

    def run(adj):
        W2 = W * 2.0
        return nf.odeint(lambda t, y: nf.tanh(y @ W) @ W2, nf.Tensor(np.ones((2, 2))), T,
                         rtol=RTOL, atol=ATOL, adjoint=adj)
    (a,), (b,) = _grads_of([W], lambda: run("continuous")), _grads_of([W], lambda: run("backprop"))
    np.testing.assert_allclose(a, b, rtol=1e-5)


# ============================================================ item 2: mlp_field theta size
@pytest.mark.parametrize("delta", [+3, -3])
def test_mlp_field_theta_of_the_wrong_length_is_refused(delta):
    field = nf.mlp_field(2, (4,))
    theta = nf.Tensor(np.zeros(field.n_params + delta), requires_grad=True)
    with pytest.raises(ValueError, match=rf"`theta` has {field.n_params + delta} entries but "
                       rf"this MLP field .* has {field.n_params} parameters"):
        nf.odeint(field, nf.Tensor(np.ones(2)), [0.0, 1.0], params=theta)
    with pytest.raises(ValueError, match=r"`theta` has"):
        field.reference(theta)(0.0, nf.Tensor(np.ones(2)))


# ============================================================ item 3: .data changed after use
def test_assigning_data_after_use_raises_in_backward():
    x = nf.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    y = (x * x).sum()
    x.data = x.data * 10.0
    with pytest.raises(RuntimeError, match=r"shape \(2,\) \(float64\), argument 0 of `mul`, had "
                       r"its `.data` assigned.*Run the forward pass again"):
        y.backward()


def test_augmented_assignment_of_data_and_of_an_output_are_caught():
    x = nf.Tensor(np.array([0.5]), requires_grad=True)
    c = nf.Tensor(np.array([3.0]))                 # a constant: its change matters too
    y = nf.exp(x) * c
    c.data *= 2.0
    with pytest.raises(RuntimeError, match=r"argument 1 of `mul`"):
        y.backward(retain_graph=True)
    x2 = nf.Tensor(np.array([0.5]), requires_grad=True)
    e = nf.exp(x2)                                 # exp's VJP reads its output
    e.data = e.data + 1.0
    with pytest.raises(RuntimeError, match=r"the output of `exp`"):
        e.backward()


def test_data_assigned_between_passes_is_fine():
    """What optimizers do: change `.data`, then a new forward pass. No false alarm."""
    x = nf.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    (x * x).sum().backward()
    x.data -= 0.25 * x.grad.data             # [0.5, 1.0]
    x.grad = None
    (x * x).sum().backward()
    np.testing.assert_array_equal(x.grad.data, [1.0, 2.0])


# ============================================================ item 4: f checked every call
def _late(bad, after=5):
    calls = [0]

    def f(t, y):
        calls[0] += 1
        return -y if calls[0] < after else bad(y)
    return f


@pytest.mark.parametrize("bad,shape", [(lambda y: -y[:1], r"\(1,\)"),
                                       (lambda y: -np.ones((2, 2)), r"\(2, 2\)")])
def test_wrong_shape_on_a_later_call_is_reported(bad, shape):
    with pytest.raises(VectorFieldError, match=rf"returned shape {shape} but `y` has "
                       r"shape \(2,\) \(at t = 0\.\d+, step \d+\)"):
        nf.solve(_late(bad), np.array([1.0, 2.0]), [0.0, 1.0])
    with pytest.raises(VectorFieldError, match=rf"returned shape {shape}"):
        nf.solve(_late(bad), np.array([1.0, 2.0]), [0.0, 1.0], method="rk4", step_size=0.1)


def test_wrong_dtype_on_a_later_call_is_reported():
    with pytest.raises(VectorFieldError, match=r"returned dtype float32 but `y` has dtype "
                       r"float64 \(at t = 0\.\d+"):
        nf.solve(_late(lambda y: (-y).astype(np.float32)), np.array([1.0, 2.0]), [0.0, 1.0])


def test_tensor_field_returning_an_array_is_reported():
    with pytest.raises(VectorFieldError, match=r"returned a ndarray .* must return a Tensor"):
        nf.odeint(lambda t, y: -y.data, nf.Tensor(np.ones(2)), [0.0, 1.0])


# ============================================================ item 11: the real cause
def test_min_step_is_not_zero_at_t_zero():
    """NaN from f right at t = 0: the loop used to 'accept' zero-length steps until max_steps."""
    def f(t, y):
        return -y if t == 0.0 else y * np.nan
    with pytest.raises(NonFiniteError, match=r"`f` returned NaN/inf \(stage \d\) for a finite "
                       r"state") as info:
        nf.solve(f, np.array([1.0]), [0.0, 1.0], engine="reference")
    assert info.value.t == 0.0 and info.value.step < 100


def test_nan_from_f_later_names_f_and_t():
    with pytest.raises(NonFiniteError, match=r"at t = 0\.\d+, step \d+: `f` returned NaN") as info:
        nf.solve(lambda t, y: y * np.nan if t > 0.2 else -y, np.array([1.0]), [0.0, 1.0])
    assert abs(info.value.t - 0.2) < 1e-9


def test_overflowing_y0_is_reported_as_overflow():
    with pytest.raises(NonFiniteError, match=r"the state overflowed float64 \(\|y\| up to "
                       r"1e\+308.*Rescale"):
        with np.errstate(all="ignore"):
            nf.solve(lambda t, y: y, np.array([1e308]), [0.0, 1.0])


def test_atol_zero_is_refused_up_front():
    with pytest.raises(SolverArgumentError, match=r"`atol` = 0 leaves no error control.*"
                       r"small positive `atol`"):
        nf.solve(lambda t, y: -y, np.array([1.0, 0.0]), [0.0, 1.0], atol=0.0)


def test_float16_is_refused():
    with pytest.raises(SolverArgumentError, match=r"float16, which has too few digits"):
        nf.solve(lambda t, y: -y, np.array([1.0], dtype=np.float16), [0.0, 1.0])
    with pytest.raises(SolverArgumentError, match=r"float16"):
        nf.odeint(lambda t, y: -y, nf.Tensor(np.ones(1, dtype=np.float16)), [0.0, 1.0])


# ============================================================ item 15: errors keep what they are
class MyError(ValueError):
    def __init__(self, code):                       # another signature than ValueError's
        super().__init__(f"code {code}")
        self.code = code


def test_user_errors_inside_odeint_keep_their_class():
    def f(t, y):
        if t > 0.3:
            raise MyError(7)
        return -y
    for y0 in (nf.Tensor(np.ones(1)), nf.Tensor(np.ones(1), requires_grad=True)):
        with pytest.raises(MyError) as info:
            nf.odeint(f, y0, [0.0, 1.0])
        assert info.value.code == 7


def test_user_errors_inside_a_primitive_keep_their_class():
    fail = nf.defprim("fail_for_test_silent_grad", lambda x: (_ for _ in ()).throw(MyError(3)),
                      lambda g, ans, x: g)
    with pytest.raises(MyError) as info:
        fail(nf.Tensor(np.ones(2)))
    assert info.value.code == 3


def test_solver_errors_inside_odeint_keep_t_and_step():
    with pytest.raises(NonFiniteError) as info:
        nf.odeint(lambda t, y: y * np.nan if t > 0.5 else -y,
                  nf.Tensor(np.ones(1), requires_grad=True), [0.0, 1.0])
    assert abs(info.value.t - 0.5) < 1e-6 and info.value.step > 0
    W = nf.Tensor(np.eye(2), requires_grad=True)
    with pytest.raises(VectorFieldError) as info:      # a ValueError: used to lose t and step
        nf.odeint(lambda t, y: (y @ W)[:1] if t > 0.5 else y @ W, nf.Tensor(np.ones(2)),
                  [0.0, 1.0])
    assert info.value.t > 0.5 and info.value.step > 0


def test_nan_in_the_backward_pass_is_reported_as_such():
    w = nf.Tensor(np.array([1.0]), requires_grad=True)
    ys = nf.odeint(lambda t, y: -y * w, nf.Tensor(np.ones(1)), [0.0, 1.0])
    w.data[:] = np.nan          # written into the array: not seen by the version counter
    with pytest.raises(NonFiniteError, match=r"backward \(adjoint\) solve of `odeint`, integrating"
                       r" .* from t = 1 back to t = 0") as info:
        ys.sum().backward()
    assert "initial state y0" not in str(info.value) and info.value.t == 1.0


def test_nan_loss_gradient_is_blamed_on_the_loss():
    ys = nf.odeint(lambda t, y: -y, nf.Tensor(np.ones(1), requires_grad=True), [0.0, 1.0])
    with pytest.raises(NonFiniteError, match=r"gradient arriving at the output of `odeint`"):
        ys.backward(np.array([[0.0], [np.nan]]))


# ============================================================ item 16: no_grad per thread
def test_no_grad_in_another_thread_does_not_switch_off_this_one():
    inside, release = threading.Event(), threading.Event()
    seen = []

    def other():
        with nf.no_grad():
            seen.append(nf.autodiff.is_grad_enabled())
            inside.set()
            release.wait(5)
    th = threading.Thread(target=other)
    th.start()
    inside.wait(5)
    x = nf.Tensor(np.array([2.0]), requires_grad=True)
    y = x * x
    release.set()
    th.join()
    assert seen == [False]
    assert y.requires_grad
    y.backward()
    np.testing.assert_array_equal(x.grad.data, [4.0])


# ============================================================ item 17: new-user traps
def test_sequential_as_field_is_refused_with_the_fix():
    model = _model(np.random.default_rng(0))
    with pytest.raises(SolverArgumentError, match=r"`func` is a Sequential whose forward takes one "
                       r"input.*`lambda t, y: model\(y\)`"):
        nf.odeint(model, nf.Tensor(np.ones((1, 2))), [0.0, 1.0])


@pytest.mark.parametrize("call,fix", [(lambda x: np.tanh(x), "nf.tanh"),
                                      (lambda x: np.exp(x), "nf.exp"),
                                      (lambda x: np.sum(x), "nf.sum"),
                                      (lambda x: np.concatenate([x, x]), "nf.concatenate")])
def test_numpy_functions_on_tensors_point_at_nf(call, fix):
    x = nf.Tensor(np.ones(2), requires_grad=True)
    with pytest.raises(TypeError, match=rf"called on a nodeform Tensor.*`{fix}\(x\)`"):
        call(x)


def test_numpy_inside_a_vjp_points_at_nf():
    """VJPs receive Tensors (the `defprim` contract): np.cos on them says to use nf.cos."""
    my_sin = nf.defprim("sin_numpy_vjp_for_test", np.sin, lambda g, ans, x: g * np.cos(x))
    x = nf.Tensor(np.array([0.3]), requires_grad=True)
    with pytest.raises(TypeError, match=r"`np\.cos` was called on a nodeform Tensor.*`nf\.cos"):
        my_sin(x).sum().backward()


def test_arrays_on_the_left_of_tensor_operators_still_work():
    x = nf.Tensor(np.array([1.0, 2.0]), requires_grad=True)
    a = np.array([3.0, 4.0])
    y = a * x + a - x / a + np.float64(2.0) ** x
    assert isinstance(y, nf.Tensor)
    y.sum().backward()
    np.testing.assert_allclose(x.grad.data, a - 1.0 / a + np.log(2.0) * 2.0 ** x.data)
    assert ((a > x).data == [True, True]).all()


def test_gradcheck_on_float32_names_the_dtype():
    x = np.array([0.3, -0.2, 0.5], dtype=np.float32)
    res = nf.gradcheck(lambda x: nf.exp(x * 3.0) * x, x, rtol=1e-7, atol=1e-9)
    assert not res.ok
    assert "float32" in res.text and "float64" in res.text
