"""Saving and loading the tiny policy's folder (weights, tokenizer, training log).

The folder is written to a temporary folder that then takes its place
(:func:`course_lib.atomic.atomic_dir`); since that replaces it whole, it must be new, empty, or a
tiny policy the course saved (:func:`check_policy_dir`).
"""

from __future__ import annotations

import json
from pathlib import Path

from course_lib import paths
from course_lib.atomic import (
    atomic_dir,
    atomic_write_text,
    check_replaceable_dir,
    read_json_object,
)
from course_lib.tasks.tokenizer import SEP


def default_policy_dir() -> Path:
    """``data/tiny_policy``: the committed tiny policy."""
    return paths.data_dir() / "tiny_policy"


TRAIN_COMMAND = "python -m course_lib.tasks.tiny_policy train"
#: Files that save_policy may write: the model's and the tokenizer's (save_pretrained writes some of
#: these, depending on the transformers version) and the training log.
POLICY_FILES = frozenset(
    {
        "config.json",
        "generation_config.json",
        "model.safetensors",
        "tokenizer.json",
        "tokenizer_config.json",
        "special_tokens_map.json",
        "added_tokens.json",
        "chat_template.jinja",
        "training_log.json",
    }
)


def _is_tiny_policy(folder: Path) -> bool:
    """A folder the course saved: its training log names the train command, or its tokenizer
    has the course's ``<tldr>`` separator (file names alone match any Hugging Face model)."""
    log = read_json_object(folder / "training_log.json")
    if log is not None and str(log.get("command", "")).startswith(TRAIN_COMMAND):
        return True
    config = read_json_object(folder / "tokenizer_config.json")
    return config is not None and config.get("sep_token") == SEP


def check_policy_dir(folder: str | Path) -> Path:
    """Check, creating nothing, that a tiny policy may be saved to ``folder`` (replacing it whole):
    new, empty, or a tiny policy the course saved; otherwise an OutputDirError naming it."""
    return check_replaceable_dir(folder, POLICY_FILES, _is_tiny_policy, "a tiny policy")


def save_policy(model, tok, folder: str | Path, log: dict | None = None) -> None:
    """safetensors weights + config (``AutoModelForCausalLM``) + tokenizer (``AutoTokenizer``)
    + ``training_log.json``, written to a temporary folder that then replaces ``folder`` whole
    (:func:`check_policy_dir` must accept it)."""
    folder = check_policy_dir(folder)
    with atomic_dir(folder) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        if log is not None:
            atomic_write_text(
                tmp / "training_log.json", json.dumps(log, indent=1, sort_keys=True) + "\n"
            )


def load_tiny_policy(folder: str | Path | None = None):
    """The committed tiny policy and its tokenizer: ``(model, tok)``, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder or default_policy_dir())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {folder}; remake it with "
            "`python -m course_lib.tasks.tiny_policy train --out data/tiny_policy`"
        )
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)
