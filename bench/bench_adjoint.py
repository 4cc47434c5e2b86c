"""Forward solve and forward + gradient through a neural ODE: nodeform vs peers.

The workload (issue 4, PERF-NOTES "Gradients through a solve"):
f(z) = W2 tanh(W1 z + b1) + b2, z in R^2, 64 hidden units, batch 512, t in [0, 1],
dopri5 at rtol 1e-6 / atol 1e-8, loss = sum z(1)^2; parameters from
``np.random.default_rng(1)``: W1 ~ N(0, 2^2) (64x2), b1 ~ N(0, 1), W2 ~ N(0, (3/8)^2)
(2x64), b2 ~ N(0, 0.1^2), then z0 ~ N(0, 1) (512x2).

Run: ``python bench/bench_adjoint.py`` (or ``python -m nodeform bench adjoint``).
Peers run only when importable: torchdiffeq (``odeint_adjoint`` and backprop) and
diffrax (BacksolveAdjoint, RecursiveCheckpointAdjoint). Times are medians of
repeats after a warm-up call (Numba compile time and JAX tracing are excluded and
reported separately). Every gradient is compared with a tight-tolerance reference.
"""
from __future__ import annotations

import argparse
import os
import time
import tracemalloc

import numpy as np

import nodeform as nf

H, B = 64, 512
RTOL, ATOL = 1e-6, 1e-8


def problem():
    rng = np.random.default_rng(1)
    W1 = rng.normal(0, 2.0, (H, 2))
    b1 = rng.normal(0, 1.0, H)
    W2 = rng.normal(0, 3 / 8, (2, H))
    b2 = rng.normal(0, 0.1, 2)
    z0 = rng.normal(0, 1.0, (B, 2))
    return W1, b1, W2, b2, z0


from _timing import median_time  # noqa: E402


# ----------------------------------------------------------------------------- nodeform
def nodeform_runner(mode, t1=1.0, rtol=RTOL, atol=ATOL):
    W1, b1, W2, b2, z0 = problem()
    if mode == "numba":
        field = nf.mlp_field(2, (H,), "tanh")
        theta0 = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])

        def run(grad=True):
            theta = nf.Tensor(theta0, requires_grad=True)
            stats = nf.SolveStats()
            zs = nf.odeint(field, nf.Tensor(z0), [0.0, t1], params=theta, rtol=rtol, atol=atol,
                           stats=stats)
            if grad:
                (zs[-1] ** 2.0).sum().backward()
                g = theta.grad.data
                return zs.data[-1], [g[:2 * H].reshape(H, 2), g[2 * H:3 * H],
                                     g[3 * H:5 * H].reshape(2, H), g[5 * H:]], stats
            return zs.data[-1], None, stats
        return run
    ps = [nf.Tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]

    def f(t, z):
        return nf.tanh(z @ ps[0].T + ps[1]) @ ps[2].T + ps[3]

    def run(grad=True):
        for p in ps:
            p.grad = None
        stats = nf.SolveStats()
        if not grad:
            with nf.no_grad():
                zs = nf.odeint(f, nf.Tensor(z0), [0.0, t1], params=ps, rtol=rtol, atol=atol,
                               stats=stats)
            return zs.data[-1], None, stats
        zs = nf.odeint(f, nf.Tensor(z0), [0.0, t1], params=ps, rtol=rtol, atol=atol,
                       adjoint=mode, stats=stats)
        (zs[-1] ** 2.0).sum().backward()
        return zs.data[-1], [p.grad.data for p in ps], stats
    return run


# ----------------------------------------------------------------------------- peers
def torchdiffeq_runner(adjoint):
    import torch
    import torchdiffeq
    torch.set_num_threads(2)
    W1, b1, W2, b2, z0 = problem()
    ps = [torch.tensor(p, requires_grad=True) for p in (W1, b1, W2, b2)]

    class F(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.ps = torch.nn.ParameterList([torch.nn.Parameter(p) for p in ps])
            self.nfe = 0

        def forward(self, t, z):
            self.nfe += 1
            W1, b1, W2, b2 = self.ps
            return torch.tanh(z @ W1.T + b1) @ W2.T + b2

    func = F()
    solve = torchdiffeq.odeint_adjoint if adjoint else torchdiffeq.odeint
    z0t = torch.tensor(z0)
    tt = torch.tensor([0.0, 1.0], dtype=torch.float64)

    def run(grad=True):
        func.zero_grad()
        func.nfe = 0
        if not grad:
            with torch.no_grad():
                zs = torchdiffeq.odeint(func, z0t, tt, rtol=RTOL, atol=ATOL, method="dopri5")
            return zs[-1].numpy(), None, (func.nfe, 0)
        zs = solve(func, z0t, tt, rtol=RTOL, atol=ATOL, method="dopri5")
        n_f = func.nfe
        (zs[-1] ** 2).sum().backward()
        return (zs[-1].detach().numpy(), [p.grad.numpy().copy() for p in func.ps],
                (n_f, func.nfe - n_f))
    return run


def diffrax_runner(kind):
    import jax
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import diffrax
    W1, b1, W2, b2, z0 = problem()
    params = tuple(jnp.asarray(p) for p in (W1, b1, W2, b2))

    def vf(t, z, p):
        return jnp.tanh(z @ p[0].T + p[1]) @ p[2].T + p[3]
    adj = diffrax.BacksolveAdjoint() if kind == "backsolve" else diffrax.RecursiveCheckpointAdjoint()

    def loss(p):
        sol = diffrax.diffeqsolve(diffrax.ODETerm(vf), diffrax.Dopri5(), 0.0, 1.0, None,
                                  jnp.asarray(z0), args=p, adjoint=adj,
                                  stepsize_controller=diffrax.PIDController(rtol=RTOL, atol=ATOL),
                                  max_steps=4096)
        return (sol.ys[-1] ** 2).sum(), sol.ys[-1]
    vg = jax.jit(jax.value_and_grad(loss, has_aux=True))
    fwd = jax.jit(loss)

    def run(grad=True):
        if not grad:
            _, y = fwd(params)
            y.block_until_ready()
            return np.asarray(y), None, ("?", "?")
        (_, y), g = vg(params)
        jax.block_until_ready(g)
        return np.asarray(y), [np.asarray(x) for x in g], ("?", "?")
    return run


def numba_eval_times(repeats, calls=500):
    """Median seconds of one ``mlp_f`` and one ``mlp_vjp`` call on the benchmark's problem."""
    from nodeform.adjoint.numba_field import mlp_f, mlp_vjp
    W1, b1, W2, b2, z0 = problem()
    field = nf.mlp_field(2, (H,), "tanh")
    theta = np.concatenate([W1.ravel(), b1, W2.ravel(), b2])
    y = z0.ravel().copy()
    a = 2.0 * y
    arch = field.args[0]
    out = []
    for fn in (lambda: mlp_f(0.0, y, theta, arch), lambda: mlp_vjp(0.0, y, theta, a, arch)):
        fn()
        out.append(median_time(lambda: [fn() for _ in range(calls)], repeats) / calls)
    return out


def peak_memory(mode, t1):
    run = nodeform_runner(mode, t1)
    tracemalloc.start()
    run()
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return peak / 2 ** 20


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--no-peers", action="store_true")
    args = parser.parse_args(argv)
    ref = nodeform_runner("continuous", rtol=1e-11, atol=1e-13)()[1]
    rows = []
    cands = [("nodeform continuous adjoint (NumPy)", lambda: nodeform_runner("continuous")),
             ("nodeform continuous adjoint (Numba)", lambda: nodeform_runner("numba")),
             ("nodeform backprop through solver", lambda: nodeform_runner("backprop"))]
    if not args.no_peers:
        cands += [("torchdiffeq odeint_adjoint", lambda: torchdiffeq_runner(True)),
                  ("torchdiffeq backprop", lambda: torchdiffeq_runner(False)),
                  ("diffrax BacksolveAdjoint", lambda: diffrax_runner("backsolve")),
                  ("diffrax RecursiveCheckpointAdjoint", lambda: diffrax_runner("checkpoint"))]
    for name, make in cands:
        try:
            run = make()
        except ImportError as exc:
            print(f"skipped {name}: {exc}")
            continue
        t0 = time.perf_counter()
        run()                               # warm-up: compile / trace
        warm = time.perf_counter() - t0
        t_fwd = median_time(lambda: run(False), args.repeats)
        t_all = median_time(lambda: run(True), args.repeats)
        _, grads, stats = run(True)
        err = max(float(np.abs(g - r).max() / np.abs(r).max()) for g, r in zip(grads, ref))
        nfe = ((stats.nfe_forward, stats.nfe_backward) if isinstance(stats, nf.SolveStats)
               else stats)
        rows.append((name, t_fwd, t_all, nfe, err, warm))
    by = {r[0]: r for r in rows}
    tdq = by.get("torchdiffeq odeint_adjoint")
    print(f"\nMLP 2-64-2 field, batch {B}, dopri5 rtol {RTOL:g} atol {ATOL:g}, t in [0, 1]; "
          f"{os.cpu_count()} cores; medians of {args.repeats}")
    print("| method | forward | forward + gradient | vs torchdiffeq adjoint | NFE fwd / bwd "
          "| gradient error vs rtol 1e-11 | first call (compile) |")
    print("|---|---|---|---|---|---|---|")
    for name, t_fwd, t_all, nfe, err, warm in rows:
        ratio = f"{tdq[2] / t_all:.2f}x faster" if tdq else "n/a"
        print(f"| {name} | {1e3 * t_fwd:.1f} ms | {1e3 * t_all:.1f} ms | {ratio} | "
              f"{nfe[0]} / {nfe[1]} | {err:.1e} | {warm:.2f} s |")
    t_f, t_vjp = numba_eval_times(args.repeats)
    print(f"\nNumba MLP field, one evaluation at batch {B} (median of {args.repeats} x 500 calls): "
          f"mlp_f {1e6 * t_f:.1f} us, mlp_vjp (f and its three VJPs) {1e6 * t_vjp:.1f} us")
    print("\nPeak memory of forward + gradient (tracemalloc, nodeform only):")
    print("| t1 | continuous adjoint | backprop through solver |")
    print("|---|---|---|")
    for t1 in (1.0, 4.0, 16.0):
        print(f"| {t1:g} | {peak_memory('continuous', t1):.1f} MiB | "
              f"{peak_memory('backprop', t1):.1f} MiB |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
