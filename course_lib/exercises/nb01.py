"""Notebook 01 (preferences): checkers, hints and reference solutions.

Call ``check_<name>(your_function)`` to compare your function with the reference on a few cases;
``hint(name)`` prints a hint and ``solution(name)`` prints the reference code.
"""

from __future__ import annotations

import inspect

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import dice_preference, random_preference, three_rater_types


# ---- reference solutions ---------------------------------------------------------------------
def win_probability(P, pi, pi_prime):
    """P(pi > pi') = sum_{y, y'} pi(y) pi'(y') P(y > y')."""
    return float(np.asarray(pi) @ np.asarray(P) @ np.asarray(pi_prime))


def dice_matrix(dice):
    """P[i, j] = Pr(die i > die j) + Pr(tie)/2 for fair dice given as lists of faces."""
    n = len(dice)
    P = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            a, b = np.asarray(dice[i])[:, None], np.asarray(dice[j])[None, :]
            P[i, j] = np.mean(a > b) + 0.5 * np.mean(a == b)
    return P


def bradley_terry_matrix(scores):
    """P[i, j] = sigmoid(s_i - s_j) = 1 / (1 + exp(-(s_i - s_j)))."""
    s = np.asarray(scores, dtype=float)
    return 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))


REFERENCES = {
    "win_probability": win_probability,
    "dice_matrix": dice_matrix,
    "bradley_terry_matrix": bradley_terry_matrix,
}
HINTS = {
    "win_probability": "a double sum over both responses: pi @ P @ pi_prime.",
    "dice_matrix": "compare every face of die i with every face of die j (a 6x6 grid), count "
    "wins as 1 and ties as 1/2, and average.",
    "bradley_terry_matrix": "use broadcasting: s[:, None] - s[None, :] is the matrix of "
    "differences s_i - s_j.",
}


# ---- checkers --------------------------------------------------------------------------------
def check_win_probability(fn) -> CheckResult:
    rng = np.random.default_rng(0)
    cases = []
    for P in (dice_preference(), three_rater_types(0.05), random_preference(5, seed=3)):
        n = P.shape[0]
        cases.append(((P, rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))), {}))
        cases.append(((P, np.eye(n)[0], np.eye(n)[-1]), {}))
    return check_function(
        "win_probability", fn, win_probability, cases, atol=1e-10, hint=HINTS["win_probability"]
    )


def check_dice_matrix(fn) -> CheckResult:
    cases = [
        (([(2, 2, 4, 4, 9, 9), (1, 1, 6, 6, 8, 8), (3, 3, 5, 5, 7, 7)],), {}),
        (([(1, 2, 3, 4, 5, 6), (3, 3, 3, 3, 3, 3)],), {}),
        (([(0, 0, 4, 4, 4, 4), (3, 3, 3, 3, 3, 3), (2, 2, 2, 2, 6, 6), (1, 1, 1, 5, 5, 5)],), {}),
    ]
    return check_function(
        "dice_matrix", fn, dice_matrix, cases, atol=1e-12, hint=HINTS["dice_matrix"]
    )


def check_bradley_terry_matrix(fn) -> CheckResult:
    cases = [
        ((np.array([0.0, np.log(9), np.log(2)]),), {}),
        ((np.array([1.5, -0.5, 0.0, 2.0]),), {}),
        ((np.zeros(3),), {}),
    ]
    return check_function(
        "bradley_terry_matrix",
        fn,
        bradley_terry_matrix,
        cases,
        atol=1e-12,
        hint=HINTS["bradley_terry_matrix"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
