"""The real TL;DR data: human comparisons and prompts, validated against a schema.

The paper (Calandriello et al. 2024, §6; notes/paper-tables.md §2.1) trains its preference
model on the Reddit TL;DR human comparisons of Stiennon et al. (2020). With a network, a learner can
load:

* the comparisons, ``openai/summarize_from_feedback`` (config ``comparisons``): one row per
  human judgement, ``info`` (``id``, ``post``, ``title``, ``subreddit``, ...), two ``summaries``
  (``text``, ``policy``, ``note``), ``choice`` (0 or 1: the index of the preferred summary),
  ``worker``, ``batch``, ``split``, ``extra`` (``confidence``, 1-9 or null);
* the prompts, ``trl-lib/tldr``: ``prompt`` (``SUBREDDIT: r/... TITLE: ... POST: ... TL;DR:``)
  and ``completion`` (the author's TL;DR).

Every row is checked before use; a bad row is a ``ValueError`` naming where it came from (file
and line, or hub id and row), the field, and what was expected. The same readers parse local
JSONL files in the hub's row format, which is how the tests run offline (``tests/fixtures``).

Loading from the hub needs the network and is never done in tests. The comparisons repository
holds a loading script, which recent ``datasets`` versions no longer run; its parquet export
(``revision="refs/convert/parquet"``) is read instead. [Not checked against the live hub while
writing this module: there was no network.]
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from course_lib.tasks.summarisation import format_tldr_prompt

HUB_COMPARISONS = "openai/summarize_from_feedback"
HUB_PROMPTS = "trl-lib/tldr"
PARQUET_REVISION = "refs/convert/parquet"
_NONE = type(None)


@dataclass(frozen=True)
class Comparison:
    """One human judgement between two summaries of a post. ``label`` is 1 when ``y`` won."""

    id: str
    subreddit: str
    title: str
    post: str
    y: str
    y_prime: str
    label: int
    policy_y: str
    policy_y_prime: str
    worker: str
    confidence: int | None
    split: str

    def prompt(self) -> str:
        """The post in the TL;DR prompt format (as in ``trl-lib/tldr``)."""
        return format_tldr_prompt(self.subreddit, self.title, self.post)

    @property
    def chosen(self) -> str:
        return self.y if self.label == 1 else self.y_prime

    @property
    def rejected(self) -> str:
        return self.y_prime if self.label == 1 else self.y


@dataclass(frozen=True)
class TldrPrompt:
    """A prompt of ``trl-lib/tldr`` and the author's own TL;DR."""

    prompt: str
    completion: str


def _fail(where: str, field: str, msg: str):
    raise ValueError(f"{where}: field {field!r}: {msg}")


def _get(where: str, obj, key: str, types: tuple, prefix: str = ""):
    name = prefix + key
    if not isinstance(obj, dict):
        _fail(where, prefix.rstrip(".") or "<row>", f"expected an object, got {obj!r:.60}")
    if key not in obj:
        _fail(where, name, "missing")
    value = obj[key]
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        allowed = " or ".join("null" if t is _NONE else t.__name__ for t in types)
        _fail(where, name, f"expected {allowed}, got {type(value).__name__} {value!r:.60}")
    return value


def validate_comparison(row: dict, where: str) -> Comparison:
    """Check one ``openai/summarize_from_feedback`` comparisons row and convert it.

    Raises ``ValueError("{where}: field 'summaries[1].text': expected str, got int 3")`` etc.
    Rows without a Reddit post (the CNN/DM articles of the validation split) are rejected on
    ``info.post``; :func:`read_comparisons_jsonl` and :func:`load_comparisons` skip them when
    ``reddit_only`` is true.
    """
    info = _get(where, row, "info", (dict,))
    post = _get(where, info, "post", (str, _NONE), "info.")
    if post is None or not post.strip():
        _fail(where, "info.post", "expected a non-empty Reddit post (CNN/DM rows have none)")
    summaries = _get(where, row, "summaries", (list,))
    if len(summaries) != 2:
        _fail(where, "summaries", f"expected exactly 2 summaries, got {len(summaries)}")
    texts, policies = [], []
    for k, s in enumerate(summaries):
        texts.append(_get(where, s, "text", (str,), f"summaries[{k}]."))
        policies.append(_get(where, s, "policy", (str,), f"summaries[{k}]."))
    choice = _get(where, row, "choice", (int,))
    if choice not in (0, 1):
        _fail(where, "choice", f"expected 0 or 1 (index of the preferred summary), got {choice}")
    extra = _get(where, row, "extra", (dict, _NONE))
    confidence = None
    if extra is not None and "confidence" in extra:
        confidence = _get(where, extra, "confidence", (int, _NONE), "extra.")
        if confidence is not None and not 1 <= confidence <= 9:
            _fail(where, "extra.confidence", f"expected 1..9 or null, got {confidence}")
    return Comparison(
        id=_get(where, info, "id", (str,), "info."),
        subreddit=_get(where, info, "subreddit", (str, _NONE), "info.") or "",
        title=_get(where, info, "title", (str, _NONE), "info.") or "",
        post=post,
        y=texts[0],
        y_prime=texts[1],
        label=1 if choice == 0 else 0,
        policy_y=policies[0],
        policy_y_prime=policies[1],
        worker=_get(where, row, "worker", (str,)),
        confidence=confidence,
        split=_get(where, row, "split", (str,)),
    )


def validate_prompt(row: dict, where: str) -> TldrPrompt:
    """Check one ``trl-lib/tldr`` row: ``prompt`` holds ``POST:`` and ends with ``TL;DR:``."""
    prompt = _get(where, row, "prompt", (str,))
    completion = _get(where, row, "completion", (str,))
    if "POST:" not in prompt or not prompt.rstrip().endswith("TL;DR:"):
        _fail(where, "prompt", f"expected '... POST: ... TL;DR:', got {prompt[-60:]!r}")
    if not completion.strip():
        _fail(where, "completion", "expected a non-empty summary")
    return TldrPrompt(prompt=prompt, completion=completion)


def _read_jsonl(path: str | Path):
    path = Path(path)
    with open(path, encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, start=1):
            where = f"{path}:{lineno}"
            try:
                yield json.loads(line), where
            except json.JSONDecodeError as e:
                raise ValueError(f"{where}: field '<line>': not valid JSON ({e})") from e


def _is_reddit(row) -> bool:
    info = row.get("info") if isinstance(row, dict) else None
    return not (isinstance(info, dict) and info.get("post") is None and info.get("article"))


def read_comparisons_jsonl(path: str | Path, reddit_only: bool = True) -> list[Comparison]:
    """Comparisons from a local JSONL file in the hub's row format (one row per line)."""
    return [
        validate_comparison(row, where)
        for row, where in _read_jsonl(path)
        if not reddit_only or _is_reddit(row)
    ]


def read_prompts_jsonl(path: str | Path) -> list[TldrPrompt]:
    """Prompts from a local JSONL file in the ``trl-lib/tldr`` row format."""
    return [validate_prompt(row, where) for row, where in _read_jsonl(path)]


def load_comparisons(
    split: str = "train",
    limit: int | None = None,
    reddit_only: bool = True,
    revision: str = PARQUET_REVISION,
) -> list[Comparison]:
    """The human comparisons from the hub (needs a network), validated row by row."""
    import datasets

    ds = datasets.load_dataset(HUB_COMPARISONS, "comparisons", split=split, revision=revision)
    out: list[Comparison] = []
    for i, row in enumerate(ds):
        if limit is not None and len(out) >= limit:
            break
        if reddit_only and not _is_reddit(row):
            continue
        out.append(validate_comparison(row, f"{HUB_COMPARISONS}[{split}] row {i}"))
    return out


def load_prompts(split: str = "train", limit: int | None = None) -> list[TldrPrompt]:
    """The TL;DR prompts from the hub (needs a network), validated row by row."""
    import datasets

    ds = datasets.load_dataset(HUB_PROMPTS, split=split)
    n = len(ds) if limit is None else min(limit, len(ds))
    return [validate_prompt(ds[i], f"{HUB_PROMPTS}[{split}] row {i}") for i in range(n)]
