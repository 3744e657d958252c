"""Exercises of notebook 10: the memory of a 4-bit policy, and the mixture's log-probs.

1. the bytes of a KV cache, from the model's config (:func:`course_lib.resources.kv_cache_bytes`);
2. the bytes bitsandbytes holds for one NF4 layer (Dettmers et al. 2023, QLoRA, Sec. 3);
3. the log-prob of a token under the token-level geometric mixture pi^(1-beta) pi_ref^beta
   (Calandriello et al. 2024, Sec. 5; :func:`course_lib.sampling.mixture_logprobs`).
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from course_lib.exercises import CheckResult, check_function
from course_lib.sampling import mixture_logprobs

#: bitsandbytes' NF4 lookup table has 16 entries (4 bits), stored per layer in fp32.
NF4_CODE_ENTRIES = 16


# -- exercise 1: the bytes of a KV cache ----------------------------------------------------------
def reference_kv_cache_bytes(config, n_sequences: int, n_tokens: int, bytes_per_number: int):
    """One KV cache: 2 (K and V) x layers x kv-heads x head-dim x tokens x sequences x bytes.

    Grouped-query attention (Ainslie et al. 2023) caches ``num_key_value_heads`` heads, not the
    query heads; ``head_dim`` defaults to ``hidden_size // num_attention_heads``.
    """
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return (
        2
        * config.num_hidden_layers
        * kv_heads
        * head_dim
        * n_tokens
        * n_sequences
        * (bytes_per_number)
    )


def _configs():
    return [
        # SmolLM2-135M: 30 layers, 9 query heads, 3 key/value heads of 64 (GQA)
        SimpleNamespace(
            num_hidden_layers=30,
            num_attention_heads=9,
            num_key_value_heads=3,
            head_dim=64,
            hidden_size=576,
        ),
        # multi-head attention: no num_key_value_heads, head_dim from hidden / heads
        SimpleNamespace(num_hidden_layers=12, num_attention_heads=12, hidden_size=768),
        # head_dim given and not hidden / heads (as in Gemma-7B: 3072 / 16 = 192, not 256)
        SimpleNamespace(
            num_hidden_layers=28,
            num_attention_heads=16,
            num_key_value_heads=16,
            head_dim=256,
            hidden_size=3072,
        ),
    ]


def check_kv_cache_bytes(learner, extra_cases=()) -> CheckResult:
    """Exercise 1: ``learner(config, n_sequences, n_tokens, bytes_per_number)`` returns the bytes
    of one KV cache, exactly. ``extra_cases``: more ``(config, n_sequences, n_tokens,
    bytes_per_number)`` tuples (the notebook passes SmolLM2's config)."""
    cases = []
    for config in _configs():
        for n_seq, n_tok, width in ((1, 1, 4), (32, 240, 2), (4, 185, 4)):
            cases.append(((config, n_seq, n_tok, width), {}))
    cases += [((*c,), {}) for c in extra_cases]
    return check_function(
        "the bytes of a KV cache",
        learner,
        reference_kv_cache_bytes,
        cases,
        atol=0.5,
        rtol=0.0,
        hint="a cache keeps a key AND a value vector per layer, per token, per sequence and per "
        "KEY/VALUE head (num_key_value_heads when the config has it, else num_attention_heads); "
        "a head has head_dim numbers (hidden_size // num_attention_heads when head_dim is missing)",
    )


def solution_kv_cache_bytes(config, n_sequences, n_tokens, bytes_per_number):
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim
    return per_token * n_tokens * n_sequences * bytes_per_number


# -- exercise 2: the bytes of one NF4 layer --------------------------------------------------------
def reference_nf4_layer_bytes(out_features: int, in_features: int, blocksize: int = 64) -> int:
    """Bytes bitsandbytes holds for one NF4 ``Linear4bit`` weight without double quantisation.

    The ``out x in`` weights are cut into blocks of ``blocksize``; each weight is a 4-bit code
    (two per byte), each block has one fp32 scale (its absolute maximum), and the layer keeps the
    16-entry NF4 lookup table in fp32 (QLoRA, Dettmers et al. 2023, Sec. 3; bitsandbytes'
    ``QuantState``). Double quantisation would store the scales in 8 bits instead.
    """
    n = out_features * in_features
    return math.ceil(n / 2) + 4 * math.ceil(n / blocksize) + 4 * NF4_CODE_ENTRIES


def check_nf4_layer_bytes(learner) -> CheckResult:
    """Exercise 2: ``learner(out_features, in_features, blocksize)`` returns the bytes of one
    NF4 layer: packed codes, one fp32 scale per block, the 16-entry fp32 table."""
    cases = [
        ((576, 576, 64), {}),  # SmolLM2's q_proj
        ((192, 576, 64), {}),  # k_proj, v_proj (3 key/value heads of 64)
        ((1536, 576, 64), {}),  # gate_proj, up_proj
        ((576, 1536, 64), {}),  # down_proj
        ((4096, 4096, 64), {}),
        ((8, 16, 128), {}),  # fewer weights than one block
        ((3, 5, 64), {}),  # an odd number of weights: the last byte holds one code
    ]
    return check_function(
        "the bytes of one NF4 layer",
        learner,
        reference_nf4_layer_bytes,
        cases,
        atol=0.5,
        rtol=0.0,
        hint="4 bits a weight is half a byte (round up); one 4-byte scale per block of "
        "`blocksize` weights (round up: a partial block has a scale too); plus the table of "
        "16 fp32 values that maps each 4-bit code to a number",
    )


def solution_nf4_layer_bytes(out_features, in_features, blocksize=64):
    n = out_features * in_features
    codes = (n + 1) // 2
    scales = -(-n // blocksize) * 4
    return codes + scales + 16 * 4


# -- exercise 3: the mixture's log-prob of one token ----------------------------------------------
def reference_mixture_logprob(z_pi, z_ref, beta: float, token):
    """log pi~^beta(token) with pi~^beta = softmax((1 - beta) z_pi + beta z_ref) (paper Sec. 5),
    for next-token logits ``z_pi``, ``z_ref`` of shape (..., V) and integer ``token`` (...)."""
    z_pi, z_ref = torch.as_tensor(z_pi), torch.as_tensor(z_ref)
    token = torch.as_tensor(token, dtype=torch.long)
    logp = mixture_logprobs(z_pi.double(), z_ref.double(), beta)
    return logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)


def _mixture_cases(extra=()):
    gen = torch.Generator().manual_seed(10)
    cases = []
    for beta, scale in ((0.0, 1.0), (0.125, 3.0), (0.5, 1.0), (1.0, 2.0)):
        z_pi = scale * torch.randn(4, 11, generator=gen, dtype=torch.float64)
        z_ref = scale * torch.randn(4, 11, generator=gen, dtype=torch.float64)
        token = torch.randint(0, 11, (4,), generator=gen)
        cases.append(((z_pi, z_ref, beta, token), {}))
    # logits shifted by different constants per model: the mixture must not care
    z = torch.randn(2, 7, generator=gen, dtype=torch.float64)
    cases.append(((z + 5.0, z - 40.0, 0.3, torch.tensor([1, 6])), {}))
    cases += [((*c,), {}) for c in extra]
    return cases


def check_mixture_logprob(learner, extra_cases=()) -> CheckResult:
    """Exercise 3: ``learner(z_pi, z_ref, beta, token)`` returns log pi~^beta(token), one value
    per row. ``extra_cases``: more ``(z_pi, z_ref, beta, token)`` tuples (the notebook passes
    the real policy's logits)."""
    return check_function(
        "the log-prob of a token under the geometric mixture",
        learner,
        reference_mixture_logprob,
        _mixture_cases(extra_cases),
        atol=1e-5,
        rtol=1e-5,
        hint="mix the LOGITS, (1 - beta) z_pi + beta z_ref, then normalise over the vocabulary "
        "(log-softmax) and read the token's entry; (1 - beta) log pi + beta log pi_ref alone is "
        "not normalised, and (1 - beta) pi + beta pi_ref is the arithmetic mixture, not the "
        "geometric one",
    )


def solution_mixture_logprob(z_pi, z_ref, beta, token):
    z = (1 - beta) * torch.as_tensor(z_pi).double() + beta * torch.as_tensor(z_ref).double()
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    return logp.gather(-1, torch.as_tensor(token, dtype=torch.long).unsqueeze(-1)).squeeze(-1)
