"""Notebook 08 (the exact arena): reference solutions, cases, hints and answers of its exercises.

``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
Sequences live on the arena's tree (:class:`course_lib.arena.Tree`): ``paths[y, e] = 1`` when
completion ``y`` takes edge ``e``, and edge ``e = node * V + token`` leaves node ``edge_node[e]``.
"""

from __future__ import annotations

import numpy as np

from course_lib.arena import Language, token_level_mixture
from course_lib.exercises import Case, Exercise, ExerciseSet
from course_lib.tabular import exploitability

#: The algorithms whose destination is certified (SLiC's reported point is not: see
#: :func:`course_lib.arena.contrastive_stationary_point`).
CERTIFIED = ("online_ipo", "ipo_md", "nash_md_pg", "online_dpo")


# ---- reference solutions ---------------------------------------------------------------------
def sequence_kl(log_cond_p, log_cond_q, paths):
    """KL(p || q) of two sequence distributions given by their log next-token conditionals per
    edge: log p(y) = sum of log p(a | u) over the edges y takes (only those: 0 * -inf is nan),
    and completions with p(y) = 0 contribute nothing."""
    on = np.asarray(paths) > 0
    log_p = np.where(on, log_cond_p[None, :], 0.0).sum(1)
    log_q = np.where(on, log_cond_q[None, :], 0.0).sum(1)
    p = np.exp(log_p)
    seen = p > 0
    return float(np.sum(p[seen] * (log_p[seen] - log_q[seen])))


def mixture_at_node(pi, pi_ref, beta, tree, node):
    """The token-level mixture's next-token distribution at prefix ``node``:
    mix(a | u) ∝ pi(a | u)^(1-beta) pi_ref(a | u)^beta, conditionals read off the sequence
    distributions (edge mass / node mass). Powers, not logs: 0^0 = 1 keeps beta = 1 exact."""
    V = tree.paths.shape[1] // tree.n_nodes
    edges = slice(node * V, (node + 1) * V)
    cond_pi = np.exp(tree.conditionals(pi)[edges])
    cond_ref = np.exp(tree.conditionals(pi_ref)[edges])
    w = cond_pi ** (1 - beta) * cond_ref**beta
    return w / w.sum()


def mean_exploitability(arena, algorithm, tau, beta):
    """max_y P(y > pi) - 1/2 of the algorithm's destination, averaged over the prompts."""
    pi = arena.target(algorithm, tau, beta)[0]
    return float(np.mean([exploitability(arena.P[i], pi[i]) for i in range(len(pi))]))


def lowest_exploitability(arena, tau, beta):
    """The certified destination with the lowest exploitability (the reference 'prediction')."""
    return min(CERTIFIED, key=lambda a: mean_exploitability(arena, a, tau, beta))


# ---- cases -----------------------------------------------------------------------------------
def _random_conditionals(tree, rng, scale=1.0):
    V = tree.paths.shape[1] // tree.n_nodes
    z = rng.normal(0.0, scale, size=(tree.n_nodes, V))
    return (z - np.log(np.exp(z).sum(1, keepdims=True))).ravel()


def _kl_cases():
    rng = np.random.default_rng(80)
    small, big = Language(1, 2, 2).tree, Language(1, 3, 3).tree
    cases = [
        Case((_random_conditionals(t, rng), _random_conditionals(t, rng, 2.0), t.paths))
        for t in (small, big)
    ]
    same = _random_conditionals(big, rng)
    cases.append(Case((same, same.copy(), big.paths), note="p = q: the KL is 0"))
    # p never reaches node 1 (token 1 at the root has probability 0): q's conditionals there
    # must not count; 0 * -inf in a matrix product is nan
    p, q = _random_conditionals(small, rng), _random_conditionals(small, rng)
    p[1] = -np.inf
    p[:3] -= np.logaddexp.reduce(p[:3])
    cases.append(
        Case((p, q, small.paths), note="p gives a token probability 0 (log -inf): 0 log 0 = 0")
    )
    cases.append(
        Case(
            (q, p, small.paths),
            note="q gives probability 0 to completions p can draw: KL(p || q) = inf",
        )
    )
    return cases


def _mixture_cases():
    rng = np.random.default_rng(81)
    tree = Language(1, 3, 3).tree
    seq = lambda log_cond: np.exp(tree.paths @ log_cond)  # noqa: E731 (full support here)
    pi, ref = seq(_random_conditionals(tree, rng, 1.5)), seq(_random_conditionals(tree, rng))
    # a pi that never draws symbol 'a' (token 1) at the root: its conditional there is 0
    cut = _random_conditionals(tree, rng)
    cut[1] = -np.inf
    cut[:4] -= np.logaddexp.reduce(cut[:4])
    on = tree.paths > 0
    pi_cut = np.exp(np.where(on, cut[None, :], 0.0).sum(1))
    return [
        Case((pi, ref, 0.25, tree, 0), note="the root"),
        Case((pi, ref, 0.5, tree, 7), note="a node two symbols deep"),
        Case((pi, ref, 0.0, tree, 3), note="beta = 0: pi's own conditional"),
        Case((pi, ref, 1.0, tree, 3), note="beta = 1: pi_ref's conditional"),
        Case((pi_cut, ref, 0.5, tree, 0), note="pi gives token 'a' probability 0 here"),
        Case(
            (pi_cut, ref, 1.0, tree, 0),
            note="pi(a | u) = 0 and beta = 1: 0^0 = 1, a log-space (1 - beta) * -inf is nan",
        ),
    ]


def _product_is_the_library(fn):
    rng = np.random.default_rng(82)
    tree = Language(1, 3, 2).tree
    V = tree.paths.shape[1] // tree.n_nodes
    pi, ref = (np.exp(tree.paths @ _random_conditionals(tree, rng)) for _ in range(2))
    beta = 0.3
    cond = np.concatenate(
        [np.asarray(fn(pi, ref, beta, tree, u), dtype=float) for u in range(tree.n_nodes)]
    )
    mix = np.exp(tree.paths @ np.log(cond))
    if cond.shape != (tree.n_nodes * V,) or not np.allclose(
        mix, token_level_mixture(pi, ref, beta, tree), atol=1e-10
    ):
        return "the product of your per-node mixtures is not course_lib.arena.token_level_mixture"
    return None


# ---- the value exercise ------------------------------------------------------------------------
def _verify_lowest(lowest_bt, lowest_nt, arena_bt, arena_nt, tau, beta) -> list[str]:
    problems = []
    for name, value, arena in (
        ("lowest_bt", lowest_bt, arena_bt),
        ("lowest_nt", lowest_nt, arena_nt),
    ):
        if value not in CERTIFIED:
            problems.append(f"{name} = {value!r} must be one of {', '.join(CERTIFIED)}")
            continue
        best = lowest_exploitability(arena, tau, beta)
        if value != best:
            mine = mean_exploitability(arena, value, tau, beta)
            problems.append(
                f"{name} = {value!r}: its destination's exploitability is {mine:.4f}, and "
                f"another certified destination has a lower one in mode {arena.mode!r}"
            )
    return problems


EXERCISES = ExerciseSet(
    "nb08",
    [
        Exercise(
            "sequence_kl",
            1,
            sequence_kl,
            cases=_kl_cases,
            atol=1e-10,
            rtol=1e-8,
            hints=(
                "a sequence's log-probability is the sum of the log-conditionals of the edges it "
                "takes; then KL(p || q) = sum_y p(y) (log p(y) - log q(y)), over the y with "
                "p(y) > 0 only.",
                "log p = paths @ log_cond fails where a conditional is -inf: 0 * -inf is nan. Sum "
                "only the edges each completion takes (np.where(paths > 0, log_cond, 0).sum(1)), "
                "and drop the completions with p(y) = 0 before multiplying.",
            ),
            answer=(
                "Equivalently, KL(p || q) = sum over prefixes u of p(u) KL(p(. | u) || q(. | u)) "
                "(the chain rule of KL): a prefix p never reaches has weight 0, however "
                "different q's conditionals are there. This is how the arena measures every "
                "distance exactly, from one forward pass over the 255 sequences."
            ),
        ),
        Exercise(
            "mixture_at_node",
            2,
            mixture_at_node,
            cases=_mixture_cases,
            atol=1e-10,
            properties=(
                (
                    "multiplied along every path, your per-node mixtures are "
                    "course_lib.arena.token_level_mixture",
                    _product_is_the_library,
                ),
            ),
            hints=(
                "first read each policy's next-token distribution at the prefix off its "
                "sequence distribution (tree.conditionals gives the log of all of them), then "
                "mix the two geometrically and normalise.",
                "edge e = node * V + token, where V (the tokens a prefix can continue with) is "
                "the number of edges (columns of tree.paths) over the number of nodes; "
                "mix(a | u) ∝ pi(a | u)^(1-beta) pi_ref(a | u)^beta. Use powers of "
                "probabilities, not (1 - beta) * log: at beta = 1 a zero probability gives "
                "0^0 = 1 but 0 * -inf = nan.",
            ),
            answer=(
                "The sequence-level mixture normalises pi^(1-beta) pi_ref^beta once over whole "
                "sequences; the token-level one normalises at every prefix, so its sequence "
                "probabilities carry a product of per-prefix normalisers that depends on the "
                "path. The two agree at beta = 0 and 1 only."
            ),
        ),
        Exercise(
            "lowest_exploitability",
            3,
            lowest_exploitability,
            verify=_verify_lowest,
            answers=("lowest_bt", "lowest_nt"),
            hints=(
                "exploitability is the gap of the *unregularised* game, max_y P(y > pi) - 1/2: "
                "it is small for a policy close to a von Neumann winner, whatever its KL to "
                "pi_ref. Which destination ignores the KL the most?",
                "pi*_tau and IPO-MD's point are pulled towards pi_ref by tau. Online DPO's "
                "self-play point solves sum_y' pi(y') sigmoid(tau h(z, y')) = P(z > pi) "
                "(notes/paper.md §4.7): with a Bradley-Terry P it drifts far from pi_ref.",
            ),
            answer=(
                "Online DPO's destination, in both modes: it moves far from pi_ref (KL to pi_ref "
                "about 5 nats in bt), close to the preference's winner, so little beats it; "
                "pi*_tau stays within about 0.5 nats of pi_ref and remains highly exploitable "
                "(about 0.44 in bt). Exploitability measures the unregularised game; pi*_tau is "
                "the equilibrium of the regularised one, so low exploitability is not what the "
                "paper's methods aim for, and the lowest one here belongs to the method that "
                "misses pi*_tau by the most."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_sequence_kl = EXERCISES.checker("sequence_kl")
check_mixture_at_node = EXERCISES.checker("mixture_at_node")
check_lowest_exploitability = EXERCISES.checker("lowest_exploitability")
