"""Benchmark: the ODE-Net's inner conv layer, and one epoch of a small CNN on the 5k MNIST subset.

Conv2d 64 -> 64, 3x3, padding 1, on a batch of 128 maps of 6x6 (the ODE-Net's
inner layer), forward and forward+backward (gradients for input, weight and
bias), float32 and float64: nodeform against PyTorch CPU when torch is installed
(``pip install nodeform[bench]``). Both run in this process with the same number
of threads; the table reports medians and the ratio nodeform / torch (lower is
better; the target is <= 2).

Run::

    python bench/bench_conv.py [--repeats 50] [--threads 2] [--epoch] [--markdown]

Leave ``OPENBLAS_CORETYPE`` as the environment sets it (see ../shared/PERF-NOTES.md).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))  # run from a checkout


def _set_threads(n):
    for var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
        os.environ.setdefault(var, str(n))


def median_times(fns, repeats, warmup=3):
    """Median wall time in ms of each function, timed in turn (round robin).

    Interleaving the peers means a burst of load from other processes on a shared
    machine slows both sides of a ratio alike.
    """
    for fn in fns:
        for _ in range(warmup):
            fn()
    ts = [[] for _ in fns]
    for _ in range(repeats):
        for k, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            ts[k].append(time.perf_counter() - t0)
    return [1e3 * sorted(t)[len(t) // 2] for t in ts]


def nodeform_conv(dtype, shape=(128, 64, 6, 6)):
    """``(forward, forward_backward)`` closures for nodeform's Conv2d."""
    import numpy as np
    import nodeform as nf
    from nodeform import nn
    rng = np.random.default_rng(0)
    conv = nn.Conv2d(64, 64, 3, padding=1, rng=rng, dtype=dtype)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)

    def fwd():
        with nf.no_grad():
            conv(x)

    def fwd_bwd():
        xt = nf.Tensor(x, requires_grad=True)
        conv.zero_grad()
        conv(xt).backward(g)

    return fwd, fwd_bwd


def torch_conv(dtype, shape=(128, 64, 6, 6)):
    """The same closures for ``torch.nn.Conv2d``."""
    import numpy as np
    import torch
    torch.manual_seed(0)
    tdt = {np.float32: torch.float32, np.float64: torch.float64}[dtype]
    conv = torch.nn.Conv2d(64, 64, 3, padding=1).to(tdt)
    x = torch.randn(shape, dtype=tdt)
    g = torch.randn(shape, dtype=tdt)

    def fwd():
        with torch.no_grad():
            conv(x)

    def fwd_bwd():
        xt = x.clone().requires_grad_(True)
        conv.zero_grad(set_to_none=True)
        conv(xt).backward(g)

    return fwd, fwd_bwd


def _cnn_nodeform():
    from nodeform import nn
    return nn.Sequential(
        nn.Conv2d(1, 16, 3, stride=2, padding=1), nn.GroupNorm(4, 16), nn.ReLU(),
        nn.Conv2d(16, 32, 3, stride=2, padding=1), nn.GroupNorm(8, 32), nn.ReLU(),
        nn.Flatten(), nn.Linear(32 * 49, 10))


def epoch_nodeform(batch_size=64):
    """Seconds for one epoch (63 steps) of the small CNN of tests/test_train.py, float32, and its test accuracy."""
    import numpy as np
    from nodeform import data, nn, optim, train
    s = data.load_mnist_5k(dtype=np.float32)
    nn.init.manual_seed(0)
    model = _cnn_nodeform().to(np.float32)
    opt = optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = data.BatchIterator(s.x_train, s.y_train, batch_size=batch_size, seed=0)
    t0 = time.perf_counter()
    train.fit(model, opt, batches, train.classification_loss, steps=len(batches), progress=False)
    dt = time.perf_counter() - t0
    return dt, train.evaluate_classifier(model, s.x_test, s.y_test)["accuracy"]


def epoch_torch(batch_size=64):
    """The same epoch in PyTorch (same architecture, data order, optimizer)."""
    import numpy as np
    import torch
    from nodeform import data
    s = data.load_mnist_5k(dtype=np.float32)
    torch.manual_seed(0)
    tnn = torch.nn
    model = tnn.Sequential(
        tnn.Conv2d(1, 16, 3, stride=2, padding=1), tnn.GroupNorm(4, 16), tnn.ReLU(),
        tnn.Conv2d(16, 32, 3, stride=2, padding=1), tnn.GroupNorm(8, 32), tnn.ReLU(),
        tnn.Flatten(), tnn.Linear(32 * 49, 10))
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
    batches = data.BatchIterator(s.x_train, s.y_train, batch_size=batch_size, seed=0)
    t0 = time.perf_counter()
    for _ in range(len(batches)):
        x, y = batches.next()
        loss = tnn.functional.cross_entropy(model(torch.from_numpy(x)), torch.from_numpy(y))
        opt.zero_grad()
        loss.backward()
        opt.step()
    dt = time.perf_counter() - t0
    with torch.no_grad():
        acc = (model(torch.from_numpy(s.x_test)).argmax(1).numpy() == s.y_test).mean()
    return dt, float(acc)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=50)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epoch", action="store_true", help="also time one epoch of the small CNN")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    _set_threads(args.threads)
    import numpy as np
    try:
        import torch
        torch.set_num_threads(args.threads)
        have_torch = True
    except ImportError:
        have_torch = False
        print("torch is not installed: nodeform numbers only (pip install nodeform[bench]).",
              file=sys.stderr)

    rows = []
    for dtype, name in ((np.float32, "f32"), (np.float64, "f64")):
        fns = list(nodeform_conv(dtype)) + (list(torch_conv(dtype)) if have_torch else [])
        times = median_times(fns, args.repeats) + [float("nan")] * (0 if have_torch else 2)
        nfw, nfb, tfw, tfb = times
        rows.append((f"conv 64->64 3x3, 128x64x6x6, {name}, forward", nfw, tfw, "ms"))
        rows.append((f"conv 64->64 3x3, 128x64x6x6, {name}, forward+backward", nfb, tfb, "ms"))
    if args.epoch:
        ne, nacc = epoch_nodeform()
        te, tacc = epoch_torch() if have_torch else (float("nan"), float("nan"))
        rows.append((f"small CNN, 1 epoch of 4,000 digits, f32 (test acc {nacc:.3f} vs {tacc:.3f})",
                     ne, te, "s"))
    head = ("| workload | nodeform | torch CPU | ratio |", "|---|---|---|---|")
    print("\n".join(head) if args.markdown else f"{'workload':70s} {'nodeform':>10s} {'torch':>10s} {'ratio':>6s}")
    for label, a, b, unit in rows:
        if args.markdown:
            print(f"| {label} | {a:.3g} {unit} | {b:.3g} {unit} | {a / b:.2f} |")
        else:
            print(f"{label:70s} {a:8.3g}{unit:>2s} {b:8.3g}{unit:>2s} {a / b:6.2f}")
    import numpy
    from nodeform import memory
    extra = f", torch {torch.__version__}" if have_torch else ""
    print(f"\nthreads={args.threads}, numpy {numpy.__version__}{extra}, "
          f"OPENBLAS_CORETYPE={os.environ.get('OPENBLAS_CORETYPE', '(unset)')}, "
          f"malloc tuning (nodeform/memory.py, at import; NODEFORM_MALLOC_TUNING=0 turns it off): "
          f"{memory.STATE['reason']}, medians of {args.repeats} interleaved runs")


if __name__ == "__main__":
    main()
