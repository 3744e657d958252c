"""Notebook 11's exercise checkers accept the reference solutions and reject wrong answers, and
their references agree with what the library and the real tensors hold."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from course_lib import llm, resources
from course_lib.exercises import nb11
from course_lib.sampling import sample_mixture

pytestmark = pytest.mark.usefixtures("torch_one_thread")


# -- exercise 1: KV cache bytes ----------------------------------------------------------------
def test_kv_cache_checker():
    assert nb11.check_kv_cache_bytes(nb11.kv_cache_bytes)

    # query heads instead of key/value heads (wrong under grouped-query attention)
    def query_heads(config, n, t, b):
        return 2 * config.num_hidden_layers * config.hidden_size * n * t * b

    assert not nb11.check_kv_cache_bytes(query_heads)

    # keys only (forgets the values)
    def keys_only(config, n, t, b):
        return nb11.kv_cache_bytes(config, n, t, b) // 2

    assert not nb11.check_kv_cache_bytes(keys_only)
    # head_dim always hidden / heads (wrong where the config gives another head_dim)
    assert not nb11.check_kv_cache_bytes(
        lambda c, n, t, b: nb11.kv_cache_bytes(
            SimpleNamespace(**{**vars(c), "head_dim": None}), n, t, b
        )
    )
    assert not nb11.check_kv_cache_bytes(lambda *a: 1 / 0)  # an error is reported, not raised
    # an extra case is checked too
    odd = SimpleNamespace(num_hidden_layers=2, num_attention_heads=4, hidden_size=40, head_dim=7)
    assert nb11.check_kv_cache_bytes(nb11.kv_cache_bytes, extra_cases=[(odd, 3, 5, 2)])

    def special(config, n, t, b):
        return nb11.kv_cache_bytes(config, n, t, b) + (config.hidden_size == 40)

    assert nb11.check_kv_cache_bytes(special)
    assert not nb11.check_kv_cache_bytes(special, extra_cases=[(odd, 3, 5, 2)])


def test_kv_cache_reference_is_the_library_and_a_real_cache():
    from transformers import LlamaConfig, LlamaForCausalLM

    from course_lib.sampling import _cache_kwarg, new_cache

    for config in nb11._configs():
        for dtype in (torch.float32, torch.bfloat16):
            width = torch.empty((), dtype=dtype).element_size()
            assert nb11.library_kv_cache_bytes(config, 5, 17, width) == (
                resources.kv_cache_bytes(config, 5, 17, dtype)
            )
    # a real DynamicCache of a grouped-query Llama (6 heads, 2 key/value heads)
    base = llm.tiny_llama(vocab_size=40, hidden=48, layers=2, heads=6, seed=0)
    model = LlamaForCausalLM(LlamaConfig(**{**base.config.to_dict(), "num_key_value_heads": 2}))
    cache = new_cache(model)
    batch, length = 3, 9
    ids = torch.randint(0, 40, (batch, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids, use_cache=True, **{_cache_kwarg(model): cache})
    assert resources.cache_tensor_bytes(cache) == nb11.library_kv_cache_bytes(
        model.config, batch, length, 4
    )


# -- exercise 2: NF4 bytes of one layer ---------------------------------------------------------
def test_nf4_checker():
    assert nb11.check_nf4_layer_bytes(nb11.nf4_layer_bytes)
    # codes only
    assert not nb11.check_nf4_layer_bytes(lambda o, i, b=64: o * i // 2)
    # no rounding up of partial blocks
    assert not nb11.check_nf4_layer_bytes(lambda o, i, b=64: o * i // 2 + 4 * (o * i // b) + 64)
    # a byte per weight
    assert not nb11.check_nf4_layer_bytes(lambda o, i, b=64: o * i + 4 * -(-o * i // b) + 64)


@pytest.mark.parametrize(("out_features", "in_features"), [(192, 64), (8, 128), (3, 64)])
def test_nf4_reference_is_what_bitsandbytes_holds(out_features, in_features):
    """Quantise a real layer with bitsandbytes on the CPU and count its tensors."""
    bnb = pytest.importorskip("bitsandbytes")
    llm.check_bitsandbytes("cpu")
    layer = bnb.nn.Linear4bit(in_features, out_features, bias=False, quant_type="nf4")
    gen = torch.Generator().manual_seed(0)
    layer.weight = bnb.nn.Params4bit(
        torch.randn(out_features, in_features, generator=gen) * 0.1,
        requires_grad=False,
        quant_type="nf4",
        compress_statistics=False,  # no double quantisation, as load_policy's default
    )
    layer = layer.to("cpu")  # quantises
    assert layer.weight.dtype == torch.uint8
    state = layer.weight.quant_state
    held = sum(t.numel() * t.element_size() for t in (layer.weight, state.absmax, state.code))
    expected = nb11.library_nf4_layer_bytes(out_features, in_features, state.blocksize)
    assert held == expected
    # the library's footprint counts the same tensors
    assert llm.memory_footprint_bytes(layer) == expected


# -- exercise 3: the mixture's log-prob ----------------------------------------------------------
def test_mixture_checker():
    assert nb11.check_mixture_logprob(nb11.mixture_logprob)

    def unnormalised(z_pi, z_ref, beta, token):  # (1-beta) log pi + beta log pi_ref
        lp = (1 - beta) * torch.log_softmax(torch.as_tensor(z_pi).double(), -1)
        lp = lp + beta * torch.log_softmax(torch.as_tensor(z_ref).double(), -1)
        return lp.gather(-1, torch.as_tensor(token).unsqueeze(-1)).squeeze(-1)

    def arithmetic(z_pi, z_ref, beta, token):  # log((1-beta) pi + beta pi_ref)
        p = (1 - beta) * torch.softmax(torch.as_tensor(z_pi).double(), -1)
        p = p + beta * torch.softmax(torch.as_tensor(z_ref).double(), -1)
        return p.log().gather(-1, torch.as_tensor(token).unsqueeze(-1)).squeeze(-1)

    def swapped(z_pi, z_ref, beta, token):  # beta as the weight on pi
        return nb11.mixture_logprob(z_ref, z_pi, beta, token)

    for wrong in (unnormalised, arithmetic, swapped):
        assert not nb11.check_mixture_logprob(wrong)
    # an extra case is checked too: a learner right on the built-in cases only is caught by it
    z = torch.randn(1, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    extra = [(z, 2 * z, 0.25, torch.tensor([3]))]
    assert nb11.check_mixture_logprob(nb11.mixture_logprob, extra_cases=extra)

    def special(z_pi, z_ref, beta, token):
        out = nb11.mixture_logprob(z_pi, z_ref, beta, token)
        return out + 1.0 if beta == 0.25 else out

    assert nb11.check_mixture_logprob(special)
    assert not nb11.check_mixture_logprob(special, extra_cases=extra)


def test_mixture_reference_is_what_the_sampler_draws_with():
    """The first token's log-prob returned by ``sample_mixture`` equals the reference applied to
    pi's and pi_ref's logits at the end of the prompt."""
    torch.manual_seed(0)
    base = llm.tiny_llama(vocab_size=30, hidden=32, layers=1, heads=2, init_std=0.5, seed=0)
    policy = llm.apply_lora(base, llm.LoraSettings(r=2, alpha=4.0))
    with torch.no_grad():  # move B off zero so that pi != pi_ref
        for name, w in policy.named_parameters():
            if "lora_B" in name:
                w.normal_(0.0, 0.5)
    prompt = torch.tensor([[1, 2, 3, 4], [5, 6, 7, 8]])
    beta = 0.3
    with torch.no_grad():
        smp = sample_mixture(policy, prompt, beta=beta, max_new_tokens=1, seed=0)
        z_pi = policy(input_ids=prompt).logits[:, -1]
        with llm.reference(policy) as ref:
            z_ref = ref(input_ids=prompt).logits[:, -1]
    assert (z_pi - z_ref).abs().max() > 1e-3  # the check below is not trivially pi = pi_ref
    predicted = nb11.library_mixture_logprob(z_pi, z_ref, beta, smp.tokens[:, 0])
    np.testing.assert_allclose(predicted.numpy(), smp.logprobs[:, 0].numpy(), atol=1e-5)
