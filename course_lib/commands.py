"""The commands of ``python -m course_lib``: one function each, and the table that names them.

Each command parses its own options (built from the settings dataclass it runs, with
:func:`course_lib.cli.add_settings_options`), checks everything cheap before anything slow is
loaded, and runs through :func:`course_lib.cli.run`, which turns a user's mistake into one line
and exit status 2.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from course_lib.cli import (
    PROG,
    USAGE_ERROR,
    add_settings_options,
    comma_list,
    run,
    settings_from,
)


def _check_env(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=f"{PROG} check-env", description="[OK]/[FAIL] table")
    parser.add_argument(
        "--no-load", action="store_true", help="only look for the embedded model, do not load it"
    )
    args = parser.parse_args(argv)
    from course_lib.envcheck import main as check_env

    return check_env(load_model=not args.no_load)


def _reproduce(argv: list[str]) -> int:
    import argparse

    track = argparse.ArgumentParser(add_help=False)
    track.add_argument("--track", choices=("tiny", "real"), default="tiny")
    known, _ = track.parse_known_args(argv)
    return _reproduce_real(argv) if known.track == "real" else _reproduce_tiny(argv)


def _reproduce_tiny(argv: list[str]) -> int:
    import argparse
    import time
    from pathlib import Path

    from course_lib.atomic import check_output_dir
    from course_lib.config import get_profile
    from course_lib.experiments import tiny

    parser = argparse.ArgumentParser(
        prog=f"{PROG} reproduce", description=tiny.__doc__.split("\n\n")[0]
    )
    parser.add_argument(
        "--track",
        choices=("tiny", "real"),
        default="tiny",
        help="tiny (this comparison) or real (`--track real --help`)",
    )
    parser.add_argument("--profile", default=None, help="smoke, cpu or gpu")
    parser.add_argument("--modes", type=comma_list, default=tiny.MODES, help="bt,nt")
    parser.add_argument(
        "--methods", type=comma_list, default=tiny.METHODS, help=",".join(tiny.METHODS)
    )
    parser.add_argument("--train-judge", default="learned", choices=("learned", "oracle"))
    parser.add_argument("--out", default=None, help="default: results/tiny-<profile>")
    args = parser.parse_args(argv)
    prof = get_profile(args.profile)
    tiny.check_choices(args.methods, args.modes)
    out = Path(args.out or Path("results") / f"tiny-{prof.name}")
    check_output_dir(out, tiny.COMMAND)
    from course_lib.notebook import quiet_libraries

    quiet_libraries(prof)
    exp = tiny.Experiment(prof, out, args.modes, args.methods, train_judge=args.train_judge)
    start = time.perf_counter()
    summary = exp.run()
    for mode, res in summary["modes"].items():
        for judge, mat in res["matrices"].items():
            print(f"\n{mode} oracle mode, judged by the {judge}:\n{mat['markdown']}")
    print(f"\nwrote {out} in {time.perf_counter() - start:.0f} s")
    return 0


def _reproduce_real(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from course_lib.atomic import check_output_dir
    from course_lib.config import get_profile
    from course_lib.experiments import real

    parser = argparse.ArgumentParser(
        prog=f"{PROG} reproduce --track real", description=real.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--track", choices=("real",), default="real")
    parser.add_argument("--profile", default=None, help="smoke, cpu or gpu")
    parser.add_argument("--out", default=None, help="default: results/real-<profile>")
    add_settings_options(parser, real.RealSettings)
    args = parser.parse_args(argv)
    prof = get_profile(args.profile)
    settings = settings_from(args, real.RealSettings)
    out = Path(args.out or Path("results") / f"real-{prof.name}")
    # everything cheap first: a mistake costs a second, not the model's loading time
    settings.sized(prof).validate()
    check_output_dir(out, real.COMMAND)
    if settings.prompts not in ("synthetic", "tldr"):
        from course_lib.tasks import tldr

        tldr.read_prompts_jsonl(settings.prompts)  # a malformed line fails here, named
    from course_lib.notebook import quiet_libraries

    quiet_libraries(prof)
    summary = real.RealTrack(prof, settings, out).run()
    for judge, vs in summary["vs_reference"].items():
        print(f"\nwin rate against pi_ref, judged by the {judge} (95% CI over prompts):")
        for name, wr in vs.items():
            print(f"  {name:8s} {wr['mean']:.3f} [{wr['low']:.3f}, {wr['high']:.3f}]")
    for judge, mat in summary["matrices"].items():
        print(f"\nbetween methods, judged by the {judge}:\n{mat['markdown']}")
    print(f"\nwrote {out}")
    return 0


def _train(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from course_lib.config import get_profile
    from course_lib.experiments import train

    parser = argparse.ArgumentParser(
        prog=f"{PROG} train", description=train.__doc__.split("\n\n")[0]
    )
    add_settings_options(parser, train.TrainSettings)
    parser.add_argument("--profile", default=None, help="smoke, cpu or gpu (sizes left unset)")
    parser.add_argument("--out", required=True, help="a new or empty folder, or this command's")
    parser.add_argument("--resume", action="store_true", help="continue the run in --out")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile)
    settings = settings_from(args, train.TrainSettings)
    settings.validate()
    from course_lib.notebook import quiet_libraries

    quiet_libraries(profile)
    out = Path(args.out)
    last = train.run(settings, profile, out, args.resume, progress=not args.no_progress)
    shown = ", ".join(f"{k}={v:.4g}" for k, v in last.items() if isinstance(v, float))
    print(f"{settings.algorithm}: step {last.get('step')} ({shown}); wrote {out}")
    return 0


def _evaluate(argv: list[str]) -> int:
    import argparse

    from course_lib.atomic import check_output_dir
    from course_lib.experiments import real_trained

    parser = argparse.ArgumentParser(
        prog=f"{PROG} evaluate", description=real_trained.__doc__.split("\n\n")[0]
    )
    add_settings_options(parser, real_trained.EvaluateSettings)
    parser.add_argument("--out", required=True, help="a new or empty folder, or this command's")
    args = parser.parse_args(argv)
    settings = settings_from(args, real_trained.EvaluateSettings)
    settings.validate()
    real_trained.read_runs(settings.runs)  # a wrong folder fails before the model loads
    check_output_dir(args.out, real_trained.COMMAND)
    from course_lib.config import get_profile
    from course_lib.notebook import quiet_libraries

    quiet_libraries(get_profile(None))
    summary = real_trained.evaluate(settings, args.out)
    for judge, vs in summary["vs_reference"].items():
        print(f"\nwin rate against pi_ref, judged by the {judge} (95% CI over prompts):")
        for name, wr in vs.items():
            print(f"  {name:8s} {wr['mean']:.3f} [{wr['low']:.3f}, {wr['high']:.3f}]")
    print(f"\nwrote {args.out} in {summary['seconds_total']:.0f} s")
    return 0


def _power(argv: list[str]) -> int:
    import argparse
    import time
    from pathlib import Path

    from course_lib.config import get_profile
    from course_lib.experiments import power
    from course_lib.notebook import quiet_libraries

    parser = argparse.ArgumentParser(prog=f"{PROG} power", description=power.SUMMARY)
    add_settings_options(parser, power.PowerSettings)
    parser.add_argument("--profile", default=None, help="smoke, cpu or gpu (sizes left unset)")
    parser.add_argument("--out", default=None, help="default: results/power-<profile>")
    parser.add_argument("--reanalyse", action="store_true", help="the report from --out's p.npz")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    prof, start = get_profile(args.profile), time.perf_counter()
    settings = settings_from(args, power.PowerSettings)
    if not args.reanalyse:
        settings.resolve()  # a bad option or a missing selection fails before any training
    quiet_libraries(prof)
    out = Path(args.out or Path("results") / f"power-{prof.name}")
    result = power.run(settings, prof, out, not args.no_progress, args.reanalyse)
    print(f"{power.summary_lines(result)}\nwrote {out} in {time.perf_counter() - start:.0f} s")
    return 0


def _arena(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from course_lib.arena import run as arena
    from course_lib.arena.preference import MODES
    from course_lib.arena.train import ARENA_ALGORITHMS
    from course_lib.config import get_profile

    parser = argparse.ArgumentParser(
        prog=f"{PROG} arena", description=arena.__doc__.split("\n\n")[0]
    )
    parser.add_argument("--profile", default=None, help="smoke, cpu or gpu")
    parser.add_argument("--out", default=None, help="default: results/arena-<profile>")
    parser.add_argument("--seeds", type=int, nargs="+", default=None)
    parser.add_argument("--modes", nargs="+", default=list(MODES), choices=list(MODES))
    parser.add_argument(
        "--algorithms", nargs="+", default=list(ARENA_ALGORITHMS), choices=list(ARENA_ALGORITHMS)
    )
    parser.add_argument("--steps", type=int, default=None, help="default: the profile's")
    parser.add_argument("--tau", type=float, default=None, help="default: the profile's")
    args = parser.parse_args(argv)
    profile = get_profile(args.profile).name
    out = Path(args.out or Path("results") / f"arena-{profile}")
    overrides = {k: v for k, v in (("steps", args.steps), ("tau", args.tau)) if v is not None}
    summary = arena.run_arena(profile, out, args.seeds, args.modes, args.algorithms, **overrides)
    print(f"wrote {out} in {summary['seconds']:.0f} s")
    return 0


def _grade(argv: list[str]) -> int:
    import argparse
    from pathlib import Path

    from course_lib import grading, validation

    parser = argparse.ArgumentParser(
        prog=f"{PROG} grade", description=grading.__doc__.split("\n\n")[0]
    )
    parser.add_argument("notebooks", nargs="+", help="submitted notebooks, NN_name.ipynb")
    parser.add_argument("--out", required=True, help="where grades.csv and grades.json go")
    parser.add_argument("--cell-timeout", type=int, default=120, help="seconds per cell")
    parser.add_argument("--timeout", type=int, default=900, help="seconds per notebook")
    args = parser.parse_args(argv)
    validation.integer("cell_timeout", args.cell_timeout)
    validation.integer("timeout", args.timeout)
    summary = grading.grade(args.notebooks, Path(args.out), args.cell_timeout, args.timeout)
    for nb in summary["notebooks"]:
        notes = f"; {'; '.join(nb['errors'])}" if nb["errors"] else ""
        print(f"{nb['notebook']}: {nb['points']}/{nb['max_points']} in {nb['seconds']} s{notes}")
    print(f"total {summary['points']}/{summary['max_points']}; wrote {args.out}")
    return 0


def _edition(argv: list[str]) -> int:
    import argparse

    from course_lib import editions, paths

    parser = argparse.ArgumentParser(
        prog=f"{PROG} edition", description=editions.__doc__.split("\n\n")[0]
    )
    parser.add_argument("edition", choices=("student", "instructor"))
    parser.add_argument("out", help="a new or empty folder, or one this edition wrote before")
    parser.add_argument("--src", default=str(paths.repo_root() / "notebooks"))
    args = parser.parse_args(argv)
    make = editions.student_edition if args.edition == "student" else editions.instructor_edition
    written = make(args.src, args.out)
    print(f"{args.edition} edition: {len(written)} files in {args.out}")
    return 0


COMMANDS = {
    "check-env": (_check_env, "the [OK]/[FAIL] table of the environment"),
    "reproduce": (_reproduce, "the summarisation comparison (`reproduce -h`; `--track real`)"),
    "train": (_train, "one online run, resumable (`train -h`)"),
    "evaluate": (_evaluate, "judge trained real-track adapters against pi_ref (`evaluate -h`)"),
    "power": (_power, "seeds and prompts a comparison needs: variance components (`power -h`)"),
    "arena": (_arena, "the exact arena: training measured against exact destinations"),
    "edition": (_edition, "the student or instructor edition of the notebooks (`edition -h`)"),
    "grade": (_grade, "run submitted notebooks and grade their exercises (`grade -h`)"),
}


def _dispatch(argv: list[str]) -> int:
    if not argv or argv[0] in ("-h", "--help") or argv[0] not in COMMANDS:
        lines = [f"usage: {PROG} {{{','.join(COMMANDS)}}} [options] [--debug]", ""]
        lines += [f"  {name:10s} {help_}" for name, (_, help_) in COMMANDS.items()]
        if argv and argv[0] not in ("-h", "--help"):
            raise ValueError(f"unknown command {argv[0]!r}: choose one of {', '.join(COMMANDS)}")
        print("\n".join(lines), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else USAGE_ERROR
    command, _ = COMMANDS[argv[0]]
    return command(argv[1:])


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m course_lib``: one subcommand; a user's mistake exits 2 with one line."""
    return run(_dispatch, argv, PROG)
