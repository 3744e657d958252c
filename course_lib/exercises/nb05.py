"""Notebook 05 (online IPO is Nash-MD): reference solutions, cases, hints and answers.

``check_<name>(your_function)`` checks it, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np

from course_lib.exercises import Exercise, ExerciseSet
from course_lib.tabular import (
    bradley_terry,
    expected_contrastive_gradient,
    expected_nash_md_pg_gradient,
    random_preference,
)


# ---- reference solutions ---------------------------------------------------------------------
def online_ipo_gradient(theta, P, pi_ref, tau):
    """Exact expected online-IPO gradient in logits (notes/paper.md §4.2 step 5, beta = 0):
    dL/dtheta_z = 4 pi(z) [A(z) - E_pi A],  A = log(pi/pi_ref) - (P(. > pi) - 1/2)/tau."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    A = np.log(pi / pi_ref) - (P @ pi - 0.5) / tau
    return 4 * pi * (A - pi @ A)


def online_dpo_bradley_terry(scores, pi_ref, tau):
    """Online DPO's stationary point for a Bradley-Terry preference P[i, j] = sigmoid(s_i - s_j):
    every pair's expected DPO gradient vanishes when sigmoid(tau h(y, y')) = P(y > y'), i.e.
    tau (l(y) - l(y')) = s_y - s_y' with l = log(pi/pi_ref): pi ∝ pi_ref exp(s / tau), the RLHF
    optimum for the reward s."""
    z = np.log(pi_ref) + np.asarray(scores, dtype=float) / tau
    w = np.exp(z - z.max())
    return w / w.sum()


def nash_md_pg_sample_gradient(theta, pi_ref, tau, y, p):
    """One Nash-MD-PG sample in logits: -(p - 1/2 - tau log(pi(y)/pi_ref(y))) (e_y - pi)."""
    pi = np.exp(theta - theta.max())
    pi /= pi.sum()
    advantage = p - 0.5 - tau * np.log(pi[y] / pi_ref[y])
    return -advantage * (np.eye(len(pi))[y] - pi)


# ---- cases and properties --------------------------------------------------------------------
def _games(seed=5):
    rng = np.random.default_rng(seed)
    out = []
    for n, tau in ((3, 0.1), (4, 0.7), (6, 2.0)):
        out.append(
            (rng.normal(size=n), random_preference(n, seed=n), rng.dirichlet(np.ones(n)), tau)
        )
    return out


def _bt_cases():
    rng = np.random.default_rng(6)
    cases = []
    for n, tau in ((2, 1.0), (3, 0.1), (4, 0.7), (5, 2.0), (3, 0.01)):
        cases.append(((rng.normal(scale=2, size=n), rng.dirichlet(np.ones(n)), tau), {}))
    return cases


def _dpo_gradient_vanishes(fn):
    for (scores, ref, tau), _ in _bt_cases()[:4]:
        pi = np.asarray(fn(scores, ref, tau), dtype=float)
        P = bradley_terry(scores)
        grad = expected_contrastive_gradient(np.log(pi), P, ref, tau, loss="dpo")
        if np.abs(grad).max() > 1e-8:
            return "the expected online-DPO gradient does not vanish at your point"
    return None


def _factor_four_over_tau(fn):
    for theta, P, ref, tau in _games(seed=55):  # other draws than the cases
        g = np.asarray(fn(theta, P, ref, tau), dtype=float)
        pg = expected_nash_md_pg_gradient(theta, P, ref, tau)
        if not np.allclose(g, (4 / tau) * pg, atol=1e-9):
            return "your gradient is not 4/tau times expected_nash_md_pg_gradient"
    return None


def _averages_to_the_expected_gradient(fn):
    for theta, P, ref, tau in _games(seed=56):  # other draws than the cases
        pi = np.exp(theta - theta.max())
        pi /= pi.sum()
        n = len(pi)
        mean = sum(
            pi[y] * pi[y2] * np.asarray(fn(theta, ref, tau, y, P[y, y2]), dtype=float)
            for y in range(n)
            for y2 in range(n)
        )
        if not np.allclose(mean, expected_nash_md_pg_gradient(theta, P, ref, tau), atol=1e-9):
            return (
                "averaged over y ~ pi and p = P(y > y'), y' ~ pi, your gradient is not "
                "expected_nash_md_pg_gradient"
            )
    return None


EXERCISES = ExerciseSet(
    "nb05",
    [
        Exercise(
            "online_ipo_gradient",
            1,
            online_ipo_gradient,
            cases=lambda: [((th, P, ref, tau), {}) for th, P, ref, tau in _games()],
            atol=1e-9,
            properties=(("it is 4/tau times expected_nash_md_pg_gradient", _factor_four_over_tau),),
            hints=(
                "start from one pair's gradient in h and the chain rule through h = l(y) - l(y'), "
                "l = log(pi/pi_ref); then average over y, y' ~ pi with the sampler frozen (no "
                "gradient through it).",
                "per pair the gradient in logits is 2 (h - (p - 1/2)/tau) (e_y - e_y'); when "
                "averaging use E_y'[h(y, y')] = l(y) - E_pi[l] and E_y'[p(y > y')] = P(y > pi).",
                "the two terms e_y and -e_y' give the same contribution by symmetry; the result "
                "has the form 4 pi(z) [A(z) - E_pi A] for a vector A built from l and P(. > pi).",
            ),
        ),
        Exercise(
            "online_dpo_bradley_terry",
            2,
            online_dpo_bradley_terry,
            cases=_bt_cases,
            atol=1e-9,
            properties=(
                (
                    "the expected online-DPO gradient vanishes there "
                    "(expected_contrastive_gradient)",
                    _dpo_gradient_vanishes,
                ),
            ),
            hints=(
                "section 6's argument works pair by pair: each pair's expected DPO gradient "
                "vanishes when sigmoid(tau h(y, y')) equals P(y > y'). With a Bradley-Terry P "
                "that is a condition on differences of scores.",
                "sigmoid(tau h) = sigmoid(s_y - s_y') for every pair means tau (l(y) - l(y')) = "
                "s_y - s_y' with l = log(pi/pi_ref): l = s/tau + constant. Normalise.",
            ),
            answer=(
                "pi ∝ pi_ref exp(s / tau): the RLHF (KL-regularised reward maximisation) optimum "
                "for the reward s. It is not the regularised Nash equilibrium, which solves "
                "pi ∝ pi_ref exp(P(. > pi)/tau) with the win rates against pi in place of the "
                "scores (section 6's two responses are the case n = 2, s_1 - s_2 = logit p). "
                "With a Bradley-Terry preference online DPO is RLHF."
            ),
        ),
        Exercise(
            "nash_md_pg_sample_gradient",
            3,
            nash_md_pg_sample_gradient,
            cases=lambda: [
                ((th, ref, tau, k % len(th), 0.2 + 0.3 * k), {})
                for k, (th, _P, ref, tau) in enumerate(_games())
            ],
            atol=1e-10,
            properties=(
                (
                    "averaged over y ~ pi and p = P(y > y'), y' ~ pi, it is "
                    "expected_nash_md_pg_gradient",
                    _averages_to_the_expected_gradient,
                ),
            ),
            hints=(
                "REINFORCE: the loss is minus (a stopped advantage) times log pi(y), so its "
                "gradient is minus the advantage times the gradient of log pi(y) in logits.",
                "the gradient of log pi(y) in logits is e_y - pi; the advantage is "
                "p - 1/2 - tau log(pi(y)/pi_ref(y)), with no gradient through it.",
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_online_ipo_gradient = EXERCISES.checker("online_ipo_gradient")
check_online_dpo_bradley_terry = EXERCISES.checker("online_dpo_bradley_terry")
check_nash_md_pg_sample_gradient = EXERCISES.checker("nash_md_pg_sample_gradient")
