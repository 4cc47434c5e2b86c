"""Profile one float32 ODE-Net training step (forward + backward) of batch 128 on 28x28 digits.

Prints the median wall time of a few steps, the NFE, how many primitive calls the
step made, and where the time went, grouped by primitive (forward and VJP apart).
``--compare`` also times the step with the layers as they were before issue 9
(GroupNorm composed of six primitives, ConcatConv2d building the concatenated
input), alternating the two versions in one process so load on the machine hits
both alike:

    python bench/profile_odenet_step.py [--model odenet|rknet] [--repeats 3] [--batch 128] [--compare]
"""
from __future__ import annotations

import argparse
import collections
import statistics
import time

import numpy as np

import nodeform as nf
from nodeform import nn
from nodeform.autodiff import functions as F
from nodeform.autodiff import primitive as _prim
from nodeform.autodiff.tensor import Tensor
from nodeform.models import odenet
from nodeform.nn.norm import group_norm_composed

_FUSED = (nn.GroupNorm.forward, nn.ConcatConv2d.forward)


def _groupnorm_composed(self, x):
    return group_norm_composed(x, self.weight, self.bias, self.num_groups, self.eps)


def _concatconv_concatenating(self, t, x):
    """The time channel built as an array and concatenated in front of ``x`` (the old way)."""
    n, _, h, w = x.shape
    if isinstance(t, Tensor):
        tt = F.broadcast_to(F.reshape(t.astype(x.dtype), 1, 1, 1, 1), (n, 1, h, w))
    else:
        tt = Tensor(np.full((n, 1, h, w), float(t), dtype=x.dtype))
    return nn.conv2d(F.concatenate([tt, x], axis=1), self.weight, self.bias, self.stride,
                     self.padding)


def use_layers(fused):
    """Switch GroupNorm and ConcatConv2d between the fused and the composed versions."""
    if fused:
        nn.GroupNorm.forward, nn.ConcatConv2d.forward = _FUSED
    else:
        nn.GroupNorm.forward, nn.ConcatConv2d.forward = _groupnorm_composed, _concatconv_concatenating


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
    ap.add_argument("--model", choices=("odenet", "rknet"), default="odenet",
                    help="rknet: gradients by backprop through dopri5 instead of the adjoint")
    ap.add_argument("--compare", action="store_true",
                    help="also time the composed GroupNorm and concatenating ConcatConv2d")
    args = ap.parse_args(argv)
    rng = np.random.default_rng(0)
    x = rng.random((args.batch, 1, 28, 28), dtype=np.float32)
    y = np.arange(args.batch) % 10
    model = odenet.build_model(args.model, dtype=np.float32)

    def step():
        model.zero_grad()
        loss = nf.nn.cross_entropy(model(x), y)
        loss.backward()

    step()                                                   # warm-up (and any compilation)
    versions = [True, False] if args.compare else [True]
    times = {v: [] for v in versions}
    for _ in range(args.repeats):
        for v in versions:
            use_layers(v)
            t0 = time.perf_counter()
            step()
            times[v].append(time.perf_counter() - t0)
    use_layers(True)
    s = model.stats
    for v in versions:
        label = "fused GroupNorm + ConcatConv2d" if v else "composed (before)"
        print(f"{args.model} float32 step, batch {args.batch}, {label}: median "
              f"{statistics.median(times[v]):.3f} s over {args.repeats} (min {min(times[v]):.3f}); "
              f"NFE forward {s.nfe_forward}, backward {s.nfe_backward}")
    if args.compare:
        print(f"speed-up: {statistics.median(times[False]) / statistics.median(times[True]):.2f}x")
    for v in versions[::-1]:
        use_layers(v)
        _profile(step, "fused" if v else "composed")
    use_layers(True)


def _profile(step, label):
    if not hasattr(_profile, "state"):
        _profile.state = _instrument()
    totals, counts = _profile.state
    totals.clear()
    counts.clear()
    t0 = time.perf_counter()
    step()
    total = time.perf_counter() - t0
    print(f"\n{label}: instrumented step {total:.3f} s; {sum(counts.values())} primitive calls "
          "(a primitive's time includes the primitives it calls)")
    print(f"{'primitive':<24} {'seconds':>8} {'share':>6} {'calls':>6}")
    for name, sec in sorted(totals.items(), key=lambda kv: -kv[1])[:16]:
        calls = counts[name.rsplit(" (", 1)[0]] if name.endswith("(fwd)") else ""
        print(f"{name:<24} {sec:8.3f} {sec / total:6.1%} {calls:>6}")


if __name__ == "__main__":
    main()
