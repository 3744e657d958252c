"""Judges: who says P(y > y' | x) for a pair of completions.

A judge is any callable ``judge(contexts, ys, y2s) -> np.ndarray`` of probabilities, one per
pair, with ``judge(c, ys, y2s) + judge(c, y2s, ys) == 1`` (a preference is antisymmetric). The
trainer labels pairs with it (:mod:`course_lib.online`) and the evaluation computes win rates
with it (:mod:`course_lib.evaluation`). ``contexts`` are whatever the judge needs to know about
each prompt: the synthetic task's records (the oracle reads their facts), or the prompt text.

* :class:`OracleJudge` -- the synthetic task's ground truth P* (:mod:`course_lib.tasks.oracle`);
* :class:`PreferenceJudge` -- a trained pairwise preference model (:mod:`course_lib.preference`),
  loaded by :func:`learned_judge` (the tiny track's committed models) or :func:`model_judge`;
* :class:`RewardJudge` -- a scalar reward model r(x, y), through Bradley-Terry;
* :func:`check_judge_tokenizer` -- a judge that reads the policy's token ids must share its
  tokenizer.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np
import torch


@runtime_checkable
class Judge(Protocol):
    """``P(y > y' | x)`` for each pair. ``reads_policy_tokens`` is True for a judge that scores
    the policy's token ids directly (it must then have the policy's ``tokenizer``)."""

    def __call__(self, contexts: Sequence[Any], ys: Sequence[str], y2s: Sequence[str]) -> Any: ...


class OracleJudge:
    """The synthetic task's ground truth as a judge: ``P*(y > y'|x)`` read from each record."""

    reads_policy_tokens = False

    def __init__(self, mode: str):
        from course_lib.tasks.oracle import Oracle

        self.mode = mode
        self.oracle = Oracle(mode)

    def __call__(self, records, ys, y2s) -> np.ndarray:
        return np.array(
            [self.oracle.prob(r, y, y2) for r, y, y2 in zip(records, ys, y2s, strict=True)]
        )


class RewardJudge:
    """A scalar reward model as a judge, through the Bradley-Terry model it assumes:

        P(y > y' | x) = sigmoid( (r(x, y) - r(x, y')) / scale )

    (the RLHF reward model's own assumption, Ouyang et al. 2022; the paper's point is that a
    general preference need not have this form). ``reward(context, text) -> float``.
    """

    reads_policy_tokens = False

    def __init__(self, reward: Callable[[Any, str], float], scale: float = 1.0):
        from course_lib import validation as check

        self.reward = reward
        self.scale = check.positive("scale", scale)

    def __call__(self, contexts, ys, y2s) -> np.ndarray:
        r = np.array([self.reward(c, y) for c, y in zip(contexts, ys, strict=True)], float)
        r2 = np.array([self.reward(c, y) for c, y in zip(contexts, y2s, strict=True)], float)
        return 1.0 / (1.0 + np.exp(-(r - r2) / self.scale))


def oracle_reward(mode: str = "bt") -> RewardJudge:
    """The synthetic task's Bradley-Terry score s(y) as a scalar reward model (an exact one:
    its judge is the ``bt`` oracle up to the oracle's rounding of P to multiples of 2^-40)."""
    from course_lib.tasks.oracle import Oracle

    return RewardJudge(Oracle(mode).score)


def _post_of(context) -> str:
    """The text the preference model reads as x: a record's post, or a string prompt."""
    return context if isinstance(context, str) else context.post


class PreferenceJudge:
    """A trained model as a judge: ``judge(contexts, ys, y2s) -> P_phi(y > y')`` as a numpy
    array. It reads text with its own tokenizer, so it can judge any policy's decoded
    completions; the model is symmetrised, so the judge is antisymmetric."""

    reads_policy_tokens = False

    def __init__(self, model, tokenizer, batch_size: int = 64):
        self.model = model.eval()
        self.tokenizer = tokenizer
        self.batch_size = batch_size

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        from course_lib.preference.model import encode_texts

        return encode_texts(self.tokenizer, texts)

    @torch.no_grad()
    def __call__(self, contexts, ys, y2s) -> np.ndarray:
        if not (len(contexts) == len(ys) == len(y2s)):
            raise ValueError(
                f"need one context per pair: {len(contexts)} contexts, {len(ys)} y, {len(y2s)} y'"
            )
        out = []
        for s in range(0, len(ys), self.batch_size):
            sl = slice(s, s + self.batch_size)
            x = self.encode([_post_of(c) for c in contexts[sl]])
            out.append(self.model(x, self.encode(ys[sl]), self.encode(y2s[sl])).cpu().numpy())
        return np.concatenate(out) if out else np.zeros(0)


def learned_judge(mode: str, tokenizer) -> PreferenceJudge:
    """The tiny track's committed preference model for the oracle ``mode`` (``bt`` or ``nt``),
    trained on that mode's labels (notebook 09)."""
    from course_lib.preference import default_model_dir, load_preference_model

    return PreferenceJudge(load_preference_model(default_model_dir(mode)), tokenizer)


def model_judge(folder, policy_tokenizer) -> PreferenceJudge:
    """A real-track preference model (a LoRA on a pretrained backbone) judging a policy that
    uses ``policy_tokenizer``: it must read the same vocabulary."""
    from course_lib.preference import load_preference_model

    pm = load_preference_model(folder)
    if pm.cfg.backbone is None:
        raise ValueError(
            f"{folder} holds a tiny-track preference model (its own word-level tokenizer); the "
            "real track needs one trained with `python -m course_lib.preference train "
            "--backbone ...`"
        )
    if pm.cfg.vocab_size != len(policy_tokenizer):
        raise ValueError(
            f"the preference model in {folder} reads a vocabulary of {pm.cfg.vocab_size} "
            f"tokens ({pm.cfg.backbone!r}), the policy {len(policy_tokenizer)}: train it on the "
            "policy's backbone"
        )
    return PreferenceJudge(pm, policy_tokenizer)


def check_judge_tokenizer(judge, tokenizer) -> None:
    """A judge that reads the policy's token ids must use the policy's tokenizer.

    (TRL's Nash-MD fed policy token ids to a reward model with another tokenizer: defect D6,
    notes/trl.md §4.6.) Judges that read text declare nothing and are not checked.
    """
    judge_tok = getattr(judge, "tokenizer", None)
    if judge_tok is None or not getattr(judge, "reads_policy_tokens", False):
        return
    if judge_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"the preference model's tokenizer ({getattr(judge_tok, 'name_or_path', judge_tok)!r},"
            f" vocabulary {len(judge_tok)}) does not match the policy's "
            f"({getattr(tokenizer, 'name_or_path', tokenizer)!r}, vocabulary {len(tokenizer)})"
        )
