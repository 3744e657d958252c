"""Student and instructor editions from one source (``course_lib.editions``)."""

from __future__ import annotations

import ast
import importlib
import json
import os
import re
import shutil
from pathlib import Path

import pytest

from course_lib import editions as ed
from course_lib.atomic import MARKER, OutputDirError

ROOT = Path(__file__).resolve().parent.parent
EXERCISE_NUMBERS = sorted(
    int(p.stem[2:])
    for p in (Path(__file__).resolve().parent.parent / "course_lib" / "exercises").glob("nb*.py")
)
NOTEBOOKS = ROOT / "notebooks"


def _nb(*cells) -> dict:
    return {
        "cells": list(cells),
        "metadata": {"kernelspec": {"name": "python3"}},
        "nbformat": 4,
        "nbformat_minor": 5,
    }


def _code(source: str, outputs=None, count=None) -> dict:
    return {
        "cell_type": "code",
        "execution_count": count,
        "id": f"c{abs(hash(source)) % 10**6}",
        "metadata": {},
        "outputs": outputs or [],
        "source": source.splitlines(keepends=True),
    }


def _md(source: str) -> dict:
    return {"cell_type": "markdown", "id": "m1", "metadata": {}, "source": source.splitlines(True)}


OUT = [{"output_type": "stream", "name": "stdout", "text": ["[OK] f\n"]}]
CELL = '''def f(x):
    """Twice x."""
    ### BEGIN SOLUTION
    y = 2 * x
    return y
    ### END SOLUTION


nb.check_f(f)'''


# ---- the stubs -------------------------------------------------------------------------------
def test_a_solution_in_a_function_becomes_the_raise_stub():
    out = ed.student_source(CELL)
    assert "2 * x" not in out and ed.BEGIN not in out and ed.END not in out
    assert '    """Twice x."""\n    raise NotImplementedError  # your code here\n' in out
    assert out.endswith("nb.check_f(f)")
    ast.parse(out)


def test_a_top_level_solution_sets_the_names_used_later_to_none():
    src = """### BEGIN SOLUTION
def helper(eta):
    return eta < 5


grid = [1, 2, 3]
eta_stop, other = max(g for g in grid if helper(g)), 0
### END SOLUTION

nb.check(eta_stop)"""
    out = ed.student_source(src)
    assert out == "eta_stop = None  # your answer here\n\nnb.check(eta_stop)"
    # names the rest of the notebook uses are kept too; with no use at all, every name is
    later = ed.student_source(src, later="print(other)\nhelper(1)")
    assert "other = None" in later and "def helper(eta):\n    raise NotImplementedError" in later
    assert "grid" not in later
    bare = ed.student_source("### BEGIN SOLUTION\na = 1\nb = a\n### END SOLUTION")
    assert bare == "a = None  # your answer here\nb = None  # your answer here"
    assert ed.student_source("### BEGIN SOLUTION\nprint(1)\n### END SOLUTION") == "# your code here"


def test_markdown_answers_and_unbalanced_markers():
    assert ed.student_source("Why?\n### BEGIN SOLUTION\nBecause.\n### END SOLUTION", True) == (
        "Why?\n*Your answer here.*"
    )
    with pytest.raises(ed.MarkerError, match="has no"):
        ed.student_source("### BEGIN SOLUTION\nx = 1")
    with pytest.raises(ed.MarkerError, match="without"):
        ed.student_source("x = 1\n### END SOLUTION")
    with pytest.raises(ed.MarkerError, match="inside another"):
        ed.student_source(f"{ed.BEGIN}\n{ed.BEGIN}\n{ed.END}\n{ed.END}")
    with pytest.raises(ed.MarkerError, match="does not parse"):
        ed.student_source(f"{ed.BEGIN}\nx = (\n{ed.END}")


def test_student_notebook_clears_the_exercise_outputs_only():
    nb = _nb(
        _code("x = 1", OUT, 1), _md("**Exercise 1.**"), _code(CELL, OUT, 2), _code("y", OUT, 3)
    )
    student = ed.student_notebook(nb)
    assert student["cells"][0] == nb["cells"][0]  # before the exercises: untouched
    assert student["cells"][2]["outputs"] == [] and student["cells"][2]["execution_count"] is None
    assert student["cells"][3]["outputs"] == [] and student["cells"][3]["source"] == ["y"]
    assert nb["cells"][2]["outputs"] == OUT  # the source notebook is not changed


# ---- the editions of the course's notebooks --------------------------------------------------
@pytest.fixture(scope="module")
def student_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("editions") / "student"
    written = ed.student_edition(NOTEBOOKS, out)
    assert sorted(p.name for p in written) == sorted(p.name for p in NOTEBOOKS.glob("*.ipynb"))
    return out


@pytest.fixture(scope="module")
def instructor_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("editions") / "instructor"
    ed.instructor_edition(NOTEBOOKS, out)
    return out


def _cells(path: Path) -> list[dict]:
    return json.loads(path.read_text())["cells"]


def test_the_student_edition_keeps_no_solution_code(student_dir):
    with_markers = 0
    for path in sorted(NOTEBOOKS.glob("*.ipynb")):
        source_cells, student_cells = _cells(path), _cells(student_dir / path.name)
        assert len(source_cells) == len(student_cells)
        for src, stu in zip(source_cells, student_cells, strict=True):
            text, new = "".join(src["source"]), "".join(stu["source"])
            assert not any(ln.strip() in (ed.BEGIN, ed.END) for ln in new.splitlines())
            if stu["cell_type"] == "code":
                ast.parse(new)  # still Python
            if src["cell_type"] == "code" and ed.BEGIN in text:
                with_markers += 1
                for region in re.findall(rf"{ed.BEGIN}\n(.*?)\n\s*{ed.END}", text, re.S):
                    for line in region.splitlines():
                        code = line.strip()
                        if len(code) > 12 and not code.startswith(("#", "return", "def ")):
                            assert code not in new, (path.name, code)
                assert "raise NotImplementedError" in new or "= None  # your answer here" in new
            else:
                assert src["source"] == stu["source"]
    assert with_markers >= 30  # every exercise cell of notebooks 01-12 is marked


def test_the_student_edition_clears_exercise_outputs_and_copies_the_rest(student_dir):
    setup = NOTEBOOKS / "00_setup.ipynb"  # no exercises: copied byte for byte
    assert (student_dir / setup.name).read_bytes() == setup.read_bytes()
    cells = _cells(student_dir / "01_preferences.ipynb")
    first = next(
        i
        for i, c in enumerate(_cells(NOTEBOOKS / "01_preferences.ipynb"))
        if ed.BEGIN in "".join(c["source"])
    )
    assert all(c.get("outputs") == [] for c in cells[first:] if c["cell_type"] == "code")
    assert cells[1]["source"] == _cells(NOTEBOOKS / "01_preferences.ipynb")[1]["source"]
    assert json.loads((student_dir / MARKER).read_text()) == {"command": ed.STUDENT_COMMAND}


def test_the_student_stubs_are_not_attempted_yet(student_dir):
    """Run every stubbed definition of every student notebook through its checker."""
    seen = 0
    for path in sorted(student_dir.glob("*.ipynb")):
        number = path.name[:2]
        try:
            module = importlib.import_module(f"course_lib.exercises.nb{number}")
        except ModuleNotFoundError:
            continue
        for cell in _cells(path):
            src = "".join(cell["source"])
            if cell["cell_type"] != "code" or (
                "raise NotImplementedError" not in src and "# your answer here" not in src
            ):
                continue
            tree = ast.parse(src)
            defs = [
                n
                for n in tree.body
                if isinstance(n, ast.FunctionDef)
                or (isinstance(n, ast.Assign) and isinstance(n.value, ast.Constant))
            ]
            namespace: dict = {}
            exec(compile(ast.Module(defs, []), path.name, "exec"), namespace)
            for node in ast.walk(tree):
                if not (
                    isinstance(node, ast.Call)
                    and isinstance(node.func, ast.Attribute)
                    and node.func.attr.startswith("check_")
                ):
                    continue
                args = [namespace.get(a.id) if isinstance(a, ast.Name) else None for a in node.args]
                result = getattr(module, node.func.attr)(*args)
                assert result.status == "not attempted", (path.name, str(result))
                assert str(result).startswith("[TODO]") and ed.CODE_STUB not in str(result)
                seen += 1
    total = sum(
        1
        for n in EXERCISE_NUMBERS
        for _ in importlib.import_module(f"course_lib.exercises.nb{n:02d}").EXERCISES
    )
    assert seen == total


def test_the_instructor_edition_keeps_the_solutions_and_writes_the_answer_key(instructor_dir):
    for path in NOTEBOOKS.glob("*.ipynb"):
        assert (instructor_dir / path.name).read_bytes() == path.read_bytes()
    key = (instructor_dir / ed.ANSWER_KEY).read_text()
    assert key.startswith("# Answer key")
    assert "00_setup" not in key  # no exercises there
    for n in EXERCISE_NUMBERS:
        module = importlib.import_module(f"course_lib.exercises.nb{n:02d}")
        (nb_path,) = NOTEBOOKS.glob(f"{n:02d}_*.ipynb")
        section = key.split(f"## {nb_path.name}")[1].split("\n## ")[0]
        for ex in module.EXERCISES:
            assert f"### Exercise {ex.number}" in section
            assert f"`nb{n:02d}.check_{ex.name}`" in section
            if ex.answer:
                assert ex.answer.strip()[:60] in section
    assert "return float(pi @ P @ pi_prime)" in key  # the solution code, without the markers
    assert ed.BEGIN not in key and "fourth_die = [0, 0, 6, 6, 8, 8]" in key
    assert "Then find a fourth die" in key  # a statement that goes on in the next cell


def test_editions_refuse_folders_that_are_not_theirs(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_x.ipynb").write_text(json.dumps(_nb(_code(CELL, OUT, 1)), indent=1) + "\n")
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(OutputDirError, match="did not write"):
        ed.student_edition(src, foreign)
    assert sorted(os.listdir(foreign)) == ["notes.txt"]
    with pytest.raises(ValueError, match="source folder"):
        ed.student_edition(src, src)
    out = tmp_path / "out"
    ed.student_edition(src, out)
    ed.student_edition(src, out)  # again: the folder is the command's own
    with pytest.raises(OutputDirError, match="student-edition"):
        ed.instructor_edition(src, out)
    with pytest.raises(FileNotFoundError, match="no notebooks"):
        ed.student_edition(tmp_path / "foreign", tmp_path / "new")
    assert not (tmp_path / "new").exists()  # nothing created before the work could start
    leftovers = [p for p in out.iterdir() if p.name.startswith(".") and p.name != MARKER]
    assert leftovers == []  # atomic writes leave no temporaries


def test_a_bad_marker_writes_nothing(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    (src / "01_x.ipynb").write_text(json.dumps(_nb(_code("### BEGIN SOLUTION\nx = 1"))))
    with pytest.raises(ed.MarkerError, match="01_x.ipynb, cell 0"):
        ed.student_edition(src, tmp_path / "out")
    with pytest.raises(ed.MarkerError):
        ed.instructor_edition(src, tmp_path / "out2")
    assert not (tmp_path / "out").exists() and not (tmp_path / "out2").exists()


def test_a_notebook_without_markers_passes_through_unchanged(tmp_path):
    src = tmp_path / "src"
    src.mkdir()
    raw = json.dumps(_nb(_code("x = 1", OUT, 1)), indent=2)  # any formatting: copied as is
    (src / "05_plain.ipynb").write_text(raw)
    ed.student_edition(src, tmp_path / "s")
    ed.instructor_edition(src, tmp_path / "i")
    assert (tmp_path / "s" / "05_plain.ipynb").read_text() == raw
    assert (tmp_path / "i" / "05_plain.ipynb").read_text() == raw


@pytest.mark.slow
def test_the_student_edition_of_notebook_01_runs_top_to_bottom(student_dir, tmp_path):
    """nbclient, smoke profile: no error, and every checker says "not attempted yet"."""
    nbformat = pytest.importorskip("nbformat")
    nbclient = pytest.importorskip("nbclient")
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    shutil.copy(student_dir / "01_preferences.ipynb", run_dir)
    nb = nbformat.read(run_dir / "01_preferences.ipynb", as_version=4)
    env = {"COURSE_PROFILE": "smoke", "MPLBACKEND": "Agg"}
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        client = nbclient.NotebookClient(
            nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(run_dir)}}
        )
        client.execute()
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
    texts = []
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            assert out.get("output_type") != "error", out
            texts.append(out.get("text", "") + out.get("data", {}).get("text/plain", ""))
    todo = [t for t in texts if "[TODO]" in t]
    assert len(todo) == 5 and all("not attempted yet" in t for t in todo)
    assert not any("[FAIL]" in t or "Traceback" in t for t in texts)


def test_the_command_line(tmp_path, capsys):
    from course_lib.commands import main

    assert main(["edition", "student", str(tmp_path / "s"), "--src", str(NOTEBOOKS)]) == 0
    assert "student edition: 13 files" in capsys.readouterr().out
    assert main(["edition", "instructor", str(tmp_path / "s"), "--src", str(NOTEBOOKS)]) == 2
    assert "student-edition" in capsys.readouterr().err
