"""Loading policies: the embedded default, a local folder or a hub id; 4-bit NF4; LoRA.

A policy pi_theta is a causal LM; the reference pi_ref is the same network before fine-tuning
(with LoRA: the frozen base with the adapter off, :mod:`course_lib.llm.reference`)."""

from __future__ import annotations

import logging
import os
import re
import tempfile
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.llm.embedded import (
    EMBEDDED_NAME,
    HOW_TO_GET_EMBEDDED,
    convert_embedded,
    load_embedded_default,
)
from course_lib.llm.quant import (
    NF4_BLOCKSIZE,
    NF4_CPU_BLOCK_N,
    _announce_nf4_kept,
    _require_quantisable,
    bnb_config,
    check_bitsandbytes,
    compute_dtype_for,
    count_4bit_linears,
    default_device,
    keep_standard_nf4_layout,
    memory_footprint_bytes,
    nf4_misaligned_linears,
    nf4_skip_modules,
    quantisable_linears,
)
from course_lib.llm.reference import reference

logger = logging.getLogger(__name__)

#: LLaMA-family names of the attention and MLP projections; LoRA goes on all of them.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


class HubUnavailable(OSError):
    """A hub model id could not be loaded: offline, or no connection."""


@dataclass(frozen=True)
class LoraSettings:
    """LoRA (Hu et al., 2021): W x + (alpha/r) B A x, A: r x d_in, B: d_out x r, B = 0 at start.

    ``target_modules=None`` means the attention and MLP projections (:data:`LORA_TARGETS`) where
    the model has them, else every linear layer but the output head (peft's ``"all-linear"``).
    Because B starts at zero, a fresh adapter leaves the policy equal to the base: pi = pi_ref.
    """

    r: int = 8
    alpha: float = 16.0
    dropout: float = 0.0
    target_modules: tuple[str, ...] | None = None

    def __post_init__(self):
        if not (isinstance(self.r, int) and self.r >= 1):
            raise ValueError(f"LoRA rank r must be a positive integer, got {self.r!r}")
        if not self.alpha > 0:
            raise ValueError(f"LoRA alpha must be > 0, got {self.alpha!r}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"LoRA dropout must be in [0, 1), got {self.dropout!r}")


@dataclass
class Policy:
    """A loaded policy: the model (a ``PeftModel`` when LoRA is on), its tokenizer, the reference.

    ``ref_model`` is a separate frozen reference when one was given; when it is None the reference
    is ``model`` with its adapter disabled (see :func:`reference`).
    """

    model: Any
    tokenizer: Any
    ref_model: Any = None
    source: str = ""
    load_in_4bit: bool = False
    compute_dtype: Any = None
    notes: list[str] = field(default_factory=list)

    @property
    def device(self):
        return next(self.model.parameters()).device

    def reference(self):
        """Context manager yielding the model to call as pi_ref (see :func:`reference`)."""
        return reference(self.model, self.ref_model)

    def footprint_bytes(self) -> int:
        return memory_footprint_bytes(self.model)


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def ensure_pad_token(tokenizer, padding_side: str = "left"):
    """Give the tokenizer a pad token (its EOS) when it has none, and pad on the left.

    Padding with EOS is safe here because every mask in this module comes from the attention mask
    and the *first* EOS of a completion, never from looking for pad tokens (TRL's defect D5,
    notes/trl.md §4.5, scores at the first pad, which is wrong when pad == eos). Left padding keeps
    the last prompt token at the end of each row, where generation continues.
    """
    if padding_side not in ("left", "right"):
        raise ValueError(f"padding_side must be 'left' or 'right', got {padding_side!r}")
    if tokenizer.pad_token is None:
        if tokenizer.eos_token is None:
            raise ValueError(
                f"tokenizer {type(tokenizer).__name__} has neither a pad nor an EOS token; add "
                "one, e.g. tokenizer.add_special_tokens({'pad_token': '<pad>'}) and resize the "
                "model's embeddings"
            )
        tokenizer.pad_token = tokenizer.eos_token
        message = (
            f"tokenizer had no pad token: set pad_token = eos_token "
            f"({tokenizer.eos_token!r}); masks never depend on pad tokens"
        )
        warnings.warn(message, UserWarning, stacklevel=2)
        logger.warning(message)
    tokenizer.padding_side = padding_side
    return tokenizer


# ---------------------------------------------------------------------------------------------
# Building and loading
# ---------------------------------------------------------------------------------------------


def tiny_llama(
    vocab_size: int = 64,
    hidden: int = 64,
    layers: int = 2,
    heads: int = 4,
    intermediate: int | None = None,
    max_positions: int = 256,
    seed: int = 0,
    init_std: float = 0.02,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
    bos_token_id: int | None = None,
):
    """A randomly initialised ``LlamaForCausalLM`` built from a config (no download).

    For tests and the tiny track. ``init_std`` is the config's ``initializer_range``: the default
    0.02 gives near-uniform next-token distributions; a larger value (e.g. 0.5-1) gives peaked ones,
    which tests of sampling distributions need to tell samplers apart.
    """
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    for name, value in (
        ("vocab_size", vocab_size),
        ("hidden", hidden),
        ("layers", layers),
        ("heads", heads),
        ("max_positions", max_positions),
    ):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive integer, got {value!r}")
    if hidden % heads or (hidden // heads) % 2:
        raise ValueError(
            f"hidden ({hidden}) must be a multiple of heads ({heads}) with an even "
            "head dimension (rotary embeddings rotate pairs)"
        )
    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=hidden,
        intermediate_size=intermediate or 2 * hidden,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=heads,
        max_position_embeddings=max_positions,
        initializer_range=init_std,
        tie_word_embeddings=False,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
        bos_token_id=bos_token_id,
        attention_dropout=0.0,
    )
    with torch.random.fork_rng(devices=[]):  # seed locally: do not move the caller's RNG
        torch.manual_seed(seed)
        model = LlamaForCausalLM(config)
    return model.eval()


def quantize_4bit(model, double_quant: bool = False, compute_dtype=None, device=None):
    """An NF4 copy of an in-memory ``PreTrainedModel`` (e.g. :func:`tiny_llama`).

    transformers quantises while loading, so the model is written to a temporary folder as
    safetensors and read back with a ``BitsAndBytesConfig``. Linear layers whose shapes NF4
    cannot take stay in full precision, with one warning (:func:`nf4_layer_fits`); bitsandbytes'
    CPU repacking is turned off (:func:`keep_standard_nf4_layout`).
    """
    import torch

    device = torch.device(device) if device is not None else default_device()
    _require_quantisable(model, "the model")
    check_bitsandbytes(device)
    config = bnb_config(double_quant, compute_dtype, device, skip_modules=nf4_skip_modules(model))
    with tempfile.TemporaryDirectory(prefix="course_lib_4bit_") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        kwargs = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}
        quant = type(model).from_pretrained(
            folder, quantization_config=config, use_safetensors=True, **kwargs
        )
    if count_4bit_linears(quant) == 0:
        raise ValueError(f"no layer of {type(model).__name__} was quantised to 4-bit")
    keep_standard_nf4_layout(quant)
    _announce_nf4_kept(quant)
    return quant.eval()


def apply_lora(model, lora: LoraSettings, gradient_checkpointing: bool = False):
    """Wrap ``model`` with a fresh LoRA adapter (peft); the base weights are frozen.

    For a 4-bit base, ``prepare_model_for_kbit_training`` first (frozen base, fp32 norms, input
    gradients), as QLoRA and TRL do.
    """
    from peft import LoraConfig, get_peft_model, prepare_model_for_kbit_training

    if not isinstance(lora, LoraSettings):
        raise ValueError(f"lora must be a LoraSettings or None, got {type(lora).__name__}")
    names = {name.rsplit(".", 1)[-1] for name in quantisable_linears(model)}
    names |= {
        name.rsplit(".", 1)[-1]
        for name, _ in model.named_modules()
        if type(_).__name__ == "Linear4bit"
    }
    if lora.target_modules is None:
        targets = [t for t in LORA_TARGETS if t in names] or "all-linear"
    else:
        missing = [t for t in lora.target_modules if t not in names]
        if missing:
            raise ValueError(
                f"LoRA target modules {missing} are not linear layers of "
                f"{type(model).__name__}; its linear layers are {sorted(names)}"
            )
        targets = list(lora.target_modules)
    if getattr(model, "is_loaded_in_4bit", False):
        model = prepare_model_for_kbit_training(
            model,
            use_gradient_checkpointing=gradient_checkpointing,
            gradient_checkpointing_kwargs={"use_reentrant": False},
        )
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    config = LoraConfig(
        r=lora.r,
        lora_alpha=lora.alpha,
        lora_dropout=lora.dropout,
        target_modules=targets,
        bias="none",
        task_type="CAUSAL_LM",
    )
    return get_peft_model(model, config)


def _is_offline() -> bool:
    return any(
        os.environ.get(k, "").strip().lower() in ("1", "true", "yes", "on")
        for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")
    )


def _add_nf4_skips(kwargs: dict, location, trust_remote_code: bool, **hub) -> None:
    """Before a 4-bit load (``kwargs`` holds a ``quantization_config``): build the model from its
    config on the meta device (no weights, no memory; tens of ms for SmolLM2) to read its layer
    shapes, and keep those NF4 cannot take in full precision (:func:`nf4_skip_modules`)."""
    quantization = kwargs.get("quantization_config")
    if quantization is None:
        return
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(location, trust_remote_code=trust_remote_code, **hub)
    with torch.device("meta"):
        skeleton = AutoModelForCausalLM.from_config(config, trust_remote_code=trust_remote_code)
    quantization.llm_int8_skip_modules = nf4_skip_modules(skeleton)


def _load_pretrained(source: str, kwargs: dict, trust_remote_code: bool):
    """(model, tokenizer) from the embedded default, a local folder or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == "embedded":
        _add_nf4_skips(kwargs, convert_embedded(), trust_remote_code=False)
        return load_embedded_default(**kwargs)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(
                f"source {source!r} is a file; give a model folder, a hub id or 'embedded'"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
        _add_nf4_skips(kwargs, path, trust_remote_code)
        model = AutoModelForCausalLM.from_pretrained(
            path, use_safetensors=True, trust_remote_code=trust_remote_code, **kwargs
        )
        return model, tokenizer
    looks_like_path = source.startswith((".", "/", "~")) or os.sep in source.replace("/", "", 1)
    if looks_like_path or not _HUB_ID.match(source):
        raise ValueError(
            f"source {source!r} is neither 'embedded', an existing folder, nor a hub "
            "id like 'HuggingFaceTB/SmolLM2-360M-Instruct'"
        )
    offline = _is_offline()
    embedded_hint = (
        "The embedded default needs no network: load_policy('embedded') "
        f"({EMBEDDED_NAME}, {HOW_TO_GET_EMBEDDED.split('.')[0].lower()})."
    )
    try:
        tokenizer = AutoTokenizer.from_pretrained(
            source, local_files_only=offline, trust_remote_code=trust_remote_code
        )
        _add_nf4_skips(kwargs, source, trust_remote_code, local_files_only=offline)
        model = AutoModelForCausalLM.from_pretrained(
            source,
            use_safetensors=True,
            local_files_only=offline,
            trust_remote_code=trust_remote_code,
            **kwargs,
        )
    except (OSError, ConnectionError) as exc:
        why = (
            "HF_HUB_OFFLINE/TRANSFORMERS_OFFLINE is set and it is not in the local cache"
            if offline
            else "the hub could not be reached or has no such model"
        )
        raise HubUnavailable(
            f"cannot load hub model {source!r}: {why} ({type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}). "
            f"{embedded_hint}"
        ) from exc
    return model, tokenizer


def load_policy(
    source: str = "embedded",
    load_in_4bit: bool = False,
    double_quant: bool = False,
    lora: LoraSettings | None = None,
    gradient_checkpointing: bool | None = None,
    ref_model: Any = None,
    device=None,
    dtype=None,
    trust_remote_code: bool = False,
    tokenizer: Any = None,
) -> Policy:
    """Load a causal LM as a policy: optionally NF4 4-bit, optionally with a fresh LoRA adapter.

    ``source`` is ``"embedded"`` (SmolLM2-135M-Instruct, no network), a local folder, or a hub id
    (needs a network or the local cache). Weights are read as safetensors only; remote code runs
    only with ``trust_remote_code=True``. ``dtype`` (non-4-bit weights) defaults to the compute
    dtype of the device (:func:`compute_dtype_for`). ``gradient_checkpointing=None`` turns it on for
    a 4-bit model on CUDA (memory is the limit there) and off on CPU (compute is).

    The reference pi_ref is ``ref_model`` when given, else the base with the adapter disabled
    (``with policy.reference() as ref``), which is pi_ref exactly because the adapter starts at
    zero (paper Sec. 6: pi_ref = the SFT model = the initial policy). This does not hold for an
    adapter loaded already trained: pass that model's base as ``ref_model`` instead.
    """
    import torch

    if not isinstance(source, str | os.PathLike):
        raise ValueError(f"source must be 'embedded', a folder or a hub id, got {source!r}")
    source = os.fspath(source)
    device = torch.device(device) if device is not None else default_device()
    if lora is not None and not isinstance(lora, LoraSettings):
        raise ValueError(f"lora must be a LoraSettings or None, got {type(lora).__name__}")
    compute_dtype = compute_dtype_for(device)
    kwargs: dict[str, Any] = {}
    if load_in_4bit:
        check_bitsandbytes(device)
        kwargs["quantization_config"] = bnb_config(double_quant, compute_dtype, device)
        if device.type == "cuda":
            kwargs["device_map"] = {"": device.index or 0}
    else:
        kwargs["dtype"] = dtype or compute_dtype
    model, tok = _load_pretrained(source, kwargs, trust_remote_code)
    if load_in_4bit and count_4bit_linears(model) == 0:
        misaligned = nf4_misaligned_linears(model)
        why = (
            f" (its {len(misaligned)} linear layers have shapes NF4 cannot take: in_features a "
            f"multiple of {NF4_BLOCKSIZE} and out_features of {NF4_CPU_BLOCK_N} are needed)"
            if misaligned
            else ""
        )
        raise ValueError(
            f"{source!r} ({type(model).__name__}) has no nn.Linear layers that were "
            f"quantised to 4-bit{why}; load it with load_in_4bit=False"
        )
    notes = []
    if load_in_4bit:
        keep_standard_nf4_layout(model)  # same layout, numbers and gradients on every CPU
        kept = _announce_nf4_kept(model)
        if kept:
            notes.append(kept)
    if not load_in_4bit:
        model = model.to(device)
    tok = ensure_pad_token(tokenizer if tokenizer is not None else tok)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(load_in_4bit and device.type == "cuda")
    if lora is not None:
        model = apply_lora(model, lora, gradient_checkpointing=gradient_checkpointing)
        notes.append(f"LoRA r={lora.r} on {sorted(model.peft_config['default'].target_modules)}")
    elif gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    if ref_model is not None:
        ref_model.eval().requires_grad_(False)
    return Policy(
        model=model,
        tokenizer=tok,
        ref_model=ref_model,
        source=source,
        load_in_4bit=load_in_4bit,
        compute_dtype=compute_dtype,
        notes=notes,
    )
