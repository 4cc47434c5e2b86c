"""Backprop through the solver records one ``rk_combine`` node per state it builds (nodeform/ode/rk_tape.py).

The primitive's own VJP is checked by finite differences, first and second order, in
the catalog (nodeform.testing.CASES, tests/test_autodiff_primitives.py). Here: the
solve on Tensors gives the array engine's values to the bit, the gradient equals the
one of the tape written with ``+`` and ``*`` (the engine before the primitive), the
error estimate and the initial-step probe leave nothing on the tape, and a second
derivative through the solver matches finite differences.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform.autodiff.tensor import Tensor
from nodeform.ode import rk


def _field(W):
    return lambda t, y: nf.tanh(y @ W) * (1.0 + 0.5 * t)


def _solve(y0, W, method="dopri5", **kw):
    opts = dict(rtol=1e-6, atol=1e-8) if method == "dopri5" else dict(step_size=0.05)
    opts.update(kw)
    return nf.odeint(_field(W), y0, [0.0, 0.4, 1.0], params=[W], method=method,
                     adjoint="backprop", **opts)


def _operator_combine(y, K, terms, h):
    """The combination as the engine wrote it before the primitive: Tensor ``+`` and ``*``."""
    acc = rk.weighted_sum(K, terms)
    return y if acc is None else y + acc * h


def _walk(out):
    """The recorded nodes reachable from ``out``."""
    seen, stack = set(), [out]
    while stack:
        t = stack.pop()
        if id(t) in seen or t._node is None:
            continue
        seen.add(id(t))
        yield t._node
        stack.extend(a for a in t._node.args if isinstance(a, Tensor))


@pytest.fixture
def problem(rng):
    return rng.standard_normal((3, 2)), rng.standard_normal((2, 2)) * 0.8


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_tensor_solve_equals_array_solve_to_the_bit(problem, method):
    y0, W = problem
    opts = dict(rtol=1e-6, atol=1e-8) if method == "dopri5" else dict(step_size=0.05)
    on_arrays = nf.solve(lambda t, y: np.tanh(y @ W) * (1.0 + 0.5 * t), y0, [0.0, 0.4, 1.0],
                         method=method, **opts)
    on_tensors = _solve(Tensor(y0, requires_grad=True), Tensor(W, requires_grad=True), method)
    np.testing.assert_array_equal(on_tensors.data, np.stack(on_arrays.ys))


@pytest.mark.parametrize("method", ["dopri5", "rk4"])
def test_gradient_equals_the_operator_tape(problem, method, monkeypatch):
    y0, W = problem

    def grads():
        y0t, Wt = Tensor(y0, requires_grad=True), Tensor(W, requires_grad=True)
        (_solve(y0t, Wt, method) ** 2.0).sum().backward()
        return y0t.grad.data, Wt.grad.data

    fused = grads()
    monkeypatch.setattr(rk, "combine", _operator_combine)
    composed = grads()
    for a, b in zip(fused, composed):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)
        assert np.abs(a).max() > 1e-3          # a real gradient, not two zeros


def test_tape_holds_only_the_field_and_the_combinations(problem):
    """No add/mul nodes: the stage sums are rk_combine nodes, the error estimate is not taped."""
    y0, W = problem
    out = _solve(Tensor(y0, requires_grad=True), Tensor(W, requires_grad=True))
    names = [node.prim.name for node in _walk(out)]
    assert set(names) == {"stack", "rk_combine", "matmul", "tanh", "mul"}
    # the only muls are the field's own `* (1 + 0.5 t)`, one per evaluation: none from the solver
    assert names.count("mul") == names.count("tanh") < names.count("rk_combine")



def test_initial_step_probe_is_not_recorded(problem):
    """The probe evaluation of the first-step heuristic runs without a tape: nothing from it
    reaches the parameters' readers, and the first step is the same as on arrays."""
    y0, W = problem
    y0t, Wt = Tensor(y0, requires_grad=True), Tensor(W, requires_grad=True)
    n = {"taped": 0}

    def f(t, y):
        out = nf.tanh(y @ Wt)
        n["taped"] += out.requires_grad
        return out
    sol = nf.solve(f, y0t, [0.0, 1.0], rtol=1e-6, atol=1e-8)
    assert n["taped"] == sol.stats["nfev"] - 1      # every evaluation but the probe


def test_second_derivative_through_the_solver_matches_finite_differences(rng):
    y0 = rng.standard_normal((2, 2))
    W = rng.standard_normal((2, 2)) * 0.5
    res = nf.gradcheck(lambda y, w: _solve(y, w, "rk4", step_size=0.1), y0, W, order=2, mode="dot")
    assert res.ok, res.text
