"""Notebook 11 (the memory of a 4-bit policy, and the mixture's log-probs): reference solutions,
cases, hints and answers of its exercises.

1. the bytes of a KV cache, from the model's config (:func:`course_lib.resources.kv_cache_bytes`);
2. the bytes bitsandbytes holds for one NF4 layer (Dettmers et al. 2023, QLoRA, Sec. 3);
3. the log-prob of a token under the token-level geometric mixture pi^(1-beta) pi_ref^beta
   (Calandriello et al. 2024, Sec. 5; :func:`course_lib.sampling.mixture_logprobs`).

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import math
from types import SimpleNamespace

import torch

from course_lib.exercises import Exercise, ExerciseSet, as_number
from course_lib.sampling import mixture_logprobs

#: bitsandbytes' NF4 lookup table has 16 entries (4 bits), stored per layer in fp32.
NF4_CODE_ENTRIES = 16


# ---- reference solutions ---------------------------------------------------------------------
def kv_cache_bytes(config, n_sequences, n_tokens, bytes_per_number):
    """One KV cache: 2 (K and V) x layers x kv-heads x head-dim x tokens x sequences x bytes.
    Grouped-query attention (Ainslie et al. 2023) caches ``num_key_value_heads`` heads, not the
    query heads; ``head_dim`` defaults to ``hidden_size // num_attention_heads``."""
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim
    return per_token * n_tokens * n_sequences * bytes_per_number


def gpu_kv_bytes():
    """The recorded GPU run: 32 sequences (16 prompts x 2 completions) of 176 + 64 tokens, two
    caches (pi and pi_ref), bfloat16 (2 bytes), on SmolLM2-135M's config."""
    return 2 * kv_cache_bytes(smollm2_config(), 32, 176 + 64, 2)


def nf4_layer_bytes(out_features, in_features, blocksize=64):
    """Packed 4-bit codes (two per byte, rounded up), one fp32 scale per block of ``blocksize``
    weights (a partial block has one too), and the 16-entry fp32 lookup table."""
    n = out_features * in_features
    codes = (n + 1) // 2
    scales = -(-n // blocksize) * 4
    return codes + scales + 16 * 4


def mixture_logprob(z_pi, z_ref, beta, token):
    """log of softmax((1 - beta) z_pi + beta z_ref) at ``token``, one value per row."""
    z = (1 - beta) * torch.as_tensor(z_pi).double() + beta * torch.as_tensor(z_ref).double()
    logp = z - torch.logsumexp(z, dim=-1, keepdim=True)
    return logp.gather(-1, torch.as_tensor(token, dtype=torch.long).unsqueeze(-1)).squeeze(-1)


# ---- what the checks compare with ------------------------------------------------------------
def smollm2_config():
    """SmolLM2-135M's attention sizes: 30 layers, 9 query heads, 3 key/value heads of 64."""
    return SimpleNamespace(
        num_hidden_layers=30,
        num_attention_heads=9,
        num_key_value_heads=3,
        head_dim=64,
        hidden_size=576,
    )


def library_kv_cache_bytes(config, n_sequences: int, n_tokens: int, bytes_per_number: int):
    """The same count, written as :func:`course_lib.resources.kv_cache_bytes` does it."""
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
        smollm2_config(),
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


def _kv_cases():
    cases = []
    for config in _configs():
        for n_seq, n_tok, width in ((1, 1, 4), (32, 240, 2), (4, 185, 4)):
            cases.append(((config, n_seq, n_tok, width), {}))
    return cases


def library_nf4_layer_bytes(out_features: int, in_features: int, blocksize: int = 64) -> int:
    """Bytes bitsandbytes holds for one NF4 ``Linear4bit`` weight without double quantisation:
    the ``out x in`` weights are cut into blocks of ``blocksize``; each weight is a 4-bit code
    (two per byte), each block has one fp32 scale (its absolute maximum), and the layer keeps the
    16-entry NF4 lookup table in fp32 (bitsandbytes' ``QuantState``). Double quantisation would
    store the scales in 8 bits instead."""
    n = out_features * in_features
    return math.ceil(n / 2) + 4 * math.ceil(n / blocksize) + 4 * NF4_CODE_ENTRIES


def library_mixture_logprob(z_pi, z_ref, beta: float, token):
    """log pi~^beta(token) through :func:`course_lib.sampling.mixture_logprobs`, the sampler's."""
    z_pi, z_ref = torch.as_tensor(z_pi), torch.as_tensor(z_ref)
    token = torch.as_tensor(token, dtype=torch.long)
    logp = mixture_logprobs(z_pi.double(), z_ref.double(), beta)
    return logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)


def _mixture_cases():
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
    return cases


def _verify_gpu_kv_bytes(value, recorded) -> list[str]:
    got, problems = as_number(value, "gpu_kv_bytes")
    if problems:
        return problems
    if got != float(recorded):
        return [
            "gpu_kv_bytes does not match the recorded run's estimate: count both caches (pi "
            "and pi_ref), every sequence and every token of one step, in the run's dtype"
        ]
    return []


EXERCISES = ExerciseSet(
    "nb11",
    [
        Exercise(
            "kv_cache_bytes",
            1,
            kv_cache_bytes,
            cases=_kv_cases,
            expected=library_kv_cache_bytes,
            title="the bytes of a KV cache",
            atol=0.5,
            rtol=0.0,
            hints=(
                "a cache keeps, for every layer, token and sequence, a key vector AND a value "
                "vector per key/value head; count numbers, then multiply by the bytes of one.",
                "2 x num_hidden_layers x kv_heads x head_dim x n_tokens x n_sequences x bytes, "
                "with kv_heads = num_key_value_heads when the config has it (grouped-query "
                "attention), else num_attention_heads, and head_dim = hidden_size // "
                "num_attention_heads when the config has none.",
            ),
        ),
        Exercise(
            "gpu_kv_bytes",
            1,
            gpu_kv_bytes,
            title="the KV caches of one step of the recorded GPU run",
            verify=_verify_gpu_kv_bytes,
            answers=("gpu_kv_bytes",),
            hints=(
                "the cell prints the recorded run's sizes: how many sequences, how many tokens "
                "each, how many caches and which dtype. Use your function on SmolLM2's config.",
                "two caches x kv_cache_bytes_by_hand(model.config, sequences, prompt + new "
                "tokens, bytes of bfloat16).",
            ),
        ),
        Exercise(
            "nf4_layer_bytes",
            2,
            nf4_layer_bytes,
            cases=lambda: [
                ((576, 576, 64), {}),  # SmolLM2's q_proj
                ((192, 576, 64), {}),  # k_proj, v_proj (3 key/value heads of 64)
                ((1536, 576, 64), {}),  # gate_proj, up_proj
                ((576, 1536, 64), {}),  # down_proj
                ((4096, 4096, 64), {}),
                ((8, 16, 128), {}),  # fewer weights than one block
                ((3, 5, 64), {}),  # an odd number of weights: the last byte holds one code
            ],
            expected=library_nf4_layer_bytes,
            title="the bytes of one NF4 layer",
            atol=0.5,
            rtol=0.0,
            hints=(
                "three parts: the codes (4 bits a weight), the scales (one per block of "
                "`blocksize` weights) and the lookup table of the 16 code values.",
                "ceil(n / 2) bytes of codes + 4 x ceil(n / blocksize) bytes of fp32 scales "
                "+ 16 x 4 bytes of table, n = out_features x in_features.",
            ),
            answer=(
                "Only the linear layers are in NF4. The embedding (tied to the output head, "
                "about a fifth of the weights) and the norms stay in full precision, and take "
                "more memory than all the 4-bit codes together (section 1's table); the scales "
                "add 4 bytes per 64 weights (NF4 costs 4.5 bits a weight, not 4); and the LoRA "
                "adapter is in fp32. Hence about 0.36 of the fp32 checkpoint, not 1/8."
            ),
        ),
        Exercise(
            "mixture_logprob",
            3,
            mixture_logprob,
            cases=_mixture_cases,
            expected=library_mixture_logprob,
            title="the log-prob of a token under the geometric mixture",
            atol=1e-5,
            rtol=1e-5,
            hints=(
                "the token-level geometric mixture is a softmax of a combination of the two "
                "models' logits; its log-prob at a token is a log-softmax read at that token.",
                "z = (1 - beta) z_pi + beta z_ref; log-softmax over the vocabulary "
                "(z - logsumexp(z)), then gather the token's entry in each row.",
            ),
            answer=(
                "(1 - beta) log pi + beta log pi_ref is the mixture's log-prob only up to the "
                "normaliser log sum_v pi(v)^(1-beta) pi_ref(v)^beta, which is not 0 and depends "
                "on the context; it must be subtracted. At beta = 1 the mixture is pi_ref, the "
                "model with its adapter switched off: it does not depend on the adapter at all."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_kv_cache_bytes = EXERCISES.checker("kv_cache_bytes")
check_gpu_kv_bytes = EXERCISES.checker("gpu_kv_bytes")
check_nf4_layer_bytes = EXERCISES.checker("nf4_layer_bytes")
check_mixture_logprob = EXERCISES.checker("mixture_logprob")
