"""Accuracy of one planar-CNF loss gradient under different backward error controls.

Run: ``python bench/_cnf_grad_accuracy.py circles`` (needs ``runs/ch06_circles_cnf.npz`` from
a full chapter-6 run). One batch of 512 evenly spaced points; the reference gradient uses a
backward tolerance of 1e-10. Rows: the default RMS norm (compiled and NumPy), the per-part
norm (``adjoint_options=dict(norm="parts")``, NumPy VJP on the reference loops) and a
backward tolerance of 1e-7.
"""
import sys
import time

import numpy as np

import nodeform as nf
from nodeform.data import toy2d
from nodeform.models import cnf

name = sys.argv[1] if len(sys.argv) > 1 else "circles"
theta = np.load(f"runs/ch06_{name}_cnf.npz")["theta"]
x = toy2d.sample(name, 512, seed=123, angles="even")


def grad(engine, **kw):
    m = cnf.PlanarCNF(width=64, hidden=32, engine=engine, rng=0)
    nf.nn.vector_to_parameters(theta, m.parameters())
    st = nf.SolveStats()
    t = time.perf_counter()
    cnf.nll(m, x, stats=st, **kw).backward()
    g = nf.nn.parameters_to_vector([p.grad for p in m.parameters()])
    return g, st, time.perf_counter() - t


ref, st, _ = grad("numba", adjoint_rtol=1e-10, adjoint_atol=1e-10)
print(f"{name}: reference (backward tolerance 1e-10) NFE backward {st.nfe_backward}")
for label, eng, kw in [("rms 1e-5 (numba)", "numba", {}),
                       ("rms 1e-5 (numpy)", "numpy", {}),
                       ("parts 1e-5 (numpy)", "numpy", dict(adjoint_options=dict(norm="parts"))),
                       ("rms 1e-7 (numba)", "numba", dict(adjoint_rtol=1e-7, adjoint_atol=1e-7))]:
    g, st, sec = grad(eng, **kw)
    err = np.abs(g - ref).max() / np.abs(ref).max()
    rel = np.linalg.norm(g - ref) / np.linalg.norm(ref)
    print(f"  {label:20s} NFE fwd/bwd {st.nfe_forward}/{st.nfe_backward}  max err {err:.2e}  "
          f"rel l2 err {rel:.2e}  ({sec:.1f} s)")
