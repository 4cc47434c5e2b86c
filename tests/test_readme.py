"""The README's promises: the Quick start shape, and the ten-line example's printed numbers."""
import contextlib
import io
import re
from pathlib import Path

import numpy as np

README = (Path(__file__).resolve().parent.parent / "README.md").read_text()


def _block_after(heading, lang):
    part = README.split(heading, 1)[1]
    return re.search(rf"```{lang}\n(.*?)```", part, re.S).group(1)


def test_quick_start_is_two_lines_and_ci_runs_line_two():
    lines = [ln for ln in _block_after("## Quick start", "bash").splitlines() if ln.strip()]
    assert len(lines) == 2 and "nodeform chapters --quick" in lines[0] and "pytest" in lines[1]
    ci = (Path(__file__).resolve().parent.parent / ".ci" / "run").read_text()
    assert lines[1] in ci


def test_ten_line_example_prints_what_it_says():
    code = _block_after("## Ten lines", "python")
    assert len([ln for ln in code.splitlines() if ln.strip()]) <= 11
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        exec(compile(code, "README.md", "exec"), {})
    printed = out.getvalue()
    claimed = [float(v) for v in re.findall(r"-?\d+\.\d+", code.split("print(W.grad)")[1].splitlines()[0])]
    got = [float(v) for v in re.findall(r"-?\d+\.\d+", printed.split("gradcheck")[0])]
    np.testing.assert_allclose(got, claimed, atol=1e-4)
    assert "gradcheck passed" in printed
