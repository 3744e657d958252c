"""Exact computations on explicit distributions over a handful of responses (notebooks 01-06).

* :mod:`course_lib.tabular.preferences` -- preference matrices and input validation;
* :mod:`course_lib.tabular.games` -- the regularised preference game: equilibria, best responses,
  exploitability, Nash-MD and mirror-descent iterates;
* :mod:`course_lib.tabular.gradients` -- exact and Monte-Carlo gradients of the losses (T2).
"""

from course_lib.tabular.games import (
    NashSolution,
    best_response,
    exploitability,
    geometric_mixture,
    kl,
    mirror_descent,
    nash_md,
    offline_ipo_solution,
    regularised_exploitability,
    regularised_nash,
    von_neumann_winner,
    win_rates,
)
from course_lib.tabular.preferences import (
    NONTRANSITIVE_DICE,
    BradleyTerryFit,
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
)

__all__ = [
    # preferences
    "NONTRANSITIVE_DICE",
    "BradleyTerryFit",
    "bradley_terry",
    "dice_preference",
    "fit_bradley_terry",
    "mixture_preference",
    "random_preference",
    "rater_type",
    "three_rater_types",
    "validate_beta",
    "validate_distribution",
    "validate_preference_matrix",
    "validate_tau",
    # games
    "NashSolution",
    "best_response",
    "exploitability",
    "geometric_mixture",
    "kl",
    "mirror_descent",
    "nash_md",
    "offline_ipo_solution",
    "regularised_exploitability",
    "regularised_nash",
    "von_neumann_winner",
    "win_rates",
]

# ---- gradients (T2): exports of course_lib.tabular.gradients are appended below this line ----
from course_lib.tabular.gradients import (  # noqa: E402
    BanditRun,
    expected_contrastive_gradient,
    expected_ipo_md_gradient,
    expected_nash_md_pg_gradient,
    expected_nash_md_pg_loss,
    expected_pair_loss,
    nash_md_pg_objective,
    pair_sampler,
    sample_contrastive_gradients,
    sample_nash_md_pg_gradients,
    sequence_level_mixture,
    token_level_mixture,
    train_offline_bandit,
    train_offline_bandits,
    train_online_bandit,
    train_population_offline,
)
from course_lib.tabular.gradients import softmax as softmax_policy  # noqa: E402

__all__ += [
    "BanditRun",
    "expected_contrastive_gradient",
    "expected_ipo_md_gradient",
    "expected_nash_md_pg_gradient",
    "expected_nash_md_pg_loss",
    "expected_pair_loss",
    "nash_md_pg_objective",
    "pair_sampler",
    "sample_contrastive_gradients",
    "sample_nash_md_pg_gradients",
    "sequence_level_mixture",
    "token_level_mixture",
    "train_offline_bandit",
    "train_offline_bandits",
    "train_online_bandit",
    "train_population_offline",
    "softmax_policy",
]
