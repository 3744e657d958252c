"""Trained LoRA adapters on disk: written as safetensors, read back into a policy.

A trained adapter is all that differs between pi and pi_ref on the real track (the 4-bit base is
frozen), so it is all the course commits: ``adapter_model.safetensors`` (the LoRA matrices A and
B of every target layer) and ``adapter_config.json`` (peft's description: r, alpha, the target
modules). :func:`save_adapter` can store the matrices in bfloat16, which halves the file; whoever
loads the file then has exactly the weights that were evaluated, since the evaluation reads the
same file (:mod:`course_lib.experiments.real_trained`).

Nothing here unpickles: the weights are safetensors and the config is JSON.
"""

from __future__ import annotations

import json
from pathlib import Path

from course_lib.atomic import atomic_dir

WEIGHTS = "adapter_model.safetensors"
CONFIG = "adapter_config.json"
DTYPES = ("float32", "bfloat16")
_COMPARED = ("r", "lora_alpha", "target_modules")


def lora_state(model) -> dict:
    """The adapter's tensors by peft's saved names (without the adapter's name)."""
    from peft import get_peft_model_state_dict

    return get_peft_model_state_dict(model)


def save_adapter(
    model, folder: str | Path, dtype: str = "float32", base: str | None = None
) -> Path:
    """Write ``model``'s LoRA adapter into ``folder`` (atomically): safetensors and peft's JSON.

    ``base`` names the base model in the JSON (peft's ``base_model_name_or_path``); without it,
    the field is left empty rather than holding the folder the base was loaded from on this
    machine.
    """
    import torch
    from safetensors.torch import save_file

    if dtype not in DTYPES:
        raise ValueError(f"dtype={dtype!r} is invalid: one of {', '.join(DTYPES)}")
    state = {
        k: v.detach().to("cpu", getattr(torch, dtype)).contiguous()
        for k, v in lora_state(model).items()
    }
    bad = [k for k, v in state.items() if not torch.isfinite(v).all()]
    if bad:
        raise ValueError(
            f"the adapter has non-finite weights in {bad[0]} (and {len(bad) - 1} more)"
        )
    config = model.peft_config["default"].to_dict()
    config["target_modules"] = sorted(config["target_modules"])
    config["base_model_name_or_path"] = base
    folder = Path(folder)
    with atomic_dir(folder) as tmp:
        save_file(state, str(Path(tmp) / WEIGHTS), metadata={"format": "pt", "dtype": dtype})
        (Path(tmp) / CONFIG).write_text(json.dumps(config, indent=1, sort_keys=True, default=str))
    return folder


def load_adapter(model, folder: str | Path) -> dict:
    """Copy the adapter in ``folder`` into ``model``'s LoRA weights (cast to their dtype).

    ``model`` must carry a LoRA adapter of the same shape (``load_policy(..., lora=LoraSettings(
    r, alpha))``); r, alpha and the target modules are checked against ``adapter_config.json``
    and every LoRA tensor of the model must be in the file. Returns the config read.
    """
    import torch
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    folder = Path(folder)
    weights, config_file = folder / WEIGHTS, folder / CONFIG
    for path in (weights, config_file):
        if not path.is_file():
            raise FileNotFoundError(f"{path} is missing: {folder} is not a saved LoRA adapter")
    saved = json.loads(config_file.read_text())
    if not hasattr(model, "peft_config"):
        raise ValueError("the model has no LoRA adapter: load it with lora=LoraSettings(...)")
    ours = model.peft_config["default"].to_dict()
    ours["target_modules"] = sorted(ours["target_modules"])
    differ = {
        k: (saved.get(k), ours.get(k))
        for k in _COMPARED
        if (sorted(saved[k]) if k == "target_modules" else saved.get(k)) != ours.get(k)
    }
    if differ:
        raise ValueError(f"the adapter in {folder} does not fit the model: (file, model) {differ}")
    state = load_file(str(weights))
    expected = lora_state(model)
    missing = sorted(set(expected) - set(state))
    extra = sorted(set(state) - set(expected))
    if missing or extra:
        raise ValueError(
            f"the adapter in {folder} has other tensors than the model's LoRA: missing "
            f"{missing[:3]}, unexpected {extra[:3]}"
        )
    for k, v in state.items():
        if v.shape != expected[k].shape:
            raise ValueError(f"{k}: shape {tuple(v.shape)} in {folder}, {tuple(expected[k].shape)}")
        state[k] = v.to(expected[k].dtype)
    with torch.no_grad():
        set_peft_model_state_dict(model, state)
    return saved
