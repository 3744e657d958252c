"""Build the course's website into site/_build/html (``make site``; see site/README.md).

Two steps, both offline:

1. stage the sources into ``site/_build/src``: README.md becomes the home page (the course map
   with its minutes, the results) with the navigation in course order; each notebook, as committed
   (outputs included, never executed), gets a box under its title with links to its student
   edition and to its source; notes/*.md, docs/*.md (the instructor's guide, when present) and
   one page per folder of results/ (its README, Markdown tables, figures and files) follow;
2. run Sphinx with MyST-NB and the book theme (``site/conf.py``), MathJax served by the site.

Where the two links of a notebook point is configurable (environment variables, or make
variables of the same name):

* ``SITE_STUDENT_URL`` (default ``student/{name}.ipynb``): the student edition. A path relative
  to the site's root is filled by the build with the student edition of the notebook: the one
  ``make student`` wrote into ``SITE_STUDENT_DIR`` (default ``build/student``) when it is there,
  otherwise one written now with ``course_lib.editions.student_edition``. A URL (``https://...``)
  is used as it is, with ``{name}`` replaced by the notebook's name (``02_nash_equilibrium``).
* ``SITE_SOURCE_URL`` (default ``source/notebooks/{name}.ipynb``): the notebook as committed,
  copied into the site at that path; or a URL, e.g. the notebook's page in the repository's host.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import re
import shutil
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SITE = ROOT / "site"
BUILD = SITE / "_build"
STAGE = BUILD / "src"
HTML = BUILD / "html"

DEFAULT_STUDENT_URL = "student/{name}.ipynb"
DEFAULT_SOURCE_URL = "source/notebooks/{name}.ipynb"
DEFAULT_STUDENT_DIR = "build/student"
MATHJAX_ENTRY = "tex-chtml.js"
MATHJAX_PARTS = ["input", "output/chtml", "adaptors", "ui", "a11y", "sre"]

# The course's parts, for the navigation: (caption, first notebook number, last).
PARTS = [
    ("Start here", 0, 0),
    ("Theory: preferences to IPO-MD", 1, 6),
    ("Language models", 7, 99),
]

_LINK = re.compile(r"(\]\()([^)\s]+)(\))")
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_NOTEBOOK = re.compile(r"^(\d\d)_[\w-]+$")


# ---------------------------------------------------------------------------------------------
# small helpers
# ---------------------------------------------------------------------------------------------
class Stage:
    """Writes into the staging folder only what changed (so Sphinx rebuilds only those pages),
    and removes what an earlier build staged and this one did not."""

    def __init__(self, root: Path):
        self.root = root
        self.written: set[Path] = set()

    def write_bytes(self, rel: str, data: bytes) -> Path:
        path = self.root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
        self.written.add(path)
        return path

    def write_text(self, rel: str, text: str) -> Path:
        return self.write_bytes(rel, text.encode("utf-8"))

    def copy(self, src: Path, rel: str) -> Path:
        return self.write_bytes(rel, src.read_bytes())

    def copy_tree(self, src: Path, rel: str) -> None:
        for path in sorted(src.rglob("*")):
            if path.is_file() and "__pycache__" not in path.parts:
                self.copy(path, f"{rel}/{path.relative_to(src).as_posix()}")

    def prune(self) -> None:
        for path in sorted(self.root.rglob("*"), reverse=True):
            if path.is_file() and path not in self.written:
                path.unlink()
            elif path.is_dir() and not any(path.iterdir()):
                path.rmdir()


def is_url(target: str) -> bool:
    return bool(_SCHEME.match(target)) or target.startswith("/")


def site_href(template: str, name: str, page_dir: str) -> str:
    """The href, on a page in ``page_dir`` (relative to the site's root), of ``template`` filled
    with ``name``: a URL as it is, a site-relative path made relative to the page."""
    target = template.format(name=name)
    if is_url(target):
        return target
    return os.path.relpath(target, page_dir or ".").replace(os.sep, "/")


def title_of(markdown: str, fallback: str) -> str:
    for line in markdown.splitlines():
        if line.startswith("# "):
            return line[2:].strip()
    return fallback


def demote_headings(markdown: str, levels: int) -> str:
    """Every ATX heading ``levels`` deeper (outside fenced code)."""
    out, fence = [], None
    for line in markdown.splitlines():
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            fence = None if fence and stripped.startswith(fence) else (fence or stripped[:3])
        if fence is None and re.match(r"#{1,6} ", line):
            line = "#" * levels + line
        out.append(line)
    return "\n".join(out) + "\n"


_LIST_START = re.compile(r"^ {0,3}(?:[-+*]|\d{1,9}[.)])(?:\s|$)")


def _math_open_after(line: str, open_: str) -> str:
    """Which math (``""``, ``"$"`` or ``"$$"``) is still open after ``line``, given the one open
    before it; code spans and escaped dollars are skipped."""
    i = 0
    while i < len(line):
        c = line[i]
        if c == "\\":
            i += 2
            continue
        if c == "`" and not open_:
            j = len(line) - len(line[i:].lstrip("`"))
            ticks = line[i:j]
            end = line.find(ticks, j)
            i = (end + len(ticks)) if end >= 0 else len(line)
            continue
        if c == "$":
            token = "$$" if line.startswith("$$", i) else "$"
            if not open_:
                open_ = token
            elif open_ == token:
                open_ = ""
            i += len(token)
            continue
        i += 1
    return open_


def mend_math_lines(markdown: str) -> str:
    """Join a line that starts like a list item (``+ x``, ``- y``, ``1. z``) to the line before
    when it continues an open ``$...$`` or ``$$...$$``: a Markdown renderer reads such a line as
    a new list, which splits the equation and leaves its TeX on the page (Jupyter renders the
    math first, so the committed notebooks look right there). Fenced code is left alone."""
    out: list[str] = []
    open_, fence = "", None
    for line in markdown.split("\n"):
        stripped = line.lstrip()
        if fence is None and stripped.startswith(("```", "~~~")) and not open_:
            fence = stripped[:3]
            out.append(line)
            continue
        if fence is not None:
            if stripped.startswith(fence):
                fence = None
            out.append(line)
            continue
        if not line.strip():
            open_ = ""  # a blank line ends a paragraph, and any math in it
        elif open_ and out and _LIST_START.match(line):
            out[-1] = out[-1].rstrip() + " " + stripped
            open_ = _math_open_after(line, open_)
            continue
        open_ = _math_open_after(line, open_)
        out.append(line)
    return "\n".join(out)


def breakable_names(readme: str) -> str:
    """The course map's notebook names (``05_online_ipo_is_nash_md``) may wrap after an
    underscore, so that a long name does not widen its column (``<wbr>``, no visible change)."""
    return re.sub(
        r"\[(\d\d_[\w-]+)\]\((notebooks/)",
        lambda m: "[" + m.group(1).replace("_", "_<wbr>") + "](" + m.group(2),
        readme,
    )


def course_map(readme: str) -> dict[str, list[tuple[str, str]]]:
    """``{notebook name: [(column header, value), ...]}`` for the README's course map columns
    whose header speaks of minutes."""
    rows: dict[str, list[tuple[str, str]]] = {}
    header: list[str] | None = None
    for line in readme.splitlines():
        if not line.startswith("|"):
            header = None
            continue
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if header is None:
            header = cells
            continue
        m = re.match(r"\[(\d\d_[\w-]+)\]\(notebooks/", cells[0])
        if m:
            rows[m.group(1)] = [
                (h, v) for h, v in zip(header, cells, strict=False) if "minute" in h.lower()
            ]
    return rows


# ---------------------------------------------------------------------------------------------
# links between the staged pages
# ---------------------------------------------------------------------------------------------
def rewrite_links(markdown: str, doc_dir: str, stage: Stage, pages: set[str]) -> str:
    """Relative links of a Markdown file that lives in ``doc_dir`` (repository-relative), made to
    work on the site: a folder with a staged page (``results/tiny-cpu/``) links to that page; a
    file of the repository that is not a page (``report.json``) is staged beside it so that it
    is served as a download; pages and URLs are kept."""

    def fix(m: re.Match) -> str:
        target = m.group(2)
        if is_url(target) or target.startswith("#"):
            return m.group(0)
        path, _, frag = target.partition("#")
        rel = os.path.normpath(os.path.join(doc_dir, path)).replace(os.sep, "/")
        if rel.startswith("../"):
            return m.group(0)
        if path.endswith("/") or (ROOT / rel).is_dir():
            index = f"{rel}/index.md"
            if index in pages:
                new = os.path.relpath(index, doc_dir or ".").replace(os.sep, "/")
                return f"{m.group(1)}{new}{'#' + frag if frag else ''}{m.group(3)}"
            return m.group(0)
        if rel not in pages and (ROOT / rel).is_file() and not rel.endswith((".md", ".ipynb")):
            stage.copy(ROOT / rel, rel)
        return m.group(0)

    return _LINK.sub(fix, markdown)


# ---------------------------------------------------------------------------------------------
# the notebooks
# ---------------------------------------------------------------------------------------------
def links_box(name: str, student_href: str | None, source_href: str, minutes) -> str:
    student = (
        f'<a class="site-student reference external" href="{student_href}">Student edition</a>'
        " (exercises to fill in, solutions removed)"
        if student_href
        else "Student edition: not built here (run <code>make student</code>)"
    )
    parts = [
        student,
        f'<a class="site-source reference external" href="{source_href}">Source notebook</a>'
        " (solutions and the committed outputs)",
    ]
    if minutes:
        times = ", ".join(f"{value} {header}" for header, value in minutes)
        parts.append(
            f'<a class="site-map reference internal" href="../index.html#the-course-map">'
            f"Course map</a>: {times}"
        )
    items = "\n".join(f"<li>{p}</li>" for p in parts)
    return (
        f'<div class="site-links admonition tip" data-notebook="{name}">\n'
        '<p class="admonition-title">This notebook</p>\n'
        f"<ul>\n{items}\n</ul>\n</div>\n"
    )


def stage_notebook(path: Path, stage: Stage, box: str) -> None:
    """The committed notebook, with ``box`` under the title of its first markdown cell (the
    objectives follow it); every other cell and output as committed."""
    nb = json.loads(path.read_text(encoding="utf-8"))
    for cell in nb.get("cells", []):
        if cell.get("cell_type") != "markdown":
            continue
        src = cell["source"]
        text = "".join(src) if isinstance(src, list) else src
        lines = text.splitlines(keepends=True)
        at = next((i + 1 for i, line in enumerate(lines) if line.startswith("# ")), 0)
        head, rest = "".join(lines[:at]), "".join(lines[at:])
        cell["source"] = f"{head.rstrip()}\n\n{box}\n{rest.lstrip()}" if head else f"{box}\n{text}"
        break
    for cell in nb.get("cells", []):
        if cell.get("cell_type") == "markdown":
            src = cell["source"]
            cell["source"] = mend_math_lines("".join(src) if isinstance(src, list) else src)
    nb.setdefault("metadata", {}).pop("widgets", None)
    stage.write_text(f"notebooks/{path.name}", json.dumps(nb, indent=1, ensure_ascii=False))


def student_edition(student_dir: Path, names: list[str]) -> Path | None:
    """The folder holding the student edition of every notebook: ``student_dir`` when ``make
    student`` filled it, else one written now by ``course_lib.editions``; None when neither."""
    if all((student_dir / f"{n}.ipynb").is_file() for n in names):
        return student_dir
    out = BUILD / "student"
    try:
        sys.path.insert(0, str(ROOT))
        from course_lib.editions import student_edition as write_edition

        write_edition(ROOT / "notebooks", out)
    except Exception as err:  # the site still builds; the box says how to get the edition
        print(f"site: no student edition ({type(err).__name__}: {err})", file=sys.stderr)
        return None
    finally:
        sys.path.remove(str(ROOT))
    return out


# ---------------------------------------------------------------------------------------------
# the other pages
# ---------------------------------------------------------------------------------------------
def toctree(caption: str, entries: list[str]) -> str:
    body = "\n".join(entries)
    return f"```{{toctree}}\n:caption: {caption}\n:hidden:\n\n{body}\n```\n"


def stage_results(stage: Stage, pages: set[str]) -> list[str]:
    """One page per folder of results/: its README, its Markdown tables, its figures, its files.
    Returns the staged page names (without suffix)."""
    results = ROOT / "results"
    runs = sorted(p for p in results.iterdir() if p.is_dir() and p.name != "runs")
    names = []
    for run in runs:
        files = sorted(  # not the course's hidden markers (.course_lib_output.json)
            p for p in run.rglob("*") if p.is_file() and not p.name.startswith(".")
        )
        readme = run / "README.md"
        text = readme.read_text(encoding="utf-8") if readme.is_file() else ""
        title = title_of(text, f"results/{run.name}")
        body = "\n".join(line for line in text.splitlines() if not line.startswith("# "))
        out = [f"# {title}\n", f"*Folder `results/{run.name}/` of the repository.*\n", body]
        tables = [p for p in files if p.suffix == ".md" and p != readme]
        if tables:
            out.append("\n## Tables\n")
            for p in tables:
                out.append(f"### `{p.name}`\n\n" + demote_headings(p.read_text("utf-8"), 3))
        figures = [p for p in files if p.suffix.lower() in (".png", ".svg", ".jpg", ".jpeg")]
        if figures:
            out.append("\n## Figures\n")
            for p in figures:
                rel = p.relative_to(run).as_posix()
                out.append(f"```{{figure}} {rel}\n:alt: {rel}\n\n`{rel}`\n```\n")
        out.append("\n## Files\n")
        for p in files:
            rel = p.relative_to(run).as_posix()
            if p.suffix != ".md":
                stage.copy(p, f"results/{run.name}/{rel}")
            size = p.stat().st_size
            out.append(f"* {{download}}`{rel} <{rel}>` ({size:,} bytes)")
            if p.suffix == ".md":
                stage.copy(p, f"results/{run.name}/_files/{rel}")
                out[-1] = f"* {{download}}`{rel} <_files/{rel}>` ({size:,} bytes)"
        page = f"results/{run.name}/index"
        stage.write_text(f"{page}.md", "\n".join(out) + "\n")
        pages.add(f"{page}.md")
        names.append(page)
    listing = "\n".join(f"{n.split('/')[1]}/index" for n in names)
    stage.write_text(
        "results/index.md",
        "# Results, folder by folder\n\nWhat the course's experiments wrote to `results/`: "
        "how each run was made, its tables, its figures and its files. The home page reads "
        "the main ones against the paper.\n\n"
        f"```{{toctree}}\n:maxdepth: 1\n\n{listing}\n```\n",
    )
    pages.add("results/index.md")
    return names


def notes_order(readme: str, names: list[str]) -> list[str]:
    """notes/README.md first, then the notes in the order it names them, then the rest."""
    mentioned = [m for m in re.findall(r"notes/([\w.-]+)\.md", readme) if m in names]
    order = ["README"] if "README" in names else []
    for n in mentioned + sorted(names):
        if n not in order:
            order.append(n)
    return order


def stage_mathjax(stage: Stage) -> None:
    """MathJax 3's TeX-to-CommonHTML component with what it loads (TeX extensions, fonts, the
    menu and its accessibility parts), from the sphinx-mathjax-offline package."""
    spec = importlib.util.find_spec("sphinx-mathjax-offline")
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit("site: sphinx-mathjax-offline is not installed (make site installs it)")
    src = Path(next(iter(spec.submodule_search_locations))) / "static" / "mathjax"
    stage.copy(src / MATHJAX_ENTRY, f"_static/mathjax/{MATHJAX_ENTRY}")
    for part in MATHJAX_PARTS:
        stage.copy_tree(src / part, f"_static/mathjax/{part}")


def stage_all(stage: Stage, student_url: str, source_url: str, student_dir: Path) -> dict:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    notebooks = sorted(p for p in (ROOT / "notebooks").glob("*.ipynb") if _NOTEBOOK.match(p.stem))
    names = [p.stem for p in notebooks]
    notes = sorted((ROOT / "notes").glob("*.md"))
    docs = sorted((ROOT / "docs").glob("*.md")) if (ROOT / "docs").is_dir() else []

    pages = {"index.md"} | {f"notebooks/{p.name}" for p in notebooks}
    pages |= {f"notes/{p.name}" for p in notes} | {f"docs/{p.name}" for p in docs}
    stage_results(stage, pages)

    # the notebooks, their student edition and their source
    minutes = course_map(readme)
    student_from = None if is_url(student_url) else student_edition(student_dir, names)
    for path in notebooks:
        name = path.stem
        student_href = site_href(student_url, name, "notebooks")
        if student_from is not None:
            stage.copy(student_from / path.name, f"_extra/{student_url.format(name=name)}")
        elif not is_url(student_url):
            student_href = None
        if not is_url(source_url):
            stage.copy(path, f"_extra/{source_url.format(name=name)}")
        box = links_box(
            name, student_href, site_href(source_url, name, "notebooks"), minutes.get(name)
        )
        stage_notebook(path, stage, box)

    # notes and docs, as they are (links made to work on the site)
    for path in notes + docs:
        rel = path.relative_to(ROOT).as_posix()
        text = mend_math_lines(path.read_text(encoding="utf-8"))
        text = rewrite_links(text, path.parent.name, stage, pages)
        stage.write_text(rel, text)

    # the home page: the README, then the navigation in course order
    trees = []
    for caption, first, last in PARTS:
        part = [f"notebooks/{n}" for n in names if first <= int(n[:2]) <= last]
        if part:
            trees.append(toctree(caption, part))
    trees.append(toctree("Results", ["results/index"]))
    order = notes_order((ROOT / "notes" / "README.md").read_text("utf-8"), [p.stem for p in notes])
    trees.append(toctree("Notes", [f"notes/{n}" for n in order]))
    if docs:
        trees.append(toctree("For instructors", [f"docs/{p.stem}" for p in docs]))
    home = rewrite_links(mend_math_lines(breakable_names(readme)), "", stage, pages)
    stage.write_text("index.md", home.rstrip() + "\n\n" + "\n".join(trees))

    # assets: MathJax from its package, the site's own CSS and icon
    stage_mathjax(stage)
    stage.copy_tree(SITE / "static", "_static")
    (stage.root / "_extra").mkdir(parents=True, exist_ok=True)
    stage.written.add(stage.root / "_extra")
    return {"notebooks": len(notebooks), "notes": len(notes), "docs": len(docs)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=HTML, help="the HTML folder (%(default)s)")
    parser.add_argument("--jobs", default="1", help="Sphinx's parallel jobs (a number or auto)")
    parser.add_argument("--clean", action="store_true", help="read every source again")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    student_url = os.environ.get("SITE_STUDENT_URL") or DEFAULT_STUDENT_URL
    source_url = os.environ.get("SITE_SOURCE_URL") or DEFAULT_SOURCE_URL
    student_dir = ROOT / (os.environ.get("SITE_STUDENT_DIR") or DEFAULT_STUDENT_DIR)
    if args.clean:  # read every source again (otherwise Sphinx reads only what changed)
        shutil.rmtree(BUILD / "doctrees", ignore_errors=True)
    # the pages are always written anew: a renamed notebook leaves no page behind
    shutil.rmtree(args.out, ignore_errors=True)
    stage = Stage(STAGE)
    counts = stage_all(stage, student_url, source_url, student_dir)
    stage.prune()
    staged = time.perf_counter() - start

    from sphinx.cmd.build import build_main

    os.environ["SITE_STAGE"] = str(STAGE)
    code = build_main(
        [
            "-b",
            "html",
            "-q",
            "-j",
            str(args.jobs),
            "-c",
            str(SITE),
            "-d",
            str(BUILD / "doctrees"),
            str(STAGE),
            str(args.out),
        ]
    )
    total = time.perf_counter() - start
    print(
        f"site: {counts['notebooks']} notebooks, {counts['notes']} notes, {counts['docs']} docs "
        f"-> {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out} "
        f"(staged in {staged:.1f} s, built in {total:.1f} s)"
    )
    return code


if __name__ == "__main__":
    sys.exit(main())
