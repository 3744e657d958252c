"""Hardware and 4-bit: the device, the compute dtype, whether bitsandbytes runs here, NF4's
layout rules, and the memory a model's weights hold."""

from __future__ import annotations

import logging
import re
import warnings
from collections.abc import Sequence


class FourBitUnavailable(RuntimeError):
    """4-bit NF4 was asked for where bitsandbytes cannot quantise and run a layer."""


# ---------------------------------------------------------------------------------------------
# Hardware: device, compute dtype, whether bitsandbytes really runs here
# ---------------------------------------------------------------------------------------------

#: bitsandbytes 0.50.2 (``bitsandbytes/backends/cpu/ops.py``, at import) logs this through
#: ``logging.getLogger("bitsandbytes.backends.cpu.ops").warning`` on CPUs with AVX512-BF16 when
#: the optional ``kernels`` package is missing. No handler is configured, so Python's last-resort
#: handler prints it on stderr, where it reads like an error. It only concerns the optional fast
#: kernel of the repacked CPU layout, which the course does not use
#: (:func:`keep_standard_nf4_layout`).
BNB_KERNELS_LOGGER = "bitsandbytes.backends.cpu.ops"
BNB_KERNELS_MESSAGE = "Failed to load CPU gemm_4bit_forward from kernels-community"


class _DropKernelsNotice(logging.Filter):
    """Drops bitsandbytes' ``kernels`` notice, and only it: its other warnings still show."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith(BNB_KERNELS_MESSAGE)


_KERNELS_NOTICE = _DropKernelsNotice()


def quiet_bitsandbytes() -> None:
    """Silence bitsandbytes' import-time notice about the optional ``kernels`` package.

    A filter on that one logger, installed before bitsandbytes is imported (it cannot be recalled
    once printed). Called when this module is imported, because peft and transformers import
    bitsandbytes themselves, and again by :func:`import_bitsandbytes`. check-env explains the
    notice instead (``course_lib.envcheck.check_4bit_cpu_path``).
    """
    bnb_logger = logging.getLogger(BNB_KERNELS_LOGGER)
    if _KERNELS_NOTICE not in bnb_logger.filters:
        bnb_logger.addFilter(_KERNELS_NOTICE)


def import_bitsandbytes():
    """``import bitsandbytes`` the course's way (quietly); every course module imports it so."""
    quiet_bitsandbytes()
    import bitsandbytes

    return bitsandbytes


quiet_bitsandbytes()


def default_device():
    import torch

    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def compute_dtype_for(device=None):
    """bf16 on GPUs that support it, fp16 on other GPUs, fp32 on CPU.

    Why: NF4 stores 4-bit codes and de-quantises each weight block to the compute dtype on the
    fly; bf16 has fp32's range (no overflow in attention logits), fp16 is the fallback on older
    GPUs, and CPU kernels are fastest and exact enough in fp32.
    """
    import torch

    device = torch.device(device) if device is not None else default_device()
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


def check_bitsandbytes(device=None) -> str:
    """Quantise a small layer to NF4 on ``device`` and run it; return a one-line description.

    Raises :class:`FourBitUnavailable` saying why when bitsandbytes cannot be imported or fails
    to quantise/run there (a real probe, since an import can succeed on a platform without kernels).
    """
    import torch

    device = torch.device(device) if device is not None else default_device()
    try:
        bnb = import_bitsandbytes()
    except Exception as exc:  # ImportError, or a broken native library raising anything
        raise FourBitUnavailable(
            f"4-bit NF4 needs bitsandbytes, which cannot be imported here ({type(exc).__name__}: "
            f"{exc}). Install it with `python -m pip install bitsandbytes`, or load the model "
            "without load_in_4bit=True (full precision works everywhere)."
        ) from exc
    try:
        # 64 -> 32: the smallest shape the course quantises (nf4_layer_fits), in its layout
        layer = bnb.nn.Linear4bit(
            64, 32, bias=False, compute_dtype=compute_dtype_for(device), quant_type="nf4"
        )
        gen = torch.Generator().manual_seed(0)  # a local generator: leave the caller's RNG alone
        layer.weight = bnb.nn.Params4bit(
            torch.randn(32, 64, generator=gen) * 0.1, requires_grad=False, quant_type="nf4"
        )
        layer = layer.to(device).eval()
        keep_standard_nf4_layout(layer)
        x = torch.randn(2, 64, generator=gen).to(device=device, dtype=compute_dtype_for(device))
        with torch.no_grad():  # an inference forward, as the sampler's
            out = layer(x)
        if layer.weight.dtype != torch.uint8 or not torch.isfinite(out).all():
            raise RuntimeError("the layer did not pack to uint8 or gave non-finite output")
    except Exception as exc:
        raise FourBitUnavailable(
            f"bitsandbytes {getattr(bnb, '__version__', '?')} is installed but cannot quantise and "
            f"run an NF4 layer on {device} ({type(exc).__name__}: {exc}). Load the model without "
            "load_in_4bit=True, or use a device bitsandbytes supports (CUDA, or CPU with "
            "bitsandbytes >= 0.48)."
        ) from exc
    return f"bitsandbytes {bnb.__version__}: NF4 runs on {device}"


def bnb_config(double_quant: bool = False, compute_dtype=None, device=None, skip_modules=None):
    """transformers' ``BitsAndBytesConfig`` for NF4 (Dettmers et al., 2023, QLoRA, Sec. 3).

    ``skip_modules`` (transformers' ``llm_int8_skip_modules``, which 4-bit honours too) are
    module-name patterns kept in full precision; None keeps transformers' default (the output
    head). :func:`nf4_skip_modules` computes it for a model.
    """
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=bool(double_quant),
        bnb_4bit_compute_dtype=compute_dtype or compute_dtype_for(device),
        llm_int8_skip_modules=list(skip_modules) if skip_modules is not None else None,
    )


def _output_head_names(model) -> set[str]:
    head = model.get_output_embeddings() if hasattr(model, "get_output_embeddings") else None
    return {name for name, mod in model.named_modules() if head is not None and mod is head}


def quantisable_linears(model) -> list[str]:
    """Names of the ``nn.Linear`` layers NF4 would quantise (the output head stays full precision,
    as transformers keeps it)."""
    import torch

    heads = _output_head_names(model)
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear) and name not in heads
    ]


def count_4bit_linears(model) -> int:
    try:
        bnb = import_bitsandbytes()
    except Exception:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


#: bitsandbytes' NF4 block size: weights are scaled by the absmax of each block of 64
#: (``bnb.nn.Params4bit``'s default, which transformers' ``BitsAndBytesConfig`` keeps).
NF4_BLOCKSIZE = 64
#: Rows per tile of bitsandbytes' repacked CPU layout (``block_n`` of
#: ``functional._convert_weight_packed_for_cpu``, bitsandbytes 0.50.2).
NF4_CPU_BLOCK_N = 32


def nf4_layer_fits(in_features: int, out_features: int) -> bool:
    """Whether bitsandbytes 0.50.2 handles an NF4 linear layer of this shape right on every device.

    * ``in_features`` a multiple of 64: the codes are quantised in blocks of 64 consecutive
      weights of the flattened matrix, while the CPU de-quantisation (``backends/cpu/ops.py``,
      ``dequantize_4bit``) decodes row by row; when a row is not a whole number of blocks, weights
      get their neighbours' scales (measured: 18-40 % error, against ~9 % for aligned rows). The
      repacked CPU layout (``functional._convert_weight_packed_for_cpu``) reshapes the scales to
      ``(out_features, in_features // 64)`` and raises (``shape '[32, 0]' is invalid ...``).
    * ``out_features`` a multiple of 32: the repacking tiles rows by 32 and asserts
      ``N must be divisible by block_n``.

    CUDA takes any shape; the rule applies on every device all the same, so that a model
    loaded in 4-bit is the same model on every machine.
    """
    return in_features % NF4_BLOCKSIZE == 0 and out_features % NF4_CPU_BLOCK_N == 0


def nf4_misaligned_linears(model) -> list[str]:
    """Names of the linear layers (output head aside) whose shape :func:`nf4_layer_fits` refuses:
    the course keeps them in full precision when it loads a model in 4-bit."""
    import torch

    heads = _output_head_names(model)
    return [
        name
        for name, mod in model.named_modules()
        if isinstance(mod, torch.nn.Linear)  # bnb's Linear4bit is one too
        and name not in heads
        and not nf4_layer_fits(mod.in_features, mod.out_features)
    ]


def nf4_skip_modules(model) -> list[str] | None:
    """``llm_int8_skip_modules`` for :func:`bnb_config`: None when every linear layer fits, else
    transformers' default skips plus the misaligned layers (:func:`nf4_misaligned_linears`).

    transformers 5 (``quantizers/base.py``, ``get_modules_to_not_convert``) replaces its defaults
    (output head, tied and last weights: ``get_keys_to_not_convert``) by a list it is given, so
    they are added back; it matches every entry as a regex from the start of a module name up to
    a dot (``quantizers_utils.should_convert_module``), so the names are escaped.
    """
    misaligned = nf4_misaligned_linears(model)
    if not misaligned:
        return None
    try:
        from transformers.quantizers.base import get_keys_to_not_convert

        defaults = sorted(get_keys_to_not_convert(model))
    except (ImportError, AttributeError):  # another transformers: keep at least the output head
        defaults = sorted(re.escape(name) for name in _output_head_names(model))
    return defaults + [re.escape(name) for name in misaligned]


def _fold_layer_indices(names: Sequence[str]) -> str:
    """'model.layers.*.mlp.up_proj (x30), ...': one entry per layer type, not per layer."""
    counts: dict[str, int] = {}
    for name in names:
        key = re.sub(r"\.\d+(?=\.)", ".*", name)
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(key if n == 1 else f"{key} (x{n})" for key, n in counts.items())


def _announce_nf4_kept(model) -> str | None:
    """Warn once, and return the same line for ``Policy.notes``, when linear layers of a model
    loaded in 4-bit were kept in full precision because their shapes do not fit NF4."""
    misaligned = nf4_misaligned_linears(model)
    if not misaligned:
        return None
    still_4bit = [n for n in misaligned if type(model.get_submodule(n)).__name__ == "Linear4bit"]
    if still_4bit:  # transformers ignored llm_int8_skip_modules: fail before any forward
        raise RuntimeError(
            f"{len(still_4bit)} 4-bit layers (e.g. {still_4bit[0]}) have shapes bitsandbytes' NF4 "
            f"kernels cannot take (in_features a multiple of {NF4_BLOCKSIZE} and out_features a "
            f"multiple of {NF4_CPU_BLOCK_N} needed), although they were asked to stay in full "
            "precision; this transformers version did not honour llm_int8_skip_modules"
        )
    total = len(misaligned) + count_4bit_linears(model)
    note = (
        f"NF4: kept {len(misaligned)} of {total} linear layers in full precision, because "
        f"bitsandbytes' 4-bit kernels need in_features a multiple of {NF4_BLOCKSIZE} and "
        f"out_features a multiple of {NF4_CPU_BLOCK_N}: {_fold_layer_indices(misaligned)}"
    )
    warnings.warn(note, UserWarning, stacklevel=3)
    return note


def keep_standard_nf4_layout(model) -> int:
    """Turn off bitsandbytes' repacking of 4-bit weights for its AVX512-BF16 CPU kernel.

    bitsandbytes 0.50.2, ``nn/modules.py``: ``Linear4bit.__init__`` sets
    ``support_avx512bf16_for_cpu = has_avx512bf16()``, and ``Linear4bit.forward`` repacks the
    weight (``functional._convert_weight_packed_for_cpu``) on its first call on a CPU in eval mode
    with an input that needs no gradient: the sampler's first forward. From then on
    ``matmul_4bit`` (``autograd/_functions.py``) sends every CPU call, training ones included, to
    ``F.gemv_4bit``, which has no autograd formula: a training forward through the repacked base
    gives no gradient to its input (torch warns "an autograd kernel was not registered"), so the
    LoRA adapters of all earlier layers get wrong gradients (tests/test_models.py measures it).
    The repacking also rounds the scales to bf16 and computes in bf16, and its inverse (which
    ``state_dict`` and ``.cuda()`` call) leaves the scales of a non-double-quantised weight
    transposed. So the course keeps the standard layout on every machine: the same numbers, the
    same gradients and the same bytes as on a CPU without AVX512-BF16 (the flag is read in
    ``forward`` only, so clearing it on the instance is enough). Call it before the first forward;
    returns how many layers had the repacking on (0 on other CPUs; CUDA never repacks).
    """
    switched = 0
    for mod in model.modules():
        if getattr(mod, "support_avx512bf16_for_cpu", False):
            mod.support_avx512bf16_for_cpu = False
            switched += 1
    return switched


def _require_quantisable(model, what: str) -> None:
    linears = quantisable_linears(model)
    if not linears:
        raise ValueError(
            f"{what} ({type(model).__name__}) has no nn.Linear layers to quantise: NF4 4-bit "
            "applies to linear layers only. Load it with load_in_4bit=False."
        )
    if len(nf4_misaligned_linears(model)) == len(linears):
        raise ValueError(
            f"none of the {len(linears)} linear layers of {what} ({type(model).__name__}) has a "
            f"shape bitsandbytes' NF4 kernels take (in_features a multiple of {NF4_BLOCKSIZE}, "
            f"out_features a multiple of {NF4_CPU_BLOCK_N}), so nothing would be quantised. Use "
            "such sizes, or load it with load_in_4bit=False."
        )


def _quant_state_tensors(state) -> list:
    """The tensors a bitsandbytes ``QuantState`` holds (bitsandbytes 0.50.2, ``functional.py``,
    ``quantize_4bit`` and ``_convert_weight_packed_for_cpu``):

    * ``absmax``: one scale per block of 64 weights, fp32; uint8 with double quantisation; bf16 of
      shape (in_features / 64, out_features) once repacked for the CPU kernel;
    * ``code``: the 16 NF4 levels, fp32 (a copy per layer);
    * with double quantisation only: ``offset`` (a 0-d fp32 tensor) and ``state2``'s ``absmax``
      (fp32, one per 256 scales) and ``code`` (256 fp32 levels, a copy per layer).
    """
    import torch

    found = [getattr(state, "absmax", None), getattr(state, "code", None)]
    found.append(getattr(state, "offset", None))
    nested = getattr(state, "state2", None)
    if nested is not None:
        found += [getattr(nested, "absmax", None), getattr(nested, "code", None)]
    return [t for t in found if isinstance(t, torch.Tensor)]


def nf4_repacks(module) -> bool:
    """Whether bitsandbytes 0.50.2 will repack this ``Linear4bit`` on its next CPU inference
    forward (see :func:`keep_standard_nf4_layout`; never after the course has loaded a model).
    A shape the repacking cannot take counts as no: that forward raises instead."""
    weight = getattr(module, "weight", None)
    state = getattr(weight, "quant_state", None)
    return bool(
        getattr(module, "support_avx512bf16_for_cpu", False)
        and state is not None
        and weight.device.type == "cpu"
        and not getattr(state, "packing_format_for_cpu", False)
        and len(state.shape) == 2
        and state.shape[1] % state.blocksize == 0
        and nf4_layer_fits(state.shape[1], state.shape[0])
    )


def memory_footprint_bytes(model, after_first_forward: bool = False) -> int:
    """Bytes held by the parameters, the buffers and bitsandbytes' quantisation state.

    A 4-bit weight counts as its code storage (half a byte a weight) plus every tensor of its
    ``quant_state`` (:func:`_quant_state_tensors`), in whichever layout it is; a tensor held twice
    (tied weights) counts once.

    ``after_first_forward=True`` gives the bytes as they will be once inference has run: a
    ``Linear4bit`` that bitsandbytes will repack for its AVX512-BF16 CPU kernel
    (:func:`nf4_repacks`) then keeps the same code bytes (reshaped to (out, in/2)), ``code`` and
    ``offset``, and its scales become bf16, shape (in/64, out), de-quantised first when doubly
    quantised (``state2`` is deleted): ``functional._convert_weight_packed_for_cpu``,
    bitsandbytes 0.50.2. The course turns the repacking off (:func:`keep_standard_nf4_layout`),
    so for its models both answers are equal.
    """
    import torch

    repacking = {}
    if after_first_forward:
        repacking = {id(m.weight): m for m in model.modules() if nf4_repacks(m)}
    seen: set[int] = set()
    total = 0

    def count(tensor) -> int:
        if tensor.numel() == 0 or tensor.data_ptr() in seen:
            return 0
        seen.add(tensor.data_ptr())
        return tensor.numel() * tensor.element_size()

    for tensor in [*model.parameters(), *model.buffers()]:
        state = getattr(tensor, "quant_state", None)
        if id(tensor) in repacking:
            out_f, in_f = state.shape
            scales = out_f * (in_f // state.blocksize) * 2  # bf16
            total += count(tensor) + scales
            # state2 is deleted; code and, when doubly quantised, the (now unused) offset stay
            kept = (getattr(state, "code", None), getattr(state, "offset", None))
            total += sum(count(t) for t in kept if isinstance(t, torch.Tensor))
        else:
            total += count(tensor)
            if state is not None:
                total += sum(count(extra) for extra in _quant_state_tensors(state))
    return total
