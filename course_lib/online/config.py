"""What defines an online run, checked before any work is done."""

from __future__ import annotations

from dataclasses import dataclass

from course_lib import validation as check
from course_lib.online.algorithms import ALGORITHMS

#: How a judged probability p = P(y > y'|x) becomes the loss's label: p itself (the paper),
#: a Bernoulli(p) draw, or the thresholded 1[p > 1/2] of TRL's online trainers.
LABEL_KINDS = ("soft", "sampled", "threshold")
#: The learning rate after warm-up: constant (the paper's), or a cosine decay to 0 at the last
#: step, whose shrinking steps remove the noise floor a constant step leaves (notebook 04).
LR_SCHEDULES = ("constant", "cosine")
# Fields that say how long and how visibly to run, not what is trained: a run may resume with
# other values for them.
RUN_ONLY_FIELDS = ("steps", "progress", "out_dir", "checkpoint_every", "monitor_every")


@dataclass
class OnlineConfig:
    """Everything that defines a run. :meth:`validate` checks it before any work is done."""

    algorithm: str = "online_ipo"
    tau: float = 1.0
    beta: float = 0.0  # mixture weight on pi_ref (ipo_md, nash_md_pg)
    label: str = "soft"
    steps: int = 10
    prompts_per_step: int = 4  # per process and micro-batch; two completions each
    grad_accum: int = 1
    lr: float = 1e-4
    warmup_steps: int = 0
    lr_schedule: str = "constant"  # after warm-up: "constant", or "cosine" decay to 0 at `steps`
    max_grad_norm: float | None = 1.0
    max_new_tokens: int = 16
    temperature: float = 1.0
    seed: int = 0
    monitor_every: int = 1  # steps between samples of pi against pi_ref (0: never)
    checkpoint_every: int = 0  # steps between checkpoints (0: only at the end, if out_dir)
    out_dir: str | None = None
    mixed_precision: str = "no"  # "no", "bf16", "fp16" (accelerate)
    progress: bool = True

    def validate(self) -> None:
        check.choice("algorithm", self.algorithm, ALGORITHMS)
        check.tau(self.tau)
        check.beta(self.beta)
        if self.beta and not ALGORITHMS[self.algorithm].uses_beta:
            raise ValueError(
                f"beta={self.beta!r} is invalid: {self.algorithm} samples from pi only; beta "
                "must be 0"
            )
        check.choice("label", self.label, LABEL_KINDS)
        for name in ("steps", "prompts_per_step", "grad_accum", "max_new_tokens"):
            check.integer(name, getattr(self, name))
        for name in ("warmup_steps", "monitor_every", "checkpoint_every", "seed"):
            check.integer(name, getattr(self, name), minimum=0)
        check.positive("lr", self.lr, what="the learning rate")
        check.choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        check.positive("temperature", self.temperature, what="the sampling temperature")
        if self.max_grad_norm is not None:
            check.positive("max_grad_norm", self.max_grad_norm, what="or None for no clipping")
        check.choice("mixed_precision", self.mixed_precision, ("no", "bf16", "fp16"))
        if self.out_dir is not None and not isinstance(self.out_dir, str):
            raise ValueError(f"out_dir={self.out_dir!r} is invalid: a folder path (str) or None")
        if not isinstance(self.progress, bool):
            raise ValueError(f"progress={self.progress!r} is invalid: True or False")

    def lr_factor(self, step: int) -> float:
        """The multiplier of ``lr`` at optimiser step ``step`` (0-based): linear warm-up, then
        constant or cosine, 1/2 (1 + cos(pi t)) with t the fraction of the steps after warm-up."""
        import math

        if self.warmup_steps and step < self.warmup_steps:
            return (step + 1) / self.warmup_steps
        if self.lr_schedule == "constant":
            return 1.0
        span = max(1, self.steps - self.warmup_steps)
        t = min(1.0, (step - self.warmup_steps) / span)
        return 0.5 * (1.0 + math.cos(math.pi * t))

    def run_only_fields(self) -> tuple[str, ...]:
        """Fields a resumed run may change; with a cosine schedule the length is not one."""
        if self.lr_schedule == "cosine":
            return tuple(f for f in RUN_ONLY_FIELDS if f != "steps")
        return RUN_ONLY_FIELDS
