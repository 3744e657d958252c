"""The regularised preference game: closed forms, fixed points, limits, Nash-MD's bound."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib.tabular import (
    best_response,
    bradley_terry,
    dice_preference,
    exploitability,
    geometric_mixture,
    kl,
    mirror_descent,
    nash_md,
    offline_ipo_solution,
    random_preference,
    regularised_exploitability,
    regularised_nash,
    three_rater_types,
    von_neumann_winner,
    win_rates,
)
from course_lib.tabular import games as games_module

UNIFORM3 = np.ones(3) / 3
# a cyclic game with unequal strengths: 1 > 2 (0.9), 2 > 3 (0.7), 3 > 1 (0.8) (notes/paper.md §5.6)
CYCLIC = np.array([[0.5, 0.9, 0.2], [0.1, 0.5, 0.7], [0.8, 0.3, 0.5]])


def games():
    """(name, P, pi_ref) triples covering cycles, rater mixtures, BT and a reference with a zero."""
    rng = np.random.default_rng(0)
    ref6 = rng.dirichlet(np.ones(6))
    ref6_zero = ref6.copy()
    ref6_zero[2] = 0.0
    ref6_zero /= ref6_zero.sum()
    return [
        ("dice", dice_preference(), UNIFORM3),
        ("cyclic", CYCLIC, np.array([0.2, 0.5, 0.3])),
        ("raters", three_rater_types(0.05), UNIFORM3),
        ("bt", bradley_terry([0.0, 1.0, -2.0, 0.5]), np.array([0.1, 0.2, 0.3, 0.4])),
        ("random6", random_preference(6, seed=1), ref6),
        ("random6_zero_ref", random_preference(6, seed=2), ref6_zero),
    ]


def fixed_point_residual(P, pi_ref, tau, beta, pi):
    """max |pi - T(pi)|, T(pi) ∝ pi_ref exp(P(. > mix)/tau), built from the public functions."""
    mix = geometric_mixture(pi, pi_ref, beta)
    return np.max(np.abs(pi - best_response(P, pi_ref, tau, mix)))


# ---- small pieces ----------------------------------------------------------------------------
def test_geometric_mixture_endpoints_and_example():
    pi, ref = np.array([0.6, 0.3, 0.1]), UNIFORM3
    np.testing.assert_allclose(geometric_mixture(pi, ref, 0.0), pi, atol=1e-15)
    np.testing.assert_allclose(geometric_mixture(pi, ref, 1.0), ref, atol=1e-15)
    # notes/paper.md §1.6: (0.6, 0.3, 0.1), uniform reference, beta = 0.5 -> (0.473, 0.334, 0.193)
    mix = geometric_mixture(pi, ref, 0.5)
    expected = np.sqrt(pi) / np.sqrt(pi).sum()
    np.testing.assert_allclose(mix, expected, atol=1e-15)
    np.testing.assert_allclose(mix, [0.473, 0.334, 0.193], atol=5e-4)


def test_geometric_mixture_handles_zeros_exactly():
    pi, ref = np.array([0.5, 0.5, 0.0]), np.array([0.0, 0.5, 0.5])
    np.testing.assert_array_equal(geometric_mixture(pi, ref, 0.3), [0.0, 1.0, 0.0])
    np.testing.assert_allclose(geometric_mixture(pi, ref, 0.0), pi)  # beta = 0 ignores pi_ref
    np.testing.assert_allclose(geometric_mixture(pi, ref, 1.0), ref)  # beta = 1 ignores pi
    with pytest.raises(ValueError, match="disjoint supports"):
        geometric_mixture([1.0, 0.0], [0.0, 1.0], 0.5)
    with pytest.raises(ValueError, match=r"beta=1\.5 is invalid.*>= 0 and <= 1"):
        geometric_mixture(pi, ref, 1.5)


def test_kl_values():
    p, q = np.array([0.5, 0.5]), np.array([0.25, 0.75])
    assert kl(p, q) == pytest.approx(0.5 * np.log(2) + 0.5 * np.log(2 / 3), abs=1e-15)
    assert kl(p, p) == 0.0
    assert kl([1.0, 0.0], [0.5, 0.5]) == pytest.approx(np.log(2))
    assert kl([0.5, 0.5], [1.0, 0.0]) == np.inf


def test_average_win_rate_against_yourself_is_half():
    for _, P, ref in games():
        for pi in (ref, np.random.default_rng(3).dirichlet(np.ones(P.shape[0]))):
            assert pi @ win_rates(P, pi) == pytest.approx(0.5, abs=1e-14)
            assert exploitability(P, pi) >= -1e-15


def test_exploitability_closed_forms_on_dice():
    P = dice_preference()
    assert exploitability(P, UNIFORM3) == pytest.approx(0.0, abs=1e-15)
    assert exploitability(P, [1.0, 0.0, 0.0]) == pytest.approx(5 / 9 - 1 / 2, abs=1e-15)


# ---- closed forms of the equilibrium -------------------------------------------------------
@pytest.mark.parametrize("p", [0.7, 0.9, 0.2])
@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_two_action_equilibrium_ratio(p, tau):
    # P(y1 > pi) - P(y2 > pi) = p - 1/2 for every pi, so pi1/pi2 = exp((p - 1/2)/tau)
    # (notes/paper.md §5.7: p = 0.7 gives exp(0.2/tau)). Note: exp((2p - 1)/tau) would be wrong.
    P = np.array([[0.5, p], [1 - p, 0.5]])
    pi = regularised_nash(P, [0.5, 0.5], tau)
    assert np.log(pi[0] / pi[1]) == pytest.approx((p - 0.5) / tau, abs=1e-12)
    if p == 0.7 and tau == 1.0:
        np.testing.assert_allclose(pi, [0.5498, 0.4502], atol=5e-5)


@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("beta", [0.0, 0.5])
def test_dice_equilibrium_is_uniform(tau, beta):
    np.testing.assert_allclose(regularised_nash(dice_preference(), UNIFORM3, tau, beta), 1 / 3)
    np.testing.assert_allclose(von_neumann_winner(dice_preference()), 1 / 3, atol=1e-9)


def test_three_rater_types_unregularised_equilibrium():
    eps = 0.05
    P = three_rater_types(eps)
    vnw = von_neumann_winner(P)
    np.testing.assert_allclose(vnw, [0.3583333, 0.3583333, 0.2833333], atol=1e-6)
    assert exploitability(P, vnw) == pytest.approx(0.0, abs=1e-9)


def test_von_neumann_winner_of_bradley_terry_is_the_best_response():
    # under BT the top-scored response beats every other one: a Condorcet winner
    P = bradley_terry([0.0, 1.0, -2.0, 0.5])
    np.testing.assert_allclose(von_neumann_winner(P), [0, 1, 0, 0], atol=1e-9)


def test_offline_ipo_example_depends_on_mu():
    # notes/paper.md §5.8: dice-like cycle (5/9), uniform pi_ref, tau = 0.1, mu = (0.6, 0.3, 0.1)
    P, tau, mu = dice_preference(), 0.1, np.array([0.6, 0.3, 0.1])
    pi = offline_ipo_solution(P, UNIFORM3, mu, tau)
    np.testing.assert_allclose(pi, [0.366, 0.248, 0.387], atol=1e-3)
    np.testing.assert_allclose(regularised_nash(P, UNIFORM3, tau), 1 / 3, atol=1e-14)
    # with mu = the equilibrium itself, offline IPO's optimum is the equilibrium
    star = regularised_nash(CYCLIC, UNIFORM3, tau)
    np.testing.assert_allclose(offline_ipo_solution(CYCLIC, UNIFORM3, star, tau), star, atol=1e-12)


# ---- the fixed point -----------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.01, 0.1, 1.0, 10.0])
@pytest.mark.parametrize("beta", [0.0, 0.125, 0.5, 0.9, 1.0])
def test_fixed_point_residual_below_1e12(tau, beta):
    for name, P, ref in games():
        sol = regularised_nash(P, ref, tau, beta, return_residual=True)
        pi, res = sol
        assert res <= 1e-12, (name, res)
        assert fixed_point_residual(P, ref, tau, beta, pi) <= 1e-12, name
        assert pi.sum() == pytest.approx(1.0, abs=1e-14)
        np.testing.assert_array_equal(pi[ref == 0], 0.0)


@pytest.mark.parametrize("tau", [0.05, 0.5, 3.0])
def test_equilibrium_is_a_best_response_to_itself_and_a_saddle_point(tau):
    rng = np.random.default_rng(4)
    for name, P, ref in games():
        star = regularised_nash(P, ref, tau)
        np.testing.assert_allclose(best_response(P, ref, tau, star), star, atol=1e-12)
        assert abs(regularised_exploitability(P, star, ref, tau)) < 1e-12, name
        support = ref > 0
        for _ in range(5):
            other = np.zeros_like(ref)
            other[support] = rng.dirichlet(np.ones(support.sum()))
            # P_tau(star > other) >= 1/2: no policy beats the equilibrium in the regularised game
            gain = star @ P @ other - tau * kl(star, ref) + tau * kl(other, ref)
            assert gain >= 0.5 - 1e-12, name
            assert regularised_exploitability(P, other, ref, tau) > 0


def test_small_tau_approaches_von_neumann_winner():
    for P in (three_rater_types(0.05), CYCLIC):
        vnw = von_neumann_winner(P)
        errors = [
            np.abs(regularised_nash(P, UNIFORM3, t) - vnw).max() for t in (1, 0.1, 0.01, 1e-3)
        ]
        assert all(a > b for a, b in zip(errors, errors[1:], strict=False)), errors
        assert errors[-1] < 5e-3
        assert exploitability(P, regularised_nash(P, UNIFORM3, 1e-3)) < 1e-3


def test_large_tau_approaches_reference():
    P, ref = CYCLIC, np.array([0.2, 0.5, 0.3])
    errors = [np.abs(regularised_nash(P, ref, t) - ref).max() for t in (1, 10, 100, 1e4)]
    assert all(a > b for a, b in zip(errors, errors[1:], strict=False))
    assert errors[-1] < 1e-4


@pytest.mark.parametrize("beta", [0.125, 0.25, 0.5, 0.9])
def test_ipo_md_mixture_is_equilibrium_at_temperature_tau_over_one_minus_beta(beta):
    # Calandriello Prop. 5.2 (notes/paper.md §4.1, §4.3). Derivation: if
    # pi ∝ ref exp(P mix / tau) then log mix = (1-beta) log pi + beta log ref + c
    # = log ref + (1-beta) P mix / tau + c', i.e. mix is the beta = 0 equilibrium at
    # tau / (1 - beta). Here the two sides are computed separately; the beta-point's own
    # residual is checked in test_fixed_point_residual_below_1e12.
    for name, P, ref in games():
        tau = 0.3
        pi_beta = regularised_nash(P, ref, tau, beta)
        mix = geometric_mixture(pi_beta, ref, beta)
        hot = regularised_nash(P, ref, tau / (1 - beta))
        np.testing.assert_allclose(mix, hot, atol=1e-12, err_msg=name)
        if name == "cyclic":  # and the beta-point itself is not the beta = 0 equilibrium
            assert np.abs(pi_beta - regularised_nash(P, ref, tau)).max() > 1e-3


def test_extragradient_alone_converges_to_the_same_point():
    # the provably convergent part of the solver (Cen, Wei & Chi 2021), run without Newton
    P, ref, tau = CYCLIC, np.array([0.2, 0.5, 0.3]), 0.2
    game = games_module._Game(P, np.log(ref), tau, 0.0)
    x = games_module._extragradient(game, np.log(ref), 400)
    np.testing.assert_allclose(np.exp(x), regularised_nash(P, ref, tau), atol=1e-12)


@pytest.mark.slow
def test_thousand_actions_solve_to_the_rounding_level():
    """At the size of benchmarks/bench_nash.py (whose RESULTS section has the times: speed is
    measured there, as a ratio, never asserted here)."""
    n = 1000
    P = random_preference(n, seed=5)
    ref = np.random.default_rng(5).dirichlet(np.ones(n))
    for tau, beta in [(0.01, 0.0), (0.1, 0.5)]:
        pi, res = regularised_nash(P, ref, tau, beta, return_residual=True)
        assert res <= 1e-12


def jacobian(P, m, s, c):
    """J = I - dT/dx = I - (I - 1 s^T) c P (diag m - m m^T), assembled densely in O(n^2)."""
    A = c * (P * m[None, :] - np.outer(P @ m, m))  # c P (diag m - m m^T)
    return np.eye(len(m)) - (A - np.outer(np.ones(len(m)), s @ A))


def dense_newton_nash(P, pi_ref, tau, steps=20):
    """The beta = 0 equilibrium by full Newton steps with the dense Jacobian of
    F(x) = x - T(x): the solver before issue 16, for reference (fine from pi_ref at tau >= 0.05)."""
    log_ref = np.log(pi_ref)
    x = log_ref.copy()
    for _ in range(steps):
        m = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
        u = log_ref + P @ m / tau
        t = u - u.max() - np.log(np.exp(u - u.max()).sum())
        F = x - t
        if np.abs(F).max() < 1e-14:  # the rounding floor of F is about 1e-15
            break
        x = x + np.linalg.solve(jacobian(P, m, np.exp(t), 1 / tau), -F)
        x -= x.max() + np.log(np.exp(x - x.max()).sum())
    return np.exp(x)


@pytest.mark.parametrize("tau", [0.05, 0.5])
def test_large_game_agrees_with_the_dense_newton_solve(tau):
    # 400 responses: above the size where the Newton systems go to conjugate gradients
    n = 400
    assert n >= games_module._KRYLOV_MIN_N
    P = random_preference(n, seed=7)
    ref = np.random.default_rng(7).dirichlet(np.ones(n))
    pi, res = regularised_nash(P, ref, tau, return_residual=True)
    assert res <= 1e-15
    assert fixed_point_residual(P, ref, tau, 0.0, pi) <= 1e-15
    np.testing.assert_allclose(pi, dense_newton_nash(P, ref, tau), rtol=1e-10, atol=1e-15)
    # and the beta point, through its own equation
    pi_b, res_b = regularised_nash(P, ref, tau, 0.5, return_residual=True)
    assert res_b <= 1e-15 and fixed_point_residual(P, ref, tau, 0.5, pi_b) <= 1e-15


@pytest.mark.parametrize(
    ("tau", "beta", "route"),
    [(0.1, 0.0, "cg"), (0.2, 0.5, "cg"), (0.1, 0.3, "dense"), (0.002, 0.0, "cg gives up")],
)
def test_structured_newton_step_is_the_dense_newton_step(tau, beta, route):
    # the step through I - c Pi S Pi (by CG, or by LU when told to or when CG runs out of its
    # budget) must be J^{-1}(-F) with the full J = I - (I - 1 s^T) c P (diag m - m m^T)
    n = 300
    P = random_preference(n, seed=3)
    ref = np.random.default_rng(3).dirichlet(np.ones(n))
    game = games_module._Game(P, np.log(ref), tau, beta)
    game.dense = route == "dense"
    x = np.log(ref) + np.random.default_rng(4).normal(size=n)
    F, dx = game.newton_step(x, rtol=1e-14)
    assert game.dense is (route != "cg")
    m = game.mix(x)
    s, c = np.exp(game.target(m)), (1 - beta) / tau
    np.testing.assert_allclose(dx, np.linalg.solve(jacobian(P, m, s, c), -F), rtol=1e-9, atol=1e-12)


def test_regularised_nash_rejects_bad_inputs():
    with pytest.raises(ValueError, match=r"tau=-1(\.0)? is invalid.*> 0"):
        regularised_nash(CYCLIC, UNIFORM3, -1.0)
    with pytest.raises(ValueError, match=r"tau=0(\.0)? is invalid.*> 0"):
        regularised_nash(CYCLIC, UNIFORM3, 0)
    with pytest.raises(ValueError, match=r"beta=-0\.1 is invalid.*>= 0 and <= 1"):
        regularised_nash(CYCLIC, UNIFORM3, 1.0, beta=-0.1)
    with pytest.raises(ValueError, match="pi_ref sums to 0.9"):
        regularised_nash(CYCLIC, [0.3, 0.3, 0.3], 1.0)
    with pytest.raises(ValueError, match="pi_ref has 2 entries, expected 3"):
        regularised_nash(CYCLIC, [0.5, 0.5], 1.0)
    with pytest.raises(ValueError, match=r"P\[0, 1\] \+ P\[1, 0\]"):
        regularised_nash([[0.5, 0.9], [0.9, 0.5]], [0.5, 0.5], 1.0)


# ---- Nash-MD and mirror descent ------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.2, 0.7, 2.0])
def test_nash_md_last_iterate_bound(tau):
    # NLHF Theorem 1: with eta_t = 2/(tau (t+2)), KL(pi*_tau, pi_T) <= 8 / (tau^2 (T + 1))
    T = 300
    for name, P, ref in games():
        star = regularised_nash(P, ref, tau)
        iterates = nash_md(P, ref, tau, lambda t, tau=tau: 2 / (tau * (t + 2)), T)
        assert iterates.shape == (T + 1, P.shape[0])
        for t in range(T + 1):
            assert kl(star, iterates[t]) <= 8 / (tau**2 * (t + 1)), (name, t)
        assert kl(star, iterates[-1]) < 1e-3, name


def test_nash_md_constant_step_converges_to_the_beta_point():
    # notes/paper.md §4.5: with a constant eta the limit solves pi ∝ ref exp(P(. > mix)/tau),
    # mix = geometric_mixture(pi, ref, eta * tau): the IPO-MD point with beta = eta * tau
    tau, eta = 0.7, 0.5
    for name, P, ref in games():
        iterates = nash_md(P, ref, tau, eta, 400)
        expected = regularised_nash(P, ref, tau, beta=eta * tau)
        np.testing.assert_allclose(iterates[-1], expected, atol=1e-10, err_msg=name)


def test_mirror_descent_without_mixture_cycles_where_nash_md_converges():
    tau, eta, T = 0.1, 8.0, 1000
    star = regularised_nash(CYCLIC, UNIFORM3, tau)
    omd = mirror_descent(CYCLIC, UNIFORM3, tau, eta, T)
    md = nash_md(CYCLIC, UNIFORM3, tau, eta, T)
    assert np.ptp(omd[-300:], axis=0).max() > 0.1  # still moving: an orbit, not a limit
    assert np.ptp(md[-300:], axis=0).max() < 1e-10  # Nash-MD with the same step settles ...
    bias = np.abs(md[-1] - star).max()
    assert bias > 1e-2  # ... but on the more regularised beta = eta * tau point
    np.testing.assert_allclose(md[-1], regularised_nash(CYCLIC, UNIFORM3, tau, eta * tau))
    # the equilibrium is a fixed point of plain mirror descent too
    np.testing.assert_allclose(mirror_descent(CYCLIC, UNIFORM3, tau, eta, 5, pi0=star)[-1], star)


def test_unregularised_self_play_moves_away_from_the_equilibrium():
    # tau = 0: multiplicative weights; KL(vnw, pi_t) never decreases on a game with an interior
    # equilibrium (a classical property of MWU in zero-sum games)
    vnw = von_neumann_winner(CYCLIC)
    iterates = mirror_descent(CYCLIC, UNIFORM3, 0.0, 0.5, 500)
    kls = np.array([kl(vnw, q) for q in iterates])
    assert np.all(np.diff(kls) > 0) and kls[-1] > kls[0] + 0.3


def test_nash_md_keeps_zero_reference_mass_at_zero_and_starts_at_pi0():
    P, ref = random_preference(4, seed=0), np.array([0.5, 0.0, 0.25, 0.25])
    pi0 = np.array([0.1, 0.0, 0.6, 0.3])
    iterates = nash_md(P, ref, 0.5, 1.0, 20, pi0=pi0)
    np.testing.assert_array_equal(iterates[0], pi0)
    np.testing.assert_array_equal(iterates[:, 1], 0.0)
    np.testing.assert_allclose(iterates.sum(axis=1), 1.0, atol=1e-14)


def test_nash_md_rejects_bad_steps():
    with pytest.raises(ValueError, match=r"eta_0 \* tau = 3.0 \* 0.5 = 1.5 > 1"):
        nash_md(CYCLIC, UNIFORM3, 0.5, 3.0, 10)
    with pytest.raises(ValueError, match=r"eta_2 = -1"):
        nash_md(CYCLIC, UNIFORM3, 0.5, lambda t: 1.0 if t < 2 else -1.0, 10)
    with pytest.raises(ValueError, match="steps must be an integer >= 0"):
        nash_md(CYCLIC, UNIFORM3, 0.5, 1.0, -3)
    with pytest.raises(ValueError, match="tau=.* is invalid.*> 0"):
        nash_md(CYCLIC, UNIFORM3, 0.0, 1.0, 3)
    with pytest.raises(ValueError, match="pi0 sums to 0.5"):
        nash_md(CYCLIC, UNIFORM3, 0.5, 1.0, 3, pi0=[0.25, 0.25, 0.0])


def test_exercise_references_agree_with_the_library():
    # the notebooks' reference solutions are written independently of course_lib.tabular; each
    # checker passing the library's function cross-checks both
    from course_lib.exercises import nb01, nb02, nb04
    from course_lib.tabular import dice_preference as dice

    def two_action(p, tau):
        return regularised_nash(np.array([[0.5, p], [1 - p, 0.5]]), [0.5, 0.5], tau)

    def lib_step(P, pi, ref, tau, eta):
        return nash_md(P, ref, tau, eta, 1, pi0=pi)[1]

    def lib_omd(P, pi, ref, tau, eta):
        return mirror_descent(P, ref, tau, eta, 1, pi0=pi)[1]

    results = [
        nb01.check_win_probability(lambda P, a, b: a @ P @ b),
        nb01.check_dice_matrix(dice),
        nb01.check_bradley_terry_matrix(bradley_terry),
        nb02.check_best_response(best_response),
        nb02.check_regularised_gap(regularised_exploitability),
        nb02.check_two_action_nash(two_action),
        nb04.check_nash_md_step(lib_step),
        nb04.check_omd_step(lib_omd),
        nb04.check_constant_step_limit(
            lambda P, ref, tau, eta: regularised_nash(P, ref, tau, eta * tau)
        ),
    ]
    for r in results:
        assert r.passed, str(r)
    # and a wrong answer is reported, not raised
    bad = nb02.check_best_response(lambda P, ref, tau, opp: ref)
    assert not bad.passed and "hint" in str(bad)
    stub = nb04.check_omd_step(lambda *a: (_ for _ in ()).throw(NotImplementedError()))
    assert not stub.passed and "NotImplementedError" in str(stub)


def test_nash_explorer_draws_a_static_figure_and_redraws_on_change():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from course_lib.widgets import nash_explorer

    games = {"cycle": (CYCLIC, ["a", "b", "c"]), "dice": (dice_preference(), ["A", "B", "C"])}
    box = nash_explorer(games, pi_ref=[0.2, 0.5, 0.3], tau=0.1)
    assert plt.get_fignums() == []  # the figures are displayed and closed, not left open
    controls = box.children[0].children
    controls[1].value = 0.01  # the tau slider: must redraw without error
    controls[0].value = "dice"
    plt.close("all")
