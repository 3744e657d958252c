"""The notebooks' exercises: one API for all of them.

Each notebook ``NN`` has a module ``course_lib.exercises.nbNN`` that holds only data: the
reference solutions, the cases a learner's answer is checked on, the hints (in tiers) and the
written answers to the exercises' questions, gathered in an :class:`ExerciseSet`. The notebook
calls::

    nbNN.check_<name>(your_function)  # runs it on the cases against the reference
    nbNN.hint("name")                 # tier 1: the idea; again (or hint("name", 2)): the formula
    nbNN.solution("name", reveal=True)  # the reference solution, only when asked for explicitly
    nbNN.case("name", i)              # the inputs (args, kwargs) of case i, to reproduce it

A check says ``[OK]``, ``[FAIL]`` with the *inputs* of the first case that differs (never the
expected output, which would give the answer away), or ``[TODO] ... not attempted yet`` when the
learner's function is still the stub that raises ``NotImplementedError`` (or an answer is still
``None``). A check never raises: an error in the learner's code is reported.

Two kinds of exercise:

* a *function* exercise (``cases`` given): the learner writes a function; the check calls it and
  the reference (``expected``, by default ``solution``) on every case and compares the outputs,
  then checks the exercise's ``properties`` on the learner's function;
* a *value* exercise (``verify`` given): the learner computes one or more values (named by
  ``answers``); ``verify(*answers, *data)`` returns the list of what is wrong with them.
"""

from __future__ import annotations

import copy
import inspect
import math
import re
import textwrap
import warnings
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field

import numpy as np

#: What a check says about a stub or an answer that is still ``None``.
NOT_ATTEMPTED = "not attempted yet"


# ---------------------------------------------------------------------------------------------
# results and cases
# ---------------------------------------------------------------------------------------------
@dataclass
class CheckResult:
    """What a checker returns: truthy only when the answer passed."""

    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)
    attempted: bool = True

    @property
    def status(self) -> str:
        """``"ok"``, ``"fail"`` or ``"not attempted"``."""
        if not self.attempted:
            return "not attempted"
        return "ok" if self.passed else "fail"

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        if not self.attempted:
            head = f"[TODO] {self.name}: {NOT_ATTEMPTED}"
        else:
            head = f"[OK] {self.name}" if self.passed else f"[FAIL] {self.name}"
        return "\n".join([head, *("  " + m for m in self.messages)])

    def _repr_pretty_(self, printer, cycle):  # IPython shows the report, not the dataclass
        printer.text(str(self))


@dataclass(frozen=True)
class Case:
    """One call of a function exercise: ``fn(*args, **kwargs)``; ``note`` says why it is there
    (shown when it fails, e.g. "tau = 0.001: exp(P @ opponent / tau) overflows")."""

    args: tuple
    kwargs: dict = field(default_factory=dict)
    note: str = ""


def _as_case(case) -> Case:
    if isinstance(case, Case):
        return case
    if isinstance(case, tuple) and len(case) == 2 and isinstance(case[1], dict):
        return Case(tuple(case[0]), dict(case[1]))
    return Case(tuple(case))


def _copy(value):
    """A deep copy, so that neither function can change the other's inputs (the value itself
    when it cannot be copied)."""
    try:
        return copy.deepcopy(value)
    except Exception:
        return value


def _record(module: str, name: str, result: CheckResult) -> None:
    """Hand the result to the grader's log (a no-op unless ``python -m course_lib grade`` runs
    the notebook); a problem with the log never reaches the learner's notebook."""
    try:
        from course_lib.grading import record
    except ImportError:
        return
    try:
        record(module, name, result)
    except OSError as exc:
        warnings.warn(f"could not log the check of {module}.{name}: {exc}", stacklevel=3)


def _unanswered(value) -> bool:
    return value is None or value is Ellipsis


# ---------------------------------------------------------------------------------------------
# comparing outputs and showing inputs
# ---------------------------------------------------------------------------------------------
def _as_array(value) -> np.ndarray:
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().double().numpy()
    except ImportError:  # pragma: no cover - torch is a dependency of the course
        pass
    return np.asarray(value, dtype=float)


def compare_outputs(got, expected, atol: float, rtol: float) -> str | None:
    """What is wrong with ``got`` against ``expected`` (without saying what ``expected`` is), or
    ``None`` when they agree to ``atol + rtol * |expected|`` elementwise."""
    want = _as_array(expected)
    if got is None:
        return "your function returned None (is a `return` missing?)"
    try:
        have = _as_array(got)
    except (TypeError, ValueError):
        return f"your function returned a {type(got).__name__}, not a number or an array"
    if have.shape != want.shape:
        return f"your output has shape {have.shape}; the exercise asks for shape {want.shape}"
    bad = ~np.isfinite(have) & np.isfinite(want)
    if bad.any():
        return (
            f"your output has nan or inf at {int(bad.sum())} of {bad.size} places: "
            f"{_format_value(got)}"
        )
    close = np.isclose(have, want, atol=atol, rtol=rtol, equal_nan=True)
    if not close.all():
        where = "" if close.size == 1 else f" at {int((~close).sum())} of {close.size} places"
        return (
            f"your output differs from the reference{where} (tolerance {atol:g} + {rtol:g} x "
            f"|reference|); yours: {_format_value(got)}"
        )
    return None


def _format_value(value, limit: int = 400) -> str:
    """A short, reproducible rendering of one input or output."""
    try:
        import torch

        if isinstance(value, torch.Tensor):
            body = _format_value(value.detach().cpu().numpy(), limit)
            if not body.startswith("np.array("):
                return f"a tensor of shape {tuple(value.shape)}, {value.dtype}"
            return f"torch.tensor({body[len('np.array(') : -1]}, dtype={value.dtype})"
    except ImportError:  # pragma: no cover
        pass
    if isinstance(value, np.ndarray):
        if value.size > 60:
            return f"an array of shape {value.shape}, {value.dtype}"
        body = np.array2string(
            value, precision=6, separator=", ", floatmode="maxprec", max_line_width=10**6
        )
        body = re.sub(r"\s+", " ", body)
        return f"np.array({body})"
    if isinstance(value, float | np.floating):
        return repr(float(value))
    if isinstance(value, list | tuple) and any(isinstance(v, np.ndarray) for v in value):
        inner = ", ".join(_format_value(v, limit) for v in value)
        return f"[{inner}]" if isinstance(value, list) else f"({inner})"
    text = repr(value)
    return text if len(text) <= limit else text[:limit] + " ..."


def _describe_inputs(fn: Callable, case: Case) -> list[str]:
    try:
        bound = inspect.signature(fn).bind(*case.args, **case.kwargs)
        items = list(bound.arguments.items())
    except (TypeError, ValueError):
        items = [(f"arg {k}", v) for k, v in enumerate(case.args)] + list(case.kwargs.items())
    return [f"    {name} = {_format_value(value)}" for name, value in items]


# ---------------------------------------------------------------------------------------------
# exercises
# ---------------------------------------------------------------------------------------------
@dataclass
class Exercise:
    """One checked part of a notebook's exercise.

    ``name``: what the learner writes (``check_<name>`` checks it); ``number``: the exercise of
    the notebook it belongs to; ``solution``: the reference solution, shown only by
    ``solution(name, reveal=True)``; ``hints``: tiers, the idea first, then the formula (never the
    code); ``answer``: the written answers to the exercise's questions (revealed with the
    solution and printed in the instructor edition's answer key).

    A function exercise gives ``cases`` (a function returning a list of :class:`Case` or
    ``(args, kwargs)`` pairs), optionally ``expected`` (what the outputs are compared with, when
    it is not ``solution``, e.g. the library's function), ``atol``/``rtol`` and ``properties``:
    ``(description, test)`` pairs, ``test(fn)`` returning a problem or ``None``, run once the
    cases pass; ``adapt`` wraps the learner's function and the reference before the comparison
    (e.g. to compare only what the exercise specifies). A value exercise gives ``verify`` and
    ``answers`` (the names of the values).
    """

    name: str
    number: int
    solution: Callable
    hints: tuple[str, ...]
    title: str = ""
    cases: Callable[[], Iterable] | None = None
    expected: Callable | None = None
    atol: float = 1e-8
    rtol: float = 1e-8
    properties: tuple[tuple[str, Callable], ...] = ()
    adapt: Callable[[Callable], Callable] | None = None
    verify: Callable[..., list[str]] | None = None
    answers: tuple[str, ...] = ()
    answer: str = ""

    def __post_init__(self):
        if (self.cases is None) == (self.verify is None):
            raise ValueError(f"exercise {self.name!r}: give exactly one of cases= and verify=")
        if self.verify is not None and not self.answers:
            raise ValueError(f"exercise {self.name!r}: a value exercise names its answers=")
        if len(self.hints) < 2:
            raise ValueError(f"exercise {self.name!r}: give at least two hint tiers")
        self.title = self.title or self.name

    @property
    def kind(self) -> str:
        return "function" if self.cases is not None else "value"

    def all_cases(self) -> list[Case]:
        return [_as_case(c) for c in self.cases()] if self.cases is not None else []


class ExerciseSet:
    """The exercises of one notebook, and the notebook's ``check``/``hint``/``solution``/``case``.

    ``module`` is the name the notebook imports (``"nb01"``); it appears in the messages.
    """

    def __init__(self, module: str, exercises: Iterable[Exercise]):
        self.module = module
        self._exercises: dict[str, Exercise] = {}
        for ex in exercises:
            if ex.name in self._exercises:
                raise ValueError(f"{module}: two exercises are named {ex.name!r}")
            self._exercises[ex.name] = ex
        self._hints_shown: dict[str, int] = {}

    # -- lookup ------------------------------------------------------------------------------
    @property
    def names(self) -> list[str]:
        return list(self._exercises)

    def __iter__(self):
        return iter(self._exercises.values())

    def __getitem__(self, name: str) -> Exercise:
        try:
            return self._exercises[name]
        except KeyError:
            raise ValueError(
                f"{self.module} has no exercise named {name!r}; its exercises are "
                f"{', '.join(map(repr, self._exercises))}"
            ) from None

    # -- checking ----------------------------------------------------------------------------
    def check(self, name: str, *answers, extra_cases: Sequence = ()) -> CheckResult:
        """Check the learner's function (function exercise) or values (value exercise). The
        result also goes to the grader's log when one is running (:mod:`course_lib.grading`)."""
        ex = self[name]
        if ex.kind == "function":
            if len(answers) != 1:
                raise TypeError(f"{self.module}.check_{name} takes your function")
            result = self._check_function(ex, answers[0], [_as_case(c) for c in extra_cases])
        else:
            result = self._check_values(ex, answers)
        _record(self.module, name, result)
        return result

    def checker(self, name: str) -> Callable:
        """The notebook's ``check_<name>``."""
        ex = self[name]
        if ex.kind == "function":

            def check(fn, extra_cases: Sequence = ()) -> CheckResult:
                return self.check(name, fn, extra_cases=extra_cases)

            doc = f"Run your ``{name}`` on the cases of exercise {ex.number} against the reference."
        else:

            def check(*values) -> CheckResult:
                return self.check(name, *values)

            doc = f"Check your {', '.join(ex.answers)} (exercise {ex.number})."
        check.__name__ = check.__qualname__ = f"check_{name}"
        check.exercise = name
        check.__doc__ = doc
        return check

    def _not_attempted(self, ex: Exercise, message: str) -> CheckResult:
        return CheckResult(ex.title, False, [message], attempted=False)

    def _fail(self, ex: Exercise, messages: list[str]) -> CheckResult:
        more = f"{self.module}.hint({ex.name!r}) gives a hint"
        return CheckResult(ex.title, False, [*messages, f"stuck? {more}"])

    def _check_function(self, ex: Exercise, fn, extra: list[Case]) -> CheckResult:
        if _unanswered(fn):
            return self._not_attempted(ex, f"`{ex.name}` is not defined yet")
        if not callable(fn):
            return self._fail(ex, [f"expected your function, got a {type(fn).__name__}"])
        expected_fn = ex.expected or ex.solution
        label = getattr(fn, "__name__", ex.name)
        if label == "<lambda>":
            label = ex.name
        if ex.adapt is not None:
            fn, expected_fn = ex.adapt(fn), ex.adapt(expected_fn)
        builtin = ex.all_cases()
        cases = builtin + extra
        for i, case in enumerate(cases):
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                expected = expected_fn(*_copy(case.args), **_copy(case.kwargs))
                try:
                    got = fn(*_copy(case.args), **_copy(case.kwargs))
                except NotImplementedError:
                    where = "" if i == 0 else f" on case {i} of {len(cases)} (a part of it)"
                    return self._not_attempted(
                        ex,
                        f"`{label}` still raises NotImplementedError{where}: write your code in "
                        "place of the stub, then run this cell again",
                    )
                except Exception as exc:  # the learner's code: report, never crash the notebook
                    problem = f"your function raised {type(exc).__name__}: {exc}"
                else:
                    problem = compare_outputs(got, expected, ex.atol, ex.rtol)
            if problem is not None:
                return self._fail(
                    ex,
                    self._case_report(ex, label, i, len(cases), case, problem, i >= len(builtin)),
                )
        notes = [f"all {len(cases)} cases match the reference"]
        for description, test in ex.properties:
            with warnings.catch_warnings(), np.errstate(all="ignore"):
                warnings.simplefilter("ignore")
                try:
                    problem = test(fn)
                except Exception as exc:
                    problem = f"your function raised {type(exc).__name__}: {exc}"
            if problem is not None:
                return self._fail(ex, [f"the cases match, but not this: {description}", problem])
            notes.append(description)
        return CheckResult(ex.title, True, ["; ".join(notes)])

    def _case_report(self, ex, label, i, n, case, problem, extra) -> list[str]:
        where = f"case {i} (added by the notebook, from its data)" if extra else f"case {i} of {n}"
        lines = [f"{where}: {problem}", "  inputs:"]
        lines += _describe_inputs(ex.solution, case)
        if case.note:
            lines.append(f"  (this case: {case.note})")
        if not extra:
            lines.append(
                f"  reproduce: args, kwargs = {self.module}.case({ex.name!r}, {i}); "
                f"{label}(*args, **kwargs)"
            )
        return lines

    def _check_values(self, ex: Exercise, values: tuple) -> CheckResult:
        answers, data = values[: len(ex.answers)], values[len(ex.answers) :]
        if len(answers) < len(ex.answers):
            raise TypeError(
                f"{self.module}.check_{ex.name} takes {', '.join(ex.answers)} (got {len(values)})"
            )
        missing = [n for n, v in zip(ex.answers, answers, strict=True) if _unanswered(v)]
        if missing:
            return self._not_attempted(
                ex, f"set {', '.join(f'`{m}`' for m in missing)} (still None)"
            )
        with warnings.catch_warnings(), np.errstate(all="ignore"):
            warnings.simplefilter("ignore")
            try:
                problems = ex.verify(*answers, *data)
            except NotImplementedError:
                return self._not_attempted(
                    ex, "your answer still uses a stub that raises NotImplementedError"
                )
            except Exception as exc:  # a malformed answer: report it
                problems = [f"could not check your answer: {type(exc).__name__}: {exc}"]
        if problems:
            return self._fail(ex, list(problems))
        return CheckResult(ex.title, True, [])

    # -- inputs of a case --------------------------------------------------------------------
    def case(self, name: str, index: int) -> tuple[tuple, dict]:
        """``(args, kwargs)`` of case ``index`` of a function exercise (copies: change freely)."""
        ex = self[name]
        if ex.kind != "function":
            raise ValueError(f"{name!r} is checked on your values, not on cases")
        cases = ex.all_cases()
        if not 0 <= index < len(cases):
            raise IndexError(f"{name!r} has cases 0..{len(cases) - 1}, not {index}")
        return copy.deepcopy(cases[index].args), copy.deepcopy(cases[index].kwargs)

    # -- hints and the solution --------------------------------------------------------------
    def hint(self, name: str, tier: int | None = None) -> None:
        """Print hint ``tier`` (1: the idea, 2: the formula, ...); without ``tier`` the next."""
        ex = self[name]
        n = len(ex.hints)
        if tier is None:
            tier = min(self._hints_shown.get(name, 0) + 1, n)
        elif not (isinstance(tier, int) and 1 <= tier <= n):
            raise ValueError(f"{name!r} has hint tiers 1..{n}, not {tier!r}")
        self._hints_shown[name] = max(self._hints_shown.get(name, 0), tier)
        call = f"{self.module}.hint({name!r})"
        if tier < n:
            follow = (
                f"(for the next hint: {call} again, or {self.module}.hint({name!r}, {tier + 1}))"
            )
        else:
            follow = (
                "(that was the last hint; the reference solution: "
                f"{self.module}.solution({name!r}, reveal=True))"
            )
        text = textwrap.fill(
            f"hint {tier} of {n} for {name}: {ex.hints[tier - 1]}", width=96, subsequent_indent="  "
        )
        print(f"{text}\n{follow}")

    def solution(self, name: str, reveal: bool = False) -> None:
        """Print the reference solution, only with ``reveal=True``."""
        ex = self[name]
        if reveal is not True:
            print(
                f"The solution of {name!r} stays hidden until you ask for it. Try the hints first: "
                f"{self.module}.hint({name!r}) ({len(ex.hints)} tiers). To see it: "
                f"{self.module}.solution({name!r}, reveal=True)"
            )
            return
        print(solution_text(ex, self.module))


def solution_text(ex: Exercise, module: str) -> str:
    """The reference solution's source, and the written answers when the exercise has some."""
    source = textwrap.dedent(inspect.getsource(ex.solution)).rstrip()
    text = f"# {module}: the reference solution of {ex.name!r} (exercise {ex.number})\n{source}"
    if ex.answer:
        text += "\n\n# the questions of exercise {}:\n{}".format(
            ex.number, textwrap.indent(ex.answer.strip(), "# ", lambda line: True)
        )
    return text


# ---------------------------------------------------------------------------------------------
# helpers the notebook modules share
# ---------------------------------------------------------------------------------------------
def is_distribution(value, n: int, name: str) -> list[str]:
    """Problems with ``value`` as a probability vector of length ``n`` (empty when it is one)."""
    try:
        p = np.asarray(value, dtype=float)
    except (TypeError, ValueError):
        return [f"{name} must be a vector of {n} probabilities, got {value!r}"]
    if p.shape != (n,):
        return [f"{name} must have shape ({n},), got shape {p.shape}"]
    if (
        not np.all(np.isfinite(p))
        or (p < -1e-12).any()
        or not math.isclose(p.sum(), 1.0, abs_tol=1e-8)
    ):
        return [f"{name} = {_format_value(p)} is not a probability vector (>= 0, sums to 1)"]
    return []


def as_number(value, name: str) -> tuple[float | None, list[str]]:
    """``value`` as a finite float, or the problem with it."""
    try:
        x = float(np.asarray(_as_array(value)).reshape(()))
    except (TypeError, ValueError):
        return None, [f"{name} must be a number, got {value!r}"]
    if not math.isfinite(x):
        return None, [f"{name} must be a finite number, got {x}"]
    return x, []


__all__ = [
    "NOT_ATTEMPTED",
    "Case",
    "CheckResult",
    "Exercise",
    "ExerciseSet",
    "as_number",
    "compare_outputs",
    "is_distribution",
    "solution_text",
]
