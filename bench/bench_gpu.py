"""The same reference code on NumPy (CPU) and CuPy (GPU): time per workload and the ratio.

Run: ``python bench/bench_gpu.py`` on a machine where ``python -m nodeform doctor``
reports CuPy usable. Workloads (float64 unless stated; medians of repeats after a
warm-up; the GPU is synchronized before each clock read):

1. The issue-4 neural ODE (MLP 2-64-2 tanh, dopri5 rtol 1e-6 / atol 1e-8, t in [0, 1]),
   forward + gradient by the continuous adjoint, at batch 512 and batch 65,536.
2. Conv2d 64->64, 3x3, pad 1 on 128x64x6x6 (the ODE-Net's inner layer), forward +
   backward, float32 and float64.
3. 10,000 Van der Pol oscillators as one stacked state, dopri5, t in [0, 10].
"""
from __future__ import annotations

import argparse

import numpy as np

import nodeform as nf
from nodeform.backend import cupy_status

from _timing import median_time  # noqa: E402


def timed(fn, repeats, sync):
    fn()                                    # warm-up
    return median_time(fn, repeats, sync)


def neural_ode(xp, batch):
    rng = np.random.default_rng(1)
    W1, b1 = rng.normal(0, 2.0, (64, 2)), rng.normal(0, 1.0, 64)
    W2, b2 = rng.normal(0, 3 / 8, (2, 64)), rng.normal(0, 0.1, 2)
    z0 = xp.asarray(rng.normal(0, 1.0, (batch, 2)))
    ps = [nf.Tensor(xp.asarray(p), requires_grad=True) for p in (W1, b1, W2, b2)]

    def run():
        for p in ps:
            p.grad = None
        zs = nf.odeint(lambda t, z: nf.tanh(z @ ps[0].T + ps[1]) @ ps[2].T + ps[3],
                       nf.Tensor(z0), [0.0, 1.0], params=ps, rtol=1e-6, atol=1e-8)
        (zs[-1] ** 2.0).sum().backward()
    return run


def conv(xp, dtype):
    layer = nf.nn.Conv2d(64, 64, 3, padding=1, rng=0).to(dtype=dtype, backend="cupy" if xp is not np else "numpy")
    x = nf.Tensor(xp.asarray(np.random.default_rng(0).standard_normal((128, 64, 6, 6)), dtype=dtype),
                  requires_grad=True)

    def run():
        layer.zero_grad()
        x.grad = None
        (layer(x) ** 2.0).sum().backward()
    return run


def vdp(xp):
    mu = xp.asarray(np.linspace(0.5, 2.0, 10_000))
    y0 = xp.asarray(np.tile([2.0, 0.0], (10_000, 1)))

    def f(t, y):
        out = xp.empty_like(y)
        out[:, 0] = y[:, 1]
        out[:, 1] = mu * (1 - y[:, 0] ** 2) * y[:, 1] - y[:, 0]
        return out
    return lambda: nf.solve(f, y0, [0.0, 10.0], rtol=1e-6, atol=1e-9)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args(argv)
    cp, reason = cupy_status()
    print(f"CuPy: {reason}")
    if cp is None:
        print("no GPU here: nothing to compare.")
        return 0
    sync_gpu = cp.cuda.Device().synchronize
    work = [("neural ODE adjoint, batch 512", lambda xp: neural_ode(xp, 512)),
            ("neural ODE adjoint, batch 65,536", lambda xp: neural_ode(xp, 65_536)),
            ("Conv2d 64->64 3x3 fwd+bwd, float32", lambda xp: conv(xp, np.float32)),
            ("Conv2d 64->64 3x3 fwd+bwd, float64", lambda xp: conv(xp, np.float64)),
            ("10,000 Van der Pol stacked, dopri5", vdp)]
    print("| workload | NumPy (CPU) | CuPy (GPU) | GPU speed-up |")
    print("|---|---|---|---|")
    for name, make in work:
        t_np = timed(make(np), args.repeats, lambda: None)
        t_cp = timed(make(cp), args.repeats, sync_gpu)
        print(f"| {name} | {1e3 * t_np:.1f} ms | {1e3 * t_cp:.1f} ms | {t_np / t_cp:.1f}x |", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
