"""Where the repository's folders are, and the one file hash the course uses.

The course runs from a checkout: ``course_lib/`` sits at the repository root beside ``data/``
(the committed corpus, tokenizer and trained models) and ``results/`` (the committed runs).
Every default path of the course is built from :func:`repo_root`, so there is one anchor.
"""

from __future__ import annotations

import hashlib
from pathlib import Path


def repo_root() -> Path:
    """The repository root: the folder that holds the ``course_lib`` package."""
    return Path(__file__).resolve().parents[1]


def data_dir() -> Path:
    """``data/`` at the repository root: the corpus, the tokenizer and the committed models."""
    return repo_root() / "data"


def results_dir() -> Path:
    """``results/`` at the repository root: the committed runs of the experiments."""
    return repo_root() / "results"


def sha256_file(path: str | Path, chunk: int = 1 << 22) -> str:
    """The SHA-256 of a file's bytes, in hex (what ``sha256sum`` prints), read in chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()
