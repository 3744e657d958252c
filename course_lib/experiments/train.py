"""One training run, resumable: ``python -m course_lib train``.

A researcher who wants one configuration, not the whole comparison of ``reproduce``::

    python -m course_lib train --algorithm ipo_md --tau 0.1 --beta 0.125 --steps 200 \\
        --track tiny --out runs/ipo_md --checkpoint-every 10
    python -m course_lib train ... --out runs/ipo_md --resume     # after a crash or a kill

The tiny track fine-tunes the committed tiny policy in full against a frozen copy (pi_ref); the
real track trains a LoRA adapter on SmolLM2 in 4-bit NF4 (the adapter-off base is pi_ref). The
judge that labels the pairs is the task's exact oracle (the default), the tiny track's learned
preference model (``--judge learned``) or a preference-model folder.

``--out DIR`` receives ``run.json`` (the settings), ``metrics.jsonl`` (one line per step),
``timing.jsonl``, ``checkpoint/`` and, at the end, the trained weights (``policy/`` for the tiny
track, ``adapter/`` for the real one), each written atomically. A resumed run's checkpoint and
``metrics.jsonl`` are bit for bit those of an uninterrupted run (every random draw of a step is
seeded from the seed and the step; the checkpoint keeps the optimiser and RNG states).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

from course_lib import validation as check
from course_lib.atomic import atomic_dir, atomic_write_json, check_output_dir, claim_output_dir
from course_lib.config import opt
from course_lib.online.algorithms import method_seed, online_algorithms
from course_lib.online.config import LABEL_KINDS, LR_SCHEDULES

COMMAND = "python -m course_lib train"
RUN_FILE = "run.json"
# Settings a resumed run may change: how long it runs and how often it saves.
RUN_ONLY = ("steps", "checkpoint_every")


@dataclass(frozen=True)
class TrainSettings:
    """What one run trains; sizes left ``None`` come from the profile, lr from the track."""

    algorithm: str = opt("online_ipo", "online_ipo, ipo_md, online_dpo, nash_md_pg, online_slic")
    tau: float = opt(0.1, "the KL coefficient (> 0)")
    beta: float = opt(0.0, "mixture weight on pi_ref, in [0, 1] (ipo_md, nash_md_pg)")
    lr: float | None = opt(None, "learning rate (default: the track's)")
    label: str = opt("soft", "soft, sampled or threshold")
    track: str = opt("tiny", "tiny (the committed tiny policy) or real (SmolLM2 in 4-bit + LoRA)")
    steps: int | None = opt(None, "optimiser steps (default: the profile's)")
    prompts_per_step: int | None = opt(None, "prompts per step (default: the profile's)")
    new_tokens: int | None = opt(None, "completion length (default: the profile's)")
    seed: int = opt(0, "seed of the run; the algorithm adds its own offset")
    common_seeds: bool = opt(False, "draw from --seed itself, without the algorithm's offset")
    mode: str = opt("bt", "the oracle's mode: bt or nt")
    judge: str = opt(
        "oracle", "oracle, learned (tiny track), reward (the BT score) or a model folder"
    )
    model: str = opt("embedded", "real track: 'embedded', a model folder or a hub id")
    lr_schedule: str = opt("constant", "after warm-up: constant or cosine")
    checkpoint_every: int = opt(1, "steps between checkpoints")
    monitor_every: int = opt(0, "steps between samples of pi against pi_ref (0: never)")

    def validate(self) -> None:
        check.choice("algorithm", self.algorithm, online_algorithms())
        check.tau(self.tau)
        check.beta(self.beta)
        if self.lr is not None:
            check.positive("lr", self.lr, what="the learning rate")
        check.choice("label", self.label, LABEL_KINDS)
        check.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check.choice("track", self.track, ("tiny", "real"))
        check.choice("mode", self.mode, ("bt", "nt"))
        for name in ("steps", "prompts_per_step", "new_tokens"):
            if getattr(self, name) is not None:
                check.integer(name, getattr(self, name))
        for name in ("seed", "checkpoint_every", "monitor_every"):
            check.integer(name, getattr(self, name), minimum=0)
        if self.judge not in ("oracle", "learned", "reward"):
            folder = Path(self.judge)
            if not (folder / "config.json").is_file():
                raise ValueError(
                    f"judge={self.judge!r} is invalid: 'oracle', 'learned', 'reward' or the "
                    "folder of a trained preference model (one holding config.json)"
                )
        if self.judge == "learned" and self.track == "real":
            raise ValueError(
                "judge='learned' is the tiny track's preference model (its own word-level "
                "tokenizer); on the real track give 'oracle' or a folder trained with "
                "`python -m course_lib.preference train --backbone ...`"
            )


def _lr_default(settings: TrainSettings) -> float:
    if settings.track == "real":
        from course_lib.experiments.real import RealSettings

        return RealSettings.lr
    from course_lib.online import ALGORITHMS

    return ALGORITHMS[settings.algorithm].lr


def build_trainer(settings: TrainSettings, profile, out: Path, progress: bool = True):
    """The :class:`~course_lib.online.OnlineTrainer` of ``settings``, writing into ``out``."""
    from course_lib.online import ALGORITHMS, OnlineConfig

    s = settings
    real = s.track == "real"
    steps = s.steps or (profile.real_train_steps if real else profile.train_steps)
    config = OnlineConfig(
        algorithm=s.algorithm,
        tau=s.tau,
        beta=s.beta if ALGORITHMS[s.algorithm].uses_beta else 0.0,
        label=s.label,
        steps=steps,
        prompts_per_step=s.prompts_per_step
        or (profile.real_prompts_per_step if real else profile.prompts_per_step),
        lr=s.lr if s.lr is not None else _lr_default(s),
        lr_schedule=s.lr_schedule,
        max_new_tokens=s.new_tokens
        or (profile.real_new_tokens if real else profile.tiny_new_tokens),
        seed=method_seed(s.seed, s.algorithm, s.common_seeds),
        monitor_every=s.monitor_every,
        checkpoint_every=s.checkpoint_every,
        out_dir=str(out),
        progress=progress,
    )
    config.validate()
    if real:
        return _real_trainer(s, profile, config)
    return _tiny_trainer(s, config)


def _judge(settings: TrainSettings, tokenizer):
    """The oracle, the tiny track's committed model, or a model folder (checked against the real
    track's vocabulary)."""
    from course_lib import judges
    from course_lib.preference import load_preference_model

    if settings.judge == "oracle":
        return judges.OracleJudge(settings.mode)
    if settings.judge == "learned":
        return judges.learned_judge(settings.mode, tokenizer)
    if settings.judge == "reward":
        return judges.oracle_reward()
    if settings.track == "real":
        return judges.model_judge(settings.judge, tokenizer)
    return judges.PreferenceJudge(load_preference_model(settings.judge), tokenizer)


def _tiny_trainer(settings: TrainSettings, config):
    from course_lib.online import OnlineTrainer
    from course_lib.tasks import load_split
    from course_lib.tasks.tiny_policy import load_tiny_policy, prompt_text

    policy, tokenizer = load_tiny_policy()
    ref, _ = load_tiny_policy()
    policy.train().requires_grad_(True)
    records = load_split("train")
    return OnlineTrainer(
        config,
        policy,
        tokenizer,
        _judge(settings, tokenizer),
        prompts=[prompt_text(r.post) for r in records],
        contexts=records,
        ref_model=ref,
    )


def _real_trainer(settings: TrainSettings, profile, config):
    from course_lib.experiments.real import RealSettings, RealTrack, load_prompts
    from course_lib.online import OnlineTrainer

    real = RealSettings(
        model=settings.model,
        methods=(settings.algorithm,),
        tau=settings.tau,
        beta=settings.beta,
        lr=config.lr,
        seed=settings.seed,
        mode=settings.mode,
        judge=settings.judge,
    )
    track = RealTrack(profile, real, progress=config.progress)
    policy = track.load()
    n_train = max(64, config.steps * config.prompts_per_step)
    prompts, contexts, _, _ = load_prompts(track.settings, policy.tokenizer, n_train, 1)
    judge = _judge(settings, policy.tokenizer)
    return OnlineTrainer(config, policy.model, policy.tokenizer, judge, prompts, contexts)


def save_trained(trainer, settings: TrainSettings, out: Path) -> Path:
    """The trained weights as safetensors: the LoRA adapter, or the whole tiny policy."""
    model = trainer.policy
    name = "adapter" if settings.track == "real" else "policy"
    with atomic_dir(out / name) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        if settings.track == "tiny":
            trainer.tokenizer.save_pretrained(tmp)
    return out / name


def run(settings: TrainSettings, profile, out: Path, resume: bool, progress: bool = True) -> dict:
    """Train (or resume) one run into ``out``; returns the last step's metrics."""
    from course_lib.online import checkpoint as ckpt

    settings.validate()
    check_output_dir(out, COMMAND)
    record = {"settings": asdict(settings), "profile": profile.name}
    saved_step = ckpt.checkpoint_step(out) if out.is_dir() else None
    if saved_step is not None and not resume:
        raise ValueError(
            f"--out {out} holds a run at step {saved_step}: pass --resume to continue it, or "
            "give another --out"
        )
    if (out / RUN_FILE).is_file():
        before = json.loads((out / RUN_FILE).read_text())
        differ = {
            k: (before["settings"].get(k), v)
            for k, v in record["settings"].items()
            if k not in RUN_ONLY and before["settings"].get(k) != v
        }
        if before.get("profile") != profile.name and settings.steps is None:
            differ["profile"] = (before.get("profile"), profile.name)
        if differ:
            raise ValueError(
                f"--out {out} holds a run with other settings, (then, now) = {differ}; give the "
                "same options to resume it, or another --out"
            )
    trainer = build_trainer(settings, profile, out, progress=progress)
    claim_output_dir(out, COMMAND)
    atomic_write_json(out / RUN_FILE, record)
    if saved_step is not None:
        trainer.load_checkpoint()
    history = trainer.train()
    save_trained(trainer, settings, out)
    return history[-1] if history else {}
