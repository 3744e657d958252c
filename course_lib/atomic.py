"""Writing files and folders: a crash never leaves half of one, and no user's file is lost.

Three rules, for every command and function of the course that writes:

1. A file is written to a temporary name beside it, flushed and fsynced, then renamed over the
   target (:func:`atomic_write_text`, :func:`atomic_write_bytes`, :func:`atomic_open`). A killed
   process leaves the old file or the new one, never a mixture.
2. A folder the course owns outright (a checkpoint, a converted model, a trained preference model)
   is built in a temporary folder and renamed into place (:func:`atomic_dir`); its files are
   fsynced before the rename.
3. An output folder a user names (``--out DIR``) is never emptied or replaced. It is used only when
   it does not exist, is empty, or carries the course's marker file (:data:`MARKER`) from an earlier
   run of the same command; otherwise :func:`check_output_dir` refuses it, naming the folder and
   what is allowed. Files in it are written one by one, atomically; files the course did not write
   are left alone.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

#: The file that marks a folder as written by a course command (JSON: which command).
MARKER = ".course_lib_output.json"


class OutputDirError(ValueError):
    """An output folder cannot be used without touching files the course did not write."""


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make a rename inside ``folder`` durable (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


@contextlib.contextmanager
def atomic_open(path: str | Path, mode: str = "w", **kwargs) -> Iterator:
    """Open a temporary file beside ``path`` for writing; on a clean exit it is flushed, fsynced
    and renamed over ``path``. On an error it is removed and ``path`` is untouched.

    ``mode`` is ``"w"`` (text; ``kwargs`` go to :func:`open`, e.g. ``newline=""``) or ``"wb"``.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"mode={mode!r} is invalid: 'w' or 'wb'")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if "b" not in mode:
        kwargs.setdefault("encoding", "utf-8")
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}-", suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it owner-only; give the usual mode
        with os.fdopen(fd, mode, **kwargs) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    _fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str, newline: str | None = "\n") -> Path:
    """Write ``text`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "w", newline=newline) as handle:
        handle.write(text)
    return Path(path)


def atomic_write_bytes(path: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically (see :func:`atomic_open`)."""
    with atomic_open(path, "wb") as handle:
        handle.write(data)
    return Path(path)


def atomic_write_json(path: str | Path, obj, indent: int | None = 1, **kwargs) -> Path:
    """``json.dumps(obj)`` plus a newline, written atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=indent, **kwargs) + "\n")


def fsync_tree(folder: str | Path) -> None:
    """fsync every file under ``folder`` and the folders themselves (before a rename publishes)."""
    folder = Path(folder)
    for root, _dirs, files in os.walk(folder):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        _fsync_dir(Path(root))


@contextlib.contextmanager
def atomic_dir(target: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``target``; when the block ends without an error its files
    are fsynced and it takes ``target``'s place by renames, else it is removed and ``target`` is
    left as it was.

    Only for folders the course owns outright (checkpoints, converted models, trained preference
    models): the previous ``target`` is replaced whole. The previous ``target`` is first renamed to
    ``<target>.old`` and deleted only once the new folder is in place, so at every moment one
    complete copy exists under one of the two names (readers such as
    :func:`course_lib.online.checkpoint.load_checkpoint` look at both). A process killed inside
    the block leaves a ``.<name>-*`` temporary folder: :func:`remove_stale_temporaries` clears it.
    """
    target = Path(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}-", dir=target.parent))
    try:
        os.chmod(tmp, 0o777 & ~_umask())  # mkdtemp makes it owner-only; give the usual mode
        yield tmp
        fsync_tree(tmp)
        old = target.with_name(target.name + ".old")
        if target.exists():
            shutil.rmtree(old, ignore_errors=True)
            os.replace(target, old)
        os.replace(tmp, target)
        _fsync_dir(target.parent)
        shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def remove_stale_temporaries(folder: str | Path, name: str) -> list[Path]:
    """Remove what a killed :func:`atomic_dir` or :func:`atomic_open` of ``folder / name`` left:
    temporaries named ``.<name>-*`` (only those; they hold nothing that was ever published)."""
    folder = Path(folder)
    if not folder.is_dir():
        return []
    stale = [p for p in folder.glob(f".{name}-*") if p.name != f".{name}"]
    for path in stale:
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    return stale


# ---------------------------------------------------------------------------------------------
# Output folders named by a user
# ---------------------------------------------------------------------------------------------


def _marker_command(folder: Path) -> str | None:
    try:
        return json.loads((folder / MARKER).read_text())["command"]
    except (OSError, ValueError, KeyError, TypeError):
        return None


def check_output_dir(folder: str | Path, command: str) -> Path:
    """Check, without creating anything, that ``command`` may write into ``folder``.

    Allowed: a folder that does not exist yet (its nearest existing parent must be a folder), an
    empty folder, or one that holds :data:`MARKER` from an earlier run of the same ``command``.
    Refused, with :class:`OutputDirError` naming the folder: a path that is a file or lies under a
    file, and a non-empty folder the course did not write (it would mix with, or overwrite, files
    that are not the course's). Call it before any slow work, so a bad ``--out`` fails at once.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise OutputDirError(
            f"--out {folder} is a file; give a folder (new, empty, or one written by "
            f"`{command}` before)"
        )
    parent = folder
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise OutputDirError(
            f"--out {folder} lies under {parent}, which is a file, not a folder; give a folder path"
        )
    if folder.is_dir():
        owner = _marker_command(folder)
        if owner is None and any(folder.iterdir()):
            raise OutputDirError(
                f"--out {folder} already holds files that this course did not write (no "
                f"{MARKER}); to keep them safe nothing is written there. Give a new or empty "
                "folder"
            )
        if owner is not None and owner != command:
            raise OutputDirError(
                f"--out {folder} holds the output of `{owner}`, not of `{command}`; give another "
                "folder"
            )
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"--out {folder}: cannot write in {parent} (permission denied)")
    return folder


def claim_output_dir(folder: str | Path, command: str) -> Path:
    """Check ``folder`` (:func:`check_output_dir`), create it if needed, mark it ``command``'s.

    Call it when the first result is about to be written, so that a run that fails before then
    leaves no empty folder behind.
    """
    folder = check_output_dir(folder, command)
    folder.mkdir(parents=True, exist_ok=True)
    if _marker_command(folder) is None:
        atomic_write_json(folder / MARKER, {"command": command})
    return folder


# ---------------------------------------------------------------------------------------------
# Folders the course replaces whole (a trained model saved where a user asked)
# ---------------------------------------------------------------------------------------------


def read_json_object(path: Path) -> dict | None:
    """The JSON object in ``path``, or None when it is missing, unreadable or not an object."""
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return obj if isinstance(obj, dict) else None


def check_replaceable_dir(
    folder: str | Path, names: Iterable[str], is_own: Callable[[Path], bool], what: str
) -> Path:
    """Check, creating nothing, that ``folder`` may be replaced whole by a new ``what``
    (:func:`atomic_dir`, which deletes the previous folder and ``<folder>.old``).

    Stricter than :func:`check_output_dir`, since nothing survives the replacement: allowed are a
    new folder, an empty one, or one that is the course's own, recognised by its files -- every
    entry a plain file named in ``names``, and ``is_own(folder)`` true (the course's own config or
    log in it, as in the committed ``data/preference_model_bt`` or ``data/tiny_policy``). Anything
    else is refused, naming the entry in the way; a marker file does not suffice, as a file added
    later beside it would be deleted. ``<folder>.old`` (left by a run killed between two renames)
    must be absent, empty or the course's own too.
    """
    folder = Path(folder)
    names = set(names)
    old = folder.with_name(folder.name + ".old")
    if old.is_symlink() or (old.exists() and not old.is_dir()):
        raise OutputDirError(
            f"--out {folder}: {old} is in the way (saving would delete it); move it away or "
            "give another folder"
        )
    for path in (folder, old):
        if path.is_dir() and any(path.iterdir()):
            _check_own_folder(folder, path, names, is_own, what)
    if not (folder.is_dir() and any(folder.iterdir())):
        check_output_dir(folder, what)  # a file, a path under a file, no permission: refused
    parent = folder.parent
    while not parent.exists():
        parent = parent.parent
    if not os.access(parent, os.W_OK):
        raise OutputDirError(f"--out {folder}: cannot write in {parent} (permission denied)")
    return folder


def _check_own_folder(
    folder: Path, path: Path, names: set[str], is_own: Callable[[Path], bool], what: str
) -> None:
    """Refuse ``path`` (``folder`` or its ``.old``) unless it holds only the course's files."""
    foreign = sorted(
        p.name for p in path.iterdir() if p.name not in names or p.is_symlink() or not p.is_file()
    )
    if foreign:
        raise OutputDirError(
            f"--out {folder}: {path / foreign[0]} is not a file that {what} writes, and "
            "saving replaces the folder whole, so nothing is written. Give a new or empty "
            "folder, or move that away"
        )
    if not is_own(path):
        raise OutputDirError(
            f"--out {folder}: {path} holds files that {what} writes but does not look like "
            f"the course's own {what} (replacing it would delete them); give a new or empty "
            "folder"
        )
