"""The online training loop: the steps of :mod:`course_lib.online.step`, repeated.

:class:`OnlineTrainer` owns what lasts between steps (the policy, optimiser, scheduler, step
count, metrics history) and calls the step functions in order: choose prompts, draw a pair, ask
the judge, make labels, compute the loss on h, take an optimiser step. The loop runs on
``accelerate``: the same code on the CPU, one GPU, or several processes through
``accelerate launch`` (data parallel; each process draws its own prompts and samples, gradients
are averaged). Every random draw of a step is seeded from ``(seed, step, micro-batch, process)``
(:func:`~course_lib.online.step.step_seed`), so a resumed run draws exactly what the
uninterrupted one drew; checkpoints (:mod:`course_lib.online.checkpoint`) also keep the
optimiser, scheduler and global RNG states.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib.evaluation import kl_estimate
from course_lib.judges import Judge, check_judge_tokenizer
from course_lib.llm import ensure_pad_token, reference
from course_lib.logprobs import sequence_logprobs
from course_lib.online import checkpoint as ckpt
from course_lib.online import step as S
from course_lib.online.algorithms import ALGORITHMS
from course_lib.online.checkpoint import NonFiniteLoss
from course_lib.online.config import OnlineConfig


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)


class OnlineTrainer:
    """The loop. ``model`` is the policy (a PEFT/LoRA model, or a full model with ``ref_model``).

    ``prompts`` are the prompt texts; ``contexts`` what the judge needs for each (defaults to the
    prompt texts; the synthetic task passes its records so the oracle can read the facts).
    Offline algorithms take fixed ``pairs`` instead.
    """

    def __init__(
        self,
        config: OnlineConfig,
        model,
        tokenizer,
        judge: Judge,
        prompts: Sequence[str] | None = None,
        contexts: Sequence[Any] | None = None,
        ref_model=None,
        pairs: Sequence[S.OfflinePair] | None = None,
        accelerator=None,
    ):
        from accelerate import Accelerator

        config.validate()
        self.config = config
        self.algorithm = ALGORITHMS[config.algorithm]
        if self.algorithm.online:
            if not prompts:
                raise ValueError(f"{config.algorithm} samples online: give a non-empty prompts")
            if contexts is not None and len(contexts) != len(prompts):
                raise ValueError(f"{len(contexts)} contexts for {len(prompts)} prompts")
        elif not pairs:
            raise ValueError(f"{config.algorithm} trains on fixed pairs: give a non-empty pairs")
        self.prompts = list(prompts or [])
        self.contexts = list(contexts) if contexts is not None else list(self.prompts)
        self.pairs = list(pairs or [])
        self.tokenizer = ensure_pad_token(tokenizer)
        check_judge_tokenizer(judge, tokenizer)
        self.judge = judge
        self.accelerator = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(),
            gradient_accumulation_steps=config.grad_accum,
            mixed_precision=config.mixed_precision,
        )
        with reference(model, ref_model):  # fails early when there is no reference at all
            pass
        self.ref_model = ref_model.eval().requires_grad_(False) if ref_model is not None else None
        params = [p for p in model.parameters() if p.requires_grad]
        if not params:
            raise ValueError("the policy has no trainable parameters")
        optimizer = torch.optim.AdamW(params, lr=config.lr, weight_decay=0.0)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, config.lr_factor)
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            model, optimizer, scheduler
        )
        if self.ref_model is not None:
            self.ref_model = self.ref_model.to(self.accelerator.device)
        self.state = TrainState()
        self.out_dir = Path(config.out_dir) if config.out_dir else None

    @property
    def policy(self):
        """The bare policy (no DDP wrapper), for sampling and the reference pass."""
        return self.accelerator.unwrap_model(self.model)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id

    def _sampling(self, generator) -> dict:
        cfg = self.config
        return dict(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_id=self.tokenizer.eos_token_id,
            pad_token_id=self.tokenizer.pad_token_id,
            generator=generator,
        )

    # -- the parts of a step (the functions of course_lib.online.step, with this run's state) --
    def batch(self, step: int, micro: int = 0) -> S.Pair:
        """Step ``step``'s prompts and pair of completions (or fixed pairs, offline)."""
        cfg, rank, device = self.config, self.accelerator.process_index, self.accelerator.device
        n = len(self.prompts) if self.algorithm.online else len(self.pairs)
        idx = S.choose_prompts(n, cfg.prompts_per_step, cfg.seed, step, micro, rank)
        if not self.algorithm.online:
            return S.offline_pair([self.pairs[i] for i in idx], self.tokenizer, device)
        prompt_ids, prompt_mask = S.encode_prompts(
            self.tokenizer, [self.prompts[i] for i in idx], device
        )
        gen = torch.Generator(device=prompt_ids.device)
        gen.manual_seed(S.step_seed(cfg.seed, step, micro, rank, 2))
        return S.draw_pair(
            self.algorithm,
            self.policy,
            self.tokenizer,
            [self.contexts[i] for i in idx],
            prompt_ids,
            prompt_mask,
            ref_model=self.ref_model,
            beta=cfg.beta,
            **self._sampling(gen),
        )

    def labels(self, p: np.ndarray, step: int, micro: int = 0) -> np.ndarray:
        """The loss's labels from the judge's p (``config.label``), seeded by the step."""
        rank = self.accelerator.process_index
        rng = np.random.default_rng(S.step_seed(self.config.seed, step, micro, rank, 3))
        return S.labels(p, self.config.label, rng)

    def loss(self, pair: S.Pair, label: torch.Tensor):
        """``(loss, h, log pi(y)/pi_ref(y))`` of a batch, with gradient through the policy."""
        return S.pair_loss(
            self.algorithm,
            pair,
            label,
            self.config.tau,
            self.policy,
            self.ref_model,
            eos_token_id=self.eos_id,
            forward=self.model,
        )

    def monitor(self, step: int) -> dict:
        """pi's win rate over pi_ref on a few prompts, and a Monte-Carlo KL(pi || pi_ref)."""
        cfg, rank = self.config, self.accelerator.process_index
        rng = np.random.default_rng(S.step_seed(cfg.seed, step, rank, 4))
        n = len(self.prompts)
        idx = rng.choice(n, size=cfg.prompts_per_step, replace=n < cfg.prompts_per_step)
        prompt_ids, prompt_mask = S.encode_prompts(
            self.tokenizer, [self.prompts[i] for i in idx], self.accelerator.device
        )
        gen = torch.Generator(device=prompt_ids.device)
        gen.manual_seed(S.step_seed(cfg.seed, step, rank, 5))
        sampling = {**self._sampling(gen), "temperature": 1.0}
        with torch.no_grad():
            ys = S.draw("pi", self.policy, prompt_ids, prompt_mask, **sampling)
            yr = S.draw(
                "ref", self.policy, prompt_ids, prompt_mask, ref_model=self.ref_model, **sampling
            )
            with reference(self.policy, self.ref_model) as ref:
                _, ref_tok = sequence_logprobs(
                    ref, prompt_ids, prompt_mask, ys.tokens, ys.mask, eos_token_id=self.eos_id
                )
        contexts = [self.contexts[i] for i in idx]
        p = np.asarray(
            self.judge(contexts, ys.texts(self.tokenizer), yr.texts(self.tokenizer)), dtype=float
        )
        kl = kl_estimate(ys.logprobs.cpu().numpy(), ref_tok.cpu().numpy(), ys.mask.cpu().numpy())
        return {"win_vs_ref": float(p.mean()), "kl": float(kl.mean())}

    # -- the loop ---------------------------------------------------------------------------
    def _draw_batch(self, step: int, micro: int) -> S.Pair:
        try:
            return self.batch(step, micro)
        except RuntimeError as exc:  # torch.multinomial on NaN/inf probabilities
            if "probability tensor" not in str(exc):
                raise
            raise NonFiniteLoss(
                self._nonfinite_message(
                    step, "not computed: the policy's next-token probabilities are not finite"
                )
            ) from exc

    def _update(self, step: int, loss) -> None:
        """Backward, clip, optimiser and scheduler step: stop before a non-finite value spreads."""
        if not torch.isfinite(loss):
            raise NonFiniteLoss(self._nonfinite_message(step, loss))
        self.accelerator.backward(loss)
        if self.accelerator.sync_gradients and self.config.max_grad_norm:
            norm = self.accelerator.clip_grad_norm_(
                self.model.parameters(), self.config.max_grad_norm
            )
            if not torch.isfinite(torch.as_tensor(norm)):
                raise NonFiniteLoss(
                    self._nonfinite_message(step, f"{loss.item()} with gradient norm {norm}")
                )
        self.optimizer.step()
        self.scheduler.step()
        self.optimizer.zero_grad()

    def step(self) -> dict:
        """One optimiser step (``grad_accum`` micro-batches). Returns its metrics."""
        cfg, step = self.config, self.state.step
        start = time.perf_counter()
        self.model.train()
        totals = {"loss": 0.0, "h": [], "p": [], "logratio_y": [], "len": [], "eos": []}
        generated = 0
        for micro in range(cfg.grad_accum):
            pair = self._draw_batch(step, micro)
            if self.algorithm.online:
                p = np.asarray(self.judge(pair.contexts, pair.y_texts, pair.y2_texts), float)
            else:
                p = pair.fixed_p
            label = torch.as_tensor(
                self.labels(p, step, micro), dtype=torch.float32, device=self.accelerator.device
            )
            with self.accelerator.accumulate(self.model):
                loss, h, logratio_y = self.loss(pair, label)
                self._update(step, loss)
            totals["loss"] += loss.item() / cfg.grad_accum
            totals["h"] += h.cpu().tolist()
            totals["p"] += p.tolist()
            totals["logratio_y"] += logratio_y.cpu().tolist()
            for ids, mask in ((pair.y, pair.y_mask), (pair.y2, pair.y2_mask)):
                lengths = mask.sum(-1)
                last = ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
                totals["len"] += lengths.cpu().tolist()
                totals["eos"] += ((last == self.eos_id) & (lengths > 0)).cpu().tolist()
            generated += pair.generated_tokens
        self.state.step += 1
        seconds = time.perf_counter() - start
        h_all = np.asarray(totals["h"], dtype=float)
        metrics = {
            "step": self.state.step,
            "loss": totals["loss"],
            "h_mean": None if np.all(np.isnan(h_all)) else float(np.nanmean(h_all)),
            "p_mean": float(np.mean(totals["p"])),
            "logratio_y": float(np.mean(totals["logratio_y"])),
            "length": float(np.mean(totals["len"])),
            "eos_rate": float(np.mean(totals["eos"])),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "tokens_per_s": generated / seconds if seconds > 0 else None,
            "seconds": seconds,
        }
        if cfg.monitor_every and self.algorithm.online and self.state.step % cfg.monitor_every == 0:
            metrics.update(self.monitor(step))
        self.state.history.append(metrics)
        return metrics

    def _nonfinite_message(self, step: int, loss) -> str:
        last = self._checkpoint_step()
        where = (
            f"the last good checkpoint is {self.checkpoint_path()} (step {last})"
            if last is not None
            else "no checkpoint had been written"
        )
        value = loss.item() if isinstance(loss, torch.Tensor) else loss
        return (
            f"{self.config.algorithm}: the loss at step {step + 1} is {value}; training "
            f"stopped ({where}). Lower lr or raise tau."
        )

    def train(self, steps: int | None = None, on_step=None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``) optimiser steps have been taken in total,
        logging to ``out_dir/metrics.jsonl`` and checkpointing every ``checkpoint_every`` steps.

        ``on_step(trainer, metrics)``, if given, runs after every step; a dict it returns is added
        to that step's metrics before they are logged (e.g. an exact evaluation every N steps).
        It must be deterministic for a resumed run to log what the uninterrupted one logged.
        """
        from tqdm.auto import tqdm

        cfg = self.config
        target = cfg.steps if steps is None else steps
        main = self.accelerator.is_main_process
        bar = tqdm(
            total=target,
            initial=self.state.step,
            desc=cfg.algorithm,
            disable=not (cfg.progress and main),
        )
        if main and self.out_dir is not None:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            if self.state.step == 0:  # a fresh run starts fresh logs; a resumed one rewrote them
                ckpt.rewrite_logs(self.out_dir, [])
        while self.state.step < target:
            metrics = self.step()
            extra = on_step(self, metrics) if on_step is not None else None
            if extra:
                metrics.update(extra)
            if main and self.out_dir is not None:
                ckpt.append_metrics(self.out_dir, metrics)
            shown = {
                k: metrics[k]
                for k in ("loss", "p_mean", "win_vs_ref", "kl")
                if metrics.get(k) is not None
            }
            bar.set_postfix({k: f"{v:.3f}" for k, v in shown.items()})
            bar.update(1)
            if (
                self.out_dir is not None
                and cfg.checkpoint_every
                and self.state.step % cfg.checkpoint_every == 0
            ):
                self.save_checkpoint()
        bar.close()
        if self.out_dir is not None and self._checkpoint_step() != self.state.step:
            self.save_checkpoint()
        return self.state.history

    # -- checkpoints (the format is in course_lib.online.checkpoint) --------------------------
    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise ValueError("no out_dir was configured, so there are no checkpoints")
        return ckpt.checkpoint_path(self.out_dir)

    def _checkpoint_step(self) -> int | None:
        return None if self.out_dir is None else ckpt.checkpoint_step(self.out_dir)

    def save_checkpoint(self) -> Path:
        """Write the trainable weights, optimiser, scheduler and RNG states atomically, only when
        they are all finite (else :class:`NonFiniteLoss`, and the previous checkpoint stays)."""
        self.accelerator.wait_for_everyone()
        target = self.checkpoint_path()
        if self.accelerator.is_main_process:
            ckpt.save_checkpoint(
                self.out_dir,
                self.policy,
                self.optimizer,
                self.scheduler,
                self.state.step,
                self.config,
                self.state.history,
            )
        self.accelerator.wait_for_everyone()
        return target

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint`; returns its step. The metrics
        logs in ``out_dir`` are rewritten as they stood at that step."""
        path = Path(path) if path is not None else self.checkpoint_path()
        step, history = ckpt.load_checkpoint(
            path, self.policy, self.optimizer, self.scheduler, self.config
        )
        self.state = TrainState(step=step, history=history)
        if self.out_dir is not None and self.accelerator.is_main_process:
            self.out_dir.mkdir(parents=True, exist_ok=True)
            ckpt.rewrite_logs(self.out_dir, history)
        return step
