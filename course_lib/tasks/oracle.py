"""The ground-truth preference P*(y > y' | x) of the synthetic TL;DR task.

The paper (Calandriello et al. 2024, §6) trains against a *learned* pairwise preference model of
human raters. The course replaces the human raters by an oracle whose truth is known exactly, so
that every learned model and every policy can be judged without noise. The oracle reads free
text (any string: a corpus summary, a tiny policy's sample, an empty string, a page of junk) and
looks at four aspects, each in [0, 1]:

* ``coverage``     -- the fraction of the record's key facts whose anchor phrase appears;
* ``faithfulness`` -- ``0.5 ** n`` where ``n`` counts the distinct entities (relations, places,
  names, pets, jobs, numbers, amounts, durations) in the summary that are not in the post;
* ``length``       -- ``exp(-(ln((n_words + 1) / (T + 1)) / 0.35)^2 / 2)`` against the record's
  target length ``T`` in words (1 at the target, 0.5 at about 1.5x or 0.67x, ~0 when empty);
* ``form``         -- the product of five checks, so that one defect is enough to hurt: ends
  with ``. ! ?`` (0/1); starts with a capital letter (0/1); repetition ``max(0, 1 - 5 r)`` with
  ``r`` the fraction of words that repeat the previous word or an earlier word pair; the
  fraction of words known to the task's language; no markup such as ``TL;DR:``, ``<...>``,
  ``[...]`` (0/1).

Two modes turn aspects into a probability:

* ``"bt"``: Bradley-Terry, P(y > y') = sigmoid(s(y) - s(y')) with the linear score
  s = 4 coverage + 3 faithfulness + 2 length + 3 form (notes/paper.md §1.3: BT is the special case
  of a general preference that a scalar reward can represent; it has no cycles).
* ``"nt"``: non-transitive, a population of rater types k with shares w_k who weigh the
  aspects differently: P(y > y') = sum_k w_k P_k(y > y'), where a deterministic type has
  P_k = 1[s_k(y) > s_k(y')] (1/2 on ties) and a soft type has P_k = sigmoid(s_k(y) - s_k(y')).
  A weighted majority of differently weighted raters is the classical source of Condorcet
  cycles: with three specialists who each hold under half of the population, any two of them
  outvote the third, so a summary that is complete but long, one that is short but invents a
  detail, and one that is faithful but drops a fact can beat each other in a circle.

Both modes satisfy P(y > y') + P(y' > y) = 1 and P(y > y) = 1/2 *exactly* in floating point:
identical texts (after whitespace normalisation) return 0.5; otherwise the probability is
computed once for the two texts in sorted order, rounded to a multiple of 2^-40 (so that it and
its complement are exact binary fractions), and the other order returns 1 minus it.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np

from course_lib.tasks import world
from course_lib.tasks.text import contains_phrase, normalise, phrase_tokens, word_tokens

MODES = ("bt", "nt")
ASPECTS = ("coverage", "faithfulness", "length", "form")
BT_WEIGHTS = (4.0, 3.0, 2.0, 3.0)  # logits per unit of each aspect, in ASPECTS order
LENGTH_WIDTH = 0.35  # standard deviation of ln((n + 1) / (T + 1)) in the length score
_QUANTUM = 2.0**40  # P is a multiple of 2^-40, so P and 1 - P are both exact
_UNITS = {
    "year": "years",
    "years": "years",
    "month": "months",
    "months": "months",
    "week": "weeks",
    "weeks": "weeks",
    "day": "days",
    "days": "days",
    "hour": "hours",
    "hours": "hours",
}
_DIGIT = re.compile(r"\d")
_MARKUP = re.compile(r"tl\s*;\s*dr|post\s*:|summary\s*:|subreddit\s*:|title\s*:|[<>\[\]]", re.I)


@dataclass(frozen=True)
class RaterType:
    """One kind of rater in the non-transitive population.

    ``weights`` are per aspect (ASPECTS order); ``share`` is the fraction of raters of this
    type; a ``deterministic`` type always picks its higher-scoring summary, a soft one picks
    with probability sigmoid(score difference).
    """

    name: str
    weights: tuple[float, float, float, float]
    share: float
    deterministic: bool = True


DEFAULT_RATERS = (
    RaterType("completionist", (6.0, 1.0, 1.0, 1.0), 0.30),
    RaterType("fact-checker", (1.0, 6.0, 1.0, 1.0), 0.30),
    RaterType("skimmer", (1.0, 1.0, 6.0, 2.0), 0.25),
    RaterType("balanced", BT_WEIGHTS, 0.15, deterministic=False),
)


@dataclass(frozen=True)
class Aspects:
    """What the oracle read in one summary of one record."""

    coverage: float
    faithfulness: float
    length: float
    form: float
    n_words: int
    covered: tuple[str, ...] = field(default=())  # slots of the key facts found
    hallucinated: tuple[str, ...] = field(default=())  # entities not in the post

    def vector(self) -> np.ndarray:
        return np.array([self.coverage, self.faithfulness, self.length, self.form])


# -- reading text ------------------------------------------------------------------------------


def entities(text: str) -> frozenset[str]:
    """Entities in ``text``: lexicon words (relations, cities, pets, jobs, projects) and numbers.

    Numbers are read by shape: ``$`` + digits -> ``"$800"``; digits + unit -> ``"3 years"``
    (singular and plural units merge); any other token holding a digit -> itself (``"2am"``,
    ``"24f"``, ``"40"``). Lower case throughout.
    """
    toks = word_tokens(text)
    out: set[str] = set()
    i = 0
    n = len(toks)
    while i < n:
        t = toks[i]
        if t.isalpha():  # the common case: a plain word
            low = t.lower()
            if low in world.ENTITY_WORDS:
                out.add(low)
        elif t == "$" and i + 1 < n and toks[i + 1].isdigit():
            out.add("$" + toks[i + 1])
            i += 1
        elif t.isdigit() and i + 1 < n and toks[i + 1].lower() in _UNITS:
            out.add(f"{t} {_UNITS[toks[i + 1].lower()]}")
            i += 1
        elif _DIGIT.search(t):
            out.add(t.lower())
        i += 1
    return frozenset(out)


@lru_cache(maxsize=1)
def known_words() -> frozenset[str]:
    """Every lower-cased word that the task's generator can write (templates and lexicons)."""
    texts: list[str] = []
    for s in world.SITUATIONS:
        for name in s.__dataclass_fields__:
            value = getattr(s, name)
            if isinstance(value, tuple):
                texts.extend(v for v in value if isinstance(v, str))
    texts += [*world.INTROS, *world.FEELINGS, *world.DISTRACTORS, *world.RELATIONS]
    texts += [*world.CITIES, *world.PETS, *world.JOBS, *world.PROJECTS, *world.DURATIONS]
    texts += [*world.HOURS, *world.TIMES, "he she him her his they I my me"]
    vocab: set[str] = set()
    for t in texts:
        t = re.sub(r"\{[a-zA-Z]+\}", " ", t)
        vocab.update(w.lower() for w in word_tokens(t) if w[0].isalpha())
    return frozenset(vocab)


@lru_cache(maxsize=8192)
def _source_entities(post: str, title: str) -> frozenset[str]:
    return entities(post) | entities(title)


@lru_cache(maxsize=8192)
def _anchors(anchor_lists: tuple[tuple[str, ...], ...]) -> tuple[tuple[tuple[str, ...], ...], ...]:
    return tuple(tuple(phrase_tokens(a) for a in anchors) for anchors in anchor_lists)


def length_score(n_words: int, target: int) -> float:
    """exp(-(ln((n + 1)/(T + 1)) / 0.35)^2 / 2): 1 at the target, symmetric in the log ratio."""
    z = math.log((n_words + 1) / (target + 1)) / LENGTH_WIDTH
    return math.exp(-0.5 * z * z)


def form_score(toks: list[str]) -> float:
    """Product of five well-formedness checks on the token list (0 for an empty text)."""
    word_toks = [t.lower() for t in toks if t[0].isalnum()]
    if not word_toks:
        return 0.0
    ends = 1.0 if toks[-1] in (".", "!", "?") else 0.0
    capital = 1.0 if toks[0][0].isupper() else 0.0
    seen: set[tuple[str, str]] = set()
    repeats = 0
    for a, b in zip(word_toks, word_toks[1:], strict=False):
        if a == b or (a, b) in seen:
            repeats += 1
        seen.add((a, b))
    repetition = max(0.0, 1.0 - 5.0 * repeats / len(word_toks))
    vocab = known_words()
    alpha = [w for w in word_toks if w[0].isalpha()]
    known = sum(w in vocab for w in alpha) / len(alpha) if alpha else 1.0
    clean = 0.0 if _MARKUP.search(" ".join(toks)) else 1.0
    return ends * capital * repetition * known * clean


def read_aspects(record, text: str) -> Aspects:
    """The four aspects of ``text`` as a summary of ``record`` (see the module docstring).

    ``record`` needs ``post``, ``title``, ``facts`` (each with ``slot`` and ``anchors``) and
    ``target_len``: a :class:`course_lib.tasks.summarisation.Record`.
    """
    if not isinstance(text, str):
        raise ValueError(f"a summary must be a str, got {type(text).__name__}: {text!r:.80}")
    slots = tuple(f.slot for f in record.facts)
    anchors = tuple(tuple(f.anchors) for f in record.facts)
    return _read(record.post, record.title, slots, anchors, int(record.target_len), text)


@lru_cache(maxsize=65536)  # online training judges the same few texts many times
def _read(post: str, title: str, slots, anchor_lists, target_len: int, text: str) -> Aspects:
    toks = word_tokens(text)
    low = [t.lower() for t in toks]
    covered = tuple(
        slot
        for slot, alts in zip(slots, _anchors(anchor_lists), strict=True)
        if any(contains_phrase(low, a) for a in alts)
    )
    coverage = len(covered) / len(slots) if slots else 0.0
    invented = sorted(entities(text) - _source_entities(post, title))
    n_words = sum(1 for t in toks if t[0].isalnum())
    return Aspects(
        coverage=coverage,
        faithfulness=0.5 ** len(invented),
        length=length_score(n_words, target_len),
        form=form_score(toks),
        n_words=n_words,
        covered=covered,
        hallucinated=tuple(invented),
    )


def _sigmoid(d: float) -> float:
    if d >= 0:
        return 1.0 / (1.0 + math.exp(-d))
    e = math.exp(d)
    return e / (1.0 + e)


# -- the oracle --------------------------------------------------------------------------------


class Oracle:
    """P*(y > y' | x) for a record x and two free-text summaries (module docstring).

    ``mode="bt"`` is Bradley-Terry on ``weights``; ``mode="nt"`` is the mixture of ``raters``.
    """

    def __init__(
        self,
        mode: str = "bt",
        weights: tuple[float, float, float, float] = BT_WEIGHTS,
        raters: tuple[RaterType, ...] = DEFAULT_RATERS,
    ):
        if mode not in MODES:
            raise ValueError(f"unknown oracle mode {mode!r}; valid modes are: {', '.join(MODES)}")
        if len(weights) != len(ASPECTS):
            raise ValueError(f"weights must have {len(ASPECTS)} entries {ASPECTS}, got {weights}")
        shares = [r.share for r in raters]
        if mode == "nt" and (min(shares) < 0 or abs(sum(shares) - 1.0) > 1e-9):
            raise ValueError(f"rater shares must be >= 0 and sum to 1, got {shares}")
        self.mode = mode
        self.weights = tuple(float(w) for w in weights)
        self.raters = tuple(raters)

    def __repr__(self) -> str:
        return f"Oracle(mode={self.mode!r})"

    def aspects(self, record, text: str) -> Aspects:
        return read_aspects(record, text)

    def score(self, record, text: str) -> float:
        """The Bradley-Terry score s(y) = sum_a weight_a * aspect_a (``weights``, the BT mode's)."""
        a = read_aspects(record, text)
        return _dot(self.weights, a)

    def _raw(self, record, y: str, y_prime: str) -> float:
        a, b = read_aspects(record, y), read_aspects(record, y_prime)
        if self.mode == "bt":
            return _sigmoid(_dot(self.weights, a) - _dot(self.weights, b))
        p = 0.0
        for r in self.raters:
            d = _dot(r.weights, a) - _dot(r.weights, b)
            if r.deterministic:
                pk = 0.5 if abs(d) < 1e-12 else (1.0 if d > 0 else 0.0)
            else:
                pk = _sigmoid(d)
            p += r.share * pk
        return min(1.0, max(0.0, p))

    def prob(self, record, y: str, y_prime: str) -> float:
        """P*(y > y' | x), exactly antisymmetric (see the module docstring)."""
        if not isinstance(y, str) or not isinstance(y_prime, str):
            raise ValueError(
                f"summaries must be str, got {type(y).__name__} and {type(y_prime).__name__}"
            )
        if y == y_prime or normalise(y) == normalise(y_prime):
            return 0.5
        if y < y_prime:
            return round(self._raw(record, y, y_prime) * _QUANTUM) / _QUANTUM
        return 1.0 - round(self._raw(record, y_prime, y) * _QUANTUM) / _QUANTUM

    def prob_matrix(self, record, texts: list[str]) -> np.ndarray:
        """The matrix P[i, j] = P*(texts[i] > texts[j] | x)."""
        n = len(texts)
        out = np.full((n, n), 0.5)
        for i in range(n):
            for j in range(i + 1, n):
                out[i, j] = self.prob(record, texts[i], texts[j])
                out[j, i] = 1.0 - out[i, j]
        return out


def _dot(w, a: Aspects) -> float:
    return w[0] * a.coverage + w[1] * a.faithfulness + w[2] * a.length + w[3] * a.form


def count_cycles(p: np.ndarray) -> int:
    """Number of intransitive triples {i, j, k}: i > j > k > i with every P strictly above 1/2.

    Each cyclic triple is counted once (not once per rotation).
    """
    p = np.asarray(p, dtype=float)
    if p.ndim != 2 or p.shape[0] != p.shape[1]:
        raise ValueError(f"expected a square matrix, got shape {p.shape}")
    beats = p > 0.5
    n = p.shape[0]
    count = 0
    for i in range(n):
        for j in range(i + 1, n):
            for k in range(j + 1, n):
                if (beats[i, j] and beats[j, k] and beats[k, i]) or (
                    beats[j, i] and beats[k, j] and beats[i, k]
                ):
                    count += 1
    return count
