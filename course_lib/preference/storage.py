"""Saving and loading a trained preference model.

A trained model is saved as a folder (``config.json``, ``model.safetensors``, and ``report.json``
from :func:`~course_lib.preference.training.train_for_task`) built in a temporary folder that then
takes the target's place (:func:`course_lib.atomic.atomic_dir`): a killed run leaves the old model
or the new one. As that replaces the folder whole, the target must be new, empty, or a preference
model the course saved (only those files, its ``config.json`` a :class:`PMConfig`), as
``data/preference_model_bt`` and ``data/preference_model_nt`` are (:func:`check_model_dir`);
anything else is refused.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

from course_lib import paths
from course_lib.atomic import atomic_dir, check_replaceable_dir, read_json_object
from course_lib.preference.model import PMConfig, PreferenceModel, backbone_preference_model

#: The files a saved preference model folder holds (report.json only from train_for_task).
MODEL_FILES = frozenset({"config.json", "model.safetensors", "report.json"})
_CONFIG_FIELDS = frozenset(PMConfig.__dataclass_fields__)


def _is_preference_model(folder: Path) -> bool:
    """The course saved it: its ``config.json`` is a :class:`PMConfig` (file names alone would
    match many other models' folders)."""
    config = read_json_object(folder / "config.json")
    return config is not None and {"kind", "d_model"} <= set(config) <= _CONFIG_FIELDS


def check_model_dir(folder: str | Path) -> Path:
    """Check, creating nothing, that a preference model may be saved to ``folder``, replacing it
    whole: it must be new, empty, or a preference model the course saved (module docstring);
    otherwise :class:`~course_lib.atomic.OutputDirError` names the file in the way."""
    return check_replaceable_dir(folder, MODEL_FILES, _is_preference_model, "a preference model")


def save_preference_model(
    model: PreferenceModel, folder: str | Path, report: dict | None = None
) -> Path:
    """``config.json`` + ``model.safetensors`` (+ ``report.json`` when ``report`` is given),
    written to a temporary folder that then replaces ``folder`` (:func:`check_model_dir` must
    accept it).

    A backbone model saves only what training changed (the LoRA adapter and the heads); its
    backbone is reloaded from ``cfg.backbone``."""
    from safetensors.torch import save_file

    folder = check_model_dir(folder)
    with atomic_dir(folder) as tmp:  # files in tmp are fsynced before tmp is renamed into place
        (tmp / "config.json").write_text(json.dumps(asdict(model.cfg), indent=1) + "\n")
        if model.cfg.backbone is None:
            items = model.state_dict().items()
        else:
            items = ((k, v) for k, v in model.named_parameters() if v.requires_grad)
        state = {k: v.detach().cpu().contiguous() for k, v in items}
        save_file(state, str(tmp / "model.safetensors"))
        if report is not None:
            (tmp / "report.json").write_text(json.dumps(report, indent=1) + "\n")
    return folder


def default_model_dir(mode: str = "bt") -> Path:
    """``data/preference_model_<mode>``: the committed models of the tiny track."""
    if mode not in ("bt", "nt"):
        raise ValueError(f"mode={mode!r} is invalid: choose 'bt' or 'nt'")
    return paths.data_dir() / f"preference_model_{mode}"


def load_preference_model(folder: str | Path) -> PreferenceModel:
    from safetensors.torch import load_file

    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise FileNotFoundError(f"no preference model in {folder} (config.json missing)")
    cfg = PMConfig(**json.loads((folder / "config.json").read_text()))
    state = load_file(str(folder / "model.safetensors"))
    if cfg.backbone is None:
        model = PreferenceModel(cfg)
        model.load_state_dict(state)
        return model.eval()
    model, _ = backbone_preference_model(
        cfg.backbone, cfg.kind, cfg.lora_r, cfg.load_in_4bit, cfg.max_len, cfg.dropout
    )
    trainable = {k for k, v in model.named_parameters() if v.requires_grad}
    if set(state) != trainable:
        raise ValueError(
            f"{folder} does not match a {cfg.backbone!r} backbone with LoRA r="
            f"{cfg.lora_r}: {sorted(set(state) ^ trainable)[:5]}"
        )
    device = next(model.parameters()).device
    model.load_state_dict({k: v.to(device) for k, v in state.items()}, strict=False)
    return model.eval()
