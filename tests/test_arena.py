"""The exact arena (course_lib.arena): enumerations match the sampler, destinations solve their
equations, and training a real tiny Llama reaches its exact destination."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from course_lib.arena import (
    ExactJudge,
    Language,
    build_arena,
    contrastive_stationary_point,
    distill,
    expected_gradient,
    find_three_cycle,
    label_preference,
    make_policy,
    preference_matrices,
    run_arena,
    sequence_distribution,
    sequence_level_target,
    token_level_mixture,
    token_level_target,
    train,
)
from course_lib.arena.targets import _TokenGame
from course_lib.judges import check_judge_tokenizer
from course_lib.logprobs import pad_left
from course_lib.sampling import mixture_logprobs, sample, sample_mixture
from course_lib.tabular import (
    best_response,
    expected_contrastive_gradient,
    expected_ipo_md_gradient,
    geometric_mixture,
    kl,
    regularised_nash,
)

pytestmark = pytest.mark.usefixtures("torch_one_thread")

LANG = Language()


@pytest.fixture(scope="module")
def arena():
    torch.set_num_threads(1)
    return build_arena("nt", LANG)


@pytest.fixture(scope="module")
def policy(arena):
    """A policy that is not pi_ref: a few seeded supervised steps towards other completions."""
    from course_lib.logprobs import supervised_steps

    model, ref = make_policy(arena.reference, arena.spec)
    prompt_ids, prompt_mask, ids, mask = LANG.all_pairs_tensors()
    rows = torch.arange(0, prompt_ids.shape[0], 7)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        supervised_steps(model, prompt_ids[rows], prompt_mask[rows], ids[rows], mask[rows], 5, 2e-2)
    return model.eval(), ref


def _prompt_batch(i: int, n: int):
    return pad_left([LANG.prompt_tokens(i)] * n, LANG.eos_id)


def _indices(samples) -> list[int]:
    """Completion indices of sampled rows, read from the token ids."""
    out = []
    for row, m in zip(samples.tokens.tolist(), samples.mask.tolist(), strict=True):
        out.append(LANG.index[tuple(t for t, k in zip(row, m, strict=True) if k)])
    return out


def _chisquare_p(counts: np.ndarray, probs: np.ndarray) -> float:
    """Chi-square p-value, merging the bins with expected counts below 5 into one."""
    expected = probs * counts.sum()
    small = expected < 5
    obs, exp = counts[~small], expected[~small]
    if small.any():
        obs, exp = np.append(obs, counts[small].sum()), np.append(exp, expected[small].sum())
    return float(chisquare(obs, exp).pvalue)


# ---------------------------------------------------------------------------------------------
# the language
# ---------------------------------------------------------------------------------------------
def test_enumeration_counts_and_cut_at_the_length_limit():
    assert LANG.n_completions == len(LANG.completions) == 1 + 4 + 16 + 64 == 85
    for y in LANG.completions:
        body = LANG.symbols_of(y)
        # fewer than max_new_tokens symbols end with EOS; max length ones are cut (no EOS)
        assert y == ((*body, 0) if len(body) < 3 else body)
    with pytest.raises(ValueError, match="n_prompts=5 is invalid"):
        Language(n_prompts=5, n_symbols=4)
    with pytest.raises(ValueError, match="max_new_tokens=0 is invalid"):
        Language(max_new_tokens=0)


def test_texts_are_one_to_one_with_token_sequences():
    tok = LANG.tokenizer
    assert len(set(LANG.texts)) == LANG.n_completions
    assert len(tok) == LANG.vocab_size == 5  # symbols + EOS: nothing unsampleable exists
    for y, text in zip(LANG.completions, LANG.texts, strict=True):
        assert LANG.tokens_of_text(text) == y
        # what the trainer's sampler decodes (skip_special_tokens) is the same text
        assert tok.decode(list(y), skip_special_tokens=True) == text
    assert tok(LANG.prompts[1], add_special_tokens=True)["input_ids"] == [0, 2]
    for bad in ("a b c d", "a e", "<eos>"):
        with pytest.raises(ValueError, match="not a completion"):
            LANG.tokens_of_text(bad)


def test_enumeration_sums_to_one_and_matches_sampling(arena, policy):
    model, _ = policy
    raw = sequence_distribution(model, LANG, normalise=False)
    np.testing.assert_allclose(raw.sum(1), 1.0, atol=1e-5)
    pi = sequence_distribution(model, LANG)
    n = 3000
    for i in range(LANG.n_prompts):
        ids, mask = _prompt_batch(i, n)
        draws = sample(model, ids, mask, max_new_tokens=3, eos_token_id=0, pad_token_id=0, seed=i)
        idx = _indices(draws)
        # the judge's route, through the decoded texts, gives the same completions
        assert [LANG.index_of_text(t) for t in draws.texts(LANG.tokenizer)] == idx
        counts = np.bincount(idx, minlength=LANG.n_completions)
        assert _chisquare_p(counts, pi[i]) > 1e-3


def test_token_level_mixture_is_what_the_mixture_sampler_draws(arena, policy):
    """The tree's mixture of two *sequence* distributions equals the per-token mixture of the
    two models' logits, exactly, and sample_mixture's draws follow it."""
    model, ref = policy
    beta = 0.4
    pi, pi_ref = sequence_distribution(model, LANG), arena.pi_ref
    prompt_ids, prompt_mask, ids, mask = LANG.all_pairs_tensors()
    inputs = torch.cat([prompt_ids, ids], 1)
    with torch.no_grad():
        z_pi = model(input_ids=inputs).logits[:, 1:-1]
        z_ref = ref(input_ids=inputs).logits[:, 1:-1]
    logp = mixture_logprobs(z_pi, z_ref, beta).gather(-1, ids[..., None])[..., 0]
    direct = torch.exp((logp * mask).sum(1)).double().numpy().reshape(LANG.n_prompts, -1)
    for i in range(LANG.n_prompts):
        tree_mix = token_level_mixture(pi[i], pi_ref[i], beta, LANG.tree)
        np.testing.assert_allclose(tree_mix, direct[i], rtol=1e-4, atol=1e-7)
        # and it is not the sequence-level mixture
        assert kl(tree_mix, geometric_mixture(pi[i], pi_ref[i], beta)) > 1e-4
        np.testing.assert_allclose(token_level_mixture(pi[i], pi_ref[i], 0.0, LANG.tree), pi[i])
        np.testing.assert_allclose(token_level_mixture(pi[i], pi_ref[i], 1.0, LANG.tree), pi_ref[i])
    ids0, mask0 = _prompt_batch(0, 3000)
    draws = sample_mixture(
        model, ids0, mask0, beta, ref_model=ref, max_new_tokens=3, eos_token_id=0, seed=0
    )
    counts = np.bincount(_indices(draws), minlength=LANG.n_completions)
    assert _chisquare_p(counts, token_level_mixture(pi[0], pi_ref[0], beta, LANG.tree)) > 1e-3


# ---------------------------------------------------------------------------------------------
# the preference
# ---------------------------------------------------------------------------------------------
def test_nt_has_three_cycles_and_bt_has_none():
    for mode in ("bt", "nt"):
        P = preference_matrices(LANG, mode)
        np.testing.assert_allclose(P + P.transpose(0, 2, 1), 1.0, atol=1e-12)
        for i in range(LANG.n_prompts):
            cycle = find_three_cycle(P[i])
            if mode == "bt":
                assert cycle is None
                continue
            a, b, c = cycle
            assert min(P[i][a, b], P[i][b, c], P[i][c, a]) > 0.5
    # the cycle of the module's docstring, for prompt a
    P = preference_matrices(LANG, "nt")[0]
    a, c, b = (LANG.texts.index(t) for t in ("a a a", "c c c", "b b b"))
    assert P[a, c] > 0.5 and P[c, b] > 0.5 and P[b, a] > 0.5
    with pytest.raises(ValueError, match="mode='xx' is invalid"):
        preference_matrices(LANG, "xx")


def test_judge_reads_the_exact_matrix(arena):
    judge = ExactJudge(LANG, arena.P)
    check_judge_tokenizer(judge, LANG.tokenizer)  # the same vocabulary as the policy's
    p = judge([0, 2], ["a a a", ""], ["b b b", "c"])
    assert p[0] == arena.P[0, LANG.index_of_text("a a a"), LANG.index_of_text("b b b")]
    assert p[1] == arena.P[2, 0, LANG.index_of_text("c")]
    with pytest.raises(ValueError, match="not a completion"):
        judge([0], ["a a a a"], [""])


def test_label_kinds_change_the_preference_as_expected(arena):
    P = arena.P[0]
    assert label_preference(P, "sampled") is P  # E[Bernoulli(P)] = P: the same destination
    T = label_preference(P, "threshold")
    assert set(np.unique(T)) <= {0.0, 0.5, 1.0}
    np.testing.assert_allclose(T + T.T, 1.0)
    with pytest.raises(ValueError, match="label='hard' is invalid"):
        label_preference(P, "hard")


# ---------------------------------------------------------------------------------------------
# destinations
# ---------------------------------------------------------------------------------------------
def test_sequence_level_ipo_md_point_agrees_with_tabular(arena):
    P, ref, tau, beta = arena.P[1], arena.pi_ref[1], 0.25, 0.5
    point = sequence_level_target(P, ref, tau, beta)
    assert point.residual <= 1e-10
    # Prop. 5.2: its mixture is the Nash equilibrium at temperature tau / (1 - beta)
    mix = geometric_mixture(point.pi, ref, beta)
    np.testing.assert_allclose(mix, regularised_nash(P, ref, tau / (1 - beta)), atol=1e-9)
    # and IPO-MD's exact expected gradient (course_lib.tabular) vanishes there
    assert np.abs(expected_ipo_md_gradient(np.log(point.pi), P, ref, tau, beta)).max() < 1e-10


def test_token_level_fixed_point_solves_its_equation(arena):
    P, ref, tau = arena.P[0], arena.pi_ref[0], 0.25
    for beta in (0.25, 0.75):
        point = token_level_target(P, ref, tau, beta, LANG.tree)
        assert point.residual <= 1e-10
        mu = token_level_mixture(point.pi, ref, beta, LANG.tree)
        np.testing.assert_allclose(point.pi, best_response(P, ref, tau, mu), atol=1e-10)
        # a different point from the sequence-level one (the mixtures differ)
        assert np.abs(point.pi - sequence_level_target(P, ref, tau, beta).pi).max() > 1e-6
    # at beta = 0 and 1 both mixtures are pi and pi_ref: Newton from pi_ref lands on the
    # sequence-level points, the regularised Nash equilibrium and the best response to pi_ref
    zero = token_level_target(P, ref, tau, 0.0, LANG.tree, start=ref)
    one = token_level_target(P, ref, tau, 1.0, LANG.tree, start=ref)
    assert zero.method == one.method == "Newton"
    assert max(zero.residual, one.residual) <= 1e-10
    np.testing.assert_allclose(zero.pi, regularised_nash(P, ref, tau), atol=1e-10)
    np.testing.assert_allclose(one.pi, best_response(P, ref, tau, ref), atol=1e-10)


def test_token_game_map_at_beta_zero_is_the_nash_map(arena):
    P, ref, tau = arena.P[2], arena.pi_ref[2], 0.5
    x = torch.log(torch.as_tensor(arena.pi_ref[0], dtype=torch.float64))
    T = torch.exp(_TokenGame(P, ref, tau, 0.0, LANG.tree).T(x)).numpy()
    np.testing.assert_allclose(T, best_response(P, ref, tau, arena.pi_ref[0]), atol=1e-12)


def test_contrastive_stationary_points(arena):
    P, ref, tau = arena.P[0], arena.pi_ref[0], 0.25
    ipo = contrastive_stationary_point("ipo", P, ref, tau)
    np.testing.assert_allclose(ipo.pi, regularised_nash(P, ref, tau), atol=1e-10)
    dpo = contrastive_stationary_point("dpo", P, ref, tau)
    assert dpo.residual <= 1e-10
    # the exact expected gradient of course_lib.tabular vanishes at DPO's point ...
    g = expected_contrastive_gradient(np.log(dpo.pi), P, ref, tau, 0.0, "dpo")
    assert np.abs(g).max() < 1e-10
    np.testing.assert_allclose(expected_gradient("dpo", P, ref, tau, dpo.pi), g, atol=1e-12)
    # ... which is not pi*_tau, and not where online IPO's gradient vanishes
    assert kl(ipo.pi, dpo.pi) > 0.05
    g_ipo = expected_contrastive_gradient(np.log(dpo.pi), P, ref, tau, 0.0, "ipo")
    assert np.abs(g_ipo).max() > 1e-3
    with pytest.raises(ValueError, match="loss='kto' is invalid"):
        contrastive_stationary_point("kto", P, ref, tau)


def test_slic_point_reports_the_exact_expected_gradient(arena):
    """SLiC's self-play stationary points are a set; the reported point is where exact
    subgradient descent stands, and its residual is the tabular expected gradient's size."""
    P, ref, tau = arena.P[0], arena.pi_ref[0], 0.25
    slic = contrastive_stationary_point("slic", P, ref, tau, slic_steps=2000)
    g = expected_contrastive_gradient(np.log(slic.pi), P, ref, tau, 0.0, "slic")
    assert np.abs(g).max() == pytest.approx(slic.residual, rel=1e-6)
    assert "not a point" in slic.method


# ---------------------------------------------------------------------------------------------
# training
# ---------------------------------------------------------------------------------------------
def test_online_ipo_reaches_its_destination(arena):
    run = train(
        arena, "online_ipo", tau=0.5, steps=150, lr=2e-3, prompts_per_step=32, eval_every=75
    )
    first, last = run.curve[0], run.final
    assert [r["step"] for r in run.curve] == [0, 75, 150]
    assert first["kl_to_ref"] == pytest.approx(0.0, abs=1e-6)  # starts at pi_ref
    assert last["kl_to_target"] == pytest.approx(last["kl_to_nash"])  # its target is pi*_tau
    assert last["kl_to_target"] < first["kl_to_target"] / 5
    assert last["regularised_exploitability"] < first["regularised_exploitability"]


def test_distill_measures_capacity(arena):
    """Fitting the transformer directly to a target: the KL it reports is the exact one."""
    target = arena.nash(0.25)
    history = distill(arena, target, steps=40, lr=1e-2)
    np.testing.assert_allclose(
        history[0], np.mean([kl(target[i], arena.pi_ref[i]) for i in range(3)]), rtol=1e-5
    )
    assert history[-1] < history[0] / 5


def test_lora_policy_starts_at_pi_ref(arena):
    from dataclasses import replace

    spec = replace(arena.spec, lora_r=4)
    model, ref = make_policy(arena.reference, spec)
    assert ref is None
    np.testing.assert_allclose(sequence_distribution(model, LANG), arena.pi_ref, atol=1e-6)
    np.testing.assert_allclose(
        sequence_distribution(model, LANG, adapter=False), arena.pi_ref, atol=1e-6
    )


def test_run_arena_writes_its_files(tmp_path):
    out = tmp_path / "arena"
    summary = run_arena(
        "smoke",
        out,
        modes=("nt",),
        algorithms=("online_ipo", "ipo_md"),
        progress=False,
        steps=10,
        eval_every=5,
    )
    on_disk = json.loads((out / "summary.json").read_text())
    assert (
        on_disk["nt"]["algorithms"]["ipo_md"]["kl_to_target"]
        == (summary["nt"]["algorithms"]["ipo_md"]["kl_to_target"])
    )
    for key in ("kl_to_target", "kl_to_nash", "exploitability"):
        assert len(on_disk["nt"]["algorithms"]["online_ipo"][key]) == 1
    assert len(on_disk["nt"]["algorithms"]["ipo_md"]["kl_to_sequence_target"]) == 1
    rows = on_disk["nt"]["token_vs_sequence_mixture"]
    assert {r["beta"] for r in rows} == {0.0, 0.5, 1.0}
    for r in rows:  # the two destinations coincide at beta 0 and 1
        assert (r["kl_token_sequence"] < 1e-12) == (r["beta"] in (0.0, 1.0))
    assert (out / "curves.csv").read_text().startswith("mode,algorithm,seed,step")
    assert (out / "curves_nt.png").stat().st_size > 0
    assert (out / "token_vs_sequence.png").stat().st_size > 0
    with pytest.raises(ValueError, match="algorithms=.* is invalid"):
        run_arena("smoke", tmp_path / "other", algorithms=("offline_ipo",))
    with pytest.raises(ValueError, match="profile='huge' is invalid"):
        run_arena("huge", tmp_path / "other")
