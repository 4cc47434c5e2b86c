"""Every chapter runs in quick mode, writes its figures and passes its own checks.

The chapters close each section with ``nodeform.testing.check(name, ok, detail)``,
which prints ``CHECK <name> passed`` or raises. A quick run must print every check of
the chapter as passed (so a check that stops running is noticed too), and breaking a
piece of a chapter's built code must make the matching check fail.
"""
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from nodeform.backend import cupy_available
from nodeform.cli import list_chapters

CHAPTERS = list_chapters()
ROOT = Path(__file__).resolve().parent.parent
#: Checks that only a full run makes (they need a minute of Numba compilation).
FULL_ONLY = {"ch03.compiled_adjoint"}
#: Checks that only run where a GPU is usable (chapter 8 runs them live on CuPy).
GPU_ONLY = {"ch08.gpu_parity"}


def _checks_in(path):
    skipped = FULL_ONLY | (set() if cupy_available() else GPU_ONLY)
    return set(re.findall(r'check\("(ch\d\d\.\w+)"', path.read_text())) - skipped


def _run(script, tmp_path, timeout=300):
    env = dict(os.environ, NODEFORM_QUICK="1", NODEFORM_FIGURES=str(tmp_path), MPLBACKEND="Agg",
               PYTHONPATH=str(ROOT))
    return subprocess.run([sys.executable, str(script), "--quick"], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=timeout)


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_quick_mode(path, tmp_path):
    proc = _run(path, tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prefix = path.stem.split("_")[0]
    written = sorted(p.name for p in (tmp_path / "quick").glob(f"{prefix}_*.png"))
    assert written, f"{path.name} wrote no figure named {prefix}_*.png in quick mode"
    assert not list(Path(tmp_path).glob("*.png")), "quick mode must not write full-run figures"
    passed = set(re.findall(r"^CHECK (ch\d\d\.\w+) passed", proc.stdout, flags=re.M))
    expected = _checks_in(path)
    if prefix in ("ch01", "ch02", "ch03"):
        assert len(expected) >= 7, f"{path.name} has only {sorted(expected)} as checks"
    assert expected <= passed, f"checks that did not run or pass: {sorted(expected - passed)}"


# (chapter, line of the built code, broken version, the check that must catch it)
MUTATIONS = [
    ("ch01_autodiff", "        if n == 1 and g.shape[axis] != 1:", "        if False:",
     "ch01.unbroadcast"),
    ("ch01_autodiff", "    out = node(np.tanh(x.value), (x,), (lambda g: g * (1.0 - out * out),))",
     "    out = node(np.tanh(x.value), (x,), (lambda g: g * (1.0 - out.value * out.value),))",
     "ch01.tiny_second_order"),
    ("ch02_ode_solvers",
     "    return SAFETY * ratio ** (-PI_ALPHA / (q + 1)) * ratio_prev ** (PI_BETA / (q + 1))",
     "    return SAFETY * ratio ** (-PI_ALPHA / (q + 1))", "ch02.adaptive_loop_equals_solve"),
    pytest.param("ch02_ode_solvers",
                 "    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.01 * d0 / d1, span)",
                 "    h0 = min(1e-6 if d0 < 1e-5 or d1 < 1e-5 else 0.02 * d0 / d1, span)",
                 "ch02.adaptive_loop_equals_solve", marks=pytest.mark.slow),
    ("ch03_adjoint", "    return a + g_i, a_t - dL_dti, dL_dti",
     "    return a, a_t - dL_dti, dL_dti", "ch03.backward_sweep_equals_odeint"),
    pytest.param("ch03_adjoint", "    return g_N.copy(), np.zeros(W.size), -dL_dtN, dL_dtN",
                 "    return g_N.copy(), np.zeros(W.size), 0.0, dL_dtN",
                 "ch03.backward_sweep_equals_odeint", marks=pytest.mark.slow),
]


def _id(i, m):
    values = m.values if hasattr(m, "values") else m
    return f"{values[0][:4]}-{values[3].split('.')[1]}-{i}"


@pytest.mark.parametrize("stem, line, broken, name", MUTATIONS,
                         ids=[_id(i, m) for i, m in enumerate(MUTATIONS)])
def test_chapter_check_catches_broken_built_code(stem, line, broken, name, tmp_path):
    # run the chapter up to the end of the cell that makes the check, with one line broken
    source = (ROOT / "chapters" / f"{stem}.py").read_text()
    assert source.count(line + "\n") == 1, f"the line to break is not in {stem}.py once: {line!r}"
    lines = source.replace(line + "\n", broken + "\n").splitlines(keepends=True)
    at = next(i for i, ln in enumerate(lines) if f'check("{name}"' in ln)
    end = next((i for i in range(at, len(lines)) if lines[i].startswith("# %%")), len(lines))
    script = tmp_path / f"{stem}_broken.py"
    script.write_text("".join(lines[:end]))
    proc = _run(script, tmp_path)
    assert proc.returncode != 0 and f"CHECK {name} FAILED" in proc.stderr, \
        proc.stdout[-2000:] + proc.stderr[-2000:]


def test_chapter_runs_as_a_notebook_inline_and_writes_nothing_under_figures(monkeypatch):
    jupytext = pytest.importorskip("jupytext")
    nbclient = pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    figures = ROOT / "figures"

    def snapshot():
        return {p: p.stat().st_mtime_ns for p in figures.rglob("ch01_*")}

    before = snapshot()
    monkeypatch.setenv("NODEFORM_QUICK", "1")
    monkeypatch.delenv("NODEFORM_FIGURES", raising=False)
    monkeypatch.delenv("NODEFORM_WRITE_FIGURES", raising=False)
    monkeypatch.setenv("PYTHONPATH", str(ROOT))
    nb = jupytext.read(ROOT / "chapters" / "ch01_autodiff.py")
    nbclient.NotebookClient(nb, timeout=180, kernel_name="python3",
                            resources={"metadata": {"path": str(ROOT)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    images = [o for o in outputs if o.get("output_type") == "display_data"
              and "image/png" in o.get("data", {})]
    text = "".join(o.get("text", "") for o in outputs if o.get("output_type") == "stream")
    assert len(images) >= 1, "the figure was not displayed inline"
    assert "CHECK ch01.tiny_second_order passed" in text
    assert snapshot() == before, "a notebook run wrote or changed files under figures/"
