"""Training-step throughput: the course's OnlineTrainer against TRL's OnlineDPOTrainer.

    python benchmarks/bench_online.py                  # cpu-profile sizes, writes RESULTS.md
    python benchmarks/bench_online.py --rounds 1 --steps-per-round 1 --no-write   # quick look

One run, one model, one batch shape, timed back to back in interleaved rounds (so that a busy
shared CPU slows every variant alike):

* ``trl ipo``      -- ``trl.experimental.online_dpo.OnlineDPOTrainer(loss_type="ipo")``: its own
                      ``training_step`` (HF ``generate`` of two completions per prompt, reward
                      function, policy and reference forwards, loss, backward), then the same
                      clip + AdamW step the course uses;
* ``online_ipo``   -- ``course_lib.online.OnlineTrainer.step()``: both samples from pi;
* ``ipo_md``       -- both samples from the token-level mixture (beta = 0.5): two cached forwards
                      (pi and pi_ref) per generated token instead of one, and no reference
                      forward in the loss (the sampler's own log pi_ref of each token);
* ``nash_md_pg``   -- y from pi, y' from the mixture (for reference).

Each step is timed on two clocks, the wall clock (``time.perf_counter``) and the process's CPU
time (``time.process_time``: the work done, which other jobs on a shared machine do not inflate),
and split into phases by timers around the calls that make them up: sampling (the course's
``OnlineTrainer.batch``, TRL's ``_generate``), the reference's teacher-forced forward and the
policy's forward (the course's ``sequence_logprobs``, TRL's ``_forward``, told apart by grad
mode), the backward (``accelerator.backward``, counted with the policy's forward), the optimiser
(clipping, AdamW, scheduler, zeroing); the rest of the step (judge or reward function, labels,
metrics, Python) is what is left.

The model is the tiny track's architecture (``course_lib.tasks.tiny_policy.make_model``: Llama,
hidden 128, 4 layers, the committed word-level tokenizer) with random weights, fully fine-tuned
against a frozen copy as pi_ref, in fp32 on both sides (TRL's config defaults to bf16 autocast;
it is switched off here). Prompts are the task's training prompts; the batch size and completion
length default to the ``cpu`` profile's ``prompts_per_step`` and ``max_new_tokens``. Completions
stop at EOS in both trainers; the table gives the mean completion length each produced, so
pairs/s compare like with like. Figures are pairs (two completions, one loss term) per second
and ratios measured in the same run; the section ends with IPO-MD's step against online IPO's
(goal, issue 16: at most 1.2x) and what bounds that ratio.
"""

from __future__ import annotations

import argparse
import copy
import itertools
import json
import statistics
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from bench_sampling import load_average, machine, write_section  # noqa: E402

from course_lib import logprobs  # noqa: E402
from course_lib.config import get_profile  # noqa: E402
from course_lib.online import OnlineConfig, OnlineTrainer  # noqa: E402
from course_lib.paths import data_dir  # noqa: E402
from course_lib.tasks.tiny_policy import make_model, prompt_text  # noqa: E402
from course_lib.tasks.tokenizer import load_tokenizer  # noqa: E402

RESULTS = ROOT / "benchmarks" / "RESULTS.md"
START, END = "<!-- bench_online:start -->", "<!-- bench_online:end -->"
WORD = "the"  # the toy preference: more of this word is better (the same for both trainers)


def score(text: str) -> float:
    return float(text.split().count(WORD))


def reward_fn(prompts, completions, completion_ids, **kwargs):
    """TRL reward function: a number per completion; TRL keeps only which of the two is higher."""
    return [score(c) for c in completions]


def judge(contexts, ys, y2s):
    """Course judge: the Bradley-Terry probability of the same scores (a soft label)."""
    d = np.array([score(a) - score(b) for a, b in zip(ys, y2s, strict=True)])
    return 1.0 / (1.0 + np.exp(-d))


PHASES = ("sampling", "reference forward", "policy forward+backward", "optimiser")
# wall-clock seconds, and this process's CPU seconds: the work done, which other jobs taking the
# cores (or a `nice` that gives them priority) do not inflate, where they lengthen the wall clock
CLOCKS = {"wall": time.perf_counter, "cpu": time.process_time}


def now() -> dict:
    _sync()  # on a GPU, finish the queued kernels first, so that they land in their own phase
    return {c: clock() for c, clock in CLOCKS.items()}


def _sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


class PhaseClock:
    """Seconds spent in each phase of the step being timed, on each clock (one PhaseClock for
    all: the steps run one at a time). ``wrap(fn, phase)`` returns ``fn`` timed into ``phase``
    (a name, or a function giving the name at call time)."""

    def __init__(self):
        self.reset()

    def reset(self) -> None:
        self.seconds = {c: dict.fromkeys(PHASES, 0.0) for c in CLOCKS}

    def wrap(self, fn, phase):
        def timed(*args, **kwargs):
            name = phase() if callable(phase) else phase
            start = now()
            try:
                return fn(*args, **kwargs)
            finally:
                for c, t in now().items():
                    self.seconds[c][name] += t - start[c]

        return timed


def by_grad_mode() -> str:
    """A log-prob forward with gradient is the policy's; one without, the reference's."""
    return "policy forward+backward" if torch.is_grad_enabled() else "reference forward"


CLOCK = PhaseClock()
# course_lib's policy and reference forwards both go through this one function
logprobs.sequence_logprobs = CLOCK.wrap(logprobs.sequence_logprobs, by_grad_mode)


def time_optimiser(optimizer, accelerator=None, scheduler=None) -> None:
    """Time the optimiser's calls (and clipping, the scheduler) as the "optimiser" phase."""
    for obj, names in (
        (optimizer, ("step", "zero_grad")),
        (accelerator, ("clip_grad_norm_",)),
        (scheduler, ("step",)),
    ):
        for name in names if obj is not None else ():
            setattr(obj, name, CLOCK.wrap(getattr(obj, name), "optimiser"))


def load_prompts(n: int) -> list[str]:
    path = data_dir() / "prompts_train.jsonl"
    with open(path) as f:
        return [prompt_text(json.loads(line)["post"]) for line in itertools.islice(f, n)]


class TRLRunner:
    """TRL's OnlineDPOTrainer driven one optimiser step at a time."""

    def __init__(self, base, tokenizer, prompts, args, out_dir):
        from datasets import Dataset
        from trl.experimental.online_dpo import OnlineDPOConfig, OnlineDPOTrainer

        self.policy = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval().requires_grad_(False)
        config = OnlineDPOConfig(
            output_dir=str(out_dir),
            loss_type="ipo",
            beta=args.tau,
            learning_rate=args.lr,
            max_new_tokens=args.max_new_tokens,
            max_length=4096,  # never truncate the prompt: the course does not either
            temperature=1.0,
            per_device_train_batch_size=args.batch,
            gradient_checkpointing=False,
            bf16=False,
            report_to="none",
            save_strategy="no",
            use_cpu=not torch.cuda.is_available(),
            seed=args.seed,
        )
        self.trainer = OnlineDPOTrainer(
            model=self.policy,
            ref_model=ref,
            reward_funcs=reward_fn,
            args=config,
            train_dataset=Dataset.from_dict({"prompt": prompts}),
            processing_class=tokenizer,
        )
        self.model = self.trainer.model
        # the same optimiser, clipping and order of operations as course_lib.online
        params = [p for p in self.model.parameters() if p.requires_grad]
        self.optimizer = torch.optim.AdamW(params, lr=args.lr, weight_decay=0.0)
        self.params, self.max_grad_norm = params, 1.0
        self.prompts, self.batch = prompts, args.batch
        self.rng = np.random.default_rng(args.seed)
        self.lengths: list[float] = []
        generate = self.trainer._generate

        def counting_generate(*a, **k):  # records the completion lengths TRL produced
            out = generate(*a, **k)
            self.lengths.append(float(out[3].sum(1).float().mean()))
            return out

        self.trainer._generate = CLOCK.wrap(counting_generate, "sampling")
        self.trainer._forward = CLOCK.wrap(self.trainer._forward, by_grad_mode)
        acc = self.trainer.accelerator
        acc.backward = CLOCK.wrap(acc.backward, "policy forward+backward")
        time_optimiser(self.optimizer)
        self.clip = CLOCK.wrap(torch.nn.utils.clip_grad_norm_, "optimiser")

    def step(self) -> None:
        idx = self.rng.choice(len(self.prompts), size=self.batch, replace=False)
        inputs = {"prompt": [self.prompts[i] for i in idx]}
        loss = self.trainer.training_step(self.model, inputs)
        if not torch.isfinite(loss):
            raise RuntimeError(f"TRL's loss is {loss.item()}")
        self.clip(self.params, self.max_grad_norm)
        self.optimizer.step()
        self.optimizer.zero_grad()


class CourseRunner:
    def __init__(self, base, tokenizer, prompts, args, algorithm, beta):
        policy = copy.deepcopy(base).train()
        ref = copy.deepcopy(base).eval().requires_grad_(False)
        config = OnlineConfig(
            algorithm=algorithm,
            tau=args.tau,
            beta=beta,
            steps=10**6,
            prompts_per_step=args.batch,
            lr=args.lr,
            max_grad_norm=1.0,
            max_new_tokens=args.max_new_tokens,
            temperature=1.0,
            seed=args.seed,
            monitor_every=0,  # no extra sampling of pi against pi_ref inside the timed step
            progress=False,
        )
        self.trainer = OnlineTrainer(config, policy, tokenizer, judge, prompts, ref_model=ref)
        self.lengths: list[float] = []
        tr = self.trainer
        tr.batch = CLOCK.wrap(tr.batch, "sampling")
        tr.accelerator.backward = CLOCK.wrap(tr.accelerator.backward, "policy forward+backward")
        time_optimiser(tr.optimizer, tr.accelerator, tr.scheduler)

    def step(self) -> None:
        self.lengths.append(self.trainer.step()["length"])


def run(args) -> dict:
    import tempfile

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    tokenizer = load_tokenizer()
    prompts = load_prompts(args.n_prompts)
    base = make_model(len(tokenizer))
    if torch.cuda.is_available():
        base = base.to("cuda")
    runners = {}
    tmp = tempfile.TemporaryDirectory()  # TRL's output_dir; nothing is saved there
    runners["trl ipo"] = TRLRunner(base, tokenizer, prompts, args, Path(tmp.name) / "trl")
    runners["online_ipo"] = CourseRunner(base, tokenizer, prompts, args, "online_ipo", 0.0)
    runners["ipo_md"] = CourseRunner(base, tokenizer, prompts, args, "ipo_md", args.beta)
    if not args.skip_nash:
        runners["nash_md_pg"] = CourseRunner(
            base, tokenizer, prompts, args, "nash_md_pg", args.beta
        )
    steps = {name: [] for name in runners}  # per timed step: (totals, phases) on each clock
    for r in runners.values():  # warm-up: allocations, first-call overheads
        for _ in range(args.warmup):
            r.step()
        r.lengths.clear()
    for rnd in range(args.rounds):
        for name, r in runners.items():
            for _ in range(args.steps_per_round):
                CLOCK.reset()
                start = now()
                r.step()
                total = {c: t - start[c] for c, t in now().items()}
                steps[name].append((total, CLOCK.seconds))
        summary = ", ".join(
            f"{n} {statistics.median(t['wall'] for t, _ in s):.3f}s" for n, s in steps.items()
        )
        print(f"round {rnd + 1}/{args.rounds}: median s/step {summary}", flush=True)
    tmp.cleanup()
    out = {}
    for name, timed in steps.items():
        wall = [t["wall"] for t, _ in timed]
        out[name] = {
            "median_s": statistics.median(wall),
            "min_s": min(wall),
            "max_s": max(wall),
            "cpu_median_s": statistics.median(t["cpu"] for t, _ in timed),
            "steps": len(wall),
            "length": float(np.mean(runners[name].lengths)),
            "phases": {c: phase_medians(timed, c) for c in CLOCKS},
        }
    return out


def phase_medians(timed: list, clock: str) -> dict:
    """Median seconds of each phase over the timed steps, on one clock, and the step's; "rest" is
    each step's total less its timed phases (judge or reward, labels, metrics, Python)."""
    out = {k: statistics.median(p[clock][k] for _, p in timed) for k in PHASES}
    out["rest"] = statistics.median(t[clock] - sum(p[clock].values()) for t, p in timed)
    out["step"] = statistics.median(t[clock] for t, _ in timed)
    return out


def render(res: dict, args, argv, before, after, seconds) -> str:
    trl, ipo = res["trl ipo"]["median_s"], res["online_ipo"]["median_s"]
    a, b = res["trl ipo"], res["online_ipo"]
    overlap = (
        "the two min-max ranges overlap, so this run does not resolve a difference"
        if a["min_s"] <= b["max_s"] and b["min_s"] <= a["max_s"]
        else "the two min-max ranges do not overlap"
    )
    cpu_ipo, cpu_trl = b["cpu_median_s"], a["cpu_median_s"]
    lines = [
        START,
        "## Online training step: course_lib.online against TRL (`bench_online.py`)",
        "",
        f"Machine: {machine()}. Load average before / after: {before} and {after}"
        + (
            "; the 2 cores were shared with other engineers' jobs during the run (training "
            "and evaluation runs, with priority over this niced one), so wall-clock seconds "
            "are noisy; the variants ran "
            "interleaved in rounds, ratios are of medians measured in the same run, and the "
            "CPU columns (this process's CPU time: the work done, which other jobs do not "
            "inflate) are the steadier measure."
            if not torch.cuda.is_available()
            else "."
        ),
        f"Command: `{' '.join(['python benchmarks/bench_online.py', *argv])}` "
        f"({seconds:.0f} s wall).",
        "",
        f"Model: tiny-track Llama (hidden 128, 4 layers, vocabulary {args.vocab}), random "
        f"weights, full fine-tuning against a frozen copy, fp32. Batch {args.batch} prompts "
        f"(task prompts, mean {args.prompt_len:.0f} tokens), two completions each, up to "
        f"{args.max_new_tokens} new tokens, temperature 1; tau = {args.tau}, beta = "
        f"{args.beta} for the mixture variants; AdamW lr {args.lr}, clip 1.0. "
        f"{args.warmup} warm-up step(s) per variant, then {args.rounds} rounds x "
        f"{args.steps_per_round} timed steps.",
        "",
        "| variant | median s/step (min-max) | pairs/s | mean completion length | "
        "generated tokens/s | vs TRL (pairs/s) | step cost vs online_ipo | "
        "median CPU s/step | CPU vs TRL (pairs/s) | CPU step cost vs online_ipo |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for name, r in res.items():
        cpu = r["cpu_median_s"]
        lines.append(
            f"| {name} | {r['median_s']:.3f} ({r['min_s']:.3f}-{r['max_s']:.3f}) | "
            f"{args.batch / r['median_s']:.1f} | {r['length']:.1f} | "
            f"{2 * args.batch * r['length'] / r['median_s']:.0f} | "
            f"{trl / r['median_s']:.2f}x | {r['median_s'] / ipo:.2f}x | "
            f"{cpu:.3f} | {cpu_trl / cpu:.2f}x | {cpu / cpu_ipo:.2f}x |"
        )
    lines += [
        "",
        f"Course online IPO vs TRL online IPO throughput: {trl / ipo:.2f}x wall-clock, "
        f"{cpu_trl / cpu_ipo:.2f}x CPU time (> 1: the course is faster); {overlap}.",
        "",
    ]
    for clock in ("cpu", "wall") if not torch.cuda.is_available() else ("wall",):
        lines += [*render_phases(res, clock), ""]
    lines += [*summary(res), END]
    return "\n".join(lines)


def render_phases(res: dict, clock: str) -> list[str]:
    """The per-phase table on one clock: median seconds of each phase, and its share of the
    median step."""
    head = ["variant", *PHASES, "rest", "step"]
    what = "CPU seconds" if clock == "cpu" else "wall-clock seconds"
    lines = [
        f"One step by phase, in {what} (timers around the calls of each phase; medians over "
        "the timed steps, and in brackets the share of the variant's median step; `rest` is "
        "the step less its timed phases: judge or reward function, labels, metrics, Python):",
        "",
        "| " + " | ".join(head) + " |",
        "| --- |" + " ---: |" * (len(head) - 1),
    ]
    for name, r in res.items():
        p = r["phases"][clock]
        cells = [f"{p[k]:.3f} ({p[k] / p['step']:.0%})" for k in (*PHASES, "rest")]
        lines.append(f"| {name} | " + " | ".join(cells) + f" | {p['step']:.3f} |")
    return lines


def summary(res: dict) -> list[str]:
    """IPO-MD's step against online IPO's, against the goal, and what bounds the ratio."""
    clock = "cpu" if not torch.cuda.is_available() else "wall"
    md, pi = res["ipo_md"]["phases"][clock], res["online_ipo"]["phases"][clock]
    ratio = md["step"] / pi["step"]
    wall = res["ipo_md"]["median_s"] / res["online_ipo"]["median_s"]
    floor = (md["sampling"] + pi["step"] - pi["sampling"] - pi["reference forward"]) / pi["step"]
    return [
        f"IPO-MD step / online-IPO step: {ratio:.2f}x in {clock.upper()} time "
        f"({wall:.2f}x wall-clock); goal (issue 16) <= 1.2x: "
        f"{'met' if ratio <= 1.2 else 'not met'}. IPO-MD's loss runs no reference forward (its "
        "sampler computed log pi_ref of every token it drew; online IPO's took "
        f"{pi['reference forward'] / pi['step']:.0%} of its step), so what remains is the "
        f"sampling: the mixture's took {md['sampling'] / pi['sampling']:.2f}x plain sampling's "
        "time, two decode forwards per token (pi, then the separate frozen pi_ref of this full "
        "fine-tuning) against one. Online IPO's step with its sampling replaced by the "
        f"mixture's and without its reference forward would be {floor:.2f}x its own: that is "
        "the bound, and only a cheaper second decode forward would lower it. A LoRA policy's "
        "pi_ref, its adapter-off base, can share pi's forward (`sample_mixture(fused=True)`), "
        "which saves kernel launches on a GPU but no arithmetic on a CPU.",
    ]


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    prof = get_profile("cpu")
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batch", type=int, default=prof.prompts_per_step)
    parser.add_argument("--max-new-tokens", type=int, default=prof.max_new_tokens)
    parser.add_argument("--tau", type=float, default=0.5)
    parser.add_argument("--beta", type=float, default=0.5)
    parser.add_argument("--lr", type=float, default=1e-4)
    parser.add_argument("--n-prompts", type=int, default=256)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--steps-per-round", type=int, default=1)
    # one thread: on a shared 2-core machine two intra-op threads wait on each other, and a
    # one-token forward of this tiny model measured 7-10x slower with 2 threads than with 1
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--skip-nash", action="store_true", help="do not time nash_md_pg")
    parser.add_argument("--no-write", action="store_true", help="print, do not edit RESULTS.md")
    args = parser.parse_args(argv)
    try:
        import trl.experimental.online_dpo  # noqa: F401
    except ImportError as exc:
        print(f"this benchmark needs trl >= 1.16 (pip install '.[trl]'): {exc}", file=sys.stderr)
        return 2
    warnings.filterwarnings("ignore", category=FutureWarning)
    tokenizer = load_tokenizer()
    args.vocab = len(tokenizer)
    args.prompt_len = float(
        np.mean([len(tokenizer(p)["input_ids"]) for p in load_prompts(args.n_prompts)])
    )
    before, start = load_average(), time.perf_counter()
    res = run(args)
    seconds = time.perf_counter() - start
    section = render(res, args, argv, before, load_average(), seconds)
    print(section)
    if not args.no_write:
        write_section(section, RESULTS, START, END)
        print(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
