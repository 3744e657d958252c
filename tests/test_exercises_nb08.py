"""Notebook 08's exercise checkers accept the reference solutions, reject wrong answers (the
tricky cases included) and report a stub as not attempted."""

import dataclasses

import numpy as np
import pytest

from course_lib.arena import Language, PolicySpec, build_arena, preference_matrices
from course_lib.exercises import nb08

pytestmark = pytest.mark.usefixtures("torch_one_thread")


def _stub(*args, **kwargs):
    raise NotImplementedError


# -- exercise 1: KL from per-token conditionals -----------------------------------------------
def test_sequence_kl_checker():
    assert nb08.check_sequence_kl(nb08.sequence_kl)
    # the plain matrix product: 0 * -inf is nan where a conditional is exactly 0
    assert not nb08.check_sequence_kl(
        lambda p, q, paths: float(np.sum(np.exp(paths @ p) * (paths @ p - paths @ q)))
    )

    # sum of the conditionals' KLs, unweighted by the prefix's mass under p
    def unweighted(p, q, paths):
        V = 3 if paths.shape[1] == 9 else 4
        cp, cq = np.exp(p).reshape(-1, V), np.exp(q).reshape(-1, V)
        with np.errstate(all="ignore"):
            terms = np.where(cp > 0, cp * (np.log(cp) - np.log(cq)), 0.0)
        return float(terms.sum())

    assert not nb08.check_sequence_kl(unweighted)
    # the reverse KL
    assert not nb08.check_sequence_kl(lambda p, q, paths: nb08.sequence_kl(q, p, paths))
    stub = nb08.check_sequence_kl(_stub)
    assert not stub and stub.status == "not attempted"


def test_sequence_kl_reference_is_the_chain_rule_of_kl():
    from course_lib.tabular import kl

    tree = Language(1, 3, 3).tree
    rng = np.random.default_rng(0)
    p, q = (nb08._random_conditionals(tree, rng) for _ in range(2))
    on = tree.paths > 0
    seq = lambda c: np.exp(np.where(on, c[None, :], 0.0).sum(1))  # noqa: E731
    assert np.isclose(nb08.sequence_kl(p, q, tree.paths), kl(seq(p), seq(q)), atol=1e-12)


# -- exercise 2: the token-level mixture at one prefix ------------------------------------------
def test_mixture_at_node_checker():
    assert nb08.check_mixture_at_node(nb08.mixture_at_node)

    def in_logs(pi, ref, beta, tree, node):  # nan at beta = 1 where pi(a | u) = 0
        V = tree.paths.shape[1] // tree.n_nodes
        e = slice(node * V, (node + 1) * V)
        z = (1 - beta) * tree.conditionals(pi)[e] + beta * tree.conditionals(ref)[e]
        w = np.exp(z - np.max(z))
        return w / w.sum()

    assert not nb08.check_mixture_at_node(in_logs)

    # beta on the wrong side
    assert not nb08.check_mixture_at_node(
        lambda pi, ref, beta, tree, node: nb08.mixture_at_node(pi, ref, 1 - beta, tree, node)
    )

    # the sequence-level mixture's marginal at the prefix is not the token-level conditional
    def unnormalised(pi, ref, beta, tree, node):
        V = tree.paths.shape[1] // tree.n_nodes
        e = slice(node * V, (node + 1) * V)
        w = (
            np.exp(tree.conditionals(pi)[e]) ** (1 - beta)
            * np.exp(tree.conditionals(ref)[e]) ** beta
        )
        return w

    assert not nb08.check_mixture_at_node(unnormalised)
    assert nb08.check_mixture_at_node(_stub).status == "not attempted"


# -- exercise 3: the lowest exploitability --------------------------------------------------------
@pytest.fixture(scope="module")
def small_arenas():
    language = Language(3, 3, 2)  # 13 completions per prompt: seconds, not minutes
    bt = build_arena("bt", language, PolicySpec(sft_steps=5, sft_samples=64))
    nt = dataclasses.replace(bt, mode="nt", P=preference_matrices(language, "nt"), _targets={})
    return bt, nt


def test_lowest_exploitability_checker(small_arenas):
    bt, nt = small_arenas
    tau, beta = 0.5, 0.25
    best_bt = nb08.lowest_exploitability(bt, tau, beta)
    best_nt = nb08.lowest_exploitability(nt, tau, beta)
    assert nb08.check_lowest_exploitability(best_bt, best_nt, bt, nt, tau, beta)
    wrong = next(a for a in nb08.CERTIFIED if a != best_bt)
    result = nb08.check_lowest_exploitability(wrong, best_nt, bt, nt, tau, beta)
    assert not result and result.status == "fail"
    assert not nb08.check_lowest_exploitability("pi_star", best_nt, bt, nt, tau, beta)
    assert not nb08.check_lowest_exploitability(best_bt, "online_slic", bt, nt, tau, beta)
    todo = nb08.check_lowest_exploitability(None, best_nt, bt, nt, tau, beta)
    assert todo.status == "not attempted"
    # the reference is the argmin of the destinations' exploitabilities
    values = {a: nb08.mean_exploitability(bt, a, tau, beta) for a in nb08.CERTIFIED}
    assert values[best_bt] == min(values.values())


def test_every_exercise_has_tiers_and_an_answer():
    for ex in nb08.EXERCISES:
        assert len(ex.hints) >= 2 and ex.answer
