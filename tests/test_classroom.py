"""The classroom tools on a small synthetic tree: markers, the student copy, the grader."""
import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from nodeform import classroom
from nodeform.classroom import MarkerError, find_blocks, load_definitions, make_student

REGISTRY = """
[ex1_1]
title = "Add two numbers"
difficulty = 1
hint = "return the sum of a and b"

[ex1_2]
title = "Scale a list"
difficulty = 2
hint = "multiply every item by k"

[ex1_3]
title = "Explain the result"
difficulty = 3
hint = "see the rubric"
kind = "open"
"""

MINI = '''\
def add(a, b):
    """a + b."""
    # BEGIN SOLUTION ex1_1
    total = a + b
    return total
    # END SOLUTION ex1_1


class Scaler:
    def scale(self, xs, k):
        # BEGIN SOLUTION ex1_2
        return [x * k for x in xs]
        # END SOLUTION ex1_2
'''

TESTS = '''\
import pytest
from nodeform.mini import add, Scaler


@pytest.mark.ex1_1
def test_add():
    assert add(2, 3) == 5, "add(2, 3) should be 5"


@pytest.mark.ex1_2
def test_scale():
    assert Scaler().scale([1, 2], 3) == [3, 6]


@pytest.mark.ex1_2
def test_scale_empty():
    assert Scaler().scale([], 3) == []


def test_unrelated():
    assert True
'''

CONFTEST = '''\
from pathlib import Path
from nodeform.classroom import load_registry


def pytest_configure(config):
    for ex in load_registry(Path(__file__).parent.parent).values():
        config.addinivalue_line("markers", f"{ex.id}: {ex.title}")
'''


@pytest.fixture
def tree(tmp_path):
    """An instructor tree with two code exercises and one open one."""
    root = tmp_path / "instructor"
    (root / "nodeform").mkdir(parents=True)
    (root / "chapters").mkdir()
    (root / "tests" / "exercises").mkdir(parents=True)
    (root / "nodeform" / "__init__.py").write_text("")
    shutil.copy(classroom.__file__, root / "nodeform" / "classroom.py")
    (root / "nodeform" / "mini.py").write_text(MINI)
    (root / "chapters" / "exercises.toml").write_text(REGISTRY)
    (root / "chapters" / "INSTRUCTORS.md").write_text("rubric: the answer is 42\n")
    (root / "tests" / "conftest.py").write_text(CONFTEST)
    (root / "tests" / "exercises" / "test_mini.py").write_text(TESTS)
    return root


def _write(root, text):
    (root / "nodeform" / "mini.py").write_text(textwrap.dedent(text))


def test_find_blocks_in_a_good_tree(tree):
    blocks = find_blocks(tree)
    assert [b.id for b in blocks] == ["ex1_1", "ex1_2"]
    assert blocks[1].indent == " " * 8 and blocks[0].end - blocks[0].begin == 3


@pytest.mark.parametrize("text, message", [
    ("# BEGIN SOLUTION ex1_1\nx = 1\n", "never closed"),
    ("x = 1\n# END SOLUTION ex1_1\n", "without a BEGIN"),
    ("# BEGIN SOLUTION ex1_1\n# BEGIN SOLUTION ex1_2\n# END SOLUTION ex1_2\n# END SOLUTION ex1_1\n",
     "cannot nest"),
    ("# BEGIN SOLUTION ex1_1\n# END SOLUTION ex1_2\n", "closes block ex1_1"),
    ("# BEGIN SOLUTION ex1_1\n# END SOLUTION ex1_1\n# BEGIN SOLUTION ex1_1\n# END SOLUTION ex1_1\n",
     "duplicate"),
    ("# BEGIN SOLUTION ex9_9\n# END SOLUTION ex9_9\n", "not registered"),
    ("# BEGIN SOLUTION exercise1\n# END SOLUTION exercise1\n", "needs one exercise id"),
    ("# BEGIN SOLUTION ex1_3\n# END SOLUTION ex1_3\n", "open exercise"),
    ("def f():\n    # BEGIN SOLUTION ex1_1\n    pass\n# END SOLUTION ex1_1\n", "indented differently"),
])
def test_marker_problems_are_errors(tree, text, message):
    _write(tree, text)
    with pytest.raises(MarkerError, match=message):
        find_blocks(tree)


def test_registered_code_exercise_without_block_is_an_error(tree):
    _write(tree, "# BEGIN SOLUTION ex1_1\n# END SOLUTION ex1_1\n")
    with pytest.raises(MarkerError, match="ex1_2 is a code exercise but no file has its block"):
        find_blocks(tree)


def test_registry_problems_are_errors(tree):
    (tree / "chapters" / "exercises.toml").write_text('[ex1_1]\ntitle = "x"\ndifficulty = 5\nhint = "h"\n')
    with pytest.raises(MarkerError, match="`difficulty` must be 1, 2 or 3"):
        classroom.load_registry(tree)


def test_student_copy_has_stubs_and_no_solutions(tree, tmp_path):
    dest = tmp_path / "student"
    assert make_student(dest, tree) == ["ex1_1", "ex1_2"]
    text = (dest / "nodeform" / "mini.py").read_text()
    assert '    raise NotImplementedError("Exercise 1.1: return the sum of a and b")' in text
    assert '        raise NotImplementedError("Exercise 1.2: multiply every item by k")' in text
    assert "total = a + b" not in text and "x * k" not in text
    assert "# BEGIN SOLUTION ex1_1" in text            # the student writes between the markers
    assert not (dest / "chapters" / "INSTRUCTORS.md").exists()
    assert json.loads((dest / ".classroom.json").read_text())["stubbed"] == ["ex1_1", "ex1_2"]
    compile(text, "mini.py", "exec")                     # the stubbed file is still valid Python


def test_student_copy_selection_and_refusals(tree, tmp_path):
    assert make_student(tmp_path / "a", tree, exercises=["ex1_2"]) == ["ex1_2"]
    assert "total = a + b" in (tmp_path / "a" / "nodeform" / "mini.py").read_text()
    with pytest.raises(ValueError, match="unknown exercise"):
        make_student(tmp_path / "b", tree, exercises=["ex7_1"])
    with pytest.raises(ValueError, match="no exercises for chapter"):
        make_student(tmp_path / "c", tree, chapters=[4])
    with pytest.raises(FileExistsError, match="not empty"):
        make_student(tmp_path / "a", tree)


def test_a_solution_copied_outside_its_block_is_caught(tree, tmp_path):
    (tree / "nodeform" / "leak.py").write_text("def g(xs, k):\n    return [x * k for x in xs]\n")
    with pytest.raises(MarkerError, match="ex1_2.*also appears in"):
        make_student(tmp_path / "s", tree)


def test_grade_instructor_tree_passes_and_student_copy_fails(tree, tmp_path):
    rc, rows = classroom.grade(tree, tmp_path / "instructor.json", out=None)
    assert rc == 0 and [r["status"] for r in rows] == ["passed", "passed", "rubric"]

    dest = tmp_path / "student"
    make_student(dest, tree)
    rc, rows = classroom.grade(dest, tmp_path / "grades.json", out=None)
    assert rc == 1
    by_id = {r["exercise"]: r for r in rows}
    assert by_id["ex1_1"]["status"] == "failed" and by_id["ex1_2"]["tests_failed"] == 2
    assert "Exercise 1.1: return the sum of a and b" in by_id["ex1_1"]["hint"]
    saved = json.loads((tmp_path / "grades.json").read_text())
    assert [r["exercise"] for r in saved["rows"]] == ["ex1_1", "ex1_2", "ex1_3"]

    # restoring one solution makes exactly that exercise pass
    mini = dest / "nodeform" / "mini.py"
    mini.write_text(mini.read_text().replace(
        '    raise NotImplementedError("Exercise 1.1: return the sum of a and b")', "    return a + b"))
    rc, rows = classroom.grade(dest, None, out=None)
    assert {r["exercise"]: r["status"] for r in rows} == {"ex1_1": "passed", "ex1_2": "failed",
                                                        "ex1_3": "rubric"}


def test_grade_prints_a_table(tree, capsys):
    import io
    buf = io.StringIO()
    classroom.grade(tree, None, out=buf)
    table = buf.getvalue()
    assert "ex1_2" in table and "★★" in table and "2/2 exercises passed" in table


def test_load_definitions_runs_only_definitions(tmp_path):
    path = tmp_path / "ch99_demo.py"
    path.write_text("import math\nSCALE = 2\nlowered = 1 / 0\n"
                    "def f(x):\n    return SCALE * math.sqrt(x)\n")
    ns = load_definitions(path, ["f"])
    assert ns.f(4.0) == 4.0 and not hasattr(ns, "lowered")
    with pytest.raises(AttributeError, match="defines no"):
        load_definitions(path, ["g"])


def test_cli_lint_and_make_refusal(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nodeform", "classroom", "make", str(tmp_path),
                           "--exercises", "ex99_1"], capture_output=True, text=True)
    assert proc.returncode == 2 and "unknown exercise" in proc.stderr
