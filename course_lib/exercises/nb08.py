"""Exercises of notebook 08: the summarisation task and its preference model."""

from __future__ import annotations

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.preference import calibration


def reference_ece(p_model, outcome, n_bins: int = 10) -> float:
    return calibration(p_model, outcome, n_bins).ece


def check_ece(learner) -> CheckResult:
    """Exercise 1: expected calibration error, sum_b n_b/N |observed_b - mean predicted_b|."""
    rng = np.random.default_rng(8)
    cases = []
    for n in (10, 200, 1000):
        p = rng.uniform(size=n)
        cases.append(((p, (rng.uniform(size=n) < p**1.5).astype(float)), {}))
    cases.append(((np.array([0.05, 0.15, 0.95, 0.95]), np.array([0.0, 1.0, 1.0, 0.0])), {}))
    return check_function(
        "expected calibration error",
        learner,
        reference_ece,
        cases,
        atol=1e-9,
        hint="use 10 equal-width bins on [0, 1] (a probability of exactly 1 goes in the last "
        "bin), skip empty bins, and weight each bin by its share of the pairs",
    )


def check_disagreement(index: int, p_model, p_oracle) -> CheckResult:
    """Exercise 2: a pair on which the learned model and the oracle prefer different sides."""
    p_model, p_oracle = np.asarray(p_model), np.asarray(p_oracle)
    name = "a pair where the model and the oracle disagree"
    if not (isinstance(index, int | np.integer) and 0 <= index < len(p_model)):
        return CheckResult(
            name, False, [f"index must be an integer in [0, {len(p_model)}), got {index!r}"]
        )
    m, o = float(p_model[index]), float(p_oracle[index])
    if o == 0.5:
        return CheckResult(name, False, [f"pair {index}: the oracle is indifferent (P* = 0.5)"])
    if (m > 0.5) == (o > 0.5):
        return CheckResult(
            name,
            False,
            [
                f"pair {index}: both prefer the same side (model {m:.3f}, oracle {o:.3f})",
                "hint: compare np.sign(p_model - 0.5) with np.sign(p_oracle - 0.5)",
            ],
        )
    return CheckResult(
        name,
        True,
        [
            f"pair {index}: the model says {m:.3f}, the oracle {o:.3f}. Now explain it: which "
            "aspect (coverage, faithfulness, length, form) decides the oracle, and could the model "
            "have learned it from the training pairs?"
        ],
    )


def solution_ece(p_model, outcome, n_bins: int = 10) -> float:
    p, o = np.asarray(p_model, float), np.asarray(outcome, float)
    which = np.clip((p * n_bins).astype(int), 0, n_bins - 1)
    total = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(o[inside].mean() - p[inside].mean())
    return total
