"""Notebook 04 (Nash-MD): reference solutions, cases, hints and answers of its exercises.

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np
from scipy.optimize import brentq

from course_lib.exercises import Case, Exercise, ExerciseSet, as_number
from course_lib.tabular import (
    dice_preference,
    geometric_mixture,
    random_preference,
    regularised_nash,
)

#: The notebook's cycle, reference and temperature (section 1).
CYCLE = np.array([[0.5, 0.9, 0.2], [0.1, 0.5, 0.7], [0.8, 0.3, 0.5]])
CYCLE_REF = np.array([0.2, 0.5, 0.3])
CYCLE_TAU = 0.1
#: Exercise 2: "roughly" means within this distance of the exact threshold.
ETA_TOLERANCE = 0.1


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


def omd_threshold():
    """Bisect on the constant step: mirror descent from pi_ref converges when its steps shrink
    below 1e-10 within 20000 iterations; below the threshold it does, above it it orbits."""
    P, pi_ref, tau = CYCLE, CYCLE_REF, CYCLE_TAU

    def converges(eta, steps=20_000):
        pi = pi_ref.copy()
        for _ in range(steps):
            pi, previous = omd_step(P, pi, pi_ref, tau, eta), pi
        return np.abs(pi - previous).max() < 1e-10

    lo, hi = 1.0, 1.0 / tau  # converges at 1; eta tau <= 1 bounds the step
    while hi - lo > 0.02:
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if converges(mid) else (lo, mid)
    return (lo + hi) / 2


def constant_step_limit(P, pi_ref, tau, eta):
    """Nash-MD with a constant step converges to the pi with pi ∝ pi_ref exp(P(. > mix)/tau),
    mix the geometric mixture with weight beta = eta * tau: the IPO-MD point at beta = eta tau."""
    return regularised_nash(P, pi_ref, tau, beta=eta * tau)


def step_for_temperature(tau, tau_mix):
    """Section 4: the limit's mixture is the Nash equilibrium at tau / (1 - beta), beta = eta tau.
    Solving tau / (1 - eta tau) = tau_mix for eta: eta = (tau_mix - tau) / (tau tau_mix)."""
    return (tau_mix - tau) / (tau * tau_mix)


# ---- the exact threshold of exercise 2 -------------------------------------------------------
def omd_spectral_radius(eta, P=CYCLE, pi_ref=CYCLE_REF, tau=CYCLE_TAU) -> float:
    """Spectral radius of the mirror-descent map, linearised at its fixed point pi*_tau, in log
    coordinates modulo constants. Below 1 the iterates converge near pi*_tau; above 1 they leave."""
    pi = regularised_nash(P, pi_ref, tau)
    softmax_jacobian = np.diag(pi) - np.outer(pi, pi)
    J = (1 - eta * tau) * np.eye(len(pi)) + eta * P @ softmax_jacobian
    # coordinates x_1..x_{n-1} with x_0 = 0: subtract the first row's change from every row
    M = (J - J[:1])[1:, 1:]
    return float(np.max(np.abs(np.linalg.eigvals(M))))


def omd_exact_threshold() -> float:
    """The smallest constant eta at which mirror descent on the notebook's cycle stops converging:
    where the spectral radius of the linearised map crosses 1 (about 5.07)."""
    return float(brentq(lambda e: omd_spectral_radius(e) - 1.0, 1.0, 1.0 / CYCLE_TAU, xtol=1e-10))


def _verify_threshold(eta_stop) -> list[str]:
    eta, problems = as_number(eta_stop, "eta_stop")
    if problems:
        return problems
    exact = omd_exact_threshold()
    if eta < exact - ETA_TOLERANCE:
        return [f"at eta = {eta:.3g} mirror descent still converges on the cycle: go higher"]
    if eta > exact + ETA_TOLERANCE:
        return [
            f"eta = {eta:.3g} is too large: mirror descent already stops converging at smaller "
            "steps (test convergence with more iterations, or bisect)"
        ]
    return []


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


def _temperature_cases():
    return [
        Case((tau, tau_mix))
        for tau, tau_mix in ((0.1, 0.125), (0.1, 0.5), (0.5, 1.0), (0.2, 0.2), (0.05, 3.0))
    ]


def _the_mixture_is_the_hotter_equilibrium(fn):
    for tau, tau_mix in ((0.1, 0.125), (0.1, 0.5)):
        eta = float(fn(tau, tau_mix))
        limit = regularised_nash(CYCLE, CYCLE_REF, tau, beta=eta * tau)
        mix = geometric_mixture(limit, CYCLE_REF, eta * tau)
        if np.abs(mix - regularised_nash(CYCLE, CYCLE_REF, tau_mix)).max() > 1e-8:
            return "on the cycle, the limit's mixture is not the Nash equilibrium at tau_mix"
    return None


EXERCISES = ExerciseSet(
    "nb04",
    [
        Exercise(
            "nash_md_step",
            1,
            nash_md_step,
            cases=_cases,
            atol=1e-10,
            hints=(
                "two stages: first the geometric mixture of pi and pi_ref (the regularised "
                "opponent), then a multiplicative-weights step from the mixture against the "
                "mixture itself. Work with logs.",
                "log mix = (1 - eta tau) log pi + eta tau log pi_ref - constant (normalise it!), "
                "then log pi_next = log mix + eta P @ mix - constant.",
            ),
        ),
        Exercise(
            "omd_step",
            2,
            omd_step,
            cases=_cases,
            atol=1e-10,
            hints=(
                "the same prior as Nash-MD, pi^(1 - eta tau) pi_ref^(eta tau); only the opponent "
                "in the preference term changes.",
                "log pi_next = (1 - eta tau) log pi + eta tau log pi_ref + eta P @ pi - constant.",
            ),
        ),
        Exercise(
            "omd_threshold",
            2,
            omd_threshold,
            title="the smallest constant step at which mirror descent stops converging",
            verify=_verify_threshold,
            answers=("eta_stop",),
            hints=(
                "run your omd_step many times from pi_ref for one eta and see whether the steps "
                "|pi_{t+1} - pi_t| go to 0; then search over eta (a scan, or a bisection "
                "between an eta that converges and one that does not).",
                "take 20000 steps and call it converged when the last step is below 1e-10; "
                "bisect between eta = 1 (converges) and eta = 1/tau = 10 (the largest allowed) "
                "until the interval is shorter than 0.05.",
            ),
            answer=(
                "About eta = 5.07 (eta tau = 0.51): there the linearised mirror-descent map at "
                "pi*_tau stops contracting (its spectral radius crosses 1) and the iterates "
                "settle on an orbit around pi*_tau, whose size grows with eta (section 3's "
                "eta = 8 orbit). Nash-MD converges for every eta tau <= 1."
            ),
        ),
        Exercise(
            "constant_step_limit",
            3,
            constant_step_limit,
            cases=lambda: [((P, ref, tau, eta), {}) for (P, _, ref, tau, eta), _ in _cases()],
            atol=1e-8,
            hints=(
                "section 4 wrote down the fixed point of the Nash-MD update with eta_t = eta: it "
                "is the stationary point of a problem regularised_nash already solves.",
                "the fixed point is pi ∝ pi_ref exp(P(. > mix)/tau) with mix ∝ pi^(1-beta) "
                "pi_ref^beta: which beta, as a function of eta and tau?",
            ),
        ),
        Exercise(
            "step_for_temperature",
            3,
            step_for_temperature,
            cases=_temperature_cases,
            atol=1e-10,
            properties=(
                (
                    "with it, the limit's mixture is the Nash equilibrium at tau_mix",
                    _the_mixture_is_the_hotter_equilibrium,
                ),
            ),
            hints=(
                "section 4 showed that the limit's mixture is the Nash equilibrium at a higher "
                "temperature, a function of tau and beta = eta tau. Invert that function.",
                "tau / (1 - eta tau) = tau_mix; solve for eta.",
            ),
            answer=(
                "eta = (tau_mix - tau) / (tau tau_mix), so beta = eta tau = 1 - tau / tau_mix: "
                "e.g. tau = 0.1, tau_mix = 0.5 needs eta = 8 (section 4's last row). tau_mix = "
                "tau needs eta = 0 (a vanishing step, no bias), and eta -> 1/tau sends tau_mix to "
                "infinity: the mixture becomes pi_ref. A larger constant step solves a hotter, "
                "more regularised game."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_nash_md_step = EXERCISES.checker("nash_md_step")
check_omd_step = EXERCISES.checker("omd_step")
check_omd_threshold = EXERCISES.checker("omd_threshold")
check_constant_step_limit = EXERCISES.checker("constant_step_limit")
check_step_for_temperature = EXERCISES.checker("step_for_temperature")
