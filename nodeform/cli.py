"""The command line: ``python -m nodeform chapters|doctor|bench``.

* ``chapters [NAMES...] [--quick]`` runs the chapter scripts in order (all by
  default; a name may be ``ch01`` or ``ch01_autodiff``), each in its own process,
  and stops at the first failure.
* ``doctor`` prints the versions of Python, NumPy, Numba, SciPy, CuPy and which
  array backends really work here, and why not.
* ``bench NAME`` runs ``bench/bench_NAME.py`` (solvers, adjoint, conv, ...).
* ``classroom make|check|grade|lint|list`` builds the student copy and grades it
  (see :mod:`nodeform.classroom`).
* ``train MODEL`` trains a model of Table 1 (odenet, rknet, resnet, mlp) on MNIST;
  see :mod:`nodeform.experiments.table1`.
"""
from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
CHAPTERS = ROOT / "chapters"
BENCH = ROOT / "bench"


def list_chapters():
    """The chapter scripts, in order."""
    return sorted(CHAPTERS.glob("ch[0-9][0-9]_*.py"))


def _select(names):
    chapters = list_chapters()
    if not chapters:
        raise SystemExit(f"no chapters found in {CHAPTERS}; the chapters ship with the repository "
                         "(install with `pip install -e .` from a clone).")
    if not names:
        return chapters
    picked = []
    for n in names:
        hits = [c for c in chapters if c.stem == n or c.stem.startswith(n + "_") or c.stem == n[:-3]]
        if not hits:
            raise SystemExit(f"unknown chapter `{n}`; choose from: "
                             + ", ".join(c.stem for c in chapters))
        picked += hits
    return picked


def run_chapters(names, quick):
    env = dict(os.environ)
    env["NODEFORM_QUICK"] = "1" if quick else "0"
    env.setdefault("MPLBACKEND", "Agg")
    failed = []
    for path in _select(names):
        print(f"=== {path.stem} ({'quick' if quick else 'full'} mode)", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.call([sys.executable, str(path)] + (["--quick"] if quick else []),
                             env=env, cwd=ROOT)
        print(f"=== {path.stem}: {'ok' if rc == 0 else f'FAILED (exit {rc})'} "
              f"in {time.perf_counter() - t0:.1f} s", flush=True)
        if rc:
            failed.append(path.stem)
            break
    return 1 if failed else 0


def _version(mod):
    try:
        m = __import__(mod)
        return getattr(m, "__version__", "?")
    except Exception as exc:  # report, never crash the doctor
        return f"not usable ({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''})"


def doctor():
    from nodeform.backend import cupy_status
    import nodeform
    print(f"nodeform {nodeform.__version__} at {Path(nodeform.__file__).parent}")
    print(f"Python   {platform.python_version()} ({platform.machine()}, {os.cpu_count()} cores)")
    for mod in ("numpy", "scipy", "numba", "matplotlib", "tqdm", "cupy"):
        print(f"{mod:<10} {_version(mod)}")
    print("backends:")
    print("  numpy   ok (the default)")
    nb = "ok"
    if os.environ.get("NODEFORM_NUMBA", "1") == "0":
        nb = "switched off by NODEFORM_NUMBA=0"
    else:
        try:
            import numba
            numba.njit(lambda x: x + 1)(1)
        except Exception as exc:
            nb = f"not usable: {type(exc).__name__}: {exc}"
    print(f"  numba   {nb}")
    cp, reason = cupy_status()
    print(f"  cupy    {reason}")
    print(f"commands (train) run on: {os.environ.get('NODEFORM_BACKEND', '').strip() or 'numpy'} "
          "(--backend or NODEFORM_BACKEND)")
    from nodeform.memory import STATE
    print(f"malloc tuning (nodeform/memory.py): {STATE['reason']}")
    return 0


def run_bench(name, rest):
    script = BENCH / f"bench_{name}.py"
    if not script.exists():
        known = sorted(p.stem[len("bench_"):] for p in BENCH.glob("bench_*.py"))
        raise SystemExit(f"unknown benchmark `{name}`; choose from: {', '.join(known) or 'none yet'}")
    return subprocess.call([sys.executable, str(script)] + list(rest), cwd=ROOT)


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m nodeform",
                                     description="Neural ODEs rebuilt from scratch, chapter by chapter.")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("chapters", help="run chapter scripts (all by default)")
    p.add_argument("names", nargs="*", help="chapters to run, e.g. ch01 ch03_adjoint")
    p.add_argument("--quick", action="store_true", help="small settings; figures go to figures/quick/")
    sub.add_parser("doctor", help="versions and which backends work here")
    b = sub.add_parser("bench", help="run a benchmark from bench/")
    b.add_argument("name")
    b.add_argument("rest", nargs=argparse.REMAINDER)
    c = sub.add_parser("classroom", help="student copy, exercise checks and grades",
                       add_help=False)
    c.add_argument("rest", nargs=argparse.REMAINDER)
    from nodeform.experiments import table1
    table1.add_arguments(sub.add_parser("train", help="train a Table 1 model on MNIST"))
    args = parser.parse_args(argv)
    if args.command == "classroom":
        from nodeform.classroom import main as classroom_main
        return classroom_main(args.rest)
    if args.command == "train":
        return table1.main(args)
    if args.command == "chapters":
        return run_chapters(args.names, args.quick)
    if args.command == "doctor":
        return doctor()
    return run_bench(args.name, args.rest)
