"""Notebook 05 (online IPO is Nash-MD): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import random_preference


# ---- reference solutions ---------------------------------------------------------------------
def online_ipo_gradient(theta, P, pi_ref, tau):
    """Exact expected online-IPO gradient in logits (paper-notes §3.2 step 5, beta = 0):
    dL/dtheta_z = 4 pi(z) [A(z) - E_pi A],  A = log(pi/pi_ref) - (P(. > pi) - 1/2)/tau."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    A = np.log(pi / pi_ref) - (P @ pi - 0.5) / tau
    return 4 * pi * (A - pi @ A)


def online_dpo_two_actions(p, tau):
    """Online DPO's stationary point with two actions and a uniform reference: sigma(tau h) = p,
    so log(pi1/pi2) = logit(p)/tau and pi1 = p^(1/tau) / (p^(1/tau) + (1-p)^(1/tau))."""
    z = np.log(p / (1 - p)) / tau
    pi1 = 1.0 / (1.0 + np.exp(-z))
    return np.array([pi1, 1 - pi1])


def nash_md_pg_sample_gradient(theta, pi_ref, tau, y, p):
    """One Nash-MD-PG sample in logits: -(p - 1/2 - tau log(pi(y)/pi_ref(y))) (e_y - pi)."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    advantage = p - 0.5 - tau * np.log(pi[y] / pi_ref[y])
    return -advantage * (np.eye(len(pi))[y] - pi)


REFERENCES = {
    "online_ipo_gradient": online_ipo_gradient,
    "online_dpo_two_actions": online_dpo_two_actions,
    "nash_md_pg_sample_gradient": nash_md_pg_sample_gradient,
}
HINTS = {
    "online_ipo_gradient": "per pair the gradient is 2 (h - (p - 1/2)/tau) (e_y - e_y'); average "
    "over y, y' ~ pi and use E_pi'[h(y, y')] = l(y) - E_pi[l], E_y'[p(y > y')] = P(y > pi).",
    "online_dpo_two_actions": "the expected gradient vanishes when sigmoid(tau h) = p for the "
    "pair (y1, y2); h = log(pi1/pi2) with a uniform reference.",
    "nash_md_pg_sample_gradient": "the gradient of log pi(y) in logits is e_y - pi; the loss is "
    "-(p - 1/2 - tau sg[log pi(y) - log pi_ref(y)]) log pi(y).",
}


def _games():
    rng = np.random.default_rng(5)
    out = []
    for n, tau in ((3, 0.1), (4, 0.7), (6, 2.0)):
        out.append(
            (rng.normal(size=n), random_preference(n, seed=n), rng.dirichlet(np.ones(n)), tau)
        )
    return out


# ---- checkers --------------------------------------------------------------------------------
def check_online_ipo_gradient(fn) -> CheckResult:
    cases = [((th, P, ref, tau), {}) for th, P, ref, tau in _games()]
    return check_function(
        "online_ipo_gradient",
        fn,
        online_ipo_gradient,
        cases,
        atol=1e-9,
        hint=HINTS["online_ipo_gradient"],
    )


def check_online_dpo_two_actions(fn) -> CheckResult:
    cases = [((p, tau), {}) for p, tau in ((0.7, 1.0), (0.7, 0.1), (0.4, 2.0), (0.55, 0.05))]
    return check_function(
        "online_dpo_two_actions",
        fn,
        online_dpo_two_actions,
        cases,
        atol=1e-9,
        hint=HINTS["online_dpo_two_actions"],
    )


def check_nash_md_pg_sample_gradient(fn) -> CheckResult:
    cases = [
        ((th, ref, tau, k % len(th), 0.2 + 0.3 * k), {})
        for k, (th, _P, ref, tau) in enumerate(_games())
    ]
    return check_function(
        "nash_md_pg_sample_gradient",
        fn,
        nash_md_pg_sample_gradient,
        cases,
        atol=1e-10,
        hint=HINTS["nash_md_pg_sample_gradient"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
