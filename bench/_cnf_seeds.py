"""Test NLL of the planar CNF after maximum-likelihood training, one seed per run: nodeform or torch.

The anchor of PERF-NOTES ("Continuous normalizing flow") is one torch + torchdiffeq run
per data set. This script trains that setup (M = 64, hypernetwork 32, base N(0, 0.1 I),
t from 10 to 0, dopri5 rtol = atol = 1e-5, closed-form trace, continuous adjoint,
Adam 1e-3, 512 fresh samples a step, 1,000 steps) with a given seed, either with
nodeform (``--impl nodeform``, the Numba path by default) or with torch + torchdiffeq
(``--impl torch``, float32, the anchor's library), and prints the test NLL on the
chapter's 5,000 fixed test points (``toy2d.sample(name, 5000, seed=10_000)``), so that
the seed-to-seed spread of both can be compared on one machine.

Run: ``python bench/_cnf_seeds.py --impl torch --data circles --seed 0 [--gen sklearn]``.
One JSON line per run is appended to ``--out`` (default ``runs/cnf_seeds.jsonl``).

``--gen sklearn`` draws training batches as scikit-learn's ``make_circles`` /
``make_moons`` do (evenly spaced angles, equal halves, shuffled), written out here since
scikit-learn is not a dependency; ``--gen toy2d`` (default) uses nodeform's samplers
(i.i.d. angles); ``--gen chapter`` feeds exactly the batches of chapter 6's full run
(``toy2d.sample(name, 512, seed=it, angles="even")`` at step ``it``), so that ``--gen chapter
--seed 0 --save runs/ch06_circles_cnf.npz`` regenerates the weights ``bench/bench_cnf.py
--weights`` reads by the chapter's own computation (model seed, batches, optimizer, Numba
path) in about a minute instead of the chapter's full run (test NLL 0.8509 / 0.3824 on
circles / moons, as the chapter's 0.851 / 0.382). ``--adjoint-norm`` picks nodeform's
backward error norm ("rms", one RMS over the augmented state, or "parts", torchdiffeq's
largest RMS of the parts) and ``--adjoint-tol`` the backward tolerances.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import time

import numpy as np

from nodeform.data import toy2d

M, H, BATCH, TEST_N, TEST_SEED = 64, 32, 512, 5000, 10_000
T0, T1, TOL, VAR = 0.0, 10.0, 1e-5, 0.1


def sklearn_like(name, n, rng):
    """``make_circles(noise=0.06, factor=0.5)`` / ``make_moons(noise=0.05)``, shuffled."""
    n_out = n // 2
    n_in = n - n_out
    if name == "circles":
        a_out = np.linspace(0, 2 * np.pi, n_out, endpoint=False)
        a_in = np.linspace(0, 2 * np.pi, n_in, endpoint=False)
        x = np.concatenate([np.stack([np.cos(a_out), np.sin(a_out)], 1),
                            0.5 * np.stack([np.cos(a_in), np.sin(a_in)], 1)])
        noise = toy2d.CIRCLES_NOISE
    else:
        a_out = np.linspace(0, np.pi, n_out)
        a_in = np.linspace(0, np.pi, n_in)
        x = np.concatenate([np.stack([np.cos(a_out), np.sin(a_out)], 1),
                            np.stack([1 - np.cos(a_in), 0.5 - np.sin(a_in)], 1)])
        noise = toy2d.MOONS_NOISE
    x = x[rng.permutation(n)]
    return x + noise * rng.standard_normal(x.shape)


def batch_source(name, gen, seed):
    rng = np.random.default_rng(1_000_003 * (seed + 1))
    if gen == "sklearn":
        return lambda it: sklearn_like(name, BATCH, rng)
    if gen == "chapter":         # chapters/ch06_cnf.py's batches (independent of the seed)
        return lambda it: toy2d.sample(name, BATCH, seed=it, angles="even")
    return lambda it: toy2d.sample(name, BATCH, seed=rng)


def run_nodeform(args, batch, test_x):
    import nodeform as nf
    from nodeform.models import cnf
    model = cnf.PlanarCNF(width=M, hidden=H, engine=args.engine, rng=args.seed)
    if args.init == "torch":     # torch's initial parameters for this seed (as run_torch draws them)
        nf.nn.vector_to_parameters(torch_init(args.seed), model.parameters())
    opt = nf.optim.Adam(model.parameters(), lr=1e-3)
    stats = nf.SolveStats()
    kw = {}
    if args.adjoint_tol:
        kw.update(adjoint_rtol=args.adjoint_tol, adjoint_atol=args.adjoint_tol)
    if args.adjoint_norm != "rms":
        kw.update(adjoint_options={"norm": args.adjoint_norm})
    curve = []
    for it in range(args.iters):
        if it == args.iters - 100:
            stats.reset()
        opt.zero_grad()
        loss = cnf.nll(model, batch(it), stats=stats, **kw)
        loss.backward()
        opt.step()
        if (it + 1) % 100 == 0:
            with nf.no_grad():
                curve.append(round(float(cnf.nll(model, test_x).numpy()), 4))
            print(f"  it {it + 1}: train {float(loss.numpy()):.4f} test {curve[-1]:.4f}", flush=True)
    nfe = (stats.nfe_forward / min(100, args.iters), stats.nfe_backward / min(100, args.iters))
    if args.save:
        np.savez(args.save, theta=nf.nn.parameters_to_vector(model.parameters()))
    return curve, nfe


def torch_init(seed):
    """The flat initial parameters torch draws for :func:`run_torch`'s model with ``seed``."""
    import torch
    torch.manual_seed(seed)
    layers = [torch.nn.Linear(1, H), torch.nn.Linear(H, H), torch.nn.Linear(H, 3 * M * 2 + M)]
    return np.concatenate([p.detach().double().numpy().ravel() for lay in layers
                           for p in (lay.weight, lay.bias)])


def run_torch(args, batch, test_x):
    import torch
    from torchdiffeq import odeint_adjoint
    torch.set_num_threads(1)
    torch.manual_seed(args.seed)
    dt = torch.float32

    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(1, H), torch.nn.Linear(H, H)
            self.fc3 = torch.nn.Linear(H, 3 * M * 2 + M)
            self.nfe = 0

        def forward(self, t, state):
            self.nfe += 1
            z, _ = state
            p = self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(t.reshape(1, 1)))))).reshape(-1)
            md = 2 * M
            W, U, G, B = p[:md].view(M, 2), p[md:2 * md].view(M, 2), p[2 * md:3 * md].view(M, 2), p[3 * md:]
            Ut = U * torch.sigmoid(G)
            h = torch.tanh(z @ W.T + B)
            return h @ Ut / M, -((1 - h * h) @ (W * Ut).sum(1) / M)

    func = Func()
    opt = torch.optim.Adam(func.parameters(), lr=1e-3)
    ts = torch.tensor([T1, T0], dtype=dt)

    def nll(x, grad=True):
        x = torch.as_tensor(x, dtype=dt)
        zt, lt = odeint_adjoint(func, (x, torch.zeros(x.shape[0], dtype=dt)), ts, rtol=TOL,
                                atol=TOL, method="dopri5")
        z0 = zt[-1]
        logp0 = -0.5 * (z0 ** 2).sum(1) / VAR - math.log(2 * math.pi * VAR)
        return -(logp0 - lt[-1]).mean()

    curve, nfe = [], [0, 0]
    for it in range(args.iters):
        opt.zero_grad()
        f0 = func.nfe
        loss = nll(batch(it))
        f1 = func.nfe
        loss.backward()
        opt.step()
        if it >= args.iters - 100:
            nfe[0] += f1 - f0
            nfe[1] += func.nfe - f1
        if (it + 1) % 100 == 0:
            with torch.no_grad():
                curve.append(round(float(nll(test_x)), 4))
            print(f"  it {it + 1}: train {loss.item():.4f} test {curve[-1]:.4f}", flush=True)
    n = min(100, args.iters)
    return curve, (nfe[0] / n, nfe[1] / n)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--impl", choices=("nodeform", "torch"), default="nodeform")
    ap.add_argument("--engine", choices=("numba", "numpy", "autodiff"), default="numba")
    ap.add_argument("--data", choices=("circles", "moons"), default="circles")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--iters", type=int, default=1000)
    ap.add_argument("--gen", choices=("toy2d", "sklearn", "chapter"), default="toy2d")
    ap.add_argument("--init", choices=("nodeform", "torch"), default="nodeform",
                    help="nodeform only: start from torch's initial parameters for --seed")
    ap.add_argument("--adjoint-norm", choices=("rms", "parts"), default="rms")
    ap.add_argument("--adjoint-tol", type=float, default=None)
    ap.add_argument("--out", default="runs/cnf_seeds.jsonl")
    ap.add_argument("--save", default=None,
                    help="nodeform only: write the trained parameters (`theta`) to this .npz")
    args = ap.parse_args(argv)
    test_x = toy2d.sample(args.data, TEST_N, seed=TEST_SEED)
    batch = batch_source(args.data, args.gen, args.seed)
    t0 = time.perf_counter()
    run = run_torch if args.impl == "torch" else run_nodeform
    curve, nfe = run(args, batch, test_x)
    rec = dict(vars(args), test_nll=curve[-1] if curve else None, curve=curve,
               nfe_fwd=nfe[0], nfe_bwd=nfe[1], sec=round(time.perf_counter() - t0, 1))
    rec.pop("out")
    rec.pop("save")
    print(json.dumps(rec), flush=True)
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out, "a") as fh:
        fh.write(json.dumps(rec) + "\n")


if __name__ == "__main__":
    main()
