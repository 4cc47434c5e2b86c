"""The models of chapters 4-7 on a GPU: nodeform on CuPy against PyTorch + torchdiffeq, one run.

Run on a machine where ``python -m nodeform doctor`` reports CuPy usable::

    python bench/bench_gpu.py                       # GPU: writes bench/RESULTS-gpu.md and .json
    python bench/bench_gpu.py --device cpu          # dry run on the CPU: small sizes, NumPy vs torch-CPU

Workloads (float32, the GPU default; the same model, data and solver settings on both
sides; data on the device before the clock starts; the device is synchronized before
each clock read):

1. ODE-Net epoch on the embedded 4,000-image subset (batch 128, last partial batch
   dropped: 31 steps; dopri5 at rtol = atol = 1e-3, continuous adjoint on both sides,
   SGD with momentum), including one host read of the loss per step as a training
   loop does. Time of the epoch, NFE per step, host syncs per step (nodeform).
2. Planar CNF iteration (chapter 6: width 64, hypernet 32, closed-form trace, batch 512
   of two circles, dopri5 rtol = atol = 1e-5, continuous adjoint, Adam): median time.
3. Latent ODE iteration (chapter 7: 800 spirals, the paper's sizes, dopri5
   rtol = 1e-5 / atol = 1e-6; nodeform: the autodiff field with the continuous adjoint;
   torch: torchdiffeq ``odeint_adjoint``), median time.
4. Where one ODE-Net step's time goes on the GPU: primitive calls (a lower bound on
   kernel launches), host syncs, the measured cost of one launch and of one sync.

The ratio is nodeform / torch (lower is better); the issue's target is <= 2 for the
ODE-Net epoch and the CNF iteration. ``--device cpu`` shrinks every size so the script
itself is tested on a CPU-only machine (tests/test_chapters.py runs it); its numbers are
not GPU numbers and are never written to bench/RESULTS-gpu.md unless ``--out`` says so.
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import re
import statistics
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _timing import median_time  # noqa: E402

import nodeform as nf  # noqa: E402
from nodeform import optim  # noqa: E402
from nodeform.autodiff import primitive as _prim  # noqa: E402
from nodeform.backend import cupy_status, sync_count  # noqa: E402
from nodeform.data import BatchIterator, load_mnist, toy2d  # noqa: E402
from nodeform.models import cnf  # noqa: E402
from nodeform.models.latent_ode import LatentODE, compact, previous_gaps, union_grid  # noqa: E402
from nodeform.models.odenet import build_model  # noqa: E402
from nodeform.nn.losses import cross_entropy  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
RESULTS_MD = os.path.join(HERE, "RESULTS-gpu.md")
RESULTS_JSON = os.path.join(HERE, "RESULTS-gpu.json")
#: The markers between which this script rewrites RESULTS-gpu.md (the rest of the file is kept).
BEGIN, END = "<!-- bench_gpu models: begin -->", "<!-- bench_gpu models: end -->"
#: Sizes: the real ones on a GPU, small ones for the CPU dry run.
SIZES = {"cuda": dict(train=4000, batch=128, width=64, cnf_batch=512, spirals=800, repeats=5),
         "cpu": dict(train=64, batch=32, width=8, cnf_batch=64, spirals=8, repeats=2)}
ODE_TOL = 1e-3
CNF_TOL = 1e-5
LAT_RTOL, LAT_ATOL = 1e-5, 1e-6
CNF_M, CNF_H = 64, 32


# ======================================================================== the two sides' devices
class Side:
    """Where one side runs: array module / torch device, and how to wait for the device."""

    def __init__(self, device, use_torch=True):
        self.device = device
        self.xp, self.backend = np, "numpy"
        self.sync = lambda: None
        if device == "cuda":
            cp, reason = cupy_status()
            if cp is None:
                raise SystemExit(f"--device cuda: {reason}. Use --device cpu for a dry run.")
            self.xp, self.backend = cp, "cupy"
            self.sync = cp.cuda.Device().synchronize
        self.torch = self.tdev = None
        self.torch_reason = None
        try:
            if not use_torch:
                raise ImportError("left out (--no-torch)")
            import torch
            import torchdiffeq  # noqa: F401
            if device == "cuda" and not torch.cuda.is_available():
                raise ImportError("torch sees no CUDA device")
            self.torch, self.tdev = torch, torch.device(device)
            if device == "cpu":
                torch.set_num_threads(1)
        except ImportError as exc:
            self.torch_reason = f"torch + torchdiffeq not usable: {exc}"

    def tsync(self):
        if self.device == "cuda":
            self.torch.cuda.synchronize()

    def name(self):
        if self.device == "cuda":
            return cupy_status()[1][4:-1] if cupy_status()[1].startswith("ok (") else "GPU"
        return f"CPU ({platform.processor() or platform.machine()}, dry run)"


def _ratio(a, b):
    return a / b if (a and b) else None


# ======================================================================== 1. ODE-Net epoch
def odenet_nodeform(side, S):
    split = load_mnist(source="embedded", dtype=np.float32)
    xp = side.xp
    model = build_model("odenet", rng=0, width=S["width"], dtype=np.float32)
    if xp is not np:
        model.to(backend=side.backend)
    x, y = xp.asarray(split.x_train[:S["train"]]), xp.asarray(split.y_train[:S["train"]])
    batches = BatchIterator(x, y, batch_size=S["batch"], seed=0, drop_last=True)
    opt = optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    per = {"nfe": [], "syncs": []}

    def step():
        s0 = sync_count()
        xb, yb = batches.next()
        loss = cross_entropy(model(xb), yb)
        nf.backend.host_float(loss.data)                 # the training loop's read of the loss
        opt.zero_grad()
        loss.backward()
        opt.step()
        per["nfe"].append(model.stats.nfe_forward + model.stats.nfe_backward)
        per["syncs"].append(sync_count() - s0)

    def epoch():
        for _ in range(len(batches)):
            step()
    return step, epoch, per, len(batches)


def odenet_torch(side, S):
    torch, dev = side.torch, side.tdev
    from torch import nn as tnn
    import torchdiffeq

    def gn(c):
        return tnn.GroupNorm(min(32, c), c)

    class ConcatConv(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.conv = tnn.Conv2d(c + 1, c, 3, 1, 1)

        def forward(self, t, x):
            return self.conv(torch.cat([torch.ones_like(x[:, :1]) * t, x], 1))

    class Field(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.n1, self.c1, self.n2, self.c2, self.n3 = gn(c), ConcatConv(c), gn(c), ConcatConv(c), gn(c)
            self.nfe = 0

        def forward(self, t, x):
            self.nfe += 1
            out = self.c1(t, torch.relu(self.n1(x)))
            return self.n3(self.c2(t, torch.relu(self.n2(out))))

    class Block(tnn.Module):
        def __init__(self, c):
            super().__init__()
            self.f = Field(c)
            self.register_buffer("t", torch.tensor([0.0, 1.0]))

        def forward(self, x):
            return torchdiffeq.odeint_adjoint(self.f, x, self.t, rtol=ODE_TOL, atol=ODE_TOL)[1]

    c = S["width"]
    torch.manual_seed(0)
    model = tnn.Sequential(tnn.Conv2d(1, c, 3, 1), gn(c), tnn.ReLU(), tnn.Conv2d(c, c, 4, 2, 1), gn(c),
                           tnn.ReLU(), tnn.Conv2d(c, c, 4, 2, 1), Block(c), gn(c), tnn.ReLU(),
                           tnn.AdaptiveAvgPool2d(1), tnn.Flatten(), tnn.Linear(c, 10)).to(dev)
    field = model[7].f
    split = load_mnist(source="embedded", dtype=np.float32)
    x = torch.as_tensor(split.x_train[:S["train"]], device=dev)
    y = torch.as_tensor(split.y_train[:S["train"]].astype(np.int64), device=dev)
    n_b = S["train"] // S["batch"]
    opt = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    lossf = tnn.CrossEntropyLoss()
    per = {"nfe": []}
    state = {"b": 0, "order": None}

    def step():
        if state["b"] % n_b == 0:
            state["order"] = torch.randperm(len(x), device=dev)
        idx = state["order"][(state["b"] % n_b) * S["batch"]:(state["b"] % n_b + 1) * S["batch"]]
        state["b"] += 1
        field.nfe = 0
        loss = lossf(model(x[idx]), y[idx])
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
        per["nfe"].append(field.nfe)

    def epoch():
        for _ in range(n_b):
            step()
    return step, epoch, per, n_b


def bench_odenet(side, S):
    row = {"workload": f"ODE-Net epoch ({S['train'] // S['batch']} steps of batch {S['batch']}, "
                       f"width {S['width']}, float32)"}
    step, epoch, per, n = odenet_nodeform(side, S)
    step(), step()                                   # warm-up (CuPy compiles its kernels here)
    per["nfe"].clear(), per["syncs"].clear()
    row["nodeform_s"] = median_time(epoch, 1, side.sync)
    row["nodeform_nfe_per_step"] = statistics.mean(per["nfe"])
    row["nodeform_syncs_per_step"] = statistics.mean(per["syncs"])
    if side.torch is not None:
        tstep, tepoch, tper, _ = odenet_torch(side, S)
        tstep(), tstep()
        tper["nfe"].clear()
        row["torch_s"] = median_time(tepoch, 1, side.tsync)
        row["torch_nfe_per_step"] = statistics.mean(tper["nfe"])
    return row


# ======================================================================== 2. CNF iteration
def cnf_data(S):
    return toy2d.sample("circles", S["cnf_batch"], 0).astype(np.float32)


def bench_cnf(side, S):
    xp = side.xp
    x_np = cnf_data(S)
    model = cnf.PlanarCNF(width=CNF_M, hidden=CNF_H, trace="closed", rng=0)
    model.to(dtype=np.float32, backend=side.backend)
    opt = optim.Adam(model.parameters(), lr=1e-3)
    x = xp.asarray(x_np)
    stats = nf.SolveStats()

    syncs = [0]

    def step():
        stats.reset()
        s0 = sync_count()
        loss = cnf.nll(model, x, rtol=CNF_TOL, atol=CNF_TOL, stats=stats)
        nf.backend.host_float(loss.data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        syncs[0] = sync_count() - s0
    row = {"workload": f"planar CNF iteration (batch {S['cnf_batch']}, M={CNF_M}, float32)"}
    step()
    row["nodeform_s"] = median_time(step, S["repeats"], side.sync)
    row["nodeform_nfe_per_step"] = stats.nfe_forward + stats.nfe_backward
    row["nodeform_syncs_per_step"] = syncs[0]
    if side.torch is not None:
        row["torch_s"], row["torch_nfe_per_step"] = _cnf_torch(side, S, x_np)
    return row


def _cnf_torch(side, S, x_np):
    torch, dev = side.torch, side.tdev
    from torchdiffeq import odeint_adjoint
    M, H, D = CNF_M, CNF_H, 2

    class Field(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = torch.nn.Linear(1, H), torch.nn.Linear(H, H)
            self.fc3 = torch.nn.Linear(H, 3 * M * D + M)
            self.nfe = 0

        def forward(self, t, s):
            self.nfe += 1
            z = s[:, :D]
            p = self.fc3(torch.tanh(self.fc2(torch.tanh(self.fc1(t.reshape(1, 1)))))).reshape(-1)
            W, U, G = (p[k * M * D:(k + 1) * M * D].reshape(M, D) for k in range(3))
            B = p[3 * M * D:]
            Ut = U * torch.sigmoid(G)
            h = torch.tanh(z @ W.T + B)
            dz = (h @ Ut) / M
            tr = ((1.0 - h * h) @ (W * Ut).sum(1, keepdim=True)).reshape(-1) / M
            return torch.cat([dz, -tr[:, None]], 1)

    torch.manual_seed(0)
    f = Field().to(dev)
    opt = torch.optim.Adam(f.parameters(), lr=1e-3)
    x = torch.as_tensor(x_np, device=dev)
    ts = torch.tensor([cnf.T1, cnf.T0], device=dev)
    var = cnf.BASE_VAR

    def step():
        f.nfe = 0
        s = odeint_adjoint(f, torch.cat([x, torch.zeros(len(x), 1, device=dev)], 1), ts,
                           rtol=CNF_TOL, atol=CNF_TOL)[-1]
        z, dl = s[:, :D], s[:, D]
        logp = -0.5 * (z * z).sum(1) / var - 0.5 * D * np.log(2 * np.pi * var) - dl
        loss = -logp.mean()
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    return median_time(step, S["repeats"], side.tsync), f.nfe


# ======================================================================== 3. latent ODE iteration
def spiral_batch(S):
    from nodeform.models import spiral_protocol as sp
    p = sp.Protocol()
    D = sp.prepare(p, 30)
    n = S["spirals"]
    return D["x_tr"][:n].astype(np.float32), D["t"], D["m_tr"][:n], D


def bench_latent(side, S):
    xp = side.xp
    x_np, t, mask, D = spiral_batch(S)
    model = LatentODE(obs_std=D["obs_std"], dt_scale=float(t[1] - t[0]), rng=0)
    model.to(dtype=np.float32, backend=side.backend)
    opt = optim.Adam(model.parameters(), lr=0.01)
    x = xp.asarray(x_np)
    rng = np.random.default_rng(0)
    stats = nf.SolveStats()
    solver = {"rtol": LAT_RTOL, "atol": LAT_ATOL}

    syncs = [0]

    def step():
        stats.reset()
        s0 = sync_count()
        loss, _ = model.loss(x, t, mask, rng, grad="continuous", solver=solver, stats=stats)
        nf.backend.host_float(loss.data)
        opt.zero_grad()
        loss.backward()
        opt.step()
        syncs[0] = sync_count() - s0
    row = {"workload": f"latent ODE iteration ({len(x_np)} spirals, float32)"}
    step()
    row["nodeform_s"] = median_time(step, S["repeats"], side.sync)
    row["nodeform_nfe_per_step"] = stats.nfe_forward + stats.nfe_backward
    row["nodeform_syncs_per_step"] = syncs[0]
    if side.torch is not None:
        row["torch_s"], row["torch_nfe_per_step"] = _latent_torch(side, S, model, x_np, t, mask)
    return row


def _latent_torch(side, S, model, x_np, t, mask):
    """The same latent ODE in torch (weights copied from ``model``), torchdiffeq's adjoint."""
    torch, dev = side.torch, side.tdev
    from torchdiffeq import odeint_adjoint

    def P(a):
        return torch.nn.Parameter(torch.as_tensor(np.array(nf.to_numpy(a), dtype=np.float32), device=dev))
    enc = model.encoder
    (W1, b1), (W2, b2) = model.field.unflatten(nf.Tensor(nf.to_numpy(model.theta.data)))
    ps = {"Wih": P(enc.cell.ih.weight.data), "bih": P(enc.cell.ih.bias.data),
          "Whh": P(enc.cell.hh.weight.data), "Wo": P(enc.out.weight.data), "bo": P(enc.out.bias.data),
          "D1": P(model.dec1.weight.data), "c1": P(model.dec1.bias.data),
          "D2": P(model.dec2.weight.data), "c2": P(model.dec2.bias.data)}

    class Dyn(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.W1, self.b1, self.W2, self.b2 = (P(a.data) for a in (W1, b1, W2, b2))
            self.nfe = 0

        def forward(self, t_, z):
            self.nfe += 1
            return torch.tanh(z @ self.W1.T + self.b1) @ self.W2.T + self.b2
    dyn = Dyn().to(dev)
    opt = torch.optim.Adam(list(ps.values()) + list(dyn.parameters()), lr=0.01)
    idx, valid = compact(mask)
    rows = np.arange(len(idx))[:, None]
    x_obs = torch.as_tensor(x_np[rows, idx], device=dev)
    gaps = torch.as_tensor((previous_gaps(t[idx], valid, 0.0) / enc.dt_scale).astype(np.float32),
                           device=dev)[..., None]
    vm = torch.as_tensor(valid.astype(np.float32), device=dev)
    cols, t_u, m_u = union_grid(t, mask)
    grid = torch.as_tensor(np.concatenate([[0.0], t_u]) if t_u[0] > 0 else t_u, dtype=torch.float32,
                           device=dev)
    drop = 1 if t_u[0] > 0 else 0
    x_u = torch.as_tensor(x_np[:, cols], device=dev)
    m_t = torch.as_tensor(m_u[..., None].astype(np.float32), device=dev)
    L = model.latent_dim
    logvar_x = 2.0 * np.log(model.obs_std)

    def step():
        dyn.nfe = 0
        h = torch.zeros(len(idx), enc.cell.hidden_size, device=dev)
        for k in range(x_obs.shape[1] - 1, -1, -1):
            h_new = torch.tanh(torch.cat([x_obs[:, k], gaps[:, k]], 1) @ ps["Wih"].T + ps["bih"]
                               + h @ ps["Whh"].T)
            m = vm[:, k:k + 1]
            h = h_new * m + h * (1.0 - m)
        out = h @ ps["Wo"].T + ps["bo"]
        mu, logvar = out[:, :L], out[:, L:]
        z0 = mu + torch.exp(0.5 * logvar) * torch.randn(mu.shape, device=dev)
        zs = odeint_adjoint(dyn, z0, grid, rtol=LAT_RTOL, atol=LAT_ATOL)[drop:]
        xh = (torch.tanh(zs @ ps["D1"].T + ps["c1"]) @ ps["D2"].T + ps["c2"]).transpose(0, 1)
        d = x_u - xh
        nll = (0.5 * (np.log(2 * np.pi) + logvar_x + d * d / np.exp(logvar_x)) * m_t).sum((1, 2))
        kl = 0.5 * (torch.exp(logvar) + mu ** 2 - 1.0 - logvar).sum(1)
        loss = (nll + kl).mean()
        loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    step()
    return median_time(step, S["repeats"], side.tsync), dyn.nfe


# ======================================================================== 4. where a step's time goes
def step_anatomy(side, S):
    """Primitive calls, host syncs, and the measured cost of a launch and a sync, for one ODE-Net step."""
    xp = side.xp
    with _prim.counting_calls() as calls:
        step, _, per, _ = odenet_nodeform(side, S)
        step()
        side.sync()
        calls[0] = 0
        t0 = time.perf_counter()
        step()
        side.sync()
        seconds = time.perf_counter() - t0
        fwd_calls = calls[0]
    a = xp.zeros((), dtype=np.float32)
    n = 2000
    side.sync()
    t0 = time.perf_counter()
    for _ in range(n):
        a = a + 1.0                                   # one tiny kernel each
    side.sync()
    launch = (time.perf_counter() - t0) / n
    t0 = time.perf_counter()
    for _ in range(200):
        float(a + 1.0)                                # one tiny kernel and a sync each
    sync = (time.perf_counter() - t0) / 200 - launch
    return {"step_s": seconds, "nfe": per["nfe"][-1], "syncs": per["syncs"][-1],
            "forward_primitive_calls": fwd_calls, "launch_s": launch, "sync_s": max(sync, 0.0)}


# ======================================================================== output
def table(rows, backend="cupy"):
    where = "CuPy" if backend == "cupy" else "NumPy"
    out = [f"| workload | nodeform ({where}) | PyTorch + torchdiffeq | ratio nodeform / torch | NFE per "
           "step (nodeform / torch) | host syncs per step (nodeform) |", "|---|---|---|---|---|---|"]
    for r in rows:
        t = r.get("torch_s")
        ratio = _ratio(r.get("nodeform_s"), t)
        out.append(f"| {r['workload']} | {r['nodeform_s']:.3f} s | {'%.3f s' % t if t else 'not run'} | "
                   f"{'%.2fx' % ratio if ratio else '-'} | {r.get('nodeform_nfe_per_step', 0):.0f} / "
                   f"{r.get('torch_nfe_per_step', 0) or 0:.0f} | {r.get('nodeform_syncs_per_step', 0):.0f} |")
    return "\n".join(out)


def anatomy_lines(a):
    launches = a["forward_primitive_calls"] * a["launch_s"]
    syncs = a["syncs"] * (a["sync_s"] + a["launch_s"])
    return [f"One ODE-Net step: {a['step_s'] * 1e3:.1f} ms, NFE {a['nfe']}, {a['forward_primitive_calls']} "
            f"primitive calls (forward pass, the adjoint's evaluations, VJPs written with primitives: a lower "
            f"bound on kernel launches), "
            f"{a['syncs']} host syncs.",
            f"Measured here: one tiny kernel launch {a['launch_s'] * 1e6:.1f} us, one host sync "
            f"{a['sync_s'] * 1e6:.1f} us on top.",
            f"Launch overhead of those calls: about {launches * 1e3:.1f} ms ({100 * launches / a['step_s']:.0f}% "
            f"of the step); syncs: about {syncs * 1e3:.2f} ms ({100 * syncs / a['step_s']:.1f}%); the rest is "
            "the kernels' own work and Python."]


def write_results(path, report):
    """Write the models section of RESULTS-gpu.md (between the markers) and the JSON beside it."""
    md = [BEGIN, f"## The models of chapters 4-7 on the GPU (issue 16), {report['date']}", "",
          f"Device: {report['device']}; CuPy {report['versions'].get('cupy')}, torch "
          f"{report['versions'].get('torch')}, torchdiffeq {report['versions'].get('torchdiffeq')}, NumPy "
          f"{report['versions']['numpy']}. Command: `{report['command']}`.", "",
          table(report["rows"], report["backend"]), "",
          "Where the time of one ODE-Net step goes (nodeform on CuPy):", ""]
    md += [f"* {line}" for line in anatomy_lines(report["anatomy"])]
    md += ["", "Target (issue 16): ODE-Net epoch and CNF iteration within 2x of PyTorch + torchdiffeq: "
           + ", ".join(f"{r['workload'].split(' (')[0]} "
                       f"{'%.2fx' % _ratio(r['nodeform_s'], r.get('torch_s')) if r.get('torch_s') else 'not run'}"
                       f" ({'met' if r.get('torch_s') and r['nodeform_s'] <= 2 * r['torch_s'] else 'NOT met'})"
                       for r in report["rows"][:2]) + ".", END]
    block = "\n".join(md)
    old = open(path).read() if os.path.exists(path) else "# GPU results (CuPy)\n"
    if BEGIN in old and END in old:
        new = re.sub(re.escape(BEGIN) + ".*?" + re.escape(END), lambda _: block, old, flags=re.S)
    else:
        head, sep, rest = old.partition("\n")
        new = head + "\n\n" + block + "\n" + rest
    with open(path, "w") as f:
        f.write(new if new.endswith("\n") else new + "\n")
    with open(os.path.splitext(path)[0] + ".json", "w") as f:
        json.dump(report, f, indent=1)


def versions():
    out = {"numpy": np.__version__, "python": platform.python_version()}
    for mod in ("cupy", "torch", "torchdiffeq"):
        try:
            out[mod] = __import__(mod).__version__
        except Exception:
            out[mod] = None
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", choices=("cuda", "cpu"), default="cuda",
                    help="cuda: the real run; cpu: a small dry run of the same code")
    ap.add_argument("--repeats", type=int, default=None, help="timed iterations of CNF and latent ODE")
    ap.add_argument("--only", default=None, help="comma-separated: odenet,cnf,latent,anatomy")
    ap.add_argument("--out", default=None, help="results file (default bench/RESULTS-gpu.md with "
                    "--device cuda; nothing is written in a CPU dry run unless given)")
    ap.add_argument("--no-torch", action="store_true", help="nodeform rows only (a quicker dry run)")
    args = ap.parse_args(argv)
    S = dict(SIZES[args.device])
    if args.repeats:
        S["repeats"] = args.repeats
    side = Side(args.device, use_torch=not args.no_torch)
    print(f"device: {side.name()}; nodeform on {side.backend}; "
          f"{side.torch_reason or 'torch + torchdiffeq on ' + args.device}", flush=True)
    only = set((args.only or "odenet,cnf,latent,anatomy").split(","))
    rows = []
    for key, fn in (("odenet", bench_odenet), ("cnf", bench_cnf), ("latent", bench_latent)):
        if key in only:
            t0 = time.perf_counter()
            rows.append(fn(side, S))
            print(f"  {key}: {rows[-1]} ({time.perf_counter() - t0:.0f} s)", flush=True)
    anatomy = step_anatomy(side, S) if "anatomy" in only else None
    report = {"date": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "device": side.name(), "backend": side.backend, "dry_run": args.device == "cpu", "sizes": S,
              "versions": versions(),
              "command": "python bench/bench_gpu.py" + (" " + " ".join(argv) if argv else
                                                        " " + " ".join(sys.argv[1:])).rstrip(),
              "rows": rows, "anatomy": anatomy}
    print(table(rows, side.backend))
    if anatomy:
        print("\n".join(anatomy_lines(anatomy)))
    out = args.out or (RESULTS_MD if args.device == "cuda" else None)
    if out and rows and anatomy:
        write_results(out, report)
        print(f"written: {out} and {os.path.splitext(out)[0]}.json")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
