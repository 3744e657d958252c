"""Notebook 07 (language models): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code. The references agree with the library (``course_lib.sampling.mixture_logprobs``,
``course_lib.models.position_ids_from_mask`` and ``course_lib.models.mask_after_eos``); the
checkers compare against the library itself, so a solution that passes is one the course uses.
"""

from __future__ import annotations

import inspect

import torch

from course_lib.exercises import CheckResult, check_function
from course_lib.models import mask_after_eos, position_ids_from_mask
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


REFERENCES = {
    "mixture_next_token": mixture_next_token,
    "position_ids": position_ids,
    "completion_mask": completion_mask,
}
HINTS = {
    "mixture_next_token": "mix the logits (not the probabilities): (1 - beta) * z_pi + "
    "beta * z_ref, divide by the temperature, then softmax over the last dimension.",
    "position_ids": "cumsum of the mask along the sequence, minus one; then overwrite the "
    "padded places (mask 0) with any fixed value, e.g. 1.",
    "completion_mask": "mark EOS tokens, take a cumulative sum, and subtract the current "
    "token's mark so that the EOS itself is kept.",
}


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


# ---- checkers --------------------------------------------------------------------------------
def check_mixture_next_token(fn) -> CheckResult:
    """Compare with ``course_lib.sampling.mixture_logprobs(...).exp()``, which the sampler uses."""
    return check_function(
        "mixture_next_token",
        fn,
        _library_mixture,
        _logit_cases(),
        atol=1e-6,
        rtol=1e-5,
        hint=HINTS["mixture_next_token"],
    )


def check_position_ids(fn) -> CheckResult:
    masks = [
        torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]]),
        torch.tensor([[0, 1, 1], [1, 1, 1]]),
    ]

    # compare on real tokens only: what a model sees at padded places does not matter
    def on_real(f):
        return lambda m: f(m) * m

    return check_function(
        "position_ids",
        on_real(fn),
        on_real(position_ids_from_mask),
        [((m,), {}) for m in masks],
        atol=0,
        hint=HINTS["position_ids"],
    )


def check_completion_mask(fn) -> CheckResult:
    eos = 2
    ids = [
        torch.tensor([[5, 6, 2, 7, 2, 8], [5, 6, 7, 8, 9, 4], [2, 5, 5, 5, 5, 5]]),
        torch.tensor([[3, 2], [2, 2]]),
    ]
    return check_function(
        "completion_mask",
        fn,
        lambda c, e: mask_after_eos(c, e),
        [((c, eos), {}) for c in ids],
        atol=0,
        hint=HINTS["completion_mask"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
