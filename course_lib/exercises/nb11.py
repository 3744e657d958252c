"""Notebook 11 (going further): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np
from scipy.special import expit, logit

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import random_preference, regularised_nash
from course_lib.tabular.preferences import validate_preference_matrix


# ---- reference solutions ---------------------------------------------------------------------
def circular_preference(n, strength):
    """n responses on a circle: P[i, j] = 1/2 + (strength/2) sin(2 pi (i - j) / n).

    sin is odd, so P[j, i] = 1 - P[i, j] and P[i, i] = 1/2; for n >= 3 and strength > 0 each
    response beats the ones just behind it on the circle and loses to the ones just ahead: a cycle.
    """
    i = np.arange(n)
    return 0.5 + 0.5 * strength * np.sin(2 * np.pi * (i[:, None] - i[None, :]) / n)


def ipo_md_schedule(P, pi_ref, tau, betas, iters=3000, damping=0.5):
    """For each beta of the schedule in turn (warm-started from the previous stage), iterate the
    damped fixed-point map of Calandriello eq. 13 in log space:

        log pi <- (1 - d) log pi + d log softmax(log pi_ref + P @ mix(pi) / tau),
        mix(pi) ∝ pi^(1 - beta) pi_ref^beta.

    Returns the policy at the end of every stage, shape (len(betas), n).
    """
    log_ref = np.log(pi_ref)
    x = log_ref.copy()
    out = []
    for beta in betas:
        for _ in range(iters):
            z = (1 - beta) * x + beta * log_ref
            mix = np.exp(z - z.max())
            mix /= mix.sum()
            t = log_ref + P @ mix / tau
            t = t - t.max() - np.log(np.exp(t - t.max()).sum())
            x = (1 - damping) * x + damping * t
            x = x - x.max() - np.log(np.exp(x - x.max()).sum())
        out.append(np.exp(x))
    return np.array(out)


def length_penalised_preference(P, lengths, lam):
    """Length control as a shift of the preference's log-odds:
    P'[i, j] = sigmoid(logit(P[i, j]) - lam (L_i - L_j)). Antisymmetric because the shift is."""
    L = np.asarray(lengths, dtype=float)
    return expit(logit(P) - lam * (L[:, None] - L[None, :]))


REFERENCES = {
    "circular_preference": circular_preference,
    "ipo_md_schedule": ipo_md_schedule,
    "length_penalised_preference": length_penalised_preference,
}
HINTS = {
    "circular_preference": "build the matrix of differences i - j with broadcasting "
    "(i[:, None] - i[None, :]) and apply the formula elementwise.",
    "ipo_md_schedule": "keep x = log pi; each iteration: the mixture from (1 - beta) x + "
    "beta log pi_ref (normalise!), the target log pi_ref + P @ mix / tau (normalise), then move "
    "x half-way to it. Do not restart from pi_ref when beta changes.",
    "length_penalised_preference": "logit(P) is log(P / (1 - P)); subtract lam * (L_i - L_j) "
    "built with broadcasting, then apply the sigmoid (scipy.special.expit).",
}


# ---- checkers --------------------------------------------------------------------------------
def _has_cycle(P) -> bool:
    """True when the majority relation P > 1/2 has a directed 3-cycle."""
    n = P.shape[0]
    beats = P > 0.5
    return any(
        beats[a, b] and beats[b, c] and beats[c, a]
        for a in range(n)
        for b in range(n)
        for c in range(n)
    )


def check_circular_preference(fn) -> CheckResult:
    cases = [((n, s), {}) for n, s in ((3, 0.5), (5, 0.8), (8, 1.0))]
    result = check_function(
        "circular_preference",
        fn,
        circular_preference,
        cases,
        atol=1e-12,
        hint=HINTS["circular_preference"],
    )
    if result.passed:  # the properties the exercise is about, said out loud
        P = np.asarray(fn(5, 0.8), dtype=float)
        validate_preference_matrix(P)  # raises if P + P^T != 1
        result.messages.append(
            f"P + P^T = 1 holds (max deviation {np.abs(P + P.T - 1).max():.1e}); "
            f"a 3-cycle in the majority relation: {_has_cycle(P)}"
        )
    return result


def _library_schedule(P, pi_ref, tau, betas, iters=3000, damping=0.5):
    return np.array([regularised_nash(P, pi_ref, tau, beta=b) for b in betas])


def check_ipo_md_schedule(fn) -> CheckResult:
    """Compared with the library's stationary points (``regularised_nash(..., beta)``)."""
    rng = np.random.default_rng(11)
    cases = []
    for n, tau, betas in ((3, 1.0, (0.5, 0.25, 0.0)), (4, 0.5, (0.125, 0.0)), (5, 0.7, (0.3,))):
        cases.append(
            ((random_preference(n, seed=n), rng.dirichlet(np.ones(n) * 3), tau, betas), {})
        )
    return check_function(
        "ipo_md_schedule",
        fn,
        _library_schedule,
        cases,
        atol=1e-6,
        hint=HINTS["ipo_md_schedule"],
    )


def check_length_penalised_preference(fn) -> CheckResult:
    cases = []
    for n, lam in ((3, 0.5), (4, 0.0), (5, 2.0)):
        rng = np.random.default_rng(n)
        P = random_preference(n, seed=n, low=0.05, high=0.95)
        cases.append(((P, rng.integers(5, 60, size=n), lam), {}))
    return check_function(
        "length_penalised_preference",
        fn,
        length_penalised_preference,
        cases,
        atol=1e-12,
        hint=HINTS["length_penalised_preference"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
