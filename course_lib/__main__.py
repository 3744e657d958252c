"""Command line: ``python -m course_lib {check-env, reproduce}``."""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "reproduce":  # its own options: python -m course_lib reproduce -h
        from course_lib.experiment import main as reproduce

        return reproduce(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m course_lib", description=__doc__)
    sub = parser.add_subparsers(dest="command", required=True)
    env = sub.add_parser("check-env", help="[OK]/[FAIL] table of the environment")
    env.add_argument(
        "--no-load", action="store_true", help="only look for the embedded model, do not load it"
    )
    sub.add_parser("reproduce", help="the summarisation comparison (see `reproduce -h`)")
    args = parser.parse_args(argv)
    if args.command == "check-env":
        from course_lib.envcheck import main as check_env

        return check_env(load_model=not args.no_load)
    return 2


if __name__ == "__main__":
    sys.exit(main())
