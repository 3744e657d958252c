"""The corpus's vocabulary of records: what a record, a summary and a labelled pair hold, and
the splits with their files (the schema of each file is in :mod:`.jsonl`)."""

from __future__ import annotations

from dataclasses import dataclass

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
    """One post with its key facts and summaries (see :mod:`course_lib.tasks.summarisation`)."""

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
