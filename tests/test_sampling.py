"""The mixture sampler is exact: course_lib.sampling against full recomputation and enumeration.

The token-level geometric mixture (Calandriello et al., 2024, Sec. 5) samples each token from
softmax(((1 - beta) z_pi + beta z_ref) / T). These tests check the sampler against code that
shares nothing with it (one unpadded row at a time, no KV cache, both models run in full), and
build the two wrong samplers of notes/trl.md §4.1-4.2 (D1: one KV cache shared by pi and
pi_ref; D2: the reference taken from the model with its LoRA adapter still on) to show that the same
tests reject them.
"""

from __future__ import annotations

import copy
import itertools

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from course_lib.llm import LoraSettings, apply_lora, reference, tiny_llama
from course_lib.logprobs import pad_left, position_ids_from_mask, sequence_logprobs
from course_lib.sampling import (
    LMStream,
    mixture_logprobs,
    new_cache,
    sample,
    sample_from_streams,
    sample_mixture,
)
from course_lib.streams import MixedBatchStream

V, EOS = 5, 4  # tokens 0-3 are words, 4 is EOS
PROMPTS = [[0, 1], [2, 3, 0, 1], [1]]  # different lengths: the batch is left-padded


def _train_adapter(peft_model, steps=25, lr=0.05, seed=0):
    """A few Adam steps towards fixed sequences, so that the adapter is clearly nonzero."""
    gen = torch.Generator().manual_seed(seed)
    data = torch.randint(0, V - 1, (8, 6), generator=gen)
    params = [p for p in peft_model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    peft_model.train()
    for _ in range(steps):
        loss = peft_model(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return peft_model.eval()


@pytest.fixture(scope="module")
def lms():
    """(policy with a trained LoRA adapter, an untouched copy of its base, a separate model)."""
    base = tiny_llama(
        vocab_size=V, hidden=32, layers=1, heads=2, init_std=0.6, seed=3, eos_token_id=EOS
    )
    pristine = copy.deepcopy(base)
    # LoRA's A is drawn from the global generator: seed it, or the fixture (and the enumeration
    # test's bins) would depend on which tests ran before it
    torch.manual_seed(0)
    policy = _train_adapter(apply_lora(base, LoraSettings(r=4, alpha=8)))
    other = tiny_llama(vocab_size=V, hidden=32, layers=1, heads=2, init_std=0.6, seed=11)
    return policy, pristine, other


def exact_logprobs(policy, prompt, completion, beta, ref_model=None, temperature=1.0):
    """Per-token log-probs of one completion under the token-level mixture, recomputed in full.

    Independent of the sampler: one unpadded row, no cache, default positions, the reference
    from ``ref_model`` or from ``policy`` under ``disable_adapter``.
    """
    ids = torch.tensor([list(prompt) + list(completion)])
    start = len(prompt) - 1
    with torch.no_grad():
        z_pi = policy(input_ids=ids).logits[0, start:-1]
        if ref_model is None:
            with policy.disable_adapter():
                z_ref = policy(input_ids=ids).logits[0, start:-1]
        else:
            z_ref = ref_model(input_ids=ids).logits[0, start:-1]
    z = ((1 - beta) * z_pi.double() + beta * z_ref.double()) / temperature
    return torch.log_softmax(z, -1).gather(-1, torch.tensor(completion)[:, None]).squeeze(-1)


def rows(samples):
    """(prompt, completion) token lists per row, pads stripped."""
    out = []
    for i in range(samples.tokens.shape[0]):
        prompt = samples.prompt_ids[i][samples.prompt_mask[i].bool()].tolist()
        completion = samples.tokens[i][samples.mask[i].bool()].tolist()
        out.append((prompt, completion))
    return out


def max_logprob_error(samples, policy, beta, ref_model=None, temperature=1.0):
    worst = 0.0
    for i, (prompt, completion) in enumerate(rows(samples)):
        exact = exact_logprobs(policy, prompt, completion, beta, ref_model, temperature)
        got = samples.logprobs[i][samples.mask[i].bool()].double()
        worst = max(worst, float((exact - got).abs().max()))
    return worst


def check_eos_layout(samples):
    """mask = 1 up to and including the first EOS; after it pad tokens, mask 0, log-prob 0."""
    for i in range(samples.tokens.shape[0]):
        toks, mask = samples.tokens[i].tolist(), samples.mask[i].tolist()
        n = toks.index(EOS) + 1 if EOS in toks else len(toks)
        assert mask == [1] * n + [0] * (len(toks) - n)
        assert all(t == EOS for t in toks[n:])  # pad token defaults to EOS
        assert float(samples.logprobs[i, n:].abs().sum()) == 0.0


def left_padded():
    return pad_left(PROMPTS * 4, pad_token_id=EOS)


@pytest.mark.parametrize("beta, temperature", [(0.0, 1.0), (0.3, 1.0), (1.0, 1.0), (0.3, 0.7)])
def test_mixture_logprobs_match_full_recomputation(lms, beta, temperature):
    policy, _, _ = lms
    ids, mask = left_padded()
    s = sample_mixture(
        policy,
        ids,
        mask,
        beta=beta,
        max_new_tokens=6,
        temperature=temperature,
        eos_token_id=EOS,
        seed=0,
    )
    check_eos_layout(s)
    assert s.mask[:, 0].all() and s.tokens.shape[1] <= 6
    # float32: a cached and an uncached forward differ by about 1e-5 (more with threads that
    # reorder sums); the wrong samplers below miss by more than 1e-2
    assert max_logprob_error(s, policy, beta, temperature=temperature) < 1e-4


def test_mixture_with_a_separate_reference_model(lms):
    policy, _, other = lms
    ids, mask = left_padded()
    s = sample_mixture(
        policy, ids, mask, beta=0.3, ref_model=other, max_new_tokens=6, eos_token_id=EOS, seed=1
    )
    assert max_logprob_error(s, policy, 0.3, ref_model=other) < 1e-4
    # ... and it is not the adapter-off base: the same tokens are scored differently there
    assert max_logprob_error(s, policy, 0.3) > 1e-2


def test_beta_0_is_plain_pi_and_beta_1_is_plain_pi_ref(lms):
    policy, pristine, _ = lms
    ids, mask = left_padded()
    kw = dict(max_new_tokens=6, eos_token_id=EOS)
    for seed in range(3):
        mix0 = sample_mixture(policy, ids, mask, beta=0.0, seed=seed, **kw)
        pi = sample(policy, ids, mask, seed=seed, **kw)
        assert torch.equal(mix0.tokens, pi.tokens) and torch.equal(mix0.mask, pi.mask)
        torch.testing.assert_close(mix0.logprobs, pi.logprobs, atol=1e-6, rtol=0)
        mix1 = sample_mixture(policy, ids, mask, beta=1.0, seed=seed, **kw)
        ref = sample(policy, ids, mask, seed=seed, adapter=False, **kw)
        base = sample(pristine, ids, mask, seed=seed, **kw)  # the base before LoRA existed
        assert torch.equal(mix1.tokens, ref.tokens) and torch.equal(mix1.tokens, base.tokens)
        torch.testing.assert_close(mix1.logprobs, base.logprobs, atol=1e-6, rtol=0)
    # the trained adapter matters: pi and pi_ref draw different tokens at the same seed
    assert not torch.equal(pi.tokens, ref.tokens)


def test_shared_seeds_make_a_small_beta_mixture_draw_pi_s_tokens(lms):
    """Common random numbers: one seed drives both samplers, so where the mixture's token
    probabilities are close to pi's (small beta) the same uniform draws pick the same tokens.
    This is why two methods trained with the same seeds (online IPO and IPO-MD at beta = 0.125,
    results/real-cpu/) can draw identical samples while pi is near pi_ref."""
    policy, _, _ = lms
    ids, mask = left_padded()
    kw = dict(max_new_tokens=6, eos_token_id=EOS)

    def agreement(beta):
        same = total = 0
        for seed in range(40):
            pi = sample(policy, ids, mask, seed=seed, **kw)
            mix = sample_mixture(policy, ids, mask, beta=beta, seed=seed, **kw)
            both = pi.mask.bool() & mix.mask.bool()
            same += int((pi.tokens == mix.tokens)[both].sum())
            total += int(both.sum())
        return same / total

    small, large = agreement(0.05), agreement(1.0)
    assert small > 0.8 and small > large + 0.3, (small, large)


def test_reference_pass_has_the_adapter_off_after_training(lms):
    policy, pristine, _ = lms
    ids = torch.tensor([[0, 1, 2, 3, 0]])
    lora_b = [p for n, p in policy.named_parameters() if "lora_B" in n]
    assert lora_b and max(float(p.detach().abs().max()) for p in lora_b) > 1e-2  # trained
    stream_on = LMStream(policy, adapter=True, use_cache=False)
    stream_off = LMStream(policy, adapter=False, use_cache=False)
    mask = torch.ones_like(ids)
    pos = torch.arange(ids.shape[1])[None]
    with torch.no_grad():
        z_on, z_off = stream_on(ids, mask, pos), stream_off(ids, mask, pos)
        z_base = pristine(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(z_off, z_base, atol=1e-6, rtol=0)
    assert float((z_on - z_base).abs().max()) > 0.1
    # the same as peft's own context manager, and the adapter stays trainable afterwards
    with torch.no_grad(), policy.disable_adapter():
        z_peft = policy(input_ids=ids).logits[:, -1]
    torch.testing.assert_close(z_off, z_peft, atol=1e-6, rtol=0)
    assert all(p.requires_grad for n, p in policy.named_parameters() if "lora_" in n)
    # the adapter is back on after the reference pass
    with torch.no_grad():
        torch.testing.assert_close(policy(input_ids=ids).logits[:, -1], z_on, atol=1e-6, rtol=0)


def test_cached_and_uncached_sampling_agree(lms):
    policy, _, _ = lms
    ids, mask = left_padded()
    a = sample_mixture(policy, ids, mask, beta=0.3, max_new_tokens=6, eos_token_id=EOS, seed=5)
    b = sample_mixture(
        policy, ids, mask, beta=0.3, max_new_tokens=6, eos_token_id=EOS, seed=5, use_cache=False
    )
    assert torch.equal(a.tokens, b.tokens)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)


# --- the wrong samplers of notes/trl.md §4.1-4.2, built from the same parts ---------------------


def shared_cache_sampler(policy, ids, mask, beta, **kw):
    """D1: both forward passes append to one KV cache object."""
    cache = new_cache(policy)
    streams = [
        LMStream(policy, adapter=True, cache=cache),
        LMStream(policy, adapter=False, cache=cache),
    ]
    return sample_from_streams(streams, [1 - beta, beta], ids, mask, **kw)


def adapter_on_reference_sampler(policy, ids, mask, beta, **kw):
    """D2: the 'reference' is the PEFT model with its adapter still on, i.e. pi itself."""
    streams = [LMStream(policy, adapter=True), LMStream(policy, adapter=True)]
    return sample_from_streams(streams, [1 - beta, beta], ids, mask, **kw)


def correct_sampler(policy, ids, mask, beta, **kw):
    return sample_mixture(policy, ids, mask, beta=beta, **kw)


SAMPLERS = {
    "correct": correct_sampler,
    "D1 shared cache": shared_cache_sampler,
    "D2 adapter-on reference": adapter_on_reference_sampler,
}


@pytest.mark.parametrize("name", ["D1 shared cache", "D2 adapter-on reference"])
def test_wrong_samplers_fail_the_recomputation_check(lms, name):
    policy, _, _ = lms
    ids, mask = left_padded()
    s = SAMPLERS[name](
        policy,
        ids,
        mask,
        0.3,
        max_new_tokens=6,
        eos_token_id=EOS,
        generator=torch.Generator().manual_seed(0),
    )
    assert max_logprob_error(s, policy, 0.3) > 1e-2


def enumerate_completions(max_new_tokens):
    """Every completion the sampler can return: words then EOS, or max_new_tokens words."""
    words = range(V - 1)
    out = []
    for n in range(max_new_tokens):
        out += [(*w, EOS) for w in itertools.product(words, repeat=n)]
    out += list(itertools.product(range(V), repeat=max_new_tokens))
    # a full-length completion may end with EOS only at its last place
    return [c for c in dict.fromkeys(out) if EOS not in c[:-1]]


def chi_square_pvalue(samples, exact):
    counts = dict.fromkeys(exact, 0)
    tokens, mask = samples.tokens.numpy(), samples.mask.numpy().astype(bool)
    for row, keep in zip(tokens, mask, strict=True):
        counts[tuple(row[keep].tolist())] += 1  # KeyError: a completion said to be impossible
    n = tokens.shape[0]
    obs = np.array([counts[c] for c in exact], dtype=float)
    exp = np.array([exact[c] for c in exact]) * n
    small = exp < 5  # pool rare completions so every expected count is >= 5
    obs = np.append(obs[~small], obs[small].sum())
    exp = np.append(exp[~small], exp[small].sum())
    if exp[-1] == 0:
        obs, exp = obs[:-1], exp[:-1]
    return chisquare(obs, exp).pvalue, int((~small).sum())


def test_sample_frequencies_match_the_exact_token_level_mixture(lms):
    """Enumerate every completion of <= 3 tokens, compute its exact mixture probability, and run
    a chi-square test on 8 000 samples of each sampler at a fixed seed: the correct sampler
    passes, D1 and D2 are rejected."""
    policy, _, _ = lms
    beta, T, prompt = 0.3, 3, [0, 1, 2]
    completions = enumerate_completions(T)
    assert len(completions) == 1 + 4 + 4 * 4 * 5  # (EOS), (w, EOS), (w, w, any)
    exact = {c: float(exact_logprobs(policy, prompt, c, beta).sum().exp()) for c in completions}
    assert abs(sum(exact.values()) - 1.0) < 1e-9  # the enumeration covers everything
    # the mixture is a different distribution from pi, so the test has power against D2
    exact_pi = {c: float(exact_logprobs(policy, prompt, c, 0.0).sum().exp()) for c in completions}
    tv = 0.5 * sum(abs(exact[c] - exact_pi[c]) for c in completions)
    assert tv > 0.05

    n = 8_000
    ids = torch.tensor([prompt] * n)
    pvalues = {}
    for name, sampler in SAMPLERS.items():
        s = sampler(
            policy,
            ids,
            torch.ones_like(ids),
            beta,
            max_new_tokens=T,
            eos_token_id=EOS,
            generator=torch.Generator().manual_seed(2024),
        )
        pvalues[name], bins = chi_square_pvalue(s, exact)
        assert bins >= 20
    assert pvalues["correct"] > 1e-3, pvalues
    assert pvalues["D1 shared cache"] < 1e-8, pvalues
    assert pvalues["D2 adapter-on reference"] < 1e-8, pvalues


def test_mixture_logprobs_function():
    gen = torch.Generator().manual_seed(0)
    z_pi, z_ref = torch.randn(3, 7, generator=gen), torch.randn(3, 7, generator=gen)
    # the geometric mixture: pi^(1-b) pi_ref^b renormalised, computed from probabilities
    p_pi, p_ref = torch.softmax(z_pi, -1), torch.softmax(z_ref, -1)
    geo = p_pi**0.75 * p_ref**0.25
    torch.testing.assert_close(
        mixture_logprobs(z_pi, z_ref, 0.25).exp(), geo / geo.sum(-1, keepdim=True)
    )
    # per-distribution constants cancel: log-softmax inputs give the same result as raw logits
    torch.testing.assert_close(
        mixture_logprobs(z_pi + 3.0, torch.log(p_ref), 0.25), mixture_logprobs(z_pi, z_ref, 0.25)
    )
    torch.testing.assert_close(
        mixture_logprobs(z_pi, z_ref, 0.0, 2.0), torch.log_softmax(z_pi / 2.0, -1)
    )


def test_bad_inputs(lms):
    policy, pristine, _ = lms
    ids, mask = left_padded()
    with pytest.raises(ValueError, match="beta"):
        sample_mixture(policy, ids, mask, beta=1.5)
    with pytest.raises(ValueError, match="temperature"):
        sample(policy, ids, mask, temperature=0.0)
    with pytest.raises(ValueError, match="max_new_tokens"):
        sample(policy, ids, mask, max_new_tokens=0)
    right = torch.flip(mask, dims=[1])
    with pytest.raises(ValueError, match="left-padded"):
        sample(policy, ids, right)
    with pytest.raises(ValueError, match="adapter"):
        LMStream(pristine, adapter=False)
    with pytest.raises(ValueError, match="policy itself"):
        sample_mixture(pristine, ids, mask, ref_model=pristine)


def test_time_samplers_reports_each_variant(lms):
    from course_lib.resources import time_samplers

    policy, _, _ = lms
    ids, mask = left_padded()
    rows = time_samplers(policy, ids, mask, lengths=(2, 3), repeats=1)
    assert [r["T"] for r in rows] == [2, 3]
    assert all(r[k] > 0 for r in rows for k in ("plain", "mixture", "nocache"))
    with pytest.raises(ValueError, match="repeats"):
        time_samplers(policy, ids, mask, repeats=0)


# --- each model's own log-prob of every drawn token (Samples.stream_logprobs) -------------------


@pytest.mark.parametrize("source", ["adapter-off base", "separate ref_model", "fused"])
def test_stream_logprobs_equal_teacher_forced_forwards(lms, source):
    """The sampler ran pi and pi_ref on every token it drew, so it holds log pi(y_n | x, y_<n)
    and log pi_ref(y_n | x, y_<n) (untempered, 0 where masked): what ``sequence_logprobs`` gives
    with one teacher-forced forward per model, left-padded prompts and EOS-masked completions."""
    policy, _, other = lms
    ids, mask = left_padded()
    ref_model = other if source == "separate ref_model" else None
    s = sample_mixture(
        policy,
        ids,
        mask,
        beta=0.3,
        ref_model=ref_model,
        max_new_tokens=12,
        temperature=1.6,  # the stream log-probs are at temperature 1 whatever the sampler's
        eos_token_id=EOS,
        seed=4,
        fused=source == "fused",
    )
    check_eos_layout(s)
    assert 0 < int(s.mask.sum()) < s.mask.numel()  # some rows end early: the mask matters
    with torch.no_grad():
        _, want_pi = sequence_logprobs(policy, ids, mask, s.tokens, s.mask, eos_token_id=EOS)
        with reference(policy, ref_model) as ref:
            _, want_ref = sequence_logprobs(ref, ids, mask, s.tokens, s.mask, eos_token_id=EOS)
    log_pi, log_ref = s.stream_logprobs
    # float32: the cached and the full forward round this fixture's large logits (|log p| up to
    # 13 here) differently, measured up to 1.4e-5 at |log p| = 2.5; a wrong mask or model
    # misses by far more than this 1e-5 + 1e-5 |log p|
    torch.testing.assert_close(log_pi, want_pi, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(log_ref, want_ref, atol=1e-5, rtol=1e-5)
    assert float((want_pi - want_ref).abs().max()) > 1e-2  # pi and pi_ref differ here


def test_plain_sampling_keeps_its_own_logprobs_as_its_stream(lms):
    policy, _, _ = lms
    ids, mask = left_padded()
    s = sample(policy, ids, mask, max_new_tokens=6, eos_token_id=EOS, seed=2)
    (own,) = s.stream_logprobs  # at temperature 1 the distribution sampled from is pi itself
    torch.testing.assert_close(own, s.logprobs, atol=1e-6, rtol=0)


# --- pi and pi_ref in one forward (MixedBatchStream, sample_mixture(fused=True)) ----------------


def test_fused_forward_gives_the_two_forwards_logits(lms):
    """One forward over 2B rows (B with the LoRA adapter, B as peft's "__base__", one KV cache)
    gives each half the logits of its own forward with its own cache: the prompt, then tokens."""
    policy, _, _ = lms
    policy.eval()  # peft takes adapter_names in eval mode only (the sampler's mode)
    ids, mask = left_padded()
    positions = position_ids_from_mask(mask)
    fused, pi, ref = MixedBatchStream(policy), LMStream(policy), LMStream(policy, adapter=False)
    with torch.no_grad():
        for _ in range(4):
            z_pi, z_ref = fused(ids, mask, positions)
            torch.testing.assert_close(z_pi, pi(ids, mask, positions), atol=1e-5, rtol=0)
            torch.testing.assert_close(z_ref, ref(ids, mask, positions), atol=1e-5, rtol=0)
            ids, positions = z_pi.argmax(-1, keepdim=True), positions[:, -1:] + 1
            mask = torch.cat([mask, torch.ones_like(mask[:, :1])], dim=1)
    assert float((z_pi - z_ref).abs().max()) > 0.1  # the adapter matters


def test_fused_sampler_draws_the_two_stream_sampler_s_tokens(lms):
    policy, _, _ = lms
    ids, mask = left_padded()
    kw = dict(beta=0.3, max_new_tokens=6, eos_token_id=EOS)
    for seed in range(5):
        two = sample_mixture(policy, ids, mask, seed=seed, fused=False, **kw)
        one = sample_mixture(policy, ids, mask, seed=seed, fused=True, **kw)
        assert torch.equal(one.tokens, two.tokens) and torch.equal(one.mask, two.mask)
        torch.testing.assert_close(one.logprobs, two.logprobs, atol=1e-5, rtol=0)
        for a, b in zip(one.stream_logprobs, two.stream_logprobs, strict=True):
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
    assert max_logprob_error(one, policy, 0.3) < 1e-4  # and it is the exact mixture


def test_fused_needs_one_lora_model_and_is_off_on_the_cpu_by_default(lms):
    policy, pristine, other = lms
    ids, mask = left_padded()
    kw = dict(beta=0.3, max_new_tokens=4, eos_token_id=EOS, seed=0)
    with pytest.raises(ValueError, match="separate ref_model"):
        sample_mixture(policy, ids, mask, ref_model=other, fused=True, **kw)
    with pytest.raises(ValueError, match="use_cache"):
        sample_mixture(policy, ids, mask, use_cache=False, fused=True, **kw)
    with pytest.raises(ValueError, match="not a PEFT model"):
        MixedBatchStream(pristine)
    # automatic (None) on the CPU: the two-stream sampler, the very same computation
    auto, two = (sample_mixture(policy, ids, mask, fused=f, **kw) for f in (None, False))
    assert torch.equal(auto.tokens, two.tokens) and torch.equal(auto.logprobs, two.logprobs)
