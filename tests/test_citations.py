"""Every citation of the course's notes resolves, and nothing cites a source the course lacks.

The convention is the one at the top of ``notes/README.md`` (its section 1). In short:

* a citation is ``notes/<file>.md §<n>``, where ``<n>`` is a dotted number such as ``4`` or
  ``4.3``. Further sections of the same file may follow, after a comma or "and", and a range
  ``§4.1-4.2`` names both of its ends. The file must exist, and each number must start one of its
  Markdown headings (``## 4.3 Title`` or ``## §4.3 Title``, with an optional period after the
  number). Inside ``notes/`` a bare ``§<n>`` refers to the same file;
* outside ``notes/``, a bare ``§<n>`` must name a paper's section, with the paper named right
  before it (Calandriello et al., NLHF, Azar et al., "paper", "et al.");
* nothing points outside the repository. No background notes that the course does not ship, no
  path to a folder beside the repository, and no vague reference to "the notes" without a file;
* a source tag (``[S-<letter>]``, or a one-letter tag such as ``[R]``) must be defined in bold in
  a notes file, a defect label ("defect D<n>",
  "TRL's D<n>") must be one of the defects of ``notes/trl.md`` and needs a notes citation on its
  line or the next, and a "trap <n>" needs a notes citation on its line or the next.

Scanned: every cell source and text output of the notebooks, ``course_lib``, ``tests``,
``benchmarks``, ``tools``, ``README.md``, ``CONTRIBUTING.md``, ``docs``, the Markdown files under
``results`` and under ``notes``. The notes themselves are also checked for the files and the
``course_lib`` names that they mention in backticks, so that a renamed module shows up here.

Each failure names the file, the line (for a notebook, the line of the ``.ipynb`` file and the
cell), the rule and the text. Where a line cites notes that the course does not ship, only that is
reported, not also the section number that follows. This file is not scanned: its self-test holds
examples of bad citations.
"""

from __future__ import annotations

import json
import re
from bisect import bisect_right
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTES = ROOT / "notes"

SCAN_GLOBS = (
    "README.md",
    "CONTRIBUTING.md",
    "docs/**/*.md",
    "notes/**/*.md",
    "results/**/*.md",
    "notebooks/**/*.ipynb",
    "course_lib/**/*.py",
    "tests/**/*.py",
    "benchmarks/**/*.py",
    "benchmarks/**/*.md",
    "tools/**/*.py",
)
SKIP_PARTS = {".ipynb_checkpoints", "__pycache__", ".venv", ".git"}
THIS_FILE = Path(__file__).resolve()

# ---------------------------------------------------------------------------------------------
# patterns
# ---------------------------------------------------------------------------------------------
_NUM = r"\d+(?:\.\d+)*"
_ONE = rf"§\s?({_NUM})(?:\s?[-–]\s?({_NUM}))?"
_BREAK = r"(?:[ \t]*\n[ \t]*(?:#[ \t]*)?|[ \t]*)"  # a space, or a line break (and a comment mark)
_MORE = r"(?:,(?:[ \t]*\n[ \t]*(?:#[ \t]*)?|[ \t]*)(?:and[ \t]+)?|[ \t]+and[ \t]+)"
CITATION = re.compile(
    r"(?<![\w.-])notes/(?P<file>(?:[\w-]+/)*[\w.-]+\.md)`?"
    rf"(?P<secs>{_BREAK}§\s?{_NUM}(?:\s?[-–]\s?{_NUM})?"
    rf"(?:{_MORE}§\s?{_NUM}(?:\s?[-–]\s?{_NUM})?)*)?"
)
SECTION = re.compile(_ONE)
HEADING = re.compile(r"^(#{1,6})[ \t]+(.*?)[ \t#]*$")
HEADING_NUMBER = re.compile(rf"^§?\s?({_NUM})\.?(?=\s|$)")

# a paper's (or a published book's) section: its author is named just before the section sign;
# the statistics books are those course_lib.power cites for its variance components
PAPER_NAME = re.compile(
    r"Calandriello|NLHF|Munos|Azar|Rafailov|Zhao|Stiennon|Guo et al|et al\.|IPO paper|DPO paper"
    r"|McCulloch|Brennan|Cohen|Lachin"
)
PAPER_WORD = re.compile(r"\bpaper(?:'s)?[\s(,]*$")

OUTSIDE = [
    (
        "cites background notes that the course does not ship",
        re.compile(r"\b(?:paper|trl)[-_ ]notes\b", re.I),
    ),
    ("points outside the repository", re.compile(r"[.][.]/shared\b|\bshared[/]reference\b")),
]
VAGUE = re.compile(
    r"\b(?:the|these|our|course's|course authors'|authors')\s+(?:(?:paper|TRL|course)\s+)?"
    r"notes\b(?![/.])|\bnotes\s+§?\s?\d",
    re.I,
)
TAG = re.compile(r"(?<![\w\])])\[(?:S-[A-Z](?:,\s?S-[A-Z])*|[RDCP])\]")  # [S-A]; [R] and the like
DEFECT = re.compile(r"\b(?:defect|TRL(?:'s)?)\s+D(\d+)\b")
TRAP = re.compile(r"\btrap\s+(\d+)\b", re.I)
HOW = "see notes/README.md §1"


# ---------------------------------------------------------------------------------------------
# documents: a file's text with the file line of every offset
# ---------------------------------------------------------------------------------------------
@dataclass
class Doc:
    """Text to check. ``pieces`` are ``(file line or None, label, text)``; one piece is one line
    of a text file, or one line of a notebook cell's source or output."""

    rel: str
    in_notes: bool
    pieces: list[tuple[int | None, str, str]] = field(default_factory=list)

    def __post_init__(self):
        self._finish()

    def _finish(self):
        self.text = ""
        self._starts: list[int] = []
        for _, _, piece in self.pieces:
            self._starts.append(len(self.text))
            self.text += piece if piece.endswith("\n") else piece + "\n"

    def add(self, line: int | None, label: str, text: str):
        self.pieces.append((line, label, text))

    def where(self, offset: int) -> str:
        i = max(bisect_right(self._starts, offset) - 1, 0)
        line, label, _ = self.pieces[i]
        if line is None:
            return f"{self.rel} ({label})" if label else self.rel
        return f"{self.rel}:{line}" + (f" ({label})" if label else "")

    def line_index(self, offset: int) -> int:
        return max(bisect_right(self._starts, offset) - 1, 0)


def text_doc(rel: str, text: str) -> Doc:
    lines = text.splitlines(keepends=True) or [""]
    doc = Doc(rel, rel.startswith("notes/"), [(i, "", t) for i, t in enumerate(lines, 1)])
    return doc


def _json_string_lines(raw: str) -> list[tuple[int, str]]:
    """``(line, decoded string)`` for every line of a notebook file that holds one JSON string
    (an element of a ``source`` or output ``text`` list)."""
    out = []
    for number, line in enumerate(raw.splitlines(), 1):
        t = line.strip()
        if t.endswith(","):
            t = t[:-1]
        if len(t) >= 2 and t[0] == '"' and t[-1] == '"':
            try:
                out.append((number, json.loads(t)))
            except ValueError:
                pass
    return out


def _find_run(strings: list[tuple[int, str]], start: int, items: list[str]) -> int | None:
    """Index in ``strings`` (from ``start``) where ``items`` occur as consecutive entries."""
    n = len(items)
    for i in range(start, len(strings) - n + 1):
        if strings[i][1] == items[0] and all(strings[i + k][1] == items[k] for k in range(1, n)):
            return i
    return None


def _as_list(value) -> list[str]:
    if isinstance(value, str):
        return value.splitlines(keepends=True) or [value]
    return [v for v in value if isinstance(v, str)]


def notebook_doc(rel: str, raw: str) -> Doc:
    """Every cell's source and the text of its outputs (stream, text/plain, text/markdown,
    text/html), each line with its line in the ``.ipynb`` file where it can be found."""
    nb = json.loads(raw)
    strings = _json_string_lines(raw)
    doc = Doc(rel, False)
    cell_start = 0
    for k, cell in enumerate(nb.get("cells", [])):
        blocks = [
            ("source", _as_list(cell.get("source", [])), isinstance(cell.get("source"), list))
        ]
        for j, out in enumerate(cell.get("outputs", []) or []):
            if "text" in out:
                blocks.append((f"output {j}", _as_list(out["text"]), isinstance(out["text"], list)))
            for mime in ("text/plain", "text/markdown", "text/html"):
                if mime in out.get("data", {}):
                    value = out["data"][mime]
                    blocks.append((f"output {j} {mime}", _as_list(value), isinstance(value, list)))
        furthest = cell_start
        for name, items, one_per_line in blocks:
            if not items:
                continue
            at = _find_run(strings, cell_start, items) if one_per_line else None
            for i, item in enumerate(items):
                line = strings[at + i][0] if at is not None else None
                doc.add(line, f"cell {k}, {name}", item)
            if at is not None:
                furthest = max(furthest, at + len(items))
        cell_start = furthest
    doc._finish()
    return doc


def load_doc(path: Path) -> Doc:
    rel = path.relative_to(ROOT).as_posix()
    raw = path.read_text(encoding="utf-8")
    if path.suffix == ".ipynb":
        return notebook_doc(rel, raw)
    return text_doc(rel, raw)


def scanned_files() -> list[Path]:
    found = set()
    for pattern in SCAN_GLOBS:
        for path in ROOT.glob(pattern):
            if path.resolve() == THIS_FILE:
                continue
            if path.is_file() and not SKIP_PARTS.intersection(path.relative_to(ROOT).parts):
                found.add(path)
    return sorted(found)


# ---------------------------------------------------------------------------------------------
# the notes: headings, defects, tags
# ---------------------------------------------------------------------------------------------
def headings(text: str) -> list[tuple[int, str]]:
    """``(line, heading text)`` for every ATX heading outside fenced code blocks."""
    out, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.append((number, m.group(2)))
    return out


def heading_numbers(text: str) -> list[tuple[int, str]]:
    out = []
    for number, title in headings(text):
        m = HEADING_NUMBER.match(title)
        if m:
            out.append((number, m.group(1)))
    return out


@cache
def note_sections(name: str) -> frozenset[str] | None:
    """The section numbers of ``notes/<name>``, or None if it does not exist."""
    path = NOTES / name
    if not path.is_file() or NOTES.resolve() not in path.resolve().parents:
        return None
    return frozenset(n for _, n in heading_numbers(path.read_text(encoding="utf-8")))


@cache
def notes_text() -> str:
    return "\n".join(p.read_text(encoding="utf-8") for p in sorted(NOTES.glob("**/*.md")))


@cache
def defined_defects() -> frozenset[str]:
    path = NOTES / "trl.md"
    if not path.is_file():
        return frozenset()
    titles = [t for _, t in headings(path.read_text(encoding="utf-8"))]
    return frozenset(m.group(1) for t in titles for m in re.finditer(r"\bD(\d+)\b", t))


# ---------------------------------------------------------------------------------------------
# the checker
# ---------------------------------------------------------------------------------------------
def _paper_section(text: str, at: int) -> bool:
    """Whether the section sign at ``at`` follows a paper's name (same clause, up to 45
    characters back; the previous line too when the sign starts its line)."""
    line_start = text.rfind("\n", 0, at) + 1
    before = text[line_start:at]
    if not before.strip(" \t#*>-\"'(") and line_start > 0:
        before = text[text.rfind("\n", 0, line_start - 1) + 1 : at]
    before = before.split(";")[-1][-45:]
    return bool(PAPER_NAME.search(before) or PAPER_WORD.search(before))


def check_doc(doc: Doc) -> list[str]:
    """Every problem in ``doc``, as ``"file:line (cell ...): rule: text"``."""
    text, problems = doc.text, []

    def report(offset: int, rule: str, snippet: str):
        problems.append(f"{doc.where(offset)}: {rule}: {snippet.strip()!r}")

    # what cites notes the course does not ship is reported once, not also for its section number
    outside = [(rule, m) for rule, pattern in OUTSIDE for m in pattern.finditer(text)]

    def explained(offset: int) -> bool:
        return any(m.start() - 25 <= offset <= m.end() + 25 for _, m in outside)

    # 1. citations of the notes resolve
    covered = []
    for m in CITATION.finditer(text):
        covered.append(m.span())
        name = m.group("file")
        sections = note_sections(name)
        if sections is None:
            report(m.start(), f"notes/{name} does not exist ({HOW})", m.group(0))
            continue
        for s in SECTION.finditer(m.group("secs") or ""):
            for number in filter(None, s.groups()):
                if number not in sections:
                    report(
                        m.start(),
                        f"notes/{name} has no heading numbered {number} ({HOW})",
                        m.group(0),
                    )

    # 2. a bare section sign: a paper's section, or (inside the notes) one of this file's
    own = note_sections(doc.rel[len("notes/") :]) if doc.in_notes else None
    for s in SECTION.finditer(text):
        if any(a <= s.start() < b for a, b in covered) or _paper_section(text, s.start()):
            continue
        if explained(s.start()):
            continue
        if own is not None:
            for number in filter(None, s.groups()):
                if number not in own:
                    report(s.start(), f"no heading numbered {number} in this file ({HOW})", s[0])
        else:
            report(
                s.start(),
                f"a section with neither a notes file nor a paper before it ({HOW})",
                text[max(text.rfind("\n", 0, s.start()) + 1, s.start() - 40) : s.end() + 10],
            )

    # 3. nothing outside the repository, no vague "the notes"
    for rule, m in outside:
        report(m.start(), f"{rule} ({HOW})", m.group(0))
    if not doc.in_notes:
        for m in VAGUE.finditer(text):
            line = doc.pieces[doc.line_index(m.start())][2]
            if "notes/" not in line and not explained(m.start()):
                report(m.start(), f"names no notes file and section ({HOW})", m.group(0))

    # 4. tags and labels
    defined_tags = notes_text()
    for m in TAG.finditer(text):
        if f"**{m.group(0)}**" not in defined_tags:
            report(m.start(), f"the tag {m.group(0)} is not defined in the notes ({HOW})", m[0])
    for pattern, kind in ((DEFECT, "defect"), (TRAP, "trap")):
        for m in pattern.finditer(text):
            if kind == "defect" and m.group(1) not in defined_defects():
                report(m.start(), f"D{m.group(1)} is not a defect of notes/trl.md §4", m[0])
                continue
            i = doc.line_index(m.start())
            near = "".join(p[2] for p in doc.pieces[i : i + 2])
            if not CITATION.search(near):
                report(
                    m.start(),
                    f"a {kind} label needs a notes citation on its line or the next ({HOW})",
                    m.group(0),
                )
    return problems


# ---------------------------------------------------------------------------------------------
# tests
# ---------------------------------------------------------------------------------------------
def test_notes_readme_documents_the_convention():
    readme = NOTES / "README.md"
    assert readme.is_file(), "notes/README.md is missing: it documents the citation convention"
    titles = [t for _, t in headings(readme.read_text(encoding="utf-8"))]
    assert "1 How to cite these notes" in titles, titles


@pytest.mark.parametrize("path", sorted(NOTES.glob("**/*.md")), ids=lambda p: p.name)
def test_heading_numbers_are_unique_within_a_note(path):
    seen: dict[str, int] = {}
    clashes = []
    for line, number in heading_numbers(path.read_text(encoding="utf-8")):
        if number in seen:
            clashes.append(
                f"{path.relative_to(ROOT)}:{line}: §{number} also at line {seen[number]}"
            )
        seen.setdefault(number, line)
    assert not clashes, "\n".join(clashes)


@pytest.mark.parametrize("path", scanned_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_citations_resolve_inside_the_repository(path):
    problems = check_doc(load_doc(path))
    assert not problems, f"{len(problems)} bad citation(s):\n" + "\n".join(problems)


_REPO_PATH = re.compile(
    r"^(?:(?:course_lib|tests|notebooks|notes|results|benchmarks|tools|data|requirements|docs)"
    r"(?:/[\w.-]+)*/?|[\w-]+\.(?:md|toml|yml|yaml|txt|cfg))$"
)
_MODULE = re.compile(r"^course_lib(?:\.\w+)+$")


def _module_problem(dotted: str) -> str | None:
    """None if ``dotted`` (``course_lib.a.b`` or ``course_lib.a.name``) names an existing module,
    or a name that occurs in the longest existing module; else what is missing."""
    parts = dotted.split(".")
    for i in range(len(parts), 0, -1):
        base = ROOT.joinpath(*parts[:i])
        source = (
            base.with_suffix(".py") if base.with_suffix(".py").is_file() else base / "__init__.py"
        )
        if source.is_file():
            rest = parts[i:]
            if not rest:
                return None
            if re.search(rf"\b{re.escape(rest[0])}\b", source.read_text(encoding="utf-8")):
                return None
            return f"{rest[0]!r} does not occur in {source.relative_to(ROOT).as_posix()}"
    return "no such module"


@pytest.mark.parametrize("path", sorted(NOTES.glob("**/*.md")), ids=lambda p: p.name)
def test_notes_name_existing_files_and_code(path):
    """A file, folder or ``course_lib`` name in backticks, or a relative Markdown link, must
    exist in the repository: the notes must follow a renamed module."""
    problems = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        for token in re.findall(r"`([^`\s]+)`", line):
            if _REPO_PATH.match(token) and not (ROOT / token).exists():
                problems.append(f"{path.relative_to(ROOT)}:{number}: {token} does not exist")
            elif _MODULE.match(token):
                why = _module_problem(token)
                if why:
                    problems.append(f"{path.relative_to(ROOT)}:{number}: {token}: {why}")
        for target in re.findall(r"\]\(([^)\s]+)\)", line):
            if re.match(r"^[a-z]+:|^#", target):
                continue
            resolved = (path.parent / target.split("#")[0]).resolve()
            if ROOT.resolve() not in resolved.parents or not resolved.exists():
                problems.append(f"{path.relative_to(ROOT)}:{number}: link {target} leads nowhere")
    assert not problems, "\n".join(problems)


def test_the_checker_catches_each_problem():
    """Each rule fires on a made-up line, and a correct line passes. The bad strings are built at
    run time, so that this file does not contain them."""
    old = "paper" + "-notes"

    def rules(text: str, rel: str = "course_lib/x.py") -> list[str]:
        return check_doc(text_doc(rel, text))

    good = [
        "h is defined in notes/paper.md §2 (Calandriello et al. 2024, §6; NLHF §3).",
        "see notes/paper.md §3.5, §6.11 and notes/trl.md §4.1-4.2",
        "see `notes/trl.md` §4.1, Azar et al. (§5) and (paper §4-5)",
        "(notes/paper.md\n    §4.3)",
        "# wrapped in a comment: notes/paper.md\n# §4.3",
        "TRL's defect D5 (notes/trl.md §4.5)",
        "tagged [S-A] (notes/paper-tables.md §1.2)",
        "policy.notes and memory.notes are attributes, my notes.txt a file, P[R] an index",
    ]
    for text in good:
        assert rules(text) == [], (text, rules(text))
    bad = {
        f"({old} §5.1)": "does not ship",
        "see notes/paper.md §99": "no heading numbered 99",
        "see notes/paper.md §4.1-4.99": "no heading numbered 4.99",
        "see notes/paper.md §2.3, §77": "no heading numbered 77",
        "see notes/nowhere.md §1": "does not exist",
        "# §6.1: a bare section": "neither a notes file nor a paper",
        "the course's " + "TRL notes (D1)": "does not ship",
        "the course's notes (D1)": "names no notes file",
        "as the notes give it": "names no notes file",
        "(notes 2.10)": "names no notes file",
        "in ../" + "shared/x.md": "outside the repository",
        "tagged [S-Z]": "not defined",
        "marks the exact form [R]": "not defined",
        "TRL's D42 is not a defect": "not a defect",
        "defect D5 scores at the first pad": "needs a notes citation",
        "see trap 10 for why": "needs a notes citation",
    }
    for text, fragment in bad.items():
        found = rules(text)
        assert found and all(f.startswith("course_lib/x.py:1") for f in found), (text, found)
        assert any(fragment in f for f in found), (text, found)
    # inside the notes a bare section sign is the same file's
    assert rules("see §4.3", "notes/paper.md") == []
    assert any("no heading numbered 9.9" in f for f in rules("see §9.9", "notes/paper.md"))
    # a notebook reports the line of the .ipynb file and the cell
    nb = {
        "cells": [
            {"cell_type": "markdown", "metadata": {}, "source": ["# Title\n", "see " + old]},
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 5,
    }
    raw = json.dumps(nb, indent=1, ensure_ascii=False)
    line = next(i for i, t in enumerate(raw.splitlines(), 1) if old in t)
    found = check_doc(notebook_doc("notebooks/x.ipynb", raw))
    assert found and found[0].startswith(f"notebooks/x.ipynb:{line} (cell 0, source)"), found
