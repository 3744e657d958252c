"""The student edition runs top to bottom (smoke profile): every notebook, its exercises stubbed.

Each exercise's checker must then say "not attempted yet" (0 points), and no cell may raise: a
student who opens the edition and runs it sees every section work before writing any answer.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from course_lib import editions, grading

NOTEBOOKS = sorted(
    (Path(__file__).resolve().parent.parent / "notebooks").glob("[0-9][0-9]_*.ipynb")
)
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def student(tmp_path_factory):
    out = tmp_path_factory.mktemp("student") / "edition"
    editions.student_edition(NOTEBOOKS[0].parent, out)
    return out


@pytest.mark.parametrize("name", [p.name for p in NOTEBOOKS])
def test_the_student_edition_runs_and_nothing_is_attempted(student, name, monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "smoke")
    result = grading.grade_notebook(student / name, cell_timeout=600, notebook_timeout=1200)
    assert result["errors"] == [], result["errors"]
    assert result["points"] == 0
    assert {row["status"] for row in result["exercises"]} <= {"not attempted"}
