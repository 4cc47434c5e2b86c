"""Classroom: solution blocks, the student copy, and the grader.

An instructor hands nodeform out chapter by chapter; students fill in the missing
pieces and run the checks to see where they stand (the models: minitorch's
numbered tasks and nbgrader's solution markers).

How it works
------------
* **Solution blocks.** In the instructor's tree (this repository) the code of an
  exercise sits between two comment lines, in a chapter or in ``nodeform/``: a line
  ``# BEGIN SOLUTION ex2_3`` before it and ``# END SOLUTION ex2_3`` after it, each
  alone on its line at the block's indentation. The id is ``exN_M``: chapter N, exercise M. Every id is registered, with a
  title, a difficulty (1-3 stars) and a one-line hint, in ``chapters/exercises.toml``.
* **The student copy** (``python -m nodeform classroom make DIR``) is the package,
  the chapters and the tests with every selected block's body replaced by one line
  at the block's indentation::

      raise NotImplementedError("Exercise 2.3: <hint>")

  The marker lines stay, so the student writes between them. The solutions are
  nowhere in the copy (checked after writing it), and nor is ``INSTRUCTORS.md``.
* **Checks.** Each exercise has tests under ``tests/exercises/`` carrying the
  pytest marker of its id (``pytest -m ex2_3``); they test behaviour, never source
  text. ``classroom check ex2_3`` runs one; ``classroom grade [DIR]`` runs them all
  and prints a table (exercise, title, difficulty, passed/failed, a hint from the
  first failure), writes it as JSON and exits non-zero when an exercise fails;
  ``--also tests/test_x.py,...`` runs library tests in the same process (the ones a
  student copy must still pass) and reports them as ``others``.
* **Marker lint.** ``classroom lint`` (and a test in CI) rejects unbalanced,
  nested, duplicate, malformed or unregistered markers, and registered code
  exercises that have no block.

Chapter code is plain script code; :func:`load_definitions` gives the tests a
chapter's functions without running its experiments.
"""
from __future__ import annotations

import ast
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from dataclasses import dataclass
from pathlib import Path

#: The repository root of this (instructor) tree.
ROOT = Path(__file__).resolve().parent.parent
#: The registry of exercises, relative to a tree's root.
REGISTRY = Path("chapters") / "exercises.toml"
#: Folders whose ``.py`` files may hold solution blocks.
SCANNED = ("nodeform", "chapters")
#: What the student copy holds (folders copied whole, minus EXCLUDED).
COPIED = ("nodeform", "chapters", "tests", "bench", "setup.cfg", "pyproject.toml", "README.md",
          "LICENSE", ".gitignore")
#: Never copied: the instructor's guide, caches and build leftovers.
EXCLUDED = ("INSTRUCTORS.md", "__pycache__", "*.nbi", "*.nbc", "*.egg-info", ".pytest_cache",
            ".hypothesis")
#: The marker lines. Anything after the id is an error, so a typo cannot hide a block.
MARKER = re.compile(r"^(?P<indent>[ \t]*)#\s*(?P<kind>BEGIN|END) SOLUTION\b(?P<rest>.*)$")
ID = re.compile(r"^ex(?P<chapter>[1-9][0-9]*)_(?P<number>[1-9][0-9]*)$")
#: Difficulty is 1-3 stars (10-60 minutes of work each).
STARS = {1: "★", 2: "★★", 3: "★★★"}
#: Where the student-copy metadata goes.
MANIFEST = ".classroom.json"


class MarkerError(ValueError):
    """Solution markers that cannot be trusted (every problem found is listed)."""


# ----------------------------------------------------------------------------- registry

@dataclass(frozen=True)
class Exercise:
    """One registered exercise.

    Attributes
    ----------
    id : str
        ``exN_M``.
    title : str
        What to implement, in a few words.
    difficulty : int
        1 to 3 (★ to ★★★).
    hint : str
        One line, shown in the stub and by the grader.
    kind : {"code", "open"}
        ``code`` has a solution block and tests; ``open`` (measure, explain) is graded
        by the rubric in ``chapters/INSTRUCTORS.md``.
    """

    id: str
    title: str
    difficulty: int
    hint: str
    kind: str = "code"

    @property
    def chapter(self):
        return int(ID.match(self.id)["chapter"])

    @property
    def label(self):
        m = ID.match(self.id)
        return f"Exercise {m['chapter']}.{m['number']}"

    @property
    def stars(self):
        return STARS[self.difficulty]


def load_registry(root=ROOT):
    """Read ``chapters/exercises.toml`` of the tree at ``root``.

    Returns
    -------
    dict
        ``{id: Exercise}`` in chapter, then exercise order.
    """
    path = Path(root) / REGISTRY
    if not path.exists():
        raise FileNotFoundError(f"no exercise registry at {path}; a classroom tree needs "
                                f"`{REGISTRY}` (one [exN_M] table per exercise).")
    with open(path, "rb") as fh:
        raw = tomllib.load(fh)
    out, problems = {}, []
    for ex_id, spec in raw.items():
        if not ID.match(ex_id):
            problems.append(f"{path}: `{ex_id}` is not an exercise id (use exN_M, e.g. ex2_3)")
            continue
        unknown = set(spec) - {"title", "difficulty", "hint", "kind"}
        missing = {"title", "difficulty", "hint"} - set(spec)
        if unknown or missing:
            problems.append(f"{path}: [{ex_id}] " + "; ".join(
                ([f"missing {sorted(missing)}"] if missing else [])
                + ([f"unknown keys {sorted(unknown)}"] if unknown else [])))
            continue
        if spec["difficulty"] not in STARS:
            problems.append(f"{path}: [{ex_id}] `difficulty` must be 1, 2 or 3, got {spec['difficulty']!r}")
            continue
        if spec.get("kind", "code") not in ("code", "open"):
            problems.append(f"{path}: [{ex_id}] `kind` must be 'code' or 'open'")
            continue
        if "\n" in spec["hint"] or '"' in spec["hint"] or "\\" in spec["hint"]:
            problems.append(f"{path}: [{ex_id}] `hint` must be one line without quotes or backslashes "
                            "(it goes into a string literal)")
            continue
        out[ex_id] = Exercise(ex_id, spec["title"], spec["difficulty"], spec["hint"],
                              spec.get("kind", "code"))
    if problems:
        raise MarkerError("the exercise registry has problems:\n  " + "\n  ".join(problems))
    key = lambda i: (int(ID.match(i)["chapter"]), int(ID.match(i)["number"]))  # noqa: E731
    return {i: out[i] for i in sorted(out, key=key)}


# ----------------------------------------------------------------------------- markers

@dataclass(frozen=True)
class Block:
    """A solution block: lines ``begin`` and ``end`` (1-based) hold the markers."""

    id: str
    path: Path
    begin: int
    end: int
    indent: str


def _source_files(root):
    for folder in SCANNED:
        base = Path(root) / folder
        if base.is_dir():
            yield from sorted(p for p in base.rglob("*.py") if "__pycache__" not in p.parts)


def scan_file(path, problems):
    """The blocks of one file; problems are appended to ``problems`` as strings."""
    blocks, open_ = [], None
    rel = path
    for lineno, line in enumerate(Path(path).read_text().splitlines(), 1):
        m = MARKER.match(line)
        if not m:
            continue
        ex_id = m["rest"].strip()
        where = f"{rel}:{lineno}"
        if not ID.match(ex_id):
            problems.append(f"{where}: `{line.strip()}` needs one exercise id like ex2_3 after "
                            f"'{m['kind']} SOLUTION'")
            continue
        if m["kind"] == "BEGIN":
            if open_ is not None:
                problems.append(f"{where}: BEGIN SOLUTION {ex_id} inside block {open_[0]} "
                                f"(opened at line {open_[1]}); blocks cannot nest")
                continue
            open_ = (ex_id, lineno, m["indent"])
        else:
            if open_ is None:
                problems.append(f"{where}: END SOLUTION {ex_id} without a BEGIN")
            elif open_[0] != ex_id:
                problems.append(f"{where}: END SOLUTION {ex_id} closes block {open_[0]} "
                                f"(opened at line {open_[1]})")
                open_ = None
            elif m["indent"] != open_[2]:
                problems.append(f"{where}: END SOLUTION {ex_id} is indented differently from its "
                                f"BEGIN (line {open_[1]}); put both at the block's indentation")
                open_ = None
            else:
                blocks.append(Block(ex_id, Path(path), open_[1], lineno, open_[2]))
                open_ = None
    if open_ is not None:
        problems.append(f"{rel}:{open_[1]}: BEGIN SOLUTION {open_[0]} is never closed")
    return blocks


def find_blocks(root=ROOT, registry=None):
    """Every solution block of the tree, checked.

    Raises
    ------
    MarkerError
        Listing every unbalanced, nested, malformed, duplicate or unregistered
        marker, every registered code exercise without a block, and every open
        exercise with one.
    """
    registry = load_registry(root) if registry is None else registry
    problems, blocks = [], []
    for path in _source_files(root):
        blocks += scan_file(path, problems)
    seen = {}
    for b in blocks:
        if b.id in seen:
            first = seen[b.id]
            problems.append(f"{b.path}:{b.begin}: block {b.id} is a duplicate (first at "
                            f"{first.path}:{first.begin}); one block per exercise")
        else:
            seen[b.id] = b
        if b.id not in registry:
            problems.append(f"{b.path}:{b.begin}: block {b.id} is not registered in {REGISTRY}")
        elif registry[b.id].kind == "open":
            problems.append(f"{b.path}:{b.begin}: {b.id} is registered as an open exercise but has "
                            "a solution block")
    for ex in registry.values():
        if ex.kind == "code" and ex.id not in seen:
            problems.append(f"{REGISTRY}: {ex.id} is a code exercise but no file has its block")
    if problems:
        raise MarkerError(f"{len(problems)} marker problem(s):\n  " + "\n  ".join(problems))
    return sorted(seen.values(), key=lambda b: list(registry).index(b.id))


def stub_line(ex, indent):
    """The line that replaces a selected block's body."""
    return f'{indent}raise NotImplementedError("{ex.label}: {ex.hint}")'


# ----------------------------------------------------------------------------- student copy

def select(registry, chapters=None, exercises=None):
    """The ids of the code exercises chosen by chapter numbers and/or explicit ids."""
    ids = [i for i, ex in registry.items() if ex.kind == "code"]
    if exercises:
        bad = [e for e in exercises if e not in registry]
        if bad:
            raise ValueError(f"unknown exercise(s) {bad} in `--exercises`; registered: "
                             + ", ".join(registry))
        ids = [i for i in ids if i in exercises]
    if chapters:
        known = {ex.chapter for ex in registry.values()}
        bad = [c for c in chapters if c not in known]
        if bad:
            raise ValueError(f"no exercises for chapter(s) {bad} in `--chapters`; chapters with "
                             f"exercises: {sorted(known)}")
        ids = [i for i in ids if registry[i].chapter in chapters]
    return ids


def _ignore(folder, names):
    import fnmatch
    return {n for n in names if any(fnmatch.fnmatch(n, pat) for pat in EXCLUDED)}


def make_student(dest, root=ROOT, chapters=None, exercises=None):
    """Write the student copy of the tree at ``root`` into ``dest``.

    Parameters
    ----------
    dest : path
        A folder that does not exist yet, or is empty.
    chapters : list of int, optional
        Stub the exercises of these chapters (default: all).
    exercises : list of str, optional
        Stub only these ids.

    Returns
    -------
    list of str
        The stubbed exercise ids.
    """
    root, dest = Path(root), Path(dest)
    registry = load_registry(root)
    blocks = find_blocks(root, registry)
    chosen = select(registry, chapters, exercises)
    if not chosen:
        raise ValueError("the selection holds no code exercise; nothing to stub.")
    if dest.exists() and any(dest.iterdir()):
        raise FileExistsError(f"`{dest}` exists and is not empty; give a new folder for the "
                              "student copy (nothing was written).")
    if dest.resolve() == root.resolve() or root.resolve() in dest.resolve().parents:
        raise ValueError(f"`{dest}` is inside the instructor tree {root}; write the copy elsewhere.")
    dest.mkdir(parents=True, exist_ok=True)
    for name in COPIED:
        src = root / name
        if src.is_dir():
            shutil.copytree(src, dest / name, ignore=_ignore)
        elif src.exists():
            shutil.copy2(src, dest / name)
    removed = []
    by_file = {}
    for b in blocks:
        if b.id in chosen:
            by_file.setdefault(b.path, []).append(b)
    for path, bs in by_file.items():
        lines = path.read_text().splitlines(keepends=True)
        for b in sorted(bs, key=lambda b: -b.begin):
            body = lines[b.begin:b.end - 1]
            removed.append((b, "".join(body)))
            lines[b.begin:b.end - 1] = [stub_line(registry[b.id], b.indent) + "\n"]
        (dest / path.relative_to(root)).write_text("".join(lines))
    _check_no_leak(dest, removed)
    manifest = {"stubbed": chosen, "from": str(root)}
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return chosen


def _check_no_leak(dest, removed):
    """Fail loudly if a removed solution body survives anywhere in the copy."""
    texts = {}
    for p in dest.rglob("*"):
        if p.is_file() and p.suffix in (".py", ".md", ".toml", ".cfg", ".txt", ".json"):
            texts[p] = p.read_text(errors="replace")
    for b, body in removed:
        snippet = "\n".join(ln.strip() for ln in body.splitlines() if ln.strip())
        if not snippet:
            continue
        for p, text in texts.items():
            flat = "\n".join(ln.strip() for ln in text.splitlines() if ln.strip())
            if snippet in flat:
                raise MarkerError(f"the solution of {b.id} ({b.path}:{b.begin}) also appears in "
                                  f"{p}; move the duplicate inside the block or out of the copy.")


# ----------------------------------------------------------------------------- checks and grading

#: Where the grader files the outcomes of tests that carry no exercise marker (``also=``).
OTHERS = "_others"


class _Collector:
    """A pytest plugin that records each exercise test's outcome and first failure line."""

    def __init__(self, ids):
        self.ids = set(ids)
        self.results = {}

    def pytest_runtest_logreport(self, report):
        if report.when != "call" and not (report.failed or report.skipped):
            return
        ex_ids = [k for k in report.keywords if k in self.ids] or [OTHERS]
        for ex_id in ex_ids:
            rec = self.results.setdefault(ex_id, {"passed": 0, "failed": 0, "skipped": 0,
                                                  "first_failure": None})
            if report.failed:
                rec["failed"] += 1
                if rec["first_failure"] is None:
                    rec["first_failure"] = _first_line(report)
            elif report.skipped:
                rec["skipped"] += 1
            elif report.when == "call":
                rec["passed"] += 1


def _first_line(report):
    crash = getattr(report.longrepr, "reprcrash", None)
    msg = crash.message if crash is not None else str(report.longrepr)
    lines = [ln.strip() for ln in msg.splitlines() if ln.strip()]
    return lines[0][:200] if lines else "failed"


def _run_pytest(root, args):
    """Run pytest in a fresh process rooted at ``root`` (so that tree's package is tested)."""
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    return subprocess.call([sys.executable, "-m", "pytest", *args], cwd=root, env=env)


def check(ex_id, root=ROOT, extra=()):
    """Run the tests of one exercise; returns pytest's exit status."""
    registry = load_registry(root)
    if ex_id not in registry:
        raise ValueError(f"unknown exercise `{ex_id}`; registered: {', '.join(registry)}")
    if registry[ex_id].kind == "open":
        print(f"{ex_id} is an open exercise (measure, explain): no automatic check; "
              "the rubric is in chapters/INSTRUCTORS.md.")
        return 0
    return _run_pytest(Path(root), ["tests/exercises", "-m", ex_id, "-q", "-p", "no:cacheprovider",
                                    *extra])


def grade(root=ROOT, json_path=None, out=sys.stdout, also=()):
    """Run every exercise's tests in the tree at ``root``, print a table, write JSON.

    Parameters
    ----------
    root : path
        The tree to grade (an instructor tree or a student copy).
    json_path : path, optional
        Where to write ``{"root", "rows", "others"}``.
    out : file or None
        Where to print the table (None: print nothing, pytest's output included).
    also : sequence of str
        More test paths (relative to ``root``) run in the same pytest process, e.g. the
        library tests a chapter's student copy must still pass; their outcome is
        returned as ``others`` in the JSON and makes the exit status non-zero on failure.

    Returns
    -------
    (int, list of dict)
        Exit status (0 when every code exercise and every ``also`` test passed) and
        the rows.
    """
    root = Path(root)
    registry = load_registry(root)
    result_file = root / ".classroom-results.json"
    code = [i for i, ex in registry.items() if ex.kind == "code"]
    script = (
        "import json, sys, pytest\n"
        "from nodeform.classroom import _Collector\n"
        f"c = _Collector({code!r})\n"
        f"rc = pytest.main(['tests/exercises', *{list(also)!r}, '-q', '-p', 'no:cacheprovider', "
        "'-m', 'not slow'], plugins=[c])\n"
        f"open({str(result_file)!r}, 'w').write(json.dumps(c.results))\n"
        "sys.exit(0)\n")
    env = dict(os.environ, PYTHONPATH=str(root) + os.pathsep + os.environ.get("PYTHONPATH", ""),
               MPLBACKEND="Agg")
    subprocess.call([sys.executable, "-c", script], cwd=root, env=env,
                    stdout=subprocess.DEVNULL if out is None else None)
    results = json.loads(result_file.read_text()) if result_file.exists() else {}
    result_file.unlink(missing_ok=True)
    rows = []
    for ex in registry.values():
        r = results.get(ex.id)
        if ex.kind == "open":
            status, hint = "rubric", "graded by hand (chapters/INSTRUCTORS.md)"
        elif r is None or r["passed"] + r["failed"] == 0:
            status, hint = "failed", "no test ran for this exercise (is tests/exercises complete?)"
        elif r["failed"]:
            status, hint = "failed", r["first_failure"] or ex.hint
        else:
            status, hint = "passed", ""
        rows.append({"exercise": ex.id, "title": ex.title, "difficulty": ex.stars,
                     "status": status, "hint": hint,
                     "tests_passed": (r or {}).get("passed", 0),
                     "tests_failed": (r or {}).get("failed", 0)})
    others = results.get(OTHERS, {"passed": 0, "failed": 0, "skipped": 0, "first_failure": None})
    if out is not None:
        _print_table(rows, out)
        if also:
            print(f"other tests ({', '.join(also)}): {others['passed']} passed, "
                  f"{others['failed']} failed"
                  + (f"; first failure: {others['first_failure']}" if others["failed"] else ""),
                  file=out)
    if json_path is not None:
        Path(json_path).write_text(json.dumps({"root": str(root), "rows": rows,
                                               "others": others if also else None},
                                              indent=2) + "\n")
    failed = [r for r in rows if r["status"] == "failed"]
    return (1 if failed or others["failed"] else 0), rows


def _print_table(rows, out):
    w_title = max([len(r["title"]) for r in rows] + [5])
    print(f"{'exercise':<9} {'title':<{w_title}} {'level':<5} {'result':<7} hint", file=out)
    for r in rows:
        print(f"{r['exercise']:<9} {r['title']:<{w_title}} {r['difficulty']:<5} {r['status']:<7} "
              f"{r['hint']}", file=out)
    n_code = sum(r["status"] != "rubric" for r in rows)
    n_ok = sum(r["status"] == "passed" for r in rows)
    print(f"{n_ok}/{n_code} exercises passed", file=out)


# ----------------------------------------------------------------------------- chapter code for tests

def load_definitions(path, names=None):
    """Execute only a chapter's imports, functions, classes and UPPER_CASE constants.

    Chapters are scripts that run experiments top to bottom; the exercise tests need
    just the functions the student wrote. This runs the ``import``/``def``/``class``
    statements and assignments to upper-case names (``A = ...``, ``A, B = ...``), in
    order, and skips the rest. An upper-case assignment that reads a name the skipped code would have made
    (e.g. ``X = rng.standard_normal(...)``, with ``rng`` an experiment's) is data of
    an experiment, not a definition: it is left out too (a ``NameError`` there).

    Returns
    -------
    types.SimpleNamespace
    """
    import types
    path = Path(path)
    tree = ast.parse(path.read_text(), filename=str(path))
    ns = {"__name__": f"chapter_{path.stem}", "__file__": str(path)}
    for node in tree.body:
        keep = isinstance(node, (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.ClassDef))
        data = False
        if isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            assigned = [n for t in targets
                        for n in (t.elts if isinstance(t, (ast.Tuple, ast.List)) else [t])]
            data = keep = all(isinstance(n, ast.Name) and n.id.isupper() for n in assigned)
        if not keep:
            continue
        code = compile(ast.Module(body=[node], type_ignores=[]), str(path), "exec")
        try:
            exec(code, ns)
        except NameError:
            if not data:
                raise
    if names is not None:
        missing = [n for n in names if n not in ns]
        if missing:
            raise AttributeError(f"{path.name} defines no {missing}")
    return types.SimpleNamespace(**{k: v for k, v in ns.items() if not k.startswith("__")})


# ----------------------------------------------------------------------------- command line

def main(argv):
    """``python -m nodeform classroom make|check|grade|lint ...``."""
    import argparse
    p = argparse.ArgumentParser(prog="python -m nodeform classroom")
    sub = p.add_subparsers(dest="action", required=True)
    m = sub.add_parser("make", help="write the student copy")
    m.add_argument("dest")
    m.add_argument("--chapters", help="comma-separated chapter numbers, e.g. 1,2,3")
    m.add_argument("--exercises", help="comma-separated ids, e.g. ex1_2,ex3_4")
    c = sub.add_parser("check", help="run the tests of one exercise")
    c.add_argument("exercise")
    c.add_argument("--dir", default=".", help="the tree to test (default: the current folder)")
    g = sub.add_parser("grade", help="run all exercise tests, print a table, write JSON")
    g.add_argument("dir", nargs="?", default=".")
    g.add_argument("--json", help="where to write the table as JSON (default DIR/grades.json)")
    g.add_argument("--also", help="comma-separated test paths run with the exercises, e.g. "
                                  "tests/test_ode_tableaus.py (the library tests a copy must pass)")
    sub.add_parser("lint", help="check the solution markers of this tree")
    sub.add_parser("list", help="list the registered exercises")
    a = p.parse_args(argv)
    try:
        if a.action == "make":
            chapters = [int(x) for x in a.chapters.split(",")] if a.chapters else None
            exercises = a.exercises.split(",") if a.exercises else None
            done = make_student(a.dest, ROOT, chapters, exercises)
            print(f"wrote the student copy to {a.dest}: {len(done)} exercise(s) stubbed "
                  f"({', '.join(done)}). Students run `python -m nodeform classroom grade` there.")
            return 0
        if a.action == "check":
            return check(a.exercise, _tree(a.dir))
        if a.action == "grade":
            root = _tree(a.dir)
            json_path = a.json or root / "grades.json"
            rc, _ = grade(root, json_path, also=a.also.split(",") if a.also else ())
            print(f"wrote {json_path}")
            return rc
        if a.action == "lint":
            blocks = find_blocks(ROOT)
            print(f"markers ok: {len(blocks)} solution blocks, all registered and balanced")
            return 0
        for ex in load_registry(ROOT).values():
            print(f"{ex.id:<7} {ex.stars:<4} {ex.kind:<5} {ex.title}")
        return 0
    except (MarkerError, ValueError, FileExistsError, FileNotFoundError) as exc:
        print(f"classroom: {exc}", file=sys.stderr)
        return 2


def _tree(folder):
    root = Path(folder).resolve()
    if not (root / REGISTRY).exists():
        raise FileNotFoundError(f"`{folder}` is not a nodeform tree (no {REGISTRY}); run from the "
                                "student copy or pass its folder.")
    return root


__all__ = ["Exercise", "Block", "MarkerError", "load_registry", "find_blocks", "make_student",
           "check", "grade", "load_definitions", "main"]
