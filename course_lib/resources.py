"""Memory and time of an online run, estimated before it starts and measured after.

The memory of one online step of a 4-bit policy with LoRA has five parts (QLoRA, Dettmers et al.
2023, Sec. 2-3, for the first four):

* ``base``        -- the frozen weights: NF4 codes (half a byte a weight) and their scales, plus
                     the layers that stay in full precision (embedding, norms, output head, and
                     linear layers whose shapes NF4 cannot take: ``llm.quant.nf4_layer_fits``), as
                     held once the run has started (see :func:`estimate_memory`);
* ``adapter``     -- the LoRA matrices A and B (trainable, fp32);
* ``gradients``   -- one fp32 gradient per adapter weight;
* ``optimiser``   -- AdamW's two moments per adapter weight (Loshchilov & Hutter 2019);
* ``kv_caches``   -- the sampler's key/value caches: 2 (K and V) x layers x kv-heads x head-dim
                     numbers per token and sequence, in the compute dtype, one cache per stream
                     (the mixture sampler runs pi and pi_ref, each with its own cache: notebook 07);
* ``activations`` -- what the training forward keeps for the backward pass: the logits of the
                     completion tokens (model dtype, the fp32 copy and its log-softmax) and about
                     34 bytes per token, layer and hidden unit at 16 bits without recomputation
                     (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
                     Transformer Models", eq. 1 without the attention-score term, which fused
                     attention does not store); with gradient checkpointing, the layer inputs only
                     plus one layer recomputed. This part is a rough estimate; the rest is exact.

:func:`measure_peak` measures what the run really took: the peak of CUDA's allocator on a GPU,
the peak resident set size of the process (``VmHWM``, reset first where Linux allows) on a CPU.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

MiB = 2**20
_BYTES_PER_TOKEN_LAYER_UNIT_16BIT = 34  # Korthikanti et al. 2022, eq. 1 (no s^2 attention term)


def _dtype_bytes(dtype) -> int:
    import torch

    return torch.empty((), dtype=dtype).element_size()


@dataclass
class MemoryEstimate:
    """Bytes per component of an online step; :meth:`table` prints it in MiB."""

    base: int
    adapter: int
    gradients: int
    optimiser: int
    kv_caches: int
    activations: int
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return (
            self.base
            + self.adapter
            + self.gradients
            + self.optimiser
            + self.kv_caches
            + self.activations
        )

    def as_dict(self) -> dict:
        out = asdict(self)
        out["total"] = self.total
        return out

    def table(self) -> str:
        rows = [(k, v) for k, v in self.as_dict().items() if k != "notes"]
        lines = ["| component | MiB |", "| --- | ---: |"]
        lines += [f"| {k} | {v / MiB:.1f} |" for k, v in rows]
        return "\n".join(lines)


def trainable_bytes(model) -> int:
    """Bytes of the parameters that train (the LoRA adapter of a PEFT model)."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)


def kv_cache_bytes(config, n_sequences: int, n_tokens: int, dtype) -> int:
    """One KV cache: 2 x layers x kv-heads x head-dim x tokens x sequences x bytes per number.

    ``config`` is a transformers model config (Llama-style names: ``num_hidden_layers``,
    ``num_key_value_heads`` or ``num_attention_heads``, ``head_dim`` or hidden / heads).
    """
    for name, value in (("n_sequences", n_sequences), ("n_tokens", n_tokens)):
        if not (isinstance(value, int) and value >= 0):
            raise ValueError(f"{name} must be a non-negative integer, got {value!r}")
    heads = config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    per_token = 2 * config.num_hidden_layers * kv_heads * head_dim
    return per_token * n_tokens * n_sequences * _dtype_bytes(dtype)


def cache_tensor_bytes(cache) -> int:
    """Bytes actually held by a transformers ``DynamicCache``: its layers' key and value tensors."""
    total = 0
    for layer in getattr(cache, "layers", []):
        for name in ("keys", "values"):
            tensor = getattr(layer, name, None)
            if tensor is not None and hasattr(tensor, "numel"):
                total += tensor.numel() * tensor.element_size()
    return total


def estimate_memory(
    model,
    *,
    prompts_per_step: int,
    prompt_tokens: int,
    new_tokens: int,
    mixture: bool,
    compute_dtype,
    gradient_checkpointing: bool = False,
    optimiser_moments: int = 2,
) -> MemoryEstimate:
    """Estimate the memory of one online step of ``model`` (see the module docstring).

    Each step samples two completions per prompt (``2 * prompts_per_step`` sequences of
    ``prompt_tokens + new_tokens`` tokens), with one KV cache, or two for the mixture sampler;
    the training forward runs pi on both completions of every pair.

    ``base`` and ``adapter`` describe the weights as they are held after the first sampling
    forward, which is what a run measures: on a CPU with AVX512-BF16, bitsandbytes 0.50.2 would
    repack each ``Linear4bit`` there, storing its scales in bf16 instead of fp32
    (``models.memory_footprint_bytes(..., after_first_forward=True)``). Models loaded by the
    course never repack (``models.keep_standard_nf4_layout``), so for them the bytes are the
    same before and after, on every machine; the prediction matters for a model quantised
    directly with bitsandbytes.
    """
    from course_lib.llm import memory_footprint_bytes

    for name, value in (
        ("prompts_per_step", prompts_per_step),
        ("prompt_tokens", prompt_tokens),
        ("new_tokens", new_tokens),
    ):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    config = model.config
    adapter = trainable_bytes(model)
    base = memory_footprint_bytes(model, after_first_forward=True) - adapter
    rows, seq = 2 * prompts_per_step, prompt_tokens + new_tokens
    kv = kv_cache_bytes(config, rows, seq, compute_dtype) * (2 if mixture else 1)
    width = _dtype_bytes(compute_dtype)
    logits = rows * (new_tokens + 1) * config.vocab_size * (width + 4 + 4)
    per_layer = _BYTES_PER_TOKEN_LAYER_UNIT_16BIT * rows * seq * config.hidden_size * width // 2
    layers = config.num_hidden_layers
    if gradient_checkpointing:
        hidden = rows * seq * config.hidden_size * width * layers + per_layer
    else:
        hidden = per_layer * layers
    notes = [
        f"{rows} sequences of {prompt_tokens} + {new_tokens} tokens per step",
        f"{'two KV caches (pi and pi_ref)' if mixture else 'one KV cache'} in "
        f"{str(compute_dtype).replace('torch.', '')}",
        "activations are a rough estimate (Korthikanti et al. 2022); the rest is exact",
    ]
    return MemoryEstimate(
        base=base,
        adapter=adapter,
        gradients=adapter,
        optimiser=optimiser_moments * adapter,
        kv_caches=kv,
        activations=logits + hidden,
        notes=notes,
    )


def optimiser_state_bytes(optimizer) -> int:
    """Bytes held by an optimiser's state tensors (AdamW: exp_avg and exp_avg_sq per weight)."""
    import torch

    return sum(
        v.numel() * v.element_size()
        for state in optimizer.state.values()
        for v in state.values()
        if isinstance(v, torch.Tensor) and v.dim() > 0
    )


# ---------------------------------------------------------------------------------------------
# Measurement
# ---------------------------------------------------------------------------------------------


def _read_status_kib(key: str) -> int | None:
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _reset_rss_peak() -> bool:
    """Reset VmHWM to the current RSS (Linux >= 4.0: write 5 to /proc/self/clear_refs)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


@dataclass
class Measured:
    seconds: float = 0.0
    peak_bytes: int | None = None
    what: str = ""

    def __str__(self) -> str:
        peak = "unknown" if self.peak_bytes is None else f"{self.peak_bytes / MiB:.0f} MiB"
        return f"{self.seconds:.1f} s, peak memory {peak} ({self.what})"


@contextlib.contextmanager
def measure_peak(device=None) -> Iterator[Measured]:
    """Wall time and peak memory of the block: CUDA allocator peak, else the process's peak RSS.

    On a CPU the figure is the whole process (Python, libraries, data) unless Linux lets the peak
    be reset at the start, in which case it is the peak during the block (still whole-process).
    """
    import torch

    device = torch.device(device) if device is not None else None
    on_cuda = device is not None and device.type == "cuda"
    result = Measured()
    if on_cuda:
        torch.cuda.synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        result.what = f"torch.cuda.max_memory_allocated on {torch.cuda.get_device_name(device)}"
    else:
        reset = _reset_rss_peak()
        result.what = "peak resident set size of the process" + (
            " during the run" if reset else " since it started"
        )
    start = time.perf_counter()
    try:
        yield result
    finally:
        if on_cuda:
            torch.cuda.synchronize(device)
            result.peak_bytes = int(torch.cuda.max_memory_allocated(device))
        else:
            kib = _read_status_kib("VmHWM")
            if kib is None:
                import resource

                kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            result.peak_bytes = int(kib) * 1024
        result.seconds = time.perf_counter() - start


def timed(fn: Callable[[], object], device=None) -> tuple[float, object]:
    """``(seconds, result)`` of one call of ``fn``, synchronising CUDA around it."""
    import torch

    cuda = device is not None and torch.device(device).type == "cuda"
    if cuda:
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    result = fn()
    if cuda:
        torch.cuda.synchronize(device)
    return time.perf_counter() - start, result


def time_samplers(
    model,
    prompt_ids,
    prompt_mask=None,
    lengths=(8, 16),
    repeats: int = 1,
    beta: float = 0.5,
    include_nocache: bool = True,
) -> list[dict]:
    """Median wall-clock seconds of plain, mixture and no-cache mixture sampling per length.

    Completions run to the full length (no EOS) so that every variant generates the same
    tokens' worth of work. ``benchmarks/bench_sampling.py`` is the full-size version.
    """
    import statistics
    import time

    if not (isinstance(repeats, int) and repeats >= 1):
        raise ValueError(f"repeats must be a positive integer, got {repeats!r}")

    def clock(fn):
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            fn()
            times.append(time.perf_counter() - start)
        return statistics.median(times)

    from course_lib.sampling import sample, sample_mixture

    kw = dict(eos_token_id=None, seed=0)
    sample(model, prompt_ids, prompt_mask, max_new_tokens=2, **kw)  # warm-up
    rows = []
    for T in lengths:
        row = {
            "T": T,
            "plain": clock(
                lambda T=T: sample(model, prompt_ids, prompt_mask, max_new_tokens=T, **kw)
            ),
            "mixture": clock(
                lambda T=T: sample_mixture(
                    model, prompt_ids, prompt_mask, beta, max_new_tokens=T, **kw
                )
            ),
        }
        if include_nocache:
            row["nocache"] = clock(
                lambda T=T: sample_mixture(
                    model, prompt_ids, prompt_mask, beta, max_new_tokens=T, use_cache=False, **kw
                )
            )
        rows.append(row)
    return rows
