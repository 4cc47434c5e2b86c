"""Softplus and ELU of the compiled MLP field against its tanh and the old scalar-libm loops.

Run: python bench/_activations.py  (numbers in bench/RESULTS-adjoint.md)
"""
import numpy as np, time, math
from numba import njit
from nodeform.adjoint.numba_field import _act_inplace, mlp_field, mlp_f
@njit(cache=False)
def old_softplus(x, n):
    for i in range(n):
        v = x[i]
        x[i] = max(v, 0.0) + math.log1p(math.exp(-abs(v)))
@njit(cache=False)
def old_elu(x, n):
    for i in range(n):
        v = x[i]
        if v <= 0.0:
            x[i] = math.expm1(v)
rng = np.random.default_rng(0)
x0 = rng.standard_normal(64 * 512) * 2
def t(fn):
    x = x0.copy(); fn(x); ts = []
    for _ in range(200):
        x[:] = x0; t0 = time.perf_counter(); fn(x); ts.append(time.perf_counter() - t0)
    return round(min(ts) * 1e6, 1)
print("activation on 64 x 512 values (min of 200, us):")
print(" tanh (vectorized)", t(lambda x: _act_inplace(x, x.size, 0)))
print(" softplus new", t(lambda x: _act_inplace(x, x.size, 1)), "old scalar libm", t(lambda x: old_softplus(x, x.size)))
print(" elu new", t(lambda x: _act_inplace(x, x.size, 2)), "old scalar libm", t(lambda x: old_elu(x, x.size)))
for act in ("tanh", "softplus", "elu"):
    fld = mlp_field(2, (64,), act); th = fld.init_theta(rng); z = rng.standard_normal(1024)
    print(" mlp_f 2-64-2 batch 512", act, t(lambda x: mlp_f(0.0, z, th, *fld.args)))
