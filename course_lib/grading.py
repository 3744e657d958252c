"""Grading submitted notebooks: ``python -m course_lib grade NOTEBOOK... --out DIR``.

Each submitted notebook is executed headless in a fresh kernel (nbclient), in a temporary copy,
with a time limit per cell and for the whole notebook. While it runs, every checker the notebook
calls (``nbNN.check_<name>(...)``, :mod:`course_lib.exercises`) appends its result to a log named
by the environment variable :data:`LOG_ENV`; a cell that raises does not stop the run (the
exercises after it are still graded), and a cell that runs past its limit is interrupted.

Points: one per exercise of the notebook's :class:`~course_lib.exercises.ExerciseSet` whose last
check passed; an exercise never checked (a crash, the time limit) or not attempted (the student
edition's stub) gets 0. ``grades.csv`` has one row per (notebook, exercise); ``grades.json`` the
same with each notebook's total, errors and time.
"""

from __future__ import annotations

import csv
import importlib
import importlib.util
import json
import os
import re
import shutil
import tempfile
import time
from pathlib import Path

LOG_ENV = "COURSE_GRADE_LOG"
COMMAND = "python -m course_lib grade"
_NB = re.compile(r"^(\d\d)_")


def record(module: str, name: str, result) -> None:
    """Append one checker's result to the grading log, when a grader set :data:`LOG_ENV`."""
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    row = {"module": module, "exercise": name, "status": result.status}
    with open(path, "a", encoding="utf-8") as log:  # one short line per check: a crash loses
        log.write(json.dumps(row) + "\n")  # at most the line being written


def exercise_set(notebook: Path):
    """The :class:`~course_lib.exercises.ExerciseSet` of notebook ``NN_name.ipynb``, or None."""
    match = _NB.match(Path(notebook).name)
    if not match:
        raise ValueError(
            f"{notebook}: a course notebook is named NN_name.ipynb (NN its number), got "
            f"{Path(notebook).name!r}"
        )
    try:
        module = importlib.import_module(f"course_lib.exercises.nb{match.group(1)}")
    except ModuleNotFoundError:
        return None
    return getattr(module, "EXERCISES", None)


def execute(notebook: Path, log: Path, cell_timeout: int, notebook_timeout: int) -> dict:
    """Run ``notebook`` in a fresh kernel in a scratch folder; return errors and seconds."""
    import nbformat
    from nbclient import NotebookClient
    from nbclient.exceptions import CellTimeoutError, DeadKernelError

    nb = nbformat.read(notebook, as_version=4)
    errors, start = [], time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="course_grade_") as scratch:
        env_before = {k: os.environ.get(k) for k in (LOG_ENV, "COURSE_PROFILE")}
        os.environ[LOG_ENV] = str(log)
        os.environ.setdefault("COURSE_PROFILE", "smoke")
        try:
            client = NotebookClient(
                nb,
                timeout=cell_timeout,
                kernel_name="python3",
                allow_errors=True,
                interrupt_on_timeout=True,
                resources={"metadata": {"path": scratch}},
            )
            with client.setup_kernel():
                for index, cell in enumerate(nb.cells):
                    if time.perf_counter() - start > notebook_timeout:
                        errors.append(f"time limit of {notebook_timeout} s reached at cell {index}")
                        break
                    if cell.cell_type != "code":
                        continue
                    began = time.perf_counter()
                    try:
                        client.execute_cell(cell, index)
                    except CellTimeoutError:  # the kernel did not answer the interrupt
                        errors.append(f"cell {index} ran past {cell_timeout} s and was stopped")
                        break
                    except DeadKernelError:
                        errors.append(f"the kernel died at cell {index}")
                        break
                    overran = time.perf_counter() - began >= cell_timeout
                    for out in cell.get("outputs", []):
                        if out.get("output_type") != "error":
                            continue
                        if overran and out.get("ename") == "KeyboardInterrupt":
                            # nbclient interrupts a cell at its time limit and carries on
                            errors.append(f"cell {index} ran past {cell_timeout} s and was stopped")
                        else:
                            errors.append(f"cell {index} raised {out.get('ename')}")
        finally:
            for key, value in env_before.items():
                if value is None:
                    os.environ.pop(key, None)
                else:
                    os.environ[key] = value
    return {"errors": errors, "seconds": round(time.perf_counter() - start, 1)}


def grade_notebook(notebook: Path, cell_timeout: int = 120, notebook_timeout: int = 900) -> dict:
    """Points per exercise of one submitted notebook (see the module docstring)."""
    notebook = Path(notebook)
    if not notebook.is_file():
        raise FileNotFoundError(f"no notebook at {notebook}")
    exercises = exercise_set(notebook)
    names = list(exercises.names) if exercises is not None else []
    with tempfile.TemporaryDirectory(prefix="course_grade_log_") as folder:
        log = Path(folder) / "checks.jsonl"
        log.touch()
        run = execute(notebook, log, cell_timeout, notebook_timeout)
        last = {}
        for line in log.read_text().splitlines():
            try:
                row = json.loads(line)
            except ValueError:  # a line cut by a killed kernel
                continue
            last[row["exercise"]] = row["status"]
    rows = [
        {
            "notebook": notebook.name,
            "exercise": name,
            "status": last.get(name, "not checked"),
            "points": 1 if last.get(name) == "ok" else 0,
            "max_points": 1,
        }
        for name in names
    ]
    return {
        "notebook": notebook.name,
        "points": sum(r["points"] for r in rows),
        "max_points": len(rows),
        "exercises": rows,
        **run,
    }


def grade(notebooks, out: Path, cell_timeout: int = 120, notebook_timeout: int = 900) -> dict:
    """Grade every notebook; write ``grades.csv`` and ``grades.json`` into ``out``."""
    from course_lib.atomic import atomic_open, atomic_write_json, check_output_dir, claim_output_dir

    notebooks = [Path(n) for n in notebooks]
    if not notebooks:
        raise ValueError("give at least one notebook to grade")
    for nb in notebooks:
        if not nb.is_file() or nb.suffix != ".ipynb":
            raise ValueError(f"{nb} is not a notebook file (.ipynb)")
        exercise_set(nb)  # a badly named notebook fails here, before any run
    check_output_dir(out, COMMAND)
    results = [grade_notebook(nb, cell_timeout, notebook_timeout) for nb in notebooks]
    claim_output_dir(out, COMMAND)
    with atomic_open(out / "grades.csv", newline="") as f:
        writer = csv.DictWriter(
            f, fieldnames=["notebook", "exercise", "status", "points", "max_points"]
        )
        writer.writeheader()
        for r in results:
            writer.writerows(r["exercises"])
    summary = {"notebooks": results, "points": sum(r["points"] for r in results)}
    summary["max_points"] = sum(r["max_points"] for r in results)
    atomic_write_json(out / "grades.json", summary)
    return summary


def has_kernel() -> bool:
    """True where a ``python3`` Jupyter kernel can be started (the grader needs one)."""
    return shutil.which("jupyter") is not None or importlib.util.find_spec("ipykernel") is not None
