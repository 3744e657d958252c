"""Repository-wide pytest set-up: nbval does not compare stderr, and every exercise passes.

Warnings and progress bars go to stderr and differ between machines and library versions; what a
notebook asserts is on stdout and in its displayed values.

While nbval runs the committed notebooks (the instructor edition: solutions in place), every
checker a notebook calls logs its result (``course_lib.grading.record``); at the end of the
session each exercise of each notebook that ran must have passed its last check, so a solution
that stopped passing its own checker fails the run even though nbval does not compare outputs.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import pytest

_CHECK_LOG = Path(tempfile.gettempdir()) / f"course_lib_checks_{os.getpid()}.jsonl"
_RAN_NOTEBOOKS: set[str] = set()

try:
    from nbval.plugin import IPyNbCell
except ImportError:  # nbval not installed: only the unit tests run
    IPyNbCell = None

if IPyNbCell is not None:
    _compare = IPyNbCell.compare_outputs

    def _without_stderr(outputs):
        return [
            o
            for o in outputs
            if not (o.get("output_type") == "stream" and o.get("name") == "stderr")
        ]

    def compare_outputs(self, test, ref, skip_compare=None):
        return _compare(self, _without_stderr(test), _without_stderr(ref), skip_compare)

    IPyNbCell.compare_outputs = compare_outputs


def _is_notebook_item(item) -> bool:
    return IPyNbCell is not None and isinstance(item, IPyNbCell)


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item):
    """Kernels started for notebooks log their checks; unit tests (which call checkers with
    wrong answers on purpose) do not."""
    from course_lib.grading import LOG_ENV

    if _is_notebook_item(item):
        os.environ[LOG_ENV] = str(_CHECK_LOG)
        _RAN_NOTEBOOKS.add(Path(str(item.fspath)).name)
    else:
        os.environ.pop(LOG_ENV, None)


def pytest_sessionfinish(session, exitstatus):
    if not _RAN_NOTEBOOKS:
        return
    from course_lib.grading import exercise_set

    last: dict[tuple[str, str], str] = {}
    if _CHECK_LOG.exists():
        for line in _CHECK_LOG.read_text().splitlines():
            row = json.loads(line)
            last[(row["module"], row["exercise"])] = row["status"]
        _CHECK_LOG.unlink()
    wrong = []
    for name in sorted(_RAN_NOTEBOOKS):
        exercises = exercise_set(Path(name))
        if exercises is None:
            continue
        for ex in exercises.names:
            status = last.get((exercises.module, ex), "never checked")
            if status != "ok":
                wrong.append(f"{name}: exercise {ex!r} {status}")
    if wrong:
        print("\nexercise checks that did not pass in the committed notebooks:")
        print("\n".join("  " + w for w in wrong))
        session.exitstatus = 1
