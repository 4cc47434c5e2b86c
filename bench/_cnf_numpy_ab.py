"""The CNF's NumPy kernels of two revisions timed against each other, interleaved in one process.

On a shared machine the load changes from one minute to the next, so two separate runs of
``bench_cnf.py`` compare the load as much as the code. This script loads
``nodeform/models/_cnf_kernels.py`` as it was at ``--base`` (a git revision) beside the
working tree's, builds one training setup per version (``bench_cnf.nodeform_iteration``,
``engine="numpy"``, same weights, same batches), and alternates their iterations, so both
see the same load. Only the kernels differ: the solver and the adjoint are the working
tree's for both. It prints each one's loss and NFE after the last iteration (equal NFE and
losses equal to rounding: the same numbers) and the min / quartile / median time.

Run: ``python bench/_cnf_numpy_ab.py --base 74425d1 --data circles --weights
runs/ch06_circles_cnf.npz --iters 30``.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bench_cnf  # noqa: E402

from nodeform.models import _cnf_kernels as K  # noqa: E402

KERNELS = "nodeform/models/_cnf_kernels.py"


def kernels_at(rev):
    """The module ``_cnf_kernels`` as it was at git revision ``rev``."""
    src = subprocess.run(["git", "show", f"{rev}:{KERNELS}"], check=True, capture_output=True,
                         text=True).stdout
    path = os.path.join(tempfile.mkdtemp(), "_cnf_kernels_base.py")
    with open(path, "w") as fh:
        fh.write(src)
    spec = importlib.util.spec_from_file_location("_cnf_kernels_base", path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--base", required=True, help="git revision of the kernels to compare with")
    ap.add_argument("--data", default="circles")
    ap.add_argument("--weights", required=True)
    ap.add_argument("--iters", type=int, default=30)
    args = ap.parse_args(argv)
    theta0 = np.load(args.weights)["theta"]
    data = bench_cnf.batches(args.data, 4)
    rows = []
    for label, mod in [(args.base, kernels_at(args.base)), ("working tree", K)]:
        step, stats = bench_cnf.nodeform_iteration("numpy", theta0, data)
        rows.append((label, mod.planar_f_np, mod.planar_vjp_np, step, stats, [], []))
    # PlanarCNF.fused_field reads these two names from the module at every solve
    for r in range(args.iters + 1):                       # the first round is a warm-up
        for label, f, vjp, step, stats, times, losses in rows:
            K.planar_f_np, K.planar_vjp_np = f, vjp
            t0 = time.perf_counter()
            losses.append(step())
            if r:
                times.append(time.perf_counter() - t0)
    K.planar_f_np, K.planar_vjp_np = rows[-1][1], rows[-1][2]
    for label, f, vjp, step, stats, times, losses in rows:
        times.sort()
        print(f"{label:14s} last loss {losses[-1]!r:20s} NFE {stats.nfe_forward} / {stats.nfe_backward}   "
              f"min {times[0] * 1e3:6.2f} ms  q25 {times[len(times) // 4] * 1e3:6.2f}  "
              f"median {times[len(times) // 2] * 1e3:6.2f} ms")


if __name__ == "__main__":
    main()
