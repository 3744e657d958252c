"""The summarisation task: the synthetic TL;DR corpus, its oracle preference, the word-level
tokenizer, and a loader for the real TL;DR data.

* :mod:`course_lib.tasks.summarisation` -- records, summaries of mixed quality, JSONL files;
* :mod:`course_lib.tasks.oracle` -- the ground-truth P*(y > y'|x), Bradley-Terry or not;
* :mod:`course_lib.tasks.tokenizer` -- the WordLevel tokenizer of the tiny policy;
* :mod:`course_lib.tasks.tldr` -- the human comparisons and prompts of the real TL;DR data.

The names below are imported lazily (PEP 562), so that ``python -m
course_lib.tasks.summarisation`` does not import its own module twice.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Aspects": "oracle",
    "Oracle": "oracle",
    "RaterType": "oracle",
    "count_cycles": "oracle",
    "QUALITIES": "summarisation",
    "Fact": "summarisation",
    "PreferencePair": "summarisation",
    "Record": "summarisation",
    "Summary": "summarisation",
    "generate_record": "summarisation",
    "generate_split": "summarisation",
    "load_pairs": "summarisation",
    "load_split": "summarisation",
    "read_pairs": "summarisation",
    "read_records": "summarisation",
    "load_tokenizer": "tokenizer",
}
__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        module = importlib.import_module(f"course_lib.tasks.{_EXPORTS[name]}")
        return getattr(module, name)
    raise AttributeError(f"module 'course_lib.tasks' has no attribute {name!r}")


def __dir__():
    return __all__
