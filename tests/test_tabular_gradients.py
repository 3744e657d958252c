"""course_lib.tabular.gradients: the paper's statements about expected gradients, checked exactly.

Every loss comes from course_lib.losses (autograd), so these tests are about the one definition the
language-model trainer uses too.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib.losses import ipo_loss
from course_lib.tabular import (
    offline_ipo_solution,
    random_preference,
    regularised_nash,
    win_rates,
)
from course_lib.tabular.gradients import (
    expected_contrastive_gradient,
    expected_ipo_md_gradient,
    expected_nash_md_pg_gradient,
    expected_pair_loss,
    nash_md_pg_objective,
    pair_sampler,
    sample_contrastive_gradients,
    sample_nash_md_pg_gradients,
    sequence_level_mixture,
    single_thread,
    softmax,
    token_level_mixture,
    train_offline_bandit,
    train_offline_bandits,
    train_online_bandit,
    train_population_offline,
)


def _game(seed, n=4):
    rng = np.random.default_rng(seed)
    P = random_preference(n, seed=seed)
    pi_ref = rng.dirichlet(np.ones(n)) * 0.9 + 0.1 / n
    theta = rng.normal(size=n)
    return P, pi_ref, theta


def _fd(f, x, eps=1e-6):
    g = np.zeros_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = eps
        g[i] = (f(x + e) - f(x - e)) / (2 * eps)
    return g


# ------------------------------------------------------------------------------------------
# exact expected gradients
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("loss", ["ipo", "dpo", "slic"])
@pytest.mark.parametrize("beta", [0.0, 0.3])
def test_expected_gradient_matches_finite_differences_with_frozen_sampler(loss, beta):
    P, pi_ref, theta = _game(0)
    tau = 0.7
    mu = pair_sampler(theta, pi_ref, beta)  # SG: frozen at the current iterate

    def value(th):
        t = torch.tensor(th, dtype=torch.float64)
        return expected_pair_loss(t, P, pi_ref, tau, mu, loss).item()

    got = expected_contrastive_gradient(theta, P, pi_ref, tau, beta, loss=loss)
    np.testing.assert_allclose(got, _fd(value, theta), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("beta", [0.0, 0.25, 0.8])
def test_ipo_md_gradient_closed_form(beta):
    # notes/paper.md §4.2 step 5: dL/dtheta_z = 4 pi'(z) [A(z) - c] with
    # A = l - (P(. > pi') - 1/2)/tau, c = E_pi'[l], l = log(pi/pi_ref)
    P, pi_ref, theta = _game(1, n=5)
    tau = 0.4
    pi, mix = softmax(theta), pair_sampler(theta, pi_ref, beta)
    ell = np.log(pi / pi_ref)
    A = ell - (P @ mix - 0.5) / tau
    want = 4 * mix * (A - mix @ ell)
    np.testing.assert_allclose(
        expected_ipo_md_gradient(theta, P, pi_ref, tau, beta), want, atol=1e-12
    )


def test_nash_md_pg_gradient_is_minus_the_objective_gradient():
    # NLHF App. F: the estimator's mean ascends P(pi > sg[pi']) - tau KL(pi, pi_ref)
    P, pi_ref, theta = _game(2)
    tau, beta = 0.5, 0.4
    opp = pair_sampler(theta, pi_ref, beta)
    fd = _fd(lambda th: nash_md_pg_objective(th, P, pi_ref, tau, opponent=opp), theta)
    np.testing.assert_allclose(
        expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta), -fd, rtol=1e-6, atol=1e-8
    )
    # and its closed form -E_pi[(e_y - pi)(P(y > pi') - 1/2 - tau l(y))]
    pi = softmax(theta)
    B = P @ opp - 0.5 - tau * np.log(pi / pi_ref)
    np.testing.assert_allclose(
        expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta),
        -(pi * B - pi * (pi @ B)),
        atol=1e-12,
    )


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
@pytest.mark.parametrize("tau", [0.1, 0.7, 3.0])
def test_online_ipo_gradient_is_4_over_tau_times_nash_md_pg(seed, tau):
    # The paper's first result (Calandriello Prop. 4.2): at beta = 0 the expected online-IPO
    # gradient is a positive multiple of the self-play (Nash-MD-PG, beta = 0) gradient. With the
    # per-pair loss p(h-a)^2 + (1-p)(-h-a)^2 the constant is exactly 4/tau (notes/paper.md §4.2).
    P, pi_ref, theta = _game(seed, n=3 + seed)
    g_ipo = expected_ipo_md_gradient(theta, P, pi_ref, tau, 0.0)
    g_pg = expected_nash_md_pg_gradient(theta, P, pi_ref, tau, 0.0)
    np.testing.assert_allclose(g_ipo, (4 / tau) * g_pg, rtol=1e-10, atol=1e-12)
    assert np.linalg.norm(g_pg) > 1e-3  # not the trivial 0 = 0


@pytest.mark.parametrize("beta", [0.125, 0.3, 0.7])
def test_ipo_md_gradient_versus_nash_md_pg_for_beta_positive(beta):
    # notes/paper.md §4.4: for beta > 0 the exact IPO-MD gradient is NOT a positive multiple of the
    # Nash-MD-PG(beta) direction, and NOT "same integrand g, samples from pi'" unless the
    # log-ratio is centred by c = E_pi'[l]: the extra term -4c(pi' - pi) is real.
    P, pi_ref, theta = _game(1)
    tau = 0.7
    pi, mix = softmax(theta), pair_sampler(theta, pi_ref, beta)
    ell = np.log(pi / pi_ref)
    c = mix @ ell
    exact = expected_ipo_md_gradient(theta, P, pi_ref, tau, beta)
    g_pg = expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta)
    ratio = exact / g_pg
    assert ratio.max() - ratio.min() > 0.5  # no common factor

    def off_policy(shift):  # -(4/tau) E_{y~pi'}[(e_y - pi)(P(y > pi') - 1/2 - tau (l(y) - shift))]
        B = P @ mix - 0.5 - tau * (ell - shift)
        return -(4 / tau) * (mix * B - pi * (mix @ B))

    assert np.abs(off_policy(0.0) - exact).max() > 1e-2  # S-A's quoted form misses a term
    np.testing.assert_allclose(off_policy(0.0) - 4 * c * (mix - pi), exact, atol=1e-12)
    np.testing.assert_allclose(off_policy(c), exact, atol=1e-12)  # centred log-ratio: exact


@pytest.mark.parametrize("beta", [0.0, 0.125, 0.5])
def test_stationary_points_are_regularised_nash(beta):
    # Prop. 4.1 (beta = 0) and Prop. 5.1: both gradients vanish at regularised_nash(..., beta),
    # and not at the beta = 0 equilibrium when beta > 0
    P, pi_ref, _ = _game(4, n=5)
    tau = 0.3
    star = regularised_nash(P, pi_ref, tau, beta)
    theta = np.log(star)
    assert np.abs(expected_ipo_md_gradient(theta, P, pi_ref, tau, beta)).max() < 1e-10
    assert np.abs(expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta)).max() < 1e-10
    if beta > 0:
        ne = np.log(regularised_nash(P, pi_ref, tau, 0.0))
        assert np.abs(expected_ipo_md_gradient(ne, P, pi_ref, tau, beta)).max() > 1e-3
        # Prop. 5.2: the stationary point's mixture is the equilibrium at temperature tau/(1-beta)
        np.testing.assert_allclose(
            geometric_mix := pair_sampler(theta, pi_ref, beta),
            regularised_nash(P, pi_ref, tau / (1 - beta), 0.0),
            atol=1e-9,
        )
        assert geometric_mix.sum() == pytest.approx(1.0)


def test_exact_gradient_descent_reaches_the_equilibrium_and_rescaled_trajectories_coincide():
    P, pi_ref, _ = _game(5, n=4)
    tau, beta, lr, steps = 0.5, 0.25, 0.1, 200
    ipo = train_online_bandit(P, pi_ref, tau, "ipo", beta, steps, lr)
    star = regularised_nash(P, pi_ref, tau, beta)
    assert np.abs(ipo.final_policy - star).max() < 1e-6
    # beta = 0: SGD with lr on online IPO == SGD with (4/tau) lr on Nash-MD-PG, step for step
    a = train_online_bandit(P, pi_ref, tau, "ipo", 0.0, 50, lr)
    b = train_online_bandit(P, pi_ref, tau, "nash_md_pg", 0.0, 50, 4 * lr / tau)
    np.testing.assert_allclose(a.policies, b.policies, atol=1e-12)


# ------------------------------------------------------------------------------------------
# Monte-Carlo estimators are unbiased
# ------------------------------------------------------------------------------------------
K_SE = 5.0  # |mean - exact| <= K_SE standard errors in every coordinate (seeded, deterministic)


@pytest.mark.parametrize(
    ("kind", "loss", "beta", "labels"),
    [
        ("contrastive", "ipo", 0.0, "soft"),
        ("contrastive", "ipo", 0.3, "soft"),
        ("contrastive", "ipo", 0.3, "sampled"),
        ("contrastive", "dpo", 0.0, "soft"),
        ("contrastive", "slic", 0.2, "soft"),
        ("pg", None, 0.0, "soft"),
        ("pg", None, 0.4, "sampled"),
    ],
)
def test_monte_carlo_estimators_are_unbiased(kind, loss, beta, labels):
    P, pi_ref, theta = _game(6)
    tau, n = 0.6, 40_000
    rng = np.random.default_rng(123)
    if kind == "pg":
        samples = sample_nash_md_pg_gradients(theta, P, pi_ref, tau, beta, n, rng, labels)
        exact = expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta)
    else:
        samples = sample_contrastive_gradients(theta, P, pi_ref, tau, beta, n, rng, loss, labels)
        exact = expected_contrastive_gradient(theta, P, pi_ref, tau, beta, loss=loss)
    se = samples.std(axis=0, ddof=1) / np.sqrt(n)
    assert samples.shape == (n, 4)
    assert np.all(np.abs(samples.mean(0) - exact) <= K_SE * se + 1e-12)
    assert np.all(se < 0.05 * np.abs(exact).max())  # the test has power: errors are small


def test_sampled_labels_have_more_variance_than_soft_labels():
    P, pi_ref, theta = _game(7)
    args = (theta, P, pi_ref, 0.6, 0.0, 20_000)
    soft = sample_contrastive_gradients(*args, np.random.default_rng(0), "ipo", "soft")
    hard = sample_contrastive_gradients(*args, np.random.default_rng(0), "ipo", "sampled")
    assert hard.var(0).sum() > soft.var(0).sum()


# ------------------------------------------------------------------------------------------
# closed forms of the toy examples (notes/paper.md §5)
# ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_two_action_ipo_closed_form(tau):
    # notes/paper.md §5.1: P(y1 > y2) = 1, mu = pi_ref uniform: pi*(y1) = sigmoid(0.5/tau)
    P = np.array([[0.5, 1.0], [0.0, 0.5]])
    uniform = np.array([0.5, 0.5])
    want = 1 / (1 + np.exp(-0.5 / tau))
    np.testing.assert_allclose(offline_ipo_solution(P, uniform, uniform, tau)[0], want, atol=1e-12)
    # exact offline gradient vanishes there ...
    theta = np.log([want, 1 - want])
    g = expected_contrastive_gradient(theta, P, uniform, tau, mu=uniform)
    assert np.abs(g).max() < 1e-12
    # ... and Adam on the dataset {(y1 > y2)} gets there (h* = 1/(2 tau)); one tau is enough
    if tau == 1.0:
        run = train_offline_bandit([(0, 1)], 2, tau, "ipo", steps=1000, lr=0.01, batch=None)
        assert run.final_policy[0] == pytest.approx(want, abs=1e-4)


@pytest.mark.slow
@pytest.mark.parametrize("tau", [0.1, 5.0])
def test_dpo_goes_greedy_on_deterministic_preferences_ipo_does_not(tau):
    # notes/paper.md §5.2: DPO on a total order keeps pushing pi(a) up whatever tau (its loss has
    # no finite minimiser: sigma(tau h) < 1 always); IPO stops at its least-squares point. Same on
    # {a>b, b>c}, where the pair (a, c) is never observed: IPO's h(a,b) = h(b,c) = 1/(2 tau).
    for data, ipo_logits in [
        ([(0, 1), (1, 2), (0, 2)], np.array([2, 1, 0]) / (3 * tau)),
        ([(0, 1), (1, 2)], np.array([2, 1, 0]) / (2 * tau)),
    ]:
        kw = dict(steps=600, lr=0.3, batch=None, optimizer="sgd")  # full-batch gradient descent
        dpo = train_offline_bandit(data, 3, tau, "dpo", **kw)
        ipo = train_offline_bandit(data, 3, tau, "ipo", **kw)
        last = dpo.policies[len(dpo.policies) // 2 :, 0]
        assert np.all(np.diff(last) > 0)  # still climbing at the end
        assert dpo.final_policy[0] > softmax(ipo_logits)[0] + (0.3 if tau > 1 else -0.02)
        np.testing.assert_allclose(ipo.final_policy, softmax(ipo_logits), atol=1e-9)


def test_offline_ipo_training_reaches_offline_solution_not_nash():
    # notes/paper.md §5.8: cyclic P = 5/9, uniform pi_ref, tau = 0.1, mu = (0.6, 0.3, 0.1)
    P = np.full((3, 3), 0.5)
    for i, j in [(0, 1), (1, 2), (2, 0)]:
        P[i, j], P[j, i] = 5 / 9, 4 / 9
    uniform, mu, tau = np.ones(3) / 3, np.array([0.6, 0.3, 0.1]), 0.1
    # Adam on the exact population loss of pairs drawn from mu with soft labels P
    run = train_population_offline(P, uniform, tau, mu, "ipo", steps=1500, lr=0.05)
    got = run.final_policy
    want = offline_ipo_solution(P, uniform, mu, tau)
    np.testing.assert_allclose(got, want, atol=1e-6)
    np.testing.assert_allclose(want, [0.366, 0.248, 0.387], atol=1e-3)  # notes/paper.md §5.8
    assert np.abs(got - regularised_nash(P, uniform, tau)).max() > 0.05


@pytest.mark.parametrize("tau", [0.1, 1.0])
def test_online_dpo_stationary_point_is_not_the_equilibrium(tau):
    # notes/paper.md §5.7 / Calandriello Thm F.6: 2 actions, p = 0.7, uniform reference
    P = np.array([[0.5, 0.7], [0.3, 0.5]])
    uniform = np.array([0.5, 0.5])
    rlhf = softmax(np.array([np.log(0.7 / 0.3) / tau, 0.0]))
    ne = regularised_nash(P, uniform, tau)
    np.testing.assert_allclose(ne[0], 1 / (1 + np.exp(-0.2 / tau)), atol=1e-10)
    assert (
        np.abs(expected_contrastive_gradient(np.log(rlhf), P, uniform, tau, loss="dpo")).max()
        < 1e-12
    )
    assert (
        np.abs(expected_contrastive_gradient(np.log(ne), P, uniform, tau, loss="dpo")).max() > 1e-3
    )
    # the online-IPO gradient vanishes at the equilibrium instead
    assert np.abs(expected_ipo_md_gradient(np.log(ne), P, uniform, tau)).max() < 1e-12
    if tau == 1.0:
        np.testing.assert_allclose(rlhf, [0.7, 0.3], atol=1e-12)
        np.testing.assert_allclose(ne, [0.5498, 0.4502], atol=1e-4)
        run = train_online_bandit(P, uniform, tau, "dpo", steps=300, lr=2.0)
        np.testing.assert_allclose(run.final_policy, rlhf, atol=1e-4)


# ------------------------------------------------------------------------------------------
# token-level versus sequence-level mixture (notes/paper.md §1.6, §5.9)
# ------------------------------------------------------------------------------------------
def _two_token_policy(rng, v=2):
    return rng.dirichlet(np.ones(v)), rng.dirichlet(np.ones(v), size=v)


def test_token_level_mixture_is_an_approximation():
    rng = np.random.default_rng(0)
    pf, ps = _two_token_policy(rng)
    rf, rs = _two_token_policy(rng)
    seq = sequence_level_mixture(pf, ps, rf, rs, 0.5)
    tok = token_level_mixture(pf, ps, rf, rs, 0.5)
    assert seq.sum() == pytest.approx(1) and tok.sum() == pytest.approx(1)
    assert np.abs(seq - tok).max() > 1e-3  # different in general
    # exact by hand: the sequence-level mixture of the joints
    joint, joint_ref = pf[:, None] * ps, rf[:, None] * rs
    w = np.sqrt(joint * joint_ref)
    np.testing.assert_allclose(seq, w / w.sum(), atol=1e-14)
    # equal at the endpoints, and when no conditional depends on the first token
    for beta in (0.0, 1.0):
        np.testing.assert_allclose(
            sequence_level_mixture(pf, ps, rf, rs, beta),
            token_level_mixture(pf, ps, rf, rs, beta),
            atol=1e-14,
        )
    ps_flat, rs_flat = np.tile(ps[0], (2, 1)), np.tile(rs[0], (2, 1))
    np.testing.assert_allclose(
        sequence_level_mixture(pf, ps_flat, rf, rs_flat, 0.3),
        token_level_mixture(pf, ps_flat, rf, rs_flat, 0.3),
        atol=1e-14,
    )


# ------------------------------------------------------------------------------------------
# bad input
# ------------------------------------------------------------------------------------------
def test_bad_inputs_are_rejected_naming_the_value():
    P, pi_ref, theta = _game(0)
    with pytest.raises(ValueError, match="-0.5"):
        expected_ipo_md_gradient(theta, P, pi_ref, -0.5)
    with pytest.raises(ValueError, match="1.5"):
        expected_ipo_md_gradient(theta, P, pi_ref, 1.0, beta=1.5)
    with pytest.raises(ValueError, match="sums to"):
        expected_nash_md_pg_gradient(theta, P, pi_ref * 2, 1.0)
    bad = P.copy()
    bad[0, 1] = 0.9
    with pytest.raises(ValueError, match="P"):
        expected_ipo_md_gradient(theta, bad, pi_ref, 1.0)
    with pytest.raises(ValueError, match="shape"):
        expected_ipo_md_gradient(theta[:3], P, pi_ref, 1.0)
    with pytest.raises(ValueError, match="'hinge'"):
        expected_contrastive_gradient(theta, P, pi_ref, 1.0, loss="hinge")
    with pytest.raises(ValueError, match="'hard'"):
        sample_contrastive_gradients(
            theta, P, pi_ref, 1.0, 0.0, 10, np.random.default_rng(0), labels="hard"
        )
    with pytest.raises(ValueError, match="'rl'"):
        train_online_bandit(P, pi_ref, 1.0, method="rl", steps=1)
    with pytest.raises(ValueError, match="outside"):
        train_offline_bandit([(0, 5)], 3, 1.0)
    with pytest.raises(ValueError, match="full support"):
        expected_ipo_md_gradient(theta, P, np.array([0.5, 0.5, 0.0, 0.0]), 1.0)


def test_losses_module_is_what_is_differentiated():
    # the exact expectation is literally a weighted sum of course_lib.losses.ipo_loss
    P, pi_ref, theta = _game(3)
    mu = softmax(theta)
    t = torch.tensor(theta, dtype=torch.float64)
    ell = np.log(mu / pi_ref)
    h = torch.tensor(ell[:, None] - ell[None, :])
    want = (torch.tensor(np.outer(mu, mu)) * ipo_loss(h, torch.tensor(P), 0.9)).sum()
    assert expected_pair_loss(t, P, pi_ref, 0.9, mu, "ipo").item() == pytest.approx(want.item())
    np.testing.assert_allclose(win_rates(P, mu) @ mu, 0.5, atol=1e-12)


# ------------------------------------------------------------------------------------------
# training-loop plumbing and the exercises' reference solutions
# ------------------------------------------------------------------------------------------
def test_seeds_trained_side_by_side_equal_separate_runs():
    data = [(0, 1), (1, 2), (0, 2)]
    together = train_offline_bandits(data, 3, 0.5, "dpo", steps=60, seeds=(0, 7))
    alone = train_offline_bandit(data, 3, 0.5, "dpo", steps=60, seed=7)
    np.testing.assert_array_equal(together[1].policies, alone.policies)
    assert np.abs(together[0].policies - together[1].policies).max() > 1e-4  # seeds differ


def test_numpy_adam_matches_torch_adam():
    # the hand-written optimizer is torch.optim.Adam with its defaults
    P, pi_ref, _ = _game(8, n=3)
    mu = np.array([0.5, 0.3, 0.2])
    run = train_population_offline(P, pi_ref, 0.4, mu, "ipo", steps=25, lr=0.05)
    theta = torch.tensor(np.log(pi_ref), requires_grad=True)
    opt = torch.optim.Adam([theta], lr=0.05)
    for _ in range(25):
        opt.zero_grad()
        expected_pair_loss(theta, P, pi_ref, 0.4, mu, "ipo").backward()
        opt.step()
    np.testing.assert_allclose(run.final_theta, theta.detach().numpy(), atol=1e-12)


def test_single_thread_restores_the_setting():
    before = torch.get_num_threads()
    with single_thread():
        assert torch.get_num_threads() == 1
    assert torch.get_num_threads() == before


def test_exercise_reference_solutions_agree_with_the_library():
    from course_lib.exercises import nb03, nb05, nb06
    from course_lib.losses import ipo_loss as library_ipo_loss
    from course_lib.tabular import geometric_mixture

    assert nb03.check_soft_ipo_loss(library_ipo_loss)
    assert nb03.check_offline_ipo_optimum(offline_ipo_solution)
    assert nb05.check_online_ipo_gradient(
        lambda th, P, ref, tau: expected_ipo_md_gradient(th, P, ref, tau)
    )
    assert nb06.check_geometric_mixture(geometric_mixture)
    assert nb06.check_token_level_mixture(token_level_mixture)
    assert nb06.check_ipo_md_gradient(expected_ipo_md_gradient)
    # a wrong answer fails, and the report says where
    wrong = nb06.check_ipo_md_gradient(lambda *a: 0.5 * expected_ipo_md_gradient(*a))
    assert not wrong and "case 0" in str(wrong)


def test_training_bad_inputs():
    P, pi_ref, _ = _game(0)
    with pytest.raises(ValueError, match="'momentum'"):
        train_population_offline(P, pi_ref, 1.0, pi_ref, optimizer="momentum")
    with pytest.raises(ValueError, match="-3"):
        train_online_bandit(P, pi_ref, 1.0, steps=-3)
    with pytest.raises(ValueError, match="batch"):
        train_offline_bandit([(0, 1)], 2, 1.0, batch=0)
    with pytest.raises(ValueError, match="mu sums to"):
        train_population_offline(P, pi_ref, 1.0, np.full(4, 0.3))
