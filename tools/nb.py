"""Author and execute the course notebooks.

    python tools/nb.py build SRC.py notebooks/NN_name.ipynb   # percent script -> executed notebook
    python tools/nb.py run notebooks/NN_name.ipynb            # re-execute a notebook in place
    python tools/nb.py to-py notebooks/NN_name.ipynb SRC.py   # notebook -> percent script to edit

A percent script splits cells on lines ``# %%`` (code) and ``# %% [markdown]`` (markdown; each
line of the cell starts with ``# ``). Notebooks are executed top to bottom in a fresh ``python3``
kernel with ``COURSE_PROFILE=cpu`` unless ``--profile`` says otherwise, then saved with their
outputs, without widget state, and with machine paths replaced, as the course conventions ask.
"""

from __future__ import annotations

import argparse
import os
import re
import sys
import time
from pathlib import Path

import nbformat

from course_lib.atomic import atomic_write_text

ROOT = Path(__file__).resolve().parent.parent
KERNELSPEC = {"name": "python3", "display_name": "Python 3", "language": "python"}


def parse_percent(text: str) -> list:
    cells = []
    kind, lines = None, []

    def flush():
        if kind is None:
            return
        body = "\n".join(lines).strip("\n")
        if kind == "markdown":
            body = "\n".join(re.sub(r"^# ?", "", ln) for ln in body.splitlines())
            cells.append(nbformat.v4.new_markdown_cell(body))
        elif body.strip():
            cells.append(nbformat.v4.new_code_cell(body))

    for line in text.splitlines():
        if line.startswith("# %%"):
            flush()
            kind = "markdown" if "[markdown]" in line else "code"
            lines = []
        else:
            lines.append(line)
    flush()
    return cells


def to_percent(nb) -> str:
    parts = []
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            body = "\n".join(("# " + ln).rstrip() for ln in cell.source.splitlines())
            parts.append("# %% [markdown]\n" + body)
        else:
            parts.append("# %%\n" + cell.source)
    return "\n\n".join(parts) + "\n"


def scrub(nb) -> None:
    """Drop widget state and machine-specific paths from a notebook's outputs."""
    nb.metadata.pop("widgets", None)
    nb.metadata["kernelspec"] = dict(KERNELSPEC)
    replacements = [(str(ROOT), "<repo>"), (str(Path.home()), "~"), (sys.prefix, "<venv>")]
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
        for out in cell.get("outputs", []):
            if "text" in out:
                for old, new in replacements:
                    out["text"] = out["text"].replace(old, new)
            for key, value in out.get("data", {}).items():
                if isinstance(value, str) and not key.startswith("image/"):
                    for old, new in replacements:
                        value = value.replace(old, new)
                    out["data"][key] = value
            out.get("data", {}).pop("application/vnd.jupyter.widget-view+json", None)


def execute(nb, profile: str, timeout: int) -> float:
    from nbclient import NotebookClient

    os.environ["COURSE_PROFILE"] = profile
    os.environ.setdefault("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    start = time.perf_counter()
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(ROOT / "notebooks")}},
    )
    client.execute()
    return time.perf_counter() - start


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build")
    b.add_argument("src")
    b.add_argument("dst")
    r = sub.add_parser("run")
    r.add_argument("notebooks", nargs="+")
    t = sub.add_parser("to-py")
    t.add_argument("src")
    t.add_argument("dst")
    for p in (b, r):
        p.add_argument("--profile", default="cpu")
        p.add_argument("--timeout", type=int, default=1800, help="per cell, seconds")
        p.add_argument("--no-execute", action="store_true")
    args = parser.parse_args(argv)

    if args.cmd == "to-py":
        atomic_write_text(args.dst, to_percent(nbformat.read(args.src, as_version=4)))
        return 0
    jobs = []
    if args.cmd == "build":
        nb = nbformat.v4.new_notebook()
        nb.cells = parse_percent(Path(args.src).read_text())
        jobs.append((nb, Path(args.dst)))
    else:
        jobs = [(nbformat.read(p, as_version=4), Path(p)) for p in args.notebooks]
    for nb, dst in jobs:
        nb.metadata["kernelspec"] = dict(KERNELSPEC)
        nb.metadata["language_info"] = {"name": "python"}
        if not args.no_execute:
            seconds = execute(nb, args.profile, args.timeout)
            print(f"{dst}: executed in {seconds:.1f} s (profile {args.profile})")
        scrub(nb)
        nbformat.validate(nb)
        atomic_write_text(dst, nbformat.writes(nb) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
