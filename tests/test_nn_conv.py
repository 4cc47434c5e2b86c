"""Convolution (im2col), the time-concatenating conv, GroupNorm, and a small CNN's gradient."""
import numpy as np
import pytest

import nodeform as nf
from nodeform import nn
from tests.conftest import BACKENDS


def direct_conv(x, w, b, stride, padding):
    """The definition, as a loop over output positions: out[n,o,i,j] = sum x_pad[n,c,i*s+a,j*s+b] w[o,c,a,b]."""
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    (sh, sw), (ph, pw) = stride, padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    ho, wo = (h + 2 * ph - kh) // sh + 1, (wd + 2 * pw - kw) // sw + 1
    out = np.zeros((n, o, ho, wo))
    for i in range(ho):
        for j in range(wo):
            patch = xp[:, :, i * sh:i * sh + kh, j * sw:j * sw + kw]       # (n, c, kh, kw)
            out[:, :, i, j] = np.tensordot(patch, w, axes=([1, 2, 3], [1, 2, 3]))
    return out + (0 if b is None else b[None, :, None, None])


GEOMETRIES = [  # (kernel, stride, padding, H, W)
    ((3, 3), (1, 1), (1, 1), 6, 6),
    ((3, 3), (2, 2), (1, 1), 7, 6),
    ((2, 3), (2, 1), (0, 2), 5, 4),
    ((1, 1), (1, 1), (0, 0), 3, 3),
    ((4, 4), (2, 2), (1, 1), 8, 8),     # the ODE-Net's downsampling conv
]


@pytest.mark.parametrize("k,s,p,h,w", GEOMETRIES)
def test_conv2d_matches_direct_loop(rng, k, s, p, h, w):
    conv = nn.Conv2d(3, 4, k, stride=s, padding=p, rng=rng)
    x = rng.standard_normal((2, 3, h, w))
    ref = direct_conv(x, conv.weight.data, conv.bias.data, s, p)
    np.testing.assert_allclose(conv(x).data, ref, rtol=1e-12, atol=1e-12)


def test_conv2d_float32_matches_float64(rng):
    conv = nn.Conv2d(3, 5, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 3, 6, 6))
    y64 = conv(x).data
    conv.to(np.float32)
    y32 = conv(x.astype(np.float32)).data
    assert y32.dtype == np.float32
    np.testing.assert_allclose(y32, y64, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("k,s,p,h,w", GEOMETRIES[:3])
def test_conv2d_gradcheck(rng, k, s, p, h, w):
    x = rng.standard_normal((2, 2, h, w))
    wt = rng.standard_normal((3, 2) + k)
    b = rng.standard_normal(3)
    res = nf.gradcheck(lambda x, wt, b: nn.conv2d(x, wt, b, s, p), x, wt, b, mode="both")
    assert res.ok, res.text


def test_conv2d_second_order(rng):
    x = rng.standard_normal((1, 2, 4, 4))
    wt = rng.standard_normal((2, 2, 3, 3))
    res = nf.gradcheck(lambda x, wt: nf.tanh(nn.conv2d(x, wt, None, 2, 1)), x, wt, order=2, mode="dot")
    assert res.ok, res.text


def test_im2col_col2im_are_adjoint(rng):
    # <im2col(x), c> == <x, col2im(c)> for random x, c: the defining property of an adjoint pair.
    geo = dict(ksize=(3, 2), stride=(2, 1), padding=(1, 1))
    x = rng.standard_normal((2, 3, 5, 4))
    cols = nn.im2col(nf.Tensor(x), **geo).data
    c = rng.standard_normal(cols.shape)
    back = nn.col2im(nf.Tensor(c), x_shape=x.shape, **geo).data
    np.testing.assert_allclose((cols * c).sum(), (x * back).sum(), rtol=1e-12)


def test_concat_conv2d_is_conv_on_time_channel(rng):
    m = nn.ConcatConv2d(2, 3, 3, padding=1, rng=rng)
    x = rng.standard_normal((2, 2, 5, 5))
    t = 0.37
    xt = np.concatenate([np.full((2, 1, 5, 5), t), x], axis=1)
    ref = direct_conv(xt, m.weight.data, m.bias.data, (1, 1), (1, 1))
    np.testing.assert_allclose(m(t, x).data, ref, rtol=1e-12, atol=1e-12)
    assert m.weight.shape == (3, 3, 3, 3)


def test_concat_conv2d_gradcheck_in_x_params_and_t(rng):
    m = nn.ConcatConv2d(2, 2, 3, padding=1, rng=rng)
    x = rng.standard_normal((1, 2, 4, 4))

    def f(t, x, w, b):
        with nn.using_parameters(m, [w, b]):
            return m(t, x)

    res = nf.gradcheck(f, np.array(0.4), x, m.weight.data, m.bias.data, mode="dot")
    assert res.ok, res.text


def test_conv2d_rejects_wrong_channels(rng):
    with pytest.raises(ValueError, match=r"`Conv2d\(3->8\)`: input has shape \(2, 4, 6, 6\) but the "
                                         r"layer expects \(N, 3, H, W\)"):
        nn.Conv2d(3, 8, 3, rng=rng)(np.zeros((2, 4, 6, 6)))
    with pytest.raises(ValueError, match=r"does not fit an input of spatial size 2x2"):
        nn.Conv2d(3, 8, 5, rng=rng)(np.zeros((1, 3, 2, 2)))


# ------------------------------------------------------------------ GroupNorm
def test_groupnorm_normalizes_each_group(rng):
    gn = nn.GroupNorm(2, 4)
    x = rng.standard_normal((3, 4, 5, 5)) * 3 + 7
    y = gn(x).data.reshape(3, 2, -1)
    np.testing.assert_allclose(y.mean(axis=2), 0, atol=1e-12)
    np.testing.assert_allclose(y.var(axis=2), 1, rtol=1e-3)   # eps = 1e-5 shrinks it slightly


def test_groupnorm_gradcheck(rng):
    gn = nn.GroupNorm(2, 4)
    x = rng.standard_normal((2, 4, 3, 3))
    g, b = rng.standard_normal(4), rng.standard_normal(4)

    def f(x, g, b):
        with nn.using_parameters(gn, [g, b]):
            return gn(x)

    res = nf.gradcheck(f, x, g, b, mode="both")
    assert res.ok, res.text


def test_groupnorm_rejects_bad_groups_and_input():
    with pytest.raises(ValueError, match=r"`num_groups`=3 must be >= 1 and divide `num_channels`=4"):
        nn.GroupNorm(3, 4)
    with pytest.raises(ValueError, match=r"`GroupNorm\(2, 4\)`: input has shape \(1, 6, 2, 2\)"):
        nn.GroupNorm(2, 4)(np.zeros((1, 6, 2, 2)))


def test_small_cnn_end_to_end_gradcheck(rng):
    net = nn.Sequential(nn.Conv2d(1, 4, 3, stride=2, padding=1, rng=rng), nn.GroupNorm(2, 4), nn.ReLU(),
                        nn.Conv2d(4, 4, 3, padding=1, rng=rng), nn.GlobalAvgPool2d(), nn.Flatten(),
                        nn.Linear(4, 3, rng=rng))
    x = rng.standard_normal((2, 1, 6, 6))
    y = np.array([0, 2])
    theta = nn.parameters_to_vector(net.parameters())

    def f(theta):
        with nn.using_parameters(net, nn.unflatten(theta, net.parameters())):
            return nn.cross_entropy(net(x), y)

    res = nf.gradcheck(f, theta, mode="dot", rtol=1e-4)
    assert res.ok, res.text


# ------------------------------------------------------------------ CuPy parity (skipped without a GPU)
@pytest.mark.parametrize("backend", BACKENDS)
def test_cnn_step_backend_parity(rng, backend):
    """A conv + GroupNorm + linear net, its loss, gradients and an Adam step agree across backends."""
    from nodeform import optim
    from nodeform.backend import get_backend, to_numpy
    xp = get_backend(backend)

    def run(xp_):
        nn.init.manual_seed(3)
        net = nn.Sequential(nn.ConcatConv2d(2, 4, 3, stride=2, padding=1), nn.GroupNorm(2, 4),
                            nn.ReLU(), nn.Flatten(), nn.Linear(4 * 9, 3))
        if xp_ is not np:
            net.to(backend="cupy")
        x = xp_.asarray(np.random.default_rng(0).standard_normal((5, 2, 6, 6)))
        y = xp_.asarray(np.array([0, 1, 2, 1, 0]))
        t = 0.3
        net_fwd = lambda x: net[4](net[3](net[2](net[1](net[0](t, x)))))  # noqa: E731
        opt = optim.Adam(net.parameters(), lr=0.01)
        loss = nn.cross_entropy(net_fwd(x), y)
        loss.backward()
        grads = [to_numpy(p.grad.data) for p in net.parameters()]
        opt.step()
        return float(loss.item()), grads, to_numpy(nn.parameters_to_vector(net.parameters()))

    l0, g0, th0 = run(np)
    l1, g1, th1 = run(xp)
    assert np.isclose(l0, l1, rtol=1e-10)
    for a, b in zip(g0, g1):
        np.testing.assert_allclose(b, a, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(th1, th0, rtol=1e-10, atol=1e-12)
