"""Notebook 02 (the regularised Nash equilibrium): reference solutions, cases, hints and answers.

``check_<name>(your_function)`` checks it, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np

from course_lib.exercises import Case, Exercise, ExerciseSet
from course_lib.tabular import (
    dice_preference,
    random_preference,
    regularised_nash,
    three_rater_types,
)


# ---- reference solutions ---------------------------------------------------------------------
def best_response(P, pi_ref, tau, opponent):
    """BR(y) ∝ pi_ref(y) exp(P(y > opponent) / tau), computed stably in log space."""
    z = np.log(pi_ref) + (P @ opponent) / tau
    z = z - z.max()  # softmax is unchanged by a shift; this avoids overflow for small tau
    w = np.exp(z)
    return w / w.sum()


def regularised_gap(P, pi, pi_ref, tau):
    """max_pi' P_tau(pi' > pi) - 1/2
    = tau log sum_y pi_ref(y) exp(P(y > pi)/tau) + tau KL(pi || pi_ref) - 1/2."""
    a = (P @ pi) / tau
    m = a.max()
    log_partition = m + np.log(np.sum(pi_ref * np.exp(a - m)))
    kl = np.sum(pi * (np.log(pi) - np.log(pi_ref)))
    return float(tau * log_partition + tau * kl - 0.5)


def two_action_nash(p, tau):
    """With two responses P(y1 > pi) - P(y2 > pi) = p - 1/2 for every pi, so a uniform-reference
    equilibrium has pi1 / pi2 = exp((p - 1/2)/tau): pi1 = sigmoid((p - 1/2)/tau), written as
    exp(-log(1 + exp(-x))) so that it neither overflows nor loses precision for tiny tau."""
    x = (p - 0.5) / tau
    pi1 = np.exp(-np.logaddexp(0.0, -x))
    pi2 = np.exp(-np.logaddexp(0.0, x))
    return np.array([pi1, pi2])


# ---- cases -----------------------------------------------------------------------------------
def _games():
    rng = np.random.default_rng(1)
    out = []
    for P, tau in (
        (dice_preference(), 0.1),
        (three_rater_types(0.05), 1.0),
        (random_preference(5, seed=2), 0.02),
    ):
        n = P.shape[0]
        out.append((P, rng.dirichlet(np.ones(n)), tau, rng.dirichlet(np.ones(n))))
    return out


def _best_response_cases():
    cases = [Case((P, ref, tau, opp)) for P, ref, tau, opp in _games()]
    # the exercise's requirement: tau = 0.001 without overflow (exp(P @ opponent / tau) is
    # exp(890) here: inf in float64)
    P = np.array([[0.5, 0.95, 0.1], [0.05, 0.5, 0.9], [0.9, 0.1, 0.5]])
    for opponent in ([0.1, 0.8, 0.1], [0.3, 0.3, 0.4]):
        cases.append(
            Case(
                (P, np.array([0.2, 0.5, 0.3]), 0.001, np.array(opponent)),
                note="tau = 0.001: P @ opponent / tau is up to 900, and exp(900) overflows",
            )
        )
    cases.append(
        Case(
            (dice_preference(), np.array([0.2, 0.5, 0.3]), 0.001, np.array([0.0, 0.0, 1.0])),
            note="tau = 0.001",
        )
    )
    return cases


def _regularised_gap_cases():
    cases = [Case((P, opp, ref, tau)) for P, ref, tau, opp in _games()]
    for P, ref, tau, _ in _games():
        cases.append(
            Case((P, regularised_nash(P, ref, tau), ref, tau), note="pi = regularised_nash: gap 0")
        )
    return cases


def _two_action_cases():
    cases = [Case((p, tau)) for p, tau in ((0.7, 1.0), (0.7, 0.1), (0.2, 0.5), (1.0, 0.05))]
    cases += [
        Case((1.0, 1e-4), note="p = 1, tau -> 0"),
        Case((0.0, 1e-4), note="p = 0, tau -> 0"),
        Case((0.5, 1e-4), note="p = 1/2: indifference, whatever tau"),
    ]
    return cases


def _gap_is_zero_at_nash_and_positive_elsewhere(fn):
    for P, ref, tau, opp in _games():
        at_nash = float(fn(P, regularised_nash(P, ref, tau), ref, tau))
        if abs(at_nash) > 1e-8:
            return f"your gap at regularised_nash is {at_nash:.3g}, not 0"
        if not float(fn(P, opp, ref, tau)) > 0:
            return "your gap is not positive at a policy that is not the equilibrium"
    return None


EXERCISES = ExerciseSet(
    "nb02",
    [
        Exercise(
            "best_response",
            1,
            best_response,
            cases=_best_response_cases,
            atol=1e-10,
            hints=(
                "the best response is a Gibbs distribution: the reference reweighted by "
                "exp(win rate / tau). For tau = 0.001 the exponent is in the hundreds, so compute "
                "its logarithm first and only exponentiate something safe.",
                "log BR(y) = log pi_ref(y) + P(y > opponent)/tau + constant (P @ opponent is the "
                "vector of win rates). Subtract the largest log before exp, then normalise.",
            ),
        ),
        Exercise(
            "regularised_gap",
            2,
            regularised_gap,
            cases=_regularised_gap_cases,
            atol=1e-10,
            properties=(
                (
                    "it is 0 at regularised_nash and positive elsewhere",
                    _gap_is_zero_at_nash_and_positive_elsewhere,
                ),
            ),
            hints=(
                "the best reply pi' to pi maximises <pi', a> - tau KL(pi' || pi_ref) with "
                "a = P @ pi; that maximum has a closed form (the Gibbs variational principle), so "
                "no optimisation is needed.",
                "max_pi' <pi', a> - tau KL(pi' || pi_ref) = tau log sum_y pi_ref(y) exp(a_y/tau); "
                "the gap is that plus tau KL(pi || pi_ref), minus 1/2. Use log-sum-exp.",
            ),
        ),
        Exercise(
            "two_action_nash",
            3,
            two_action_nash,
            cases=_two_action_cases,
            atol=1e-10,
            hints=(
                "section 3's ratio pi1 / pi2 together with pi1 + pi2 = 1 gives pi1 as a logistic "
                "function. At tau = 1e-4 its argument is in the thousands: write it so that "
                "nothing overflows.",
                "pi1 = sigmoid(x) with x = (p - 1/2)/tau. exp(x) / (1 + exp(x)) is inf/inf = nan "
                "for x = 5000; 1 / (1 + exp(-x)) or np.logaddexp avoid it.",
            ),
            answer=(
                "pi1 = sigmoid((p - 1/2)/tau). With p = 1 and tau -> 0 it tends to [1, 0]: the "
                "equilibrium plays the response that always wins (here the von Neumann winner), "
                "and for p = 1/2 it is [1/2, 1/2] whatever tau."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_best_response = EXERCISES.checker("best_response")
check_regularised_gap = EXERCISES.checker("regularised_gap")
check_two_action_nash = EXERCISES.checker("two_action_nash")
