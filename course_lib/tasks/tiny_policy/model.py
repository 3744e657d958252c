"""The tiny policy's architecture and prompt format, sampling summaries from it, and its win
rate against the corpus references under the oracle."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from course_lib.llm import tiny_llama
from course_lib.tasks.oracle import Oracle
from course_lib.tasks.summarisation import Record
from course_lib.tasks.tokenizer import BOS, EOS, SEP

SEP_ID = 4  # id of <tldr> in data/tokenizer (the tokenizer module fixes the special ids)


@dataclass(frozen=True)
class TinyPolicySpec:
    """Architecture and optimiser of the tiny policy (defaults: the committed model)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_len: int = 320  # tokens; the longest post + summary of the corpus is about 230
    batch_size: int = 16
    lr: float = 3e-3
    sft_lr: float = 1e-3  # fine-tuning on the summaries, after pre-training
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0


def make_model(vocab_size: int, spec: TinyPolicySpec = TinyPolicySpec()):
    """A freshly initialised ``LlamaForCausalLM`` (tied input/output embeddings), seeded with
    ``spec.seed`` without moving the caller's random state; in eval mode."""
    model = tiny_llama(
        vocab_size=vocab_size,
        hidden=spec.hidden_size,
        layers=spec.num_layers,
        heads=spec.num_heads,
        intermediate=spec.intermediate_size,
        max_positions=spec.max_len,
        seed=spec.seed,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    # tiny_llama builds untied embeddings; tying them afterwards gives the same weights and the
    # same config.json as building the config with tie_word_embeddings=True (the committed model)
    model.config.tie_word_embeddings = True
    model.tie_weights()
    return model


def prompt_text(post: str) -> str:
    """What the policy is conditioned on: ``<s> post <tldr>``."""
    return f"{BOS} {post} {SEP}"


def example_ids(tok, post: str, summary: str) -> list[int]:
    """Token ids of one training example ``<s> post <tldr> summary </s>``."""
    return tok(f"{prompt_text(post)} {summary} {EOS}")["input_ids"]


def encode_corpus(tok, records: list[Record], max_len: int) -> list[list[int]]:
    """Every (post, summary) pair of ``records``; examples over ``max_len`` tokens are dropped."""
    texts = [f"{prompt_text(r.post)} {s.text} {EOS}" for r in records for s in r.summaries]
    return [ids for ids in tok(texts)["input_ids"] if len(ids) <= max_len]


def generate_summaries(
    model,
    tok,
    posts: list[str],
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
    batch_size: int = 32,
) -> list[str]:
    """One summary per post: ancestral sampling at ``temperature`` (or greedy decoding)."""
    import torch

    if temperature <= 0 and not greedy:
        raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
    torch.manual_seed(seed)
    tok.padding_side = "left"
    out: list[str] = []
    for k in range(0, len(posts), batch_size):
        enc = tok(
            [prompt_text(p) for p in posts[k : k + batch_size]], return_tensors="pt", padding=True
        )
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else temperature,
                top_k=0 if not greedy else None,
                top_p=None,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(tok.batch_decode(new, skip_special_tokens=True))
    return out


def win_rate_vs_reference(
    records: list[Record], samples: list[str], oracle: Oracle | None = None
) -> dict:
    """mean_x P*(sample(x) > reference(x) | x) and its standard error over prompts."""
    oracle = oracle or Oracle("bt")
    if len(records) != len(samples) or not records:
        raise ValueError(f"need one sample per record, got {len(samples)} for {len(records)}")
    p = np.array([oracle.prob(r, y, r.reference) for r, y in zip(records, samples, strict=True)])
    aspects = np.array(
        [oracle.aspects(r, y).vector() for r, y in zip(records, samples, strict=True)]
    )
    return {
        "win_rate": float(p.mean()),
        "stderr": float(p.std(ddof=1) / math.sqrt(len(p))) if len(p) > 1 else float("nan"),
        "n": len(p),
        "mean_aspects": dict(
            zip(
                ("coverage", "faithfulness", "length", "form"),
                aspects.mean(0).round(4).tolist(),
                strict=True,
            )
        ),
    }
