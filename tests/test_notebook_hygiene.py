"""Committed notebooks must read well on GitHub and run as the course says they do.

Each notebook is committed with the outputs of a top-to-bottom run (cpu profile), no widget state,
the ``python3`` kernelspec, no saved errors and no paths of the machine that ran it.
"""

import json
import re
from pathlib import Path

import pytest

NOTEBOOKS = sorted((Path(__file__).resolve().parent.parent / "notebooks").glob("*.ipynb"))
MACHINE_PATH = re.compile(r"(/(?:root|Users|work)/|/home/[a-z]|/tmp/|C:[\\]{2}Users)")


def hygiene_problems(nb: dict) -> list[str]:
    problems = []
    meta = nb.get("metadata", {})
    if meta.get("widgets"):
        problems.append("metadata.widgets holds saved widget state")
    kernel = meta.get("kernelspec", {}).get("name")
    if kernel != "python3":
        problems.append(f"kernelspec is {kernel!r}, expected 'python3'")
    code = [c for c in nb.get("cells", []) if c.get("cell_type") == "code"]
    counts = [c.get("execution_count") for c in code]
    if not code or all(c is None for c in counts) or not any(c.get("outputs") for c in code):
        problems.append("committed without outputs")
    elif counts != list(range(1, len(code) + 1)):
        problems.append(f"execution counts {counts} are not 1..{len(code)} in order")
    for i, cell in enumerate(code):
        for out in cell.get("outputs", []):
            if out.get("output_type") == "error":
                problems.append(f"code cell {i} saved an error: {out.get('ename')}")
            text = json.dumps({k: v for k, v in out.items() if k != "data"})
            text += json.dumps(
                {k: v for k, v in out.get("data", {}).items() if not k.startswith("image/")}
            )
            if MACHINE_PATH.search(text):
                problems.append(f"code cell {i} shows a machine path")
            if "application/vnd.jupyter.widget-view+json" in out.get("data", {}):
                problems.append(f"code cell {i} saved a widget view")
    return problems


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_is_committed_clean(path):
    assert hygiene_problems(json.loads(path.read_text())) == []


def test_notebooks_exist_and_are_numbered():
    names = [p.name for p in NOTEBOOKS]
    assert "00_setup.ipynb" in names
    assert all(re.fullmatch(r"\d\d_[a-z0-9_]+\.ipynb", n) for n in names), names


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_the_title_carries_the_notebooks_number(path):
    """A renumbering must reach the headings: '# 11 · ...' opens 11_*.ipynb, and the notebooks
    named in its 'Before you start' list exist under those numbers."""
    nb = json.loads(path.read_text())
    first = "".join(nb["cells"][0]["source"])
    assert first.startswith(f"# {path.name[:2]} · "), first.splitlines()[0]
    titles = {
        p.name[:2]: "".join(json.loads(p.read_text())["cells"][0]["source"]).splitlines()[0]
        for p in NOTEBOOKS
    }
    before = re.search(r"\*\*Before you start\.\*\*(.*?)Maths:", first, re.S)
    if before:
        for number, name in re.findall(r"\b(\d\d) \(([^)]*)\)", before.group(1)):
            assert number in titles, f"{path.name} names notebook {number}"
            words = re.sub(r"\s+", " ", name).lower().split()
            assert all(w in titles[number].lower() for w in words), (name, titles[number])


def _nb(cells, **meta):
    return {"metadata": {"kernelspec": {"name": "python3"}, **meta}, "cells": cells}


def _code(count, outputs=({"output_type": "stream", "name": "stdout", "text": "1\n"},)):
    return {"cell_type": "code", "execution_count": count, "outputs": list(outputs), "source": ""}


def test_the_checker_catches_each_problem():
    """The hygiene test must be able to fail: one bad notebook per rule."""
    assert hygiene_problems(_nb([_code(1), _code(2)])) == []
    assert "without outputs" in hygiene_problems(_nb([_code(None, ()), _code(None, ())]))[0]
    assert "widget state" in hygiene_problems(_nb([_code(1)], widgets={"state": {}}))[0]
    bad_kernel = _nb([_code(1)])
    bad_kernel["metadata"]["kernelspec"]["name"] = "venv-course"
    assert "kernelspec" in hygiene_problems(bad_kernel)[0]
    assert "not 1..2 in order" in hygiene_problems(_nb([_code(2), _code(1)]))[0]
    err = {"output_type": "error", "ename": "ValueError", "evalue": "", "traceback": []}
    assert "saved an error" in hygiene_problems(_nb([_code(1, [err])]))[0]
    path = {"output_type": "stream", "name": "stdout", "text": "/home" + "/alice/x.py"}
    assert "machine path" in hygiene_problems(_nb([_code(1, [path])]))[0]
