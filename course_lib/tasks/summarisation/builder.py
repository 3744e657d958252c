"""Building the corpus files: ``python -m course_lib.tasks.summarisation build --out DIR``.

Files written (schema in ``data/README.md`` and in :func:`~.jsonl.record_to_json` /
:func:`~.jsonl.pair_to_json`):

* ``records_pretrain.jsonl`` -- records with all their summaries (tiny-policy pre-training,
  and the posts of the training preference pairs);
* ``prompts_train.jsonl`` -- records for online training (same schema; only the reference
  summary is kept, since the online learner writes its own);
* ``prompts_valid.jsonl``, ``prompts_test.jsonl`` -- records for evaluation, every summary kept
  so that win rates against the reference and against every quality can be computed;
* ``pairs_train.jsonl``, ``pairs_valid.jsonl``, ``pairs_test.jsonl`` -- labelled preference pairs:
  two summaries (by index) of one record of ``records_pretrain``, ``prompts_valid`` or
  ``prompts_test``, the oracle's P in both modes, and labels drawn from it;
* ``tokenizer/`` -- the word-level tokenizer (:mod:`course_lib.tasks.tokenizer`);
* ``manifest.json`` and ``CHECKSUMS.sha256``.

Where the build may write (:func:`check_build_dir`). ``--out`` may be a new or empty folder (it
is then marked as the build's with :data:`course_lib.atomic.MARKER`), or the output of an earlier
build, recognised by its own ``manifest.json`` (whose ``command`` is the build's) and
``CHECKSUMS.sha256`` (which lists only files the build writes). The committed ``data/`` is such a
folder, with no marker, beside files the build does not write (``README.md``, the trained models):
the build rewrites exactly the files of :func:`build_files` that ``CHECKSUMS.sha256`` lists (and
creates those missing), and leaves every other file alone; it deletes nothing. Any other folder
is refused before anything is generated. Each file is written atomically (a temporary file
renamed over it), ``CHECKSUMS.sha256`` last: a killed build leaves every file whole, old or new,
and ``verify`` names those that no longer match.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from course_lib.atomic import (
    OutputDirError,
    atomic_write_text,
    check_output_dir,
    claim_output_dir,
)
from course_lib.paths import sha256_file
from course_lib.tasks.summarisation.generation import generate_split, make_pairs
from course_lib.tasks.summarisation.jsonl import pair_to_json, record_to_json, write_jsonl
from course_lib.tasks.summarisation.records import (
    DEFAULT_SEED,
    PAIR_SPLITS,
    REFERENCE_ONLY,
    SCHEMA_VERSION,
    SPLITS,
    PreferencePair,
    Record,
    Summary,
)
from course_lib.tasks.tokenizer import TOKENIZER_FILES, build_tokenizer, save_tokenizer

#: What marks an output folder as the build's (the manifest's ``command`` starts with it).
BUILD_COMMAND = "python -m course_lib.tasks.summarisation build"
_BUILD_INDEX = ("manifest.json", "CHECKSUMS.sha256")  # the build's own index of its files


def build_files(tokenizer: bool = True) -> list[str]:
    """The paths, relative to ``--out``, that :func:`build` writes, and the only ones it touches."""
    files = [f for f, _ in SPLITS.values()] + [f for f, _, _ in PAIR_SPLITS.values()]
    if tokenizer:
        files += [f"tokenizer/{f}" for f in TOKENIZER_FILES]
    return [*files, *_BUILD_INDEX]


def read_checksums(path: str | Path) -> dict[str, str]:
    """``{relative path: sha256}`` from a ``sha256sum`` file; a malformed line is a ValueError
    naming the file and the line."""
    path = Path(path)
    sums: dict[str, str] = {}
    for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        parts = line.split(maxsplit=1)
        digest = parts[0].lower() if parts else ""
        if len(parts) != 2 or len(digest) != 64 or set(digest) - set("0123456789abcdef"):
            raise ValueError(
                f"{path}:{lineno}: expected '<sha256 in 64 hex digits>  <file>', got {line!r:.80}"
            )
        sums[parts[1].strip()] = digest
    return sums


def _is_build_manifest(path: Path) -> bool:
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and str(manifest.get("command", "")).startswith(
        BUILD_COMMAND + " "
    )


def check_build_dir(out: str | Path, tokenizer: bool = True) -> bool:
    """Check, creating nothing, that :func:`build` may write into ``out`` (module docstring).

    Returns True when ``out`` holds an earlier build's output (recognised by its ``manifest.json``
    and ``CHECKSUMS.sha256``: the listed files are rewritten in place, every other file is left
    alone), False when ``out`` is new, empty or marked by an earlier build (it is claimed with
    :func:`~course_lib.atomic.claim_output_dir` just before the first write). Otherwise raises
    :class:`~course_lib.atomic.OutputDirError`, naming the folder and the file in the way.
    """
    out = Path(out)
    if not _is_build_manifest(out / "manifest.json"):
        check_output_dir(out, BUILD_COMMAND)  # new, empty or marked; else refused
        return False
    try:
        listed = read_checksums(out / "CHECKSUMS.sha256")
    except (OSError, ValueError) as exc:
        raise OutputDirError(
            f"--out {out} holds a build's manifest.json but no readable CHECKSUMS.sha256 "
            f"({exc}); without it the build cannot tell its own files from "
            "others, so nothing is written. Restore it (e.g. `git checkout data/CHECKSUMS.sha256`) "
            "or give a new or empty folder"
        ) from None
    own = set(build_files(tokenizer=True))
    foreign = sorted(set(listed) - own)
    if foreign:
        raise OutputDirError(
            f"--out {out}: its CHECKSUMS.sha256 lists {foreign[0]}, which the build does not "
            "write, so the folder is not (only) the build's output; give a new or empty folder"
        )
    if (out / "tokenizer").exists() and not (out / "tokenizer").is_dir():
        raise OutputDirError(
            f"--out {out}: {out / 'tokenizer'} is a file; the build needs a folder"
        )
    for rel in build_files(tokenizer):
        path = out / rel
        if not (path.exists() or path.is_symlink()):
            continue  # created by the build
        if path.is_symlink() or not path.is_file():
            raise OutputDirError(
                f"--out {out}: {path} is not a plain file, so it is not the build's; move it away "
                "or give a new or empty folder"
            )
        if rel not in listed and rel not in _BUILD_INDEX:
            raise OutputDirError(
                f"--out {out}: {path} is there but CHECKSUMS.sha256 does not list it, so it may "
                "not be the build's; move it away or give a new or empty folder"
            )
    if not os.access(out, os.W_OK):
        raise OutputDirError(f"--out {out}: cannot write in {out} (permission denied)")
    return True


def build(
    out: str | Path,
    seed: int = DEFAULT_SEED,
    sizes: dict[str, int] | None = None,
    tokenizer: bool = True,
) -> dict[str, str]:
    """Write every corpus file into ``out``; return {relative path: sha256}.

    ``sizes`` overrides the number of records per split (defaults in ``SPLITS``). Also writes
    ``manifest.json`` and ``CHECKSUMS.sha256`` (``sha256sum -c`` format, sorted by path).
    ``out`` must be new, empty, or an earlier build's output (:func:`check_build_dir`, checked
    before anything is generated); only the files of :func:`build_files` are written, each
    atomically, ``CHECKSUMS.sha256`` last.
    """
    out = Path(out)
    sizes = {name: n for name, (_, n) in SPLITS.items()} | dict(sizes or {})
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; valid splits are: {list(SPLITS)}")
    owned = check_build_dir(out, tokenizer)
    # Everything is computed before the first write, so a failure leaves the folder as it was.
    records = {name: generate_split(name, sizes[name], seed) for name in SPLITS}
    pairs = {
        name: make_pairs(records[source], per, name, seed)
        for name, (_, source, per) in PAIR_SPLITS.items()
    }
    tok = None
    if tokenizer:
        tok = build_tokenizer(t for name in SPLITS for r in records[name] for t in _record_texts(r))
    if not owned:
        claim_output_dir(out, BUILD_COMMAND)
    files = _write_corpus(out, records, pairs, tok)
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "records": {name: sizes[name] for name in SPLITS},
        "pairs": {name: len(pairs[name]) for name in PAIR_SPLITS},
        "command": f"{BUILD_COMMAND} --out data/",
    }
    atomic_write_text(out / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    files.append("manifest.json")
    sums = {f: sha256_file(out / f) for f in sorted(files)}
    atomic_write_text(out / "CHECKSUMS.sha256", "".join(f"{h}  {f}\n" for f, h in sums.items()))
    return sums


def _write_corpus(
    out: Path, records: dict[str, list[Record]], pairs: dict[str, list[PreferencePair]], tok
) -> list[str]:
    """The records, pairs and tokenizer files (each atomically); returns their relative paths."""
    files: list[str] = []
    for name, (fname, _) in SPLITS.items():
        rows = records[name]
        if name in REFERENCE_ONLY:
            rows = [_reference_only(r) for r in rows]
        write_jsonl(out / fname, (record_to_json(r) for r in rows))
        files.append(fname)
    for name, (fname, _, _) in PAIR_SPLITS.items():
        write_jsonl(out / fname, (pair_to_json(p) for p in pairs[name]))
        files.append(fname)
    if tok is not None:
        files += [f"tokenizer/{f}" for f in save_tokenizer(tok, out / "tokenizer")]
    return files


def _reference_only(rec: Record) -> Record:
    return Record(**{**rec.__dict__, "summaries": (Summary(rec.reference, "reference"),)})


def _record_texts(rec: Record) -> list[str]:
    return [rec.post, *(s.text for s in rec.summaries)]


def verify(data_dir: str | Path) -> list[str]:
    """Paths whose sha256 differs from ``CHECKSUMS.sha256`` (empty when all match)."""
    data_dir = Path(data_dir)
    if not (data_dir / "CHECKSUMS.sha256").is_file():
        raise FileNotFoundError(
            f"no CHECKSUMS.sha256 in {data_dir}: give the folder the build wrote (default data/)"
        )
    return [
        name
        for name, digest in read_checksums(data_dir / "CHECKSUMS.sha256").items()
        if not (data_dir / name).is_file() or sha256_file(data_dir / name) != digest
    ]
