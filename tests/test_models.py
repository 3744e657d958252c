"""course_lib.llm and course_lib.logprobs: tiny models, 4-bit NF4 on the CPU, LoRA, the reference,
log-probs and h.

Everything runs on tiny random Llama models built from a config; the 4-bit tests use the real
bitsandbytes NF4 kernels (no mocks). One slow test loads the embedded SmolLM2 in 4-bit.
"""

from __future__ import annotations

import copy
import importlib.util
import subprocess
import sys

import pytest
import torch

from course_lib import llm, logprobs
from course_lib.llm import (
    FourBitUnavailable,
    HubUnavailable,
    LoraSettings,
    apply_lora,
    check_bitsandbytes,
    compute_dtype_for,
    count_4bit_linears,
    ensure_pad_token,
    load_policy,
    quantize_4bit,
    reference,
    tiny_llama,
)
from course_lib.logprobs import mask_after_eos, pad_left, sequence_h, sequence_logprobs

V, EOS = 32, 1
WORDS = ["<unk>", "<eos>", "the", "cat", "sat", "on", "a", "mat", "dog", "ran"]


def word_tokenizer(with_pad: bool = False):
    """A word-level fast tokenizer built in memory (no download); no pad token by default."""
    from tokenizers import Tokenizer, pre_tokenizers
    from tokenizers import models as tok_models
    from transformers import PreTrainedTokenizerFast

    tk = Tokenizer(tok_models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.Whitespace()
    extra = {"pad_token": "<unk>"} if with_pad else {}
    return PreTrainedTokenizerFast(
        tokenizer_object=tk, eos_token="<eos>", unk_token="<unk>", **extra
    )


@pytest.fixture(scope="module")
def tiny():
    return tiny_llama(
        vocab_size=V, hidden=32, layers=2, heads=2, init_std=0.3, seed=0, eos_token_id=EOS
    )


@pytest.fixture(scope="module")
def tiny64():
    """Hidden and MLP sizes multiples of 64, the NF4 block size (see the misalignment test)."""
    return tiny_llama(
        vocab_size=V,
        hidden=64,
        layers=2,
        heads=2,
        intermediate=128,
        init_std=0.1,
        seed=0,
        eos_token_id=EOS,
    )


@pytest.fixture(scope="module")
def saved_tiny(tmp_path_factory, tiny64):
    """A tiny Llama and a tokenizer without pad token, saved as a local model folder."""
    folder = tmp_path_factory.mktemp("tiny_llama")
    tiny64.save_pretrained(folder, safe_serialization=True)
    word_tokenizer().save_pretrained(folder)
    return folder


def full_logprobs(model, prompt, completion):
    """Reference computation: one unpadded row, default positions, log-softmax of every logit."""
    ids = torch.tensor([prompt + completion])
    with torch.no_grad():
        logp = torch.log_softmax(model(input_ids=ids).logits[0].double(), -1)
    start = len(prompt) - 1
    return torch.stack([logp[start + n, t] for n, t in enumerate(completion)])


# --- building ------------------------------------------------------------------------------------


def test_tiny_llama_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    before = torch.rand(1)
    torch.manual_seed(123)
    a = tiny_llama(vocab_size=16, hidden=32, layers=1, heads=2, seed=7)
    after = torch.rand(1)
    b = tiny_llama(vocab_size=16, hidden=32, layers=1, heads=2, seed=7)
    c = tiny_llama(vocab_size=16, hidden=32, layers=1, heads=2, seed=8)
    assert torch.equal(before, after)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert not torch.equal(sa["lm_head.weight"], sc["lm_head.weight"])
    assert a.config.vocab_size == 16 and a.config.num_hidden_layers == 1
    with pytest.raises(ValueError, match="heads"):
        tiny_llama(hidden=30, heads=4)
    with pytest.raises(ValueError, match="vocab_size"):
        tiny_llama(vocab_size=0)


def test_compute_dtype_on_cpu_is_float32():
    assert compute_dtype_for("cpu") == torch.float32


def test_lora_settings_are_validated():
    with pytest.raises(ValueError, match="rank"):
        LoraSettings(r=0)
    with pytest.raises(ValueError, match="dropout"):
        LoraSettings(dropout=1.0)


# --- sequence log-probs --------------------------------------------------------------------------


def test_logprobs_with_left_padding_equal_those_without(tiny):
    prompts = [[2, 3, 4], [5], [6, 7, 8, 9, 2]]
    completions = [[3, 4, 5, 6], [7, 8, 9, 2], [4, 5, 6, 7]]
    ids, mask = pad_left(prompts, pad_token_id=0)
    comp = torch.tensor(completions)
    with torch.no_grad():
        sums, per_token = sequence_logprobs(tiny, ids, mask, comp, torch.ones_like(comp))
    for i, (p, c) in enumerate(zip(prompts, completions, strict=True)):
        exact = full_logprobs(tiny, p, c)
        torch.testing.assert_close(per_token[i].double(), exact, atol=1e-5, rtol=0)
        torch.testing.assert_close(sums[i].double(), exact.sum(), atol=1e-5, rtol=0)
    # RoPE only sees relative positions, so Llama hides position bugs; GPT-2 does not (TRL's
    # defect D7, notes/trl.md §4.7)


def test_left_padding_with_absolute_positions_needs_position_ids():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    config = GPT2Config(
        vocab_size=V,
        n_embd=32,
        n_layer=2,
        n_head=2,
        n_positions=64,
        initializer_range=0.3,
        bos_token_id=0,
        eos_token_id=EOS,
    )
    gpt2 = GPT2LMHeadModel(config).eval()
    prompts, completions = [[2, 3, 4], [5]], [[3, 4, 5], [7, 8, 9]]
    ids, mask = pad_left(prompts, pad_token_id=0)
    comp = torch.tensor(completions)
    with torch.no_grad():
        sums, _ = sequence_logprobs(gpt2, ids, mask, comp)
        exact = [full_logprobs(gpt2, p, c).sum() for p, c in zip(prompts, completions, strict=True)]
        torch.testing.assert_close(sums.double(), torch.stack(exact), atol=1e-5, rtol=0)
        # without position ids from the mask the padded row is scored at shifted positions
        naive = gpt2(
            input_ids=torch.cat([ids, comp], 1),
            attention_mask=torch.cat([mask, torch.ones_like(comp)], 1),
        ).logits
    naive_lp = torch.log_softmax(naive[1, ids.shape[1] - 1 : -1].double(), -1)
    naive_sum = naive_lp.gather(-1, comp[1][:, None]).sum()
    assert float((naive_sum - exact[1]).abs()) > 1e-3


def test_eos_inside_the_completion_masks_what_follows(tiny):
    prompt = [[2, 3, 4]]
    ids, mask = pad_left(prompt, 0)
    with_tail = torch.tensor([[5, 6, EOS, 7, EOS, 8]])  # garbage after the first EOS
    truncated = torch.tensor([[5, 6, EOS]])
    assert mask_after_eos(with_tail, EOS).tolist() == [[1, 1, 1, 0, 0, 0]]
    with torch.no_grad():
        s_tail, pt_tail = sequence_logprobs(tiny, ids, mask, with_tail, eos_token_id=EOS)
        s_trunc, pt_trunc = sequence_logprobs(tiny, ids, mask, truncated, eos_token_id=EOS)
        s_all, _ = sequence_logprobs(tiny, ids, mask, with_tail)  # no EOS rule: all 6 count
    torch.testing.assert_close(s_tail, s_trunc, atol=1e-6, rtol=0)
    torch.testing.assert_close(pt_tail[:, :3], pt_trunc, atol=1e-6, rtol=0)
    assert float(pt_tail[:, 3:].abs().sum()) == 0.0
    torch.testing.assert_close(
        s_tail[0].double(), full_logprobs(tiny, [2, 3, 4], [5, 6, EOS]).sum(), atol=1e-5, rtol=0
    )
    assert float((s_all - s_tail).abs()) > 1e-3
    # a right-padded completion mask and the EOS rule combine
    m = mask_after_eos(
        torch.tensor([[5, EOS, 6], [5, 6, 7]]), EOS, torch.tensor([[1, 1, 1], [1, 1, 0]])
    )
    assert m.tolist() == [[1, 1, 0], [1, 1, 0]]


def test_sequence_logprobs_rejects_bad_shapes(tiny):
    ids, mask = pad_left([[2, 3]], 0)
    with pytest.raises(ValueError, match="completion_mask"):
        sequence_logprobs(tiny, ids, mask, torch.tensor([[4, 5]]), torch.ones(1, 3))
    with pytest.raises(ValueError, match="batch sizes"):
        sequence_logprobs(tiny, ids, mask, torch.tensor([[4, 5], [6, 7]]))


# --- LoRA, the reference and h -------------------------------------------------------------------


def train_steps(model, steps=5, lr=0.05):
    data = torch.tensor([[2, 3, 4, 5, 6, 7], [8, 9, 2, 3, 4, 5]])
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=lr)
    model.train()
    for _ in range(steps):
        loss = model(input_ids=data, labels=data).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval(), float(loss)


def test_h_is_zero_for_a_fresh_adapter_and_matches_its_definition_after_training(tiny):
    pristine = copy.deepcopy(tiny)
    policy = apply_lora(copy.deepcopy(tiny), LoraSettings(r=4, alpha=8))
    targets = set(policy.peft_config["default"].target_modules)
    assert targets == set(llm.LORA_TARGETS)  # attention and MLP projections
    ids, mask = pad_left([[2, 3, 4], [5, 6]], 0)
    y, y2 = torch.tensor([[7, 8, EOS], [2, 3, 4]]), torch.tensor([[9, EOS], [6, 7]])
    ym, y2m = torch.ones_like(y), torch.ones_like(y2)
    h0 = sequence_h(policy, ids, mask, y, ym, y2, y2m, eos_token_id=EOS)
    torch.testing.assert_close(h0, torch.zeros(2), atol=1e-6, rtol=0)  # B = 0: pi = pi_ref

    train_steps(policy)
    h = sequence_h(policy, ids, mask, y, ym, y2, y2m, eos_token_id=EOS)
    with torch.no_grad():
        lp = lambda m, c, cm: sequence_logprobs(m, ids, mask, c, cm, EOS)[0]  # noqa: E731
        expected = (lp(policy, y, ym) - lp(pristine, y, ym)) - (
            lp(policy, y2, y2m) - lp(pristine, y2, y2m)
        )
    torch.testing.assert_close(h.detach(), expected, atol=1e-5, rtol=0)
    assert float(h.abs().max()) > 1e-2
    # antisymmetric, and the gradient reaches the adapter only
    h_swap = sequence_h(policy, ids, mask, y2, y2m, y, ym, eos_token_id=EOS)
    torch.testing.assert_close(h_swap.detach(), -h.detach(), atol=1e-5, rtol=0)
    policy.zero_grad()
    h.sum().backward()
    grads = {n: p.grad for n, p in policy.named_parameters() if p.grad is not None}
    assert grads and all("lora_" in n for n in grads)
    # a separate reference model gives the same h as the adapter-off base
    h_sep = sequence_h(policy, ids, mask, y, ym, y2, y2m, ref_model=pristine, eos_token_id=EOS)
    torch.testing.assert_close(h_sep.detach(), h.detach(), atol=1e-5, rtol=0)


def test_reference_context_errors(tiny):
    with pytest.raises(ValueError, match="no LoRA adapter"):
        with reference(tiny):
            pass
    with pytest.raises(ValueError, match="policy itself"):
        with reference(tiny, tiny):
            pass


# --- 4-bit NF4 on the CPU (real bitsandbytes) ----------------------------------------------------


def test_bitsandbytes_runs_nf4_here():
    assert "NF4 runs on cpu" in check_bitsandbytes("cpu")


def nf4_layer_errors(quant, full):
    """Relative output error of every 4-bit layer against the full-precision layer it came from."""
    import bitsandbytes as bnb

    gen = torch.Generator().manual_seed(0)
    errors = {}
    for name, mod in quant.named_modules():
        if isinstance(mod, bnb.nn.Linear4bit):
            dense = full.get_submodule(name.replace(".base_layer", ""))
            x = torch.randn(8, dense.in_features, generator=gen)
            with torch.no_grad():
                errors[name] = float((mod(x) - dense(x)).norm() / dense(x).norm())
    return errors


def test_4bit_tiny_model_loads_on_cpu_and_trains_lora_one_step(saved_tiny, tiny64):
    import bitsandbytes as bnb

    with pytest.warns(UserWarning, match="no pad token"):
        policy = load_policy(
            str(saved_tiny), load_in_4bit=True, device="cpu", lora=LoraSettings(r=4, alpha=8)
        )
    base = policy.model.get_base_model()
    linear4 = [n for n, m in base.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    # 7 projections per layer, 2 layers; the output head stays in full precision
    assert len(linear4) == 14 and all("lm_head" not in n for n in linear4)
    q = base.model.layers[0].self_attn.q_proj.base_layer
    assert q.weight.dtype == torch.uint8 and q.weight.quant_type == "nf4"
    assert policy.tokenizer.pad_token == "<eos>" and policy.tokenizer.padding_side == "left"
    assert policy.footprint_bytes() < llm.memory_footprint_bytes(tiny64)
    # NF4 (16 levels per block of 64 weights) is a few per cent off per layer, not more
    errors = nf4_layer_errors(base, tiny64)
    assert len(errors) == 14 and max(errors.values()) < 0.15, errors
    ids = torch.tensor([[2, 3, 4, 5, 6]])
    with torch.no_grad():
        full = tiny64(input_ids=ids).logits
        with policy.reference() as ref:
            quant = ref(input_ids=ids).logits
    assert float(torch.corrcoef(torch.stack([full.flatten(), quant.flatten()]))[0, 1]) > 0.95
    # one LoRA step: the adapter moves, the 4-bit base does not, the reference stays the base
    lora_before = {
        n: p.detach().clone() for n, p in policy.model.named_parameters() if p.requires_grad
    }
    packed_before = q.weight.detach().clone()
    _, loss = train_steps(policy.model, steps=1, lr=0.05)
    assert torch.isfinite(torch.tensor(loss))
    moved = [
        n
        for n, p in policy.model.named_parameters()
        if p.requires_grad and not torch.equal(p.detach(), lora_before[n])
    ]
    assert moved and all("lora_" in n for n in moved)
    assert torch.equal(q.weight, packed_before)
    with torch.no_grad(), policy.reference() as ref:
        torch.testing.assert_close(ref(input_ids=ids).logits, quant)


def test_quantize_4bit_in_memory_and_double_quant(tiny64):
    quant = quantize_4bit(tiny64, double_quant=True, device="cpu")
    assert count_4bit_linears(quant) == 14
    state = quant.model.layers[0].mlp.up_proj.weight.quant_state
    assert state.nested  # double quantisation: the absmax scales are themselves quantised
    assert max(nf4_layer_errors(quant, tiny64).values()) < 0.15


# --- NF4 shapes and bitsandbytes' two CPU layouts ------------------------------------------------
#
# bitsandbytes 0.50.2 holds a 4-bit weight in one of two layouts on a CPU. The standard one: codes
# flattened to (out*in/2, 1) uint8, fp32 scales per block of 64. On CPUs with AVX512-BF16,
# Linear4bit.forward repacks it on the first inference forward (nn/modules.py, calling
# functional._convert_weight_packed_for_cpu): codes (out, in/2) in tiles of 32 rows, bf16 scales
# (in/64, out). The course keeps the standard layout everywhere (llm.keep_standard_nf4_layout).
# Both layouts are produced on ANY machine below: the flag is what Linear4bit.__init__ reads from
# ``bitsandbytes.nn.modules.has_avx512bf16``, and the repacking itself is plain torch. Only the
# forward of a repacked weight needs the AVX512-BF16 kernel; those tests skip elsewhere.


def has_bf16_kernel() -> bool:
    """True where bitsandbytes registered its repacked-layout CPU kernel (backends/cpu/ops.py
    does so at import only when ``has_avx512bf16()``)."""
    from bitsandbytes.functional import has_avx512bf16

    return bool(has_avx512bf16())


needs_bf16_kernel = pytest.mark.skipif(
    not has_bf16_kernel(), reason="the repacked layout's kernel needs a CPU with AVX512-BF16"
)


def pretend_cpu(monkeypatch, avx512bf16: bool):
    """New Linear4bit layers behave as on a CPU with (or without) AVX512-BF16."""
    import bitsandbytes as bnb

    monkeypatch.setattr(bnb.nn.modules, "has_avx512bf16", lambda: avx512bf16)


def nf4_linear(out_features, in_features, double_quant=False, seed=0):
    """A standalone NF4 layer, quantised as transformers does (Params4bit moved to the device)."""
    import bitsandbytes as bnb

    gen = torch.Generator().manual_seed(seed)
    layer = bnb.nn.Linear4bit(
        in_features,
        out_features,
        bias=False,
        compute_dtype=torch.float32,
        compress_statistics=double_quant,
        quant_type="nf4",
    )
    layer.weight = bnb.nn.Params4bit(
        torch.randn(out_features, in_features, generator=gen) * 0.1,
        requires_grad=False,
        compress_statistics=double_quant,
        quant_type="nf4",
    )
    return layer.to("cpu").eval()


def repack_as_bitsandbytes_does(layer):
    """The first lines of ``Linear4bit.forward`` in bitsandbytes 0.50.2, without the kernel call."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    layer.weight.data, _ = _convert_weight_packed_for_cpu(
        layer.weight.data, layer.weight.quant_state
    )


def standard_codes(layer):
    """(out, in) NF4 codes of the standard layout: each byte holds two, high nibble first."""
    flat = layer.weight.data.reshape(-1)
    out_f, in_f = layer.weight.quant_state.shape
    return torch.stack([flat >> 4, flat & 0xF], dim=-1).reshape(out_f, in_f)


def repacked_codes(packed, block_n=32):
    """(out, in) NF4 codes of the repacked layout, decoded here, independently of bitsandbytes.

    ``functional._convert_weight_packed_for_cpu`` cuts the (out, in) codes into tiles of 32 rows x
    2 columns; a tile's 64 codes, in row-major order, become 32 bytes: codes 0-31 (rows 0-15) in
    the low nibbles, codes 32-63 (rows 16-31) in the high ones; the bytes of a tile row follow
    each other, tile column after tile column, giving an (out, in/2) matrix.
    """
    out_f, half = packed.shape
    low, high = packed.reshape(-1, block_n) & 0xF, packed.reshape(-1, block_n) >> 4
    tiles = torch.cat([low, high], dim=-1).reshape(out_f // block_n, half, block_n, 2)
    return tiles.transpose(1, 2).reshape(out_f, 2 * half)


@pytest.mark.parametrize("out_features", [16, 32, 48, 64, 96])
@pytest.mark.parametrize("in_features", [32, 64, 96, 128])
def test_nf4_layer_fits_exactly_the_shapes_the_repacking_takes(out_features, in_features):
    """The rule of llm.nf4_layer_fits, checked against bitsandbytes' repacking itself."""
    layer = nf4_linear(out_features, in_features)
    try:
        repack_as_bitsandbytes_does(layer)
        repacked = True
    except (RuntimeError, AssertionError):  # "shape '[32, 0]' is invalid", "N must be divisible"
        repacked = False
    assert repacked == llm.nf4_layer_fits(in_features, out_features)


def test_the_standard_cpu_decode_is_wrong_for_misaligned_rows():
    """Why misaligned layers are not quantised even where nothing is repacked (bitsandbytes
    0.50.2's CPU de-quantisation decodes row by row): ~9 % error for rows of whole blocks of 64,
    20-40 % otherwise."""
    from bitsandbytes.functional import dequantize_4bit

    errors = {}
    for shape in [(32, 64), (64, 128), (16, 64), (32, 32), (64, 32), (32, 96)]:
        layer = nf4_linear(*shape)
        dense = torch.randn(*shape, generator=torch.Generator().manual_seed(0)) * 0.1
        decoded = dequantize_4bit(layer.weight.data, layer.weight.quant_state)
        errors[shape] = float((decoded - dense).norm() / dense.norm())
    aligned = [e for (out_f, in_f), e in errors.items() if in_f % 64 == 0]
    misaligned = [e for (out_f, in_f), e in errors.items() if in_f % 64]
    assert max(aligned) < 0.12 < 0.18 < min(misaligned), errors


@pytest.mark.parametrize("avx512bf16", [False, True], ids=["plain-cpu", "avx512bf16-cpu"])
def test_misaligned_layers_stay_in_full_precision_and_say_so(monkeypatch, tiny, avx512bf16):
    """tiny has hidden 32: six of its seven projections per layer take in_features 32, which NF4
    cannot hold right; they stay nn.Linear (exact), down_proj (64 -> 32) is quantised. The same on
    both kinds of CPU, and an inference forward (where bitsandbytes would repack) runs."""
    import bitsandbytes as bnb

    pretend_cpu(monkeypatch, avx512bf16)
    with pytest.warns(UserWarning) as record:
        quant = quantize_4bit(tiny, device="cpu")
    notes = [str(w.message) for w in record if "NF4: kept" in str(w.message)]
    assert len(notes) == 1
    assert "kept 12 of 14 linear layers in full precision" in notes[0]
    assert "model.layers.*.self_attn.q_proj (x2)" in notes[0] and "down_proj" not in notes[0]
    kept = llm.nf4_misaligned_linears(tiny)
    assert len(kept) == 12 and kept == llm.nf4_misaligned_linears(quant)
    for name in kept:
        assert type(quant.get_submodule(name)) is torch.nn.Linear
        torch.testing.assert_close(
            quant.get_submodule(name).weight, tiny.get_submodule(name).weight
        )
    four = [n for n, m in quant.named_modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert four == ["model.layers.0.mlp.down_proj", "model.layers.1.mlp.down_proj"]
    assert "lm_head" not in four and not any(
        m.support_avx512bf16_for_cpu for m in quant.modules() if isinstance(m, bnb.nn.Linear4bit)
    )
    ids = torch.tensor([[2, 3, 4, 5, 6]])
    with torch.no_grad():
        logits = quant(input_ids=ids).logits
    assert torch.isfinite(logits).all()
    assert not any(
        getattr(p.quant_state, "packing_format_for_cpu", False)
        for p in quant.parameters()
        if hasattr(p, "quant_state")
    )
    assert max(nf4_layer_errors(quant, tiny).values()) < 0.15


def test_a_model_with_no_layer_nf4_can_take_is_refused():
    only_misaligned = tiny_llama(vocab_size=V, hidden=32, layers=1, heads=2, intermediate=32)
    with pytest.raises(ValueError, match="none of the 7 linear layers .*in_features a multiple"):
        quantize_4bit(only_misaligned, device="cpu")


@pytest.mark.parametrize("avx512bf16", [False, True], ids=["plain-cpu", "avx512bf16-cpu"])
def test_load_policy_keeps_the_standard_layout_so_lora_gradients_survive_sampling(
    monkeypatch, saved_tiny, avx512bf16
):
    """On a CPU with AVX512-BF16 bitsandbytes would repack the base at the sampler's first
    (no-grad, eval) forward and then drop the gradient through it (next test); the course turns
    the repacking off, so training gradients are the same before and after sampling."""
    import bitsandbytes as bnb

    pretend_cpu(monkeypatch, avx512bf16)
    with pytest.warns(UserWarning, match="no pad token"):
        policy = load_policy(
            str(saved_tiny), load_in_4bit=True, device="cpu", lora=LoraSettings(r=4)
        )
    assert not any("NF4: kept" in n for n in policy.notes)  # tiny64: every layer fits
    layers = [m for m in policy.model.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and not any(m.support_avx512bf16_for_cpu for m in layers)
    model = policy.model
    with torch.no_grad():  # a nonzero adapter, so gradients pass through every layer
        for name, p in model.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.1, generator=torch.Generator().manual_seed(len(name)))
    data = torch.tensor([[2, 3, 4, 5, 6, 7]])

    def lora_grads():
        model.train()
        model.zero_grad()
        model(input_ids=data, labels=data).loss.backward()
        return {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}

    before = lora_grads()
    model.eval()
    with torch.no_grad():
        model(input_ids=data)  # what sampling does
    after = lora_grads()
    assert not any(getattr(m.weight.quant_state, "packing_format_for_cpu", False) for m in layers)
    for name in before:
        torch.testing.assert_close(after[name], before[name], rtol=1e-5, atol=1e-7)


@needs_bf16_kernel
def test_bitsandbytes_repacking_drops_the_gradient_through_the_base():
    """The reason for keep_standard_nf4_layout (bitsandbytes 0.50.2). Should a later bitsandbytes
    give its repacked path a backward, this test fails, and the decision can be revisited."""
    layer = nf4_linear(64, 128)
    assert layer.support_avx512bf16_for_cpu
    x = torch.randn(4, 128, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        layer(x)
    assert layer.weight.quant_state.packing_format_for_cpu
    layer.train()
    x = x.clone().requires_grad_(True)
    with pytest.warns(UserWarning, match="autograd kernel was not registered"):
        layer(x).sum().backward()
    assert x.grad is None  # the input got no gradient: LoRA below this layer trains on a wrong one


@pytest.mark.parametrize("double_quant", [False, True])
def test_the_repacked_layout_holds_the_same_nf4_codes(double_quant):
    """Any machine: the repacking moves the codes and rounds the scales to bf16, nothing else."""
    from bitsandbytes.functional import dequantize_4bit

    layer = nf4_linear(64, 128, double_quant=double_quant)
    codes = standard_codes(layer)
    weights_standard = dequantize_4bit(layer.weight.data, layer.weight.quant_state)
    state = layer.weight.quant_state
    if double_quant:  # the fp32 scales, as the repacking de-quantises them
        from bitsandbytes.functional import dequantize_blockwise

        absmax = dequantize_blockwise(state.absmax, state.state2) + state.offset
    else:
        absmax = state.absmax.clone()
    repack_as_bitsandbytes_does(layer)
    assert layer.weight.shape == (64, 64) and layer.weight.dtype == torch.uint8
    assert torch.equal(repacked_codes(layer.weight.data), codes)
    assert state.absmax.dtype == torch.bfloat16 and state.absmax.shape == (2, 64)
    assert torch.equal(state.absmax, absmax.reshape(64, 2).T.to(torch.bfloat16))
    # so the weights differ by the bf16 rounding of the scales only
    table = state.code
    weights = table[repacked_codes(layer.weight.data).long()]
    weights = weights * state.absmax.float().T.repeat_interleave(64, dim=1)
    torch.testing.assert_close(weights, weights_standard, rtol=2**-8, atol=0)


@needs_bf16_kernel
@pytest.mark.parametrize("double_quant", [False, True])
def test_the_repacked_forward_agrees_with_the_standard_one(double_quant):
    """Same codes, so the outputs agree to bf16 precision (the kernel computes in bf16)."""
    packed, standard = nf4_linear(64, 128, double_quant), nf4_linear(64, 128, double_quant)
    llm.keep_standard_nf4_layout(standard)
    x = torch.randn(5, 128, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        y_packed, y_standard = packed(x), standard(x)
    assert packed.weight.quant_state.packing_format_for_cpu
    assert not getattr(standard.weight.quant_state, "packing_format_for_cpu", False)
    assert y_packed.dtype == y_standard.dtype == torch.float32
    assert float((y_packed - y_standard).norm() / y_standard.norm()) < 2**-6


# --- memory of a 4-bit layer, in either layout --------------------------------------------------

CODES_64x128 = 64 * 128 // 2  # uint8, two codes a byte
NF4_TABLE = 16 * 4  # state.code: 16 fp32 levels, a copy per layer


@pytest.mark.parametrize(
    "double_quant, expected",
    [
        # fp32 scale per block of 64
        (False, CODES_64x128 + 128 * 4 + NF4_TABLE),
        # uint8 scales + fp32 offset + state2: one fp32 absmax per 256 scales, 256 fp32 levels
        (True, CODES_64x128 + 128 + NF4_TABLE + 4 + 4 + 256 * 4),
    ],
)
def test_footprint_counts_every_tensor_of_the_quant_state(double_quant, expected):
    layer = nf4_linear(64, 128, double_quant=double_quant)
    assert llm.memory_footprint_bytes(layer) == expected


@pytest.mark.parametrize("double_quant", [False, True])
def test_footprint_after_the_repacking_is_predicted_before_it(double_quant):
    """Any machine: the flag set as on an AVX512-BF16 CPU, the repacking done as forward does."""
    layer = nf4_linear(64, 128, double_quant=double_quant)
    layer.support_avx512bf16_for_cpu = True
    now = llm.memory_footprint_bytes(layer)
    predicted = llm.memory_footprint_bytes(layer, after_first_forward=True)
    assert llm.nf4_repacks(layer)
    # bf16 scales; state2 is deleted, the fp32 offset (now unused) stays
    assert predicted == CODES_64x128 + 128 * 2 + NF4_TABLE + (4 if double_quant else 0)
    assert predicted != now
    repack_as_bitsandbytes_does(layer)
    assert not llm.nf4_repacks(layer)
    assert llm.memory_footprint_bytes(layer) == predicted
    assert llm.memory_footprint_bytes(layer, after_first_forward=True) == predicted
    # the course's layout: nothing will change
    standard = nf4_linear(64, 128, double_quant=double_quant)
    llm.keep_standard_nf4_layout(standard)
    assert llm.memory_footprint_bytes(standard, after_first_forward=True) == now


@needs_bf16_kernel
def test_footprint_predicted_before_a_real_first_forward():
    layer = nf4_linear(64, 128)
    predicted = llm.memory_footprint_bytes(layer, after_first_forward=True)
    with torch.no_grad():
        layer(torch.randn(2, 128))
    assert layer.weight.quant_state.packing_format_for_cpu
    assert llm.memory_footprint_bytes(layer) == predicted


# --- bitsandbytes' notice about the optional `kernels` package -----------------------------------

QUIET_IMPORT = """
import logging
import course_lib.llm.quant as m
m.import_bitsandbytes()
import peft  # imports bitsandbytes too
# bitsandbytes 0.50.2's call (backends/cpu/ops.py), made here so that every CPU tries the filter
logging.getLogger(m.BNB_KERNELS_LOGGER).warning(
    "Failed to load CPU gemm_4bit_forward from kernels-community: %s. Please make sure you "
    "already `pip install kernels` and the kernels >= 0.11.1",
    "No module named 'kernels'",
)
logging.getLogger(m.BNB_KERNELS_LOGGER).warning("any other bitsandbytes warning")
print("imported")
"""


def test_importing_bitsandbytes_through_the_course_prints_nothing_on_stderr():
    out = subprocess.run(
        [sys.executable, "-c", QUIET_IMPORT], capture_output=True, text=True, timeout=120
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout == "imported\n"
    assert out.stderr == "any other bitsandbytes warning\n"  # only the one notice is dropped


@needs_bf16_kernel
def test_without_the_course_bitsandbytes_prints_the_notice_here():
    """The control: on this CPU a plain import prints what the course silences."""
    out = subprocess.run(
        [sys.executable, "-c", "import bitsandbytes"], capture_output=True, text=True, timeout=120
    )
    if importlib.util.find_spec("kernels") is not None:
        pytest.skip("the optional kernels package is installed: bitsandbytes has nothing to say")
    assert llm.BNB_KERNELS_MESSAGE in out.stderr


def test_no_linear_layers_to_quantise():
    class EmbeddingOnly(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = torch.nn.Embedding(10, 4)

    with pytest.raises(ValueError, match="no nn.Linear layers to quantise"):
        quantize_4bit(EmbeddingOnly(), device="cpu")


def test_4bit_where_bitsandbytes_cannot_run(monkeypatch, saved_tiny):
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import now fails, as if absent
    with pytest.raises(FourBitUnavailable, match="load_in_4bit=True"):
        check_bitsandbytes("cpu")
    with pytest.raises(FourBitUnavailable, match="bitsandbytes"):
        load_policy(str(saved_tiny), load_in_4bit=True, device="cpu")


# --- loading errors ------------------------------------------------------------------------------


def test_tokenizer_without_pad_token_gets_one_and_says_so():
    tok = word_tokenizer()
    assert tok.pad_token is None
    with pytest.warns(UserWarning, match="set pad_token = eos_token"):
        ensure_pad_token(tok)
    assert tok.pad_token == tok.eos_token and tok.padding_side == "left"
    tok2 = word_tokenizer(with_pad=True)
    ensure_pad_token(tok2)  # already has one: unchanged, no warning needed
    assert tok2.pad_token == "<unk>"


def test_hub_id_while_offline_points_to_the_embedded_default(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailable, match="embedded") as err:
        load_policy("course-lib-tests/no-such-model", device="cpu")
    assert "HF_HUB_OFFLINE" in str(err.value)


def test_bad_sources(tmp_path):
    with pytest.raises(ValueError, match="neither"):
        load_policy("./no/such/folder", device="cpu")
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(ValueError, match="is a file"):
        load_policy(str(tmp_path / "file.txt"), device="cpu")
    with pytest.raises(ValueError, match="LoraSettings"):
        load_policy("embedded", lora={"r": 8}, device="cpu")


def test_full_precision_local_folder_with_separate_reference(saved_tiny, tiny):
    ref = copy.deepcopy(tiny)
    with pytest.warns(UserWarning):
        policy = load_policy(str(saved_tiny), device="cpu", ref_model=ref)
    assert next(policy.model.parameters()).dtype == torch.float32
    assert not any(p.requires_grad for p in ref.parameters())
    with policy.reference() as r:
        assert r is ref


@pytest.mark.slow
def test_embedded_smollm2_in_4bit_with_lora():
    if llm.find_embedded_gguf() is None and not llm.embedded_status()["converted"]:
        pytest.skip("embedded SmolLM2 not installed")
    from course_lib.sampling import sample_mixture

    policy = load_policy("embedded", load_in_4bit=True, lora=LoraSettings(r=4), device="cpu")
    assert count_4bit_linears(policy.model) == 30 * 7  # 30 layers, 7 projections each
    assert policy.footprint_bytes() < 0.5 * 135e6 * 4  # far below the fp32 size
    tok = policy.tokenizer
    ids = tok(["The capital of France is"], return_tensors="pt")
    s = sample_mixture(
        policy.model,
        ids.input_ids,
        ids.attention_mask,
        beta=0.5,
        max_new_tokens=3,
        eos_token_id=tok.eos_token_id,
        seed=0,
    )
    assert s.tokens.shape[1] <= 3 and torch.isfinite(s.logprobs).all()


def test_supervised_steps_raise_the_completion_logprob_and_checkpointing_trains(saved_tiny):
    with pytest.warns(UserWarning):
        policy = load_policy(
            str(saved_tiny),
            device="cpu",
            lora=LoraSettings(r=4, alpha=8),
            gradient_checkpointing=True,
        )
    assert policy.model.get_base_model().is_gradient_checkpointing
    ids, mask = pad_left([[2, 3, 4], [5, 6]], 0)
    target = torch.tensor([[7, 8, EOS], [9, EOS, EOS]])
    losses = logprobs.supervised_steps(
        policy.model, ids, mask, target, steps=5, lr=0.05, eos_token_id=EOS
    )
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="steps"):
        logprobs.supervised_steps(policy.model, ids, mask, target, steps=0)
