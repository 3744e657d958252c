"""The synthetic TL;DR summarisation corpus: records, summaries of mixed quality, JSONL files.

A *record* is a short first-person Reddit-style post asking for advice, generated from a
structured situation (:mod:`course_lib.tasks.world`): who it is about, what happened, the one
detail that matters, and the question; plus distractor sentences (other people, places,
amounts) and on-topic but inessential sentences, so that a good summary has to select. Each
record carries summaries of every quality the tiny reference policy should learn to write:

==============  ===================================================================================
quality         how it is written
==============  ===================================================================================
``reference``   all four key facts, about the target length, well formed (the corpus reference)
``good``        the same, with another phrasing
``missing``     one or two key facts left out
``unfaithful``  a key detail or the person swapped for one that is *not* in the post
``too_long``    a good summary followed by off-topic sentences copied from the post
``too_short``   two to four words ("Landlord drama.")
``malformed``   a good summary truncated, stuttering, or wrapped in markup
``lead``        the first sentences of the post (the "lead" baseline of news summarisation)
==============  ===================================================================================

Everything is deterministic from ``seed``: record ``i`` of split ``s`` is drawn by its own
``random.Random(f"tldr-synth:{seed}:{s}:{i}")`` (string seeds hash with SHA-512, independent of
``PYTHONHASHSEED``), so a prefix of a split is the same whatever its size.

Files written by ``python -m course_lib.tasks.summarisation build --out data/`` (schema in
``data/README.md`` and in :func:`record_to_json` / :func:`pair_to_json`):

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
"""

from __future__ import annotations

import argparse
import hashlib
import json
import random
import sys
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from course_lib.tasks import world
from course_lib.tasks.oracle import Oracle, entities
from course_lib.tasks.text import sentences, words

QUALITIES = (
    "reference",
    "good",
    "missing",
    "unfaithful",
    "too_long",
    "too_short",
    "malformed",
    "lead",
)
SLOTS = ("other", "issue", "detail", "question")
TARGET_LEN = 15  # words; the good summaries have 9 to 21
SPLITS = {  # name -> (file, default number of records)
    "pretrain": ("records_pretrain.jsonl", 1600),
    "train": ("prompts_train.jsonl", 1000),
    "valid": ("prompts_valid.jsonl", 200),
    "test": ("prompts_test.jsonl", 500),
}
PAIR_SPLITS = {  # pair split -> (file, record split it draws from, pairs per record)
    "train": ("pairs_train.jsonl", "pretrain", 5),
    "valid": ("pairs_valid.jsonl", "valid", 2),
    "test": ("pairs_test.jsonl", "test", 2),
}
REFERENCE_ONLY = ("train",)  # splits whose file keeps only the reference summary
DEFAULT_SEED = 0
SCHEMA_VERSION = 1


# -- data classes ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Fact:
    """A key fact: its slot, its value in the post, and the anchor phrases that state it."""

    slot: str
    value: str
    anchors: tuple[str, ...]


@dataclass(frozen=True)
class Summary:
    text: str
    quality: str


@dataclass(frozen=True)
class Record:
    """One post with its key facts and summaries (see the module docstring)."""

    id: str
    split: str
    situation: str
    subreddit: str
    title: str
    post: str
    facts: tuple[Fact, ...]
    target_len: int
    summaries: tuple[Summary, ...]

    @property
    def reference(self) -> str:
        """The reference summary (quality ``"reference"``)."""
        for s in self.summaries:
            if s.quality == "reference":
                return s.text
        raise ValueError(f"record {self.id} has no reference summary")

    def summary(self, quality: str) -> str:
        for s in self.summaries:
            if s.quality == quality:
                return s.text
        raise ValueError(f"record {self.id} has no summary of quality {quality!r}")

    def tldr_prompt(self) -> str:
        """The post in the TL;DR prompt format of TRL's ``trl-lib/tldr`` (for the real track)."""
        return format_tldr_prompt(self.subreddit, self.title, self.post)


def format_tldr_prompt(subreddit: str, title: str, post: str) -> str:
    """``SUBREDDIT: r/... TITLE: ... POST: ... TL;DR:`` with blank lines, as in trl-lib/tldr."""
    return f"SUBREDDIT: r/{subreddit}\n\nTITLE: {title}\n\nPOST: {post}\n\nTL;DR:"


@dataclass(frozen=True)
class PreferencePair:
    """Two summaries of one record, the oracle's P(y > y') in both modes, and sampled labels.

    ``y`` and ``y_prime`` are ``record.summaries[i]`` and ``record.summaries[j]``. ``label_bt`` /
    ``label_nt`` are 1 when y was preferred: ``1[u < p]`` with one uniform ``u`` per pair shared
    by both modes (so the two labels differ only where the modes disagree).
    """

    id: str
    record_id: str
    i: int
    j: int
    y: str
    y_prime: str
    quality_y: str
    quality_y_prime: str
    p_bt: float
    p_nt: float
    label_bt: int
    label_nt: int


# -- generation --------------------------------------------------------------------------------


def _pronouns(gender: str) -> dict[str, str]:
    if gender == "m":
        return {"he": "he", "He": "He", "him": "him", "his": "his", "His": "His"}
    return {"he": "she", "He": "She", "him": "her", "his": "her", "His": "Her"}


def _cap(s: str) -> str:
    return s[:1].upper() + s[1:]


def _pick_other(rng: random.Random, pool: Iterable[str], exclude: set[str]) -> str:
    options = [v for v in pool if v not in exclude]
    return rng.choice(options)


def _record_rng(seed: int, split: str, index: int) -> random.Random:
    return random.Random(f"tldr-synth:{seed}:{split}:{index}")


def generate_record(seed: int, split: str, index: int) -> Record:
    """Record ``index`` of ``split``: deterministic from (seed, split, index) alone."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    rng = _record_rng(seed, split, index)
    sit = rng.choice(world.SITUATIONS)
    other = rng.choice(sit.others)
    gender = world.GENDERED.get(other) or rng.choice("mf")
    pro = _pronouns(gender)
    detail = rng.choice(world.DETAIL_LEXICONS[sit.detail_kind])
    age = rng.randint(19, 45)
    g = rng.choice("MF")
    slots = {"other": other, "detail": detail, **pro, "age": age, "g": g}

    problem = rng.choice(sit.post_problem).format(**slots)
    extras = [e.format(**slots) for e in rng.sample(sit.post_extra, rng.randint(1, 2))]
    question = rng.choice(sit.post_question).format(**slots)
    intro = rng.choice(world.INTROS).format(**slots)
    feeling = rng.choice(world.FEELINGS)

    # Distractors: entities of the same kinds as the key facts, never equal to them.
    used = {other, detail}
    dist_slots = {
        "city": _pick_other(rng, world.CITIES, used),
        "job": rng.choice(world.JOBS),
        "relation": _pick_other(rng, world.SIDE_RELATIONS, used),
        "pet": rng.choice(world.PETS),
        "amount": _pick_other(rng, world.AMOUNTS, used),
        "duration": _pick_other(rng, world.DURATIONS, used),
    }
    distractors = [d.format(**dist_slots) for d in rng.sample(world.DISTRACTORS, rng.randint(2, 3))]
    body = [problem, *extras, feeling]
    for d in distractors:  # insert off-topic sentences anywhere in the body
        body.insert(rng.randint(0, len(body)), d)
    post = " ".join([intro, *body, question])
    title = rng.choice(sit.titles)

    facts = (
        Fact("other", other, (other,)),
        Fact("issue", _first_anchor(sit.issue_anchors, problem), sit.issue_anchors),
        Fact("detail", detail, (detail,)),
        Fact("question", _first_anchor(sit.question_anchors, question), sit.question_anchors),
    )
    rec = Record(
        id=f"{split}-{index:05d}",
        split=split,
        situation=sit.name,
        subreddit=sit.subreddit,
        title=title,
        post=post,
        facts=facts,
        target_len=TARGET_LEN,
        summaries=(),
    )
    summaries = _write_summaries(rng, sit, rec, slots, distractors, extras)
    return Record(**{**rec.__dict__, "summaries": summaries})


def _first_anchor(anchors: tuple[str, ...], text: str) -> str:
    low = text.lower()
    for a in anchors:
        if a.lower() in low:
            return a
    raise AssertionError(f"no anchor of {anchors} in {text!r}")  # a template bug


def _compose(rng: random.Random, sit: world.Situation, slots: dict, keep: set[str]) -> str:
    """A summary stating the facts in ``keep`` (a subset of SLOTS), in one of three layouts."""
    if "issue" in keep:
        pool = sit.sum_full if "detail" in keep else sit.sum_nodetail
    else:
        pool = sit.sum_vague if "detail" in keep else sit.sum_vague_nodetail
    pred = rng.choice(pool).format(**slots)
    if "other" in keep:
        subject = f"my {slots['other']}"
    else:  # "He of 3 years ..." is not English; "my partner" names nobody in particular
        subject = "my partner" if pred.startswith("of ") else slots["he"]
    clause = f"{subject} {pred}"
    if "question" not in keep:
        return _cap(clause) + "."
    q = rng.choice(sit.sum_question).format(**slots)
    layout = rng.randrange(3)
    if layout == 0:
        return f"{_cap(clause)}, {q}"
    if layout == 1:
        return f"{_cap(clause)}. {_cap(q)}"
    return f"{_cap(q)} {_cap(clause)}."


def _write_summaries(rng, sit, rec: Record, slots, distractors, extras) -> tuple[Summary, ...]:
    full = set(SLOTS)
    reference = _compose(rng, sit, slots, full)
    good = reference
    for _ in range(10):  # another phrasing when one exists
        good = _compose(rng, sit, slots, full)
        if good != reference:
            break
    # missing: drop one fact (2/3) or two (1/3)
    n_drop = 1 if rng.random() < 2 / 3 else 2
    dropped = set(rng.sample(SLOTS, n_drop))
    missing = _compose(rng, sit, slots, full - dropped)
    # unfaithful: swap the detail (or the person) for a value the post does not contain
    in_post = entities(rec.post) | entities(rec.title)
    if rng.random() < 0.6:
        pool = world.DETAIL_LEXICONS[sit.detail_kind]
        fake = _pick_other(rng, pool, {v for v in pool if entities(v) <= in_post})
        unfaithful = _compose(rng, sit, {**slots, "detail": fake}, full)
    else:
        fake = _pick_other(
            rng, world.RELATIONS, {r for r in world.RELATIONS if entities(r) <= in_post}
        )
        fake_pro = _pronouns(world.GENDERED.get(fake) or _gender(slots))
        unfaithful = _compose(rng, sit, {**slots, **fake_pro, "other": fake}, full)
    # too long: a good summary, then off-topic and inessential sentences from the post
    extra = rng.sample([*distractors, *extras], min(3, len(distractors) + len(extras)))
    too_long = " ".join([_compose(rng, sit, slots, full), *extra])
    too_short = rng.choice(sit.short).format(**slots)
    malformed = _malform(rng, _compose(rng, sit, slots, full))
    lead_parts: list[str] = []
    for s in sentences(rec.post):
        lead_parts.append(s)
        if len(words(" ".join(lead_parts))) >= 25:
            break
    lead = " ".join(lead_parts)
    texts = (reference, good, missing, unfaithful, too_long, too_short, malformed, lead)
    return tuple(Summary(t, q) for t, q in zip(texts, QUALITIES, strict=True))


def _gender(slots: dict) -> str:
    return "m" if slots["he"] == "he" else "f"


def _malform(rng: random.Random, text: str) -> str:
    """Truncate mid-sentence, stutter, or wrap in markup without end punctuation."""
    kind = rng.randrange(3)
    toks = text.split(" ")
    if kind == 0:
        cut = max(2, int(len(toks) * rng.uniform(0.4, 0.7)))
        return " ".join(toks[:cut]).rstrip(",.?!")
    if kind == 1:
        out: list[str] = []
        stutter = set(rng.sample(range(len(toks)), min(3, len(toks))))
        for i, t in enumerate(toks):
            out.append(t)
            if i in stutter:
                out.append(t)
        return " ".join(out)
    return "TL;DR: " + text.lower().rstrip(".?!")


def generate_split(split: str, n: int, seed: int = DEFAULT_SEED) -> list[Record]:
    """The first ``n`` records of ``split``."""
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    return [generate_record(seed, split, i) for i in range(n)]


def make_pairs(
    records: list[Record], pairs_per_record: int, name: str, seed: int = DEFAULT_SEED
) -> list[PreferencePair]:
    """``pairs_per_record`` pairs of distinct summaries per record, labelled by the oracle."""
    bt, nt = Oracle("bt"), Oracle("nt")
    out: list[PreferencePair] = []
    for rec in records:
        rng = random.Random(f"tldr-pairs:{seed}:{name}:{rec.id}")
        n_sum = len(rec.summaries)
        all_pairs = [(i, j) for i in range(n_sum) for j in range(n_sum) if i != j]
        chosen = rng.sample(all_pairs, min(pairs_per_record, len(all_pairs)))
        for k, (i, j) in enumerate(chosen):
            a, b = rec.summaries[i], rec.summaries[j]
            p_bt = bt.prob(rec, a.text, b.text)
            p_nt = nt.prob(rec, a.text, b.text)
            u = rng.random()
            out.append(
                PreferencePair(
                    id=f"pair-{rec.id}-{k}",
                    record_id=rec.id,
                    i=i,
                    j=j,
                    y=a.text,
                    y_prime=b.text,
                    quality_y=a.quality,
                    quality_y_prime=b.quality,
                    p_bt=p_bt,
                    p_nt=p_nt,
                    label_bt=int(u < p_bt),
                    label_nt=int(u < p_nt),
                )
            )
    return out


# -- JSON (de)serialisation with validation ----------------------------------------------------


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
    """One compact JSON object per line, UTF-8, ``\\n`` line ends (byte-stable)."""
    with open(path, "w", encoding="utf-8", newline="\n") as fh:
        for row in rows:
            fh.write(_dumps(row) + "\n")


# -- loading the committed corpus --------------------------------------------------------------


def default_data_dir() -> Path:
    """``data/`` at the repository root (next to the ``course_lib`` package)."""
    return Path(__file__).resolve().parents[2] / "data"


def load_split(split: str, data_dir: str | Path | None = None) -> list[Record]:
    """The committed records of ``split`` (``pretrain``, ``train``, ``valid`` or ``test``)."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are: {', '.join(SPLITS)}")
    return read_records(Path(data_dir or default_data_dir()) / SPLITS[split][0])


def load_pairs(split: str, data_dir: str | Path | None = None) -> list[PreferencePair]:
    """The committed labelled pairs of ``split`` (``train``, ``valid`` or ``test``)."""
    if split not in PAIR_SPLITS:
        raise ValueError(f"unknown pair split {split!r}; valid: {', '.join(PAIR_SPLITS)}")
    fname, source, _ = PAIR_SPLITS[split]
    records = load_split(source, data_dir)
    return read_pairs(Path(data_dir or default_data_dir()) / fname, records)


# -- build -------------------------------------------------------------------------------------


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def build(
    out: str | Path,
    seed: int = DEFAULT_SEED,
    sizes: dict[str, int] | None = None,
    tokenizer: bool = True,
) -> dict[str, str]:
    """Write every corpus file into ``out``; return {relative path: sha256}.

    ``sizes`` overrides the number of records per split (defaults in ``SPLITS``). Also writes
    ``manifest.json`` and ``CHECKSUMS.sha256`` (``sha256sum -c`` format, sorted by path).
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    sizes = {name: n for name, (_, n) in SPLITS.items()} | dict(sizes or {})
    unknown = set(sizes) - set(SPLITS)
    if unknown:
        raise ValueError(f"unknown splits {sorted(unknown)}; valid splits are: {list(SPLITS)}")
    records = {name: generate_split(name, sizes[name], seed) for name in SPLITS}
    files: list[str] = []
    for name, (fname, _) in SPLITS.items():
        rows = records[name]
        if name in REFERENCE_ONLY:
            rows = [_reference_only(r) for r in rows]
        write_jsonl(out / fname, (record_to_json(r) for r in rows))
        files.append(fname)
    for name, (fname, source, per) in PAIR_SPLITS.items():
        pairs = make_pairs(records[source], per, name, seed)
        write_jsonl(out / fname, (pair_to_json(p) for p in pairs))
        files.append(fname)
    if tokenizer:
        from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

        texts = [t for name in SPLITS for r in records[name] for t in _record_texts(r)]
        files += [
            f"tokenizer/{f}" for f in save_tokenizer(build_tokenizer(texts), out / "tokenizer")
        ]
    manifest = {
        "schema_version": SCHEMA_VERSION,
        "seed": seed,
        "records": {name: sizes[name] for name in SPLITS},
        "pairs": {
            name: sum(1 for _ in open(out / f, encoding="utf-8"))
            for name, (f, _, _) in PAIR_SPLITS.items()
        },
        "command": "python -m course_lib.tasks.summarisation build --out data/",
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True) + "\n")
    files.append("manifest.json")
    sums = {f: sha256_file(out / f) for f in sorted(files)}
    with open(out / "CHECKSUMS.sha256", "w", encoding="utf-8", newline="\n") as fh:
        for f, h in sums.items():
            fh.write(f"{h}  {f}\n")
    return sums


def _reference_only(rec: Record) -> Record:
    return Record(**{**rec.__dict__, "summaries": (Summary(rec.reference, "reference"),)})


def _record_texts(rec: Record) -> list[str]:
    return [rec.post, *(s.text for s in rec.summaries)]


def verify(data_dir: str | Path) -> list[str]:
    """Paths whose sha256 differs from ``CHECKSUMS.sha256`` (empty when all match)."""
    data_dir = Path(data_dir)
    bad = []
    for line in (data_dir / "CHECKSUMS.sha256").read_text(encoding="utf-8").splitlines():
        digest, name = line.split(maxsplit=1)
        path = data_dir / name.strip()
        if not path.is_file() or sha256_file(path) != digest:
            bad.append(name.strip())
    return bad


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tasks.summarisation")
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="regenerate the corpus files (byte for byte)")
    b.add_argument("--out", default="data/")
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    v = sub.add_parser("verify", help="check the files against CHECKSUMS.sha256")
    v.add_argument("--out", default="data/")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        t0 = time.perf_counter()
        sums = build(args.out, seed=args.seed)
        print(f"wrote {len(sums)} files to {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    bad = verify(args.out)
    print("all files match CHECKSUMS.sha256" if not bad else f"differ: {', '.join(bad)}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
