"""One step of online preference optimisation, as functions that read like the algorithm.

Every step (Calandriello et al. 2024, §4-5; NLHF Appendix F), for a batch of prompts x:

1. :func:`choose_prompts` draws the prompts, seeded by ``(seed, step, micro-batch, process)``;
2. :func:`draw_pair` draws two completions per prompt with no gradient (the stop-gradient on the
   sampler): each from pi, or from the token-level geometric mixture pi^(1-beta) pi_ref^beta,
   as the algorithm says (:mod:`course_lib.online.algorithms`);
3. the judge gives p = P(y > y'|x), and :func:`labels` turns it into the loss's label: p itself
   (the paper), a Bernoulli(p) draw, or TRL's 1[p > 1/2];
4. :func:`pair_loss` computes h = log pi(y)/pi_ref(y) - log pi(y')/pi_ref(y') (by
   :func:`course_lib.logprobs.pair_logratios`, the one place h is computed) and the loss of
   :mod:`course_lib.losses`; Nash-MD-PG's policy gradient takes log pi(y) instead. When both
   completions came from the mixture, the sampler already computed log pi_ref of every token
   (:attr:`Pair.ref_logprobs`), and no reference forward runs.

:class:`~course_lib.online.trainer.OnlineTrainer` calls these in a loop; notebook 10 calls them
by hand.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from course_lib import losses
from course_lib.logprobs import pad_left, pair_logratios, policy_and_reference_logprobs
from course_lib.online.algorithms import CONTRASTIVE, Algorithm
from course_lib.sampling import sample, sample_mixture


def step_seed(*parts: int) -> int:
    """A 63-bit seed from integers, the same on every machine (no ``hash()``).

    The trainer seeds each random draw of a step from ``(seed, step, micro-batch, process, k)``
    with k = 1 for the prompts, 2 for the samples, 3 for sampled labels, so a resumed run draws
    exactly what the uninterrupted one drew, and a learner can redo a step by hand.
    """
    return int(
        np.random.SeedSequence(list(parts))
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1 << 31, 1])
    )


@dataclass
class Pair:
    """A batch of prompts with two completions each (right-padded ids ending in EOS)."""

    contexts: list
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    y2: torch.Tensor
    y2_mask: torch.Tensor
    y_texts: list[str]
    y2_texts: list[str]
    generated_tokens: int = 0
    fixed_p: np.ndarray | None = None  # the labels of fixed (offline) pairs
    # per-token log pi_ref(y_n | x, y_<n) of y and y' ((B, T) each, 0 where masked), when the
    # sampler computed them while drawing (both from the mixture); None: a reference forward
    ref_logprobs: tuple[torch.Tensor, torch.Tensor] | None = None


@dataclass
class OfflinePair:
    """A fixed pair with its label, for offline IPO / DPO."""

    context: Any
    prompt: str
    y: str
    y2: str
    p: float


def choose_prompts(n: int, size: int, seed: int, step: int, micro: int = 0, rank: int = 0):
    """Indices of ``size`` of ``n`` prompts (without replacement when there are enough)."""
    rng = np.random.default_rng(step_seed(seed, step, micro, rank, 1))
    return rng.choice(n, size=size, replace=n < size)


def encode_prompts(tokenizer, texts: Sequence[str], device=None):
    """Left-padded prompt ids and mask, tokenised with the tokenizer's special tokens."""
    ids = [tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
    prompt_ids, prompt_mask = pad_left(ids, tokenizer.pad_token_id)
    return prompt_ids.to(device), prompt_mask.to(device)


def encode_completions(tokenizer, texts: Sequence[str], device=None):
    """Right-padded completion ids ending in EOS, as the sampler would have produced them."""
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    rows = [tokenizer(t, add_special_tokens=False)["input_ids"] + [eos] for t in texts]
    width = max(len(r) for r in rows)
    ids = torch.full((len(rows), width), pad, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        ids[i, : len(r)] = torch.tensor(r)
        mask[i, : len(r)] = 1
    return ids.to(device), mask.to(device)


def draw(source: str, policy, prompt_ids, prompt_mask, *, ref_model=None, beta=0.0, **sampling):
    """Completions from ``source``: "pi", "ref" (pi_ref) or "mixture" (pi^(1-beta) pi_ref^beta).

    ``sampling`` holds ``max_new_tokens``, ``temperature``, ``eos_token_id``, ``pad_token_id``
    and ``generator``. pi_ref is ``ref_model``, or ``policy`` with its adapter off.
    """
    if source == "pi":
        return sample(policy, prompt_ids, prompt_mask, **sampling)
    if source == "ref":
        if ref_model is not None:
            return sample(ref_model, prompt_ids, prompt_mask, **sampling)
        return sample(policy, prompt_ids, prompt_mask, adapter=False, **sampling)
    if source == "mixture":
        return sample_mixture(
            policy, prompt_ids, prompt_mask, beta=beta, ref_model=ref_model, **sampling
        )
    raise ValueError(f"source={source!r} is invalid: 'pi', 'ref' or 'mixture'")


@torch.no_grad()  # the stop-gradient: no gradient flows through the sampler
def draw_pair(
    algorithm: Algorithm,
    policy,
    tokenizer,
    contexts: list,
    prompt_ids,
    prompt_mask,
    *,
    ref_model=None,
    beta: float = 0.0,
    **sampling,
) -> Pair:
    """Two completions per prompt, y from ``algorithm.y_from`` and y' from ``algorithm.y2_from``.

    When both come from the same sampler they are drawn in one call on 2B rows (cheaper than
    two calls of B). When that sampler is the mixture, it ran pi_ref on every token it drew: the
    pair keeps those log pi_ref(y_n | x, y_<n) (``ref_logprobs``), so :func:`pair_loss` needs no
    reference forward (tests/test_online.py checks that the loss and gradient are unchanged).
    """
    B = prompt_ids.shape[0]
    kw = dict(ref_model=ref_model, beta=beta, **sampling)
    ref_logprobs = None
    if algorithm.y_from == algorithm.y2_from:
        both = draw(
            algorithm.y_from, policy, prompt_ids.repeat(2, 1), prompt_mask.repeat(2, 1), **kw
        )
        texts = both.texts(tokenizer)
        ya, ma, yb, mb = both.tokens[:B], both.mask[:B], both.tokens[B:], both.mask[B:]
        ta, tb = texts[:B], texts[B:]
        if algorithm.y_from == "mixture":  # stream_logprobs = (log pi, log pi_ref) per token
            ref = both.stream_logprobs[1]
            ref_logprobs = (ref[:B], ref[B:])
    else:
        a = draw(algorithm.y_from, policy, prompt_ids, prompt_mask, **kw)
        b = draw(algorithm.y2_from, policy, prompt_ids, prompt_mask, **kw)
        ya, ma, yb, mb = a.tokens, a.mask, b.tokens, b.mask
        ta, tb = a.texts(tokenizer), b.texts(tokenizer)
    return Pair(
        contexts,
        prompt_ids,
        prompt_mask,
        ya,
        ma,
        yb,
        mb,
        ta,
        tb,
        generated_tokens=int(ma.sum() + mb.sum()),
        ref_logprobs=ref_logprobs,
    )


def offline_pair(pairs: Sequence[OfflinePair], tokenizer, device=None) -> Pair:
    """A batch of fixed pairs, encoded as the sampler would have drawn them."""
    prompt_ids, prompt_mask = encode_prompts(tokenizer, [c.prompt for c in pairs], device)
    y, ym = encode_completions(tokenizer, [c.y for c in pairs], device)
    y2, y2m = encode_completions(tokenizer, [c.y2 for c in pairs], device)
    return Pair(
        [c.context for c in pairs],
        prompt_ids,
        prompt_mask,
        y,
        ym,
        y2,
        y2m,
        [c.y for c in pairs],
        [c.y2 for c in pairs],
        fixed_p=np.array([c.p for c in pairs], dtype=float),
    )


def labels(p: np.ndarray, kind: str, rng: np.random.Generator | None = None) -> np.ndarray:
    """The loss's label from the judge's p = P(y > y'|x):

    * ``soft``: p itself (the paper's choice: the loss's optimum h* then depends on p);
    * ``sampled``: a Bernoulli(p) draw, from ``rng`` (one human-like binary judgement);
    * ``threshold``: 1[p > 1/2] (1/2 on a tie), what TRL's online trainers use.
    """
    p = np.asarray(p, dtype=float)
    if kind == "soft":
        return p
    if kind == "threshold":
        return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))
    if kind == "sampled":
        if rng is None:
            raise ValueError("sampled labels need a random generator (rng)")
        return (rng.random(p.shape) < p).astype(float)
    raise ValueError(f"kind={kind!r} is invalid: soft, sampled or threshold")


def pair_loss(
    algorithm: Algorithm,
    pair: Pair,
    label: torch.Tensor,
    tau: float,
    policy,
    ref_model=None,
    eos_token_id=None,
    forward=None,
):
    """``(loss, h, log pi(y)/pi_ref(y))`` of a batch: the mean loss with gradient through pi.

    Contrastive losses (DPO, IPO, SLiC) take h = log pi(y)/pi_ref(y) - log pi(y')/pi_ref(y').
    Nash-MD-PG's policy gradient (NLHF App. F) takes only y ~ pi with gradient; y' from the
    mixture is the opponent whose preference p is the reward; its h is reported as NaN.
    ``forward`` is the module to call for pi (the DDP-wrapped policy in data parallel training);
    ``policy`` (unwrapped) gives pi_ref when its adapter is switched off. A pair that carries the
    sampler's log pi_ref (``pair.ref_logprobs``, from the same pi_ref) skips the reference forward.
    """
    if algorithm.loss == "nash_md_pg":
        logp, ref_logp = policy_and_reference_logprobs(
            policy,
            pair.prompt_ids,
            pair.prompt_mask,
            pair.y,
            pair.y_mask,
            ref_model=ref_model,
            eos_token_id=eos_token_id,
            forward=forward,
        )
        loss = losses.nash_md_pg_loss(logp, ref_logp, label, tau).mean()
        return loss, torch.full_like(logp, float("nan")), (logp - ref_logp).detach()
    ratio_y, ratio_y2 = pair_logratios(
        policy,
        pair.prompt_ids,
        pair.prompt_mask,
        pair.y,
        pair.y_mask,
        pair.y2,
        pair.y2_mask,
        ref_model=ref_model,
        eos_token_id=eos_token_id,
        forward=forward,
        ref_logprobs=pair.ref_logprobs,
    )
    if algorithm.per_token:  # TRL's variant: log-ratios per token of each completion
        ratio_y = ratio_y / pair.y_mask.sum(-1).clamp(min=1)
        ratio_y2 = ratio_y2 / pair.y2_mask.sum(-1).clamp(min=1)
    h = ratio_y - ratio_y2
    loss = CONTRASTIVE[algorithm.loss](h, label, tau).mean()
    return loss, h.detach(), ratio_y.detach()
