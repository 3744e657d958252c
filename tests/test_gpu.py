"""Checks that need a CUDA device (skipped without one; `benchmarks/gpu_check.sh` runs them).

They cover what the CPU tests cannot: NF4 with bf16 compute on the GPU, the two-cache mixture
sampler on CUDA, an online step of a 4-bit model with LoRA and gradient checkpointing, the CUDA
memory estimate against the allocator, and the embedded SmolLM2 in 4-bit on the GPU.
"""

import numpy as np
import pytest
import torch

from course_lib import llm, resources
from course_lib.sampling import sample, sample_mixture

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer(["good bad fine the a summary post yes no maybe"]), folder)
    return AutoTokenizer.from_pretrained(folder)


def policy_4bit(tokenizer, seed=0):
    torch.manual_seed(seed)
    base = llm.tiny_llama(
        vocab_size=len(tokenizer),
        hidden=128,
        layers=2,
        heads=4,
        seed=seed,
        init_std=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    quant = llm.quantize_4bit(base, device=CUDA)
    return llm.apply_lora(quant, llm.LoraSettings(r=4, alpha=8.0), gradient_checkpointing=True)


def test_bitsandbytes_runs_nf4_with_bf16_compute_on_cuda():
    assert "runs on cuda" in llm.check_bitsandbytes(CUDA)
    assert llm.compute_dtype_for(CUDA) in (torch.bfloat16, torch.float16)


def test_mixture_sampler_log_probs_match_a_recomputation_on_cuda(tokenizer):
    """The sampler's per-token log-probs under the mixture equal log-softmax of
    (1 - beta) z_pi + beta z_ref recomputed without a cache, on the GPU in bf16."""
    from course_lib.sampling import mixture_logprobs

    model = policy_4bit(tokenizer)
    with torch.no_grad():
        for p in model.parameters():  # a non-zero adapter, so pi != pi_ref
            if p.requires_grad:
                p.normal_(0, 0.3)
    prompt = torch.tensor([[tokenizer.bos_token_id or 1] * 3] * 4, device=CUDA)
    gen = torch.Generator(device=CUDA).manual_seed(0)
    smp = sample_mixture(
        model, prompt, torch.ones_like(prompt), beta=0.5, max_new_tokens=6, generator=gen
    )
    ids = torch.cat([prompt, smp.tokens], 1)
    with torch.no_grad():
        z_pi = model(input_ids=ids).logits[:, 2:-1].float()
        with llm.reference(model) as ref:
            z_ref = ref(input_ids=ids).logits[:, 2:-1].float()
    want = mixture_logprobs(z_pi, z_ref, 0.5).gather(-1, smp.tokens.unsqueeze(-1)).squeeze(-1)
    got = smp.logprobs
    mask = smp.mask.bool()
    torch.testing.assert_close(got[mask], want[mask], atol=0.1, rtol=0.05)


def test_an_online_ipo_md_step_on_a_4bit_model_trains_only_the_adapter(tokenizer):
    from course_lib.online import OnlineConfig, OnlineTrainer

    model = policy_4bit(tokenizer)
    packed = {n: p.detach().clone() for n, p in model.named_parameters() if p.dtype == torch.uint8}
    lora = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}

    def judge(contexts, ys, y2s):
        """Likes longer completions with more 'good': varied labels, so h = 0 is not a minimum
        (with p = 1/2 on every pair the IPO gradient at the start, h = 0, would be zero)."""
        d = [
            len(y.split()) - len(z.split()) + y.count("good") - z.count("good")
            for y, z in zip(ys, y2s, strict=True)
        ]
        return 1 / (1 + np.exp(-np.array(d, dtype=float)))

    cfg = OnlineConfig(
        algorithm="ipo_md",
        tau=0.5,
        beta=0.25,
        steps=3,
        prompts_per_step=4,
        lr=5e-3,
        max_new_tokens=5,
        progress=False,
        monitor_every=0,
    )
    trainer = OnlineTrainer(cfg, model, tokenizer, judge, prompts=["post yes", "post no"])
    history = trainer.train()
    assert len(history) == 3 and all(np.isfinite(h["loss"]) for h in history)
    assert any(abs(h["p_mean"] - 0.5) > 1e-6 for h in history)  # the labels carried a signal
    now = dict(model.named_parameters())
    assert all(torch.equal(now[n], v) for n, v in packed.items())  # NF4 base untouched
    assert any(not torch.equal(now[n], v) for n, v in lora.items())


def test_cuda_peak_is_bounded_by_the_estimate(tokenizer):
    """The exact parts (weights, adapter, gradients, optimiser, caches) plus the rough
    activations bound the allocator's peak of a real step within a factor 2."""
    from course_lib.online import OnlineConfig, OnlineTrainer

    model = policy_4bit(tokenizer)
    cfg = OnlineConfig(
        algorithm="ipo_md",
        tau=0.5,
        beta=0.25,
        steps=1,
        prompts_per_step=8,
        lr=1e-3,
        max_new_tokens=16,
        progress=False,
        monitor_every=0,
    )
    trainer = OnlineTrainer(cfg, model, tokenizer, lambda c, y, z: np.full(len(y), 0.5), ["post"])
    est = resources.estimate_memory(
        model,
        prompts_per_step=8,
        prompt_tokens=2,
        new_tokens=16,
        mixture=True,
        compute_dtype=llm.compute_dtype_for(CUDA),
        gradient_checkpointing=True,
    )
    with resources.measure_peak(CUDA) as measured:
        trainer.train()
    assert measured.peak_bytes is not None
    assert measured.peak_bytes < 2 * est.total + 64 * 2**20  # + CUDA workspace slack


def test_embedded_smollm2_in_4bit_on_cuda():
    policy = llm.load_policy("embedded", load_in_4bit=True, lora=llm.LoraSettings(r=8))
    assert policy.device.type == "cuda" and llm.count_4bit_linears(policy.model) > 0
    assert policy.footprint_bytes() < 200 * 2**20
    tok = policy.tokenizer
    ids = tok("The capital of France is", return_tensors="pt").to(CUDA)
    smp = sample(
        policy.model,
        ids["input_ids"],
        ids["attention_mask"],
        max_new_tokens=8,
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.pad_token_id,
        seed=0,
    )
    assert smp.tokens.shape == (1, 8) and torch.isfinite(smp.logprobs).all()
