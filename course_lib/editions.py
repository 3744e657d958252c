"""Student and instructor editions of the notebooks, from one source.

The committed notebooks hold the working solutions of their exercises between nbgrader's markers::

    def win_probability(P, pi, pi_prime):
        ### BEGIN SOLUTION
        return float(pi @ P @ pi_prime)
        ### END SOLUTION

so that the course runs top to bottom and CI checks every solution. From them:

* :func:`student_edition` replaces every solution by a stub. Inside a function (an indented
  marker) the stub is ``raise NotImplementedError  # your code here``; at the top level of a cell
  every name the solution assigns is set to ``None`` (``name = None  # your answer here``) and a
  function it defines keeps its signature with the ``raise`` stub. The checkers report such a stub
  as "not attempted yet", so the student notebook still runs top to bottom without an error. The
  outputs of the exercise cells (from the first cell with a marker to the end) are cleared. In a
  markdown cell the text between the markers becomes "*Your answer here.*". A notebook without
  markers is copied byte for byte.
* :func:`instructor_edition` copies the notebooks as they are (solutions and outputs) and writes
  ``ANSWER_KEY.md``: each exercise's statement, the solution code of its cells and the written
  answers to its questions (from ``course_lib.exercises.nbNN``).

Both write atomically (:mod:`course_lib.atomic`), into a folder that is new, empty or written by
the same command before (:func:`course_lib.atomic.check_output_dir`); they refuse anything else.
"""

from __future__ import annotations

import ast
import copy
import importlib
import json
import re
import textwrap
from collections.abc import Iterable
from pathlib import Path

from course_lib.atomic import (
    atomic_write_bytes,
    atomic_write_text,
    check_output_dir,
    claim_output_dir,
)

BEGIN = "### BEGIN SOLUTION"
END = "### END SOLUTION"
CODE_STUB = "raise NotImplementedError  # your code here"
VALUE_STUB = "None  # your answer here"
MARKDOWN_STUB = "*Your answer here.*"
STUDENT_COMMAND = "student-edition"
INSTRUCTOR_COMMAND = "instructor-edition"
ANSWER_KEY = "ANSWER_KEY.md"

_STATEMENT = re.compile(r"\*\*Exercise (\d+)\b")


class MarkerError(ValueError):
    """A cell's solution markers are unbalanced or nested."""


# ---------------------------------------------------------------------------------------------
# cells and markers
# ---------------------------------------------------------------------------------------------
def cell_source(cell: dict) -> str:
    src = cell.get("source", "")
    return "".join(src) if isinstance(src, list) else src


def _set_source(cell: dict, text: str) -> None:
    cell["source"] = text.splitlines(keepends=True)


def solution_regions(source: str, where: str = "a cell") -> list[tuple[int, int, str]]:
    """``(begin, end, indent)`` line indices of each marked region of ``source``."""
    regions, begin = [], None
    lines = source.splitlines()
    for i, line in enumerate(lines):
        marker = line.strip()
        if marker == BEGIN:
            if begin is not None:
                raise MarkerError(f"{where}: {BEGIN!r} on line {i + 1} inside another solution")
            begin = i
        elif marker == END:
            if begin is None:
                raise MarkerError(f"{where}: {END!r} on line {i + 1} without {BEGIN!r}")
            opening = lines[begin]
            regions.append((begin, i, opening[: len(opening) - len(opening.lstrip())]))
            begin = None
    if begin is not None:
        raise MarkerError(f"{where}: {BEGIN!r} on line {begin + 1} has no {END!r}")
    return regions


def _has_marker(source: str) -> bool:
    return any(line.strip() in (BEGIN, END) for line in source.splitlines())


def has_solutions(nb: dict) -> bool:
    """Whether any cell of ``nb`` has a marker line (text that only mentions one does not count)."""
    return any(_has_marker(cell_source(c)) for c in nb.get("cells", []))


def _top_level_stub(body: list[str], after: str, where: str) -> list[str]:
    """The student's version of a top-level solution: the names it assigns set to None and the
    functions it defines reduced to their signature and the raise stub; only those that the code
    after it (``after``) uses, or all of them when it uses none (helpers of the solution go)."""
    code = textwrap.dedent("\n".join(body))
    try:
        tree = ast.parse(code)
    except SyntaxError as exc:
        raise MarkerError(f"{where}: the solution does not parse: {exc}") from None
    stubs: dict[str, list[str]] = {}
    code_lines = code.splitlines()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            first = min([d.lineno for d in node.decorator_list] + [node.lineno]) - 1
            body_start = node.body[0]
            is_doc = isinstance(body_start, ast.Expr) and isinstance(
                getattr(body_start, "value", None), ast.Constant
            )
            last = (body_start.end_lineno if is_doc else body_start.lineno - 1) or node.lineno
            stubs.setdefault(node.name, [*code_lines[first:last], "    " + CODE_STUB])
            continue
        targets = []
        if isinstance(node, ast.Assign):
            targets = node.targets
        elif isinstance(node, ast.AnnAssign | ast.AugAssign):
            targets = [node.target]
        for target in targets:
            for name in ast.walk(target):
                if isinstance(name, ast.Name):
                    stubs.setdefault(name.id, [f"{name.id} = {VALUE_STUB}"])
    used = [n for n in stubs if re.search(rf"\b{re.escape(n)}\b", after)]
    lines = [line for n in (used or list(stubs)) for line in stubs[n]]
    return lines or ["# your code here"]


def student_source(
    source: str, markdown: bool = False, later: str = "", where: str = "a cell"
) -> str:
    """``source`` with every solution replaced by its stub (see the module's docstring).
    ``later``: the code of the cells after this one (what a top-level solution's names are for)."""
    regions = solution_regions(source, where)
    if not regions:
        return source
    lines = source.splitlines()
    out, pos = [], 0
    for begin, end, indent in regions:
        out += lines[pos:begin]
        body = lines[begin + 1 : end]
        if markdown:
            out.append(indent + MARKDOWN_STUB)
        elif indent:
            out.append(indent + CODE_STUB)
        else:
            after = "\n".join(lines[end + 1 :]) + "\n" + later
            out += _top_level_stub(body, after, where)
        pos = end + 1
    out += lines[pos:]
    return "\n".join(out) + ("\n" if source.endswith("\n") else "")


def without_markers(source: str) -> str:
    """``source`` with the marker lines removed (the instructor's code as it runs)."""
    keep = [ln for ln in source.splitlines() if ln.strip() not in (BEGIN, END)]
    return "\n".join(keep)


def student_notebook(nb: dict, name: str = "notebook") -> dict:
    """A copy of ``nb`` with the solutions stubbed and the exercise cells' outputs cleared."""
    nb = copy.deepcopy(nb)
    cells = nb.get("cells", [])
    first = None
    for i, cell in enumerate(cells):
        src = cell_source(cell)
        if not _has_marker(src):
            continue
        where = f"{name}, cell {i}"
        if cell.get("cell_type") == "code":
            later = "\n".join(
                cell_source(c) for c in cells[i + 1 :] if c.get("cell_type") == "code"
            )
            _set_source(cell, student_source(src, later=later, where=where))
        elif cell.get("cell_type") == "markdown":
            _set_source(cell, student_source(src, markdown=True, where=where))
        else:
            continue
        first = i if first is None else first
    if first is not None:
        for cell in nb["cells"][first:]:
            if cell.get("cell_type") == "code":
                cell["outputs"] = []
                cell["execution_count"] = None
    return nb


def notebook_bytes(nb: dict) -> bytes:
    """The course's on-disk notebook format (nbformat's: indent 1, UTF-8, a final newline)."""
    return (json.dumps(nb, indent=1, ensure_ascii=False) + "\n").encode("utf-8")


# ---------------------------------------------------------------------------------------------
# the answer key
# ---------------------------------------------------------------------------------------------
def _exercise_module(notebook_name: str):
    match = re.match(r"(\d\d)_", notebook_name)
    if not match:
        return None
    try:
        return importlib.import_module(f"course_lib.exercises.nb{match.group(1)}")
    except ModuleNotFoundError as exc:
        if exc.name == f"course_lib.exercises.nb{match.group(1)}":
            return None  # a notebook without exercises
        raise


def _exercise_blocks(nb: dict) -> list[tuple[int, str, list[str]]]:
    """``(number, statement, solution cells)`` for each "**Exercise N." statement, in order."""
    blocks: list[tuple[int, str, list[str]]] = []
    for cell in nb.get("cells", []):
        src = cell_source(cell)
        if cell.get("cell_type") == "markdown":
            matches = list(_STATEMENT.finditer(src))
            if not matches and blocks:  # the statement goes on in this cell, up to a heading
                more = re.split(r"^#", src, maxsplit=1, flags=re.M)[0].strip()
                if more:
                    number, statement, codes = blocks[-1]
                    blocks[-1] = (number, f"{statement}\n\n{more}", codes)
            for k, m in enumerate(matches):
                stop = matches[k + 1].start() if k + 1 < len(matches) else len(src)
                statement = re.split(r"^#", src[m.start() : stop], maxsplit=1, flags=re.M)[0]
                blocks.append((int(m.group(1)), statement.strip(), []))
        elif cell.get("cell_type") == "code" and blocks and _has_marker(src):
            blocks[-1][2].append(without_markers(src).strip())
    return blocks


def answer_key(notebooks: Iterable[tuple[str, dict]]) -> str:
    """The instructor's answer key, in Markdown, for ``(file name, notebook)`` pairs."""
    out = [
        "# Answer key",
        "",
        "Written by `course_lib.editions.instructor_edition` from the notebooks' marked solutions "
        "and the written answers in `course_lib/exercises/nbNN.py`. For instructors only.",
    ]
    for name, nb in notebooks:
        module = _exercise_module(name)
        written: dict[int, list] = {}
        for ex in getattr(module, "EXERCISES", ()):
            written.setdefault(ex.number, []).append(ex)
        blocks = _exercise_blocks(nb)
        if not blocks and not written:
            continue
        out += ["", f"## {name}"]
        numbers = [b[0] for b in blocks] + sorted(set(written) - {b[0] for b in blocks})
        by_number = {b[0]: b for b in blocks}
        for number in numbers:
            _, statement, codes = by_number.get(number, (number, "", []))
            out += ["", f"### Exercise {number}", ""]
            if statement:
                out += ["> " + line if line else ">" for line in statement.splitlines()]
            for code in codes:
                out += ["", "```python", code, "```"]
            for ex in written.get(number, []):
                if ex.answer:
                    out += ["", f"**{ex.title}**: " + ex.answer.strip()]
            checked = ", ".join(
                f"`{module.__name__.rsplit('.', 1)[-1]}.check_{ex.name}`"
                for ex in written.get(number, [])
            )
            if checked:
                out += ["", f"Checked by {checked}."]
    return "\n".join(out) + "\n"


# ---------------------------------------------------------------------------------------------
# the editions
# ---------------------------------------------------------------------------------------------
def _notebooks(src_dir: Path) -> list[Path]:
    if not src_dir.is_dir():
        raise FileNotFoundError(f"{src_dir} is not a folder of notebooks")
    paths = sorted(src_dir.glob("*.ipynb"))
    if not paths:
        raise FileNotFoundError(f"{src_dir} holds no notebooks (*.ipynb)")
    return paths


def _prepare(src_dir, out_dir, command: str) -> tuple[list[Path], Path]:
    src_dir, out_dir = Path(src_dir), Path(out_dir)
    paths = _notebooks(src_dir)
    if out_dir.resolve() == src_dir.resolve():
        raise ValueError(f"the edition cannot be written into its source folder {src_dir}")
    check_output_dir(out_dir, command)
    return paths, out_dir


def student_edition(src_dir, out_dir) -> list[Path]:
    """Write the student edition of every notebook of ``src_dir`` into ``out_dir``."""
    paths, out_dir = _prepare(src_dir, out_dir, STUDENT_COMMAND)
    built = []
    for path in paths:  # everything is built before anything is written
        raw = path.read_bytes()
        nb = json.loads(raw)
        built.append(
            (
                path.name,
                notebook_bytes(student_notebook(nb, path.name)) if has_solutions(nb) else raw,
            )
        )
    claim_output_dir(out_dir, STUDENT_COMMAND)
    return [atomic_write_bytes(out_dir / name, data) for name, data in built]


def instructor_edition(src_dir, out_dir) -> list[Path]:
    """Write the notebooks of ``src_dir`` as they are, and ``ANSWER_KEY.md``, into ``out_dir``."""
    paths, out_dir = _prepare(src_dir, out_dir, INSTRUCTOR_COMMAND)
    raws = [(p.name, p.read_bytes()) for p in paths]
    for name, raw in raws:  # the markers must be well formed in the instructor's copy too
        for i, cell in enumerate(json.loads(raw).get("cells", [])):
            solution_regions(cell_source(cell), f"{name}, cell {i}")
    key = answer_key((name, json.loads(raw)) for name, raw in raws)
    claim_output_dir(out_dir, INSTRUCTOR_COMMAND)
    written = [atomic_write_bytes(out_dir / name, raw) for name, raw in raws]
    written.append(atomic_write_text(out_dir / ANSWER_KEY, key))
    return written
