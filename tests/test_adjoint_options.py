"""Options of the continuous adjoint: `adjoint_restart`, the seminorm and the per-part norm.

They let the exercises of chapter 3 (ex3_2, ex3_4) change the adjoint without editing or
monkey-patching the library.
"""
import numpy as np
import pytest

import nodeform as nf
from nodeform import SolverArgumentError
from nodeform.adjoint.odeint import parts_norm, seminorm

M0 = np.array([[-1.0, 2.0], [-2.0, -1.0]])   # contracts forwards: backwards it expands


def grad_M(n_obs, rtol, **kw):
    M = nf.Tensor(M0, requires_grad=True)
    stats = nf.SolveStats()
    zs = nf.odeint(lambda t, z: z @ M.T, nf.Tensor(np.array([[2.0, 0.0]])),
                   np.linspace(0.0, 10.0, n_obs), params=[M], rtol=rtol, atol=rtol * 1e-2,
                   stats=stats, **kw)
    (zs[1:] ** 2.0).sum().backward()
    return M.grad.data, stats


def test_restarts_off_lets_the_backward_state_drift():
    ref, _ = grad_M(6, 1e-10)
    on, _ = grad_M(6, 1e-6)
    off, _ = grad_M(6, 1e-6, adjoint_restart=False)
    err_on = np.abs(on - ref).max() / np.abs(ref).max()
    err_off = np.abs(off - ref).max() / np.abs(ref).max()
    assert err_on < 1e-5 and err_off > 10 * err_on, (err_on, err_off)


def test_restarts_make_no_difference_with_one_interval():
    on, s_on = grad_M(2, 1e-6)
    off, s_off = grad_M(2, 1e-6, adjoint_restart=False)
    assert np.array_equal(on, off) and s_on.nfe_backward == s_off.nfe_backward


def test_seminorm_leaves_out_the_parameter_adjoint():
    rng = np.random.default_rng(0)
    W1 = nf.Tensor(rng.standard_normal((16, 2)), requires_grad=True)
    W2 = nf.Tensor(rng.standard_normal((2, 16)) * 0.5, requires_grad=True)
    y0 = nf.Tensor(rng.standard_normal((8, 2)))

    def run(rtol, **kw):
        W1.grad = W2.grad = None
        stats = nf.SolveStats()
        zs = nf.odeint(lambda t, z: nf.tanh(z @ W1.T) @ W2.T, y0, [0.0, 0.5, 1.0],
                       params=[W1, W2], rtol=rtol, atol=rtol * 1e-2, stats=stats, **kw)
        (zs ** 2.0).sum().backward()
        return np.concatenate([W1.grad.data.ravel(), W2.grad.data.ravel()]), stats

    ref, _ = run(1e-10)
    full, s_full = run(1e-6)
    semi, s_semi = run(1e-6, adjoint_options=dict(norm="seminorm"))
    assert s_semi.nfe_backward < s_full.nfe_backward
    assert s_semi.nfe_forward == s_full.nfe_forward
    assert np.abs(semi - ref).max() < 1e-6 * np.abs(ref).max()
    x = np.array([3.0, 4.0, 1e6, -1e6, 7.0])
    assert seminorm(2)(x) == pytest.approx(np.sqrt(12.5), rel=1e-15)


def test_parts_norm_is_the_largest_rms_of_the_parts():
    x = np.array([3.0, 4.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 0.0, 2.0])
    norm = parts_norm([2, 3, 8, 0, 1])                      # the empty part is skipped
    assert norm(x) == pytest.approx(np.sqrt(12.5), rel=1e-15)   # rms of [3, 4]; overall 1.64
    assert parts_norm([2, 12])(x) == pytest.approx(np.sqrt(12.5), rel=1e-15)
    assert parts_norm([14])(x) == pytest.approx(np.sqrt(np.mean(x ** 2)), rel=1e-15)
    with pytest.raises(ValueError, match="`sizes`"):
        parts_norm([0, 0])


def test_parts_norm_is_not_diluted_by_a_large_idle_parameter():
    # P (4,000 entries) has a zero adjoint, so its zero error drowns the others' in one RMS
    # over everything: the backward solve then misses its tolerance; the per-part norm
    # (torchdiffeq's default) does not let it.
    rng = np.random.default_rng(0)
    W1 = nf.Tensor(rng.standard_normal((16, 2)), requires_grad=True)
    W2 = nf.Tensor(rng.standard_normal((2, 16)) * 0.5, requires_grad=True)
    P = nf.Tensor(np.zeros(4000), requires_grad=True)
    y0 = nf.Tensor(rng.standard_normal((4, 2)))

    def run(rtol, **kw):
        W1.grad = W2.grad = P.grad = None
        stats = nf.SolveStats()
        zs = nf.odeint(lambda t, z: nf.tanh(z @ W1.T) @ W2.T + (P * 0.0).sum(), y0, [0.0, 1.0],
                       params=[W1, W2, P], rtol=rtol, atol=rtol * 1e-2, stats=stats, **kw)
        (zs ** 2.0).sum().backward()
        return np.concatenate([W1.grad.data.ravel(), W2.grad.data.ravel()]), stats

    ref, _ = run(1e-10)
    rms, s_rms = run(1e-6)
    parts, s_parts = run(1e-6, adjoint_options=dict(norm="parts"))
    err_rms = np.abs(rms - ref).max() / np.abs(ref).max()
    err_parts = np.abs(parts - ref).max() / np.abs(ref).max()
    assert s_parts.nfe_forward == s_rms.nfe_forward
    assert s_parts.nfe_backward > 1.3 * s_rms.nfe_backward, (s_parts, s_rms)
    assert err_parts < 1e-7 < err_rms, (err_parts, err_rms)


def test_numpy_numba_field_takes_the_backward_norm():
    # the planar CNF's hand-written NumPy VJP runs the reference loop: any norm is allowed
    from nodeform.models import cnf
    x = np.random.default_rng(1).standard_normal((16, 2)) * 0.7
    grads = {}
    for norm in ("rms", "parts"):
        model = cnf.PlanarCNF(width=4, hidden=4, engine="numpy", rng=2)
        stats = nf.SolveStats()
        cnf.nll(model, x, stats=stats, rtol=1e-8, atol=1e-8,
                adjoint_options=dict(norm=norm)).backward()
        grads[norm] = nf.nn.parameters_to_vector([p.grad for p in model.parameters()]).copy()
    scale = np.abs(grads["rms"]).max()
    assert np.abs(grads["parts"] - grads["rms"]).max() < 1e-6 * scale


def test_bad_adjoint_options_are_refused():
    with pytest.raises(SolverArgumentError, match="`adjoint_restart`"):
        grad_M(2, 1e-6, adjoint_restart="no")
    with pytest.raises(SolverArgumentError, match="`norm`"):
        grad_M(2, 1e-6, adjoint_options=dict(norm="semi"))
    with pytest.raises(SolverArgumentError, match="no backward solve to restart"):
        grad_M(2, 1e-6, adjoint="backprop", adjoint_restart=False)


def test_numba_field_refuses_what_its_compiled_adjoint_lacks():
    field = nf.mlp_field(2, (8,), "tanh")
    theta = nf.Tensor(field.init_theta(np.random.default_rng(3)), requires_grad=True)
    y0 = nf.Tensor(np.ones((4, 2)))
    with pytest.raises(SolverArgumentError, match="adjoint_restart=False.*reference"):
        nf.odeint(field, y0, [0.0, 1.0], params=theta, adjoint_restart=False)
    with pytest.raises(SolverArgumentError, match="`norm` in the backward options"):
        nf.odeint(field, y0, [0.0, 1.0], params=theta, adjoint_options=dict(norm="seminorm"))
