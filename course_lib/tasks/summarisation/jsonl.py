"""The corpus files: one JSON object per line, validated on reading, written byte-stably.

A malformed line is a ``ValueError`` naming the file, the line and the field. The committed
corpus is read from ``data/`` (:func:`course_lib.paths.data_dir`) by :func:`load_split` and
:func:`load_pairs`.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from pathlib import Path

from course_lib import paths
from course_lib.atomic import atomic_open
from course_lib.tasks.summarisation.records import (
    PAIR_SPLITS,
    QUALITIES,
    SPLITS,
    Fact,
    PreferencePair,
    Record,
    Summary,
)


def record_to_json(rec: Record) -> dict:
    """One line of a records/prompts file::

    {"id": str, "split": str, "situation": str, "subreddit": str, "title": str, "post": str,
     "facts": [{"slot": str, "value": str, "anchors": [str, ...]}, ...],
     "target_len": int, "summaries": [{"text": str, "quality": str}, ...]}
    """
    return {
        "id": rec.id,
        "split": rec.split,
        "situation": rec.situation,
        "subreddit": rec.subreddit,
        "title": rec.title,
        "post": rec.post,
        "facts": [
            {"slot": f.slot, "value": f.value, "anchors": list(f.anchors)} for f in rec.facts
        ],
        "target_len": rec.target_len,
        "summaries": [{"text": s.text, "quality": s.quality} for s in rec.summaries],
    }


PAIR_FIELDS = (
    ("id", str),
    ("record_id", str),
    ("i", int),
    ("j", int),
    ("p_bt", float),
    ("p_nt", float),
    ("label_bt", int),
    ("label_nt", int),
)


def pair_to_json(p: PreferencePair) -> dict:
    """One line of a pairs file (the texts stay in the records file, found by index)::

    {"id": str, "record_id": str, "i": int, "j": int, "p_bt": float, "p_nt": float,
     "label_bt": 0|1, "label_nt": 0|1}

    Probabilities are written rounded to 6 decimals.
    """
    d = {key: getattr(p, key) for key, _ in PAIR_FIELDS}
    d["p_bt"] = round(p.p_bt, 6)
    d["p_nt"] = round(p.p_nt, 6)
    return d


class _Where:
    """File and line for error messages."""

    def __init__(self, path: str, line: int):
        self.path, self.line = path, line

    def fail(self, field: str, msg: str):
        raise ValueError(f"{self.path}:{self.line}: field {field!r}: {msg}")

    def get(self, obj: dict, key: str, typ, prefix: str = ""):
        name = prefix + key
        if not isinstance(obj, dict):
            self.fail(prefix.rstrip(".") or "<line>", f"expected an object, got {obj!r:.60}")
        if key not in obj:
            self.fail(name, "missing")
        value = obj[key]
        ok = isinstance(value, typ) and not (typ is int and isinstance(value, bool))
        if typ is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            tname = typ.__name__ if isinstance(typ, type) else "/".join(t.__name__ for t in typ)
            self.fail(name, f"expected {tname}, got {type(value).__name__} {value!r:.60}")
        return value


def record_from_json(obj: dict, where: _Where) -> Record:
    g = where.get
    facts = []
    for k, f in enumerate(g(obj, "facts", list)):
        pre = f"facts[{k}]."
        anchors = g(f, "anchors", list, pre)
        if not anchors or not all(isinstance(a, str) and a for a in anchors):
            where.fail(pre + "anchors", f"expected a non-empty list of strings, got {anchors!r}")
        slot = g(f, "slot", str, pre)
        facts.append(Fact(slot, g(f, "value", str, pre), tuple(anchors)))
    summaries = []
    for k, s in enumerate(g(obj, "summaries", list)):
        pre = f"summaries[{k}]."
        quality = g(s, "quality", str, pre)
        if quality not in QUALITIES:
            where.fail(pre + "quality", f"{quality!r} is not one of {', '.join(QUALITIES)}")
        summaries.append(Summary(g(s, "text", str, pre), quality))
    target = g(obj, "target_len", int)
    if target < 1:
        where.fail("target_len", f"must be >= 1, got {target}")
    return Record(
        id=g(obj, "id", str),
        split=g(obj, "split", str),
        situation=g(obj, "situation", str),
        subreddit=g(obj, "subreddit", str),
        title=g(obj, "title", str),
        post=g(obj, "post", str),
        facts=tuple(facts),
        target_len=target,
        summaries=tuple(summaries),
    )


def pair_from_json(obj: dict, where: _Where, records: dict[str, Record]) -> PreferencePair:
    g = where.get
    values = {key: g(obj, key, typ) for key, typ in PAIR_FIELDS}
    rec = records.get(values["record_id"])
    if rec is None:
        where.fail("record_id", f"no record {values['record_id']!r} in the records given")
    for key in ("i", "j"):
        if not 0 <= values[key] < len(rec.summaries):
            where.fail(key, f"index {values[key]} outside 0..{len(rec.summaries) - 1}")
    if values["i"] == values["j"]:
        where.fail("j", f"must differ from i (both {values['i']})")
    a, b = rec.summaries[values["i"]], rec.summaries[values["j"]]
    values.update(y=a.text, y_prime=b.text, quality_y=a.quality, quality_y_prime=b.quality)
    for key in ("p_bt", "p_nt"):
        if not 0.0 <= values[key] <= 1.0:
            where.fail(key, f"must be a probability in [0, 1], got {values[key]}")
        values[key] = float(values[key])
    for key in ("label_bt", "label_nt"):
        if values[key] not in (0, 1):
            where.fail(key, f"must be 0 or 1, got {values[key]}")
    return PreferencePair(**values)


def _iter_json_lines(path: Path) -> Iterator[tuple[dict, _Where]]:
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            where = _Where(str(path), lineno)
            if not line.strip():
                where.fail("<line>", "empty line")
            try:
                obj = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{lineno}: field '<line>': not valid JSON ({e})") from e
            yield obj, where


def read_records(path: str | Path) -> list[Record]:
    """Read a records/prompts JSONL file; a bad line is a ValueError naming file:line:field."""
    return [record_from_json(obj, w) for obj, w in _iter_json_lines(Path(path))]


def read_pairs(path: str | Path, records: Iterable[Record]) -> list[PreferencePair]:
    """Read a pairs JSONL file, taking the texts from ``records`` (those the pairs point into).

    A malformed line is a ValueError naming file:line:field.
    """
    by_id = {r.id: r for r in records}
    return [pair_from_json(obj, w, by_id) for obj, w in _iter_json_lines(Path(path))]


def _dumps(obj: dict) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"))


def write_jsonl(path: str | Path, rows: Iterable[dict]) -> None:
    """One compact JSON object per line, UTF-8, ``\\n`` line ends (byte-stable).

    Written atomically: a temporary file beside ``path`` is renamed over it once complete.
    """
    with atomic_open(path, "w", newline="\n") as fh:
        for row in rows:
            fh.write(_dumps(row) + "\n")


# -- loading the committed corpus --------------------------------------------------------------


def load_split(split: str, data_dir: str | Path | None = None) -> list[Record]:
    """The committed records of ``split`` (``pretrain``, ``train``, ``valid`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    return read_records(Path(data_dir or paths.data_dir()) / SPLITS[split][0])


def load_pairs(split: str, data_dir: str | Path | None = None) -> list[PreferencePair]:
    """The committed labelled pairs of ``split`` (``train``, ``valid`` or ``test``)."""
    if split not in PAIR_SPLITS:
        raise ValueError(f"unknown pair split {split!r}; valid: {', '.join(PAIR_SPLITS)}")
    fname, source, _ = PAIR_SPLITS[split]
    records = load_split(source, data_dir)
    return read_pairs(Path(data_dir or paths.data_dir()) / fname, records)
