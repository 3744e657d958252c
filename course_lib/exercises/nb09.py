"""Notebook 09 (the summarisation task and its preference model): reference solutions, cases,
hints and answers of its exercises.

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np

from course_lib.exercises import Exercise, ExerciseSet
from course_lib.preference import calibration


# ---- reference solutions ---------------------------------------------------------------------
def ece(p_model, outcome, n_bins=10):
    """Expected calibration error: sum over equal-width bins of (share of the pairs in the bin) x
    |mean outcome - mean predicted probability| in the bin; empty bins are skipped."""
    p, o = np.asarray(p_model, float), np.asarray(outcome, float)
    which = np.clip((p * n_bins).astype(int), 0, n_bins - 1)  # p = 1 goes in the last bin
    total = 0.0
    for b in range(n_bins):
        inside = which == b
        if inside.any():
            total += inside.mean() * abs(o[inside].mean() - p[inside].mean())
    return total


def disagreement(p_model, p_oracle):
    """The first test pair on which the model and the oracle prefer different sides."""
    p_model, p_oracle = np.asarray(p_model), np.asarray(p_oracle)
    differ = ((p_model > 0.5) != (p_oracle > 0.5)) & (p_oracle != 0.5)
    return int(np.flatnonzero(differ)[0])


# ---- cases and checks ------------------------------------------------------------------------
def _library_ece(p_model, outcome, n_bins=10) -> float:
    return calibration(p_model, outcome, n_bins).ece


def _ece_cases():
    rng = np.random.default_rng(8)
    cases = []
    for n in (10, 200, 1000):
        p = rng.uniform(size=n)
        cases.append(((p, (rng.uniform(size=n) < p**1.5).astype(float)), {}))
    cases.append(((np.array([0.05, 0.15, 0.95, 0.95]), np.array([0.0, 1.0, 1.0, 0.0])), {}))
    cases.append(((np.array([0.0, 0.1, 0.5, 1.0, 1.0]), np.array([0.0, 0.0, 1.0, 1.0, 0.0])), {}))
    cases.append(((np.array([0.31, 0.42, 0.47]), np.array([1.0, 0.0, 1.0])), {"n_bins": 4}))
    return cases


def _verify_disagreement(index, p_model, p_oracle) -> list[str]:
    p_model, p_oracle = np.asarray(p_model), np.asarray(p_oracle)
    if not (isinstance(index, int | np.integer) and 0 <= index < len(p_model)):
        return [f"index must be an integer in [0, {len(p_model)}), got {index!r}"]
    m, o = float(p_model[index]), float(p_oracle[index])
    if o == 0.5:
        return [f"pair {index}: the oracle is indifferent (P* = 0.5): pick a pair it decides"]
    if (m > 0.5) == (o > 0.5):
        return [f"pair {index}: the model and the oracle prefer the same side"]
    return []


EXERCISES = ExerciseSet(
    "nb09",
    [
        Exercise(
            "ece",
            1,
            ece,
            cases=_ece_cases,
            expected=_library_ece,
            title="expected calibration error",
            atol=1e-9,
            hints=(
                "group the pairs by the model's probability into equal-width bins; in each bin "
                "compare the mean prediction with the mean outcome, and average the gaps, "
                "weighting each bin by how many pairs it holds.",
                "bin b of n_bins holds b/n_bins <= p < (b+1)/n_bins (p = 1 in the last bin); "
                "ECE = sum over non-empty bins of (n_b / N) |mean outcome_b - mean p_b|.",
            ),
        ),
        Exercise(
            "disagreement",
            2,
            disagreement,
            title="a pair where the model and the oracle disagree",
            verify=_verify_disagreement,
            answers=("index",),
            hints=(
                "the model prefers y when its probability is above 1/2, and so does the oracle; "
                "look for a pair where the two are on different sides of 1/2.",
                "np.flatnonzero((p_model > 0.5) != (p_oracle > 0.5)) lists them (leave out "
                "pairs where the oracle is exactly 1/2).",
            ),
            answer=(
                "It depends on the pair. Read the oracle's aspects (coverage, faithfulness, "
                "length, form) for both summaries: the decisive one is usually an aspect that "
                "the training pairs rarely isolate, e.g. a faithfulness error (a wrong name or "
                "number) in an otherwise fluent summary, or a length difference the oracle "
                "penalises. The model can learn only what the sampled labels of its 1000 "
                "training pairs show it, and labels drawn from P* near 1/2 say little; such "
                "pairs are where a policy can exploit the model (section 5)."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_ece = EXERCISES.checker("ece")
check_disagreement = EXERCISES.checker("disagreement")
