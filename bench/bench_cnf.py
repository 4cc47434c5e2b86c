"""One maximum-likelihood training iteration of the planar CNF: nodeform vs torch + torchdiffeq.

The anchor setup (PERF-NOTES "Continuous normalizing flow", paper.md §3.3): width M = 64,
hypernetwork hidden 32, base N(0, 0.1 I), batch 512, t from 10 (data) to 0 (base),
dopri5 rtol = atol = 1e-5, closed-form trace, the continuous adjoint, Adam 1e-3.

Run: ``python bench/bench_cnf.py [--data circles|moons] [--weights runs/ch06_circles_cnf.npz]``.

Every implementation starts from the *same* hypernetwork parameters (``--weights``, the
``.npz`` a full chapter run saves after training; by default the seeded initial
parameters) and runs the same batches, so the solver takes comparable numbers of steps;
the time of an iteration grows with those steps, so the evaluation counts (NFE forward /
backward) are printed beside each time. Rows:

* nodeform ``engine="numpy"``: the field, trace and VJPs by hand in NumPy, reference loops;
* nodeform ``engine="numba"``: the same compiled, forward and adjoint solves in Numba;
* nodeform ``engine="autodiff"``: the field built from Tensor operations (the reference),
  with the closed-form trace and with the exact trace by autodiff (2 VJPs per evaluation,
  differentiated again in the backward pass);
* torch + torchdiffeq ``odeint_adjoint`` (float32 as the anchor, on 1 and 2 threads; and
  float64), the model written below in torch; skipped with a message when torch is not
  installed. On a busy shared machine torch's 2 threads can spin against other processes
  (measured 20x slower than 1 thread at a load of 10): compare with the faster row.

Times are medians of ``--repeats`` iterations after warm-up ones (Numba compile time is
excluded and printed apart).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform.data import toy2d  # noqa: E402
from nodeform.models import cnf  # noqa: E402

M, H, BATCH = 64, 32, 512


def median_cpu(fn, repeats):
    """Median CPU time (this process, all threads) of ``repeats`` calls of ``fn``: on a
    machine shared with other jobs it counts the work done, not the waiting for a core."""
    times = []
    for _ in range(repeats):
        t0 = time.process_time()
        fn()
        times.append(time.process_time() - t0)
    return sorted(times)[len(times) // 2]


def batches(name, n, seed=0):
    return [toy2d.sample(name, BATCH, seed + i, angles="even") for i in range(n)]   # as the anchor


# ----------------------------------------------------------------------------- nodeform
def nodeform_iteration(engine, theta0, data, trace="closed"):
    model = cnf.PlanarCNF(width=M, hidden=H, engine=engine, trace=trace, rng=0)
    nf.nn.vector_to_parameters(theta0, model.parameters())
    opt = nf.optim.Adam(model.parameters(), lr=1e-3)
    stats = nf.SolveStats()
    it = [0]

    def step():
        x = data[it[0] % len(data)]
        it[0] += 1
        opt.zero_grad()
        loss = cnf.nll(model, x, stats=stats)
        loss.backward()
        opt.step()
        return float(loss)
    return step, stats


# ----------------------------------------------------------------------------- torch
def torch_iteration(theta0, data, dtype_name, threads):
    import torch
    from torchdiffeq import odeint_adjoint

    dtype = getattr(torch, dtype_name)
    torch.set_num_threads(threads)

    class Hyper(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1 = torch.nn.Linear(1, H)
            self.fc2 = torch.nn.Linear(H, H)
            self.fc3 = torch.nn.Linear(H, 3 * M * 2 + M)

        def forward(self, t):
            p = self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(t.reshape(1, 1)))))).reshape(-1)
            md = M * 2
            W, U, G, B = p[:md].view(M, 2), p[md:2 * md].view(M, 2), p[2 * md:3 * md].view(M, 2), \
                p[3 * md:]
            return W, U * torch.sigmoid(G), B

    class Func(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.hyper = Hyper()

        def forward(self, t, state):
            z, _ = state
            W, Ut, B = self.hyper(t)
            h = torch.tanh(z @ W.T + B)
            dz = h @ Ut / M
            tr = (1 - h * h) @ (W * Ut).sum(1) / M
            return dz, -tr

    func = Func().to(dtype)
    with torch.no_grad():
        off = 0
        for p in func.parameters():
            p.copy_(torch.as_tensor(theta0[off:off + p.numel()]).reshape(p.shape))
            off += p.numel()
    opt = torch.optim.Adam(func.parameters(), lr=1e-3)
    ts = torch.tensor([10.0, 0.0], dtype=dtype)
    var = cnf.BASE_VAR
    nfe = {"f": 0}
    it = [0]

    class Counted(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.func = func

        def forward(self, t, state):
            nfe["f"] += 1
            return self.func(t, state)

    counted = Counted()

    def step():
        x = torch.as_tensor(data[it[0] % len(data)], dtype=dtype)
        it[0] += 1
        opt.zero_grad()
        l0 = torch.zeros(x.shape[0], dtype=dtype)
        zt, lt = odeint_adjoint(counted, (x, l0), ts, rtol=cnf.RTOL, atol=cnf.ATOL,
                                method="dopri5", adjoint_params=tuple(func.parameters()))
        z0, l = zt[-1], lt[-1]
        logp0 = -0.5 * (z0 ** 2).sum(1) / var - np.log(2 * np.pi * var)
        loss = -(logp0 - l).mean()
        loss.backward()
        opt.step()
        return loss.item()
    return step, nfe


# ----------------------------------------------------------------------------- main
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="circles", choices=sorted(toy2d.DATASETS))
    ap.add_argument("--weights", default=None,
                    help=".npz with `theta` (a trained model from the chapter's full run)")
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--skip-autodiff", action="store_true")
    ap.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                    help="wall time (default) or this process's CPU time per iteration (a "
                         "loaded machine inflates wall time; CPU time much less)")
    ap.add_argument("--torch", default="float32:1,float32:2,float64:1",
                    help="torch rows as dtype:threads, comma-separated ('' for none); on a "
                         "loaded machine 2 threads can take minutes an iteration")
    args = ap.parse_args(argv)

    if args.weights:
        theta0 = np.load(args.weights)["theta"]
        origin = args.weights
    else:
        theta0 = nf.nn.parameters_to_vector(cnf.PlanarCNF(width=M, hidden=H, rng=0).parameters())
        origin = "initial parameters (seed 0)"
    data = batches(args.data, args.warmup + args.repeats)
    timer = median_time if args.clock == "wall" else median_cpu
    print(f"planar CNF, {args.data}, M={M}, H={H}, batch {BATCH}, t 10->0, dopri5 "
          f"rtol=atol={cnf.RTOL:g}, closed-form trace, continuous adjoint, Adam; {origin}")
    print(f"{'implementation':40s} {args.clock + ' s / it':>14s} {'NFE fwd/bwd per it':>20s} {'loss':>9s}")
    rows = []
    engines = [("numpy", "closed"), ("numba", "closed")]
    engines += [] if args.skip_autodiff else [("autodiff", "closed"), ("autodiff", "exact")]
    for engine, trace in engines:
        step, stats = nodeform_iteration(engine, theta0, data, trace)
        t0 = time.perf_counter()
        for _ in range(args.warmup):
            step()
        warm = time.perf_counter() - t0
        stats.reset()
        losses = []
        sec = timer(lambda: losses.append(step()), args.repeats)
        nfe = f"{stats.nfe_forward / args.repeats:.0f} / {stats.nfe_backward / args.repeats:.0f}"
        label = f"nodeform {engine}, {trace} trace (float64)"
        print(f"{label:40s} {sec:14.4f} {nfe:>20s} {np.mean(losses):9.4f}"
              + (f"   (first iteration incl. compile {warm:.1f} s)" if engine == "numba" else ""))
        rows.append((label, sec))
    try:
        import torch  # noqa: F401
        import torchdiffeq  # noqa: F401
    except ImportError as e:
        print(f"torch + torchdiffeq skipped: {e} (pip install nodeform[bench])")
    else:
        configs = [(c.split(":")[0], int(c.split(":")[1])) for c in args.torch.split(",") if c]
        for dt, threads in configs:
            step, nfe = torch_iteration(theta0, data, dt, threads)
            for _ in range(args.warmup):
                step()
            nfe["f"] = 0
            losses = []
            sec = timer(lambda: losses.append(step()), args.repeats)
            label = f"torch + torchdiffeq adjoint ({dt}, {threads} thr)"
            print(f"{label:40s} {sec:14.4f} {'%.0f (fwd+bwd)' % (nfe['f'] / args.repeats):>20s} "
                  f"{np.mean(losses):9.4f}")
            rows.append((label, sec))
        f32 = [sec for (label, sec) in rows[len(engines):] if "float32" in label]
        ref = min(f32) if f32 else None
        for label, sec in rows[:len(engines)] if ref else []:
            print(f"  {label}: {ref / sec:.2f}x the speed of torch float32 (its faster thread count)")


if __name__ == "__main__":
    main()
