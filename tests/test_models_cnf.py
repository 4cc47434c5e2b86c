"""Continuous normalizing flows (chapter 6): Theorem 1, traces, gradients, the NF baseline,
the hand-written NumPy and Numba kernels, and the toy data.

Numba signatures compiled here: ``planar_f_nb`` and ``planar_vjp_nb`` once each (float64,
1-D C arrays, int64 ``arch``); the solver loops are the ones ``mlp_field`` already uses.
"""
import math

import numpy as np
import pytest
from scipy.linalg import expm

import nodeform as nf
from nodeform import nn
from nodeform.data import toy2d
from nodeform.models import _cnf_kernels as K
from nodeform.models import cnf
from nodeform.testing import numerical_jacobian

TIGHT = dict(rtol=1e-10, atol=1e-10)


class LinearField(nn.Module):
    """``dz/dt = z A^T``: a flow map ``expm(A t)`` with a known determinant."""

    def __init__(self, A):
        super().__init__()
        self.dim = A.shape[0]
        self.A = nn.Parameter(A)

    def forward(self, t, z):
        return z @ self.A.T


def set_params(module, tensors):
    """Make ``tensors`` the parameters of ``module`` and leave them there.

    Not ``nn.using_parameters``: the continuous adjoint calls the field again during
    ``backward()``, after such a block would have put the old parameters back.
    """
    for (name, _), t in zip(list(module.named_parameters()), tensors):
        *path, attr = name.split(".")
        owner = module
        for part in path:
            owner = getattr(owner, part)
        object.__setattr__(owner, attr, t)
    return module


def small_planar(rng, width=3, hidden=4, engine="autodiff", scale=1.0, t1=1.0):
    """A planar CNF whose hypernetwork weights are scaled up so the flow is far from identity."""
    m = cnf.PlanarCNF(dim=2, width=width, hidden=hidden, engine=engine, t0=0.0, t1=t1,
                      base_var=1.0, rng=rng)
    for p in m.parameters():
        p.data *= scale
    return m


# ============================================================ Theorem 1
def test_theorem1_linear_flow_log_density_change_is_log_det(rng):
    A = rng.standard_normal((3, 3))
    model = cnf.CNF(LinearField(A), trace="exact", t0=0.0, t1=1.5)
    z0 = rng.standard_normal((4, 3))
    zs, ls = model.integrate(z0, np.zeros(4), [0.0, 1.5], **TIGHT)
    Phi = expm(1.5 * A)
    np.testing.assert_allclose(zs.numpy()[-1], z0 @ Phi.T, rtol=1e-8, atol=1e-9)
    # log p(z(T)) - log p(z(0)) = -log|det dz(T)/dz(0)| = -log|det expm(A T)|
    _, logdet = np.linalg.slogdet(Phi)
    np.testing.assert_allclose(ls.numpy()[-1], -logdet, rtol=1e-8, atol=1e-9)


def test_theorem1_planar_integral_of_trace_is_log_det_of_flow_map(rng):
    model = small_planar(rng, scale=2.0)
    z0 = rng.standard_normal((3, 2))
    with nf.no_grad():
        zs, ls = model.integrate(z0, np.zeros(3), [0.0, 1.0], **TIGHT)

    def flow(z):
        with nf.no_grad():
            return model.integrate(z.reshape(1, 2), np.zeros(1), [0.0, 1.0], **TIGHT)[0].numpy()[-1]
    moved = np.abs(zs.numpy()[-1] - z0).max()
    assert moved > 0.1, f"the test flow barely moves the points ({moved}); it proves nothing"
    for i in range(3):
        J = numerical_jacobian(flow, z0[i], eps=1e-5)
        sign, logdet = np.linalg.slogdet(J)
        assert sign > 0
        np.testing.assert_allclose(ls.numpy()[-1, i], -logdet, atol=1e-7)


# ============================================================ sampling and density
def test_push_forward_then_pull_back_returns(rng):
    model = small_planar(rng, scale=2.0)
    z0 = rng.standard_normal((5, 2))
    l0 = model.base_log_prob(z0).numpy()
    with nf.no_grad():
        zs, ls = model.integrate(z0, l0, [0.0, 1.0], rtol=1e-9, atol=1e-9)
        back_z, back_l = model.integrate(zs[-1], ls[-1], [1.0, 0.0], rtol=1e-9, atol=1e-9)
        logq = model.log_prob(zs[-1], rtol=1e-9, atol=1e-9).numpy()
    assert np.abs(zs.numpy()[-1] - z0).max() > 0.1
    np.testing.assert_allclose(back_z.numpy()[-1], z0, atol=1e-7)
    np.testing.assert_allclose(back_l.numpy()[-1], l0, atol=1e-7)
    # sampling and density evaluation are the same model: log q(x) agrees both ways
    np.testing.assert_allclose(logq, ls.numpy()[-1], atol=1e-7)


# ============================================================ traces
def test_closed_form_trace_equals_autodiff_trace(rng):
    field = cnf.PlanarField(dim=2, width=5, hidden=4, rng=rng)
    for p in field.parameters():
        p.data *= 2.0
    z = nf.Tensor(rng.standard_normal((6, 2)))
    with nf.enable_grad():
        dz1, tr1 = field.with_trace(0.7, z)
        dz2, tr2 = cnf.exact_trace(field, 0.7, z)
        # the traces also agree in their gradients (the exact one is a gradient of a gradient)
        g1 = nf.gradients(tr1.sum(), field.parameters())
        g2 = nf.gradients(tr2.sum(), field.parameters())
    np.testing.assert_allclose(dz1.numpy(), dz2.numpy(), rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(tr1.numpy(), tr2.numpy(), rtol=1e-12, atol=1e-14)
    for a, b in zip(g1, g2):
        np.testing.assert_allclose(a.numpy(), b.numpy(), rtol=1e-10, atol=1e-13)


# ============================================================ gradients of the loss
@pytest.mark.parametrize("adjoint", ["continuous", "backprop"])
def test_cnf_nll_gradcheck(rng, adjoint):
    model = small_planar(rng, width=2, hidden=2, scale=1.5)
    x = rng.standard_normal((3, 2))
    params = [p.data.copy() for p in model.parameters()]

    def loss(*ps):
        return cnf.nll(set_params(model, ps), x, adjoint=adjoint, **TIGHT)
    res = nf.gradcheck(loss, *params, mode="dot", n_directions=3, rtol=1e-5, atol=1e-8)
    assert res.ok, str(res)


def test_reverse_kl_gradcheck_planar_nf(rng):
    flow = cnf.PlanarNF(dim=2, n_layers=3, direction="sample", init_scale=0.7, rng=rng)
    params = [p.data.copy() for p in flow.parameters()]
    target = toy2d.target_log_density("U2")

    def loss(*ps):
        return cnf.reverse_kl(set_params(flow, ps), target, 16, rng=1)
    res = nf.gradcheck(loss, *params, mode="full")
    assert res.ok, str(res)


# ============================================================ the planar NF baseline
@pytest.mark.parametrize("direction", ["sample", "density"])
def test_planar_nf_log_det_matches_numerical_jacobian_and_inverse(rng, direction):
    flow = cnf.PlanarNF(dim=2, n_layers=4, direction=direction, init_scale=1.5, rng=rng)
    with nf.no_grad():
        z = rng.standard_normal((4, 2))
        y, logdet = flow.layers(z)
        back, logdet_inv = flow.inverse_layers(y)

    def fwd(v):
        with nf.no_grad():
            return flow.layers(v.reshape(1, 2))[0].numpy()[0]
    for i in range(4):
        J = numerical_jacobian(fwd, z[i], eps=1e-6)
        np.testing.assert_allclose(logdet.numpy()[i], np.log(abs(np.linalg.det(J))), atol=1e-7)
    np.testing.assert_allclose(back, z, atol=1e-10)
    np.testing.assert_allclose(logdet_inv, logdet.numpy(), atol=1e-9)


def test_planar_nf_constraint_keeps_layers_invertible(rng):
    flow = cnf.PlanarNF(dim=2, n_layers=6, init_scale=3.0, rng=rng)
    flow.u.data[:] = -5.0 * flow.w.data           # w.u << -1: invertible only after the fix
    for k in range(6):
        assert float((flow.w[k] * flow.u_hat(k)).sum().numpy()) >= -1.0 + 0.5 * cnf.MARGIN
    with nf.no_grad():
        y, logdet = flow.layers(np.zeros((3, 2)))
    assert np.isfinite(logdet.numpy()).all()


def test_planar_nf_log_prob_both_directions_agree(rng):
    sampler = cnf.PlanarNF(dim=2, n_layers=3, direction="sample", init_scale=1.0, rng=rng)
    density = cnf.PlanarNF(dim=2, n_layers=3, direction="density", init_scale=1.0, rng=rng)
    with nf.no_grad():
        for flow in (sampler, density):
            x, logq = flow.sample(5, rng=2)
            np.testing.assert_allclose(flow.log_prob(x).numpy(), logq.numpy(), atol=1e-9)


# ============================================================ the hand-written kernels
@pytest.fixture(params=[2, 3], ids=["D2", "D3"])
def kernel_case(rng, request):
    """A small planar field in dimension 2 (the toy data, the fused D = 2 Numba loops) or 3
    (the general loops over the dimension)."""
    dim = request.param
    field = cnf.PlanarField(dim=dim, width=6, hidden=5, rng=rng)
    for p in field.parameters():
        p.data *= 1.5
    theta = nn.parameters_to_vector(field.parameters())
    y = rng.standard_normal(7 * (dim + 1))
    a = rng.standard_normal(7 * (dim + 1))
    return field, theta, y, a, K.arch_of(dim, 6, 5)


def _autodiff_vjp(field, theta, t, y, a):
    model = cnf.CNF(field, trace="closed")
    ps = [nf.Tensor(v.data, requires_grad=True) for v in nn.unflatten(nf.Tensor(theta), field.parameters())]
    d1 = field.dim + 1
    s = nf.Tensor(y.reshape(-1, d1), requires_grad=True)
    tt = nf.Tensor(np.array(t), requires_grad=True)
    with nn.using_parameters(field, ps), nf.enable_grad():
        out = model(tt, s)
        gs = nf.gradients(out, [s] + ps + [tt], seed=a.reshape(-1, d1))
    return (out.numpy().ravel(), gs[0].numpy().ravel(),
            np.concatenate([g.numpy().ravel() for g in gs[1:-1]]), float(gs[-1].numpy()))


@pytest.mark.parametrize("impl", ["numpy", "numba"])
def test_kernels_match_autodiff(kernel_case, impl):
    field, theta, y, a, arch = kernel_case
    f, vjp = (K.planar_f_np, K.planar_vjp_np) if impl == "numpy" else (K.planar_f_nb, K.planar_vjp_nb)
    ref = _autodiff_vjp(field, theta, 0.8, y, a)
    np.testing.assert_allclose(f(0.8, y, theta, arch), ref[0], rtol=1e-12, atol=1e-13)
    got = vjp(0.8, y, theta, a, arch)
    for name, g, r in zip(["f", "a df/dy", "a df/dtheta", "a df/dt"], got, ref):
        np.testing.assert_allclose(g, r, rtol=1e-10, atol=1e-12, err_msg=name)


def test_numba_and_numpy_engines_match_autodiff_model(rng):
    x = rng.standard_normal((9, 2)) * 0.5
    res = {}
    for engine in ["autodiff", "numpy", "numba"]:
        model = small_planar(np.random.default_rng(3), width=4, hidden=3, engine=engine,
                             scale=1.5, t1=2.0)
        loss = cnf.nll(model, x, rtol=1e-8, atol=1e-8)
        loss.backward()
        res[engine] = (float(loss.numpy()), nn.parameters_to_vector([p.grad for p in model.parameters()]))
    for engine in ["numpy", "numba"]:
        assert abs(res[engine][0] - res["autodiff"][0]) < 1e-10
        np.testing.assert_allclose(res[engine][1], res["autodiff"][1], rtol=1e-7, atol=1e-9)


# ============================================================ models: bad input
def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="`engine`"):
        cnf.PlanarCNF(engine="cuda")
    with pytest.raises(ValueError, match="`trace='closed'`"):
        cnf.CNF(LinearField(np.eye(2)), trace="closed")
    with pytest.raises(ValueError, match="trace='closed'"):
        cnf.PlanarCNF(trace="exact", engine="numba")
    with pytest.raises(ValueError, match="`direction`"):
        cnf.PlanarNF(direction="up")
    with pytest.raises(ValueError, match="adjoint='continuous'"):
        cnf.nll(cnf.PlanarCNF(width=2, hidden=2, engine="numpy"), np.zeros((2, 2)),
                adjoint="backprop")


# ============================================================ toy data
def test_samplers_are_seeded_and_on_their_curves():
    a, b = toy2d.two_circles(4000, seed=5), toy2d.two_circles(4000, seed=5)
    np.testing.assert_array_equal(a, b)
    r = np.linalg.norm(a, axis=1)
    outer, inner = r[r > 0.75], r[r <= 0.75]
    assert abs(outer.mean() - 1.0) < 0.01 and abs(inner.mean() - 0.5) < 0.01
    assert abs(len(outer) / len(r) - 0.5) < 0.03
    m = toy2d.two_moons(4000, seed=1)
    upper = m[:, 1] > 0.25 + 0 * m[:, 0]
    assert m[:, 0].min() < -0.9 and m[:, 0].max() > 1.9
    assert abs(upper.mean() - 0.5) < 0.1


def test_even_angles_are_scikit_learns_placement():
    c = toy2d.two_circles(10, seed=0, noise=0.0, angles="even")      # 5 on each circle
    r = np.linalg.norm(c, axis=1)
    np.testing.assert_allclose(np.sort(r), [0.5] * 5 + [1.0] * 5, atol=1e-15)
    th = np.sort(np.mod(np.arctan2(c[r > 0.75, 1], c[r > 0.75, 0]), 2 * np.pi))
    np.testing.assert_allclose(th, np.linspace(0, 2 * np.pi, 5, endpoint=False), atol=1e-12)
    assert 0 < (r[:5] > 0.75).sum() < 5                                # shuffled
    m = toy2d.two_moons(7, seed=0, noise=0.0, angles="even")           # 3 upper, 4 lower
    upper = m[np.abs(np.linalg.norm(m, axis=1) - 1.0) < 1e-12]        # the unit circle at 0
    np.testing.assert_allclose(np.sort(upper[:, 0]), [-1.0, 0.0, 1.0], atol=1e-12)  # both ends
    assert len(upper) == 3
    x = toy2d.sample("circles", 4000, seed=2, angles="even")
    assert abs(np.linalg.norm(x, axis=1).mean() - 0.75) < 0.01
    with pytest.raises(ValueError, match="`angles`"):
        toy2d.sample("moons", 4, angles="grid")


def test_circles_entropy_matches_the_thin_ring_formula():
    # thin rings: H = log 2 + mean_c log(L_c) + 1/2 log(2 pi e sigma^2), L_c = 2 pi r_c
    s = toy2d.CIRCLES_NOISE
    approx = (math.log(2) + 0.5 * (math.log(2 * math.pi) + math.log(math.pi))
              + 0.5 * math.log(2 * math.pi * math.e * s * s))
    h, se = toy2d.data_entropy("circles", n=4000, seed=1)
    assert abs(h - approx) < 3 * se + 0.01, (h, approx, se)


def test_energies_match_their_formulas(rng):
    z = rng.standard_normal((6, 2)) * 2
    z1, z2 = z[:, 0], z[:, 1]
    w1 = np.sin(2 * np.pi * z1 / 4)
    u1 = 0.5 * ((np.hypot(z1, z2) - 2) / 0.4) ** 2 - np.log(
        np.exp(-0.5 * ((z1 - 2) / 0.6) ** 2) + np.exp(-0.5 * ((z1 + 2) / 0.6) ** 2))
    u2 = 0.5 * ((z2 - w1) / 0.4) ** 2
    w2 = 3 * np.exp(-0.5 * ((z1 - 1) / 0.6) ** 2)
    u3 = -np.log(np.exp(-0.5 * ((z2 - w1) / 0.35) ** 2) + np.exp(-0.5 * ((z2 - w1 + w2) / 0.35) ** 2))
    w3 = 3 / (1 + np.exp(-(z1 - 1) / 0.3))
    u4 = -np.log(np.exp(-0.5 * ((z2 - w1) / 0.4) ** 2) + np.exp(-0.5 * ((z2 - w1 + w3) / 0.35) ** 2))
    for name, ref in zip(["U1", "U2", "U3", "U4"], [u1, u2, u3, u4]):
        np.testing.assert_allclose(toy2d.energy(name, z).numpy(), ref, rtol=1e-10, err_msg=name)
    with pytest.raises(ValueError, match="`name`"):
        toy2d.energy("U5", z)
