"""One training step of each model of chapters 4-7 on a chosen backend, for the parity tests.

Each ``*_step(backend, dtype)`` builds the model from a fixed seed on the host,
moves it (and its data) to ``backend`` with ``Module.to`` and ``xp.asarray``, runs
one loss and ``backward()``, and returns a :class:`StepResult` on the host: the
loss, every parameter gradient, the solver statistics and the host syncs the step
made (:func:`nodeform.backend.sync_count`). The sizes are small, so the NumPy
reference in float64 takes well under a second.

Used by ``tests/test_backend_generic.py`` (the fake device on the CPU) and
``tests/test_gpu_models.py`` (CuPy, marked ``gpu``).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from nodeform.adjoint.odeint import SolveStats
from nodeform.backend import get_backend, sync_count, to_numpy
from nodeform.models.cnf import PlanarCNF
from nodeform.models.latent_ode import LatentODE, RNNBaseline
from nodeform.models.odenet import build_model
from nodeform.nn.losses import cross_entropy


@dataclass
class StepResult:
    loss: float
    grads: list
    stats: dict = field(default_factory=dict)
    syncs: int = 0
    kind: str = ""          # the array type of the loss's data, e.g. "ndarray"


def _finish(model, loss, syncs0, stats=None, kind=""):
    loss.backward()
    syncs = sync_count() - syncs0
    return StepResult(loss=float(to_numpy(loss.data)), grads=[to_numpy(p.grad.data) for p in model.parameters()],
                      stats=dict(vars(stats)) if stats is not None else {}, syncs=syncs, kind=kind)


def _on(model, backend, dtype):
    if backend != "numpy":
        model.to(dtype=dtype, backend=backend)
    else:
        model.to(dtype=dtype)
    return get_backend(backend)


def odenet_step(backend, dtype=np.float64, width=8, batch=6, model="odenet"):
    """ODE-Net (or ``model="rknet"``) of width ``width`` on ``batch`` 28x28 images."""
    rng = np.random.default_rng(0)
    x = rng.random((batch, 1, 28, 28)).astype(dtype)
    y = rng.integers(0, 10, batch)
    net = build_model(model, rng=0, width=width, dtype=np.float64)
    xp = _on(net, backend, dtype)
    xd, yd = xp.asarray(x), xp.asarray(y)
    s0 = sync_count()
    loss = cross_entropy(net(xd), yd)
    kind = type(loss.data).__name__
    return _finish(net, loss, s0, net.stats, kind)


def cnf_step(backend, dtype=np.float64, trace="closed", n=16):
    """Planar CNF (autodiff engine): the mean negative log-likelihood of ``n`` 2-D points."""
    x = np.random.default_rng(1).standard_normal((n, 2)).astype(dtype)
    model = PlanarCNF(dim=2, width=8, hidden=8, trace=trace, rng=0)
    xp = _on(model, backend, dtype)
    stats = SolveStats()
    s0 = sync_count()
    lp = model.log_prob(xp.asarray(x), stats=stats)
    loss = -lp.mean()
    return _finish(model, loss, s0, stats, type(loss.data).__name__)


def _irregular_batch(dtype, n, steps):
    """``n`` random 2-d sequences on ``steps`` times, each observed at about 60% of them (always at t[0])."""
    rng = np.random.default_rng(2)
    t = np.linspace(0.0, 1.0, steps)
    x = rng.standard_normal((n, steps, 2)).astype(dtype)
    mask = rng.random((n, steps)) < 0.6
    mask[:, 0] = True
    return t, x, mask


def latent_ode_step(backend, dtype=np.float64, n=6, steps=12):
    """Latent ODE (autodiff field, continuous adjoint): the negative ELBO of ``n`` sequences."""
    t, x, mask = _irregular_batch(dtype, n, steps)
    model = LatentODE(rng=0)
    xp = _on(model, backend, dtype)
    stats = SolveStats()
    s0 = sync_count()
    loss, _ = model.loss(xp.asarray(x), t, mask, np.random.default_rng(3), grad="continuous",
                         stats=stats)
    return _finish(model, loss, s0, stats, type(loss.data).__name__)


def rnn_baseline_step(backend, dtype=np.float64, n=6, steps=12):
    """Chapter 7's RNN baseline (with time gaps): the next-step NLL of ``n`` sequences."""
    t, x, mask = _irregular_batch(dtype, n, steps)
    model = RNNBaseline(rng=0)
    xp = _on(model, backend, dtype)
    s0 = sync_count()
    loss = model.loss(xp.asarray(x), t, mask)
    return _finish(model, loss, s0, None, type(loss.data).__name__)


WORKLOADS = {"odenet": odenet_step, "rknet": lambda b, d=np.float64: odenet_step(b, d, model="rknet"),
             "cnf_closed": cnf_step, "cnf_exact": lambda b, d=np.float64: cnf_step(b, d, "exact"),
             "latent_ode": latent_ode_step, "rnn_baseline": rnn_baseline_step}


def assert_close(got, ref, rtol, atol):
    """Loss and every gradient of ``got`` within ``rtol``/``atol`` of ``ref`` (a clear message)."""
    np.testing.assert_allclose(got.loss, ref.loss, rtol=rtol, atol=atol, err_msg="loss")
    assert len(got.grads) == len(ref.grads)
    for k, (g, r) in enumerate(zip(got.grads, ref.grads)):
        scale = max(float(np.abs(r).max()), 1e-12)
        np.testing.assert_allclose(g, r, rtol=rtol, atol=atol * scale, err_msg=f"gradient {k}")
