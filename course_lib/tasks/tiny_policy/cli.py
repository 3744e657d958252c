"""The command line of the tiny policy: ``python -m course_lib.tasks.tiny_policy train|eval``."""

from __future__ import annotations

import argparse
import dataclasses
import json
import platform
import time
from dataclasses import asdict
from pathlib import Path

from course_lib.cli import run
from course_lib.tasks.oracle import Oracle
from course_lib.tasks.summarisation import SPLITS, load_split
from course_lib.tasks.tiny_policy.model import (
    TinyPolicySpec,
    generate_summaries,
    win_rate_vs_reference,
)
from course_lib.tasks.tiny_policy.storage import (
    TRAIN_COMMAND,
    check_policy_dir,
    default_policy_dir,
    load_tiny_policy,
    save_policy,
)
from course_lib.tasks.tiny_policy.training import pretrain

PROG = "python -m course_lib.tasks.tiny_policy"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="pre-train + fine-tune the tiny policy, then evaluate it")
    t.add_argument(
        "--out",
        default=str(default_policy_dir()),
        help="where to save: a new or empty folder, or a tiny policy saved before (replaced)",
    )
    t.add_argument("--steps", type=int, default=1500, help="pre-training steps (all tokens)")
    t.add_argument("--sft-steps", type=int, default=1500, help="fine-tuning steps (summaries)")
    t.add_argument("--init", default=None, help="skip pre-training: start from this folder")
    t.add_argument("--eval-prompts", type=int, default=500)
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("eval", help="win rate of a saved policy against the references")
    e.add_argument("--out", default=str(default_policy_dir()))
    e.add_argument("--eval-prompts", type=int, default=500)
    return parser


def _positive(value: int, option: str, minimum: int = 1) -> None:
    if value < minimum:
        raise ValueError(f"{option} {value} is invalid: must be an integer >= {minimum}")


def _check(args) -> None:
    """Cheap checks first: a mistyped value or folder fails here, not after minutes of training."""
    n_test = SPLITS["test"][1]
    if not 1 <= args.eval_prompts <= n_test:
        raise ValueError(
            f"--eval-prompts {args.eval_prompts} is invalid: must be between 1 and {n_test} "
            "(the test prompts)"
        )
    if args.cmd == "train":
        _positive(args.sft_steps, "--sft-steps", 0)
        if args.init:
            for name in ("model.safetensors", "training_log.json"):
                if not (Path(args.init) / name).is_file():
                    raise FileNotFoundError(
                        f"--init {args.init}: no {name} there; give a folder saved by `"
                        f"{TRAIN_COMMAND}` (e.g. data/tiny_policy)"
                    )
        else:
            _positive(args.steps, "--steps")
        check_policy_dir(args.out)
    elif not (Path(args.out) / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"--out {args.out}: no model.safetensors there; give a folder saved by "
            f"`{TRAIN_COMMAND}` (default {default_policy_dir()})"
        )


def _train(args):
    """Pre-train (or start from ``--init``), then fine-tune; returns ``(model, tok, log)``."""
    import torch

    spec = TinyPolicySpec()
    env = {
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        "machine": platform.processor() or platform.machine(),
    }
    if args.init:
        model, tok = load_tiny_policy(args.init)
        prior = json.loads((Path(args.init) / "training_log.json").read_text())
        phases = prior.get("phases") or [prior]
    else:
        model, tok, first = pretrain(args.steps, spec, progress=not args.no_progress)
        phases = [{"phase": "pretrain", "steps": args.steps, **env, **first}]
        print(
            f"pre-trained {first['parameters']:,} parameters for {args.steps} steps "
            f"in {first['seconds']:.0f} s; last loss {first['loss'][-1]:.3f}"
        )
    if args.sft_steps:
        sft_spec = dataclasses.replace(spec, lr=spec.sft_lr)
        model, tok, second = pretrain(
            args.sft_steps,
            sft_spec,
            tok=tok,
            init=model,
            completion_only=True,
            progress=not args.no_progress,
        )
        phases.append({"phase": "sft", "steps": args.sft_steps, **env, **second})
        print(
            f"fine-tuned for {args.sft_steps} steps in {second['seconds']:.0f} s; "
            f"last loss {second['loss'][-1]:.3f}"
        )
    log = {
        "spec": asdict(spec),
        "phases": phases,
        "command": f"{TRAIN_COMMAND} --steps {args.steps} --sft-steps {args.sft_steps}",
    }
    return model, tok, log


def _evaluate(model, tok, n_prompts: int) -> dict:
    """Win rates against the references on the first ``n_prompts`` test prompts, sampled and
    greedy, under both oracles; printed as they come."""
    test = load_split("test")[:n_prompts]
    t0 = time.perf_counter()
    result = {}
    for name, kw in (("sampled", {}), ("greedy", {"greedy": True})):
        samples = generate_summaries(model, tok, [r.post for r in test], **kw)
        result[name] = {m: win_rate_vs_reference(test, samples, Oracle(m)) for m in ("bt", "nt")}
        r = result[name]["bt"]
        print(
            f"{name}: win rate vs reference (bt) {r['win_rate']:.3f} +- {r['stderr']:.3f}; "
            f"(nt) {result[name]['nt']['win_rate']:.3f}; aspects {r['mean_aspects']}"
        )
    result["eval_seconds"] = time.perf_counter() - t0
    return result


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    if args.cmd == "train":
        model, tok, log = _train(args)
    else:
        model, tok = load_tiny_policy(args.out)
        log = None
    result = _evaluate(model, tok, args.eval_prompts)
    if log is not None:
        log["evaluation"] = result
        save_policy(model, tok, args.out, log)
        print(f"saved to {args.out}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad value or folder is one line on stderr and exit status 2."""
    return run(_main, argv, PROG)
