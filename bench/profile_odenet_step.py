"""Profile one float32 ODE-Net training step (forward + backward) of batch 128 on 28x28 digits.

Prints the median wall time of a few steps, the NFE, how many primitive calls the
step made, and where the time went, grouped by primitive (forward and VJP apart).
Run it before and after a change to the layers and compare in one sitting:

    python bench/profile_odenet_step.py [--repeats 3] [--batch 128]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np

import nodeform as nf
from nodeform.autodiff import primitive as _prim
from nodeform.models import odenet


def _instrument():
    """Wrap every primitive's forward and VJP with a timer; returns the totals dict."""
    totals = collections.defaultdict(float)
    counts = collections.Counter()
    for p in _prim.PRIMITIVES.values():
        fwd = p.forward

        def timed_forward(*a, _f=fwd, _n=p.name, **k):
            t0 = time.perf_counter()
            try:
                return _f(*a, **k)
            finally:
                totals[_n + " (fwd)"] += time.perf_counter() - t0
                counts[_n] += 1
        p.forward = timed_forward
        if p.vjp_i is not None:
            vi = p.vjp_i

            def timed_vjp_i(*a, _f=vi, _n=p.name, **k):
                t0 = time.perf_counter()
                try:
                    return _f(*a, **k)
                finally:
                    totals[_n + " (vjp)"] += time.perf_counter() - t0
            p.vjp_i = timed_vjp_i
        else:
            def wrap(m, _n=p.name):
                if m is None:
                    return None

                def timed(*a, **k):
                    t0 = time.perf_counter()
                    try:
                        return m(*a, **k)
                    finally:
                        totals[_n + " (vjp)"] += time.perf_counter() - t0
                return timed
            p.vjps = tuple(wrap(m) for m in p.vjps)
    return totals, counts


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--batch", type=int, default=128)
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = np.arange(args.batch) % 10
    model = odenet.build_model("odenet", dtype=np.float32)

    def step():
        model.zero_grad()
        loss = nf.nn.cross_entropy(model(x), y)
        loss.backward()

    step()                                                   # warm-up (and any compilation)
    times = []
    for _ in range(args.repeats):
        t0 = time.perf_counter()
        step()
        times.append(time.perf_counter() - t0)
    s = model.stats
    print(f"ODE-Net float32 step, batch {args.batch}: median {statistics.median(times):.3f} s "
          f"over {args.repeats} (min {min(times):.3f}); NFE forward {s.nfe_forward}, "
          f"backward {s.nfe_backward}")
    totals, counts = _instrument()
    t0 = time.perf_counter()
    step()
    total = time.perf_counter() - t0
    print(f"instrumented step {total:.3f} s; {sum(counts.values())} primitive calls")
    print(f"{'primitive':<24} {'seconds':>8} {'share':>6}")
    for name, sec in sorted(totals.items(), key=lambda kv: -kv[1])[:12]:
        print(f"{name:<24} {sec:8.3f} {sec / total:6.1%}")


if __name__ == "__main__":
    main()
