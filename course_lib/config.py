"""Run profiles: how big every experiment in the course is.

Three profiles share one code path and differ only in sizes:

* ``smoke`` -- CI and quick checks: every notebook cell runs in seconds.
* ``cpu``   -- the default without CUDA: meaningful results on a 2-core laptop in minutes.
* ``gpu``   -- the default with CUDA: the full-size track, 4-bit models with LoRA.

The active profile is read from the environment variable ``COURSE_PROFILE``; when it is unset
the profile follows the hardware (``gpu`` if ``torch.cuda.is_available()``, else ``cpu``).
Notebooks and scripts read their sizes from :func:`get_profile`, never from ad-hoc ``if`` blocks.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass

ENV_VAR = "COURSE_PROFILE"


def opt(default, help: str = "", flag: str | None = None):
    """A settings dataclass field whose command-line option :mod:`course_lib.cli` builds from
    the field itself: its name (``--lora-r``), type, default and ``help``; ``flag`` names the
    option when it is not the field's name (e.g. ``--no-4bit`` for a bool that defaults to True).
    """
    meta = {"help": help, "flag": flag}
    if isinstance(default, list | dict | set):
        raise ValueError("mutable defaults are not allowed in settings; use a tuple")
    return dataclasses.field(default=default, metadata=meta)


@dataclass(frozen=True)
class Profile:
    """Sizes for one profile. Grouped by the part of the course that reads them."""

    name: str
    description: str

    # -- theory track (notebooks 01-06): exact tabular games ---------------------------------
    md_steps: int  # Nash-MD / mirror-descent iterations
    adam_steps: int  # Adam steps when a bandit is trained by gradient descent
    mc_pairs: int  # sampled pairs for Monte-Carlo gradient estimators
    n_seeds: int  # independent repeats where a figure shows a spread

    # -- language models (notebooks 07, 11) ----------------------------------------------------
    max_new_tokens: int  # completion length when sampling
    sample_batch: int  # prompts sampled at once
    bench_repeats: int  # timing repeats in benchmarks shown in notebooks

    # -- the summarisation task and its preference model (notebook 09) ----------------------
    corpus_records: int  # synthetic posts generated when the corpus is rebuilt in a notebook
    pretrain_steps: int  # steps when the tiny policy is (re)trained in a notebook
    pm_train_pairs: int  # labelled pairs used to train the preference model
    pm_epochs: int

    # -- online alignment (notebooks 10, 11, ``reproduce``) ------------------------------------
    train_steps: int  # optimiser steps per online run
    prompts_per_step: int  # prompts per step; two samples are drawn for each
    eval_prompts: int  # held-out prompts per side-by-side comparison
    sweep_taus: tuple[float, ...]
    sweep_betas: tuple[float, ...]
    sweep_extend: int  # extra sweep runs per method when a selection sits at a grid edge
    seeds: tuple[int, ...]
    tiny_new_tokens: int  # completion length of the tiny policy (its summaries: ~25 tokens)
    # -- the real track (notebook 11, ``reproduce --track real``): SmolLM2 in 4-bit with LoRA ----
    real_train_steps: int  # optimiser steps per method
    real_prompts_per_step: int
    real_new_tokens: int  # completion length of the pretrained policy
    real_eval_prompts: int  # held-out prompts per side-by-side comparison
    # -- scaling out (notebook 12) --------------------------------------------------------------
    launch_processes: int  # CPU processes of the `accelerate launch` demo run (0: show only)

    def as_dict(self) -> dict:
        return dataclasses.asdict(self)


PROFILES: dict[str, Profile] = {
    "smoke": Profile(
        name="smoke",
        description="CI: tiny sizes, seconds per cell",
        md_steps=200,
        adam_steps=300,
        mc_pairs=2_000,
        n_seeds=2,
        max_new_tokens=8,
        sample_batch=2,
        bench_repeats=1,
        corpus_records=200,
        pretrain_steps=20,
        pm_train_pairs=256,
        pm_epochs=1,
        train_steps=4,
        prompts_per_step=4,
        eval_prompts=16,
        sweep_taus=(1.0,),
        sweep_betas=(0.125,),
        sweep_extend=0,
        seeds=(0,),
        tiny_new_tokens=8,
        real_train_steps=2,
        real_prompts_per_step=1,
        real_new_tokens=6,
        real_eval_prompts=3,
        launch_processes=0,
    ),
    "cpu": Profile(
        name="cpu",
        description="laptop CPU: meaningful results in minutes",
        md_steps=2_000,
        adam_steps=3_000,
        mc_pairs=50_000,
        n_seeds=5,
        max_new_tokens=48,
        sample_batch=8,
        bench_repeats=3,
        corpus_records=5_000,
        pretrain_steps=1_500,
        pm_train_pairs=1_000,
        pm_epochs=2,
        train_steps=32,
        prompts_per_step=8,
        eval_prompts=200,
        sweep_taus=(0.03, 0.1, 1.0),
        sweep_betas=(0.125, 0.25),
        sweep_extend=6,
        seeds=(0, 1, 2),
        tiny_new_tokens=32,
        real_train_steps=4,
        real_prompts_per_step=2,
        real_new_tokens=16,
        real_eval_prompts=16,
        launch_processes=2,
    ),
    "gpu": Profile(
        name="gpu",
        description="one GPU: full size, 4-bit models with LoRA",
        md_steps=10_000,
        adam_steps=18_000,
        mc_pairs=200_000,
        n_seeds=10,
        max_new_tokens=64,
        sample_batch=32,
        bench_repeats=5,
        corpus_records=20_000,
        pretrain_steps=5_000,
        pm_train_pairs=40_000,
        pm_epochs=3,
        train_steps=1_000,
        prompts_per_step=32,
        eval_prompts=1_000,
        sweep_taus=(0.1, 0.5, 1.0, 5.0, 10.0),
        sweep_betas=(0.125, 0.25),
        sweep_extend=6,
        seeds=(0, 1, 2),
        tiny_new_tokens=48,
        real_train_steps=100,
        real_prompts_per_step=16,
        real_new_tokens=64,
        real_eval_prompts=256,
        launch_processes=2,
    ),
}


def default_profile_name() -> str:
    """``gpu`` where CUDA is available, else ``cpu``."""
    try:
        import torch

        if torch.cuda.is_available():
            return "gpu"
    except ImportError:  # the theory notebooks need only numpy
        pass
    return "cpu"


def get_profile(name: str | None = None) -> Profile:
    """The profile named ``name``, else ``$COURSE_PROFILE``, else the hardware default.

    Raises ``ValueError`` naming the bad value and the valid ones.
    """
    source = "argument"
    if name is None:
        name = os.environ.get(ENV_VAR, "").strip()
        source = f"${ENV_VAR}"
        if not name:
            return PROFILES[default_profile_name()]
    key = name.strip().lower()
    if key not in PROFILES:
        valid = ", ".join(PROFILES)
        raise ValueError(f"unknown profile {name!r} (from {source}); valid profiles are: {valid}")
    return PROFILES[key]
