# %% [markdown]
# # Chapter 8 — The same models on a GPU
#
# **Goal.** Run the models of chapters 4–7 on a GPU without writing them again: the same
# `nodeform` code, handed CuPy arrays instead of NumPy arrays, trains the ODE-Net, the CNF
# and the latent ODE on the device. We see what moves to the GPU and what stays on the CPU,
# count the moments the GPU must wait for the host (and the host for the GPU), explain where
# the time of one ODE-Net step goes, and compare with PyTorch + torchdiffeq on the same GPU.
#
# **You will learn** how "backend-generic" array code is written (`xp = get_xp(x)`, never
# `np.` on data), why an adaptive solver costs one host synchronization per step and where
# that matters, why a small model is slower on a GPU than on a CPU, and how to test GPU code
# on a machine that has none.
#
# Prerequisites: chapters 2–4 (the solver, the adjoint, the ODE-Net); chapters 6–7 for their
# models. Modules used: `nodeform.backend`, `nodeform.testing_device`, `nodeform.models`,
# `bench/bench_gpu.py`. Time to work through: about 30 minutes. Runs on a CPU: the GPU figures
# come from the last recorded benchmark (`bench/RESULTS-gpu.json`), and the chapter says so.

# %%
import json
import time
from pathlib import Path

import numpy as np
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt

import nodeform as nf
from nodeform import backend
from nodeform import testing_device as fd
from nodeform.models.cnf import PlanarCNF
from nodeform.models.odenet import build_model
from nodeform.nn.losses import cross_entropy
from nodeform.plotting import is_quick, savefig
from nodeform.testing import check

QUICK = is_quick()
T_START = time.perf_counter()
ROOT = Path(nf.__file__).resolve().parent.parent
cp, reason = backend.cupy_status()
print(f"CuPy here: {reason}")
GPU = cp is not None

# %% [markdown]
# ## 1. One switch, read off the arrays
#
# `nodeform` keeps no hidden "current device". Every function finds its array module from its
# inputs, as `cupy.get_array_module` does: `xp = get_xp(x)` is `numpy` for NumPy arrays and
# `cupy` for CuPy arrays, and the code then calls `xp.zeros`, `xp.sqrt`, ... So a model is
# moved by moving its parameters (`model.to(backend="cupy")`) and its data (`xp.asarray`),
# and everything downstream follows. Commands take the same choice from
# `--backend cupy` or the environment variable `NODEFORM_BACKEND=cupy`; asking for CuPy where
# it cannot run stops with one sentence that says why (not installed, no device, the driver).

# %%
try:
    backend.resolve_backend("cupy")
    print("backend 'cupy' is usable here")
except RuntimeError as exc:
    print(f"asking for CuPy here: {exc}")
print("float dtype when none is chosen: NumPy", np.dtype(backend.default_dtype(np)).name,
      "/ GPU", np.dtype(backend.GPU_DEFAULT_DTYPE).name)

# %% [markdown]
# ## 2. What moves to the GPU, and what does not
#
# | part | on a GPU? | why |
# |---|---|---|
# | `Tensor` autodiff, every primitive and its VJP | yes | written with `xp` |
# | reference solvers (RK loops, dense output, PI controller) | yes | states combined by `+` and `*` only |
# | continuous adjoint, backprop through the solver | yes | the augmented state is one `xp` array |
# | layers: conv (im2col + matmul), GroupNorm, Linear, RNN cell | yes | `xp` code, cuBLAS for the products |
# | ODE-Net, RK-Net, ResNet, MLP; CNF (`engine="autodiff"`); latent ODE (`grad="continuous"`/`"backprop"`) | yes | built from the above |
# | the Numba engines (`@njit` fields, `NumbaField`, CNF `engine="numba"`/`"numpy"`) | **no** | compiled for the CPU, float64 NumPy only: a device array is refused with a clear error |
# | the latent ODE's `grad="numba"` (its default) | falls back to `"continuous"` | as it already does for float32 |
# | batch order, the latent ODE's masks and time grids | host | index bookkeeping; copied to the device once per epoch or batch |
# | the controller's decision (accept? next h?) | host | one scalar per step comes back: a **host sync** |
# | Adams PECE (chapter 5) | yes | but its order selection reads up to 4 error norms per step: up to 4 syncs |
#
# The Numba refusal, shown on the fake device of section 4 (CuPy gives the same message):

# %%
fdx = fd.enable()
try:
    PlanarCNF(dim=2, width=4, hidden=4, engine="numba", rng=0).to(
        backend="fakedevice").log_prob(fd.asarray(np.zeros((3, 2))))
except ValueError as exc:
    print("PlanarCNF(engine='numba') on device data:", exc)
    refused = "CPU only" in str(exc)
check("ch08.numba_stays_on_cpu", refused, "a Numba engine refuses device arrays with a clear error")

# %% [markdown]
# ## 3. Host syncs: the one scalar per step
#
# A GPU runs kernels asynchronously: Python queues them and moves on. It waits only when it
# needs a *value*: `float(x)` or `bool(x)` on a device array blocks until every queued kernel
# has run and the number has crossed the bus. An adaptive solver must decide, each step,
# whether to accept it and how large the next one is: that needs the error ratio as a Python
# float. So **one sync per attempted step** is the floor for an adaptive solve written this
# way (torchdiffeq makes the same round trip). Before the loop there are 4 more: one finiteness
# check of $f(t_0, y_0)$ and the three norms of Hairer's first-step heuristic.
#
# Every such conversion in `nodeform` goes through `backend.host_float` / `host_bool`, which
# count it (on NumPy too, where it would be a sync), so the count can be read and tested on a
# CPU: `Solution.host_syncs`, `SolveStats.syncs_forward`/`syncs_backward`. Written out:

# %%
def syncs_of_adaptive_solve(n_attempted_steps, first_step_given=False):
    """Host syncs of one reference adaptive solve: one per attempted step, and the start."""
    start = 1 if first_step_given else 1 + 3      # finite f(t0, y0); + 3 norms of the first step
    return n_attempted_steps + start


A = np.array([[-0.5, 2.0], [-2.0, -0.5]])
sol = nf.solve(lambda t, y: y @ A.T, np.ones((4, 2)), [0.0, 5.0], rtol=1e-6, atol=1e-8)
print(f"dopri5: {sol.stats['n_steps']} attempted steps, {sol.host_syncs} host syncs")
check("ch08.one_sync_per_step", sol.host_syncs == syncs_of_adaptive_solve(sol.stats["n_steps"]),
      "host syncs of an adaptive solve = attempted steps + 4")

# %% [markdown]
# ## 4. Testing GPU code without a GPU
#
# CI has no GPU. `nodeform.testing_device` registers a *fake device*: NumPy arrays of a
# subclass that behaves like CuPy's where it matters. Mixing a host array into an operation on
# a device array raises (CuPy raises too); calling a NumPy function on a device array raises
# (generic code must call `xp.<name>`); every implicit conversion to a Python number is counted.
# A model that trains on the fake device has no host code on its hot path, and if the fake's
# count of implicit syncs equals `nodeform`'s own count, no sync hides outside the counted
# places. Here one ODE-Net training step (a narrow one, so it is quick):

# %%
WIDTH, BATCH = (8, 6) if QUICK else (64, 128)     # full: the ODE-Net of Table 1


def odenet_step(to_device):
    rng = np.random.default_rng(0)
    x, y = rng.random((BATCH, 1, 28, 28)), rng.integers(0, 10, BATCH)
    net = build_model("odenet", rng=0, width=WIDTH)
    if to_device:
        net.to(backend="fakedevice")
        x, y = fdx.asarray(x), fdx.asarray(y)
    s0 = backend.sync_count()
    loss = cross_entropy(net(x), y)
    loss.backward()
    grads = [backend.to_numpy(p.grad.data) for p in net.parameters()]
    return float(backend.to_numpy(loss.data)), grads, net.stats, backend.sync_count() - s0


loss_np, g_np, st_np, syncs_np = odenet_step(False)
fd.reset_counters()
loss_fd, g_fd, st_fd, syncs_fd = odenet_step(True)
same = loss_np == loss_fd and all(np.array_equal(a, b) for a, b in zip(g_np, g_fd))
print(f"loss {loss_np:.6f} (NumPy) vs {loss_fd:.6f} (fake device); NFE {st_fd.nfe_forward} forward, "
      f"{st_fd.nfe_backward} backward; host syncs counted {syncs_fd}, implicit on the fake "
      f"device {fd.IMPLICIT_SYNCS[0]}")
print(f"forward solve: {st_fd.steps_forward} accepted steps, {st_fd.syncs_forward} syncs; backward: "
      f"{st_fd.steps_backward} accepted steps, {st_fd.syncs_backward} syncs; + 1 for the label check")
check("ch08.fake_device_parity", same and syncs_fd == syncs_np == fd.IMPLICIT_SYNCS[0],
      "the ODE-Net step on the fake device equals NumPy bit for bit and every sync is counted")

# %% [markdown]
# On a real GPU the same step runs when `GPU` is true (float64 here, so it can be compared
# with NumPy to 1e-7; the parity suite `tests/test_gpu_models.py` also checks float32, the GPU
# default, against the float64 reference within 1e-3 on the loss).

# %%
if GPU:
    net = build_model("odenet", rng=0, width=WIDTH).to(backend="cupy")
    rng = np.random.default_rng(0)
    x, y = cp.asarray(rng.random((BATCH, 1, 28, 28))), cp.asarray(rng.integers(0, 10, BATCH))
    loss = cross_entropy(net(x), y)
    loss.backward()
    err = abs(float(loss.data) - loss_np) / abs(loss_np)
    print(f"CuPy: loss {float(loss.data):.8f}, relative difference to NumPy {err:.1e}")
    check("ch08.gpu_parity", err < 1e-7, "ODE-Net loss on CuPy (float64) within 1e-7 of NumPy")
else:
    print("no usable GPU here: the live parity check is skipped (tests/test_gpu_models.py runs it "
          "on a GPU machine).")

# %% [markdown]
# ## 5. Where the time of one ODE-Net step goes on a GPU
#
# A step of the ODE-Net is about 45 evaluations of the field (dopri5 forward, the adjoint's
# backward solve), each a few dozen primitives (GroupNorm, conv, ReLU, their VJPs), each at
# least one kernel. At batch 128 and 64 channels on 6×6 maps the kernels are tiny: most cost
# less than launching them. So we expect the step to be bound by **launches** (Python and CUDA
# overhead per kernel, typically 5–20 µs each), not by arithmetic, and the host syncs (one per
# solver step, typically tens of µs each) to be a few percent. The model:
#
# $$T_\text{step} \approx N_\text{launch}\, t_\text{launch} + N_\text{sync}\, t_\text{sync} + T_\text{compute}.$$
#
# The counts are the same on every backend, so we measure them here; the costs
# $t_\text{launch}$, $t_\text{sync}$ and the step time come from the recorded GPU benchmark.

# %%
from nodeform.autodiff import primitive as _prim  # noqa: E402

with _prim.counting_calls() as calls:      # every primitive's forward call, counted
    _, _, st, syncs_step = odenet_step(False)
n_calls = calls[0]
print(f"one ODE-Net step (width {WIDTH}): {n_calls} primitive calls (the forward pass, the adjoint's "
      f"evaluations, and the VJPs written with primitives; a lower bound on kernel launches), "
      f"{syncs_step} host syncs, NFE {st.nfe_forward + st.nfe_backward}")
check("ch08.counts_per_step", n_calls > 10 * (st.nfe_forward + st.nfe_backward) and syncs_step < n_calls / 50,
      "a step launches far more kernels than it syncs: launches, not syncs, set the floor")

# %% [markdown]
# ## 6. The speed table (recorded on the GPU)
#
# `bench/bench_gpu.py` runs, in one process on the same GPU: an ODE-Net epoch on the embedded
# 4,000-digit subset, a planar CNF iteration and a latent ODE iteration, nodeform on CuPy
# (float32) against PyTorch + torchdiffeq, and writes `bench/RESULTS-gpu.md` and `.json`.
# The chapter prints the last recorded run; on a CPU it does not (cannot) measure them.

# %%
rec_path = ROOT / "bench" / "RESULTS-gpu.json"
record = json.loads(rec_path.read_text()) if rec_path.exists() else None
if record is not None and not record.get("dry_run"):
    print(f"RECORDED on {record['device']} at {record['date']} (not measured now):")
    for r in record["rows"]:
        ratio = r["nodeform_s"] / r["torch_s"] if r.get("torch_s") else float("nan")
        print(f"  {r['workload']}: nodeform {r['nodeform_s']:.3f} s, torch "
              f"{r.get('torch_s') or float('nan'):.3f} s, ratio {ratio:.2f}x")
    a = record["anatomy"]
    parts = {"launches": a["forward_primitive_calls"] * a["launch_s"],
             "syncs": a["syncs"] * (a["sync_s"] + a["launch_s"])}
    parts["rest"] = max(a["step_s"] - sum(parts.values()), 0.0)
else:
    print("no GPU benchmark of the models is recorded yet (bench/RESULTS-gpu.json is missing): "
          "the GPU figures of this chapter are LEFT TO BE MEASURED with `bash bench/gpu_session.sh` "
          "on a GPU machine.")
    parts = None
md = (ROOT / "bench" / "RESULTS-gpu.md").read_text()
earlier = [line for line in md.splitlines() if line.startswith("| neural ODE adjoint")
           or line.startswith("| Conv2d") or line.startswith("| 10,000 Van der Pol")]
if earlier:
    print("RECORDED earlier (bench/RESULTS-gpu.md, one NVIDIA H200, 2026-11-28; the reference code, "
          "NumPy on 16 CPU cores vs CuPy, float64):")
    for line in earlier:
        print("  " + line)

# %%
fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
ax = axes[0]
ax.bar(["primitive calls", "host syncs"], [n_calls, syncs_step],
       color=["tab:blue", "tab:red"])
ax.set_yscale("log")
ax.set_title(f"one ODE-Net step, width {WIDTH} (counted here)")
ax = axes[1]
if parts is not None:
    ax.bar(list(parts), [1e3 * v for v in parts.values()], color=["tab:blue", "tab:red", "tab:gray"])
    ax.set_ylabel("ms")
    ax.set_title(f"where the step's time goes on {record['device']}\n(recorded {record['date']})")
else:
    ax.text(0.5, 0.5, "GPU time split:\nnot measured yet\n(run bench/gpu_session.sh)", ha="center",
            va="center", fontsize=11)
    ax.set_axis_off()
fig.tight_layout()
savefig(fig, "ch08_step_anatomy")
print(f"chapter ran in {time.perf_counter() - T_START:.1f} s")

# %% [markdown]
# ## Summary
#
# * One code path: arrays choose the module (`get_xp`), models move with `Module.to`, data with
#   `xp.asarray` once per run; `--backend cupy` / `NODEFORM_BACKEND=cupy` choose it for commands.
# * The Numba engines stay on the CPU and say so; everything else of chapters 4–7 runs on CuPy.
# * An adaptive solve makes one host sync per attempted step (plus 4 at the start), and every
#   sync is counted and testable on a CPU with a fake device.
# * A small ODE-Net step is launch-bound on a GPU: thousands of tiny kernels, tens of syncs.
#   Fusing kernels (or CUDA graphs) is what would make it faster, not fewer syncs.
#
# ## Exercises
#
# * **ex8_1** Reduce the 4 syncs before the loop to 1: compute the three norms of the first-step
#   heuristic as one device array and read it back once. Check with `Solution.host_syncs`.
# * **ex8_2** Write a generic `softplus(x)` primitive that passes on the fake device; then put
#   `np.log1p` in it by mistake and read the fake device's error.
# * **ex8_3** On a GPU, time the ODE-Net step at batch 128, 1,024 and 8,192. Where does it stop
#   being launch-bound? Compare with the recorded 0.6x / 48x of the reference neural ODE.

# %% [markdown]
# ### ex8_2, built
#
# A primitive's forward receives raw arrays, NumPy or CuPy (or the fake device's), and must
# take its functions from `xp = backend.get_xp(x)`. Softplus, $\log(1 + e^x)$, must also be
# stable: $e^{800}$ overflows, so write it as `xp.logaddexp(0, x)` (or with the max trick).
# Its VJP, $g\,\sigma(x)$, is Tensor code and is given. The student copy has a stub here; its
# check is `tests/exercises/test_ch08.py`.

# %%
def softplus_forward(x):
    """``log(1 + exp(x))`` of a raw array on any backend, without overflow; same shape."""
    # BEGIN SOLUTION ex8_2
    xp = backend.get_xp(x)
    return xp.logaddexp(0.0, x)
    # END SOLUTION ex8_2


SOFTPLUS = nf.defprim("ch08_softplus", softplus_forward, lambda g, ans, x: g * nf.sigmoid(x))

x_fd = nf.Tensor(fd.asarray(np.array([-800.0, -1.0, 0.0, 2.0, 800.0])), requires_grad=True)
y_fd = SOFTPLUS(x_fd)
y_fd.sum().backward()
print("softplus on the fake device:", backend.to_numpy(y_fd.data), "gradient",
      backend.to_numpy(x_fd.grad.data))
check("ch08.ex8_2_softplus", backend.is_device_array(y_fd.data)
      and np.allclose(backend.to_numpy(y_fd.data), np.logaddexp(0.0, [-800.0, -1.0, 0.0, 2.0, 800.0])),
      "the generic softplus primitive stays on the device and is finite at +-800")
