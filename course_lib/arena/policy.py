"""The arena's policy: the course's tiny Llama, its reference pi_ref, and its exact distribution.

pi_ref is a freshly initialised :func:`course_lib.llm.tiny_llama` moved away from uniform by a
few seeded supervised steps (:func:`course_lib.logprobs.supervised_steps`) on completions drawn from
a skewed *teacher*: a random distribution over the tree whose next-token logits are Gaussian
(standard deviation ``teacher_scale``). The policy starts as pi_ref and is trained either fully,
against a frozen copy (``ref_model``), or with LoRA (:func:`course_lib.llm.apply_lora`), where
pi_ref is the adapter-off base.

:func:`sequence_distribution` is the exact pi_theta(y | x) over every enumerated completion of
every prompt, from one batched forward (:func:`course_lib.logprobs.sequence_logprobs`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch

from course_lib.arena.language import Language
from course_lib.llm import LoraSettings, adapter_disabled, apply_lora, tiny_llama
from course_lib.logprobs import sequence_logprobs, supervised_steps


@dataclass(frozen=True)
class PolicySpec:
    """The tiny Llama and how pi_ref is made. ``lora_r = 0``: full fine-tuning."""

    hidden: int = 32
    layers: int = 1
    heads: int = 4
    init_std: float = 0.02
    teacher_scale: float = 0.8  # spread of the teacher's next-token logits (pi_ref's skew)
    sft_samples: int = 256  # teacher completions per prompt
    sft_steps: int = 30
    sft_lr: float = 1e-2
    lora_r: int = 0
    lora_alpha: int = 16


def teacher_distribution(language: Language, scale: float, seed: int) -> np.ndarray:
    """``(n_prompts, n_completions)``: a random distribution on the tree, one per prompt, whose
    conditionals are ``softmax(N(0, scale^2))`` at every node (seeded)."""
    rng = np.random.default_rng(seed)
    tree = language.tree
    out = []
    for _ in range(language.n_prompts):
        z = rng.normal(0.0, scale, size=(tree.n_nodes, language.vocab_size))
        log_cond = (z - np.log(np.exp(z).sum(1, keepdims=True))).ravel()
        out.append(np.exp(tree.paths @ log_cond))
    return np.stack(out)


def build_reference(language: Language, spec: PolicySpec = PolicySpec(), seed: int = 0):
    """pi_ref: a tiny Llama after ``spec.sft_steps`` full-batch Adam steps on teacher samples.

    Everything is seeded by ``seed`` (weights, teacher, samples); the caller's RNGs are not moved.
    """
    model = tiny_llama(
        vocab_size=language.vocab_size,
        hidden=spec.hidden,
        layers=spec.layers,
        heads=spec.heads,
        max_positions=16,
        seed=seed,
        init_std=spec.init_std,
        eos_token_id=language.eos_id,
        pad_token_id=language.eos_id,
        bos_token_id=language.eos_id,
    )
    teacher = teacher_distribution(language, spec.teacher_scale, seed)
    rng = np.random.default_rng(seed + 1)
    prompt_ids, prompt_mask, ids, mask = language.all_pairs_tensors()
    n = language.n_completions
    rows = np.concatenate(
        [i * n + rng.choice(n, size=spec.sft_samples, p=p) for i, p in enumerate(teacher)]
    )
    rows = torch.as_tensor(rows)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        supervised_steps(
            model,
            prompt_ids[rows],
            prompt_mask[rows],
            ids[rows],
            mask[rows],
            steps=spec.sft_steps,
            lr=spec.sft_lr,
            eos_token_id=language.eos_id,
        )
    return model.eval()


def make_policy(reference, spec: PolicySpec = PolicySpec(), seed: int = 0):
    """``(policy, ref_model)``: a trainable copy of pi_ref and a frozen one (full fine-tuning),
    or a LoRA policy on a copy of pi_ref and ``None`` (pi_ref is its adapter-off base)."""
    base = copy.deepcopy(reference)
    if spec.lora_r:
        with torch.random.fork_rng(devices=[]):  # LoRA's A is drawn from the global generator
            torch.manual_seed(seed)
            policy = apply_lora(base, LoraSettings(r=spec.lora_r, alpha=spec.lora_alpha))
        return policy, None
    frozen = copy.deepcopy(reference).eval().requires_grad_(False)
    return base.requires_grad_(True), frozen


@torch.no_grad()
def sequence_distribution(
    model, language: Language, adapter: bool = True, normalise: bool = True
) -> np.ndarray:
    """Exact ``pi(y | x)``, shape ``(n_prompts, n_completions)``, float64, from ONE forward over
    every completion of every prompt: ``exp(sum_n log pi(y_n | x, y_<n))`` with the model's
    float32 log-softmax. Rows sum to one up to float32 rounding (about 1e-6); they are returned
    renormalised unless ``normalise=False``. ``adapter=False`` evaluates a LoRA model's base
    (pi_ref).
    """
    prompt_ids, prompt_mask, ids, mask = language.all_pairs_tensors()
    device = next(model.parameters()).device
    args = [t.to(device) for t in (prompt_ids, prompt_mask, ids, mask)]
    was_training = model.training
    model.eval()
    try:
        if adapter:
            logp, _ = sequence_logprobs(model, *args, eos_token_id=language.eos_id)
        else:
            with adapter_disabled(model):
                logp, _ = sequence_logprobs(model, *args, eos_token_id=language.eos_id)
    finally:
        model.train(was_training)
    pi = np.exp(logp.double().cpu().numpy()).reshape(language.n_prompts, -1)
    return pi / pi.sum(1, keepdims=True) if normalise else pi
