"""The arena's preference P(y > y' | x), exact, from features of the two completions.

Features of a completion ``y``: how many times it holds each symbol (its EOS is not a symbol).
The first three symbols (``a``, ``b``, ``c``) are *content*; any later one (``d`` with four
symbols) is *filler*. Three rater types (NLHF §3.2: non-transitive preferences come from a
population of raters) score a completion by adding a value per symbol,

    s_k(y) = sum_t v_k[t] count_t(y),     v_k[t] = 1/2 + cyc_k[t] for content, -1 for filler,

with a taste shared by all (content is good, filler bad) and a cyclic one, ``cyc_k = +1`` for
content symbol ``k``, ``-1`` for symbol ``k + 1 (mod 3)``, 0 for the third: rater ``a`` likes
``a`` and dislikes ``b``, rater ``b`` likes ``b`` and dislikes ``c``, rater ``c`` likes ``c`` and
dislikes ``a``. Prompt ``i`` is asked of a population where rater ``i`` has weight 0.4 and the
two others 0.3 each.

Two modes:

* ``nt`` (non-transitive): the population,
  ``P(y > y' | x) = sum_k w_k(x) sigmoid(c (s_k(y) - s_k(y')))``. Its majorities cycle
  (Condorcet): for prompt ``a``, ``"a a a" > "c c c" > "b b b" > "a a a"``
  (:func:`find_three_cycle` finds such triples), and its von Neumann winner is mixed.
* ``bt`` (Bradley-Terry): the prompt's own rater alone, ``P(y > y' | x) =
  sigmoid(c (s_x(y) - s_x(y')))``: transitive, so no cycle exists.

``c`` is :data:`RATER_SCALE`. ``P`` is antisymmetric (``P + P^T = 1``) by construction.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from scipy.special import expit

from course_lib.arena.language import Language
from course_lib.tabular import validate_preference_matrix

MODES = ("bt", "nt")
#: Sharpness c of each rater's sigmoid: a one-point score gap is preferred 88% of the time.
RATER_SCALE = 2.0
#: The weight of the prompt's own rater type in the population (the two others share the rest).
OWN_WEIGHT = 0.4
SHARED_CONTENT, FILLER = 0.5, -1.0


def counts(language: Language) -> np.ndarray:
    """``(n_completions, n_symbols)``: how often each symbol occurs in each completion."""
    return np.array(
        [
            [language.symbols_of(y).count(t) for t in range(1, language.n_symbols + 1)]
            for y in language.completions
        ],
        dtype=float,
    )


def symbol_values(n_symbols: int) -> np.ndarray:
    """``(3, n_symbols)``: ``v_k[t]``, rater type ``k``'s value of one symbol ``t``."""
    if n_symbols < 3:
        raise ValueError(f"n_symbols={n_symbols} is invalid: the raters need 3 content symbols")
    v = np.full((3, n_symbols), FILLER)
    v[:, :3] = SHARED_CONTENT
    for k in range(3):
        v[k, k] += 1.0
        v[k, (k + 1) % 3] -= 1.0
    return v


def rater_scores(language: Language) -> np.ndarray:
    """``(3, n_completions)``: the scores ``s_1, s_2, s_3`` of the three rater types."""
    return symbol_values(language.n_symbols) @ counts(language).T


def rater_weights(prompt: int) -> np.ndarray:
    """The population asked about prompt ``prompt``: its own rater type weighs more."""
    w = np.full(3, (1.0 - OWN_WEIGHT) / 2)
    w[prompt] = OWN_WEIGHT
    return w


def _pairwise(scores: np.ndarray, scale: float) -> np.ndarray:
    return expit(scale * (scores[:, None] - scores[None, :]))


def preference_matrix(
    language: Language, prompt: int, mode: str, scale: float = RATER_SCALE
) -> np.ndarray:
    """``P[i, j] = P(y_i > y_j | x)`` over the enumerated completions of prompt ``prompt``."""
    if mode not in MODES:
        raise ValueError(f"mode={mode!r} is invalid: one of {', '.join(MODES)}")
    if not (isinstance(scale, int | float) and np.isfinite(scale) and scale > 0):
        raise ValueError(f"scale={scale!r} is invalid: a finite number > 0")
    if not 0 <= prompt < min(3, language.n_prompts):
        raise ValueError(f"prompt={prompt!r} is invalid: 0 .. {min(3, language.n_prompts) - 1}")
    s = rater_scores(language)
    if mode == "bt":
        return validate_preference_matrix(_pairwise(s[prompt], scale))
    w = rater_weights(prompt)
    return validate_preference_matrix(sum(w[k] * _pairwise(s[k], scale) for k in range(3)))


def preference_matrices(language: Language, mode: str, scale: float = RATER_SCALE) -> np.ndarray:
    """``(n_prompts, n, n)``: one preference matrix per prompt."""
    return np.stack(
        [preference_matrix(language, i, mode, scale) for i in range(language.n_prompts)]
    )


def threshold(P: np.ndarray) -> np.ndarray:
    """The expected thresholded label ``1[P > 1/2]`` (1/2 on ties), TRL's online labels. It is
    antisymmetric too, so it is the preference an algorithm trained on such labels plays."""
    return np.where(P > 0.5, 1.0, np.where(P < 0.5, 0.0, 0.5))


def label_preference(P: np.ndarray, label: str) -> np.ndarray:
    """The preference a run with labels of kind ``label`` optimises against.

    Every loss of :mod:`course_lib.losses` is linear in its label ``p`` (``p l(h) + (1 - p)
    l(-h)``), so only the expected label matters to the expected gradient: ``P`` itself for soft
    labels and for Bernoulli(P) ``sampled`` labels, ``1[P > 1/2]`` for ``threshold``.
    """
    if label in ("soft", "sampled"):
        return P
    if label == "threshold":
        return threshold(P)
    raise ValueError(f"label={label!r} is invalid: one of soft, sampled, threshold")


def find_three_cycle(P: np.ndarray, margin: float = 0.0) -> tuple[int, int, int] | None:
    """A triple ``(i, j, k)`` with ``P[i, j], P[j, k], P[k, i]`` all ``> 1/2 + margin`` -- the
    one whose smallest of the three is largest -- or None when there is none (always None for a
    Bradley-Terry ``P``: ``P[i, j] > 1/2`` means ``r_i > r_j``, and ``r`` cannot cycle)."""
    P = validate_preference_matrix(P)
    win = np.where(P > 0.5 + margin, P, 0.0)
    # strength of the cycle i -> j -> k -> i: min(P_ij, P_jk, P_ki), 0 if any is not a win
    best, where = 0.0, None
    for i in range(P.shape[0]):
        cyc = np.minimum(np.minimum(win[i][:, None], win), win[:, i][None, :])
        j, k = np.unravel_index(np.argmax(cyc), cyc.shape)
        if cyc[j, k] > best:
            best, where = float(cyc[j, k]), (int(i), int(j), int(k))
    return where


class ExactJudge:
    """The trainer's judge: ``P(y > y' | x)`` read off the exact matrix.

    Called by :class:`course_lib.online.OnlineTrainer` as ``judge(contexts, y_texts, y2_texts)``
    with the prompt indices as contexts. Each text goes back to its token ids through the
    tokenizer (text and tokens are one to one, :mod:`course_lib.arena.language`); a text that is
    not a completion raises ValueError. ``reads_policy_tokens`` makes the trainer check that this
    tokenizer is the policy's.
    """

    reads_policy_tokens = True

    def __init__(self, language: Language, P: np.ndarray):
        P = np.asarray(P, dtype=float)
        n = language.n_completions
        if P.shape != (language.n_prompts, n, n):
            raise ValueError(
                f"P has shape {P.shape}; the arena needs ({language.n_prompts}, {n}, {n})"
            )
        self.language, self.P = language, P
        self.tokenizer = language.tokenizer

    def __call__(self, contexts: Sequence[int], y_texts, y2_texts) -> np.ndarray:
        idx = self.language.index_of_text
        return np.array(
            [
                self.P[int(x), idx(a), idx(b)]
                for x, a, b in zip(contexts, y_texts, y2_texts, strict=True)
            ]
        )
