"""Benchmark: nodeform's ODE solvers against SciPy (and torchdiffeq / diffrax if installed).

Run::

    python bench/bench_solvers.py            # full repeats (about a minute)
    python bench/bench_solvers.py --quick    # fewer repeats and a 1,000-oscillator batch
    python bench/bench_solvers.py --no-peers # without torchdiffeq and diffrax

Prints, for each workload, wall time per solve (minimum of interleaved repeats, with the
median and 90th percentile; compile excluded),
function evaluations, max error at the end time against a tight SciPy DOP853 reference,
and the speed ratio against SciPy's ``solve_ivp`` RK45 measured in the same run. The
first call of each Numba solve (compile, or load from the on-disk cache) is reported
separately. All solves use rtol 1e-6, atol 1e-9, Dormand–Prince 5(4), float64.

Workloads (the issue's): Van der Pol mu = 1, y0 = (2, 0), t in [0, 20]; Lorenz (10, 28,
8/3), y0 = (1, 1, 1), t in [0, 2]; 10,000 Van der Pol oscillators with mu in [0.5, 2],
t in [0, 10], as one stacked system (one shared step size).
"""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from numba import njit
from scipy.integrate import solve_ivp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _minimal_dopri5 import limit_dopri5, minimal_dopri5  # noqa: E402

import nodeform  # noqa: E402

RTOL, ATOL = 1e-6, 1e-9
#: The row every other is compared with: the hand-written in-place loop, f compiled in.
LIMIT = "compiled limit: hand-written njit dopri5, in-place f compiled in"
#: The same loop with f a compile-time constant of a wrapper: the loop without Numba's
#: per-call typing of a dispatcher argument (the call from Python of the row above).
LIMIT_GLOBAL = "compiled limit, f a global of a njit wrapper (no dispatcher argument to type)"
PEER_NOTES = set()  # why a peer is missing from the tables
PEERS = [True]  # measure torchdiffeq and diffrax (--no-peers: False)


# ----------------------------------------------------------------------------- problems

@njit(cache=True)
def vdp_nb(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@njit(cache=True)
def vdp_ip(t, y, out, mu):
    out[0] = y[1]
    out[1] = mu * (1.0 - y[0] * y[0]) * y[1] - y[0]


@njit(cache=True)
def vdp_ip0(t, y, out):
    out[0] = y[1]
    out[1] = (1.0 - y[0] * y[0]) * y[1] - y[0]


def vdp_py(t, y, mu):
    return np.array([y[1], mu * (1.0 - y[0] * y[0]) * y[1] - y[0]])


@njit(cache=True)
def lorenz_nb(t, y, s, r, b):
    return np.array([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])


@njit(cache=True)
def lorenz_ip(t, y, out, s, r, b):
    out[0] = s * (y[1] - y[0])
    out[1] = y[0] * (r - y[2]) - y[1]
    out[2] = y[0] * y[1] - b * y[2]


@njit(cache=True)
def lorenz_ip0(t, y, out):
    out[0] = 10.0 * (y[1] - y[0])
    out[1] = y[0] * (28.0 - y[2]) - y[1]
    out[2] = y[0] * y[1] - (8.0 / 3.0) * y[2]


def lorenz_py(t, y, s, r, b):
    return np.array([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])


@njit(cache=True)
def vdp_batch_nb(t, y, mu):
    n = mu.shape[0]
    out = np.empty_like(y)
    for i in range(n):
        x, v = y[i], y[n + i]
        out[i] = v
        out[n + i] = mu[i] * (1.0 - x * x) * v - x
    return out


@njit(cache=True)
def vdp_batch_ip(t, y, out, mu):
    n = mu.shape[0]
    for i in range(n):
        x, v = y[i], y[n + i]
        out[i] = v
        out[n + i] = mu[i] * (1.0 - x * x) * v - x


def vdp_batch_py(t, y, mu):
    n = mu.shape[0]
    x, v = y[:n], y[n:]
    return np.concatenate([v, mu * (1.0 - x * x) * v - x])


def workloads(n_batch):
    mu = np.linspace(0.5, 2.0, n_batch)
    yb = np.concatenate([np.full(n_batch, 2.0), np.zeros(n_batch)])
    # (label, returning njit f, Python f, y0, t1, args, in-place njit f, in-place f without args)
    return [
        ("Van der Pol mu=1, t in [0,20]", vdp_nb, vdp_py, np.array([2.0, 0.0]), 20.0, (1.0,),
         vdp_ip, vdp_ip0),
        ("Lorenz, t in [0,2]", lorenz_nb, lorenz_py, np.array([1.0, 1.0, 1.0]), 2.0,
         (10.0, 28.0, 8.0 / 3.0), lorenz_ip, lorenz_ip0),
        (f"{n_batch:,} Van der Pol (mu in [0.5,2]) stacked, t in [0,10]", vdp_batch_nb,
         vdp_batch_py, yb, 10.0, (mu,), vdp_batch_ip, None),
    ]


# ----------------------------------------------------------------------------- timing

from _timing import median_time  # noqa: E402


#: Rounds of the interleaved timing: every row of a workload runs once per round, in turn,
#: so a burst of load from another process hits all rows alike instead of one.
ROUNDS = 25
#: Most calls of one row per round (a 20 µs solve: 200 calls per round, 5,000 in all).
MAX_PER_ROUND = 200


def repeats_for(seconds_per_call, budget):
    return int(max(3, min(500, budget / max(seconds_per_call, 1e-7))))


def time_rows(cands, budget):
    """Interleaved timing of ``cands`` (``(name, fn)`` pairs); per row the sorted call times.

    Each row is called once first (compile, or load from the disk cache; timed apart),
    then in each of :data:`ROUNDS` rounds every row runs ``k`` calls in turn, ``k`` chosen
    so that a row spends about ``budget`` seconds in all. Every call is timed on its own,
    so the minimum (the least disturbed run) and the spread can be reported.
    """
    firsts, outs, per_call = {}, {}, {}
    for name, fn in cands:
        t0 = time.perf_counter()
        outs[name] = fn()
        firsts[name] = time.perf_counter() - t0
        per_call[name] = median_time(fn, 3)
    times = {name: [] for name, _ in cands}
    for _ in range(ROUNDS):
        for name, fn in cands:
            k = int(max(1, min(MAX_PER_ROUND, budget / ROUNDS / max(per_call[name], 1e-7))))
            for _ in range(k):
                t0 = time.perf_counter()
                fn()
                times[name].append(time.perf_counter() - t0)
    return firsts, outs, {name: sorted(v) for name, v in times.items()}


def run_workload(label, f_nb, f_py, y0, t1, args, f_ip, f_ip0, budget):
    ref = solve_ivp(f_py, (0.0, t1), y0, method="DOP853", rtol=1e-13, atol=1e-13,
                    args=args).y[:, -1]
    cands = []  # (name, fn, result)

    def measure(name, fn, result):
        cands.append((name, fn, result))

    measure("SciPy solve_ivp RK45",
            lambda: solve_ivp(f_py, (0.0, t1), y0, rtol=RTOL, atol=ATOL, args=args),
            lambda s: (s.y[:, -1], s.nfev))
    measure("nodeform reference engine (Python f)",
            lambda: nodeform.solve(f_py, y0, [0.0, t1], rtol=RTOL, atol=ATOL, args=args,
                                   controller="i"),
            lambda s: (s.ys[-1], s.stats["nfev"]))
    for ctrl in ("i", "pi"):
        measure(f"nodeform Numba dopri5, f(t, y, *args) returning ({ctrl.upper()} controller)",
                lambda c=ctrl: nodeform.solve(f_nb, y0, [0.0, t1], rtol=RTOL, atol=ATOL,
                                              args=args, controller=c),
                lambda s: (s.ys[-1], s.stats["nfev"]))
    for method in ("dopri5", "tsit5", "bosh3"):
        measure(f"nodeform Numba {method}, in-place f(t, y, out, *args)",
                lambda m=method: nodeform.solve(f_ip, y0, [0.0, t1], rtol=RTOL, atol=ATOL,
                                                args=args, method=m),
                lambda s: (s.ys[-1], s.stats["nfev"]))
        if f_ip0 is not None:
            measure(f"nodeform Numba {method}, in-place f(t, y, out), no args",
                    lambda m=method: nodeform.solve(f_ip0, y0, [0.0, t1], rtol=RTOL, atol=ATOL,
                                                    method=m),
                    lambda s: (s.ys[-1], s.stats["nfev"]))
    for method in ("dopri5", "tsit5"):
        measure(f"nodeform Numba {method}, in-place, specialize=True (f compiled into the loop)",
                lambda m=method: nodeform.solve(f_ip, y0, [0.0, t1], rtol=RTOL, atol=ATOL,
                                                args=args, method=m, specialize=True),
                lambda s: (s.ys[-1], s.stats["nfev"]))
    if f_ip0 is not None:
        measure("nodeform Numba dopri5, in-place, specialize=True, no args",
                lambda: nodeform.solve(f_ip0, y0, [0.0, t1], rtol=RTOL, atol=ATOL,
                                       specialize=True),
                lambda s: (s.ys[-1], s.stats["nfev"]))
    measure("minimal hand-written njit dopri5 (allocating f)",
            lambda: minimal_dopri5(f_nb, 0.0, t1, y0, args, RTOL, ATOL, 1e-3),
            lambda r: r)
    measure(LIMIT,
            lambda: limit_dopri5(f_ip, 0.0, t1, y0, args, RTOL, ATOL, 1e-3),
            lambda r: r)
    if f_ip0 is not None:
        measure(LIMIT + ", no args",
                lambda: limit_dopri5(f_ip0, 0.0, t1, y0, (), RTOL, ATOL, 1e-3),
                lambda r: r)
    limit_global = _limit_with_field(f_ip)
    measure(LIMIT_GLOBAL,
            lambda: limit_global(0.0, t1, y0, args, RTOL, ATOL, 1e-3),
            lambda r: r)
    firsts, outs, times = time_rows([(name, fn) for name, fn, _ in cands], budget)
    rows = []
    for name, _, result in cands:
        y_end, nfev = result(outs[name])
        ts = times[name]
        rows.append({"solver": name, "time": ts[0], "median": ts[len(ts) // 2],
                     "p90": ts[int(0.9 * (len(ts) - 1))], "nfev": nfev,
                     "error": float(np.abs(y_end - ref).max()), "first": firsts[name],
                     "reps": len(ts)})
    if PEERS[0]:
        rows += peer_rows(f_py, y0, t1, args, ref, budget)
    return label, rows, ref


# (in-place field) -> limit_dopri5 with that field as a compile-time constant
_LIMIT_GLOBAL = {}


def _limit_with_field(f_ip):
    """``limit_dopri5`` with ``f_ip`` a global of a wrapper, not an argument: Numba then
    types no dispatcher in Python per call (about 8 µs), so this row is the loop alone."""
    fn = _LIMIT_GLOBAL.get(f_ip)
    if fn is None:
        @njit
        def fn(t0, t1, y0, args, rtol, atol, h):
            return limit_dopri5(f_ip, t0, t1, y0, args, rtol, atol, h)
        _LIMIT_GLOBAL[f_ip] = fn
    return fn


def peer_rows(f_py, y0, t1, args, ref, budget):
    """torchdiffeq and diffrax, measured only when importable (the `bench` extra)."""
    rows = []
    try:
        import torch
        import torchdiffeq
    except Exception as exc:  # not installed, or a broken install: the table says so
        PEER_NOTES.add(f"torchdiffeq not measured ({type(exc).__name__}: {str(exc)[:80]})")
        return rows
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    targs = tuple(torch.as_tensor(a, dtype=torch.float64) for a in args)

    def f_torch(t, y):
        return _torch_field(f_py, y, targs)

    y0t = torch.as_tensor(y0, dtype=torch.float64)
    ts = torch.tensor([0.0, t1], dtype=torch.float64)
    counter = [0]

    def counted(t, y):
        counter[0] += 1
        return f_torch(t, y)

    def run():
        counter[0] = 0
        with torch.no_grad():
            return torchdiffeq.odeint(counted, y0t, ts, rtol=RTOL, atol=ATOL, method="dopri5")

    first = time.perf_counter()
    out = run()
    first = time.perf_counter() - first
    reps = repeats_for(first, budget)
    t = median_time(run, reps)
    rows.append({"solver": f"torchdiffeq {torchdiffeq.__version__} dopri5", "time": t,
                 "nfev": counter[0], "error": float(np.abs(out[-1].numpy() - ref).max()),
                 "first": first, "reps": reps})
    return rows


def diffrax_rows(f_py, y0, t1, args, ref, budget):
    """diffrax Dopri5 + PIDController(rtol, atol) under ``jax.jit``, float64, compile excluded.

    Evaluations are counted as 6 per attempted step plus 2 (first derivative and the
    initial-step estimate), which is what Dopri5 with FSAL spends.
    """
    try:
        import jax
        jax.config.update("jax_enable_x64", True)
        import diffrax
        import jax.numpy as jnp
    except Exception as exc:  # not installed, or a broken install: the table says so
        PEER_NOTES.add(f"diffrax not measured ({type(exc).__name__}: {str(exc)[:80]})")
        return []
    field = _jax_field(f_py.__name__, jnp)
    term = diffrax.ODETerm(lambda t, y, a: field(y, a))
    controller = diffrax.PIDController(rtol=RTOL, atol=ATOL)

    @jax.jit
    def solve(y, a):
        sol = diffrax.diffeqsolve(term, diffrax.Dopri5(), 0.0, t1, None, y, args=a,
                                  stepsize_controller=controller, max_steps=100_000)
        return sol.ys[-1], sol.stats["num_steps"]

    yj = jnp.asarray(y0)
    aj = tuple(jnp.asarray(a) for a in args)

    def run():
        return jax.block_until_ready(solve(yj, aj))

    first = time.perf_counter()
    y_end, steps = run()
    first = time.perf_counter() - first
    reps = repeats_for(median_time(run, 3), budget)
    t = median_time(run, reps)
    return [{"solver": f"diffrax {diffrax.__version__} Dopri5 (jax.jit, PID)", "time": t,
             "nfev": 6 * int(steps) + 2, "error": float(np.abs(np.asarray(y_end) - ref).max()),
             "first": first, "reps": reps}]


def _jax_field(name, jnp):
    """The benchmark's vector fields in jax.numpy, ``field(y, args)``."""
    if name == "vdp_py":
        return lambda y, a: jnp.stack([y[1], a[0] * (1 - y[0] ** 2) * y[1] - y[0]])
    if name == "lorenz_py":
        return lambda y, a: jnp.stack([a[0] * (y[1] - y[0]), y[0] * (a[1] - y[2]) - y[1],
                                       y[0] * y[1] - a[2] * y[2]])

    def batch(y, a):
        n = a[0].shape[0]
        x, v = y[:n], y[n:]
        return jnp.concatenate([v, a[0] * (1 - x * x) * v - x])
    return batch


def _torch_field(f_py, y, targs):
    import torch
    name = f_py.__name__
    if name == "vdp_py":
        mu = targs[0]
        return torch.stack([y[1], mu * (1 - y[0] ** 2) * y[1] - y[0]])
    if name == "lorenz_py":
        s, r, b = targs
        return torch.stack([s * (y[1] - y[0]), y[0] * (r - y[2]) - y[1], y[0] * y[1] - b * y[2]])
    mu = targs[0]
    n = mu.shape[0]
    x, v = y[:n], y[n:]
    return torch.cat([v, mu * (1 - x * x) * v - x])


# ----------------------------------------------------------------------------- report

def format_table(label, rows):
    lines = [f"### {label}", "",
             "| solver | time / solve (min) | median, p90 | evaluations | max error at t_end "
             "| speed vs SciPy RK45 | time / compiled limit | time / limit, f global |",
             "|---|---|---|---|---|---|---|---|"]
    limit = next(r["time"] for r in rows if r["solver"] == LIMIT)
    limit_g = next((r["time"] for r in rows if r["solver"] == LIMIT_GLOBAL), float("nan"))
    for r in rows:
        t = r["time"]
        spread = (f"{_fmt(r['median'])}, {_fmt(r['p90'])}" if "median" in r else "–")
        lines.append(f"| {r['solver']} | {_fmt(t)} | {spread} | {r['nfev']} | {r['error']:.1e} | "
                     f"{r['ratio']:.1f}x | {t / limit:.2f} | {t / limit_g:.2f} |")
    return "\n".join(lines)


def _fmt(t):
    return f"{t * 1e6:.1f} µs" if t < 1e-3 else f"{t * 1e3:.2f} ms"


def main(argv=None):
    """Run the benchmark and print the Markdown tables; returns the list of results."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats, 1,000 oscillators")
    parser.add_argument("--batch", type=int, default=None, help="oscillators in the batch")
    parser.add_argument("--no-peers", action="store_true", help="skip torchdiffeq and diffrax")
    parser.add_argument("--no-batch", action="store_true",
                        help="only Van der Pol and Lorenz (the batch's SciPy row takes long)")
    opts = parser.parse_args(argv)
    n_batch = opts.batch or (1000 if opts.quick else 10_000)
    budget = 0.3 if opts.quick else 2.0  # seconds of repeats per row
    PEERS[0] = not opts.no_peers

    # compile (or load from cache) once, timed apart from the solves
    compile_times = {}
    y2 = np.array([2.0, 0.0])
    t0 = time.perf_counter()
    nodeform.solve(vdp_nb, y2, [0.0, 1.0], rtol=RTOL, atol=ATOL, args=(1.0,))
    compile_times["nodeform Numba engine, first solve (Van der Pol)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    minimal_dopri5(vdp_nb, 0.0, 1.0, y2, (1.0,), RTOL, ATOL, 1e-3)
    compile_times["minimal njit dopri5, first solve"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    nodeform.solve(vdp_ip, y2, [0.0, 1.0], rtol=RTOL, atol=ATOL, args=(1.0,))
    compile_times["nodeform Numba engine, first in-place solve (Van der Pol)"] = (
        time.perf_counter() - t0)
    t0 = time.perf_counter()
    nodeform.solve(vdp_ip, y2, [0.0, 1.0], rtol=RTOL, atol=ATOL, args=(1.0,), specialize=True)
    compile_times["nodeform Numba engine, first solve with specialize=True (per field; not "
                  "loaded from disk in a new process)"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    limit_dopri5(vdp_ip, 0.0, 1.0, y2, (1.0,), RTOL, ATOL, 1e-3)
    compile_times["compiled limit loop, first solve"] = time.perf_counter() - t0

    import numba
    import scipy
    print(f"# nodeform solver benchmark (rtol {RTOL:g}, atol {ATOL:g}, float64)\n")
    print(f"Python {sys.version.split()[0]}, NumPy {np.__version__}, SciPy {scipy.__version__}, "
          f"Numba {numba.__version__}, {os.cpu_count()} CPU cores. SciPy and nodeform rows: the "
          f"minimum over repeated solves timed one by one, the rows interleaved ({ROUNDS} "
          "rounds, each row in turn), with the median and 90th percentile beside it; peer rows "
          "(torchdiffeq, diffrax): medians. Compile excluded; ratios from the minima; errors "
          "against SciPy DOP853 at rtol = atol = 1e-13.\n")
    chosen = workloads(n_batch)[:2 if opts.no_batch else 3]
    results = []
    for wl in chosen:
        results.append(run_workload(*wl, budget=budget))
    # diffrax last: once JAX has run, its idle CPU threads slow NumPy's BLAS and torch many
    # times over (SciPy's stacked RK45 went from 31 ms to 1.9 s), so no peer runs after it
    for wl, (label, rows, ref) in zip(chosen, results):
        _, _, _, y0, t1, args = wl[:6]
        if PEERS[0]:
            rows += diffrax_rows(wl[2], y0, t1, args, ref, budget)
        for r in rows:
            r["ratio"] = rows[0]["time"] / r["time"]
    results = [(label, rows) for label, rows, _ in results]
    for label, rows in results:
        print(format_table(label, rows))
        print()
    for note in sorted(PEER_NOTES):
        print(f"Note: {note}.\n")
    print("### Numba compile time (first call in this process; cache=True on disk)\n")
    for k, v in compile_times.items():
        print(f"- {k}: {v:.2f} s")
    return results


if __name__ == "__main__":
    main()
