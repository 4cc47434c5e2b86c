"""The latent ODE of chapter 7: spiral data, ELBO gradients, the Poisson likelihood, batching."""
import numpy as np
import pytest

import nodeform as nf
from nodeform import nn, optim
from nodeform.data.spirals import checksum, make_spirals, spiral_curve, subsample
from nodeform.models.latent_ode import (LatentODE, PoissonLatentODE, RNNBaseline, compact,
                                        poisson_log_likelihood, previous_gaps)


# ------------------------------------------------------------------ data
def test_spirals_shapes_and_split():
    d = make_spirals(n_spirals=40, n_train=30, seed=3)
    assert d.t.shape == (200,) and d.truth.shape == d.noisy.shape == (40, 200, 2)
    assert np.allclose(np.diff(d.t), d.t[1])                  # equally spaced model times
    assert (d.train, d.test) == (slice(0, 30), slice(30, 40))
    noise = d.noisy - d.truth
    assert 0.25 < noise.std() < 0.35                          # the stated 0.3
    assert len(np.unique(d.start)) == 40                      # every spiral starts elsewhere


def test_spirals_half_clockwise_and_direction_is_right():
    d = make_spirals(n_spirals=100, n_train=80, seed=1)
    assert d.clockwise.sum() == 50
    # the signed area swept around each arm's centre: negative for clockwise
    c = np.where(d.clockwise, -5.0, 5.0)[:, None]
    x, y = d.truth[..., 0] - c, d.truth[..., 1]
    cross = x[:, :-1] * y[:, 1:] - y[:, :-1] * x[:, 1:]
    assert np.all((cross.sum(axis=1) < 0) == d.clockwise)


def test_spirals_are_seeded_and_checksummed():
    a, b = make_spirals(seed=0), make_spirals(seed=0)
    assert checksum(a.noisy) == checksum(b.noisy)
    assert checksum(a.noisy) != checksum(make_spirals(seed=1).noisy)
    # recorded when the generator was written; a change of the data set must be deliberate
    assert checksum(a.truth, a.noisy, a.clockwise, subsample(1000, 100, 30)) == "80c01188d3ab7699"


def test_subsample_rows_are_distinct_sorted_and_in_range():
    idx = subsample(50, 100, 30, seed=0)
    assert idx.shape == (50, 30)
    assert np.all(np.diff(idx, axis=1) > 0) and idx.min() >= 0 and idx.max() < 100
    assert not np.array_equal(idx[0], idx[1])
    assert np.array_equal(subsample(100, 100, 100)[0], np.arange(100))


def test_spirals_reject_bad_arguments():
    with pytest.raises(ValueError, match="`n_spirals`"):
        make_spirals(n_spirals=5)
    with pytest.raises(ValueError, match="`start_range`"):
        make_spirals(start_range=(100, 400))
    with pytest.raises(ValueError, match="`n_obs`"):
        subsample(10, 100, 0)


def test_finer_curve_grid_halves_the_step_on_the_same_curve():
    d5 = make_spirals(n_spirals=20, n_train=10, seed=1)
    d10 = make_spirals(n_spirals=20, n_train=10, seed=1, curve_points=1000)
    assert np.isclose(d10.t[1], 6 * np.pi / 999) and np.isclose(d5.t[1], 6 * np.pi / 499)
    assert d10.start.max() < 800 * 6 * np.pi / 999 and d10.start.min() >= 100 * 6 * np.pi / 999
    s = d10.start[:, None] + d10.t[None, :]
    assert np.allclose(d10.truth, spiral_curve(s, d10.clockwise[:, None]))
    with pytest.raises(ValueError, match="`curve_points`"):
        make_spirals(curve_points=150)


def test_spiral_curve_is_an_orbit_of_an_autonomous_field():
    """ccw: r' = b, theta' = 1; so shifting the start shifts the curve (time invariance)."""
    s = np.linspace(4.0, 6.0, 5)
    p = spiral_curve(s, False) - [5.0, 0.0]
    assert np.allclose(np.hypot(*p.T), 0.3 * s)


# ------------------------------------------------------------------ batching helpers
def test_compact_and_gaps():
    mask = np.array([[0, 1, 0, 1], [1, 1, 1, 0]], bool)
    idx, valid = compact(mask)
    assert idx.tolist() == [[1, 3, 3], [0, 1, 2]] and valid.tolist() == [[1, 1, 0], [1, 1, 1]]
    t = np.array([0.0, 0.5, 1.5, 3.0])
    g = previous_gaps(t[idx], valid, 0.0)
    assert np.allclose(g, [[0.5, 2.5, 0.0], [0.0, 0.5, 1.0]])


def _tiny(seed=0, **kw):
    return LatentODE(obs_dim=2, latent_dim=2, rnn_hidden=3, dyn_hidden=3, dec_hidden=3, obs_std=0.5,
                     rng=seed, **kw)


def _batch(rng, N=3, T=5):
    t = np.linspace(0.0, 1.0, T)
    x = rng.standard_normal((N, T, 2))
    mask = rng.random((N, T)) < 0.6
    mask[:, 2] = True
    mask[0, -1] = False
    return x, t, mask


def test_union_solve_equals_per_sequence_solves(rng):
    """One solve over the union of times, masked, gives each sequence what its own solve gives."""
    model = _tiny()
    x, t, mask = _batch(rng, N=4, T=6)
    tight = {"rtol": 1e-10, "atol": 1e-12}
    z0 = nf.Tensor(rng.standard_normal((4, 2)))
    cols = np.flatnonzero(mask.any(axis=0))
    together = model.trajectories(z0, t[cols], 0.0, grad="continuous", solver=tight).data
    for i in range(4):
        own = np.flatnonzero(mask[i])
        alone = model.trajectories(z0[i:i + 1], t[own], 0.0, grad="continuous", solver=tight).data
        assert np.allclose(together[np.searchsorted(t[cols], t[own]), i], alone[:, 0], atol=1e-8)


class _FixedNoise:
    """Stands in for a Generator: hands out rows of a fixed noise array, in order."""

    def __init__(self, eps):
        self.eps, self.at = eps, 0

    def standard_normal(self, shape):
        out = self.eps[self.at:self.at + shape[0]]
        self.at += shape[0]
        return out.reshape(shape)


def test_batch_loss_is_the_mean_of_per_sequence_losses(rng):
    """Decoding only each sequence's observed times of the union (rows padded) loses no term."""
    model = _tiny()
    x, t, mask = _batch(rng, N=4, T=6)
    assert len(set(mask.sum(axis=1))) > 1                     # unequal counts: padding is used
    eps = rng.standard_normal((4, 2))
    tight = {"rtol": 1e-10, "atol": 1e-12}
    batch, info = model.loss(x, t, mask, _FixedNoise(eps), grad="continuous", solver=tight)
    alone = [float(model.loss(x[i:i + 1], t, mask[i:i + 1], _FixedNoise(eps[i:i + 1]),
                              grad="continuous", solver=tight)[0].data) for i in range(4)]
    assert abs(float(batch.data) - np.mean(alone)) < 1e-8 * abs(np.mean(alone))


def test_float32_model_matches_float64(rng):
    """The float32 model path (the speed option of bench/bench_latent_ode.py) computes the same loss."""
    x, t, mask = _batch(rng)
    out = {}
    for dt in (np.float64, np.float32):
        model = _tiny(dtype=dt)
        if dt is np.float32:                                   # the float64 model's weights, rounded
            model.load_state_dict({k: v.astype(np.float32) for k, v in out[np.float64][2].items()})
        loss, _ = model.loss(x, t, mask, np.random.default_rng(7), grad="backprop")
        loss.backward()
        out[dt] = (loss, model.theta.grad, model.state_dict())
    l64, g64, _ = out[np.float64]
    l32, g32, _ = out[np.float32]
    g64, g32 = (getattr(g, "data", g) for g in (g64, g32))
    assert l32.dtype == np.float32 and g32.dtype == np.float32
    assert abs(float(l32.data) - float(l64.data)) < 1e-4 * abs(float(l64.data))
    assert np.allclose(g32, g64, rtol=1e-3, atol=1e-4 * np.abs(g64).max())


def _loss_fn(model, x, t, mask, grad, solver):
    names = [n for n, _ in model.named_parameters()]

    def fun(*ps):
        with nn.using_parameters(model, ps):
            return model.loss(x, t, mask, np.random.default_rng(7), grad=grad, solver=solver)[0]
    return fun, names


@pytest.mark.parametrize("grad,solver,rtol", [
    ("backprop", {"method": "rk4", "step_size": 0.1}, 1e-6),     # exact for the discrete scheme
    ("continuous", {"rtol": 1e-10, "atol": 1e-12}, 1e-4),        # the adjoint: O(tolerance)
])
def test_elbo_gradient_matches_finite_differences(rng, grad, solver, rtol):
    model = _tiny()
    x, t, mask = _batch(rng)
    fun, _ = _loss_fn(model, x, t, mask, grad, solver)
    params = [p.data.copy() for p in model.parameters()]
    r = nf.gradcheck(fun, *params, rtol=rtol, atol=1e-7, mode="dot", eps=1e-5)
    assert r.ok, r.text


def test_numba_fast_path_matches_autodiff_model(rng):
    """The compiled field with its hand VJPs gives the same loss and gradients as the autodiff one."""
    model = _tiny()
    x, t, mask = _batch(rng)
    tight = {"rtol": 1e-10, "atol": 1e-12}
    out = {}
    for grad in ("numba", "continuous"):
        model.zero_grad()
        loss, _ = model.loss(x, t, mask, np.random.default_rng(7), grad=grad, solver=tight)
        loss.backward()
        out[grad] = (float(loss.data), [p.grad.data.copy() if hasattr(p.grad, "data") else p.grad.copy()
                                         for p in model.parameters()])
    assert abs(out["numba"][0] - out["continuous"][0]) < 1e-9 * abs(out["numba"][0])
    for a, b in zip(out["numba"][1], out["continuous"][1]):
        assert np.allclose(a, b, rtol=1e-6, atol=1e-9)


def test_kl_term_is_zero_at_the_prior_and_positive_elsewhere(rng):
    model = _tiny()
    x, t, mask = _batch(rng)
    mu, logvar = model.posterior(x, t, mask)
    kl = nn.kl_diag_gaussians(mu, logvar, reduction="none").data
    closed = 0.5 * (np.exp(logvar.data) + mu.data ** 2 - 1 - logvar.data).sum(axis=1)
    assert np.allclose(kl, closed) and np.all(kl > 0)


def test_training_steps_lower_the_loss():
    d = make_spirals(n_spirals=40, n_train=32, seed=2)
    mean, scale = d.normalizer()
    x = (d.noisy[d.train, :100] - mean) / scale
    mask = np.zeros((32, 100), bool)
    mask[np.arange(32)[:, None], subsample(32, 100, 20)] = True
    for model, step in [(_tiny(dt_scale=d.t[1]), "ode"), (RNNBaseline(obs_std=0.5, dt_scale=d.t[1], rng=0), "rnn")]:
        opt = optim.Adam(model.parameters(), lr=0.02)
        rng = np.random.default_rng(0)
        losses = []
        for _ in range(8):
            opt.zero_grad()
            if step == "ode":
                loss = model.loss(x, d.t[:100], mask, rng, grad="backprop")[0]
            else:
                loss = model.loss(x, d.t[:100], mask)
            loss.backward()
            opt.step()
            losses.append(float(loss.data))
        assert losses[-1] < 0.8 * losses[0], (step, losses)


def test_rnn_rollout_shapes_and_time_input(rng):
    x, t, mask = _batch(rng, N=3, T=5)
    for ti in (True, False):
        m = RNNBaseline(time_input=ti, rng=0)
        pred = m.predict(x, t, mask, np.array([1.5, 2.0, 2.5]))
        assert pred.shape == (3, 3, 2) and np.all(np.isfinite(pred))
    with pytest.raises(ValueError, match="`t_pred`"):
        RNNBaseline(rng=0).predict(x, t, mask, np.array([0.5, 2.0]))


def test_latent_ode_activations_elu_dynamics_relu_decoder(rng):
    """torchdiffeq's activations: both gradient paths agree, the decoder is piecewise linear."""
    x, t, mask = _batch(rng)
    m = _tiny(dyn_act="elu", dec_act="relu")
    z = nf.Tensor(rng.standard_normal((4, 2)))
    assert np.allclose(m.dynamics(presliced=True)(0.0, z).data, m.dynamics()(0.0, z).data, rtol=1e-13)
    grads = []
    for grad in ("backprop", "continuous"):
        m.zero_grad()
        loss, _ = m.loss(x, t, mask, np.random.default_rng(0), grad=grad, solver={"rtol": 1e-9, "atol": 1e-11})
        loss.backward()
        grads.append(m.theta.grad.data.copy() if isinstance(m.theta.grad, nf.Tensor) else m.theta.grad.copy())
    assert np.allclose(grads[0], grads[1], rtol=1e-4, atol=1e-6)    # adjoint vs backprop: solve error
    with pytest.raises(ValueError, match="`dec_act`"):
        _tiny(dec_act="gelu")


def test_rnn_scaled_step_multiplies_the_increment_by_the_gap(rng):
    """At gap 1 the scaled RNN is the plain one; at gap g its step is g times the plain step."""
    x, t, mask = _batch(rng, N=3, T=5)
    plain, scaled = RNNBaseline(rng=0), RNNBaseline(rng=0, scaled_step=True)
    h = plain.cell.initial_state(3)
    xs = nf.Tensor(x[:, 0])
    for g in (1.0, 2.5):
        _, p1 = plain.step(xs, np.full(3, g), h)
        _, p2 = scaled.step(xs, np.full(3, g), h)
        assert np.allclose(p2.data - x[:, 0], g * (p1.data - x[:, 0]), rtol=1e-12)
    pred = scaled.predict(x, t, mask, np.array([1.5, 2.0, 2.5]))
    assert pred.shape == (3, 3, 2) and np.all(np.isfinite(pred))
    with pytest.raises(ValueError, match="`scaled_step=True`"):
        RNNBaseline(time_input=False, scaled_step=True)


def test_rnn_scaled_step_loss_gradient_matches_finite_differences(rng):
    x, t, mask = _batch(rng, N=3, T=5)
    model = RNNBaseline(hidden=3, obs_std=0.5, rng=0, scaled_step=True)

    def fun(*ps):
        with nn.using_parameters(model, ps):
            return model.loss(x, t, mask)
    r = nf.gradcheck(fun, *[p.data.copy() for p in model.parameters()], rtol=1e-6, mode="dot")
    assert r.ok, r.text


# ------------------------------------------------------------------ the Poisson process
def test_poisson_log_likelihood_constant_rate():
    """lambda = c: log p = N log c - c (t_end - t_start)."""
    c, ev = 1.7, np.array([[0.3, 1.1, 2.0, 2.9]])
    ll = poisson_log_likelihood(lambda t, z: z * 0.0, lambda z: z[:, 0] * 0.0 + c,
                                nf.Tensor(np.zeros((1, 1))), ev, 0.0, 3.0)
    assert np.isclose(ll.data[0], 4 * np.log(c) - c * 3.0, rtol=1e-10)


def test_poisson_log_likelihood_linear_rate():
    """z' = 1 so z = t; lambda = a + b z: log p = sum log(a + b t_i) - (a T + b T^2 / 2)."""
    a, b, T = 0.5, 2.0, 2.5
    ev = np.array([[0.2, 0.9, 1.4, 2.2, 2.5], [0.1, 0.5, 0.6, 1.0, 1.0]])
    mask = np.array([[1, 1, 1, 1, 1], [1, 1, 1, 1, 0]], bool)
    ll = poisson_log_likelihood(lambda t, z: z * 0.0 + 1.0, lambda z: a + b * z[:, 0],
                                nf.Tensor(np.zeros((2, 1))), ev, 0.0, T, event_mask=mask)
    want = [(np.log(a + b * e[m])).sum() - (a * T + b * T * T / 2) for e, m in zip(ev, mask)]
    assert np.allclose(ll.data, want, rtol=1e-8)


def test_poisson_gradient_matches_finite_differences(rng):
    model = PoissonLatentODE(latent_dim=2, hidden=3, rng=0)
    ev = np.sort(rng.uniform(0.0, 2.0, (2, 4)), axis=1)

    def fun(*ps):
        with nn.using_parameters(model, ps):
            return model.log_likelihood(ev, 0.0, 2.0, method="rk4", step_size=0.05).sum()
    r = nf.gradcheck(fun, *[p.data.copy() for p in model.parameters()], rtol=1e-6, mode="dot")
    assert r.ok, r.text


def test_poisson_rejects_events_outside_the_window():
    with pytest.raises(ValueError, match="t_start, t_end"):
        poisson_log_likelihood(lambda t, z: z, lambda z: z[:, 0], nf.Tensor(np.zeros((1, 1))),
                               np.array([[3.5]]), 0.0, 3.0)


def test_toy_events_have_the_rate_they_claim():
    """Mean count over 300 realizations = integral of the rate (to 4 standard errors)."""
    from nodeform.data.events import TOY_RATE_MAX, poisson_events, toy_rate
    times, mask = poisson_events(toy_rate, 10.0, TOY_RATE_MAX, n_realizations=300, seed=0)
    expect = 30.0 + 2.0 * (1.0 - np.cos(9.0)) / 0.9
    assert abs(mask.sum(axis=1).mean() - expect) < 4 * np.sqrt(expect / 300)
    assert np.all(times[mask] > 0) and np.all(times[mask] <= 10.0)
    # thinning keeps more events where the rate is high: first half vs second half of a period
    hi = ((times > 0.2) & (times < 3.3) & mask).sum()
    lo = ((times > 3.7) & (times < 6.8) & mask).sum()
    assert hi > 1.5 * lo


def test_mirror_clockwise_arm_is_the_reflected_counter_clockwise_arm():
    s = np.linspace(4.0, 8.0, 7)
    a, b = spiral_curve(s, False, "mirror"), spiral_curve(s, True, "mirror")
    assert np.allclose(b[:, 0] + 5.0, a[:, 0] - 5.0) and np.allclose(b[:, 1], -a[:, 1])
    with pytest.raises(ValueError, match="`cw_curve`"):
        spiral_curve(s, True, "spiral")


# ------------------------------------------------------------------ the Table 2 protocol and runner
def test_clip_grad_norm_scales_only_large_gradients():
    from nodeform.models.spiral_protocol import clip_grad_norm
    a, b = nn.Parameter(np.zeros(2)), nn.Parameter(np.zeros(1))
    a.grad, b.grad = np.array([3.0, 0.0]), np.array([4.0])
    assert clip_grad_norm([a, b], 10.0) == pytest.approx(5.0)          # below: untouched
    assert a.grad.tolist() == [3.0, 0.0] and b.grad.tolist() == [4.0]
    assert clip_grad_norm([a, b], 1.0) == pytest.approx(5.0)           # above: scaled to norm 1
    assert np.allclose(a.grad, [0.6, 0.0]) and np.allclose(b.grad, [0.8])


def test_table2_runner_collects_what_it_trained(tmp_path):
    """Milestone scores and weights come back through collect / load_models unchanged."""
    from nodeform.experiments import table2_spirals as t2
    from nodeform.models.spiral_protocol import Protocol, scores
    p = Protocol(n_obs=(30,), ode_dtype="float32")
    for group in ("ode", "rnn"):
        t2.run(group, p, milestones=(1, 2), out=str(tmp_path), log_every=0)
    res, weights = t2.collect(str(tmp_path), milestone=2)
    assert res["milestone"] == 2 and set(res["results"]["30"]) == {"latent_ode", "rnn_dt", "rnn"}
    D, ode, rnn_dt, rnn = t2.load_models(weights, res["protocol"]["ode"], 30)
    assert ode.theta.dtype == np.float32
    again = scores(rnn_dt.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"]), D)["noisy"]
    assert again == pytest.approx(res["results"]["30"]["rnn_dt"]["noisy"], rel=1e-12)
    assert len(res["rmse_by_milestone"]["latent_ode_n30"]) == 2
    with pytest.raises(ValueError, match="`milestone` 3"):
        t2.collect(str(tmp_path), milestone=3)


def test_load_models_reads_results_written_before_the_activation_fields():
    """A protocol without dyn_act / dec_act (older results files) rebuilds the tanh model."""
    from dataclasses import asdict
    from nodeform.experiments import table2_spirals as t2
    from nodeform.models.spiral_protocol import Protocol, make_model, prepare
    old = {k: v for k, v in asdict(Protocol(n_obs=(30,))).items() if k not in ("dyn_act", "dec_act")}
    p, D = Protocol(n_obs=(30,)), prepare(Protocol(n_obs=(30,)), 30)
    weights = {f"{kind}_n30/{k}": v for kind in ("latent_ode", "rnn_dt", "rnn")
               for k, v in make_model(kind, p, D, rng=0).state_dict().items()}
    _, ode, _, _ = t2.load_models(weights, old, 30)
    assert ode.dyn_act == ode.dec_act == "tanh"
    _, ode, _, _ = t2.load_models(weights, asdict(Protocol(n_obs=(30,))), 30)
    assert (ode.dyn_act, ode.dec_act) == (Protocol.dyn_act, Protocol.dec_act)


def test_lr_schedule_decays_from_lr_to_lr_final():
    from nodeform.models.spiral_protocol import Protocol, lr_schedule
    assert lr_schedule(Protocol(), 100) == 0.01
    f = lr_schedule(Protocol(lr=0.01, lr_final=0.001), 101)
    assert f(0) == pytest.approx(0.01) and f(50) == pytest.approx(0.01 * 0.1 ** 0.5)
    assert f(100) == pytest.approx(0.001) and f(500) == pytest.approx(0.001)
    with pytest.raises(ValueError, match="`lr_final`"):
        lr_schedule(Protocol(lr_final=0.0), 10)


def test_table2_runner_extra_rnn_group(tmp_path):
    """The optional rnn_step group is collected when present and loaded with extra=True."""
    from nodeform.experiments import table2_spirals as t2
    from nodeform.models.spiral_protocol import Protocol, make_model, scores
    p = Protocol(n_obs=(30,), ode_dtype="float32", cw_curve="mirror", init_seed=3)
    for group in ("ode", "rnn", "rnn_step"):
        t2.run(group, p, milestones=(1,), out=str(tmp_path), log_every=0)
    res, weights = t2.collect(str(tmp_path))
    assert set(res["results"]["30"]) == {"latent_ode", "rnn_dt", "rnn", "rnn_dt_step"}
    D, _, _, _, extra = t2.load_models(weights, res["protocol"]["ode"], 30, extra=True)
    assert D["data"].clockwise.sum() == 500 and set(extra) == {"rnn_dt_step"}
    m = extra["rnn_dt_step"]
    assert m.scaled_step
    again = scores(m.predict(D["x_te"], D["t"], D["m_te"], D["t_ext"]), D)["noisy"]
    assert again == pytest.approx(res["results"]["30"]["rnn_dt_step"]["noisy"], rel=1e-12)
    with pytest.raises(ValueError, match="unknown model kind"):
        make_model("gru", p, D)
    summ = t2.summarize([str(tmp_path), str(tmp_path)])             # two "seeds", the same run
    e = summ["rmse"]["30"]["rnn_dt_step"]
    assert summ["milestone"] == 1 and e["runs"] == [e["mean"]] * 2 == [e["last_mean_mean"]] * 2


def test_protocol_trainers_seed_weights_by_init_seed():
    """`train_latent_ode` / `train_rnn` start from the weights of `init_seed` (else `seed`)."""
    from dataclasses import replace
    from nodeform.models.spiral_protocol import (Protocol, make_model, prepare, train_latent_ode,
                                                 train_rnn, weight_seed)
    p = Protocol(n_obs=(30,), init_seed=3)
    D = prepare(p, 30)
    assert weight_seed(p) == 3 and weight_seed(replace(p, init_seed=None)) == p.seed
    for kind, (model, _) in (("latent_ode", train_latent_ode(p, D, iters=0)),
                             ("rnn", train_rnn(p, D, time_input=False, iters=0))):
        same, other = make_model(kind, p, D, rng=3), make_model(kind, p, D, rng=p.seed)
        got = model.state_dict()
        assert all(np.array_equal(got[k], v) for k, v in same.state_dict().items())
        assert not all(np.array_equal(got[k], v) for k, v in other.state_dict().items())
