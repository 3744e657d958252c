"""Memory estimates against what the tensors really hold, and the peak-memory measurement."""

import pytest
import torch

from course_lib import llm, logprobs, resources

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def lora_model(seed=0, hidden=64, layers=2, heads=4, kv_heads=None):
    torch.manual_seed(seed)
    base = llm.tiny_llama(vocab_size=50, hidden=hidden, layers=layers, heads=heads, seed=seed)
    if kv_heads is not None:  # grouped-query attention, as in SmolLM2 (9 heads, 3 kv heads)
        from transformers import LlamaConfig, LlamaForCausalLM

        cfg = LlamaConfig(**{**base.config.to_dict(), "num_key_value_heads": kv_heads})
        base = LlamaForCausalLM(cfg)
    return llm.apply_lora(base, llm.LoraSettings(r=4, alpha=8.0))


@pytest.mark.parametrize("kv_heads", [None, 2])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_kv_cache_estimate_equals_the_cache_tensors(kv_heads, dtype):
    from course_lib.sampling import _cache_kwarg, new_cache

    model = lora_model(kv_heads=kv_heads).to(dtype)
    batch, length = 3, 11
    cache = new_cache(model)
    ids = torch.randint(0, 50, (batch, length), generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        model(input_ids=ids, use_cache=True, **{_cache_kwarg(model): cache})
    measured = resources.cache_tensor_bytes(cache)
    config = model.get_base_model().config
    assert measured > 0
    assert resources.kv_cache_bytes(config, batch, length, dtype) == measured


def test_estimate_parts_equal_the_real_tensors_after_a_step():
    model = lora_model()
    est = resources.estimate_memory(
        model,
        prompts_per_step=2,
        prompt_tokens=7,
        new_tokens=5,
        mixture=True,
        compute_dtype=torch.float32,
    )
    lora = sum(p.numel() * 4 for n, p in model.named_parameters() if "lora_" in n)
    assert est.adapter == resources.trainable_bytes(model) == lora
    assert est.base + est.adapter == llm.memory_footprint_bytes(model)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=1e-3)
    ids = torch.randint(0, 50, (4, 12), generator=torch.Generator().manual_seed(1))
    model(input_ids=ids, labels=ids).loss.backward()
    grads = sum(
        p.grad.numel() * p.grad.element_size() for p in model.parameters() if p.grad is not None
    )
    opt.step()
    assert est.gradients == grads
    assert est.optimiser == resources.optimiser_state_bytes(opt)
    # the mixture keeps two caches (pi and pi_ref), each 4 sequences of 12 tokens
    one = resources.kv_cache_bytes(model.get_base_model().config, 4, 12, torch.float32)
    assert est.kv_caches == 2 * one
    plain = resources.estimate_memory(
        model,
        prompts_per_step=2,
        prompt_tokens=7,
        new_tokens=5,
        mixture=False,
        compute_dtype=torch.float32,
    )
    assert plain.kv_caches == one and plain.total == est.total - one
    assert "| total |" in est.table()


def four_bit_lora_model(double_quant=False, repacking=False):
    """A tiny Llama in NF4 with LoRA. ``repacking``: its layers flagged as bitsandbytes 0.50.2 flags
    them on a CPU with AVX512-BF16 (``Linear4bit.support_avx512bf16_for_cpu``), as when a model is
    quantised without the course, which turns the flag off (llm.keep_standard_nf4_layout)."""
    import bitsandbytes as bnb

    base = llm.tiny_llama(vocab_size=50, hidden=64, layers=2, heads=4, seed=0)
    quant = llm.quantize_4bit(base, double_quant=double_quant, device="cpu")
    layers = [m for m in quant.modules() if isinstance(m, bnb.nn.Linear4bit)]
    assert len(layers) == 14 and not any(m.support_avx512bf16_for_cpu for m in layers)
    for layer in layers:
        layer.support_avx512bf16_for_cpu = repacking
    return llm.apply_lora(quant, llm.LoraSettings(r=4, alpha=8.0)), layers


def estimate(model):
    return resources.estimate_memory(
        model,
        prompts_per_step=2,
        prompt_tokens=7,
        new_tokens=5,
        mixture=True,
        compute_dtype=torch.float32,
    )


def is_repacked(layer):
    return getattr(layer.weight.quant_state, "packing_format_for_cpu", False)


@pytest.mark.parametrize("double_quant", [False, True])
@pytest.mark.parametrize("repacking", [False, True], ids=["standard-layout", "repacked-layout"])
def test_4bit_estimate_equals_the_footprint_after_the_first_sampling_forward(
    double_quant, repacking
):
    """The estimate is made before the run and describes the weights after its first inference
    forward. Any machine: the standard layout runs a real forward; the repacked one does what
    ``Linear4bit.forward`` does first on an AVX512-BF16 CPU (the kernel call aside)."""
    from bitsandbytes.functional import _convert_weight_packed_for_cpu

    model, layers = four_bit_lora_model(double_quant, repacking)
    before = llm.memory_footprint_bytes(model)
    est = estimate(model)
    assert est.adapter == resources.trainable_bytes(model)
    if repacking:
        for layer in layers:
            qs = layer.weight.quant_state
            layer.weight.data, _ = _convert_weight_packed_for_cpu(layer.weight.data, qs)
        assert all(is_repacked(m) for m in layers)
    else:
        model.eval()
        with torch.no_grad():
            model(input_ids=torch.tensor([[2, 3, 4, 5]]))
        assert not any(is_repacked(m) for m in layers)
    after = llm.memory_footprint_bytes(model)
    assert est.base + est.adapter == after
    # 1280 blocks of 64 weights (64 x 4 attention + 128 x 3 MLP, 2 layers) whose scales go from
    # fp32 to bf16 (2 bytes saved each), or from uint8 to bf16 (1 byte more each) while the 14
    # state2 go (one fp32 absmax and 256 fp32 levels each)
    if repacking:
        saved = 1280 * 2 if not double_quant else -1280 + 14 * (4 + 256 * 4)
        assert before - after == saved
    else:
        assert before == after


@pytest.mark.skipif(
    not __import__("bitsandbytes").functional.has_avx512bf16(),
    reason="the repacked layout's kernel needs a CPU with AVX512-BF16",
)
def test_4bit_estimate_equals_the_footprint_after_a_real_repacking_forward():
    model, layers = four_bit_lora_model(repacking=True)
    est = estimate(model)
    model.eval()
    with torch.no_grad():
        model(input_ids=torch.tensor([[2, 3, 4, 5]]))
    assert all(is_repacked(m) for m in layers)
    assert est.base + est.adapter == llm.memory_footprint_bytes(model)


def test_checkpointing_lowers_the_activation_estimate():
    model = lora_model(layers=4)
    kw = dict(prompts_per_step=4, prompt_tokens=64, new_tokens=32, mixture=False)
    full = resources.estimate_memory(model, compute_dtype=torch.bfloat16, **kw)
    ckpt = resources.estimate_memory(
        model, compute_dtype=torch.bfloat16, gradient_checkpointing=True, **kw
    )
    assert ckpt.activations < full.activations


def test_measured_activations_are_within_the_estimate_order():
    """The rough part: the autograd graph's saved tensors of a training forward on a CPU model
    (counted exactly with saved-tensor hooks) lie within a factor 3 of the estimate."""
    model = lora_model(hidden=64, layers=2)
    prompts, p_len, n_new = 2, 20, 12
    est = resources.estimate_memory(
        model,
        prompts_per_step=prompts,
        prompt_tokens=p_len,
        new_tokens=n_new,
        mixture=False,
        compute_dtype=torch.float32,
    )
    saved = {}

    def pack(t):
        saved.setdefault(t.data_ptr(), t.numel() * t.element_size())
        return t

    rows = 2 * prompts
    gen = torch.Generator().manual_seed(0)
    prompt = torch.randint(0, 50, (rows, p_len), generator=gen)
    completion = torch.randint(0, 50, (rows, n_new), generator=gen)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logp, _ = logprobs.sequence_logprobs(model, prompt, None, completion)
    params = {p.data_ptr() for p in model.parameters()}
    activations = sum(v for k, v in saved.items() if k not in params)
    assert logp.shape == (rows,)
    ratio = activations / est.activations
    assert 1 / 3 < ratio < 3, (activations, est.activations)


def test_bad_sizes_are_named():
    model = lora_model()
    with pytest.raises(ValueError, match="prompts_per_step must be a positive integer, got 0"):
        resources.estimate_memory(
            model,
            prompts_per_step=0,
            prompt_tokens=3,
            new_tokens=3,
            mixture=False,
            compute_dtype=torch.float32,
        )
    with pytest.raises(ValueError, match="n_tokens must be a non-negative integer, got -1"):
        resources.kv_cache_bytes(model.get_base_model().config, 1, -1, torch.float32)


MEASURE_IN_A_FRESH_PROCESS = """
import numpy as np
from course_lib import resources
assert resources._reset_rss_peak(), "cannot reset"
rss_before = resources._read_status_kib("VmRSS") * 1024
with resources.measure_peak("cpu") as big:
    block = np.ones(64 * 2**20 // 8)  # 64 MiB, touched
    block.sum()
    del block
print(big.peak_bytes - rss_before, big.seconds, big.what, str(big))
"""


def test_measure_peak_sees_a_large_allocation_on_the_cpu():
    """In a fresh process: the peak RSS is process-wide, and a test process that has just freed
    a 4-bit model would see glibc and Python hand memory back during the block."""
    import subprocess
    import sys

    if not resources._reset_rss_peak():
        pytest.skip("this kernel does not let a process reset its peak RSS")
    out = subprocess.run(
        [sys.executable, "-c", MEASURE_IN_A_FRESH_PROCESS],
        capture_output=True,
        text=True,
        check=True,
        timeout=120,
    ).stdout.split(maxsplit=2)
    grew, seconds, what = int(out[0]), float(out[1]), out[2]
    assert grew > 48 * 2**20 and seconds >= 0
    assert "during the run" in what and "MiB" in what
