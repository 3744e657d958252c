"""How every course command reports a mistake: one line naming the value and what is allowed.

A learner who mistypes an option should read a sentence, not a Python traceback. Every entry
point (``python -m course_lib ...``, ``python -m course_lib.preference ...``, ...) runs through
:func:`run`, which turns the errors a user can cause into one message on stderr and exit status 2;
``--debug`` anywhere on the command line (or ``COURSE_DEBUG=1``) shows the traceback instead.
argparse's own errors (an unknown option, a bad choice) already exit 2 with a usage line.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence

#: Exit status of a command stopped by bad input (argparse uses the same).
USAGE_ERROR = 2
#: Exit status of a run that started and then failed (e.g. the loss became NaN).
RUN_FAILED = 1


def _user_errors() -> tuple[type[BaseException], ...]:
    """Exception types that mean "the input is wrong", not "the course has a bug".

    ValueError covers bad values (and OutputDirError, json's decode errors); OSError covers
    missing files and folders, the embedded model not installed, a hub id that cannot be reached.
    """
    errors: list[type[BaseException]] = [ValueError, OSError]
    try:  # bitsandbytes asked for where it cannot run: a property of the machine, not a bug
        from course_lib.llm import FourBitUnavailable

        errors.append(FourBitUnavailable)
    except Exception:  # pragma: no cover - models needs torch; the course always has it
        pass
    return tuple(errors)


def _run_failures() -> tuple[type[BaseException], ...]:
    try:
        from course_lib.online import NonFiniteLoss

        return (NonFiniteLoss,)
    except Exception:  # pragma: no cover
        return ()


def split_debug(argv: Sequence[str]) -> tuple[list[str], bool]:
    """``argv`` without ``--debug``, and whether it was there (or ``COURSE_DEBUG`` is set)."""
    argv = list(argv)
    debug = "--debug" in argv or os.environ.get("COURSE_DEBUG", "").lower() in ("1", "true", "yes")
    return [a for a in argv if a != "--debug"], debug


def error_message(exc: BaseException) -> str:
    """The one line shown for ``exc``: its message, without the type name of a plain error."""
    text = str(exc).strip() or type(exc).__name__
    if isinstance(exc, FileNotFoundError) and exc.filename and str(exc.filename) not in text:
        text = f"{text}: {exc.filename}"
    if isinstance(exc, KeyError):
        text = f"missing key {text}"
    return text


def run(command: Callable[[list[str]], int], argv: Sequence[str] | None, prog: str) -> int:
    """Call ``command(argv)`` and turn a user's mistake into one line on stderr and exit 2.

    ``prog`` names the command in the message (``error: python -m course_lib train: ...``).
    """
    argv = sys.argv[1:] if argv is None else argv
    argv, debug = split_debug(argv)
    if debug:
        return command(argv)
    try:
        return command(argv)
    except _run_failures() as exc:
        print(f"{prog}: {error_message(exc)}", file=sys.stderr)
        return RUN_FAILED
    except _user_errors() as exc:
        print(
            f"{prog}: error: {error_message(exc)}\n(run again with --debug for the traceback)",
            file=sys.stderr,
        )
        return USAGE_ERROR
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130


# ---------------------------------------------------------------------------------------------
# python -m course_lib {check-env, reproduce, train}
# ---------------------------------------------------------------------------------------------

PROG = "python -m course_lib"


def _check_env(argv: list[str]) -> int:
    import argparse

    parser = argparse.ArgumentParser(prog=f"{PROG} check-env", description="[OK]/[FAIL] table")
    parser.add_argument(
        "--no-load", action="store_true", help="only look for the embedded model, do not load it"
    )
    args = parser.parse_args(argv)
    from course_lib.envcheck import main as check_env

    return check_env(load_model=not args.no_load)


def add_settings_options(parser, settings_cls, skip: Sequence[str] = ()) -> None:
    """One option per field of a settings dataclass: ``--field-name``, its type, its default and
    the help kept in the field (:func:`course_lib.config.opt`), so the options never restate the
    dataclass. A bool that defaults to True gets a ``--no-...`` switch; a tuple a comma list."""
    import dataclasses
    import typing

    hints = typing.get_type_hints(settings_cls)
    for f in dataclasses.fields(settings_cls):
        if f.name in skip:
            continue
        flag = f.metadata.get("flag") or "--" + f.name.replace("_", "-")
        kw = {"dest": f.name, "help": f.metadata.get("help", ""), "default": f.default}
        kind = hints[f.name]
        if kind is bool:
            kw["action"] = "store_false" if f.default else "store_true"
        elif typing.get_origin(kind) is tuple:
            kw["type"] = _comma_list
            kw["help"] += f" (default: {','.join(f.default)})"
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kw["type"] = args[0] if args else kind
        parser.add_argument(flag, **kw)


def _comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def settings_from(args, settings_cls):
    import dataclasses

    return settings_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings_cls)})


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
    parser.add_argument("--modes", type=_comma_list, default=tiny.MODES, help="bt,nt")
    parser.add_argument(
        "--methods", type=_comma_list, default=tiny.METHODS, help=",".join(tiny.METHODS)
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
