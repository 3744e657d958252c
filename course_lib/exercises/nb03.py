"""Notebook 03 (offline losses on a bandit): reference solutions, cases, hints and answers.

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib.exercises import Case, Exercise, ExerciseSet, as_number, is_distribution
from course_lib.tabular import dice_preference, offline_ipo_solution, random_preference

#: Exercise 3: the temperature at which some data must put more than 0.9 on die B.
TAU_B = 0.02
#: Exercise 3: the temperature at which the learner finds the most any data can put on die B.
TAU_MOST = 0.1


# ---- reference solutions ---------------------------------------------------------------------
def soft_ipo_loss(h, p, tau):
    """p (h - 1/(2 tau))^2 + (1 - p) (-h - 1/(2 tau))^2, elementwise on torch tensors."""
    a = 1.0 / (2.0 * tau)
    return p * (h - a) ** 2 + (1 - p) * (-h - a) ** 2


def two_action_ipo(p, mu, pi_ref, tau):
    """Offline IPO's optimum pi* ∝ pi_ref exp(P(. > mu)/tau) with two responses, P(y1 > y2) = p
    and pairs from mu = (m, 1 - m): P(y1 > mu) - P(y2 > mu) = m/2 + (1-m) p - m (1-p) - (1-m)/2
    = p - 1/2, whatever m. So log(pi1/pi2) = log(pi_ref1/pi_ref2) + (p - 1/2)/tau."""
    x = np.log(pi_ref[0] / pi_ref[1]) + (p - 0.5) / tau
    return np.array([np.exp(-np.logaddexp(0.0, -x)), np.exp(-np.logaddexp(0.0, x))])


def offline_ipo_optimum(P, pi_ref, mu, tau):
    """pi*(y) ∝ pi_ref(y) exp(P(y > mu) / tau), computed in log space."""
    z = np.log(pi_ref) + (P @ mu) / tau
    w = np.exp(z - z.max())
    return w / w.sum()


def data_for_die_b():
    """B beats C: data all on C make B the best response to the data. Its mass at tau = 0.1 is
    the most any mu can give (log pi*(B) is concave in mu; a search over the simplex agrees)."""
    P, uniform3 = dice_preference(), np.ones(3) / 3
    mu_for_b = np.array([0.0, 0.0, 1.0])
    most_on_b_at_tau_01 = offline_ipo_optimum(P, uniform3, mu_for_b, 0.1)[1]
    return mu_for_b, most_on_b_at_tau_01


# ---- cases and checks ------------------------------------------------------------------------
def _soft_ipo_cases():
    g = torch.Generator().manual_seed(0)
    cases = []
    for tau in (0.1, 1.0, 4.0):
        h = torch.randn(6, generator=g, dtype=torch.float64) * 3
        p = torch.rand(6, generator=g, dtype=torch.float64)
        p[0], p[1] = 0.0, 1.0  # hard labels are special cases
        cases.append(((h, p, tau), {}))
    return cases


def _two_action_cases():
    cases = []
    for p, m, r, tau in (
        (1.0, 0.5, 0.5, 0.5),  # section 2's setting
        (0.7, 0.5, 0.5, 1.0),
        (0.7, 0.9, 0.5, 1.0),  # the same with other data: same answer
        (0.7, 0.1, 0.3, 0.2),
        (0.2, 0.6, 0.8, 0.5),
        (0.9, 0.25, 0.1, 0.05),
        (0.0, 0.5, 0.5, 0.01),
    ):
        cases.append(Case((p, np.array([m, 1 - m]), np.array([r, 1 - r]), tau)))
    return cases


def _offline_cases():
    rng = np.random.default_rng(3)
    cases = []
    for P, tau in ((dice_preference(), 0.1), (random_preference(5, seed=4), 0.02)):
        n = P.shape[0]
        cases.append(((P, rng.dirichlet(np.ones(n)), rng.dirichlet(np.ones(n)), tau), {}))
    cases.append(((dice_preference(), np.ones(3) / 3, np.array([0.0, 0.0, 1.0]), 0.001), {}))
    return cases


def _max_on_b(tau: float, n: int = 300) -> float:
    """max over mu in the simplex (a grid that contains the vertices) of offline IPO's pi*(B)."""
    P = dice_preference()
    i, j = np.meshgrid(np.arange(n + 1), np.arange(n + 1), indexing="ij")
    keep = i + j <= n
    mu = np.stack([i[keep], j[keep], n - i[keep] - j[keep]], axis=1) / n
    a = mu @ P.T / tau  # win rates of A, B, C against each mu, over tau (uniform reference)
    log_b = a[:, 1] - np.logaddexp.reduce(a, axis=1)
    return float(np.exp(log_b.max()))


def _verify_data_for_die_b(mu_for_b, most_on_b_at_tau_01) -> list[str]:
    problems = is_distribution(mu_for_b, 3, "mu_for_b")
    if not problems:
        mu = np.asarray(mu_for_b, dtype=float)
        on_b = offline_ipo_solution(dice_preference(), np.ones(3) / 3, mu / mu.sum(), TAU_B)[1]
        if not on_b > 0.9:
            problems.append(
                f"with mu_for_b, offline IPO at tau = {TAU_B} puts {on_b:.4f} on die B, not more "
                "than 0.9"
            )
    most, bad = as_number(most_on_b_at_tau_01, "most_on_b_at_tau_01")
    problems += bad
    if most is not None and abs(most - _max_on_b(TAU_MOST)) > 1e-3:
        problems.append(
            f"most_on_b_at_tau_01 = {most:.4f} is not the largest pi*(B) that data can give at "
            f"tau = {TAU_MOST} (to 3 decimals)"
        )
    return problems


EXERCISES = ExerciseSet(
    "nb03",
    [
        Exercise(
            "soft_ipo_loss",
            1,
            soft_ipo_loss,
            cases=_soft_ipo_cases,
            atol=1e-10,
            hints=(
                "a soft label p says: the ordering (y, y') with probability p, the ordering "
                "(y', y) with probability 1 - p. The loss is the expected IPO loss over the two "
                "orderings.",
                "the ordering (y, y') costs (h - 1/(2 tau))^2; swapping the pair turns h into -h. "
                "Weight the two terms by p and 1 - p.",
            ),
        ),
        Exercise(
            "two_action_ipo",
            2,
            two_action_ipo,
            cases=_two_action_cases,
            atol=1e-10,
            hints=(
                "use offline IPO's optimum pi*(y) ∝ pi_ref(y) exp(P(y > mu)/tau) of section 2 "
                "with mu = (m, 1 - m): only the difference P(y1 > mu) - P(y2 > mu) matters.",
                "P(y1 > mu) = m/2 + (1 - m) p and P(y2 > mu) = m (1 - p) + (1 - m)/2; so "
                "log(pi1/pi2) = log(pi_ref1/pi_ref2) + (their difference)/tau, and "
                "pi1 = sigmoid(that).",
            ),
            answer=(
                "P(y1 > mu) - P(y2 > mu) = p - 1/2 for every mu: with two responses the data "
                "weights cancel. So pi*(y1) = sigmoid(log(pi_ref1/pi_ref2) + (p - 1/2)/tau), the "
                "same for all mu, and equal to the regularised Nash equilibrium (notebook 02's "
                "two_action_nash for a uniform reference). Offline IPO's dependence on the data "
                "(section 4) needs three or more responses."
            ),
        ),
        Exercise(
            "offline_ipo_optimum",
            3,
            offline_ipo_optimum,
            cases=_offline_cases,
            atol=1e-10,
            hints=(
                "offline IPO's optimum is a best response to the data mu in the regularised "
                "game, a Gibbs distribution around pi_ref.",
                "log pi*(y) = log pi_ref(y) + P(y > mu)/tau + constant, P(. > mu) = P @ mu. "
                "Subtract the max before exponentiating, then normalise.",
            ),
        ),
        Exercise(
            "data_for_die_b",
            3,
            data_for_die_b,
            title="data that make offline IPO pick die B",
            verify=_verify_data_for_die_b,
            answers=("mu_for_b", "most_on_b_at_tau_01"),
            hints=(
                "offline IPO best-responds to the data: to favour B, show it data that B beats "
                "and that the other dice do not beat as much. Which die does B beat?",
                "B beats C with probability 5/9. With mu all on C the win rates are A: 4/9, "
                "B: 5/9, C: 1/2, and pi*(B) = 1/(1 + exp(-1/(9 tau)) + exp(-1/(18 tau))). "
                "Search over mu (a grid on the simplex) to see that nothing does better.",
            ),
            answer=(
                "mu = (0, 0, 1), all data on die C, which B beats. Then pi*(B) = 1/(1 + "
                "exp(-1/(9 tau)) + exp(-1/(18 tau))): 0.938 at tau = 0.02, but only 0.5255 at "
                "tau = 0.1, the most any data can give there. The win rates against any mu lie "
                "within 1/9 of each other, so at tau = 0.1 their exponents differ by at most "
                "1.11 and pi*(B) cannot approach 1; more than 0.9 needs tau below about 0.0242."
            ),
        ),
    ],
)


hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_soft_ipo_loss = EXERCISES.checker("soft_ipo_loss")
check_two_action_ipo = EXERCISES.checker("two_action_ipo")
check_offline_ipo_optimum = EXERCISES.checker("offline_ipo_optimum")
check_data_for_die_b = EXERCISES.checker("data_for_die_b")
