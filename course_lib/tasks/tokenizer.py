"""The word-level tokenizer of the tiny track, built from the synthetic corpus.

A ``tokenizers`` WordLevel model: one id per word or punctuation mark. The pipeline:

* normaliser: every whitespace run becomes one space, the ends are stripped
  (:func:`course_lib.tasks.text.normalise`);
* pre-tokenizer: ``Metaspace`` (marks each word start with ``▁``) then ``Punctuation``
  (isolates each punctuation character), so ``"I lent $800."`` -> ``▁I ▁lent ▁ $ 800 .``;
* decoder: ``Metaspace``, which turns ``▁`` back into spaces, so decode(encode(text)) equals the
  normalised text exactly for any text whose words are in the vocabulary (case is kept).

Special tokens: ``<pad>`` (0), ``<s>`` (1), ``</s>`` (2), ``<unk>`` (3) and the separator
``<tldr>`` (4) between the post and its summary. A training example of the tiny policy is
``<s> post <tldr> summary </s>``.

The vocabulary is counted by this module, not by a ``tokenizers`` trainer, and sorted by
(descending count, then the token), so that the saved ``tokenizer.json`` is byte-identical on
every rebuild. The folder holds ``tokenizer.json`` and ``tokenizer_config.json``; it loads with
``transformers.AutoTokenizer.from_pretrained(folder)`` as a ``PreTrainedTokenizerFast``. Each file
is written atomically and nothing else in the folder is touched, so it may share its folder with
a model's weights.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable
from pathlib import Path

from course_lib import paths
from course_lib.atomic import atomic_write_text

PAD, BOS, EOS, UNK, SEP = "<pad>", "<s>", "</s>", "<unk>", "<tldr>"
SPECIAL_TOKENS = (PAD, BOS, EOS, UNK, SEP)
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json")  # what save_tokenizer writes


def _pipeline():
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    normalizer = normalizers.Sequence(
        [normalizers.Replace(Regex(r"\s+"), " "), normalizers.Strip()]
    )
    pre = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Metaspace(replacement="▁", prepend_scheme="always", split=True),
            pre_tokenizers.Punctuation("isolated"),
        ]
    )
    decoder = decoders.Metaspace(replacement="▁", prepend_scheme="always", split=True)
    return normalizer, pre, decoder


def build_tokenizer(texts: Iterable[str], min_count: int = 1):
    """A ``tokenizers.Tokenizer`` (WordLevel) whose vocabulary is every piece in ``texts``.

    Pieces seen fewer than ``min_count`` times map to ``<unk>``. The ids: special tokens first
    (``SPECIAL_TOKENS`` order), then pieces by descending count, ties by the piece itself.
    """
    from tokenizers import Tokenizer, models, processors

    if min_count < 1:
        raise ValueError(f"min_count must be >= 1, got {min_count}")
    normalizer, pre, decoder = _pipeline()
    # Whitespace separates pieces (Metaspace splits there; Punctuation splits only inside a
    # word), so the pieces of a text are those of its words taken one by one: count the words,
    # then pre-tokenize each distinct word once.
    word_counts: Counter[str] = Counter()
    for text in texts:
        word_counts.update(normalizer.normalize_str(text).split(" "))
    counts: Counter[str] = Counter()
    for word, c in word_counts.items():
        if word:
            for piece, _ in pre.pre_tokenize_str(word):
                counts[piece] += c
    pieces = sorted(
        (p for p, c in counts.items() if c >= min_count and p not in SPECIAL_TOKENS),
        key=lambda p: (-counts[p], p),
    )
    vocab = {tok: i for i, tok in enumerate([*SPECIAL_TOKENS, *pieces])}
    tok = Tokenizer(models.WordLevel(vocab=vocab, unk_token=UNK))
    tok.normalizer = normalizer
    tok.pre_tokenizer = pre
    tok.decoder = decoder
    tok.add_special_tokens(list(SPECIAL_TOKENS))
    # No automatic <s>/</s>: the tiny policy's code places them itself (see the module docstring).
    tok.post_processor = processors.TemplateProcessing(single="$A", pair="$A $B")
    return tok


def save_tokenizer(tok, folder: str | Path) -> list[str]:
    """Write ``tokenizer.json`` and ``tokenizer_config.json`` (:data:`TOKENIZER_FILES`), each
    atomically (a temporary file renamed over it); return the file names."""
    folder = Path(folder)
    # to_str(pretty=True) is byte for byte what tok.save(path, pretty=True) writes, and lets the
    # text go through atomic_write_text instead of straight into the target.
    atomic_write_text(folder / "tokenizer.json", tok.to_str(pretty=True))
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "pad_token": PAD,
        "bos_token": BOS,
        "eos_token": EOS,
        "unk_token": UNK,
        "sep_token": SEP,
        "clean_up_tokenization_spaces": False,
        "model_max_length": 512,
        "padding_side": "left",
    }
    atomic_write_text(
        folder / "tokenizer_config.json", json.dumps(config, indent=1, sort_keys=True) + "\n"
    )
    return list(TOKENIZER_FILES)


def load_tokenizer(folder: str | Path | None = None):
    """The committed tokenizer as a ``transformers`` fast tokenizer (``AutoTokenizer``)."""
    from transformers import AutoTokenizer

    if folder is None:
        folder = paths.data_dir() / "tokenizer"
    if not (Path(folder) / "tokenizer.json").is_file():
        raise FileNotFoundError(
            f"no tokenizer.json in {folder}; rebuild the corpus with `make data`"
        )
    return AutoTokenizer.from_pretrained(str(folder))
