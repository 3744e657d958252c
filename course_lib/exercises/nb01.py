"""Notebook 01 (preferences): reference solutions, cases, hints and answers of its exercises.

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs
(the API is :class:`course_lib.exercises.ExerciseSet`).
"""

from __future__ import annotations

import itertools

import numpy as np

from course_lib.exercises import Exercise, ExerciseSet, is_distribution
from course_lib.tabular import (
    dice_preference,
    exploitability,
    random_preference,
    three_rater_types,
    von_neumann_winner,
)
from course_lib.tabular.preferences import NONTRANSITIVE_DICE

DICE = [list(faces) for faces in NONTRANSITIVE_DICE.values()]  # A, B, C


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


def fourth_die():
    """A die D with a majority cycle through all four dice (here A > B > D > C > A), and the
    equilibrium (von Neumann winner) of the four."""
    die = [0, 0, 6, 6, 8, 8]
    equilibrium = von_neumann_winner(dice_matrix([*DICE, die]))
    return die, equilibrium


def bradley_terry_matrix(scores):
    """P[i, j] = sigmoid(s_i - s_j) = 1 / (1 + exp(-(s_i - s_j)))."""
    s = np.asarray(scores, dtype=float)
    return 1.0 / (1.0 + np.exp(-(s[:, None] - s[None, :])))


def closest_scores():
    """Scores whose Bradley-Terry matrix is within 1/18 of the dice everywhere: equal scores."""
    return np.zeros(3)


# ---- cases and checks ------------------------------------------------------------------------
def _win_probability_cases():
    rng = np.random.default_rng(0)
    cases = []
    for P in (dice_preference(), three_rater_types(0.05), random_preference(5, seed=3)):
        n = P.shape[0]
        cases.append(((P, rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n))), {}))
        cases.append(((P, np.eye(n)[0], np.eye(n)[-1]), {}))
    # not symmetric in pi and pi': P(pi > pi') = 1 - P(pi' > pi)
    cases.append(((dice_preference(), np.array([0.7, 0.2, 0.1]), np.array([0.1, 0.1, 0.8])), {}))
    return cases


def _dice_cases():
    return [
        ((DICE,), {}),
        (([(1, 2, 3, 4, 5, 6), (3, 3, 3, 3, 3, 3)],), {}),
        (([(0, 0, 4, 4, 4, 4), (3, 3, 3, 3, 3, 3), (2, 2, 2, 2, 6, 6), (1, 1, 1, 5, 5, 5)],), {}),
    ]


def majority_cycle(P) -> tuple[int, ...] | None:
    """An order of all the responses in which each beats the next (P > 1/2) and the last beats
    the first, or ``None`` when the majority relation has no cycle through all of them."""
    n = P.shape[0]
    beats = P > 0.5
    for rest in itertools.permutations(range(1, n)):
        order = (0, *rest)
        if all(beats[order[k], order[(k + 1) % n]] for k in range(n)):
            return order
    return None


def _verify_fourth_die(die, equilibrium) -> list[str]:
    faces = np.asarray(die, dtype=float)
    if faces.ndim != 1 or faces.size == 0 or not np.all(np.isfinite(faces)):
        return [f"fourth_die must be a list of faces (numbers), got {die!r}"]
    P = dice_preference([*DICE, faces])
    problems = []
    if majority_cycle(P) is None:
        wins = [f"{'ABCD'[i]} > {'ABCD'[j]}" for i in range(4) for j in range(4) if P[i, j] > 0.5]
        problems.append(
            "with your die no cycle runs through all four dice; the majority relation is "
            + ", ".join(wins)
        )
    bad = is_distribution(equilibrium, 4, "equilibrium_4")
    if bad:
        problems += bad
    elif exploitability(P, np.asarray(equilibrium, dtype=float)) > 1e-6:
        problems.append(
            "equilibrium_4 is not an equilibrium of your four dice: some die beats it with "
            "probability above 1/2 (use von_neumann_winner on your 4 x 4 matrix)"
        )
    return problems


def _verify_closest_scores(scores) -> list[str]:
    s = np.asarray(scores, dtype=float)
    if s.shape != (3,) or not np.all(np.isfinite(s)):
        return [f"closest_scores must be three finite scores (A, B, C), got {scores!r}"]
    gap = np.abs(dice_preference() - bradley_terry_matrix(s)).max()
    if gap > 1 / 18 + 1e-9:
        return [
            f"with your scores the largest |P_dice - P_BT| is {gap:.4f}, more than 1/18 = "
            f"{1 / 18:.4f}"
        ]
    return []


EXERCISES = ExerciseSet(
    "nb01",
    [
        Exercise(
            "win_probability",
            1,
            win_probability,
            cases=_win_probability_cases,
            atol=1e-10,
            hints=(
                "P(pi > pi') averages P(y > y') over two independent draws, y from pi and y' from "
                "pi': a double sum over both responses, each term weighted by both probabilities.",
                "sum over y and y' of pi(y) * P[y, y'] * pi'(y'): a row vector times a matrix "
                "times a column vector.",
            ),
        ),
        Exercise(
            "dice_matrix",
            2,
            dice_matrix,
            cases=_dice_cases,
            atol=1e-12,
            hints=(
                "every face of die i meets every face of die j equally often: compare all the "
                "face pairs, count a win as 1 and a tie as 1/2, and average.",
                "with a = faces of die i as a column and b = faces of die j as a row, "
                "P[i, j] = mean(a > b) + 0.5 * mean(a == b) over the grid.",
            ),
        ),
        Exercise(
            "fourth_die",
            2,
            fourth_die,
            title="a fourth die that makes the cycle longer",
            verify=_verify_fourth_die,
            answers=("fourth_die", "equilibrium_4"),
            hints=(
                "to lengthen the cycle A > B > C > A, slot the new die D between two dice of "
                "the cycle: D must lose to one of them and beat the other (e.g. B > D > C).",
                "try dice with the same pattern as A, B, C (each face twice), e.g. low faces of "
                "0 and high ones of 6-8, and compute dice_matrix of the four; then "
                "von_neumann_winner of that 4 x 4 matrix.",
            ),
            answer=(
                "With D = (0, 0, 6, 6, 8, 8) the majority cycle is A > B > D > C > A, through "
                "all four dice. The equilibrium stays uniform on A, B, C and gives D nothing: D "
                "loses to the uniform mix of A, B, C (P(D > mix) = 13/27 < 1/2). A longer cycle "
                "does not mean that the equilibrium uses every response; other dice (e.g. "
                "(1, 1, 7, 7, 8, 8)) do enter it."
            ),
        ),
        Exercise(
            "bradley_terry_matrix",
            3,
            bradley_terry_matrix,
            cases=lambda: [
                ((np.array([0.0, np.log(9), np.log(2)]),), {}),
                ((np.array([1.5, -0.5, 0.0, 2.0]),), {}),
                ((np.zeros(3),), {}),
            ],
            atol=1e-12,
            hints=(
                "one entry per pair: the logistic function of the difference of the two scores.",
                "P[i, j] = 1 / (1 + exp(-(s_i - s_j))); broadcasting s[:, None] - s[None, :] "
                "gives the matrix of differences at once.",
            ),
        ),
        Exercise(
            "closest_scores",
            3,
            closest_scores,
            title="scores whose Bradley-Terry matrix is within 1/18 of the dice",
            verify=_verify_closest_scores,
            answers=("closest_scores",),
            hints=(
                "around the cycle the three score differences s_A - s_B, s_B - s_C, s_C - s_A "
                "add up to 0: what does that say about the three probabilities sigma(difference)?",
                "one of the three differences is <= 0, so Bradley-Terry gives that pair at most "
                "1/2 where the dice give 5/9. Which scores make the error exactly 1/18 on every "
                "pair?",
            ),
            answer=(
                "The differences d_AB + d_BC + d_CA = 0, so one of them is <= 0 and on that pair "
                "P_BT <= 1/2 while P_dice = 5/9: the error is at least 5/9 - 1/2 = 1/18 for any "
                "scores. Equal scores (P_BT = 1/2 everywhere) reach 1/18 on every pair, so 1/18 "
                "is the best possible, and only equal scores reach it (every difference must be "
                ">= 0, hence 0)."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_win_probability = EXERCISES.checker("win_probability")
check_dice_matrix = EXERCISES.checker("dice_matrix")
check_fourth_die = EXERCISES.checker("fourth_die")
check_bradley_terry_matrix = EXERCISES.checker("bradley_terry_matrix")
check_closest_scores = EXERCISES.checker("closest_scores")
