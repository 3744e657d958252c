"""Text helpers shared by the corpus generator, the oracle and the tokenizer.

One definition of a *word token* is used everywhere, so that what the oracle counts, what the
generator writes and what the word-level tokenizer splits agree:

* ``normalise(text)``: whitespace runs (spaces, tabs, newlines) become one space, ends stripped.
  This is the form that the tokenizer's encode -> decode round trip gives back.
* ``word_tokens(text)``: runs of letters/digits/underscore (``\\w+``) and single punctuation or
  symbol characters, in order. ``"I (24F) lent $800."`` -> ``I ( 24F ) lent $ 800 .``
"""

from __future__ import annotations

import re

_WS = re.compile(r"\s+")
_TOKEN = re.compile(r"\w+|[^\w\s]")
_SENTENCE = re.compile(r"(?<=[.!?])\s+")


def normalise(text: str) -> str:
    """Collapse every whitespace run to one space and strip the ends."""
    if not isinstance(text, str):
        raise ValueError(f"expected a str, got {type(text).__name__}: {text!r:.80}")
    return _WS.sub(" ", text).strip()


def word_tokens(text: str) -> list[str]:
    """Word and punctuation tokens of ``text`` (``\\w+`` runs and single other characters)."""
    if not isinstance(text, str):
        raise ValueError(f"expected a str, got {type(text).__name__}: {text!r:.80}")
    return _TOKEN.findall(text)


def words(text: str) -> list[str]:
    """Only the ``\\w+`` tokens: what a length in words counts."""
    return [t for t in word_tokens(text) if t[0].isalnum() or t[0] == "_"]


def sentences(text: str) -> list[str]:
    """Split after ``.``, ``!`` or ``?`` followed by whitespace (good enough for the corpus)."""
    return [s for s in _SENTENCE.split(normalise(text)) if s]


def contains_phrase(tokens: list[str], phrase: tuple[str, ...]) -> bool:
    """Whether the lower-cased token list contains ``phrase`` as a contiguous run."""
    n = len(phrase)
    if n == 0:
        return False
    first = phrase[0]
    for i, tok in enumerate(tokens):
        if tok == first and tuple(tokens[i : i + n]) == phrase:
            return True
    return False


def phrase_tokens(phrase: str) -> tuple[str, ...]:
    """Lower-cased word tokens of an anchor phrase (``"small claims court"`` -> 3 tokens)."""
    return tuple(t.lower() for t in word_tokens(phrase))
