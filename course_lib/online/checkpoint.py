"""Checkpoints and the metrics log of an online run: resumable bit for bit, never half-written.

A checkpoint is a folder ``<out_dir>/checkpoint`` holding the trainable weights, the optimiser's
tensors and the torch RNG state as safetensors, and everything else (step, config, scheduler,
Python and numpy RNG states, the metrics history) as JSON: nothing is pickled. It is written into
a temporary folder, fsynced and renamed into place (:func:`course_lib.atomic.atomic_dir`), and only
when every weight and every optimiser tensor is finite: a run that diverged keeps its last good
checkpoint.

The metrics log ``metrics.jsonl`` holds one line per step of what the step computed (loss, h, p,
KL, ...), and ``timing.jsonl`` its wall-clock figures, which differ between runs. On resume both
are rewritten, atomically, from the checkpoint's history, so a resumed run's ``metrics.jsonl`` is
byte for byte the uninterrupted run's.
"""

from __future__ import annotations

import json
import random
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from course_lib.atomic import atomic_dir, atomic_write_text, remove_stale_temporaries
from course_lib.online.config import OnlineConfig

CHECKPOINT = "checkpoint"
METRICS_LOG = "metrics.jsonl"
TIMING_LOG = "timing.jsonl"
#: Wall-clock fields of a step's metrics: kept in the history, logged apart from the rest.
TIMING_FIELDS = ("seconds", "tokens_per_s")


class NonFiniteLoss(RuntimeError):
    """The loss, a gradient or the weights became NaN or infinite; the run stopped and kept its
    last good checkpoint."""


def checkpoint_path(out_dir: str | Path) -> Path:
    return Path(out_dir) / CHECKPOINT


def checkpoint_step(out_dir: str | Path) -> int | None:
    """The step of the checkpoint in ``out_dir`` (or of its ``.old`` copy); None if none."""
    folder = _readable_checkpoint(checkpoint_path(out_dir))
    if folder is None:
        return None
    return json.loads((folder / "state.json").read_text())["step"]


def _readable_checkpoint(path: Path) -> Path | None:
    if (path / "state.json").is_file():
        return path
    old = path.with_name(path.name + ".old")
    if (old / "state.json").is_file():  # killed between the two renames of atomic_dir
        return old
    return None


def trainable_state(model) -> dict[str, torch.Tensor]:
    """The parameters that train (the LoRA adapter, or every weight), on the CPU."""
    return {
        n: p.detach().cpu().contiguous() for n, p in model.named_parameters() if p.requires_grad
    }


def non_finite(tensors: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors that hold a NaN or an infinity."""
    return [
        name
        for name, t in tensors.items()
        if t.is_floating_point() and not bool(torch.isfinite(t).all())
    ]


def save_checkpoint(
    out_dir: str | Path,
    model,
    optimizer,
    scheduler,
    step: int,
    config: OnlineConfig,
    history: list[dict],
) -> Path:
    """Write the checkpoint of ``step``; refuse (NonFiniteLoss) if a tensor is not finite."""
    from safetensors.torch import save_file

    weights = trainable_state(model)
    opt_tensors, opt_meta = _flatten_optimizer(optimizer.state_dict())
    bad = non_finite(weights) + non_finite(opt_tensors)
    if bad:
        raise NonFiniteLoss(
            f"{config.algorithm}: after step {step} {len(bad)} trainable or optimiser tensors "
            f"are not finite (e.g. {bad[0]}); no checkpoint was written for this step. Lower "
            "lr or raise tau."
        )
    target = checkpoint_path(out_dir)
    remove_stale_temporaries(out_dir, CHECKPOINT)  # from a run killed while it saved
    with atomic_dir(target) as tmp:
        save_file(weights, str(tmp / "trainable.safetensors"))
        save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
        save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
        state = {
            "step": step,
            "config": asdict(config),
            "optimizer": opt_meta,
            "scheduler": scheduler.state_dict(),
            "python_rng": _jsonable(random.getstate()),
            "numpy_rng": _jsonable(np.random.get_state(legacy=False)),  # noqa: NPY002
            "history": history,
        }
        (tmp / "state.json").write_text(json.dumps(state))
    return target


def load_checkpoint(
    path: str | Path, model, optimizer, scheduler, config: OnlineConfig
) -> tuple[int, list[dict]]:
    """Restore weights, optimiser, scheduler and RNG states; returns ``(step, history)``.

    Refuses a checkpoint written with another configuration (only
    :meth:`OnlineConfig.run_only_fields` may differ) or for other trainable parameters.
    """
    from safetensors.torch import load_file

    path = Path(path)
    found = _readable_checkpoint(path)
    if found is None:
        raise FileNotFoundError(f"no checkpoint in {path} (it has no state.json)")
    path = found
    state = json.loads((path / "state.json").read_text())
    run_only = config.run_only_fields()
    saved = {k: v for k, v in state["config"].items() if k not in run_only}
    mine = {k: v for k, v in asdict(config).items() if k in saved}
    if saved != mine:
        diff = {k: (saved[k], mine[k]) for k in saved if saved[k] != mine.get(k)}
        raise ValueError(
            f"checkpoint {path} was written with another configuration: (saved, now) = {diff}"
        )
    weights = load_file(str(path / "trainable.safetensors"))
    named = dict(model.named_parameters())
    missing = set(weights) ^ {n for n, p in named.items() if p.requires_grad}
    if missing:
        raise ValueError(
            f"checkpoint {path} does not match the model's trainable "
            f"parameters: {sorted(missing)[:5]}"
        )
    with torch.no_grad():
        for name, tensor in weights.items():
            named[name].copy_(tensor)
    opt = _unflatten_optimizer(load_file(str(path / "optimizer.safetensors")), state["optimizer"])
    optimizer.load_state_dict(opt)
    scheduler.load_state_dict(state["scheduler"])
    torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
    random.setstate(_tuplify(state["python_rng"]))
    numpy_rng = state["numpy_rng"]
    numpy_rng["state"]["key"] = np.array(numpy_rng["state"]["key"], dtype=np.uint32)
    np.random.set_state(numpy_rng)  # noqa: NPY002 (the global state learners use)
    return state["step"], state["history"]


# -- the metrics log ---------------------------------------------------------------------------
def _split(metrics: dict) -> tuple[dict, dict]:
    kept = {k: v for k, v in metrics.items() if k not in TIMING_FIELDS}
    timing = {"step": metrics.get("step"), **{k: metrics.get(k) for k in TIMING_FIELDS}}
    return kept, timing


def append_metrics(out_dir: str | Path, metrics: dict) -> None:
    """Append one step to ``metrics.jsonl`` and ``timing.jsonl`` (a line each).

    A kill in the middle of an append can leave a partial last line; a resume rewrites both logs
    from the checkpoint (:func:`rewrite_logs`), which drops it.
    """
    out_dir = Path(out_dir)
    kept, timing = _split(metrics)
    for name, row in ((METRICS_LOG, kept), (TIMING_LOG, timing)):
        with open(out_dir / name, "a", encoding="utf-8") as log:
            log.write(json.dumps(row) + "\n")


def rewrite_logs(out_dir: str | Path, history: list[dict]) -> None:
    """Both logs, atomically, as they stood at the checkpoint whose history this is."""
    out_dir = Path(out_dir)
    for name in (METRICS_LOG, TIMING_LOG):
        remove_stale_temporaries(out_dir, name)
    rows = [_split(m) for m in history]
    atomic_write_text(out_dir / METRICS_LOG, "".join(json.dumps(k) + "\n" for k, _ in rows))
    atomic_write_text(out_dir / TIMING_LOG, "".join(json.dumps(t) + "\n" for _, t in rows))


# -- optimiser state as safetensors + JSON ------------------------------------------------------
def _flatten_optimizer(state_dict: dict) -> tuple[dict, dict]:
    tensors, meta = {}, {"param_groups": state_dict["param_groups"], "state": {}}
    for idx, slots in state_dict["state"].items():
        meta["state"][str(idx)] = {}
        for name, value in slots.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{idx}.{name}"] = value.detach().cpu().contiguous()
                meta["state"][str(idx)][name] = "tensor"
            else:
                meta["state"][str(idx)][name] = value
    return tensors, meta


def _unflatten_optimizer(tensors: dict, meta: dict) -> dict:
    state = {}
    for idx, slots in meta["state"].items():
        state[int(idx)] = {
            name: tensors[f"{idx}.{name}"] if value == "tensor" else value
            for name, value in slots.items()
        }
    return {"state": state, "param_groups": meta["param_groups"]}


def _jsonable(obj):
    if isinstance(obj, tuple | list):
        return [_jsonable(o) for o in obj]
    if isinstance(obj, dict):
        return {k: _jsonable(v) for k, v in obj.items()}
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, np.integer):
        return int(obj)
    return obj


def _tuplify(obj):
    return tuple(_tuplify(o) for o in obj) if isinstance(obj, list) else obj
