"""Checkers for the notebooks' exercises.

Each notebook's exercises live in ``course_lib.exercises.nbNN``: a checker per exercise that runs
the learner's function on a few cases against the reference and says what differs, a hint, and
the reference solution (kept here, out of the notebook, so a learner sees it only by asking).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

import numpy as np


@dataclass
class CheckResult:
    name: str
    passed: bool
    messages: list[str] = field(default_factory=list)

    def __bool__(self) -> bool:
        return self.passed

    def __str__(self) -> str:
        head = f"[OK] {self.name}" if self.passed else f"[FAIL] {self.name}"
        return "\n".join([head, *("  " + m for m in self.messages)])

    def _repr_pretty_(self, printer, cycle):  # IPython shows the report, not the dataclass
        printer.text(str(self))


def _as_array(value):
    try:
        import torch

        if isinstance(value, torch.Tensor):
            return value.detach().cpu().numpy()
    except ImportError:
        pass
    return np.asarray(value, dtype=float)


def check_function(
    name: str,
    learner: Callable,
    reference: Callable,
    cases: Iterable[tuple[tuple, dict]],
    atol: float = 1e-6,
    rtol: float = 1e-6,
    hint: str = "",
) -> CheckResult:
    """Call ``learner`` and ``reference`` on every ``(args, kwargs)`` case and compare outputs.

    The report names the first case that differs, the expected and the obtained value, and the
    hint; an exception in the learner's code is reported, not raised.
    """
    messages = []
    passed = True
    for i, (args, kwargs) in enumerate(cases):
        expected = _as_array(reference(*args, **kwargs))
        try:
            got = _as_array(learner(*args, **kwargs))
        except Exception as exc:  # the learner's code: report, never crash the notebook
            messages.append(f"case {i}: your function raised {type(exc).__name__}: {exc}")
            passed = False
            break
        if got.shape != expected.shape:
            messages.append(f"case {i}: shape {got.shape}, expected {expected.shape}")
            passed = False
            break
        if not np.allclose(got, expected, atol=atol, rtol=rtol, equal_nan=False):
            worst = float(np.max(np.abs(got - expected)))
            messages.append(
                f"case {i}: largest difference {worst:.3g}\n    expected {np.round(expected, 6)}"
                f"\n    got      {np.round(got, 6)}"
            )
            passed = False
            break
    if passed:
        messages.append("all cases match the reference")
    elif hint:
        messages.append("hint: " + hint)
    return CheckResult(name, passed, messages)
