"""The same reference code on CuPy arrays: parity with NumPy.

Every test here is marked ``gpu`` and skipped, with the reason, where CuPy cannot
allocate on a GPU (``python -m nodeform doctor`` says why). Run them alone with
``python -m pytest -m gpu``.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.backend import cupy_status, to_numpy
from nodeform.testing import CASES

cp, _reason = cupy_status()
pytestmark = [pytest.mark.gpu, pytest.mark.skipif(cp is None, reason=_reason)]

# primitives whose catalog entry builds NumPy-only constants inside `fun`
_HOST_ONLY = {"odeint"}


@pytest.mark.parametrize("case", [c for c in CASES if c.prim not in _HOST_ONLY],
                         ids=[c.id for c in CASES if c.prim not in _HOST_ONLY])
def test_primitive_forward_and_vjp_match_numpy(case, rng):
    """Each catalog case on CuPy gives NumPy's value and VJP (to 1e-12 relative)."""
    inputs = case.sample(rng)
    out = {}
    for name, conv in (("numpy", np.asarray), ("cupy", cp.asarray)):
        ts = [nf.Tensor(conv(x), requires_grad=True) for x in inputs]
        y = case.fun(*ts)
        v = conv(np.cos(np.arange(y.size)).reshape(y.shape))
        y.backward(v)
        out[name] = [to_numpy(y.data)] + [to_numpy(t.grad.data) for t in ts]
    for a, b in zip(out["cupy"], out["numpy"]):
        np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-13)


def test_gradcheck_runs_on_cupy(rng):
    r = nf.gradcheck(lambda x, W: nf.tanh(x @ W), cp.asarray(rng.standard_normal((4, 3))),
                     cp.asarray(rng.standard_normal((3, 2))), order=2, mode="both")
    assert r.ok, r.text


@pytest.mark.parametrize("method", ["dopri5", "tsit5", "rk4"])
def test_reference_solver_on_cupy_matches_numpy(method, rng):
    A = rng.standard_normal((3, 3)) * 0.5
    y0 = rng.standard_normal((64, 3))
    kw = dict(method=method, rtol=1e-8, atol=1e-10)
    if method == "rk4":
        kw["step_size"] = 0.01
    ref = nf.solve(lambda t, y: np.tanh(y @ A.T), y0, [0.0, 0.5, 1.0], **kw)
    Ag = cp.asarray(A)
    sol = nf.solve(lambda t, y: cp.tanh(y @ Ag.T), cp.asarray(y0), [0.0, 0.5, 1.0], **kw)
    assert type(sol.ys).__module__.startswith("cupy")
    assert sol.stats == ref.stats
    np.testing.assert_allclose(to_numpy(sol.ys), ref.ys, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("adjoint", ["continuous", "backprop"])
def test_adjoint_on_cupy_matches_numpy(adjoint, rng):
    W1, W2, y0 = rng.standard_normal((16, 2)), rng.standard_normal((2, 16)) * 0.5, rng.standard_normal((32, 2))
    grads = {}
    for name, conv in (("numpy", np.asarray), ("cupy", cp.asarray)):
        a, b = nf.Tensor(conv(W1), requires_grad=True), nf.Tensor(conv(W2), requires_grad=True)
        y = nf.Tensor(conv(y0), requires_grad=True)
        ys = nf.odeint(lambda t, z: nf.tanh(z @ a.T) @ b.T, y, [0.0, 0.5, 1.0], params=[a, b],
                       adjoint=adjoint, rtol=1e-8, atol=1e-10)
        (ys ** 2.0).sum().backward()
        grads[name] = [to_numpy(t.grad.data) for t in (y, a, b)]
    for g_c, g_n in zip(grads["cupy"], grads["numpy"]):
        np.testing.assert_allclose(g_c, g_n, rtol=1e-9, atol=1e-11)
