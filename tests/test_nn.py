"""Module bookkeeping, dense layers, activations, initializers and losses."""
import numpy as np
import pytest

import nodeform as nf
from nodeform import nn


def _net(rng):
    return nn.Sequential(nn.Linear(3, 5, rng=rng), nn.Tanh(), nn.Linear(5, 2, rng=rng))


# ------------------------------------------------------------------ Module
def test_module_named_parameters_own_first_then_submodules(rng):
    class Block(nn.Module):
        def __init__(self):
            super().__init__()
            self.inner = _net(rng)
            self.scale = nn.Parameter(np.ones(2))

        def forward(self, x):
            return self.inner(x) * self.scale

    names = [n for n, _ in Block().named_parameters()]
    assert names == ["scale", "inner.0.weight", "inner.0.bias", "inner.2.weight", "inner.2.bias"]


def test_module_shared_parameter_counted_once(rng):
    lin = nn.Linear(2, 2, rng=rng)
    net = nn.Sequential(lin, nn.Tanh(), lin)
    assert len(net.parameters()) == 2
    assert net.num_parameters() == 6


def test_module_train_eval_reach_submodules(rng):
    net = _net(rng)
    net.eval()
    assert not any(m.training for m in net.modules())
    net.train()
    assert all(m.training for m in net.modules())


def test_module_state_dict_round_trip(rng):
    a, b = _net(rng), _net(rng)
    x = rng.standard_normal((4, 3))
    assert not np.allclose(a(x).data, b(x).data)
    b.load_state_dict(a.state_dict())
    np.testing.assert_array_equal(a(x).data, b(x).data)


def test_module_state_dict_is_a_copy(rng):
    net = _net(rng)
    sd = net.state_dict()
    sd["0.weight"][...] = 0
    assert np.abs(net[0].weight.data).sum() > 0


def test_module_load_state_dict_names_missing_and_extra(rng):
    net = _net(rng)
    sd = net.state_dict()
    sd.pop("2.bias")
    sd["3.weight"] = np.zeros(1)
    with pytest.raises(KeyError, match=r"missing keys \['2.bias'\].*unexpected keys \['3.weight'\]"):
        net.load_state_dict(sd)
    net.load_state_dict({"0.bias": np.zeros(5)}, strict=False)
    np.testing.assert_array_equal(net[0].bias.data, 0)


def test_module_load_state_dict_names_misshapen(rng):
    net = _net(rng)
    sd = net.state_dict()
    sd["0.weight"] = np.zeros((5, 4))
    with pytest.raises(ValueError, match=r"0.weight: checkpoint \(5, 4\) vs model \(5, 3\)"):
        net.load_state_dict(sd)


def test_module_repr_shows_layers(rng):
    text = repr(_net(rng))
    assert "(0): Linear(3 -> 5, bias=True)" in text and "(1): Tanh()" in text


def test_module_to_float32(rng):
    net = _net(rng).to(np.float32)
    assert all(p.dtype == np.float32 for p in net.parameters())
    assert net(rng.standard_normal((2, 3)).astype(np.float32)).dtype == np.float32


def test_flat_vector_round_trip(rng):
    net = _net(rng)
    theta = nn.parameters_to_vector(net.parameters())
    assert theta.shape == (net.num_parameters(),)
    nn.vector_to_parameters(theta * 2, net.parameters())
    np.testing.assert_allclose(nn.parameters_to_vector(net.parameters()), 2 * theta)
    with pytest.raises(ValueError, match=r"parameters hold 32 values"):
        nn.vector_to_parameters(theta[:-1], net.parameters())


def test_using_parameters_gradient_reaches_theta(rng):
    net = _net(rng)
    x = rng.standard_normal((4, 3))
    theta0 = nn.parameters_to_vector(net.parameters())

    def f(theta):
        with nn.using_parameters(net, nn.unflatten(theta, net.parameters())):
            return net(x)

    res = nf.gradcheck(f, theta0, mode="dot")
    assert res.ok, res.text
    # the original parameters are back afterwards
    assert all(isinstance(p, nn.Parameter) for p in net.parameters())
    np.testing.assert_array_equal(nn.parameters_to_vector(net.parameters()), theta0)


# ------------------------------------------------------------------ layers
def test_linear_matches_numpy(rng):
    lin = nn.Linear(3, 4, rng=rng)
    x = rng.standard_normal((5, 3))
    np.testing.assert_allclose(lin(x).data, x @ lin.weight.data.T + lin.bias.data)


@pytest.mark.parametrize("layer", ["linear", "linear_nobias", "concat_linear", "rnn_cell"])
def test_dense_layers_gradcheck(rng, layer):
    if layer == "linear":
        m, fn = nn.Linear(3, 2, rng=rng), None
    elif layer == "linear_nobias":
        m, fn = nn.Linear(3, 2, bias=False, rng=rng), None
    elif layer == "concat_linear":
        m = nn.ConcatLinear(3, 2, rng=rng)
        fn = lambda x, *ps: m(0.7, x)  # noqa: E731
    else:
        m = nn.RNNCell(3, 2, rng=rng)
        h = rng.standard_normal((4, 2))
        fn = lambda x, *ps: m(x, h)  # noqa: E731
    fn = fn or (lambda x, *ps: m(x))
    x = rng.standard_normal((4, 3))
    params = m.parameters()

    def f(x, *ps):
        with nn.using_parameters(m, ps):
            return fn(x)

    res = nf.gradcheck(f, x, *[p.data for p in params])
    assert res.ok, res.text


def test_concat_linear_time_gradient(rng):
    m = nn.ConcatLinear(3, 2, rng=rng)
    x = rng.standard_normal((4, 3))
    res = nf.gradcheck(lambda t: m(t, x), np.array(0.3))
    assert res.ok, res.text


@pytest.mark.parametrize("act,ref", [
    (nn.Tanh(), np.tanh), (nn.ReLU(), lambda x: np.maximum(x, 0)),
    (nn.Sigmoid(), lambda x: 1 / (1 + np.exp(-x))), (nn.Softplus(), lambda x: np.log1p(np.exp(x))),
    (nn.ELU(0.5), lambda x: np.where(x > 0, x, 0.5 * np.expm1(x)))])
def test_activation_values_and_gradcheck(rng, act, ref):
    x = rng.standard_normal((3, 4)) + 0.05   # keep away from relu's kink at 0
    np.testing.assert_allclose(act(x).data, ref(x), rtol=1e-12)
    res = nf.gradcheck(act, x)
    assert res.ok, res.text


def test_flatten_and_pool_shapes(rng):
    x = rng.standard_normal((2, 3, 4, 5))
    assert nn.Flatten()(x).shape == (2, 60)
    np.testing.assert_allclose(nn.GlobalAvgPool2d()(x).data, x.mean(axis=(2, 3)))
    assert nf.gradcheck(nn.GlobalAvgPool2d(), x).ok


def test_linear_rejects_wrong_input(rng):
    with pytest.raises(ValueError, match=r"`Linear\(3->2\)`: input has shape \(4, 5\) but the layer "
                                         r"expects \(\.\.\., 3\)"):
        nn.Linear(3, 2, rng=rng)(np.zeros((4, 5)))


def test_sequential_rejects_non_module():
    with pytest.raises(TypeError, match=r"argument 1 is a ufunc, not a Module"):
        nn.Sequential(nn.Tanh(), np.tanh)


# ------------------------------------------------------------------ initializers
def test_init_seeded_and_bounded():
    a = nn.Linear(50, 40, rng=np.random.default_rng(1))
    b = nn.Linear(50, 40, rng=np.random.default_rng(1))
    np.testing.assert_array_equal(a.weight.data, b.weight.data)
    assert np.abs(a.weight.data).max() <= 1 / np.sqrt(50)
    w = nn.init.kaiming_uniform((400, 300), rng=np.random.default_rng(2))
    np.testing.assert_allclose(w.var(), 2.0 / 300, rtol=0.05)    # He: Var = 2 / fan_in
    w = nn.init.glorot_uniform((400, 300), rng=np.random.default_rng(3))
    np.testing.assert_allclose(w.var(), 2.0 / 700, rtol=0.05)    # Glorot: Var = 2 / (in + out)


def test_init_default_generator_reseeds():
    nn.init.manual_seed(5)
    a = nn.Linear(3, 3).weight.data
    nn.init.manual_seed(5)
    np.testing.assert_array_equal(a, nn.Linear(3, 3).weight.data)


# ------------------------------------------------------------------ losses
def test_cross_entropy_matches_definition_and_is_stable(rng):
    z = rng.standard_normal((6, 4))
    y = rng.integers(0, 4, 6)
    p = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(nn.cross_entropy(z, y).item(), -np.log(p[np.arange(6), y]).mean())
    big = nn.cross_entropy(z + 1e4, y, reduction="none").data   # shifting logits changes nothing
    np.testing.assert_allclose(big, -np.log(p[np.arange(6), y]), rtol=1e-8)


def test_cross_entropy_rejects_bad_labels(rng):
    with pytest.raises(ValueError, match=r"labels must lie in \[0, 3\)"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0, 3]))
    with pytest.raises(TypeError, match="integer class indices"):
        nn.cross_entropy(np.zeros((2, 3)), np.array([0.0, 1.0]))


def test_gaussian_nll_matches_density(rng):
    x, m, lv = rng.standard_normal((3, 5))
    sd = np.exp(0.5 * lv)
    ref = -np.log(np.exp(-0.5 * ((x - m) / sd) ** 2) / (sd * np.sqrt(2 * np.pi)))
    np.testing.assert_allclose(nn.gaussian_nll(x, m, lv, reduction="none").data, ref)


def test_kl_diag_gaussians_known_values(rng):
    mu, lv = rng.standard_normal((2, 4, 3))
    assert np.allclose(nn.kl_diag_gaussians(mu, lv, mu, lv, reduction="none").data, 0)
    # Monte Carlo check of KL(q || N(0, 1)) for one row
    q_mu, q_lv = mu[0], lv[0]
    z = q_mu + np.exp(0.5 * q_lv) * rng.standard_normal((200_000, 3))
    logq = (-0.5 * ((z - q_mu) ** 2 / np.exp(q_lv) + q_lv + np.log(2 * np.pi))).sum(1)
    logp = (-0.5 * (z ** 2 + np.log(2 * np.pi))).sum(1)
    kl = nn.kl_diag_gaussians(mu[:1], lv[:1], reduction="sum").item()
    np.testing.assert_allclose(kl, (logq - logp).mean(), atol=0.02)


@pytest.mark.parametrize("loss", ["ce", "mse", "nll", "kl"])
def test_losses_gradcheck(rng, loss):
    a, b, c, d = rng.standard_normal((4, 5, 3))
    y = rng.integers(0, 3, 5)
    fns = {"ce": (lambda a: nn.cross_entropy(a, y), (a,)),
           "mse": (lambda a, b: nn.mse_loss(a, b), (a, b)),
           "nll": (lambda a, b, c: nn.gaussian_nll(a, b, c), (a, b, c)),
           "kl": (lambda a, b, c, d: nn.kl_diag_gaussians(a, b, c, d), (a, b, c, d))}
    f, args = fns[loss]
    res = nf.gradcheck(f, *args, order=2, mode="dot")
    assert res.ok, res.text
