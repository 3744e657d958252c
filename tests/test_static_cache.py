"""The static-cache decode path draws what the default (dynamic-cache) path draws.

``cache="static"`` (course_lib.streams.StaticLMStream, StaticMixedStream) decodes on a
preallocated KV cache with one fixed-shape step, so that a GPU can replay the step as a CUDA
graph (issue 16). On the CPU the step runs eagerly, and these tests hold it to the default path at
the same seed: the same tokens, log-probs within 1e-5, for plain sampling and the mixture
(beta 0 and 0.25; two streams, a separate reference, and pi and pi_ref fused in one forward),
left-padded prompts of different lengths and rows that stop at EOS mid-sequence. Two broken
static streams (padding ignored, positions counted over the pads) show that the comparison fails
when the attention mask or the positions are wrong.
"""

from __future__ import annotations

import copy

import pytest
import torch

from course_lib.llm import LoraSettings, apply_lora, tiny_llama
from course_lib.logprobs import pad_left
from course_lib.sampling import sample, sample_from_streams, sample_mixture
from course_lib.streams import LMStream, StaticLMStream, StaticMixedStream

pytestmark = pytest.mark.usefixtures("torch_one_thread")

V, EOS, PAD = 8, 7, 0
PROMPTS = [[1, 2, 3], [4, 5, 6, 1, 2, 3], [3], [2, 2, 2, 2], [6, 1]]  # left-padded to 6
NEW = 14


def _llama(seed):
    return tiny_llama(
        vocab_size=V, hidden=32, layers=2, heads=2, init_std=0.3, seed=seed, eos_token_id=EOS
    )


@pytest.fixture(scope="module")
def models():
    """(a LoRA policy whose adapter changes its logits, a separate frozen reference)."""
    torch.manual_seed(0)
    policy = apply_lora(_llama(3), LoraSettings(r=4, alpha=8))
    with torch.no_grad():  # a fresh adapter has B = 0, and pi would equal pi_ref
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, 0.3)
    return policy.eval(), _llama(11).eval()


@pytest.fixture(scope="module")
def prompts():
    return pad_left(PROMPTS, PAD)


def assert_same_draws(a, b):
    assert torch.equal(a.tokens, b.tokens)
    assert torch.equal(a.mask, b.mask)
    torch.testing.assert_close(a.logprobs, b.logprobs, atol=1e-5, rtol=0)
    assert len(a.stream_logprobs) == len(b.stream_logprobs)
    for x, y in zip(a.stream_logprobs, b.stream_logprobs, strict=True):
        torch.testing.assert_close(x, y, atol=1e-5, rtol=0)


def ends_mid_sequence(samples) -> bool:
    """A row drew EOS after some tokens while another went on: the case the pads follow."""
    lengths = samples.lengths
    stopped = (lengths > 1) & (lengths < lengths.max())
    return bool(stopped.any())


@pytest.mark.parametrize("seed", [0, 1])
def test_plain_sampling_draws_the_same_tokens(models, prompts, seed):
    policy, _ = models
    ids, mask = prompts
    kw = dict(max_new_tokens=NEW, eos_token_id=EOS, pad_token_id=PAD, seed=seed)
    dynamic = sample(policy, ids, mask, **kw)
    static = sample(policy, ids, mask, cache="static", **kw)
    assert_same_draws(dynamic, static)
    assert ends_mid_sequence(dynamic)


@pytest.mark.parametrize("beta", [0.0, 0.25])
@pytest.mark.parametrize("how", ["two streams", "fused", "separate reference"])
def test_mixture_draws_the_same_tokens(models, prompts, beta, how):
    policy, other = models
    ids, mask = prompts
    kw = dict(beta=beta, max_new_tokens=NEW, eos_token_id=EOS, pad_token_id=PAD, seed=5)
    kw.update(dict(ref_model=other) if how == "separate reference" else dict(fused=how == "fused"))
    dynamic = sample_mixture(policy, ids, mask, **kw)
    static = sample_mixture(policy, ids, mask, cache="static", **kw)
    assert_same_draws(dynamic, static)
    assert ends_mid_sequence(dynamic)
    if beta == 0.0:  # the mixture at beta = 0 is pi: plain sampling's tokens, static or not
        plain = sample(
            policy, ids, mask, max_new_tokens=NEW, eos_token_id=EOS, pad_token_id=PAD, seed=5
        )
        assert torch.equal(static.tokens, plain.tokens)


def test_the_reference_is_the_adapter_off_base(models, prompts):
    """pi_ref's log-probs of the static mixture are the base model's, not the policy's."""
    policy, _ = models
    ids, mask = prompts
    kw = dict(max_new_tokens=NEW, eos_token_id=EOS, pad_token_id=PAD, seed=2)
    mixed = sample_mixture(policy, ids, mask, beta=0.25, cache="static", fused=True, **kw)
    with torch.no_grad(), policy.disable_adapter():
        full = torch.cat([ids, mixed.tokens], dim=1)
        z = policy(input_ids=full, attention_mask=torch.cat([mask, mixed.mask], 1)).logits
    P = ids.shape[1]
    logp = torch.log_softmax(z[:, P - 1 : -1].float(), -1).gather(-1, mixed.tokens.unsqueeze(-1))
    expected = logp.squeeze(-1) * mixed.mask
    # the full forward counts positions over the pads (HF's default): compare the unpadded row
    row = 1  # the longest prompt has no padding
    torch.testing.assert_close(mixed.stream_logprobs[1][row], expected[row], atol=1e-5, rtol=0)
    assert not torch.allclose(mixed.stream_logprobs[0][row], expected[row], atol=1e-3)


class _PaddingIgnored(StaticLMStream):
    def __call__(self, input_ids, attention_mask, position_ids):
        return super().__call__(input_ids, torch.ones_like(attention_mask), position_ids)


class _DecodePositionsOffByOne(StaticLMStream):
    def __call__(self, input_ids, attention_mask, position_ids):
        shift = 1 if input_ids.shape[1] == 1 else 0  # decode steps only: a uniform shift of a
        return super().__call__(input_ids, attention_mask, position_ids + shift)  # row is no error


@pytest.mark.parametrize("broken", [_PaddingIgnored, _DecodePositionsOffByOne])
def test_a_wrong_mask_or_position_is_caught(models, prompts, broken):
    """The comparison above can fail: static streams that attend to the pads, or that place
    the decoded tokens one position off (rotary embeddings see only differences of positions, so
    a whole row shifted alike would be no error), give other log-probs."""
    policy, _ = models
    ids, mask = prompts
    args = (ids, mask, NEW, 1.0, EOS, PAD)
    slots = ids.shape[1] + NEW
    good = sample_from_streams([StaticLMStream(policy, slots)], [1.0], *args, seeded(0))
    bad = sample_from_streams([broken(policy, slots)], [1.0], *args, seeded(0))
    first = (good.logprobs[:, 0] - bad.logprobs[:, 0]).abs()
    second = (good.logprobs[:, 1] - bad.logprobs[:, 1]).abs()
    if broken is _PaddingIgnored:  # from the first token, on the padded rows only
        assert float(first[mask[:, 0] == 0].max()) > 1e-3
        assert float(first[mask[:, 0] == 1].max()) < 1e-6
    else:  # the prompt's forward is right, the first decoded step is not
        assert float(first.max()) < 1e-6
        assert float(second.max()) > 1e-3


def seeded(seed):
    return torch.Generator().manual_seed(seed)


def test_fused_stream_leaves_no_hook_behind(models, prompts):
    policy, _ = models
    ids, mask = prompts
    before = copy.deepcopy(policy.state_dict())
    with torch.no_grad():
        z = policy(input_ids=ids, attention_mask=mask).logits
    stream = StaticMixedStream(policy, ids.shape[1] + NEW)
    sample_from_streams([stream], [0.5, 0.5], ids, mask, NEW, 1.0, EOS, PAD)
    assert all(not m._forward_hooks for m in stream._lora_b)
    with torch.no_grad():
        assert torch.equal(policy(input_ids=ids, attention_mask=mask).logits, z)
    assert all(torch.equal(before[k], v) for k, v in policy.state_dict().items())


def test_bad_settings_are_named(models, prompts):
    policy, _ = models
    ids, mask = prompts
    with pytest.raises(
        ValueError, match=r"cache='paged' is invalid: choose one of dynamic, static"
    ):
        sample(policy, ids, mask, cache="paged")
    with pytest.raises(ValueError, match=r"cache='Static' is invalid"):
        sample_mixture(policy, ids, mask, beta=0.5, cache="Static")
    with pytest.raises(ValueError, match="use_cache=False"):
        sample(policy, ids, mask, cache="static", use_cache=False)
    with pytest.raises(ValueError, match="max_new_tokens must be a positive integer"):
        sample(policy, ids, mask, cache="static", max_new_tokens=0)
    with pytest.raises(ValueError, match="needs a CUDA model"):
        StaticLMStream(policy, 8, capture=True)
    short = StaticLMStream(policy, ids.shape[1] + 2)  # room for 2 new tokens, 3 asked
    with pytest.raises(ValueError, match="static cache holds 8 positions and 9 are needed"):
        sample_from_streams([short], [1.0], ids, mask, 4, 1.0, None, PAD)


@pytest.mark.gpu
def test_cuda_graph_replays_the_eager_step():
    """On CUDA the decode step is captured once and replayed: the same tokens as the dynamic
    path (float32, so rounding cannot flip a draw at these margins), for plain and fused mixture."""
    device = torch.device("cuda")
    torch.manual_seed(0)
    policy = apply_lora(_llama(3), LoraSettings(r=4, alpha=8)).to(device).eval()
    with torch.no_grad():
        for name, weight in policy.named_parameters():
            if "lora_B" in name:
                weight.normal_(0.0, 0.3)
    ids, mask = (t.to(device) for t in pad_left(PROMPTS, PAD))
    stream = StaticLMStream(policy, ids.shape[1] + NEW)
    gen = torch.Generator(device=device)
    static = sample_from_streams([stream], [1.0], ids, mask, NEW, 1.0, EOS, PAD, gen.manual_seed(0))
    assert stream.captured, stream.graph_error
    dynamic = sample_from_streams(
        [LMStream(policy)], [1.0], ids, mask, NEW, 1.0, EOS, PAD, gen.manual_seed(0)
    )
    assert torch.equal(static.tokens, dynamic.tokens)
    torch.testing.assert_close(static.logprobs, dynamic.logprobs, atol=1e-4, rtol=0)
    fused = StaticMixedStream(policy, ids.shape[1] + NEW)
    mixed = sample_from_streams(
        [fused], [0.75, 0.25], ids, mask, NEW, 1.0, EOS, PAD, gen.manual_seed(1)
    )
    assert fused.captured, fused.graph_error
    two = sample_mixture(
        policy,
        ids,
        mask,
        beta=0.25,
        max_new_tokens=NEW,
        eos_token_id=EOS,
        pad_token_id=PAD,
        generator=gen.manual_seed(1),
        fused=False,
    )
    assert torch.equal(mixed.tokens, two.tokens)
