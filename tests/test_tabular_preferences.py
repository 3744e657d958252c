"""Preference matrices: validation, builders, closed forms, and the Bradley-Terry fit."""

from __future__ import annotations

import numpy as np
import pytest

from course_lib.tabular import (
    NONTRANSITIVE_DICE,
    bradley_terry,
    dice_preference,
    fit_bradley_terry,
    mixture_preference,
    random_preference,
    rater_type,
    three_rater_types,
    validate_beta,
    validate_distribution,
    validate_preference_matrix,
    validate_tau,
    von_neumann_winner,
)


def is_antisymmetric(P, atol=1e-12):
    return np.allclose(P + P.T, 1.0, atol=atol) and np.allclose(np.diag(P), 0.5, atol=atol)


# ---- validation ------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "P, fragment",
    [
        (np.full((2, 3), 0.5), "square"),
        (np.array([0.5, 0.5]), "square"),
        (np.array([[0.5, 1.2], [-0.2, 0.5]]), "P[0, 1] = 1.2"),
        (np.array([[0.5, np.nan], [0.5, 0.5]]), "P[0, 1] = nan"),
        (np.array([[0.5, 0.7], [0.7, 0.5]]), "P + P^T = 1"),
        (np.array([[0.4, 0.5], [0.5, 0.6]]), "P[0, 0] = 0.4"),
    ],
)
def test_bad_preference_matrix_rejected_naming_the_entry(P, fragment):
    with pytest.raises(ValueError, match=None) as err:
        validate_preference_matrix(P)
    assert fragment in str(err.value)


def test_antisymmetry_message_names_both_entries_and_their_sum():
    P = np.array([[0.5, 0.7, 0.5], [0.3, 0.5, 0.6], [0.5, 0.5, 0.5]])
    with pytest.raises(ValueError) as err:
        validate_preference_matrix(P)
    msg = str(err.value)
    assert "P[1, 2] + P[2, 1]" in msg and "1.1" in msg


def test_validation_returns_exactly_antisymmetric_matrix():
    P = np.array([[0.5, 0.7 + 1e-8], [0.3, 0.5]])  # within tolerance, e.g. float32 rounding
    Q = validate_preference_matrix(P)
    assert is_antisymmetric(Q, atol=1e-15)
    assert abs(Q[0, 1] - 0.7) < 1e-8


@pytest.mark.parametrize(
    "pi, fragment",
    [
        ([0.5, 0.6], "sums to 1.1"),
        ([0.5, -0.1, 0.6], "pi[1] = -0.1"),
        ([[0.5, 0.5]], "1-D"),
        ([0.5, np.inf], "pi[1] = inf"),
        ([], "non-empty"),
    ],
)
def test_bad_distribution_rejected(pi, fragment):
    with pytest.raises(ValueError) as err:
        validate_distribution(pi)
    assert fragment in str(err.value)


def test_distribution_name_and_length_in_message():
    with pytest.raises(ValueError, match="mu sums to 0.9"):
        validate_distribution([0.3, 0.6], name="mu")
    with pytest.raises(ValueError, match="mu has 2 entries, expected 3"):
        validate_distribution([0.4, 0.6], name="mu", n=3)


@pytest.mark.parametrize("tau", [0, -1.0, np.inf, np.nan, "a", [1.0]])
def test_bad_tau_rejected(tau):
    with pytest.raises(ValueError, match="tau"):
        validate_tau(tau)


def test_tau_message_names_value():
    with pytest.raises(ValueError, match=r"tau=-0\.5 is invalid.*> 0"):
        validate_tau(-0.5)
    assert validate_tau(np.float32(0.5)) == 0.5


@pytest.mark.parametrize("beta", [-0.01, 1.5, np.nan])
def test_bad_beta_rejected(beta):
    with pytest.raises(ValueError, match="beta"):
        validate_beta(beta)


def test_beta_bounds_are_allowed():
    assert validate_beta(0) == 0.0 and validate_beta(1) == 1.0


# ---- builders --------------------------------------------------------------------------------
def test_bradley_terry_is_antisymmetric_and_matches_sigmoid():
    s = np.array([0.3, -1.0, 2.0])
    P = bradley_terry(s)
    assert is_antisymmetric(P)
    assert P[2, 1] == pytest.approx(1 / (1 + np.exp(-3.0)), abs=1e-15)


def test_elo_example_win_probability_is_50_over_99():
    # NLHF Appendix A (notes/paper.md §5.3): ratings (0, log 9, log 2)
    P = bradley_terry([0.0, np.log(9), np.log(2)])
    pi_R = np.array([2 / 3, 1 / 3, 0.0])  # maximises expected Elo among pi(y1) = 2 pi(y2)
    pi_P = np.array([0.0, 0.0, 1.0])
    assert pi_P @ P @ pi_R == pytest.approx(50 / 99, abs=1e-15)
    elo = np.array([0.0, np.log(9), np.log(2)])
    assert pi_R @ elo > pi_P @ elo  # the higher expected rating loses the head-to-head


def test_dice_closed_form_five_ninths_cycle():
    P = dice_preference()
    assert list(NONTRANSITIVE_DICE) == ["A", "B", "C"]
    assert is_antisymmetric(P)
    for i, j in [(0, 1), (1, 2), (2, 0)]:  # A > B, B > C, C > A
        assert P[i, j] == pytest.approx(5 / 9, abs=1e-15)


def test_dice_ties_count_half():
    P = dice_preference([(1, 2), (1, 2)])
    np.testing.assert_allclose(P, 0.5)
    P = dice_preference([(3,), (1, 3, 5)])
    assert P[0, 1] == pytest.approx(1 / 3 + 0.5 / 3)


def test_rater_type_and_mixture_are_antisymmetric():
    P = mixture_preference([rater_type(3, [(0, 1)]), rater_type(3, [(1, 2), (2, 0)])], [0.25, 0.75])
    assert is_antisymmetric(P)
    assert P[0, 1] == pytest.approx(0.25 * 1 + 0.75 * 0.5)
    with pytest.raises(ValueError, match="weights sums to 0.9"):
        mixture_preference([rater_type(2, []), rater_type(2, [(0, 1)])], [0.3, 0.6])


def test_three_rater_types_closed_form_and_von_neumann_winner():
    eps = 0.05
    P = three_rater_types(eps)
    assert is_antisymmetric(P)
    # by hand: P(y1>y2) = 1/3 + eps/2, P(y1>y3) = P(y3>y2) = 2/3 + eps/4
    assert P[0, 1] == pytest.approx(1 / 3 + eps / 2)
    assert P[0, 2] == pytest.approx(2 / 3 + eps / 4)
    assert P[2, 1] == pytest.approx(2 / 3 + eps / 4)
    expected = np.array([1 / 3 + eps / 2, 1 / 3 + eps / 2, 1 / 3 - eps])
    np.testing.assert_allclose(von_neumann_winner(P), expected, atol=1e-8)
    with pytest.raises(ValueError, match="eps must lie in"):
        three_rater_types(0.5)


def test_random_preference_is_seeded_and_antisymmetric():
    P1, P2, P3 = random_preference(6, seed=1), random_preference(6, seed=1), random_preference(6, 2)
    assert is_antisymmetric(P1)
    np.testing.assert_array_equal(P1, P2)
    assert not np.allclose(P1, P3)
    Q = random_preference(5, seed=0, low=0.6, high=0.9)
    off = Q[~np.eye(5, dtype=bool)]
    assert np.all((off >= 0.1) & (off <= 0.9))


# ---- Bradley-Terry fit -----------------------------------------------------------------------
def test_bt_fit_recovers_bradley_terry_scores():
    s = np.array([1.0, -0.5, 0.2, -0.7])
    fit = fit_bradley_terry(bradley_terry(s))
    np.testing.assert_allclose(fit.scores, s - s.mean(), atol=1e-6)
    assert fit.max_abs_error < 1e-6 and fit.mean_kl < 1e-12 and fit.flipped_pairs == []


def test_bt_fit_matches_row_sums_and_erases_the_dice_cycle():
    P = dice_preference()
    fit = fit_bradley_terry(P)
    # stationarity: sum_j sigmoid(s_i - s_j) = sum_j P_ij; equal row sums => equal scores
    np.testing.assert_allclose(fit.P_fit.sum(axis=1), P.sum(axis=1), atol=1e-7)
    np.testing.assert_allclose(fit.P_fit, 0.5, atol=1e-7)
    assert fit.max_abs_error == pytest.approx(1 / 18, abs=1e-7)
    assert sorted(fit.flipped_pairs) == [(0, 1), (1, 2), (2, 0)]
    # the binary KL between 5/9 and 1/2, per pair
    p = 5 / 9
    expected_kl = p * np.log(2 * p) + (1 - p) * np.log(2 * (1 - p))
    assert fit.mean_kl == pytest.approx(expected_kl, rel=1e-6)


def test_bt_fit_on_three_rater_types_reverses_a_preference():
    P = three_rater_types(0.05)
    fit = fit_bradley_terry(P)
    np.testing.assert_allclose(fit.P_fit.sum(axis=1), P.sum(axis=1), atol=1e-7)
    assert len(fit.flipped_pairs) >= 1  # no ordering of scores can express a cycle
    assert fit.mean_kl > 1e-3
