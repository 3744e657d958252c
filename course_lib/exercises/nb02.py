"""Notebook 02 (the regularised Nash equilibrium): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import dice_preference, random_preference, three_rater_types


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
    equilibrium has pi1 / pi2 = exp((p - 1/2)/tau): pi1 = sigmoid((p - 1/2)/tau)."""
    pi1 = 1.0 / (1.0 + np.exp(-(p - 0.5) / tau))
    return np.array([pi1, 1.0 - pi1])


REFERENCES = {
    "best_response": best_response,
    "regularised_gap": regularised_gap,
    "two_action_nash": two_action_nash,
}
HINTS = {
    "best_response": "log BR = log pi_ref + (P @ opponent)/tau + constant; subtract the max "
    "before exponentiating, then normalise.",
    "regularised_gap": "the max over pi' of <pi', a> - tau KL(pi' || pi_ref), a = P @ pi, is "
    "tau * log(sum(pi_ref * exp(a / tau))) (Gibbs); add tau KL(pi || pi_ref) and subtract 1/2.",
    "two_action_nash": "write P(y1 > pi) - P(y2 > pi) out for pi = (q, 1-q): it does not depend "
    "on q.",
}


def _cases_policy():
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


# ---- checkers --------------------------------------------------------------------------------
def check_best_response(fn) -> CheckResult:
    cases = [((P, ref, tau, opp), {}) for P, ref, tau, opp in _cases_policy()]
    return check_function(
        "best_response", fn, best_response, cases, atol=1e-10, hint=HINTS["best_response"]
    )


def check_regularised_gap(fn) -> CheckResult:
    cases = [((P, opp, ref, tau), {}) for P, ref, tau, opp in _cases_policy()]
    return check_function(
        "regularised_gap", fn, regularised_gap, cases, atol=1e-10, hint=HINTS["regularised_gap"]
    )


def check_two_action_nash(fn) -> CheckResult:
    cases = [((p, tau), {}) for p, tau in ((0.7, 1.0), (0.7, 0.1), (0.2, 0.5), (1.0, 0.05))]
    return check_function(
        "two_action_nash", fn, two_action_nash, cases, atol=1e-10, hint=HINTS["two_action_nash"]
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
