"""Table 1's models (nodeform/models/odenet.py), the fused GroupNorm and ConcatConv2d, and `train`."""
import gzip
import json
import os
import signal
import struct

import numpy as np
import pytest

import nodeform as nf
from nodeform import cli, nn, optim
from nodeform.autodiff import functions as F
from nodeform.experiments import table1
from nodeform.models import odenet
from nodeform.nn.norm import group_norm, group_norm_composed
from nodeform.nn.serialize import load_arrays

# Small models for the gradient checks: width 8 (GroupNorm of 8 groups of 1 channel) on
# 16x16 images, so the stem gives 3x3 maps and every group holds 9 values. Groups that
# small make the models strongly curved: the central differences take eps = 1e-7
# (their truncation error, ~eps^2, was 10x the tolerance at eps = 1e-6 on 2x2 maps).
TINY = dict(width=8, dtype=np.float64)
EPS = 1e-7
#: A fixed RK4 grid makes the ODE block smooth in its inputs (no step-size switching). The
#: continuous adjoint is the gradient of the exact flow, off the grid's by O(h^4): 5e-6 of the
#: largest entry at h = 0.05 on 3x3 maps (0.4% on 2x2 maps, whose fields are stiffer; measured).
FIXED = dict(method="rk4", options={"step_size": 0.05})
SIZE = 16


# ------------------------------------------------------------------ shapes and parameters
def _conv(i, o, k, bias=True):
    return o * i * k * k + (o if bias else 0)


def _expected_params(name, width=64):
    gn = 2 * width
    stem = _conv(1, width, 3) + gn + 2 * _conv(width, width, 4) + gn
    head = gn + width * 10 + 10
    if name in ("odenet", "rknet"):
        return stem + 3 * gn + 2 * _conv(width + 1, width, 3) + head
    if name == "resnet":
        return stem + 6 * (2 * gn + 2 * _conv(width, width, 3, bias=False)) + head
    return 784 * 300 + 300 + 300 * 10 + 10


@pytest.mark.parametrize("name", odenet.MODELS)
def test_model_shapes_and_parameter_counts(name, rng):
    model = odenet.build_model(name, dtype=np.float32)
    assert model.num_parameters() == _expected_params(name)
    out = model(rng.random((2, 1, 28, 28), dtype=np.float32))
    assert out.shape == (2, 10) and out.dtype == np.float32
    assert np.isfinite(out.data).all()


def test_parameter_counts_match_the_anchor():
    """The anchor's counts (PERF-NOTES.md): ODE-Net 208,266 and MLP 238,510; paper 0.22 M / 0.24 M."""
    assert odenet.build_model("odenet").num_parameters() == odenet.ANCHOR["odenet"]["params"]
    assert odenet.build_model("mlp").num_parameters() == odenet.ANCHOR["mlp"]["params"]
    assert round(odenet.build_model("mlp").num_parameters() / 1e6, 2) == odenet.PAPER_PARAMS["mlp"]


def test_ode_block_reports_nfe_forward_and_backward(rng):
    model = odenet.ODENet(**TINY)
    loss = nn.cross_entropy(model(rng.random((3, 1, SIZE, SIZE))), np.array([0, 1, 2]))
    nfe_f = model.stats.nfe_forward
    assert nfe_f >= 8 and nfe_f % 6 == 2 and model.stats.nfe_backward == 0   # dopri5: 6 per step + 2
    loss.backward()
    assert model.stats.nfe_backward > 0 and model.stats.nfe_forward == nfe_f


def test_build_model_rejects_unknown_names_and_options():
    with pytest.raises(ValueError, match=r"unknown model `odenett`; choose one of odenet, rknet"):
        odenet.build_model("odenett")
    with pytest.raises(TypeError, match=r"`build_model\('mlp', \.\.\.\)`.*blocks"):
        odenet.build_model("mlp", blocks=3)
    with pytest.raises(ValueError, match=r"`adjoint` must be one of"):
        odenet.ODEBlock(odenet.ODEFunc(8), adjoint="adjoint")
    with pytest.raises(ValueError, match=r"expected \(N, 1, H, W\)"):
        odenet.ResNet(**TINY)(np.zeros((2, 3, SIZE, SIZE)))


# ------------------------------------------------------------------ gradients of whole models
def _dot_product_check(model, x, rng, eps=EPS, n_directions=2):
    """``<grad s, u>`` by backward against ``(s(w + eps u) - s(w - eps u)) / 2 eps``, s = <v, model(x)>.

    Returns the largest difference over the directions, relative to ``|grad s| |u|``.

    The parameters are moved in place (not swapped for other Tensors with
    ``nn.using_parameters``): the continuous adjoint evaluates the vector field again
    during ``backward()``, after such a block would have put the old parameters back.
    """
    params = list(model.parameters())
    xt = nf.Tensor(x, requires_grad=True)
    out = model(xt)
    v = rng.standard_normal(out.shape)
    (out * v).sum().backward()
    grads = [xt.grad.data] + [p.grad.data for p in params]
    values = [x] + [p.data for p in params]
    worst = 0.0
    for _ in range(n_directions):
        us = [rng.standard_normal(a.shape) for a in values]
        analytic = sum(float((g * u).sum()) for g, u in zip(grads, us))
        s = []
        for sign in (1.0, -1.0):
            for p, w, u in zip(params, values[1:], us[1:]):
                p.data = w + sign * eps * u
            with nf.no_grad():
                s.append(float((model(x + sign * eps * us[0]).data * v).sum()))
        for p, w in zip(params, values[1:]):
            p.data = w
        numeric = (s[0] - s[1]) / (2 * eps)
        # relative to |grad| |u|, the size <grad, u> has for a direction not orthogonal to grad
        scale = np.sqrt(sum(float((g * g).sum()) for g in grads) * sum(float((u * u).sum()) for u in us))
        worst = max(worst, abs(analytic - numeric) / scale)
    return worst


@pytest.mark.parametrize("name,rtol", [("rknet", 1e-8), ("odenet", 1e-3), ("resnet", 1e-8),
                                       ("mlp", 1e-8)])
def test_model_gradient_dot_product_float64(name, rtol, rng):
    """Image and every parameter at once. Exact gradients agree to ~1e-11 (measured); the continuous
    adjoint, the exact flow's gradient, to 1e-4..3e-4 of the RK4 grid's at h = 0.05 (4 seeds)."""
    opts = {"rknet": dict(TINY, **FIXED), "odenet": dict(TINY, **FIXED), "resnet": TINY,
            "mlp": dict(in_features=SIZE * SIZE, hidden=5, dtype=np.float64)}[name]
    model = odenet.build_model(name, rng=1, **opts)
    assert _dot_product_check(model, rng.random((1, 1, SIZE, SIZE)), rng) < rtol


@pytest.mark.slow
def test_odenet_adjoint_matches_rknet_backprop(rng):
    """Same weights, same RK4 grid: the continuous adjoint agrees with backprop through the solver.

    Measured gap (relative, 2-norm over all parameters): 1.5e-2 at h = 0.05, 1.4e-4 at h = 0.025
    and again 1.4e-4 at h = 0.0125 (a floor not explained by the O(h^4) of the grid; see the
    chapter 4 report).
    """
    kw = dict(TINY, rng=3, method="rk4", options={"step_size": 0.025})
    ode, rk = odenet.ODENet(**kw), odenet.RKNet(**kw)
    x, y = rng.random((2, 1, SIZE, SIZE)), np.array([3, 7])
    for m in (ode, rk):
        nn.cross_entropy(m(x), y).backward()
    a, b = (np.concatenate([p.grad.data.ravel() for p in m.parameters()]) for m in (ode, rk))
    assert np.linalg.norm(a - b) < 1e-3 * np.linalg.norm(b)
    assert np.linalg.norm(a - b) > 0                 # two different methods, not one run twice


@pytest.mark.parametrize("name", odenet.MODELS)
def test_one_sgd_step_lowers_the_loss(name, rng):
    opts = dict(in_features=SIZE * SIZE, dtype=np.float64) if name == "mlp" else TINY
    model = odenet.build_model(name, rng=0, **opts)
    x, y = rng.random((16, 1, SIZE, SIZE)), rng.integers(0, 10, 16)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    before = nn.cross_entropy(model(x), y)
    before.backward()
    opt.step()
    after = nn.cross_entropy(model(x), y).item()
    assert after < before.item() - 1e-4


# ------------------------------------------------------------------ fused GroupNorm
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "2d"])
def test_fused_group_norm_matches_composed(layout, rng):
    if layout == "2d":
        x0 = rng.standard_normal((5, 6)) * 3 + 2
    else:
        x0 = rng.standard_normal((3, 5, 4, 6)).transpose(0, 3, 1, 2) * 3 + 2    # (3, 6, 5, 4)
        x0 = np.ascontiguousarray(x0) if layout == "nchw" else x0
    w0, b0 = rng.standard_normal(6), rng.standard_normal(6)
    g = rng.standard_normal(x0.shape)
    outs = []
    for fn in (group_norm, group_norm_composed):
        x, w, b = (nf.Tensor(a, requires_grad=True) for a in (x0, w0, b0))
        y = fn(x, w, b, 3)
        y.backward(g)
        outs.append([y.data, x.grad.data, w.grad.data, b.grad.data])
    for got, want, what in zip(*outs, ("y", "dx", "dgamma", "dbeta")):
        np.testing.assert_allclose(got, want, rtol=1e-11, atol=1e-12, err_msg=what)


@pytest.mark.parametrize("order", [1, 2])
def test_fused_group_norm_gradcheck(order, rng):
    x = rng.standard_normal((2, 4, 3, 2))
    w, b = rng.standard_normal(4), rng.standard_normal(4)
    f = lambda x, w, b: nf.tanh(group_norm(x, w, b, 2))                         # noqa: E731
    res = nf.gradcheck(f, x, w, b, order=order, mode="both" if order == 1 else "dot")
    assert res.ok, res.text
    res = nf.gradcheck(lambda x: group_norm(x, None, None, 4) ** 2.0, x, order=order, mode="dot")
    assert res.ok, res.text


def test_fused_group_norm_float32_stays_float32(rng):
    x = nf.Tensor(rng.standard_normal((2, 4, 3, 3)).astype(np.float32), requires_grad=True)
    y = nn.GroupNorm(2, 4, dtype=np.float32)(x)
    y.sum().backward()
    assert y.dtype == np.float32 and x.grad.dtype == np.float32


# ------------------------------------------------------------------ ConcatConv2d without concatenation
@pytest.mark.parametrize("t_kind", ["float", "tensor"])
def test_concat_conv_matches_concatenated_input(t_kind, rng):
    conv = nn.ConcatConv2d(3, 4, 3, stride=2, padding=1, rng=rng)
    x0, t0 = rng.standard_normal((2, 3, 5, 5)), 0.37
    g = rng.standard_normal((2, 4, 3, 3))
    res = []
    for fused in (True, False):
        x = nf.Tensor(x0, requires_grad=True)
        t = nf.Tensor(np.array(t0), requires_grad=True) if t_kind == "tensor" else t0
        conv.zero_grad()
        if fused:
            y = conv(t, x)
        else:
            tt = F.broadcast_to(F.reshape(t, 1, 1, 1, 1), (2, 1, 5, 5)) if t_kind == "tensor" \
                else nf.Tensor(np.full((2, 1, 5, 5), t0))
            y = nn.conv2d(F.concatenate([tt, x], axis=1), conv.weight, conv.bias, 2, 1)
        y.backward(g)
        res.append([y.data, x.grad.data, conv.weight.grad.data, conv.bias.grad.data]
                   + ([t.grad.data] if t_kind == "tensor" else []))
    for got, want in zip(*res):
        np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12)


# ------------------------------------------------------------------ the `train` command
def _write_idx(path, arr):
    codes = {np.dtype(np.uint8): 0x08}
    with gzip.open(path, "wb") as f:
        f.write(bytes([0, 0, codes[arr.dtype], arr.ndim]) + struct.pack(f">{arr.ndim}I", *arr.shape))
        f.write(arr.tobytes())


def _idx_dir(tmp_path, rng, n_train=48, n_test=20, size=28):
    d = tmp_path / f"idx{size}"
    d.mkdir()
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        images = rng.integers(0, 256, (n, size, size), dtype=np.uint8)
        _write_idx(d / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(d / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, 10, n, dtype=np.uint8))
    return str(d)


def _train(*args):
    return cli.main(["train", *args, "--no-progress"])


def test_train_interrupted_and_resumed_is_bit_identical(tmp_path, rng, monkeypatch):
    data = _idx_dir(tmp_path, rng)
    common = ["mlp", "--data", data, "--batch-size", "8", "--epochs", "1", "--max-steps", "4"]
    assert _train(*common, "--out", str(tmp_path / "a")) == 0

    calls = []
    real = table1.loss_fn

    def interrupting(model, batch, rng):
        calls.append(1)
        if len(calls) == 2:                                   # Ctrl-C during the second step
            os.kill(os.getpid(), signal.SIGINT)
        return real(model, batch, rng)

    monkeypatch.setattr(table1, "loss_fn", interrupting)
    assert _train(*common, "--out", str(tmp_path / "b")) == 130
    assert load_arrays(str(tmp_path / "b" / "checkpoint.npz"))[1]["step"] == 2
    monkeypatch.setattr(table1, "loss_fn", real)
    assert _train(*common, "--out", str(tmp_path / "b"), "--resume") == 0

    a, meta_a = load_arrays(str(tmp_path / "a" / "checkpoint.npz"))
    b, meta_b = load_arrays(str(tmp_path / "b" / "checkpoint.npz"))
    assert meta_a["step"] == meta_b["step"] == 4
    assert sorted(a) == sorted(b)
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)   # bit for bit
    res = json.loads((tmp_path / "b" / "results.json").read_text())
    assert res["settings"]["batch_size"] == 8 and res["epochs"][-1]["step"] == 4


@pytest.mark.slow
def test_train_odenet_writes_results_with_nfe(tmp_path, rng):
    data = _idx_dir(tmp_path, rng, n_train=8, n_test=4)
    out = tmp_path / "ode"
    assert _train("odenet", "--data", data, "--batch-size", "4", "--max-steps", "1",
                  "--out", str(out)) == 0
    res = json.loads((out / "results.json").read_text())
    ep = res["epochs"][-1]
    assert res["params"] == 208_266 and ep["step"] == 1
    assert ep["nfe_forward"] >= 8 and ep["nfe_backward"] > 0
    assert 0.0 <= res["final_test_error"] <= 100.0 and ep["seconds"] > 0
    log = [json.loads(line) for line in (out / "log.jsonl").read_text().splitlines()]
    assert any("eval_accuracy" in r for r in log)


def test_train_rejects_bad_data_path(tmp_path, capsys):
    assert _train("mlp", "--data", str(tmp_path / "nowhere"), "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "`--data`" in err and "is not a directory" in err and "IDX files" in err


def test_train_rejects_wrong_shaped_idx(tmp_path, rng, capsys):
    data = _idx_dir(tmp_path, rng, n_train=8, n_test=4, size=20)
    assert _train("mlp", "--data", data, "--out", str(tmp_path / "r")) == 2
    err = capsys.readouterr().err
    assert "`--data`" in err and "(1, 20, 20)" in err and "28x28" in err


def test_train_refuses_to_overwrite_a_run_and_resume_without_one(tmp_path, rng, capsys):
    data = _idx_dir(tmp_path, rng, n_train=16, n_test=4)
    out = str(tmp_path / "r")
    assert _train("mlp", "--data", data, "--batch-size", "8", "--max-steps", "1", "--out", out) == 0
    assert _train("mlp", "--data", data, "--batch-size", "8", "--max-steps", "1", "--out", out) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert _train("mlp", "--data", data, "--out", str(tmp_path / "s"), "--resume") == 2
    assert "`--resume`: no checkpoint" in capsys.readouterr().err


def test_train_resume_of_a_finished_run_adds_no_epoch(tmp_path, rng):
    data = _idx_dir(tmp_path, rng, n_train=16, n_test=4)
    args = ["mlp", "--data", data, "--batch-size", "8", "--epochs", "2", "--out", str(tmp_path / "r")]
    assert _train(*args) == 0
    assert _train(*args, "--resume") == 0
    res = json.loads((tmp_path / "r" / "results.json").read_text())
    assert [r["epoch"] for r in res["epochs"]] == [1, 2] and res["epochs"][-1]["step"] == 4
