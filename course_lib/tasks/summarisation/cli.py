"""The command line of the corpus: ``python -m course_lib.tasks.summarisation build|verify``."""

from __future__ import annotations

import argparse
import time

from course_lib.cli import run
from course_lib.tasks.summarisation.builder import build, verify
from course_lib.tasks.summarisation.records import DEFAULT_SEED

PROG = "python -m course_lib.tasks.summarisation"


def _main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog=PROG)
    sub = parser.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build", help="regenerate the corpus files (byte for byte)")
    b.add_argument(
        "--out",
        default="data/",
        help="a new or empty folder, or an earlier build's output (default data/): only the "
        "files the build writes are replaced, others are left alone",
    )
    b.add_argument("--seed", type=int, default=DEFAULT_SEED)
    v = sub.add_parser("verify", help="check the files against CHECKSUMS.sha256")
    v.add_argument("--out", default="data/")
    args = parser.parse_args(argv)
    if args.cmd == "build":
        t0 = time.perf_counter()
        sums = build(args.out, seed=args.seed)
        print(f"wrote {len(sums)} files to {args.out} in {time.perf_counter() - t0:.1f} s")
        return 0
    bad = verify(args.out)
    print("all files match CHECKSUMS.sha256" if not bad else f"differ: {', '.join(bad)}")
    return 1 if bad else 0


def main(argv: list[str] | None = None) -> int:
    """The command line; a bad value or folder is one line on stderr and exit status 2."""
    return run(_main, argv, PROG)
