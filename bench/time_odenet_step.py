"""CPU time of one float32 ODE-Net training step (batch 128, width 64), for before/after comparisons.

    OMP_NUM_THREADS=1 flock /tmp/nodeform-bench.lock python bench/time_odenet_step.py [steps]

Process CPU time, not wall time: on a shared, overloaded machine it is the steadier of the two.
Median of ``steps`` (default 3) steps after one warm-up step.
"""
import statistics
import sys
import time

import numpy as np

import nodeform as nf
from nodeform import optim
from nodeform.models.odenet import build_model
from nodeform.nn.losses import cross_entropy


def main(steps=3):
    rng = np.random.default_rng(0)
    x, y = rng.random((128, 1, 28, 28)).astype(np.float32), rng.integers(0, 10, 128)
    model = build_model("odenet", rng=0, dtype=np.float32)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)

    def step():
        loss = cross_entropy(model(x), y)
        float(loss.item())
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    times = []
    for _ in range(steps):
        t0 = time.process_time()
        step()
        times.append(time.process_time() - t0)
    print(f"{nf.__file__}: CPU time per step median {1e3 * statistics.median(times):.0f} ms, "
          f"min {1e3 * min(times):.0f} ms; NFE {model.stats.nfe_forward}/{model.stats.nfe_backward}")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3)
