"""The command line: ``python -m course_lib.preference train --out DIR`` trains a preference model
on the synthetic task (:func:`~course_lib.preference.training.train_for_task`) and saves it."""

from __future__ import annotations

import argparse
import json
import math

from course_lib.cli import run
from course_lib.preference.storage import check_model_dir
from course_lib.preference.training import train_for_task

PROG = "python -m course_lib.preference"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="train a preference model on the synthetic task")
    t.add_argument("--mode", choices=("bt", "nt"), default="bt")
    t.add_argument("--kind", choices=("pairwise", "bt"), default="pairwise")
    t.add_argument("--pairs", type=int, default=None, help="training pairs (default: all)")
    t.add_argument("--epochs", type=int, default=3)
    t.add_argument("--seed", type=int, default=0)
    t.add_argument(
        "--backbone",
        default=None,
        help="real track: 'embedded' (SmolLM2), a folder or a hub id, with LoRA",
    )
    t.add_argument("--load-in-4bit", action="store_true", help="4-bit NF4 backbone")
    t.add_argument("--lr", type=float, default=1e-3)
    t.add_argument("--batch-size", type=int, default=32)
    t.add_argument(
        "--out",
        required=True,
        help="a new or empty folder, or a preference model saved before (it is replaced)",
    )
    return parser


def _check(args) -> None:
    """Cheap checks first, so that a mistyped value fails before any data or model is loaded."""
    for option, value in (("--pairs", args.pairs), ("--epochs", args.epochs)):
        if value is not None and value < 1:
            raise ValueError(f"{option} {value} is invalid: must be an integer >= 1")
    if args.batch_size < 1:
        raise ValueError(f"--batch-size {args.batch_size} is invalid: must be an integer >= 1")
    if not (math.isfinite(args.lr) and args.lr > 0):
        raise ValueError(f"--lr {args.lr} is invalid: must be a number > 0")
    if args.load_in_4bit and args.backbone is None:
        raise ValueError(
            "--load-in-4bit applies to a --backbone model only (the tiny model is not quantised)"
        )
    check_model_dir(args.out)


def _main(argv: list[str]) -> int:
    args = _parser().parse_args(argv)
    _check(args)
    _, report = train_for_task(
        args.mode,
        args.kind,
        args.pairs,
        args.epochs,
        args.seed,
        args.out,
        backbone=args.backbone,
        load_in_4bit=args.load_in_4bit,
        lr=args.lr,
        batch_size=args.batch_size,
    )
    print(json.dumps(report, indent=1))
    return 0


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad value, folder or corpus line is one line on stderr, exit 2."""
    return run(_main, argv, PROG)
