"""Notebook 03 (offline losses on a bandit): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np
import torch

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import dice_preference, random_preference


# ---- reference solutions ---------------------------------------------------------------------
def soft_ipo_loss(h, p, tau):
    """p (h - 1/(2 tau))^2 + (1 - p) (-h - 1/(2 tau))^2, elementwise on torch tensors."""
    a = 1.0 / (2.0 * tau)
    return p * (h - a) ** 2 + (1 - p) * (-h - a) ** 2


def two_action_ipo(tau):
    """Deterministic P(y1 > y2) = 1, uniform mu = pi_ref: P(y1 > mu) - P(y2 > mu) = 1/2, so
    h* = log(pi1/pi2) = 1/(2 tau) and pi1 = sigmoid(1/(2 tau))."""
    return 1.0 / (1.0 + np.exp(-0.5 / tau))


def offline_ipo_optimum(P, pi_ref, mu, tau):
    """pi*(y) ∝ pi_ref(y) exp(P(y > mu) / tau), computed in log space."""
    z = np.log(pi_ref) + (P @ mu) / tau
    w = np.exp(z - z.max())
    return w / w.sum()


REFERENCES = {
    "soft_ipo_loss": soft_ipo_loss,
    "two_action_ipo": two_action_ipo,
    "offline_ipo_optimum": offline_ipo_optimum,
}
HINTS = {
    "soft_ipo_loss": "the loss of the ordering (y, y') is (h - 1/(2 tau))^2; the other ordering "
    "has h -> -h. Weight them by p and 1 - p.",
    "two_action_ipo": "with mu uniform, P(y1 > mu) = (1/2 + 1)/2 and P(y2 > mu) = (0 + 1/2)/2; "
    "the optimum has log(pi1/pi2) = (P(y1 > mu) - P(y2 > mu))/tau.",
    "offline_ipo_optimum": "it is a best response to mu: log pi* = log pi_ref + (P @ mu)/tau + "
    "constant. Subtract the max before exponentiating.",
}


# ---- checkers --------------------------------------------------------------------------------
def check_soft_ipo_loss(fn) -> CheckResult:
    g = torch.Generator().manual_seed(0)
    cases = []
    for tau in (0.1, 1.0, 4.0):
        h = torch.randn(6, generator=g, dtype=torch.float64) * 3
        p = torch.rand(6, generator=g, dtype=torch.float64)
        p[0], p[1] = 0.0, 1.0  # hard labels are special cases
        cases.append(((h, p, tau), {}))
    return check_function(
        "soft_ipo_loss", fn, soft_ipo_loss, cases, atol=1e-10, hint=HINTS["soft_ipo_loss"]
    )


def check_two_action_ipo(fn) -> CheckResult:
    cases = [((tau,), {}) for tau in (0.1, 0.5, 1.0, 2.0, 10.0)]
    return check_function(
        "two_action_ipo", fn, two_action_ipo, cases, atol=1e-10, hint=HINTS["two_action_ipo"]
    )


def check_offline_ipo_optimum(fn) -> CheckResult:
    rng = np.random.default_rng(3)
    cases = []
    for P, tau in ((dice_preference(), 0.1), (random_preference(5, seed=4), 0.02)):
        n = P.shape[0]
        cases.append(((P, rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n)), tau), {}))
    return check_function(
        "offline_ipo_optimum",
        fn,
        offline_ipo_optimum,
        cases,
        atol=1e-10,
        hint=HINTS["offline_ipo_optimum"],
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
