"""Writing a folder so that a crash never leaves a half-written one that looks complete."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block ends without an error it
    takes ``target``'s place by renames, else it is removed and ``target`` is left as it was.

    The previous ``target`` is first renamed to ``<target>.old`` and deleted only once the new
    folder is in place, so at every moment one complete copy exists under one of the two names
    (readers such as :meth:`course_lib.online.OnlineTrainer.load_checkpoint` look at both).
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        yield tmp
        old = target.with_name(target.name + ".old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
