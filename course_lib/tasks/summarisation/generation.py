"""Generating the corpus: records from the situations of :mod:`course_lib.tasks.world`, their
summaries of every quality, and pairs of summaries labelled by the oracle.

Everything is deterministic from ``seed``: record ``i`` of split ``s`` is drawn by its own
``random.Random(f"tldr-synth:{seed}:{s}:{i}")`` (string seeds hash with SHA-512, independent of
``PYTHONHASHSEED``), so a prefix of a split is the same whatever its size.
"""

from __future__ import annotations

import random
from collections.abc import Iterable

from course_lib.tasks import world
from course_lib.tasks.oracle import Oracle, entities
from course_lib.tasks.summarisation.records import (
    DEFAULT_SEED,
    QUALITIES,
    SLOTS,
    SPLITS,
    TARGET_LEN,
    Fact,
    PreferencePair,
    Record,
    Summary,
)
from course_lib.tasks.text import sentences, words


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
