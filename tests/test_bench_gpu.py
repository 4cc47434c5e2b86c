"""bench/bench_gpu.py runs as a dry run on the CPU (``--device cpu``), so the GPU session's script is tested here.

The dry run uses small sizes and NumPy (and torch on the CPU where installed); its numbers are
not GPU numbers and the script writes nothing unless ``--out`` is given.
"""
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
SCRIPT = ROOT / "bench" / "bench_gpu.py"


def _run(args, timeout=600):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, str(SCRIPT), "--device", "cpu", *args], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


def test_dry_run_cnf_prints_a_row_and_writes_nothing():
    before = (ROOT / "bench" / "RESULTS-gpu.md").read_text()
    rec = ROOT / "bench" / "RESULTS-gpu.json"
    rec_before = rec.read_text() if rec.exists() else None
    proc = _run(["--only", "cnf", "--repeats", "1", "--no-torch"])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    assert "| planar CNF iteration (batch 64" in proc.stdout and "nodeform (NumPy)" in proc.stdout
    assert "| not run |" in proc.stdout
    assert (ROOT / "bench" / "RESULTS-gpu.md").read_text() == before
    assert (rec.read_text() if rec.exists() else None) == rec_before


@pytest.mark.slow
def test_full_dry_run_writes_the_results_section(tmp_path):
    out = tmp_path / "RESULTS-gpu.md"
    out.write_text("# GPU results (CuPy)\n\nkept line\n")
    proc = _run(["--repeats", "1", "--out", str(out)])
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    md = out.read_text()
    assert "kept line" in md and md.count("<!-- bench_gpu models: begin -->") == 1
    for name in ("ODE-Net epoch", "planar CNF iteration", "latent ODE iteration", "One ODE-Net step"):
        assert name in md, name
    rec = json.loads((tmp_path / "RESULTS-gpu.json").read_text())
    assert rec["dry_run"] is True and len(rec["rows"]) == 3 and rec["anatomy"]["syncs"] > 0
    proc = _run(["--repeats", "1", "--only", "cnf,anatomy", "--out", str(out)])   # rewrites in place
    assert out.read_text().count("<!-- bench_gpu models: begin -->") == 1
