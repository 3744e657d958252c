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

The package, by concern:

* :mod:`.records` -- the data classes (:class:`Record`, :class:`Summary`, :class:`Fact`,
  :class:`PreferencePair`) and the splits with their files;
* :mod:`.generation` -- records and labelled pairs, deterministic from a seed;
* :mod:`.jsonl` -- reading (validated) and writing the JSONL files, loading the committed corpus;
* :mod:`.builder` -- building and verifying the corpus folder (``data/``);
* :mod:`.cli` -- ``python -m course_lib.tasks.summarisation build|verify``.
"""

from course_lib.tasks.summarisation.builder import (
    BUILD_COMMAND,
    build,
    build_files,
    check_build_dir,
    read_checksums,
    verify,
)
from course_lib.tasks.summarisation.generation import generate_record, generate_split, make_pairs
from course_lib.tasks.summarisation.jsonl import (
    PAIR_FIELDS,
    load_pairs,
    load_split,
    pair_from_json,
    pair_to_json,
    read_pairs,
    read_records,
    record_from_json,
    record_to_json,
    write_jsonl,
)
from course_lib.tasks.summarisation.records import (
    DEFAULT_SEED,
    PAIR_SPLITS,
    QUALITIES,
    REFERENCE_ONLY,
    SCHEMA_VERSION,
    SLOTS,
    SPLITS,
    TARGET_LEN,
    Fact,
    PreferencePair,
    Record,
    Summary,
    format_tldr_prompt,
)

__all__ = [
    "BUILD_COMMAND",
    "DEFAULT_SEED",
    "PAIR_FIELDS",
    "PAIR_SPLITS",
    "QUALITIES",
    "REFERENCE_ONLY",
    "SCHEMA_VERSION",
    "SLOTS",
    "SPLITS",
    "TARGET_LEN",
    "Fact",
    "PreferencePair",
    "Record",
    "Summary",
    "build",
    "build_files",
    "check_build_dir",
    "format_tldr_prompt",
    "generate_record",
    "generate_split",
    "load_pairs",
    "load_split",
    "make_pairs",
    "pair_from_json",
    "pair_to_json",
    "read_checksums",
    "read_pairs",
    "read_records",
    "record_from_json",
    "record_to_json",
    "verify",
    "write_jsonl",
]
