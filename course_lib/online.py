"""One training loop for online preference optimisation; the algorithm is a configuration.

Every step (Calandriello et al. 2024, §4-5; NLHF Appendix F):

1. draw a batch of prompts x;
2. draw two completions per prompt under ``no_grad`` (the stop-gradient on the sampler): each from
   the current policy pi, or from the token-level geometric mixture pi^(1-beta) pi_ref^beta;
3. label the pair with a judge's probability p = P(y > y'|x) (a soft label, as in the paper), or a
   label sampled from it, or the thresholded label 1[p > 1/2] that TRL's online trainers use;
4. take one optimiser step on a loss from :mod:`course_lib.losses` (the project's only loss
   definitions), computed on sequence log-probs summed over completion tokens.

=================  ============  ============  ===================
algorithm          y from        y' from       loss
=================  ============  ============  ===================
``online_dpo``     pi            pi            ``dpo_loss(h, p)``
``online_slic``    pi            pi            ``slic_loss(h, p)``
``online_ipo``     pi            pi            ``ipo_loss(h, p)``
``ipo_md``         mixture       mixture       ``ipo_loss(h, p)``
``nash_md_pg``     pi            mixture       ``nash_md_pg_loss``
``offline_ipo``    fixed pairs   fixed pairs   ``ipo_loss(h, p)``
``offline_dpo``    fixed pairs   fixed pairs   ``dpo_loss(h, p)``
=================  ============  ============  ===================

The reference pi_ref is the adapter-off base of a LoRA policy, or a frozen ``ref_model``. The loop
runs on ``accelerate``: the same code on the CPU, one GPU, or several processes through
``accelerate launch`` (data parallel; each process draws its own prompts and samples, gradients
are averaged). Randomness that decides a step (prompts, samples, sampled labels) is seeded from
``(seed, step, micro-batch, process)``, so a resumed run draws exactly what the uninterrupted one
drew; checkpoints also keep the optimiser, scheduler and global RNG states.
"""

from __future__ import annotations

import json
import math
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from course_lib import losses
from course_lib.atomic import atomic_dir
from course_lib.evaluation import kl_estimate
from course_lib.models import (
    ensure_pad_token,
    pad_left,
    reference,
    sequence_logprobs,
)
from course_lib.sampling import sample, sample_mixture


@dataclass(frozen=True)
class Algorithm:
    name: str
    loss: str  # "dpo", "ipo", "slic" (contrastive on h) or "nash_md_pg" (policy gradient)
    y_from: str  # "pi", "mixture" or "data"
    y2_from: str
    paper: str

    @property
    def online(self) -> bool:
        return self.y_from != "data"

    @property
    def uses_beta(self) -> bool:
        return "mixture" in (self.y_from, self.y2_from)


ALGORITHMS: dict[str, Algorithm] = {
    a.name: a
    for a in (
        Algorithm("online_dpo", "dpo", "pi", "pi", "Calandriello et al. 2024, Sec. 6"),
        Algorithm("online_slic", "slic", "pi", "pi", "Calandriello et al. 2024, Sec. 6"),
        Algorithm("online_ipo", "ipo", "pi", "pi", "Calandriello et al. 2024, eq. 11"),
        Algorithm("ipo_md", "ipo", "mixture", "mixture", "Calandriello et al. 2024, Sec. 5"),
        Algorithm("nash_md_pg", "nash_md_pg", "pi", "mixture", "Munos et al. 2024, App. F"),
        Algorithm("offline_ipo", "ipo", "data", "data", "Azar et al. 2023, eq. 17"),
        Algorithm("offline_dpo", "dpo", "data", "data", "Rafailov et al. 2023"),
    )
}
LABELS = ("soft", "sampled", "threshold")
# Fields that say how long and how visibly to run, not what is trained: a run may resume with
# other values for them.
RUN_ONLY_FIELDS = ("steps", "progress", "out_dir", "checkpoint_every", "monitor_every")
CONTRASTIVE = {"dpo": losses.dpo_loss, "ipo": losses.ipo_loss, "slic": losses.slic_loss}


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
        def bad(name, allowed):
            return ValueError(f"{name}={getattr(self, name)!r} is invalid: {allowed}")

        if self.algorithm not in ALGORITHMS:
            raise bad("algorithm", f"choose one of {', '.join(ALGORITHMS)}")
        if not (isinstance(self.tau, int | float) and math.isfinite(self.tau) and self.tau > 0):
            raise bad("tau", "the KL coefficient must be a finite number > 0")
        if not (isinstance(self.beta, int | float) and 0.0 <= self.beta <= 1.0):
            raise bad("beta", "the mixture weight on pi_ref must be in [0, 1]")
        if self.beta and not ALGORITHMS[self.algorithm].uses_beta:
            raise bad("beta", f"{self.algorithm} samples from pi only; beta must be 0")
        if self.label not in LABELS:
            raise bad("label", f"choose one of {', '.join(LABELS)}")
        for name in ("steps", "prompts_per_step", "grad_accum", "max_new_tokens"):
            value = getattr(self, name)
            if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
                raise bad(name, "must be a positive integer")
        for name in ("warmup_steps", "monitor_every", "checkpoint_every"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise bad(name, "must be a non-negative integer")
        if not self.lr > 0:
            raise bad("lr", "the learning rate must be > 0")
        if not self.temperature > 0:
            raise bad("temperature", "must be > 0")
        if self.max_grad_norm is not None and not self.max_grad_norm > 0:
            raise bad("max_grad_norm", "must be > 0 or None")
        if self.mixed_precision not in ("no", "bf16", "fp16"):
            raise bad("mixed_precision", "choose one of no, bf16, fp16")


class NonFiniteLoss(RuntimeError):
    """The loss became NaN or infinite; the run stopped and kept its last good checkpoint."""


# A judge maps (contexts, completions y, completions y') to P(y > y' | x), one per pair.
Judge = Callable[[Sequence[Any], Sequence[str], Sequence[str]], np.ndarray]


@dataclass
class OfflinePair:
    context: Any
    prompt: str
    y: str
    y2: str
    p: float


def check_judge_tokenizer(judge, tokenizer) -> None:
    """A judge that reads the policy's token ids must use the policy's tokenizer.

    (TRL's Nash-MD fed policy token ids to a reward model with another tokenizer: defect D6 in
    the course's notes.) Judges that read text declare nothing and are not checked.
    """
    judge_tok = getattr(judge, "tokenizer", None)
    if judge_tok is None or not getattr(judge, "reads_policy_tokens", False):
        return
    if judge_tok.get_vocab() != tokenizer.get_vocab():
        raise ValueError(
            f"the preference model's tokenizer ({getattr(judge_tok, 'name_or_path', judge_tok)!r},"
            f" vocabulary {len(judge_tok)}) does not match the policy's "
            f"({getattr(tokenizer, 'name_or_path', tokenizer)!r}, vocabulary {len(tokenizer)})"
        )


def _step_seed(*parts: int) -> int:
    """A 63-bit seed from integers, the same on every machine (no ``hash()``)."""
    return int(
        np.random.SeedSequence(list(parts))
        .generate_state(2, dtype=np.uint32)
        .astype(np.uint64)
        .dot([1 << 31, 1])
    )


# Public name for the seeding rule, so a learner can redo a step by hand (notebook 09).
step_seed = _step_seed


@dataclass
class _Batch:
    contexts: list
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    y: torch.Tensor
    y_mask: torch.Tensor
    y2: torch.Tensor
    y2_mask: torch.Tensor
    y_texts: list[str]
    y2_texts: list[str]
    y_logp_sampler: torch.Tensor | None = None
    generated_tokens: int = 0
    fixed_p: np.ndarray | None = None  # the labels of fixed (offline) pairs


@dataclass
class TrainState:
    step: int = 0
    history: list[dict] = field(default_factory=list)


class OnlineTrainer:
    """The loop. ``model`` is the policy (a PEFT/LoRA model, or a full model with ``ref_model``).

    ``prompts`` are the prompt texts; ``contexts`` what the judge needs for each (defaults to the
    prompt texts; the synthetic task passes its records so the oracle can read the facts).
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
        pairs: Sequence[OfflinePair] | None = None,
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
        self.eos_id = tokenizer.eos_token_id
        self.pad_id = tokenizer.pad_token_id
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
        warm = config.warmup_steps
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda s: min(1.0, (s + 1) / warm) if warm else 1.0
        )
        self.model, self.optimizer, self.scheduler = self.accelerator.prepare(
            model, optimizer, scheduler
        )
        if self.ref_model is not None:
            self.ref_model = self.ref_model.to(self.accelerator.device)
        self.state = TrainState()
        self.out_dir = Path(config.out_dir) if config.out_dir else None

    # -- pieces of a step -------------------------------------------------------------------
    @property
    def policy(self):
        """The bare policy (no DDP wrapper), for sampling and the reference pass."""
        return self.accelerator.unwrap_model(self.model)

    def _encode_prompts(self, texts: Sequence[str]):
        ids = [self.tokenizer(t, add_special_tokens=True)["input_ids"] for t in texts]
        prompt_ids, prompt_mask = pad_left(ids, self.pad_id)
        device = self.accelerator.device
        return prompt_ids.to(device), prompt_mask.to(device)

    def _encode_completions(self, texts: Sequence[str]):
        """Right-padded completion ids ending in EOS, as the sampler would have produced."""
        rows = [
            self.tokenizer(t, add_special_tokens=False)["input_ids"] + [self.eos_id] for t in texts
        ]
        width = max(len(r) for r in rows)
        ids = torch.full((len(rows), width), self.pad_id, dtype=torch.long)
        mask = torch.zeros((len(rows), width), dtype=torch.long)
        for i, r in enumerate(rows):
            ids[i, : len(r)] = torch.tensor(r)
            mask[i, : len(r)] = 1
        device = self.accelerator.device
        return ids.to(device), mask.to(device)

    def _draw(self, source: str, prompt_ids, prompt_mask, generator):
        cfg = self.config
        common = dict(
            max_new_tokens=cfg.max_new_tokens,
            temperature=cfg.temperature,
            eos_token_id=self.eos_id,
            pad_token_id=self.pad_id,
            generator=generator,
        )
        if source == "pi":
            return sample(self.policy, prompt_ids, prompt_mask, **common)
        if source == "ref":
            if self.ref_model is not None:
                return sample(self.ref_model, prompt_ids, prompt_mask, **common)
            return sample(self.policy, prompt_ids, prompt_mask, adapter=False, **common)
        return sample_mixture(
            self.policy, prompt_ids, prompt_mask, beta=cfg.beta, ref_model=self.ref_model, **common
        )

    def _batch(self, step: int, micro: int) -> _Batch:
        cfg, rank = self.config, self.accelerator.process_index
        rng = np.random.default_rng(_step_seed(cfg.seed, step, micro, rank, 1))
        n = len(self.prompts) if self.algorithm.online else len(self.pairs)
        idx = rng.choice(n, size=cfg.prompts_per_step, replace=n < cfg.prompts_per_step)
        if not self.algorithm.online:
            chosen = [self.pairs[i] for i in idx]
            prompt_ids, prompt_mask = self._encode_prompts([c.prompt for c in chosen])
            y, ym = self._encode_completions([c.y for c in chosen])
            y2, y2m = self._encode_completions([c.y2 for c in chosen])
            return _Batch(
                [c.context for c in chosen],
                prompt_ids,
                prompt_mask,
                y,
                ym,
                y2,
                y2m,
                [c.y for c in chosen],
                [c.y2 for c in chosen],
                fixed_p=np.array([c.p for c in chosen], dtype=float),
            )
        prompt_ids, prompt_mask = self._encode_prompts([self.prompts[i] for i in idx])
        gen = torch.Generator(device=prompt_ids.device)
        gen.manual_seed(_step_seed(cfg.seed, step, micro, rank, 2))
        B = prompt_ids.shape[0]
        with torch.no_grad():  # the stop-gradient: no gradient flows through the sampler
            if self.algorithm.y_from == self.algorithm.y2_from:
                # one sampler call for both completions: a batch of 2B rows is cheaper than two
                both = self._draw(
                    self.algorithm.y_from, prompt_ids.repeat(2, 1), prompt_mask.repeat(2, 1), gen
                )
                texts = both.texts(self.tokenizer)
                ya, ma, yb, mb = both.tokens[:B], both.mask[:B], both.tokens[B:], both.mask[B:]
                ta, tb, logp_a = texts[:B], texts[B:], both.sequence_logprobs[:B]
            else:
                a = self._draw(self.algorithm.y_from, prompt_ids, prompt_mask, gen)
                b = self._draw(self.algorithm.y2_from, prompt_ids, prompt_mask, gen)
                ya, ma, yb, mb = a.tokens, a.mask, b.tokens, b.mask
                ta, tb = a.texts(self.tokenizer), b.texts(self.tokenizer)
                logp_a = a.sequence_logprobs
        return _Batch(
            [self.contexts[i] for i in idx],
            prompt_ids,
            prompt_mask,
            ya,
            ma,
            yb,
            mb,
            ta,
            tb,
            y_logp_sampler=logp_a,
            generated_tokens=int(ma.sum() + mb.sum()),
        )

    def _labels(self, p: np.ndarray, step: int, micro: int) -> np.ndarray:
        if self.config.label == "soft":
            return p
        if self.config.label == "threshold":  # TRL's online trainers: the higher score wins
            return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))
        rng = np.random.default_rng(
            _step_seed(self.config.seed, step, micro, self.accelerator.process_index, 3)
        )
        return (rng.random(p.shape) < p).astype(float)

    def _logprobs(self, model, batch: _Batch, which: str):
        ids, mask = (batch.y, batch.y_mask) if which == "y" else (batch.y2, batch.y2_mask)
        return sequence_logprobs(
            model, batch.prompt_ids, batch.prompt_mask, ids, mask, eos_token_id=self.eos_id
        )[0]

    def _pair_logratios(self, batch: _Batch):
        """log pi/pi_ref for y and y' (pi with gradient, through the DDP-wrapped model)."""
        B = batch.y.shape[0]
        T = max(batch.y.shape[1], batch.y2.shape[1])

        def pad(ids, mask):
            extra = T - ids.shape[1]
            return (
                torch.nn.functional.pad(ids, (0, extra), value=self.pad_id),
                torch.nn.functional.pad(mask, (0, extra), value=0),
            )

        (a, am), (b, bm) = pad(batch.y, batch.y_mask), pad(batch.y2, batch.y2_mask)
        pids = torch.cat([batch.prompt_ids, batch.prompt_ids])
        pmask = torch.cat([batch.prompt_mask, batch.prompt_mask])
        ids, mask = torch.cat([a, b]), torch.cat([am, bm])
        logp = sequence_logprobs(self.model, pids, pmask, ids, mask, eos_token_id=self.eos_id)[0]
        with torch.no_grad(), reference(self.policy, self.ref_model) as ref:
            ref_logp = sequence_logprobs(ref, pids, pmask, ids, mask, eos_token_id=self.eos_id)[0]
        return logp[:B], ref_logp[:B], logp[B:], ref_logp[B:]

    def _loss(self, batch: _Batch, labels: torch.Tensor):
        cfg = self.config
        if self.algorithm.loss == "nash_md_pg":
            # Only y ~ pi carries gradient; y' from the mixture is the opponent (NLHF App. F).
            logp = self._logprobs(self.model, batch, "y")
            with torch.no_grad(), reference(self.policy, self.ref_model) as ref:
                ref_logp = self._logprobs(ref, batch, "y")
            loss = losses.nash_md_pg_loss(logp, ref_logp, labels, cfg.tau).mean()
            h = torch.full_like(logp, float("nan"))
            return loss, h, logp.detach() - ref_logp
        lp_y, ref_y, lp_y2, ref_y2 = self._pair_logratios(batch)
        h = (lp_y - ref_y) - (lp_y2 - ref_y2)
        loss = CONTRASTIVE[self.algorithm.loss](h, labels, cfg.tau).mean()
        return loss, h.detach(), (lp_y - ref_y).detach()

    def _monitor(self, step: int) -> dict:
        """Sample pi and pi_ref on the same prompts: pi's win rate over pi_ref, KL(pi||pi_ref)."""
        cfg, rank = self.config, self.accelerator.process_index
        rng = np.random.default_rng(_step_seed(cfg.seed, step, rank, 4))
        idx = rng.choice(
            len(self.prompts),
            size=cfg.prompts_per_step,
            replace=len(self.prompts) < cfg.prompts_per_step,
        )
        prompt_ids, prompt_mask = self._encode_prompts([self.prompts[i] for i in idx])
        gen = torch.Generator(device=prompt_ids.device)
        gen.manual_seed(_step_seed(cfg.seed, step, rank, 5))
        with torch.no_grad():
            ys = sample(
                self.policy,
                prompt_ids,
                prompt_mask,
                max_new_tokens=cfg.max_new_tokens,
                temperature=1.0,
                eos_token_id=self.eos_id,
                pad_token_id=self.pad_id,
                generator=gen,
            )
            yr = self._draw("ref", prompt_ids, prompt_mask, gen)
            with reference(self.policy, self.ref_model) as ref:
                _, ref_tok = sequence_logprobs(
                    ref, prompt_ids, prompt_mask, ys.tokens, ys.mask, eos_token_id=self.eos_id
                )
        p = np.asarray(
            self.judge(
                [self.contexts[i] for i in idx], ys.texts(self.tokenizer), yr.texts(self.tokenizer)
            ),
            dtype=float,
        )
        kl = kl_estimate(ys.logprobs.cpu().numpy(), ref_tok.cpu().numpy(), ys.mask.cpu().numpy())
        return {"win_vs_ref": float(p.mean()), "kl": float(kl.mean())}

    # -- the loop ---------------------------------------------------------------------------
    def step(self) -> dict:
        """One optimiser step (``grad_accum`` micro-batches). Returns its metrics."""
        cfg, step = self.config, self.state.step
        start = time.perf_counter()
        self.model.train()
        totals = {"loss": 0.0, "h": [], "p": [], "logratio_y": [], "len": [], "eos": []}
        generated = 0
        for micro in range(cfg.grad_accum):
            try:
                batch = self._batch(step, micro)
            except RuntimeError as exc:  # torch.multinomial on NaN/inf probabilities
                if "probability tensor" not in str(exc):
                    raise
                raise NonFiniteLoss(
                    self._nonfinite_message(
                        step, "not computed: the policy's next-token probabilities are not finite"
                    )
                ) from exc
            if self.algorithm.online:
                p = np.asarray(
                    self.judge(batch.contexts, batch.y_texts, batch.y2_texts), dtype=float
                )
            else:
                p = batch.fixed_p
            labels = torch.as_tensor(
                self._labels(p, step, micro), dtype=torch.float32, device=self.accelerator.device
            )
            with self.accelerator.accumulate(self.model):
                loss, h, logratio_y = self._loss(batch, labels)
                if not torch.isfinite(loss):
                    raise NonFiniteLoss(self._nonfinite_message(step, loss))
                self.accelerator.backward(loss)
                if self.accelerator.sync_gradients and cfg.max_grad_norm:
                    norm = self.accelerator.clip_grad_norm_(
                        self.model.parameters(), cfg.max_grad_norm
                    )
                    if not torch.isfinite(torch.as_tensor(norm)):  # stop before the weights rot
                        raise NonFiniteLoss(
                            self._nonfinite_message(
                                step, f"{loss.item()} with gradient norm {norm}"
                            )
                        )
                self.optimizer.step()
                self.scheduler.step()
                self.optimizer.zero_grad()
            totals["loss"] += loss.item() / cfg.grad_accum
            totals["h"] += h.cpu().tolist()
            totals["p"] += p.tolist()
            totals["logratio_y"] += logratio_y.cpu().tolist()
            for ids, mask in ((batch.y, batch.y_mask), (batch.y2, batch.y2_mask)):
                lengths = mask.sum(-1)
                last = ids.gather(1, (lengths - 1).clamp(min=0).unsqueeze(1)).squeeze(1)
                totals["len"] += lengths.cpu().tolist()
                totals["eos"] += ((last == self.eos_id) & (lengths > 0)).cpu().tolist()
            generated += batch.generated_tokens
        self.state.step += 1
        seconds = time.perf_counter() - start
        metrics = {
            "step": self.state.step,
            "loss": totals["loss"],
            "h_mean": float(np.nanmean(totals["h"])) if not np.all(np.isnan(totals["h"])) else None,
            "p_mean": float(np.mean(totals["p"])),
            "logratio_y": float(np.mean(totals["logratio_y"])),
            "length": float(np.mean(totals["len"])),
            "eos_rate": float(np.mean(totals["eos"])),
            "lr": float(self.scheduler.get_last_lr()[0]),
            "tokens_per_s": generated / seconds if seconds > 0 else None,
            "seconds": seconds,
        }
        if cfg.monitor_every and self.algorithm.online and self.state.step % cfg.monitor_every == 0:
            metrics.update(self._monitor(step))
        self.state.history.append(metrics)
        return metrics

    def _nonfinite_message(self, step: int, loss) -> str:
        where = (
            f"the last good checkpoint is {self.checkpoint_path()} (step {self._checkpoint_step()})"
            if self._checkpoint_step() is not None
            else "no checkpoint had been written"
        )
        value = loss.item() if isinstance(loss, torch.Tensor) else loss
        return (
            f"{self.config.algorithm}: the loss at step {step + 1} is {value}; training "
            f"stopped ({where}). Lower lr or raise tau."
        )

    def train(self, steps: int | None = None) -> list[dict]:
        """Run until ``steps`` (default ``config.steps``) optimiser steps have been taken in total,
        logging to ``out_dir/metrics.jsonl`` and checkpointing every ``checkpoint_every`` steps."""
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
        while self.state.step < target:
            metrics = self.step()
            if main and self.out_dir is not None:
                self.out_dir.mkdir(parents=True, exist_ok=True)
                with open(self.out_dir / "metrics.jsonl", "a") as log:
                    log.write(json.dumps(metrics) + "\n")
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

    # -- checkpoints ------------------------------------------------------------------------
    def checkpoint_path(self) -> Path:
        if self.out_dir is None:
            raise ValueError("no out_dir was configured, so there are no checkpoints")
        return self.out_dir / "checkpoint"

    def _checkpoint_step(self) -> int | None:
        if self.out_dir is None:
            return None
        state = self.checkpoint_path() / "state.json"
        return json.loads(state.read_text())["step"] if state.is_file() else None

    def save_checkpoint(self) -> Path:
        """Write the trainable weights, optimiser, scheduler and RNG states atomically.

        The new checkpoint is written into a temporary folder and renamed into place; the
        previous one is only removed once the new one is complete. Tensors go to safetensors,
        everything else to JSON: nothing is pickled.
        """
        from safetensors.torch import save_file

        self.accelerator.wait_for_everyone()
        target = self.checkpoint_path()
        if self.accelerator.is_main_process:
            with atomic_dir(target) as tmp:
                weights = {
                    n: p.detach().cpu().contiguous()
                    for n, p in self.policy.named_parameters()
                    if p.requires_grad
                }
                save_file(weights, str(tmp / "trainable.safetensors"))
                opt_tensors, opt_meta = _flatten_optimizer(self.optimizer.state_dict())
                save_file(opt_tensors, str(tmp / "optimizer.safetensors"))
                save_file({"torch": torch.get_rng_state()}, str(tmp / "rng.safetensors"))
                state = {
                    "step": self.state.step,
                    "config": asdict(self.config),
                    "optimizer": opt_meta,
                    "scheduler": self.scheduler.state_dict(),
                    "python_rng": _jsonable(random.getstate()),
                    "numpy_rng": _jsonable(np.random.get_state(legacy=False)),  # noqa: NPY002
                    "history": self.state.history,
                }
                (tmp / "state.json").write_text(json.dumps(state))
        self.accelerator.wait_for_everyone()
        return target

    def load_checkpoint(self, path: str | Path | None = None) -> int:
        """Restore a checkpoint written by :meth:`save_checkpoint`; returns its step."""
        from safetensors.torch import load_file

        path = Path(path) if path is not None else self.checkpoint_path()
        if not (path / "state.json").is_file():
            old = path.with_name(path.name + ".old")
            if (old / "state.json").is_file():  # a crash between the two renames
                path = old
            else:
                raise FileNotFoundError(f"no checkpoint in {path}")
        state = json.loads((path / "state.json").read_text())
        saved = {k: v for k, v in state["config"].items() if k not in RUN_ONLY_FIELDS}
        mine = {k: v for k, v in asdict(self.config).items() if k in saved}
        if saved != mine:
            diff = {k: (saved[k], mine[k]) for k in saved if saved[k] != mine[k]}
            raise ValueError(
                f"checkpoint {path} was written with another configuration: (saved, now) = {diff}"
            )
        weights = load_file(str(path / "trainable.safetensors"))
        named = dict(self.policy.named_parameters())
        missing = set(weights) ^ {n for n, p in named.items() if p.requires_grad}
        if missing:
            raise ValueError(
                f"checkpoint {path} does not match the model's trainable "
                f"parameters: {sorted(missing)[:5]}"
            )
        with torch.no_grad():
            for name, tensor in weights.items():
                named[name].copy_(tensor)
        opt = _unflatten_optimizer(
            load_file(str(path / "optimizer.safetensors")), state["optimizer"]
        )
        self.optimizer.load_state_dict(opt)
        self.scheduler.load_state_dict(state["scheduler"])
        torch.set_rng_state(load_file(str(path / "rng.safetensors"))["torch"])
        random.setstate(_tuplify(state["python_rng"]))
        numpy_rng = state["numpy_rng"]
        numpy_rng["state"]["key"] = np.array(numpy_rng["state"]["key"], dtype=np.uint32)
        np.random.set_state(numpy_rng)  # noqa: NPY002 (the global state learners use)
        self.state = TrainState(step=state["step"], history=state["history"])
        if self.out_dir is not None and (self.out_dir / "metrics.jsonl").is_file():
            # drop log lines of steps after the checkpoint: they will be redone
            lines = (self.out_dir / "metrics.jsonl").read_text().splitlines()
            kept = [ln for ln in lines if json.loads(ln)["step"] <= self.state.step]
            (self.out_dir / "metrics.jsonl").write_text("".join(k + "\n" for k in kept))
        return self.state.step


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
