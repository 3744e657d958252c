"""No tracked file names a machine it was made on, or a package index host.

Every text file that git tracks (source, docs, notebooks, data, locks, CI scripts) is scanned:

* machine paths: a home folder (root's, one under ``/home`` or ``/Users``, a Windows user
  folder), the build machine's work folder, or a temporary path that names a real file or folder
  under ``/tmp``. Such a path means nothing on a learner's machine and leaks the author's;
* package index hosts (PyPI's own hosts, or an ``--index-url``/``--extra-index-url`` pointing at
  PyPI): the learner's own pip configuration chooses the default index, the course never
  overrides it. The PyTorch index a learner may choose (download.pytorch.org) is not a package
  index host of this kind and may appear in examples.

The patterns below are built so that this file does not match itself (e.g. an alternation
between the slashes). Binary files (a NUL byte, or not UTF-8) and the base64 images of notebook
outputs are skipped. Outside a git checkout (a source archive) the scan is skipped.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent

_START = r"(?<![\w.~-])"  # a path starts here, not inside a URL or a longer word
MACHINE_PATHS = [
    ("a home folder", re.compile(_START + r"/(?:root|Users)/")),
    ("a home folder", re.compile(_START + r"/home/[A-Za-z_][\w.-]*")),
    ("a home folder", re.compile(r"\b[A-Za-z]:(?:\\+|/)(?:Users|Documents and Settings)\b")),
    ("the build machine's work folder", re.compile(_START + r"/(?:work)/")),
    # /tmp followed by a name: pytest's tmp_path, mkdtemp, ipykernel, pip build folders, ...
    ("a temporary path", re.compile(_START + r"/(?:tmp|var/folders)/[\w.-]")),
]
INDEX_HOSTS = [
    (
        "a package index host",
        re.compile(r"\b(?:[\w-]+\.)*(?:pypi\.org|pypi\.python\.org|pythonhosted\.org)\b", re.I),
    ),
    ("an index option pointing at PyPI", re.compile(r"--(?:extra-)?index-url[ =]+\S*pypi", re.I)),
]
RULES = MACHINE_PATHS + INDEX_HOSTS


def problems_in_text(text: str, suffix: str = "") -> list[tuple[int, str, str]]:
    """``(line number, rule, the matched text)`` for each hit in ``text``.

    In a notebook (``suffix == ".ipynb"``) the lines holding output images are skipped: they are
    base64, where any short pattern eventually occurs by chance.
    """
    hits = []
    for lineno, line in enumerate(text.splitlines(), start=1):
        if suffix == ".ipynb" and re.match(r'\s*"image/[\w.+-]+":', line):
            continue
        for rule, pattern in RULES:
            for m in pattern.finditer(line):
                hits.append((lineno, rule, m.group(0)))
    return hits


def tracked_files() -> list[Path]:
    """The files git tracks, or a skip where this is not a git checkout (or git is missing)."""
    git = shutil.which("git")
    if git is None:
        pytest.skip("git is not installed: the tracked files are unknown")
    out = subprocess.run(
        [git, "-C", str(ROOT), "ls-files", "-z"], capture_output=True, timeout=60, check=False
    )
    if out.returncode != 0:
        pytest.skip(f"{ROOT} is not a git checkout")
    return [ROOT / name for name in out.stdout.decode("utf-8").split("\0") if name]


def read_text_or_none(path: Path) -> str | None:
    """The file's text, or None for a binary file (NUL byte, not UTF-8) or one that is missing
    (deleted in the work tree but not yet in git)."""
    try:
        data = path.read_bytes()
    except (FileNotFoundError, IsADirectoryError):
        return None
    if b"\0" in data[:8192]:
        return None
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def test_no_tracked_file_names_a_machine_path_or_a_package_index_host():
    files = tracked_files()
    assert any(p.name == "README.md" for p in files)  # the listing is the repository's
    found = []
    for path in files:
        text = read_text_or_none(path)
        if text is None:
            continue
        for lineno, rule, match in problems_in_text(text, path.suffix):
            found.append(f"{path.relative_to(ROOT)}:{lineno}: {rule}: {match!r}")
    assert not found, "\n".join(["machine paths or package index hosts in tracked files:", *found])


@pytest.mark.parametrize(
    "text, rule",
    [
        ("see " + "/root" + "/.cache/x", "a home folder"),
        ("cd " + "/home" + "/alice/course", "a home folder"),
        ('"' + "/Users" + '/bob/notes"', "a home folder"),
        ("C:" + "\\\\" + "Users" + "\\\\carol", "a home folder"),
        ("open('" + "/work" + "/main/data')", "the build machine's work folder"),
        ("File " + "/tmp" + "/ipykernel_4242/123.py", "a temporary path"),
        ("saved to " + "/tmp" + "/pytest-of-root/x", "a temporary path"),
        ("https://" + "pypi" + ".org/simple", "a package index host"),
        ("files." + "pythonhosted" + ".org/packages", "a package index host"),
        ("https://test." + "pypi" + ".org/simple/", "a package index host"),
        ("--extra-index-url " + "https://mirror.example/" + "pypi" + "/simple", "an index option"),
    ],
)
def test_the_checker_catches_each_rule(text, rule):
    """Each rule can fail (the patterns are assembled in pieces so this file stays clean)."""
    hits = problems_in_text(text)
    assert hits and any(h[1].startswith(rule) for h in hits), hits


@pytest.mark.parametrize(
    "text",
    [
        "make lab TORCH_INDEX=https://download.pytorch.org/whl/cpu",  # the learner's choice
        # a URL, not a machine path (split so that no line of this file names the folder)
        "https://github.com/huggingface/trl/blob/main/" + "wo" + "rk/x.py",
        "the package is on PyPI",  # the name of the index, not its host
        "tempfile.TemporaryDirectory() gives a folder under /tmp",  # no file named
        "home/alice without a leading slash, ~/notes, $HOME/.cache",
    ],
)
def test_the_checker_leaves_generic_text_alone(text):
    assert problems_in_text(text) == []


def test_notebook_image_lines_are_skipped_but_other_lines_are_not():
    image = '      "image/png": "iVBORw0KGgo' + "/tmp" + '/xyz",'
    text = "\n".join([image, '      "text/plain": "' + "/home" + '/alice/out.png"'])
    assert [h[0] for h in problems_in_text(text, ".ipynb")] == [2]
