"""The summarisation task: the synthetic TL;DR corpus, its oracle preference, the word-level
tokenizer, the tiny policy, and a loader for the real TL;DR data.

* :mod:`course_lib.tasks.summarisation` -- records, summaries of mixed quality, JSONL files;
* :mod:`course_lib.tasks.oracle` -- the ground-truth P*(y > y'|x), Bradley-Terry or not;
* :mod:`course_lib.tasks.tokenizer` -- the WordLevel tokenizer of the tiny policy;
* :mod:`course_lib.tasks.tiny_policy` -- the tiny reference policy (imported on its own: it
  needs ``torch`` and ``transformers``);
* :mod:`course_lib.tasks.tldr` -- the human comparisons and prompts of the real TL;DR data.
"""

from course_lib.tasks.oracle import Aspects, Oracle, RaterType, count_cycles
from course_lib.tasks.summarisation import (
    QUALITIES,
    Fact,
    PreferencePair,
    Record,
    Summary,
    generate_record,
    generate_split,
    load_pairs,
    load_split,
    read_pairs,
    read_records,
)
from course_lib.tasks.tokenizer import load_tokenizer

__all__ = [
    "QUALITIES",
    "Aspects",
    "Fact",
    "Oracle",
    "PreferencePair",
    "RaterType",
    "Record",
    "Summary",
    "count_cycles",
    "generate_record",
    "generate_split",
    "load_pairs",
    "load_split",
    "load_tokenizer",
    "read_pairs",
    "read_records",
]
