"""The real track: online IPO, IPO-MD and online DPO on a pretrained model in 4-bit with LoRA.

``python -m course_lib reproduce --track real`` runs, as a learner with one GPU would (and on the
CPU at the sizes of the ``smoke`` and ``cpu`` profiles):

1. load SmolLM2-135M-Instruct (the embedded default; or any hub id or local folder) in 4-bit NF4
   with a fresh LoRA adapter; the reference pi_ref is the same model with the adapter off, which
   is exactly the initial policy because LoRA's B starts at zero (Calandriello et al. 2024, Sec. 6:
   pi_ref is the SFT model and the initial policy);
2. print the estimated memory of each component (:mod:`course_lib.resources`) and the time from a
   one-step probe, before any training;
3. train each method from the same initial adapter with the same prompts and sizes (from the
   profile), each drawing from its own seed (the run's seed plus the method's offset,
   :func:`~course_lib.online.algorithms.method_seed`; ``--common-seeds`` for one seed), labelled
   by a judge: the task's oracle (the default: the synthetic posts have a known truth) or a
   trained real-track preference model (``--judge FOLDER``, from ``python -m
   course_lib.preference train --backbone embedded``);
4. sample every trained policy and pi_ref on held-out prompts and report win rates against pi_ref
   and between methods, with 95% confidence intervals over prompts, judged by the oracle and, when
   given, by the preference model; then the measured time and peak memory beside the estimates.

Prompts are the synthetic posts by default (the oracle can judge them); ``--prompts tldr`` reads
the real Reddit TL;DR prompts from the hub and ``--prompts FILE.jsonl`` from a local file in the
hub's row format: these have no oracle, so they need ``--judge``.

Everything is written to ``results/real-<profile>/``: ``summary.json``, ``matrix_<judge>.md``,
``samples.jsonl`` (each held-out prompt with pi_ref's and every method's completion and the
judges' preferences).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from course_lib import validation as check
from course_lib.atomic import check_output_dir, claim_output_dir
from course_lib.config import Profile, opt
from course_lib.evaluation import compare
from course_lib.judges import OracleJudge, model_judge
from course_lib.online import ALGORITHMS, OnlineConfig, OnlineTrainer, online_algorithms
from course_lib.online.algorithms import label, method_seed
from course_lib.resources import (
    MemoryEstimate,
    estimate_memory,
    measure_peak,
    optimiser_state_bytes,
    timed,
)
from course_lib.sampling import sample_texts

COMMAND = "python -m course_lib reproduce --track real"
REAL_METHODS = ("online_ipo", "ipo_md", "online_dpo")
INSTRUCTION = "Summarise the following Reddit post in one short sentence."


@dataclass(frozen=True)
class RealSettings:
    """What a real-track run trains; sizes left ``None`` come from the profile.

    ``tau`` is the KL coefficient of every loss, ``beta`` IPO-MD's mixture weight on pi_ref.
    The defaults are a starting point for SmolLM2 with LoRA, not a tuned choice: the paper swept
    tau per method (Appendix B.3), which at this size is the learner's exercise.
    """

    model: str = opt("embedded", "'embedded', a model folder or a hub id")
    load_in_4bit: bool = opt(True, "load the weights unquantised", flag="--no-4bit")
    double_quant: bool = opt(False, "quantise NF4's scales too (QLoRA's double quantisation)")
    lora_r: int = opt(16, "LoRA rank")
    lora_alpha: float = opt(32.0, "LoRA alpha (the adapter is scaled by alpha / r)")
    methods: tuple[str, ...] = opt(REAL_METHODS, "online algorithms, comma-separated")
    tau: float = opt(0.1, "the KL coefficient (> 0)")
    beta: float = opt(0.125, "IPO-MD's mixture weight on pi_ref, in [0, 1]")
    lr: float = opt(2e-4, "learning rate of the adapter")
    steps: int | None = opt(None, "optimiser steps per method (default: the profile's)")
    prompts_per_step: int | None = opt(None, "prompts per step (default: the profile's)")
    new_tokens: int | None = opt(None, "completion length (default: the profile's)")
    eval_prompts: int | None = opt(None, "held-out prompts (default: the profile's)")
    seed: int = opt(0, "seed of the run; each method adds its own offset")
    common_seeds: bool = opt(False, "every method draws from the same seed (common random numbers)")
    mode: str = opt("bt", "the oracle's mode: bt (Bradley-Terry) or nt (non-transitive)")
    judge: str = opt("oracle", "'oracle' or the folder of a real-track preference model")
    prompts: str = opt("synthetic", "synthetic, tldr (the hub) or a local FILE.jsonl")

    def sized(self, profile: Profile) -> RealSettings:
        """These settings with every size that is ``None`` taken from ``profile``."""

        def pick(value, default):
            return default if value is None else value

        return replace(
            self,
            steps=pick(self.steps, profile.real_train_steps),
            prompts_per_step=pick(self.prompts_per_step, profile.real_prompts_per_step),
            new_tokens=pick(self.new_tokens, profile.real_new_tokens),
            eval_prompts=pick(self.eval_prompts, profile.real_eval_prompts),
        )

    def validate(self) -> None:
        def bad(name, allowed):
            return ValueError(f"{name}={getattr(self, name)!r} is invalid: {allowed}")

        unknown = [m for m in self.methods if m not in online_algorithms()]
        if unknown or not self.methods:
            raise bad(
                "methods",
                f"choose one or more online algorithms from {', '.join(online_algorithms())}",
            )
        check.tau(self.tau)
        check.beta(self.beta)
        check.choice("mode", self.mode, ("bt", "nt"))
        for name in ("steps", "prompts_per_step", "new_tokens", "eval_prompts"):
            if getattr(self, name) is not None:
                check.integer(name, getattr(self, name))
        check.integer("lora_r", self.lora_r)
        check.positive("lora_alpha", self.lora_alpha)
        check.integer("seed", self.seed, minimum=0)
        check.positive("lr", self.lr, what="the learning rate")
        if self.judge != "oracle" and not (Path(self.judge) / "config.json").is_file():
            raise bad(
                "judge", "'oracle' or the folder of a trained preference model (with config.json)"
            )
        if self.prompts not in ("synthetic", "tldr"):
            path = Path(self.prompts)
            if path.suffix != ".jsonl" or not path.is_file():
                raise bad(
                    "prompts",
                    "'synthetic', 'tldr' (the hub), or an existing .jsonl file of tldr rows",
                )
        if self.prompts != "synthetic" and self.judge == "oracle":
            raise ValueError(
                f"prompts={self.prompts!r} have no oracle (it knows only the synthetic posts): "
                "give --judge FOLDER, a preference model trained with `python -m "
                "course_lib.preference train --backbone ...`"
            )


def chat_prompt(tokenizer, post: str, title: str | None = None) -> str:
    """The instruction and the post in the model's chat template, ready for the answer."""
    text = f"TITLE: {title}\n\nPOST: {post}" if title else post
    body = f"{INSTRUCTION}\n\n{text}"
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": body}], tokenize=False, add_generation_prompt=True
        )
    return f"{body}\n\nTL;DR:"


def load_prompts(settings: RealSettings, tokenizer, n_train: int, n_eval: int):
    """(train prompts, train contexts, eval prompts, eval contexts) for ``settings.prompts``.

    Contexts are what the judges read: the task's records for the synthetic posts (the oracle
    needs their facts), the prompt text itself for TL;DR prompts.
    """
    if settings.prompts == "synthetic":
        from course_lib.tasks import load_split

        train = load_split("train")[:n_train]
        test = load_split("test")[:n_eval]
        return (
            [chat_prompt(tokenizer, r.post, r.title) for r in train],
            train,
            [chat_prompt(tokenizer, r.post, r.title) for r in test],
            test,
        )
    from course_lib.tasks import tldr

    if settings.prompts == "tldr":
        train = tldr.load_prompts("train", limit=n_train)
        test = tldr.load_prompts("test", limit=n_eval)
    else:
        path = Path(settings.prompts)
        if path.suffix != ".jsonl" or not path.is_file():
            raise ValueError(
                f"prompts={settings.prompts!r} is invalid: 'synthetic', 'tldr' (the hub), or an "
                "existing .jsonl file of trl-lib/tldr rows"
            )
        rows = tldr.read_prompts_jsonl(path)
        if len(rows) < 2:
            raise ValueError(f"{path} holds {len(rows)} prompt(s); need at least 2")
        cut = max(1, len(rows) - min(n_eval, len(rows) // 2))
        train, test = rows[:cut][:n_train], rows[cut:]
    as_chat = [chat_prompt(tokenizer, p.prompt) for p in train]
    eval_chat = [chat_prompt(tokenizer, p.prompt) for p in test]
    return as_chat, [p.prompt for p in train], eval_chat, [p.prompt for p in test]


@dataclass
class MethodRun:
    method: str
    seconds: float
    peak_bytes: int | None
    history: list[dict] = field(default_factory=list)
    optimiser_bytes: int = 0  # AdamW's state after training, measured from its tensors
    peak_what: str = ""  # what peak_bytes measures (CUDA allocator, or the process's RSS)


class RealTrack:
    """One real-track comparison; :meth:`run` does it all and writes ``out_dir``."""

    def __init__(
        self,
        profile: Profile,
        settings: RealSettings = RealSettings(),  # noqa: B008 - frozen dataclass
        out_dir: str | Path | None = None,
        progress: bool = True,
        log=print,
    ):
        settings = settings.sized(profile)
        settings.validate()
        self.profile, self.settings, self.progress, self.log = profile, settings, progress, log
        self.out_dir = Path(out_dir) if out_dir is not None else None
        if self.out_dir is not None:
            check_output_dir(self.out_dir, COMMAND)
        self.policy = None
        self._initial_adapter = None

    # -- the model -------------------------------------------------------------------------
    def load(self):
        """The policy in 4-bit (if asked) with a fresh LoRA adapter; kept for every method."""
        from course_lib.llm import LoraSettings, load_policy

        s = self.settings
        torch.manual_seed(s.seed)  # LoRA's A is drawn at random: the same A for every run
        self.policy = load_policy(
            s.model,
            load_in_4bit=s.load_in_4bit,
            double_quant=s.double_quant,
            lora=LoraSettings(r=s.lora_r, alpha=s.lora_alpha),
        )
        params = self.policy.model.named_parameters()
        self._initial_adapter = {k: v.detach().clone() for k, v in params if v.requires_grad}
        return self.policy

    def reset_adapter(self) -> None:
        """Back to the initial adapter (B = 0, so pi = pi_ref): every method starts there."""
        with torch.no_grad():
            for k, v in self.policy.model.named_parameters():
                if k in self._initial_adapter:
                    v.copy_(self._initial_adapter[k])

    @property
    def gradient_checkpointing(self) -> bool:
        model = self.policy.model
        for name in ("is_activation_checkpointing", "is_gradient_checkpointing"):  # new, old name
            if hasattr(model, name):
                return bool(getattr(model, name))
        return False

    def sample_texts(self, prompts, adapter: bool, seed: int, batch_size: int = 16) -> list[str]:
        """One completion per prompt from pi (``adapter=True``) or pi_ref, seeded; prompts are
        tokenised as the trainer tokenises them (with the tokenizer's special tokens)."""
        return sample_texts(
            self.policy.model,
            self.policy.tokenizer,
            prompts,
            self.settings.new_tokens,
            seed,
            batch_size=batch_size,
            adapter=adapter,
            add_special_tokens=True,
        )

    # -- estimates ---------------------------------------------------------------------------
    def estimate(self, prompts: list[str]) -> tuple[MemoryEstimate, dict]:
        """Memory per component, and the time of the whole run from a one-step probe.

        The probe times, on one step's batch, sampling two completions per prompt from pi and
        from the mixture, and a training forward + backward on them plus pi_ref's forward; the
        gradients are discarded (no optimiser step), so the run that follows starts unchanged.
        """
        from course_lib.llm import reference
        from course_lib.logprobs import pad_left, sequence_logprobs
        from course_lib.sampling import sample, sample_mixture

        s, tok, model = self.settings, self.policy.tokenizer, self.policy.model
        device = self.policy.device
        batch = prompts[: s.prompts_per_step]
        ids = [tok(p, add_special_tokens=True)["input_ids"] for p in batch]
        prompt_ids, prompt_mask = pad_left(ids, tok.pad_token_id)
        prompt_ids, prompt_mask = prompt_ids.repeat(2, 1).to(device), prompt_mask.repeat(2, 1)
        prompt_mask = prompt_mask.to(device)
        mixture = any(ALGORITHMS[m].uses_beta for m in s.methods)
        memory = estimate_memory(
            model,
            prompts_per_step=s.prompts_per_step,
            prompt_tokens=int(prompt_ids.shape[1]),
            new_tokens=s.new_tokens,
            mixture=mixture,
            compute_dtype=self.policy.compute_dtype,
            gradient_checkpointing=self.gradient_checkpointing,
        )
        common = dict(
            max_new_tokens=s.new_tokens,
            eos_token_id=tok.eos_token_id,
            pad_token_id=tok.pad_token_id,
        )
        gen = torch.Generator(device=device).manual_seed(s.seed)
        out = {}
        with torch.no_grad():
            # a warm-up: the first call pays for CUDA's lazy start-up and kernel selection
            sample(
                model,
                prompt_ids[:1],
                prompt_mask[:1],
                generator=gen,
                **{**common, "max_new_tokens": 2},
            )
            out["sample_pi"], smp = timed(
                lambda: sample(model, prompt_ids, prompt_mask, generator=gen, **common), device
            )
            if mixture:
                out["sample_mixture"], _ = timed(
                    lambda: sample_mixture(
                        model, prompt_ids, prompt_mask, beta=s.beta, generator=gen, **common
                    ),
                    device,
                )

        def train_pass():
            model.train()
            logp, _ = sequence_logprobs(
                model, prompt_ids, prompt_mask, smp.tokens, smp.mask, tok.eos_token_id
            )
            logp.sum().backward()
            with torch.no_grad(), reference(model) as ref:
                sequence_logprobs(
                    ref, prompt_ids, prompt_mask, smp.tokens, smp.mask, tok.eos_token_id
                )

        out["train_pass"], _ = timed(train_pass, device)
        model.zero_grad(set_to_none=True)
        model.eval()
        per_step = {
            m: (out["sample_mixture"] if ALGORITHMS[m].uses_beta else out["sample_pi"])
            + out["train_pass"]
            for m in s.methods
        }
        eval_batches = math.ceil(s.eval_prompts / (2 * s.prompts_per_step))
        eval_seconds = (len(s.methods) + 1) * eval_batches * out["sample_pi"]
        timing = {
            "probe": out,
            "per_step": per_step,
            "train": sum(per_step.values()) * s.steps,
            "eval": eval_seconds,
        }
        timing["total"] = timing["train"] + timing["eval"]
        return memory, timing

    # -- one method --------------------------------------------------------------------------
    def train(self, method: str, prompts, contexts, judge) -> MethodRun:
        s = self.settings
        self.reset_adapter()
        config = OnlineConfig(
            algorithm=method,
            tau=s.tau,
            beta=s.beta if ALGORITHMS[method].uses_beta else 0.0,
            steps=s.steps,
            prompts_per_step=s.prompts_per_step,
            lr=s.lr,
            max_new_tokens=s.new_tokens,
            seed=method_seed(s.seed, method, s.common_seeds),
            monitor_every=s.steps // 4 if s.steps >= 20 else 0,
            progress=self.progress,
        )
        trainer = OnlineTrainer(
            config, self.policy.model, self.policy.tokenizer, judge, prompts, contexts
        )
        with measure_peak(self.policy.device) as measured:
            history = trainer.train()
        self.policy.model.eval()
        optimiser_bytes = optimiser_state_bytes(trainer.optimizer)
        del trainer  # drops the optimiser state before the next method
        return MethodRun(
            method,
            measured.seconds,
            measured.peak_bytes,
            history,
            optimiser_bytes=optimiser_bytes,
            peak_what=measured.what,
        )

    # -- the whole run -----------------------------------------------------------------------
    def run(self) -> dict:
        s = self.settings
        start = time.perf_counter()
        if self.policy is None:
            self.load()
        tok = self.policy.tokenizer
        n_train = max(64, s.steps * s.prompts_per_step)
        train_p, train_c, eval_p, eval_c = load_prompts(s, tok, n_train, s.eval_prompts)
        judges = {}
        if s.prompts == "synthetic":
            judges["oracle"] = OracleJudge(s.mode)
        if s.judge != "oracle":
            judges["model"] = model_judge(s.judge, tok)
        train_judge = judges["model"] if s.judge != "oracle" else judges["oracle"]

        memory, timing = self.estimate(train_p)
        self.log(self._estimate_text(memory, timing))
        setup_seconds = time.perf_counter() - start  # loading, prompts and the probe

        ref_texts = self.sample_texts(eval_p, adapter=False, seed=20_000)
        texts, runs = {}, {}
        for method in s.methods:
            run = self.train(method, train_p, train_c, train_judge)
            runs[method] = run
            texts[method] = self.sample_texts(eval_p, adapter=True, seed=20_000)
            self.log(
                f"{label(method)}: {s.steps} steps in {run.seconds:.1f} s, "
                f"peak {_mib(run.peak_bytes)}"
            )
        result = self.evaluate(judges, eval_c, ref_texts, texts)
        seconds = time.perf_counter() - start
        measured = {
            "seconds_total": seconds,
            "seconds_setup": setup_seconds,
            "seconds_run": seconds - setup_seconds,
            "seconds_train": {m: r.seconds for m, r in runs.items()},
            "peak_bytes": {m: r.peak_bytes for m, r in runs.items()},
            "peak_what": next((r.peak_what for r in runs.values()), ""),
            "optimiser_bytes": {m: r.optimiser_bytes for m, r in runs.items()},
            "weights_bytes": self.policy.footprint_bytes(),
        }
        summary = {
            "track": "real",
            "profile": self.profile.name,
            "settings": asdict(s),
            "device": device_name(self.policy.device),
            "estimate": {"memory": memory.as_dict(), "time": timing},
            "measured": measured,
            "histories": {m: r.history for m, r in runs.items()},
            **result,
        }
        if self.out_dir is not None:
            self._write(summary, eval_p, ref_texts, texts)
        self.log(self._measured_text(memory, timing, measured))
        return summary

    def evaluate(self, judges: dict, contexts, ref_texts, texts: dict) -> dict:
        """Win rates against pi_ref and between methods, CIs over prompts, for each judge."""
        samples = {m: [texts[m]] for m in self.settings.methods}  # one run (seed) each
        labels = {m: label(m) for m in self.settings.methods}
        out = compare(judges, contexts, samples, ref_texts, labels, spread="stderr")
        return {**out, "eval_prompts": len(contexts)}

    # -- helpers -----------------------------------------------------------------------------
    def _estimate_text(self, memory: MemoryEstimate, timing: dict) -> str:
        s = self.settings
        lines = [
            f"real track, {self.profile.name} profile, on {device_name(self.policy.device)}: "
            f"{s.model!r}{' in 4-bit NF4' if s.load_in_4bit else ''} with LoRA r={s.lora_r}; "
            f"{', '.join(label(m) for m in s.methods)}; {s.steps} steps x "
            f"{s.prompts_per_step} prompts x 2 completions of up to {s.new_tokens} tokens",
            "estimated memory of one step (before training):",
            memory.table(),
            *[f"  - {n}" for n in memory.notes],
            "estimated time (from a one-step probe): "
            + ", ".join(f"{label(m)} {v:.2f} s/step" for m, v in timing["per_step"].items())
            + f"; about {timing['total']:.0f} s in all ({timing['train']:.0f} training, "
            f"{timing['eval']:.0f} evaluation)",
        ]
        return "\n".join(lines)

    def _measured_text(self, memory: MemoryEstimate, timing: dict, measured: dict) -> str:
        peaks = [p for p in measured["peak_bytes"].values() if p is not None]
        peak = max(peaks) if peaks else None
        return (
            f"measured: {measured['seconds_run']:.0f} s for training and evaluation (estimated "
            f"{timing['total']:.0f} s before the run) after {measured['seconds_setup']:.0f} s of "
            "loading and the probe; training "
            + ", ".join(f"{label(m)} {v:.1f} s" for m, v in measured["seconds_train"].items())
            + f"; peak memory during training {_mib(peak)} (estimated {_mib(memory.total)} for "
            f"the step's own tensors; {_peak_kind(self.policy.device)})"
        )

    def _write(self, summary, eval_p, ref_texts, texts) -> None:
        """Each file atomically, into a folder that is new or this command's own: files the
        course did not write are never touched."""
        from course_lib.atomic import atomic_open, atomic_write_json, atomic_write_text

        out = claim_output_dir(self.out_dir, COMMAND)
        atomic_write_json(out / "summary.json", summary, default=str)
        for judge_name, mat in summary["matrices"].items():
            atomic_write_text(
                out / f"matrix_{judge_name}.md",
                f"Win rate of the row method over the column method, judged by the "
                f"{judge_name}, on {summary['eval_prompts']} held-out prompts (one seed); in "
                "brackets the standard error over prompts.\n\n"
                f"{mat['markdown']}\n",
            )
        with atomic_open(out / "samples.jsonl") as f:
            for i, prompt in enumerate(eval_p):
                row = {"prompt": prompt, "reference": ref_texts[i]}
                for m in self.settings.methods:
                    row[m] = texts[m][i]
                    for judge_name, per in summary["per_prompt_vs_reference"].items():
                        row[f"p_{judge_name}_{m}_vs_reference"] = per[m][i]
                f.write(json.dumps(row) + "\n")


def _mib(n: int | None) -> str:
    return "unknown" if n is None else f"{n / 2**20:.0f} MiB"


def device_name(device) -> str:
    if device.type == "cuda":
        return torch.cuda.getdevice_name(device)
    import platform

    return f"CPU ({platform.machine()}, {torch.get_num_threads()} torch threads)"


def _peak_kind(device) -> str:
    if device.type == "cuda":
        return "CUDA allocator peak"
    return "peak resident set of the whole process, Python and libraries included"
