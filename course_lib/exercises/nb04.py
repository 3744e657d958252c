"""Notebook 04 (Nash-MD): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import dice_preference, random_preference, regularised_nash


# ---- reference solutions ---------------------------------------------------------------------
def nash_md_step(P, pi, pi_ref, tau, eta):
    """One Nash-MD step (NLHF §5): mix ∝ pi^(1 - eta tau) pi_ref^(eta tau), then
    pi_next ∝ mix * exp(eta * P(. > mix))."""
    log_mix = (1 - eta * tau) * np.log(pi) + eta * tau * np.log(pi_ref)
    mix = np.exp(log_mix - log_mix.max())
    mix /= mix.sum()
    z = np.log(mix) + eta * (P @ mix)
    w = np.exp(z - z.max())
    return w / w.sum()


def omd_step(P, pi, pi_ref, tau, eta):
    """One step of plain mirror descent: the same prior pi^(1 - eta tau) pi_ref^(eta tau), but the
    opponent in the preference term is pi itself, not the mixture."""
    z = (1 - eta * tau) * np.log(pi) + eta * tau * np.log(pi_ref) + eta * (P @ pi)
    w = np.exp(z - z.max())
    return w / w.sum()


def constant_step_limit(P, pi_ref, tau, eta):
    """Nash-MD with a constant step converges to the pi with pi ∝ pi_ref exp(P(. > mix)/tau),
    mix the geometric mixture with weight beta = eta * tau: the IPO-MD point at beta = eta tau."""
    return regularised_nash(P, pi_ref, tau, beta=eta * tau)


REFERENCES = {
    "nash_md_step": nash_md_step,
    "omd_step": omd_step,
    "constant_step_limit": constant_step_limit,
}
HINTS = {
    "nash_md_step": "work with logs: the mixture's log is (1 - eta tau) log pi + eta tau log "
    "pi_ref minus a constant; normalise the mixture before computing P @ mix.",
    "omd_step": "same prior as Nash-MD; only the opponent in P(. > opponent) changes.",
    "constant_step_limit": "write down the fixed point of the Nash-MD update with eta_t = eta: "
    "which beta makes it the stationary point solved by regularised_nash(..., beta=...)?",
}


def _cases():
    rng = np.random.default_rng(2)
    out = []
    for P, tau, eta in (
        (dice_preference(), 0.1, 2.0),
        (random_preference(4, seed=1), 0.5, 1.0),
        (random_preference(6, seed=4), 0.05, 8.0),
    ):
        n = P.shape[0]
        out.append(((P, rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n)), tau, eta), {}))
    return out


# ---- checkers --------------------------------------------------------------------------------
def check_nash_md_step(fn) -> CheckResult:
    return check_function(
        "nash_md_step", fn, nash_md_step, _cases(), atol=1e-10, hint=HINTS["nash_md_step"]
    )


def check_omd_step(fn) -> CheckResult:
    return check_function("omd_step", fn, omd_step, _cases(), atol=1e-10, hint=HINTS["omd_step"])


def check_constant_step_limit(fn) -> CheckResult:
    cases = [((P, ref, tau, eta), {}) for (P, _, ref, tau, eta), _ in _cases()]
    return check_function(
        "constant_step_limit",
        fn,
        constant_step_limit,
        cases,
        atol=1e-8,
        hint=HINTS["constant_step_limit"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
