"""Notebook 06 (IPO-MD): reference solutions, cases, hints and answers of its exercises.

The notebook writes the geometric mixture pi^(1-beta) pi_ref^beta as pi^beta; so do the hints.
``check_<name>(your_function)`` checks it, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np

from course_lib.exercises import Exercise, ExerciseSet
from course_lib.tabular import expected_ipo_md_gradient, random_preference


# ---- reference solutions ---------------------------------------------------------------------
def geometric_mixture(pi, pi_ref, beta):
    """pi^beta ∝ pi^(1-beta) pi_ref^beta, normalised; computed in log space."""
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
    """Exact expected IPO-MD gradient in logits: -(4/tau) E_{y~pi^beta}[(e_y - pi) B(y)] with
    B(y) = P(y > pi^beta) - 1/2 - tau (l(y) - E_{pi^beta}[l]), l = log(pi/pi_ref)."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    mix = geometric_mixture(pi, pi_ref, beta)
    ell = np.log(pi / pi_ref)
    B = P @ mix - 0.5 - tau * (ell - mix @ ell)
    return -(4 / tau) * (mix * B - pi * (mix @ B))


# ---- cases -----------------------------------------------------------------------------------
def _mixture_cases():
    rng = np.random.default_rng(7)
    return [
        ((rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n)), beta), {})
        for n, beta in ((3, 0.5), (4, 0.125), (5, 0.9))
    ]


def _token_cases():
    rng = np.random.default_rng(8)
    cases = []
    for v, beta in ((2, 0.5), (3, 0.25)):
        args = (
            rng.dirichlet(np.ones(v)),
            rng.dirichlet(np.ones(v), size=v),
            rng.dirichlet(np.ones(v)),
            rng.dirichlet(np.ones(v), size=v),
            beta,
        )
        cases.append((args, {}))
    return cases


def _gradient_cases(seed=9):
    rng = np.random.default_rng(seed)
    cases = []
    for n, tau, beta in ((3, 0.1, 0.125), (4, 0.7, 0.5), (5, 1.0, 0.0)):
        args = (rng.normal(size=n), random_preference(n, seed=n), rng.dirichlet(np.ones(n)))
        cases.append(((*args, tau, beta), {}))
    return cases


def _agrees_with_the_library(fn):
    for (theta, P, ref, tau, beta), _ in _gradient_cases(seed=99):  # not the cases' draws
        got = np.asarray(fn(theta, P, ref, tau, beta), dtype=float)
        if not np.allclose(got, expected_ipo_md_gradient(theta, P, ref, tau, beta), atol=1e-9):
            return "your gradient differs from expected_ipo_md_gradient"
    return None


EXERCISES = ExerciseSet(
    "nb06",
    [
        Exercise(
            "geometric_mixture",
            1,
            geometric_mixture,
            cases=_mixture_cases,
            atol=1e-12,
            hints=(
                "a geometric mixture is a weighted average of log-probabilities, normalised "
                "again; doing it in logs avoids 0 ** 0 and underflow.",
                "log pi^beta = (1 - beta) log pi + beta log pi_ref - constant: subtract the max, "
                "exponentiate, divide by the sum.",
            ),
        ),
        Exercise(
            "token_level_mixture",
            2,
            token_level_mixture,
            cases=_token_cases,
            atol=1e-12,
            hints=(
                "a sampler that mixes token by token mixes each next-token distribution given "
                "the prefix, and draws from it; the joint is the product of what it draws from.",
                "mix the first-token distributions; for each first token y0 mix the two "
                "conditionals pi(. | y0) and pi_ref(. | y0); joint[y0, y1] = first mix(y0) * "
                "second mix(y1 | y0).",
            ),
        ),
        Exercise(
            "ipo_md_gradient",
            3,
            ipo_md_gradient,
            cases=_gradient_cases,
            atol=1e-9,
            properties=(
                (
                    "it agrees with expected_ipo_md_gradient (section 3)",
                    _agrees_with_the_library,
                ),
            ),
            hints=(
                "as in notebook 05 exercise 1, average the per-pair gradient "
                "2 (h - (p - 1/2)/tau)(e_y - e_y') over the sampled pairs, but now y, y' ~ "
                "pi^beta, while h still uses pi.",
                "E_{y'~pi^beta}[h(y, y')] = l(y) - E_{pi^beta}[l] with l = log(pi/pi_ref): keep "
                "that centring. Swapping y and y' flips both h and p - 1/2, so the e_y' term "
                "contributes as much as the e_y term.",
                "the result has the form -(4/tau) E_{y~pi^beta}[(e_y - pi) B(y)] for a scalar "
                "B(y) built from P(y > pi^beta) and the centred l.",
            ),
            answer=(
                "The gradient of h(y, y') = l(y) - l(y') in logits is e_y - e_y'. Swapping y and "
                "y' flips h and p - 1/2, so the e_y' term equals the e_y term and the expected "
                "gradient is 4 E_{y~pi^beta}[e_y E_{y'~pi^beta}[h - (p - 1/2)/tau]]. The inner "
                "mean is l(y) - E_{pi^beta}[l] - (P(y > pi^beta) - 1/2)/tau = -B(y)/tau: the "
                "centring is E_{y'}[l(y')], the y' half of h. Since E_{pi^beta}[B] = 0, "
                "4 E[e_y (-B/tau)] = -(4/tau) E_{y~pi^beta}[(e_y - pi) B(y)]. At beta = 0, "
                "E_pi[l] multiplies E_pi[e_y - pi] = 0 and the centring can be dropped; for "
                "beta > 0 it cannot (the quoted form's missing term)."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_geometric_mixture = EXERCISES.checker("geometric_mixture")
check_token_level_mixture = EXERCISES.checker("token_level_mixture")
check_ipo_md_gradient = EXERCISES.checker("ipo_md_gradient")
