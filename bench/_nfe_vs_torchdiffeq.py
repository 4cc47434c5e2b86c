"""Where nodeform's 110 forward evaluations go against torchdiffeq's 92 (bench/RESULTS-adjoint.md).

Run: python bench/_nfe_vs_torchdiffeq.py (needs torch and torchdiffeq).
"""
import sys, numpy as np
sys.path.insert(0, "bench")
import torch, torchdiffeq
torch.set_num_threads(1)
from bench_adjoint import problem, RTOL, ATOL
import nodeform as nf
W1, b1, W2, b2, z0 = problem()
ts = []
def f_t(t, z):
    ts.append(float(t))
    return torch.tanh(z @ torch.tensor(W1).T + torch.tensor(b1)) @ torch.tensor(W2).T + torch.tensor(b2)
with torch.no_grad():
    out = torchdiffeq.odeint(f_t, torch.tensor(z0), torch.tensor([0.0, 1.0], dtype=torch.float64), rtol=RTOL, atol=ATOL, method="dopri5")
print("torchdiffeq nfe", len(ts))
# stage-0 times of each attempted step: every 6th after the first 2
steps = ts[2::6]
print("torchdiffeq step starts", np.round(steps, 4))
def f_np(t, y):
    return np.tanh(y @ W1.T + b1) @ W2.T + b2
for ctrl in ("pi", "i"):
    s = nf.solve(f_np, z0, [0.0, 1.0], rtol=RTOL, atol=ATOL, controller=ctrl, trace=True)
    print(ctrl, s.stats, "h", np.round(s.trace["h"], 4), "acc", s.trace["accepted"].astype(int), "ratio", np.round(s.trace["error_ratio"], 3))
    print("err vs tight", np.abs(s.ys[-1] - nf.solve(f_np, z0, [0.0, 1.0], rtol=1e-12, atol=1e-14).ys[-1]).max())
print("torchdiffeq err", np.abs(out[-1].numpy() - nf.solve(f_np, z0, [0.0, 1.0], rtol=1e-12, atol=1e-14).ys[-1]).max())
