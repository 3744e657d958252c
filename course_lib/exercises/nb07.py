"""Notebook 07 (language models): reference solutions, cases, hints and answers.

The references agree with the library (``course_lib.sampling.mixture_logprobs``,
``course_lib.logprobs.position_ids_from_mask`` and ``course_lib.logprobs.mask_after_eos``), and the
checks compare with the library itself, so an answer that passes is one the course uses.
``check_<name>(your_function)`` checks it, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import torch

from course_lib.exercises import Exercise, ExerciseSet
from course_lib.logprobs import mask_after_eos, position_ids_from_mask
from course_lib.sampling import mixture_logprobs


# ---- reference solutions ---------------------------------------------------------------------
def mixture_next_token(z_pi, z_ref, beta, temperature=1.0):
    """Next-token probabilities of the token-level geometric mixture:
    softmax(((1 - beta) z_pi + beta z_ref) / temperature)."""
    z = ((1 - beta) * z_pi + beta * z_ref) / temperature
    return torch.softmax(z, dim=-1)


def position_ids(attention_mask):
    """0, 1, 2, ... over the real tokens of each row; pads get 1 (any value works: masked)."""
    pos = attention_mask.long().cumsum(-1) - 1
    return pos.masked_fill(attention_mask == 0, 1)


def completion_mask(completion_ids, eos_token_id):
    """1 up to and including the first EOS of each row, 0 after it."""
    is_eos = (completion_ids == eos_token_id).long()
    eos_before = is_eos.cumsum(-1) - is_eos  # EOS tokens strictly before this column
    return (eos_before == 0).long()


# ---- what the checks compare with: the library -----------------------------------------------
def _library_mixture(z_pi, z_ref, beta, temperature=1.0):
    return mixture_logprobs(z_pi, z_ref, beta, temperature).exp()


def _logit_cases():
    gen = torch.Generator().manual_seed(7)
    cases = []
    for shape, beta, temperature in (
        ((5,), 0.5, 1.0),
        ((3, 11), 0.125, 1.0),
        ((2, 4, 7), 0.3, 0.7),
        ((6,), 0.0, 2.0),
        ((6,), 1.0, 1.0),
    ):
        z_pi = 3 * torch.randn(*shape, generator=gen)
        z_ref = 3 * torch.randn(*shape, generator=gen)
        cases.append(((z_pi, z_ref, beta), {"temperature": temperature}))
    return cases


def _real_places(fn):
    """What a model sees at padded places does not matter: compare on real tokens only."""

    def on_real(mask):
        return fn(mask) * mask

    return on_real


def _position_cases():
    masks = [
        torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]),
        torch.tensor([[0, 1, 1], [1, 1, 1]]),
    ]
    return [((m,), {}) for m in masks]


def _completion_cases():
    ids = [
        torch.tensor([[5, 6, 2, 7, 2, 8], [5, 6, 7, 8, 9, 4], [2, 5, 5, 5, 5, 5]]),
        torch.tensor([[3, 2], [2, 2]]),
    ]
    return [((c, 2), {}) for c in ids]


EXERCISES = ExerciseSet(
    "nb07",
    [
        Exercise(
            "mixture_next_token",
            1,
            mixture_next_token,
            cases=_logit_cases,
            expected=_library_mixture,
            atol=1e-6,
            rtol=1e-5,
            hints=(
                "the geometric mixture of two softmax distributions is itself a softmax: of a "
                "combination of the two logit vectors (not of the probabilities).",
                "logits (1 - beta) z_pi + beta z_ref, divided by the temperature, then a softmax "
                "over the last dimension.",
            ),
        ),
        Exercise(
            "position_ids",
            2,
            position_ids,
            cases=_position_cases,
            expected=position_ids_from_mask,
            adapt=_real_places,
            atol=0,
            rtol=0,
            hints=(
                "the position of a real token is the number of real tokens before it in its "
                "row; a running count along the row gives it.",
                "cumsum of the mask along the last dimension, minus one; then put any fixed "
                "value (e.g. 1) where the mask is 0.",
            ),
        ),
        Exercise(
            "completion_mask",
            3,
            completion_mask,
            cases=_completion_cases,
            expected=lambda c, e: mask_after_eos(c, e),
            atol=0,
            rtol=0,
            hints=(
                "a column is kept when no EOS came strictly before it; a running count of EOS "
                "tokens along the row tells that.",
                "mark the EOS tokens, take their cumulative sum, and subtract the current "
                "column's own mark: keep the columns where the result is 0.",
            ),
            answer=(
                "The EOS is the policy's decision to stop: log pi(y|x) is the probability of the "
                "whole completion, stop included, so the EOS token's log-prob belongs to it. "
                "Without it the loss could not make a completion longer or shorter (h would "
                "ignore where pi stops), and sequences cut at the length limit would look the "
                "same as ones that ended."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_mixture_next_token = EXERCISES.checker("mixture_next_token")
check_position_ids = EXERCISES.checker("position_ids")
check_completion_mask = EXERCISES.checker("completion_mask")
