"""Notebook 06 (IPO-MD): checkers, hints and reference solutions.

Call ``check_<name>(your_function)``; ``hint(name)`` prints a hint, ``solution(name)`` the
reference code.
"""

from __future__ import annotations

import inspect

import numpy as np

from course_lib.exercises import CheckResult, check_function
from course_lib.tabular import random_preference


# ---- reference solutions ---------------------------------------------------------------------
def geometric_mixture(pi, pi_ref, beta):
    """pi^(1-beta) pi_ref^beta, normalised; computed in log space."""
    z = (1 - beta) * np.log(pi) + beta * np.log(pi_ref)
    w = np.exp(z - z.max())
    return w / w.sum()


def token_level_mixture(pi_first, pi_second, ref_first, ref_second, beta):
    """Mix each next-token distribution, then multiply: joint[y0, y1] = m0(y0) m1(y1 | y0)."""
    first = geometric_mixture(pi_first, ref_first, beta)
    second = np.stack(
        [geometric_mixture(a, b, beta) for a, b in zip(pi_second, ref_second, strict=True)]
    )
    return first[:, None] * second


def ipo_md_gradient(theta, P, pi_ref, tau, beta):
    """Exact expected IPO-MD gradient in logits: -(4/tau) E_{y~pi'}[(e_y - pi) B(y)] with
    B(y) = P(y > pi') - 1/2 - tau (l(y) - E_pi'[l]), l = log(pi/pi_ref), pi' the mixture."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    mix = geometric_mixture(pi, pi_ref, beta)
    ell = np.log(pi / pi_ref)
    B = P @ mix - 0.5 - tau * (ell - mix @ ell)
    return -(4 / tau) * (mix * B - pi * (mix @ B))


REFERENCES = {
    "geometric_mixture": geometric_mixture,
    "token_level_mixture": token_level_mixture,
    "ipo_md_gradient": ipo_md_gradient,
}
HINTS = {
    "geometric_mixture": "(1 - beta) log pi + beta log pi_ref, then a softmax (subtract the max).",
    "token_level_mixture": "mix the first-token distributions; for each first token y0 mix the "
    "two conditionals pi(. | y0) and pi_ref(. | y0); the joint is their product.",
    "ipo_md_gradient": "start from the per-pair gradient 2 (h - (p - 1/2)/tau)(e_y - e_y') and "
    "average over y, y' ~ pi'. E_y'[h(y, y')] = l(y) - E_pi'[l]: keep that centring.",
}


def _cases_mixture():
    rng = np.random.default_rng(7)
    return [
        ((rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n)), beta), {})
        for n, beta in ((3, 0.5), (4, 0.125), (5, 0.9))
    ]


# ---- checkers --------------------------------------------------------------------------------
def check_geometric_mixture(fn) -> CheckResult:
    return check_function(
        "geometric_mixture",
        fn,
        geometric_mixture,
        _cases_mixture(),
        atol=1e-12,
        hint=HINTS["geometric_mixture"],
    )


def check_token_level_mixture(fn) -> CheckResult:
    rng = np.random.default_rng(8)
    cases = []
    for v, beta in ((2, 0.5), (3, 0.25)):
        cases.append(
            (
                (
                    rng.dirichlet(np.ones(v)),
                    rng.dirichlet(np.ones(v), size=v),
                    rng.dirichlet(np.ones(v)),
                    rng.dirichlet(np.ones(v), size=v),
                    beta,
                ),
                {},
            )
        )
    return check_function(
        "token_level_mixture",
        fn,
        token_level_mixture,
        cases,
        atol=1e-12,
        hint=HINTS["token_level_mixture"],
    )


def check_ipo_md_gradient(fn) -> CheckResult:
    rng = np.random.default_rng(9)
    cases = []
    for n, tau, beta in ((3, 0.1, 0.125), (4, 0.7, 0.5), (5, 1.0, 0.0)):
        cases.append(
            (
                (
                    rng.normal(size=n),
                    random_preference(n, seed=n),
                    rng.dirichlet(np.ones(n)),
                    tau,
                    beta,
                ),
                {},
            )
        )
    return check_function(
        "ipo_md_gradient", fn, ipo_md_gradient, cases, atol=1e-9, hint=HINTS["ipo_md_gradient"]
    )


def hint(name: str) -> None:
    print(HINTS[name])


def solution(name: str) -> None:
    print(inspect.getsource(REFERENCES[name]))
