"""Every primitive against finite differences, first and second order (float64)."""
import numpy as np
import pytest

import nodeform as nf
from nodeform.testing import CASES, builtin_primitive_names


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_primitive_vjp_matches_finite_differences(case, rng):
    result = nf.gradcheck(case.fun, *case.sample(rng), mode="both")
    assert result.ok, result.text


@pytest.mark.parametrize("case", [c for c in CASES if c.second_order],
                         ids=[c.id for c in CASES if c.second_order])
def test_primitive_second_order(case, rng):
    result = nf.gradcheck(case.fun, *case.sample(rng), order=2, mode="dot")
    assert result.ok, result.text


def test_every_primitive_has_a_case():
    covered = {c.prim for c in CASES}
    missing = [n for n in builtin_primitive_names() if n not in covered]
    assert not missing, f"primitives without a catalog case in nodeform.testing.CASES: {missing}"


def test_catalog_names_are_registered():
    from nodeform.autodiff.primitive import PRIMITIVES
    assert {c.prim for c in CASES} <= set(PRIMITIVES)


@pytest.mark.parametrize("name", ["tanh", "softplus"])
def test_second_order_closed_form(name, rng):
    """d2/dx2 of tanh and softplus against their closed forms, elementwise."""
    x = rng.standard_normal(6)
    f = getattr(nf, name)
    t = nf.Tensor(x, requires_grad=True)
    d1 = nf.gradients(f(t).sum(), t, create_graph=True)
    d2 = nf.gradients(d1.sum(), t)
    if name == "tanh":
        expect = -2 * np.tanh(x) * (1 - np.tanh(x) ** 2)
    else:
        s = 1 / (1 + np.exp(-x))
        expect = s * (1 - s)
    np.testing.assert_allclose(d2.data, expect, rtol=1e-12, atol=1e-14)


def test_matmul_chain_second_order(rng):
    W1, W2, x = rng.standard_normal((4, 3)), rng.standard_normal((2, 4)), rng.standard_normal(3)
    f = lambda a, b, c: nf.tanh(b @ nf.tanh(a @ c))  # noqa: E731
    assert nf.gradcheck(f, W1, W2, x, order=2, mode="both").ok


def test_third_order_of_exp():
    """Gradients of gradients of gradients: d3/dx3 exp(2x) = 8 exp(2x)."""
    x = nf.Tensor(np.array([0.3, -0.2]), requires_grad=True)
    y = nf.exp(2.0 * x).sum()
    g1 = nf.gradients(y, x, create_graph=True)
    g2 = nf.gradients(g1.sum(), x, create_graph=True)
    g3 = nf.gradients(g2.sum(), x)
    np.testing.assert_allclose(g3.data, 8 * np.exp(2 * x.data), rtol=1e-14)
