"""`python -m course_lib grade`: submitted notebooks run headless, each exercise checked once."""

from __future__ import annotations

import json
from pathlib import Path

import nbformat
import pytest

from course_lib import editions, grading
from course_lib.commands import main

NOTEBOOKS = Path(__file__).resolve().parent.parent / "notebooks"
NB01 = NOTEBOOKS / "01_preferences.ipynb"
pytestmark = pytest.mark.slow


def _statuses(result) -> dict:
    return {row["exercise"]: row["status"] for row in result["exercises"]}


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "edition"
    editions.student_edition(NOTEBOOKS, out)
    return out / NB01.name


def test_the_student_edition_scores_zero_and_says_not_attempted(student):
    result = grading.grade_notebook(student, cell_timeout=60)
    assert result["max_points"] == len(grading.exercise_set(NB01).names) >= 3
    assert result["points"] == 0 and result["errors"] == []
    assert set(_statuses(result).values()) == {"not attempted"}


def test_the_solved_notebook_scores_full_points(tmp_path, capsys):
    code = main(["grade", str(NB01), "--out", str(tmp_path / "g"), "--cell-timeout", "60"])
    assert code == 0
    summary = json.loads((tmp_path / "g" / "grades.json").read_text())
    assert summary["points"] == summary["max_points"] > 0
    rows = (tmp_path / "g" / "grades.csv").read_text().splitlines()
    assert rows[0] == "notebook,exercise,status,points,max_points"
    assert len(rows) == 1 + summary["max_points"]
    assert "01_preferences.ipynb: " in capsys.readouterr().out


def _with_cell(nb_path: Path, out: Path, code: str, before_exercise: int) -> Path:
    """A copy of the solved notebook with ``code`` inserted before its n-th checker cell."""
    nb = nbformat.read(nb_path, as_version=4)
    checks = [i for i, c in enumerate(nb.cells) if c.cell_type == "code" and ".check_" in c.source]
    nb.cells.insert(checks[before_exercise], nbformat.v4.new_code_cell(code))
    out.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(nb, out)
    return out


def test_a_cell_that_raises_costs_only_what_it_breaks(tmp_path):
    nb = _with_cell(NB01, tmp_path / "sub" / NB01.name, "raise RuntimeError('oops')", 1)
    result = grading.grade_notebook(nb, cell_timeout=60)
    assert any("raised RuntimeError" in e for e in result["errors"])
    assert result["points"] == result["max_points"]  # the error stopped nothing after it


def test_an_endless_loop_hits_the_time_limit_and_the_grade_finishes(tmp_path):
    nb = _with_cell(NB01, tmp_path / "sub" / NB01.name, "while True:\n    pass", 2)
    result = grading.grade_notebook(nb, cell_timeout=5, notebook_timeout=300)
    assert any("ran past 5 s" in e for e in result["errors"]), result["errors"]
    # the loop was stopped at its limit and the exercises after it were still run and graded
    assert result["points"] == result["max_points"]
    assert result["seconds"] < 120


def test_bad_input_is_named_before_any_run(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb"), "--out", str(tmp_path / "g")]) == 2
    assert "missing.ipynb is not a notebook file" in capsys.readouterr().err
    odd = tmp_path / "homework.ipynb"
    odd.write_text("{}")
    assert main(["grade", str(odd), "--out", str(tmp_path / "g")]) == 2
    assert "NN_name.ipynb" in capsys.readouterr().err
    assert not (tmp_path / "g").exists()
