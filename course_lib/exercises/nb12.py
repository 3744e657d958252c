"""Notebook 12 (going further): reference solutions, cases, hints and answers of its exercises.

``check_<name>(your_function)`` checks it, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np
from scipy.special import expit, logit

from course_lib.exercises import Exercise, ExerciseSet
from course_lib.tabular import random_preference, regularised_nash


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


# ---- cases and properties --------------------------------------------------------------------
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


def _circular_is_antisymmetric_with_a_cycle(fn):
    for n, s in ((3, 0.5), (5, 0.8), (8, 1.0)):
        P = np.asarray(fn(n, s), dtype=float)
        if np.abs(P + P.T - 1).max() > 1e-12:
            return f"with n = {n}, strength = {s}: P + P^T is not 1 everywhere"
        if not _has_cycle(P):
            return f"with n = {n}, strength = {s}: the majority relation has no 3-cycle"
    return None


def _library_schedule(P, pi_ref, tau, betas, iters=3000, damping=0.5):
    return np.array([regularised_nash(P, pi_ref, tau, beta=b) for b in betas])


def _schedule_cases():
    rng = np.random.default_rng(11)
    cases = []
    for n, tau, betas in ((3, 1.0, (0.5, 0.25, 0.0)), (4, 0.5, (0.125, 0.0)), (5, 0.7, (0.3,))):
        cases.append(
            ((random_preference(n, seed=n), rng.dirichlet(np.ones(n) * 3), tau, betas), {})
        )
    return cases


def _length_cases():
    cases = []
    for n, lam in ((3, 0.5), (4, 0.0), (5, 2.0)):
        rng = np.random.default_rng(n)
        P = random_preference(n, seed=n, low=0.05, high=0.95)
        cases.append(((P, rng.integers(5, 60, size=n), lam), {}))
    return cases


def _length_penalty_is_antisymmetric(fn):
    for (P, lengths, lam), _ in _length_cases():
        Q = np.asarray(fn(P, lengths, lam), dtype=float)
        if np.abs(Q + Q.T - 1).max() > 1e-12:
            return "your penalised preference has P' + P'^T != 1"
    return None


EXERCISES = ExerciseSet(
    "nb12",
    [
        Exercise(
            "circular_preference",
            1,
            circular_preference,
            cases=lambda: [((n, s), {}) for n, s in ((3, 0.5), (5, 0.8), (8, 1.0))],
            atol=1e-12,
            properties=(
                (
                    "P + P^T = 1 and the majority relation has a cycle",
                    _circular_is_antisymmetric_with_a_cycle,
                ),
            ),
            hints=(
                "each entry depends only on the difference i - j of the positions on the "
                "circle; build the whole matrix of differences at once.",
                "with positions i = 0..n-1 as a column and j as a row, broadcasting gives the "
                "n x n matrix of i - j; apply 1/2 + (s/2) sin(2 pi (i - j)/n) to it elementwise.",
            ),
            answer=(
                "The uniform policy. The preference is circulant (it depends only on i - j "
                "modulo n), so rotating the responses maps the game to itself; the regularised "
                "equilibrium is unique, hence rotation-invariant, hence uniform (with a uniform "
                "reference), for every strength and tau."
            ),
        ),
        Exercise(
            "ipo_md_schedule",
            2,
            ipo_md_schedule,
            cases=_schedule_cases,
            expected=_library_schedule,
            atol=1e-6,
            hints=(
                "keep x = log pi; each iteration computes the mixture from x, the target policy "
                "from the mixture, and moves x half-way towards the target's log. Do not restart "
                "from pi_ref when beta changes.",
                "mixture: normalise (1 - beta) x + beta log pi_ref; target: normalise log pi_ref "
                "+ P @ mix / tau; update x <- (1 - d) x + d target, normalised (d = damping).",
            ),
            answer=(
                "At the stationary point of the last beta: a schedule that ends at beta = 0 "
                "ends at the regularised Nash equilibrium regularised_nash(P, pi_ref, tau), "
                "whatever the earlier betas; they only change the starting point of the last "
                "stage."
            ),
        ),
        Exercise(
            "length_penalised_preference",
            3,
            length_penalised_preference,
            cases=_length_cases,
            atol=1e-12,
            properties=(("P' + P'^T = 1 (antisymmetric)", _length_penalty_is_antisymmetric),),
            hints=(
                "work on the log-odds scale: take the log-odds of P, shift them by the length "
                "term, and map back to a probability.",
                "logit(P) = log(P / (1 - P)); subtract lam * (L_i - L_j) (broadcasting) and "
                "apply the sigmoid (scipy.special.expit).",
            ),
            answer=(
                "logit P[j, i] = -logit P[i, j] and the shift lam (L_j - L_i) = -lam (L_i - L_j), "
                "so P'[j, i] = sigmoid(-x) = 1 - sigmoid(x) = 1 - P'[i, j] with "
                "x = logit P[i, j] - lam (L_i - L_j)."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_circular_preference = EXERCISES.checker("circular_preference")
check_ipo_md_schedule = EXERCISES.checker("ipo_md_schedule")
check_length_penalised_preference = EXERCISES.checker("length_penalised_preference")
