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
# options built from settings dataclasses (the commands themselves: course_lib.commands)
# ---------------------------------------------------------------------------------------------

PROG = "python -m course_lib"


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
            kw["type"] = comma_list
            kw["help"] += f" (default: {','.join(f.default)})"
        else:
            args = [a for a in typing.get_args(kind) if a is not type(None)]
            kw["type"] = args[0] if args else kind
        parser.add_argument(flag, **kw)


def comma_list(text: str) -> tuple[str, ...]:
    return tuple(part.strip() for part in text.split(",") if part.strip())


def settings_from(args, settings_cls):
    import dataclasses

    return settings_cls(**{f.name: getattr(args, f.name) for f in dataclasses.fields(settings_cls)})
