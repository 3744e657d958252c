"""The exact arena: a real transformer trained online, measured exactly against each
algorithm's exact destination (issue 13).

A tiny language whose completions can all be listed (3 prompts, 4 symbols + EOS, at most 3 new
tokens: 85 completions per prompt), an exact preference over them, and the course's tiny Llama
as the policy. Because the sequence space is enumerable, pi_theta(. | x) is computed exactly from
the model at any time, and so is every quantity of notebooks 01-06: KL to pi_ref, exploitability,
the regularised game's gap, and the KL to the destination of each algorithm.

- :mod:`~course_lib.arena.language`: the language, its tokenizer, the enumeration and its tree;
- :mod:`~course_lib.arena.preference`: P(y > y' | x) in modes ``bt`` and ``nt``, 3-cycles, the
  exact judge;
- :mod:`~course_lib.arena.policy`: the tiny Llama, pi_ref, the exact sequence distribution;
- :mod:`~course_lib.arena.targets`: each algorithm's destination (pi*_tau, IPO-MD's token- and
  sequence-level fixed points, DPO's and SLiC's self-play stationary points);
- :mod:`~course_lib.arena.train`: one run with :class:`course_lib.online.OnlineTrainer` and an
  exact evaluation every N steps;
- :mod:`~course_lib.arena.run`: :func:`run_arena`, the experiment, its files and figures.
"""

from course_lib.arena.language import EOS, Language, Tree, build_tokenizer
from course_lib.arena.policy import (
    PolicySpec,
    build_reference,
    make_policy,
    sequence_distribution,
    teacher_distribution,
)
from course_lib.arena.preference import (
    MODES,
    ExactJudge,
    find_three_cycle,
    label_preference,
    preference_matrices,
    preference_matrix,
)
from course_lib.arena.run import ARENA_PROFILES, ArenaProfile, arena_profile, run_arena
from course_lib.arena.targets import (
    FixedPoint,
    contrastive_stationary_point,
    destination,
    expected_gradient,
    sequence_level_target,
    token_level_mixture,
    token_level_target,
    token_vs_sequence,
)
from course_lib.arena.train import ARENA_ALGORITHMS, Arena, ArenaRun, build_arena, distill, train

__all__ = [
    "ARENA_ALGORITHMS",
    "ARENA_PROFILES",
    "EOS",
    "MODES",
    "Arena",
    "ArenaProfile",
    "ArenaRun",
    "ExactJudge",
    "FixedPoint",
    "Language",
    "PolicySpec",
    "Tree",
    "arena_profile",
    "build_arena",
    "build_reference",
    "build_tokenizer",
    "contrastive_stationary_point",
    "destination",
    "distill",
    "expected_gradient",
    "find_three_cycle",
    "label_preference",
    "make_policy",
    "preference_matrices",
    "preference_matrix",
    "run_arena",
    "sequence_distribution",
    "sequence_level_target",
    "teacher_distribution",
    "token_level_mixture",
    "token_level_target",
    "token_vs_sequence",
    "train",
]
