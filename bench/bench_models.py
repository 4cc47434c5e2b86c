"""Benchmark: training steps of the paper's models, nodeform against PyTorch (+ torchdiffeq), one run.

Each workload is one model of the paper with the same architecture, batch and
float32 data on both sides; a training step is forward, loss, backward and an
SGD step (momentum 0.9). The two sides are timed in turn, step by step, so load
from other processes hits both alike, and the table prints medians and the
ratio nodeform / torch (lower is better; the target of issue 9 is <= 2). Seconds
per epoch are the median step times 31 steps (4,000 digits, batch 128, the last
partial batch dropped). Torch rows are skipped with a message when torch or
torchdiffeq is missing (``pip install nodeform[bench]``).

Other chapters add rows by adding a :class:`Workload` to :data:`WORKLOADS`
(a CNF, a latent ODE): a name, and two factories that build a ``step()``
closure, the second returning None when its peer is missing.

Run::

    python bench/bench_models.py [--steps 5] [--threads 2] [--only odenet,resnet] [--markdown]
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from dataclasses import dataclass
from typing import Callable

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout

#: Steps in one epoch of the embedded split: 4,000 images, batch 128, drop_last.
STEPS_PER_EPOCH = 31
BATCH = 128
WIDTH = 64
TOL = 1e-3


@dataclass
class Workload:
    """One row: ``nodeform()`` and ``peer()`` each return a ``step()`` closure (peer: or None)."""

    name: str
    nodeform: Callable
    peer: Callable
    peer_name: str = "torch"
    unit: str = "s / epoch"
    per_unit: int = STEPS_PER_EPOCH
    nfe: Callable = None          # optional: a function returning the last step's NFE (fwd, bwd)


def _batch(dtype="float32"):
    import numpy as np
    rng = np.random.default_rng(0)
    return (rng.random((BATCH, 1, 28, 28), dtype=np.float32).astype(dtype),
            rng.integers(0, 10, BATCH))


# ======================================================================== nodeform side
def nodeform_model(name):
    """A ``step()`` closure training nodeform's ``name`` model on one fixed float32 batch."""
    import numpy as np
    from nodeform import nn, optim
    from nodeform.models import odenet
    model = odenet.build_model(name, dtype=np.float32)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch()

    def step():
        opt.zero_grad()
        nn.cross_entropy(model(x), y).backward()
        opt.step()
    step.model = model
    return step


# ======================================================================== torch side
def _torch_modules():
    """The same four models written in torch (this file's own code), or None without torch."""
    try:
        import torch
        from torch import nn as tnn
    except ImportError:
        return None

    def gn(c):
        return tnn.GroupNorm(min(32, c), c)

    class ConcatConv(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = tnn.Conv2d(c + 1, c, 3, 1, 1)

        def forward(self, t, x):
            tt = torch.ones_like(x[:, :1]) * t
            return self.conv(torch.cat([tt, x], 1))

    class Field(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1, self.n2, self.c2, self.n3 = gn(c), ConcatConv(c), gn(c), ConcatConv(c), gn(c)
            self.nfe = 0

        def forward(self, t, x):
            self.nfe += 1
            out = self.c1(t, torch.relu(self.n1(x)))
            out = self.c2(t, torch.relu(self.n2(out)))
            return self.n3(out)

    class ODEBlock(tnn.Module):
        def __init__(self, c, adjoint):
            super().__init__()
            self.f, self.adjoint = Field(c), adjoint

        def forward(self, x):
            import torchdiffeq
            solve = torchdiffeq.odeint_adjoint if self.adjoint else torchdiffeq.odeint
            t = torch.tensor([0.0, 1.0])
            return solve(self.f, x, t, rtol=TOL, atol=TOL)[1]

    class ResBlock(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1 = gn(c), tnn.Conv2d(c, c, 3, 1, 1, bias=False)
            self.n2, self.c2 = gn(c), tnn.Conv2d(c, c, 3, 1, 1, bias=False)

        def forward(self, x):
            out = self.c1(torch.relu(self.n1(x)))
            return self.c2(torch.relu(self.n2(out))) + x

    def stem(c=WIDTH):
        return [tnn.Conv2d(1, c, 3, 1), gn(c), tnn.ReLU(), tnn.Conv2d(c, c, 4, 2, 1), gn(c), tnn.ReLU(),
                tnn.Conv2d(c, c, 4, 2, 1)]

    def head(c=WIDTH):
        return [gn(c), tnn.ReLU(), tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, 10)]

    def build(name):
        if name == "mlp":
            return tnn.Sequential(tnn.Flatten(), tnn.Linear(784, 300), tnn.ReLU(), tnn.Linear(300, 10))
        if name == "resnet":
            middle = [ResBlock(WIDTH) for _ in range(6)]
        else:
            middle = [ODEBlock(WIDTH, adjoint=(name == "odenet"))]
        return tnn.Sequential(*stem(), *middle, *head())
    return torch, build


def torch_model(name):
    """A ``step()`` closure for the torch twin of ``name``, or None when torch (or torchdiffeq) is missing."""
    mods = _torch_modules()
    if mods is None:
        return None
    if name in ("odenet", "rknet"):
        try:
            import torchdiffeq  # noqa: F401
        except ImportError:
            return None
    torch, build = mods
    torch.manual_seed(0)
    model = build(name)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x, y = _batch()
    x, y = torch.from_numpy(x), torch.from_numpy(y)
    loss_fn = torch.nn.CrossEntropyLoss()

    fields = [m for m in model.modules() if hasattr(m, "nfe")]

    def step():
        for f in fields:
            f.nfe = 0
        opt.zero_grad()
        out = model(x)
        nfe_f = sum(f.nfe for f in fields)
        loss_fn(out, y).backward()
        step.nfe = (nfe_f, sum(f.nfe for f in fields) - nfe_f) if fields else None
        opt.step()
    step.model = model
    return step


WORKLOADS = {name: Workload(name, (lambda n=name: nodeform_model(n)), (lambda n=name: torch_model(n)),
                            peer_name="torch+torchdiffeq" if name in ("odenet", "rknet") else "torch")
             for name in ("odenet", "rknet", "resnet", "mlp")}


# ======================================================================== the run
def time_pair(fns, steps, warmup=1):
    """Median seconds per call of each closure (None stays None), timed in turn."""
    live = [f for f in fns if f is not None]
    for f in live:
        for _ in range(warmup):
            f()
    ts = [[] for _ in fns]
    for _ in range(steps):
        for k, f in enumerate(fns):
            if f is None:
                continue
            t0 = time.perf_counter()
            f()
            ts[k].append(time.perf_counter() - t0)
    return [sorted(t)[len(t) // 2] if t else None for t in ts]


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=5, help="timed steps per side (after one warm-up)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--only", default=None, help="comma-separated workload names")
    ap.add_argument("--markdown", action="store_true")
    args = ap.parse_args(argv)
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(args.threads))
    names = args.only.split(",") if args.only else list(WORKLOADS)
    unknown = [n for n in names if n not in WORKLOADS]
    if unknown:
        raise SystemExit(f"unknown workload(s) {unknown}; choose from {', '.join(WORKLOADS)}")
    try:
        import torch
        torch.set_num_threads(args.threads)
    except ImportError:
        print("torch is not installed: the peer rows are skipped (pip install nodeform[bench]).")
    rows = []
    for n in names:
        w = WORKLOADS[n]
        ours, peer = w.nodeform(), w.peer()
        if peer is None:
            print(f"{n}: {w.peer_name} is not installed; timing nodeform only.")
        t_ours, t_peer = time_pair([ours, peer], args.steps)
        nfe = ""
        stats = getattr(ours.model, "stats", None)
        if stats is not None:
            nfe = f"{stats.nfe_forward} / {stats.nfe_backward}"
            if getattr(peer, "nfe", None):
                nfe += f" (peer {peer.nfe[0]} / {peer.nfe[1]})"
        rows.append((n, w.peer_name, t_ours * w.per_unit, None if t_peer is None else t_peer * w.per_unit,
                     nfe, w.unit))
        print(f"{n}: nodeform {t_ours * w.per_unit:.2f} {w.unit}"
              + ("" if t_peer is None else f", {w.peer_name} {t_peer * w.per_unit:.2f}, "
                 f"ratio {t_ours / t_peer:.2f}"), flush=True)
    sep = " | " if args.markdown else "  "
    print()
    head = ["workload", "nodeform", "peer", "peer time", "ratio", "NFE fwd / bwd, last step"]
    print(("| " if args.markdown else "") + sep.join(head) + (" |" if args.markdown else ""))
    if args.markdown:
        print("|" + "---|" * len(head))
    for n, pn, a, b, nfe, unit in rows:
        cells = [n, f"{a:.2f} {unit}", pn, "skipped" if b is None else f"{b:.2f} {unit}",
                 "-" if b is None else f"{a / b:.2f}", nfe or "-"]
        print(("| " if args.markdown else "") + sep.join(cells) + (" |" if args.markdown else ""))


if __name__ == "__main__":
    main()
