"""Checks of chapter 1's exercises (chapters/ch01_autodiff.py and nodeform/autodiff/vjps.py).

Run one with ``python -m nodeform classroom check ex1_8`` (or ``pytest -m ex1_8``).
"""
import numpy as np
import pytest

import nodeform as nf
from exercise_helpers import close


def _tiny_close(got, expected, what, hint, **kw):
    assert hasattr(got, "value"), (f"{what}: expected a Tiny, got {type(got).__name__}. "
                                   f"Hint: VJPs return Tiny values (write them with Tiny "
                                   f"operations, so that they can be recorded too).")
    close(got.value, expected, what, hint, **kw)


@pytest.mark.ex1_1
def test_ex1_1_tlog_forward_and_vjp(ch01):
    x0 = np.array([[0.5, 1.0, 2.0], [3.0, 0.25, 7.0]])
    x = ch01.Tiny(x0, requires_grad=True)
    out = ch01.tlog(x)
    close(out.value, np.log(x0), "tlog(x).value", "the forward value is np.log(x.value)")
    assert len(out.parents) == 1 and out.parents[0] is x, (
        "tlog(x) should record exactly one parent, x. Hint: build the output with "
        "node(value, (x,), (vjp,)).")
    g0 = np.arange(1.0, 7.0).reshape(2, 3)
    _tiny_close(out.vjps[0](ch01.Tiny(g0)), g0 / x0, "the VJP of tlog applied to g",
                "d log(x)/dx = 1/x, so the cotangent of x is g / x")


@pytest.mark.ex1_2
def test_ex1_2_scalar_pow_against_nf_grad(ch01):
    a, b = ch01.Scalar(1.3), ch01.Scalar(-0.4)
    y = (a ** 3.0 * b).exp()
    close(y.value, np.exp(1.3 ** 3 * -0.4), "exp(a ** 3 * b) value",
          "the forward value of x ** p is x.value ** p")
    y.backward()
    at, bt = nf.Tensor(1.3, requires_grad=True), nf.Tensor(-0.4, requires_grad=True)
    da, db = nf.gradients(nf.exp(at ** 3.0 * bt), [at, bt])
    close([a.grad, b.grad], [da.item(), db.item()], "d/da, d/db of exp(a ** 3 * b)",
          "the VJP of x ** p is g -> g * p * x ** (p - 1)")


@pytest.mark.ex1_6
def test_ex1_6_mul_broadcasting_vjps(ch01, rng):
    x0, y0 = rng.standard_normal((5, 4)), rng.standard_normal(4)
    x, y = ch01.Tiny(x0, requires_grad=True), ch01.Tiny(y0, requires_grad=True)
    out = ch01.mul(x, y)
    close(out.value, x0 * y0, "mul(x, y).value", "the forward value is x.value * y.value")
    G = rng.standard_normal((5, 4))
    gx, gy = (v(ch01.Tiny(G)) for v in out.vjps)
    _tiny_close(gx, G * y0, "cotangent of x (shape (5, 4))", "g * y, already x's shape")
    _tiny_close(gy, (G * x0).sum(axis=0), "cotangent of y (shape (4,))",
                "y was broadcast over the 5 rows: unbroadcast(g * x, y.shape) sums them")


@pytest.mark.ex1_7
def test_ex1_7_matmul_vjps(ch01, rng):
    X0, Y0 = rng.standard_normal((3, 4)), rng.standard_normal((4, 2))
    X, Y = ch01.Tiny(X0, requires_grad=True), ch01.Tiny(Y0, requires_grad=True)
    out = ch01.matmul(X, Y)
    close(out.value, X0 @ Y0, "matmul(X, Y).value", "the forward value is X.value @ Y.value")
    G = rng.standard_normal((3, 2))
    gX, gY = (v(ch01.Tiny(G)) for v in out.vjps)
    _tiny_close(gX, G @ Y0.T, "cotangent of X", "d<G, XY>/dX = G @ Y.T (shape of X: (3, 4))")
    _tiny_close(gY, X0.T @ G, "cotangent of Y", "d<G, XY>/dY = X.T @ G (shape of Y: (4, 2))")


@pytest.mark.ex1_8
@pytest.mark.parametrize("shape", [(2, 5, 4), (5, 4), (4,), (1, 4), (5, 1), (2, 1, 4), ()])
def test_ex1_8_unbroadcast(ch01, rng, shape):
    G = rng.standard_normal((2, 5, 4))
    out = ch01.unbroadcast(ch01.Tiny(G), shape)
    # the expected value: the gradient of sum(G * broadcast_to(x, G.shape)) with respect to x
    xt = nf.Tensor(np.zeros(shape), requires_grad=True)
    expected = nf.gradients(nf.sum(G * nf.broadcast_to(xt, G.shape)), xt).data
    _tiny_close(out, expected, f"unbroadcast(g of shape (2, 5, 4), {shape})",
                "sum over the leading axes broadcasting added, then with keepdims=True over "
                "every axis that is 1 in `shape` but not in g")


def _graph(ch01):
    x = ch01.Tiny(np.array([0.3, -0.7]), requires_grad=True)
    y = ch01.tanh(x)
    z = ch01.add(y, ch01.exp(x))
    w = ch01.add(z, y)                       # y is used twice
    return x, y, z, w


@pytest.mark.ex1_9
def test_ex1_9_toposort_parents_first(ch01):
    x, y, z, w = _graph(ch01)
    order = ch01.toposort(w)
    ids = [id(v) for v in order]
    assert len(ids) == len(set(ids)), (
        f"toposort returned {len(ids)} nodes but only {len(set(ids))} distinct ones. Hint: "
        "remember the ids you have visited and skip them (y is reached twice).")
    assert len(order) == 5 and order[-1] is w and id(x) in ids, (
        f"expected the 5 nodes x, tanh(x), exp(x), z, w ending with w; got {len(order)} nodes"
        f"{', not ending with the root' if order and order[-1] is not w else ''}. Hint: append "
        "a node after all its parents, so the root comes last.")
    pos = {i: k for k, i in enumerate(ids)}
    for v in order:
        for p in v.parents:
            assert pos[id(p)] < pos[id(v)], (
                "a node comes before one of its parents. Hint: visit every parent (recursively) "
                "before appending the node itself.")


@pytest.mark.ex1_9
def test_ex1_9_toposort_deep_chain(ch01):
    x = ch01.Tiny(np.array(0.1), requires_grad=True)
    v = x
    for _ in range(200):
        v = ch01.tanh(v)
    order = ch01.toposort(v)
    assert len(order) == 201 and order[0] is x and order[-1] is v, (
        f"a chain of 200 tanh: expected 201 nodes from x to the root, got {len(order)}")


@pytest.mark.ex1_10
def test_ex1_10_gradients_first_order(ch01):
    x0, b0 = np.array([0.3, -0.7, 1.1]), np.array([0.5, 0.2, -0.4])
    x, b = ch01.Tiny(x0, requires_grad=True), ch01.Tiny(b0, requires_grad=True)
    unused = ch01.Tiny(np.ones(2), requires_grad=True)
    y = ch01.tanh(ch01.add(x, b))
    loss = ch01.tsum(ch01.add(ch01.exp(y), ch01.power(y, 2.0)))   # y used twice
    gx, gb, gu = ch01.gradients(loss, [x, b, unused])
    xt, bt = nf.Tensor(x0, requires_grad=True), nf.Tensor(b0, requires_grad=True)
    yt = nf.tanh(xt + bt)
    ex, eb = nf.gradients(nf.sum(nf.exp(yt) + yt ** 2.0), [xt, bt])
    _tiny_close(gx, ex.data, "d loss / dx", "y is used twice: add the cotangents of all its uses "
                "(grads[id(parent)] += ...), and pass a node's g on only in reversed(toposort)")
    _tiny_close(gb, eb.data, "d loss / db", "as for x")
    _tiny_close(gu, np.zeros(2), "the gradient of an input the loss does not use",
                "inputs never reached get zeros of their shape")


@pytest.mark.ex1_10
def test_ex1_10_gradients_second_order(ch01):
    x0 = np.linspace(-2, 2, 5)
    x = ch01.Tiny(x0, requires_grad=True)
    g1, = ch01.gradients(ch01.tsum(ch01.tanh(x)), [x], create_graph=True)
    assert getattr(g1, "parents", ()) != (), (
        "with create_graph=True the gradient must be recorded (it has parents). Hint: set "
        "RECORD[0] = create_graph while the VJPs run, and restore it afterwards.")
    g2, = ch01.gradients(ch01.tsum(g1), [x])
    _tiny_close(g2, -2 * np.tanh(x0) * (1 - np.tanh(x0) ** 2), "d2/dx2 sum(tanh(x))",
                "the second sweep differentiates the graph the first one recorded")
    assert ch01.RECORD[0] is True, ("RECORD[0] is not True after gradients returned. Hint: "
                                    "restore the saved value in a finally clause.")


@pytest.mark.ex1_11
def test_ex1_11_elu_vjp_values():
    x0 = np.array([-2.0, -0.5, 0.3, 1.7])
    x = nf.Tensor(x0, requires_grad=True)
    g = nf.gradients(nf.sum(nf.elu(x, alpha=0.7)), x)
    close(g.data, np.where(x0 > 0, 1.0, 0.7 * np.exp(x0)), "d/dx sum(elu(x, alpha=0.7))",
          "1 where x > 0, else alpha exp(x) = ans + alpha (ans is elu's output)")


@pytest.mark.ex1_11
def test_ex1_11_elu_gradcheck_second_order():
    report = nf.gradcheck(lambda x: nf.elu(x, alpha=0.7), np.array([-1.5, -0.3, 0.4, 2.0]), order=2)
    assert report.ok, (f"gradcheck of elu failed:\n{report}\nHint: write the VJP with Tensor "
                       "operations (where, *, +) so that its own derivative exists.")
