"""Training in the arena: the course's online trainer, the exact judge, an exact evaluation.

:func:`build_arena` fixes a game: the language, the preference ``P`` of a mode, pi_ref (a tiny
Llama) and its exact distribution. :func:`train` runs one algorithm with
:class:`course_lib.online.OnlineTrainer` -- the summarisation track's sampler, losses, labels and
optimiser -- with :class:`~course_lib.arena.preference.ExactJudge` as the judge, and every
``eval_every`` steps (through ``train(on_step=...)``) computes exactly, from the model:

* ``kl_to_target``  KL(destination || pi_theta), the destination of
  :func:`course_lib.arena.targets.destination` for the run's algorithm, tau, beta and labels;
* ``kl_to_nash``    KL(pi*_tau || pi_theta), pi*_tau the regularised Nash equilibrium of P;
* ``kl_to_sequence_target`` (IPO-MD, Nash-MD-PG) KL to the sequence-level mixture's point;
* ``kl_to_ref``     KL(pi_theta || pi_ref);
* ``exploitability``               max_y P(y > pi_theta) - 1/2;
* ``regularised_exploitability``   the regularised game's gap at tau (0 only at pi*_tau);

each averaged over the prompts (the trainer draws them uniformly).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from course_lib.arena.language import Language
from course_lib.arena.policy import (
    PolicySpec,
    build_reference,
    make_policy,
    sequence_distribution,
)
from course_lib.arena.preference import ExactJudge, label_preference, preference_matrices
from course_lib.arena.targets import FixedPoint, destination, sequence_level_target
from course_lib.logprobs import sequence_logprobs
from course_lib.online import ALGORITHMS, OnlineConfig, OnlineTrainer
from course_lib.tabular import exploitability, kl, regularised_exploitability

#: The online algorithms the arena knows the destination of.
ARENA_ALGORITHMS = ("online_ipo", "ipo_md", "nash_md_pg", "online_dpo", "online_slic")


@dataclass
class Arena:
    """One game: ``P[i]`` and ``pi_ref[i]`` for prompt ``i``; ``reference`` is pi_ref's model."""

    language: Language
    mode: str
    P: np.ndarray
    reference: object
    pi_ref: np.ndarray
    spec: PolicySpec
    seed: int = 0
    _targets: dict = field(default_factory=dict, repr=False)

    def target(self, algorithm: str, tau: float, beta: float = 0.0, label: str = "soft"):
        """``(pi, residuals)``: the algorithm's destination per prompt, ``(n_prompts, n)``."""
        key = (algorithm, float(tau), float(beta), label)
        if key not in self._targets:
            P = label_preference(self.P, label)
            points: list[FixedPoint] = [
                destination(algorithm, P[i], self.pi_ref[i], tau, beta, self.language.tree)
                for i in range(self.language.n_prompts)
            ]
            self._targets[key] = (
                np.stack([p.pi for p in points]),
                [float(p.residual) for p in points],
            )
        return self._targets[key]

    def sequence_target(self, tau: float, beta: float, label: str = "soft") -> np.ndarray:
        """IPO-MD's sequence-level destination per prompt (the paper's eq. 13)."""
        key = ("sequence", float(tau), float(beta), label)
        if key not in self._targets:
            P = label_preference(self.P, label)
            self._targets[key] = np.stack(
                [
                    sequence_level_target(P[i], self.pi_ref[i], tau, beta).pi
                    for i in range(self.language.n_prompts)
                ]
            )
        return self._targets[key]

    def nash(self, tau: float) -> np.ndarray:
        """pi*_tau of the true preference, per prompt."""
        key = ("nash", float(tau))
        if key not in self._targets:
            self._targets[key] = np.stack(
                [
                    sequence_level_target(self.P[i], self.pi_ref[i], tau).pi
                    for i in range(self.language.n_prompts)
                ]
            )
        return self._targets[key]

    def evaluate(self, pi: np.ndarray, tau: float, target: np.ndarray) -> dict:
        """The exact metrics of a policy ``pi`` (n_prompts, n), averaged over the prompts."""
        nash = self.nash(tau)
        rows = [
            (
                kl(target[i], pi[i]),
                kl(nash[i], pi[i]),
                kl(pi[i], self.pi_ref[i]),
                exploitability(self.P[i], pi[i]),
                regularised_exploitability(self.P[i], pi[i], self.pi_ref[i], tau),
            )
            for i in range(self.language.n_prompts)
        ]
        names = (
            "kl_to_target",
            "kl_to_nash",
            "kl_to_ref",
            "exploitability",
            "regularised_exploitability",
        )
        return dict(zip(names, np.mean(rows, axis=0).tolist(), strict=True))


def build_arena(
    mode: str, language: Language | None = None, spec: PolicySpec | None = None, seed: int = 0
) -> Arena:
    """The game of ``mode`` (``"bt"`` or ``"nt"``) with a pi_ref built by
    :func:`course_lib.arena.policy.build_reference` from ``seed``."""
    language = language or Language()
    spec = spec or PolicySpec()
    P = preference_matrices(language, mode)
    reference = build_reference(language, spec, seed)
    pi_ref = sequence_distribution(reference, language)
    return Arena(language, mode, P, reference, pi_ref, spec, seed)


@dataclass
class ArenaRun:
    """One training run: the exact metrics at each evaluated step (``curve``), the last ones."""

    algorithm: str
    seed: int
    curve: list[dict]
    seconds: float
    config: dict

    @property
    def final(self) -> dict:
        return self.curve[-1]


def train(
    arena: Arena,
    algorithm: str,
    tau: float,
    beta: float = 0.0,
    label: str = "soft",
    steps: int = 1000,
    lr: float = 1e-3,
    prompts_per_step: int = 32,
    eval_every: int = 50,
    seed: int = 0,
    lr_schedule: str = "cosine",
    max_grad_norm: float | None = 1.0,
) -> ArenaRun:
    """Train ``algorithm`` from pi_ref with :class:`course_lib.online.OnlineTrainer` and evaluate
    exactly at step 0, every ``eval_every`` steps and at the last step."""
    if algorithm not in ARENA_ALGORITHMS:
        raise ValueError(
            f"algorithm={algorithm!r} is invalid: one of {', '.join(ARENA_ALGORITHMS)}"
        )
    if not (isinstance(eval_every, int) and eval_every >= 1):
        raise ValueError(f"eval_every={eval_every!r} is invalid: a positive integer")
    beta = beta if ALGORITHMS[algorithm].uses_beta else 0.0
    config = OnlineConfig(
        algorithm=algorithm,
        tau=tau,
        beta=beta,
        label=label,
        steps=steps,
        prompts_per_step=prompts_per_step,
        lr=lr,
        lr_schedule=lr_schedule,
        max_grad_norm=max_grad_norm,
        max_new_tokens=arena.language.max_new_tokens,
        seed=seed,
        monitor_every=0,  # the exact evaluation replaces the sampled monitor
        progress=False,
    )
    config.validate()
    target, residuals = arena.target(algorithm, tau, beta, label)
    policy, ref_model = make_policy(arena.reference, arena.spec, seed)
    language = arena.language
    trainer = OnlineTrainer(
        config,
        policy,
        language.tokenizer,
        ExactJudge(language, arena.P),
        prompts=language.prompts,
        contexts=list(range(language.n_prompts)),
        ref_model=ref_model,
    )

    # IPO-MD and Nash-MD-PG also against the sequence-level point, the paper's object
    paper = arena.sequence_target(tau, beta, label) if ALGORITHMS[algorithm].uses_beta else None

    def exact(step: int) -> dict:
        pi = sequence_distribution(trainer.policy, language)
        row = {"step": step, **arena.evaluate(pi, tau, target)}
        if paper is not None:
            row["kl_to_sequence_target"] = float(
                np.mean([kl(paper[i], pi[i]) for i in range(language.n_prompts)])
            )
        return row

    curve = [exact(0)]
    start = time.perf_counter()

    def on_step(tr, metrics):
        step = tr.state.step
        if step % eval_every == 0 or step == steps:
            row = exact(step)
            row["seconds"] = time.perf_counter() - start
            curve.append(row)
            return {k: v for k, v in row.items() if k != "step"}
        return None

    trainer.train(on_step=on_step)
    info = dict(
        algorithm=algorithm,
        tau=tau,
        beta=beta,
        label=label,
        steps=steps,
        lr=lr,
        prompts_per_step=prompts_per_step,
        lr_schedule=lr_schedule,
        target_residual=max(residuals),
        lora_r=arena.spec.lora_r,
    )
    return ArenaRun(algorithm, seed, curve, time.perf_counter() - start, info)


def distill(arena: Arena, target: np.ndarray, steps: int = 300, lr: float = 1e-2) -> list[float]:
    """The capacity check: fit a fresh copy of pi_ref *directly* to ``target`` (n_prompts, n) by
    full-batch Adam on the exact ``mean_x KL(target_x || pi_theta)`` (a weighted cross-entropy
    over every enumerated completion; no sampling, no judge). Returns that KL before each step
    and after the last. If it goes far below what online training reached, the transformer can
    represent the target and the gap is the optimisation's (steps, noise), not capacity.
    """
    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps={steps!r} is invalid: a positive integer")
    language = arena.language
    model, _ = make_policy(arena.reference, arena.spec)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=lr)
    args = language.all_pairs_tensors()
    weights = torch.as_tensor(target, dtype=torch.float32).reshape(-1) / language.n_prompts
    neg_entropy = float(
        np.sum(target * np.log(np.where(target > 0, target, 1.0))) / language.n_prompts
    )
    history = []
    model.train()
    for step in range(steps + 1):
        logp, _ = sequence_logprobs(model, *args, eos_token_id=language.eos_id)
        loss = -(weights * logp).sum()  # cross-entropy; KL = loss + sum target log target
        history.append(float(loss.detach()) + neg_entropy)
        if step == steps:
            break
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    return history
