"""Time per training iteration of the latent ODE on spirals: nodeform vs PyTorch + torchdiffeq.

The workload (issue 12, PERF-NOTES "Latent ODE on spirals"): the full training batch
of 800 spirals at n = 30 observations, latent 4, recognition RNN 25 read backwards
with time gaps, dynamics and decoder one hidden layer of 20 (tanh), one dopri5 solve
over the union of the batch's observation times at rtol 1e-3 / atol 1e-4, the
negative ELBO, backward pass and an Adam step. The torch model is the same model
with the same initial weights (copied from the nodeform one), written here.

Rows: nodeform backprop through the solver (the Tensor path), nodeform's Numba fast
path (compiled field, continuous adjoint), torch backprop through dopri5 in float32
(torch's default, the PERF-NOTES anchor) and float64 (nodeform's precision). Times
are medians of ``--repeats`` iterations after two warm-up iterations (Numba compile
time excluded), measured in one process, one after the other.

Run: ``python bench/bench_latent_ode.py [--repeats 15] [--n-obs 30]``.
"""
from __future__ import annotations

import argparse
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform import optim  # noqa: E402
from nodeform.models.latent_ode import LatentODE, compact, previous_gaps, union_grid  # noqa: E402
from nodeform.models.spiral_protocol import Protocol, prepare  # noqa: E402

RTOL, ATOL = 1e-3, 1e-4


def nodeform_runner(D, grad, stats, dtype=np.float64):
    model = LatentODE(obs_std=D["obs_std"], dt_scale=D["t"][1] - D["t"][0], rng=0, dtype=dtype)
    opt = optim.Adam(model.parameters(), lr=0.01)
    rng = np.random.default_rng(0)

    def step():
        opt.zero_grad()
        loss, _ = model.loss(D["x_tr"], D["t"], D["m_tr"], rng, grad=grad,
                             solver={"rtol": RTOL, "atol": ATOL}, stats=stats)
        loss.backward()
        opt.step()
    return model, step


def torch_runner(D, model, dtype_name, stats, threads):
    import torch
    from torchdiffeq import odeint
    torch.set_num_threads(threads)
    dt = getattr(torch, dtype_name)

    def P(a):
        return torch.nn.Parameter(torch.tensor(np.asarray(a), dtype=dt))
    enc, fld = model.encoder, model.field
    (W1, b1), (W2, b2) = fld.unflatten(model.theta.data)
    ps = {"Wih": P(enc.cell.ih.weight.data), "bih": P(enc.cell.ih.bias.data),
          "Whh": P(enc.cell.hh.weight.data), "Wo": P(enc.out.weight.data), "bo": P(enc.out.bias.data),
          "W1": P(W1), "b1": P(b1), "W2": P(W2), "b2": P(b2),
          "D1": P(model.dec1.weight.data), "c1": P(model.dec1.bias.data),
          "D2": P(model.dec2.weight.data), "c2": P(model.dec2.bias.data)}
    opt = torch.optim.Adam(list(ps.values()), lr=0.01)
    idx, valid = compact(D["m_tr"])
    rows = np.arange(len(idx))[:, None]
    x_obs = torch.tensor(D["x_tr"][rows, idx], dtype=dt)
    gaps = torch.tensor(previous_gaps(D["t"][idx], valid, 0.0) / enc.dt_scale, dtype=dt)[..., None]
    cols, t_u, m_u = union_grid(D["t"], D["m_tr"])
    grid = torch.tensor(np.concatenate([[0.0], t_u]) if t_u[0] > 0 else t_u, dtype=dt)
    drop = len(grid) - len(t_u)
    x_u = torch.tensor(D["x_tr"][:, cols], dtype=dt)
    m_t = torch.tensor(m_u[..., None], dtype=dt)
    logvar_x = 2.0 * math.log(model.obs_std)
    gen = torch.Generator().manual_seed(0)
    assert valid.all()

    class F(torch.nn.Module):
        def forward(self, t, z):
            stats[0] += 1
            return torch.tanh(z @ ps["W1"].T + ps["b1"]) @ ps["W2"].T + ps["b2"]
    f = F()

    def step():
        opt.zero_grad()
        h = torch.zeros(len(idx), enc.cell.hidden_size, dtype=dt)
        for k in range(idx.shape[1] - 1, -1, -1):
            inp = torch.cat([x_obs[:, k], gaps[:, k]], dim=1)
            h = torch.tanh(inp @ ps["Wih"].T + ps["bih"] + h @ ps["Whh"].T)
        out = h @ ps["Wo"].T + ps["bo"]
        mu, logvar = out[:, :4], out[:, 4:]
        z0 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, generator=gen, dtype=dt)
        zs = odeint(f, z0, grid, rtol=RTOL, atol=ATOL, method="dopri5")[drop:]
        xh = (torch.tanh(zs @ ps["D1"].T + ps["c1"]) @ ps["D2"].T + ps["c2"]).transpose(0, 1)
        nll = 0.5 * (math.log(2 * math.pi) + logvar_x + (x_u - xh) ** 2 / math.exp(logvar_x))
        kl = 0.5 * (torch.exp(logvar) + mu ** 2 - 1.0 - logvar).sum(1)
        loss = ((nll * m_t).sum((1, 2)) + kl).mean()
        loss.backward()
        opt.step()
    return step


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=15)
    ap.add_argument("--n-obs", type=int, default=30)
    ap.add_argument("--torch-threads", type=int, default=1,
                    help="torch intra-op threads (1: on a shared 2-core machine 2 threads spin "
                         "against other processes and ran 20x slower)")
    ap.add_argument("--skip-numba", action="store_true", help="leave out the Numba adjoint row")
    a = ap.parse_args(argv)
    D = prepare(Protocol(), a.n_obs)
    print(f"latent ODE training iteration, batch {len(D['x_tr'])}, n = {a.n_obs}, dopri5 rtol {RTOL} "
          f"atol {ATOL}; median of {a.repeats} after 2 warm-ups", flush=True)
    rows = []
    for grad, dtype, label in (("backprop", np.float64, "nodeform, backprop through dopri5 (float64)"),
                               ("backprop", np.float32, "nodeform, backprop through dopri5 (float32)"),
                               ("numba", np.float64, "nodeform, Numba field + continuous adjoint (float64)")):
        if a.skip_numba and grad == "numba":
            continue
        st = nf.SolveStats()
        _, step = nodeform_runner(D, grad, st, dtype)
        step()
        step()
        st.reset()
        t = median_time(step, a.repeats)
        rows.append((label, t, st.nfe_forward / a.repeats, st.nfe_backward / a.repeats))
    try:
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401
        have_torch = True
    except ImportError as e:
        print(f"torch rows skipped: {e} (install the `bench` extra: torch and torchdiffeq)")
        have_torch = False
    if have_torch:
        for dn in ("float32", "float64"):
            cnt = [0]
            step = torch_runner(D, LatentODE(obs_std=D["obs_std"], dt_scale=D["t"][1], rng=0), dn, cnt,
                                a.torch_threads)
            step()
            step()
            cnt[0] = 0
            t = median_time(step, a.repeats)
            rows.append((f"torch + torchdiffeq, backprop through dopri5 ({dn}, {a.torch_threads} thr)",
                         t, cnt[0] / a.repeats, 0))
    ref = rows[-2][1] if have_torch else None
    print(f"{'implementation':58s} {'ms / iter':>9s} {'NFE fwd':>8s} {'NFE bwd':>8s}"
          + ("  vs torch f32" if ref else ""))
    for label, t, nf_, nb in rows:
        print(f"{label:58s} {t * 1e3:9.1f} {nf_:8.1f} {nb:8.1f}" + (f"  {t / ref:6.2f}x" if ref else ""))
    return rows


if __name__ == "__main__":
    main()
