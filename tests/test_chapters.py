"""Every chapter runs top to bottom in quick mode and writes its figures."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from nodeform.cli import list_chapters

CHAPTERS = list_chapters()


@pytest.mark.parametrize("path", CHAPTERS, ids=[p.stem for p in CHAPTERS])
def test_chapter_runs_in_quick_mode(path, tmp_path):
    env = dict(os.environ, NODEFORM_QUICK="1", NODEFORM_FIGURES=str(tmp_path), MPLBACKEND="Agg")
    proc = subprocess.run([sys.executable, str(path), "--quick"], env=env, cwd=path.parent.parent,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    prefix = path.stem.split("_")[0]
    written = sorted(p.name for p in (tmp_path / "quick").glob(f"{prefix}_*.png"))
    assert written, f"{path.name} wrote no figure named {prefix}_*.png in quick mode"
    assert not list(Path(tmp_path).glob("*.png")), "quick mode must not write full-run figures"


def test_cli_lists_and_rejects_unknown_chapter():
    proc = subprocess.run([sys.executable, "-m", "nodeform", "chapters", "ch99"],
                          capture_output=True, text=True)
    assert proc.returncode != 0 and "unknown chapter `ch99`" in proc.stderr


def test_chapters_are_importable_names():
    assert CHAPTERS and all(p.stem[:2] == "ch" and p.stem[2:4].isdigit() for p in CHAPTERS)


def test_doctor_reports_versions_and_backends():
    proc = subprocess.run([sys.executable, "-m", "nodeform", "doctor"], capture_output=True,
                          text=True, check=True)
    out = proc.stdout
    for name in ("numpy", "scipy", "numba", "cupy"):
        assert f"\n{name}" in out
    backend_lines = out.split("backends:", 1)[1].splitlines()
    cupy = [ln.strip() for ln in backend_lines if ln.strip().startswith("cupy ")]
    assert cupy and (cupy[0].startswith("cupy    ok") or "CuPy" in cupy[0]), out
    assert "malloc tuning" in out
