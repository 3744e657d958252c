"""course_lib.trl_bridge: where TRL's online trainers differ from the paper, made exact.

* thresholded labels: the exact expected online-IPO gradient with labels 1[P > 1/2], summed pair
  by pair from ``losses.ipo_loss``, equals the soft-label gradient of the majority game; its zero
  is ``regularised_nash(majority_preference(P))``, which differs from ``P``'s equilibrium;
* a Bradley-Terry reward model reproduces a BT preference exactly and changes a cyclic one;
* the summed / averaged IPO margins give the closed forms 1/(2 tau) and |y_w|/(2 tau);
* ``sampler_distribution`` is what the samplers really draw (frequencies of the real decode loop
  pass a chi-square test against it), the correct sampler's distribution equals a full
  recomputation that shares no code with it, D2 is exactly pi, and D1 is far from the mixture.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from scipy.stats import chisquare

from course_lib import losses
from course_lib import trl_bridge as tb
from course_lib.sampling import LMStream, sample_from_streams
from course_lib.tabular import (
    bradley_terry,
    expected_contrastive_gradient,
    random_preference,
    regularised_nash,
)
from course_lib.tabular.gradients import logits_of, softmax

CYCLE = np.array([[0.5, 0.9, 0.3], [0.1, 0.5, 0.6], [0.7, 0.4, 0.5]])
UNIFORM = np.ones(3) / 3
V, EOS, PROMPT, BETA = 5, 4, [0, 1, 2], 0.3


# --- (a) thresholded labels -------------------------------------------------------------------
def test_majority_preference_values_and_antisymmetry():
    P = random_preference(6, seed=1)
    P[0, 1], P[1, 0] = 0.5, 0.5  # a tie stays a tie
    M = tb.majority_preference(P)
    assert set(np.unique(M)) <= {0.0, 0.5, 1.0}
    np.testing.assert_array_equal(M + M.T, np.ones_like(M))
    assert M[0, 1] == 0.5
    np.testing.assert_array_equal(M > 0.5, P > 0.5)


def _thresholded_online_ipo_gradient(theta, P, pi_ref, tau):
    """sum_{y,y'} pi(y) pi(y') grad ipo_loss(h(y,y'), 1[P > 1/2]), the sampler held fixed."""
    pi = softmax(theta)
    th = torch.tensor(theta, requires_grad=True)
    log_ratio = torch.log_softmax(th, 0) - torch.log(torch.tensor(pi_ref))
    y, y2 = np.meshgrid(np.arange(len(pi)), np.arange(len(pi)), indexing="ij")
    y, y2 = y.ravel(), y2.ravel()
    h = log_ratio[y] - log_ratio[y2]
    label = torch.tensor(np.where(P[y, y2] > 0.5, 1.0, np.where(P[y, y2] < 0.5, 0.0, 0.5)))
    w = torch.tensor(pi[y] * pi[y2])
    (w * losses.ipo_loss(h, label, tau)).sum().backward()
    return th.grad.numpy()


@pytest.mark.parametrize("tau", [0.1, 0.5])
def test_thresholded_labels_play_the_majority_game(tau):
    P = random_preference(4, seed=3)
    M = tb.majority_preference(P)
    rng = np.random.default_rng(0)
    theta = rng.normal(size=4)
    g_hard = _thresholded_online_ipo_gradient(theta, P, np.ones(4) / 4, tau)
    g_major = expected_contrastive_gradient(theta, M, np.ones(4) / 4, tau)
    np.testing.assert_allclose(g_hard, g_major, atol=1e-10)
    # the fixed point of thresholded online IPO is M's equilibrium, not P's
    nash_M = regularised_nash(M, np.ones(4) / 4, tau)
    nash_P = regularised_nash(P, np.ones(4) / 4, tau)
    assert (
        np.abs(_thresholded_online_ipo_gradient(logits_of(nash_M), P, np.ones(4) / 4, tau)).max()
        < 1e-8
    )
    assert (
        np.abs(_thresholded_online_ipo_gradient(logits_of(nash_P), P, np.ones(4) / 4, tau)).max()
        > 1e-3
    )
    assert np.abs(nash_M - nash_P).max() > 0.01


def test_a_cycle_with_unequal_strengths_becomes_rock_paper_scissors():
    M = tb.majority_preference(CYCLE)
    np.testing.assert_allclose(regularised_nash(M, UNIFORM, 0.1), UNIFORM, atol=1e-10)
    assert np.abs(regularised_nash(CYCLE, UNIFORM, 0.1) - UNIFORM).max() > 0.1


# --- (b) reward model -------------------------------------------------------------------------
def test_bradley_terry_game_is_exact_for_a_bt_preference():
    P = bradley_terry([0.0, 1.0, -0.5, 2.0])
    g = tb.bradley_terry_game(P, np.ones(4) / 4, 0.3)
    np.testing.assert_allclose(g["P_fit"], P, atol=1e-6)
    np.testing.assert_allclose(g["nash_bt"], g["nash_P"], atol=1e-6)
    assert g["flipped_pairs"] == []


def test_bradley_terry_game_changes_a_cyclic_preference():
    g = tb.bradley_terry_game(CYCLE, UNIFORM, 0.1)
    assert len(g["flipped_pairs"]) >= 1  # a cycle cannot be ranked without reversing a pair
    assert np.abs(g["nash_bt"] - g["nash_P"]).max() > 0.1
    np.testing.assert_allclose(g["nash_bt"], regularised_nash(g["P_fit"], UNIFORM, 0.1))
    # the BT game's equilibrium favours the highest reward
    assert np.argmax(g["nash_bt"]) == np.argmax(g["scores"])


# --- (c) length normalisation -----------------------------------------------------------------
@pytest.mark.parametrize("tau, len_w, len_l", [(0.1, 5, 20), (1.0, 20, 5), (0.5, 7, 7)])
def test_ipo_target_sum_vs_mean(tau, len_w, len_l):
    target = losses.ipo_target(tau)
    assert tb.logratio_at_ipo_target(tau, len_w, len_l, "sum") == pytest.approx(target)
    mean = tb.logratio_at_ipo_target(tau, len_w, len_l, "mean")
    assert mean == pytest.approx(len_w * target)
    # at that log-ratio the course's IPO loss with a hard label is at its minimum (zero)
    h = tb.ipo_margin(mean, 0.0, len_w, len_l, "mean")
    assert float(losses.ipo_loss(torch.tensor([h]), torch.tensor([1.0]), tau)) == pytest.approx(
        0.0, abs=1e-9
    )


def test_length_helpers_reject_bad_input():
    with pytest.raises(ValueError, match="normalise"):
        tb.ipo_margin(1.0, 0.0, 3, 3, "max")
    with pytest.raises(ValueError, match="lengths"):
        tb.ipo_margin(1.0, 0.0, 0, 3)
    with pytest.raises(ValueError, match="tau"):
        tb.logratio_at_ipo_target(0.0, 3, 3)
    with pytest.raises(ValueError, match="same length"):
        tb.total_variation([0.5, 0.5], [1.0])
    with pytest.raises(ValueError, match="eos_token_id"):
        tb.enumerate_completions(5, 7, 2)


def test_effective_batch_and_launch_command():
    assert tb.effective_batch(4, 8, 2) == 64
    one = tb.launch_command("train.py", ["--x", 1])
    assert "--multi_gpu" not in one and one[-3:] == ["train.py", "--x", "1"]
    many = tb.launch_command("train.py", processes=2, cpu=True)
    assert many[many.index("--num_processes") + 1] == "2" and "--multi_gpu" in many
    with pytest.raises(ValueError):
        tb.effective_batch(0, 8)


def test_run_launch_refuses_an_out_dir_of_someone_elses_files(monkeypatch, tmp_path):
    """The worker writes rank0.safetensors by name: a user's file of that name must survive, and
    the refusal must come before anything is launched."""
    import subprocess
    from pathlib import Path

    from course_lib.atomic import OutputDirError

    def launched(*args, **kwargs):
        raise AssertionError("launched before out_dir was checked")

    monkeypatch.setattr(subprocess, "run", launched)
    worker = Path(__file__).with_name("ddp_worker.py")
    (tmp_path / "rank0.safetensors").write_bytes(b"mine")
    with pytest.raises(OutputDirError, match="did not write"):
        tb.run_launch(worker, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["rank0.safetensors"]
    assert (tmp_path / "rank0.safetensors").read_bytes() == b"mine"
    with pytest.raises(FileNotFoundError, match="no such file"):
        tb.run_launch(tmp_path / "missing.py", tmp_path / "new")
    assert not (tmp_path / "new").exists()


# --- (d) the mixture sampler ------------------------------------------------------------------
@pytest.fixture(scope="module")
def policy():
    return tb.tiny_peft_policy(vocab_size=V, eos_token_id=EOS)


@pytest.fixture(scope="module")
def completions():
    out = tb.enumerate_completions(V, EOS, 3)
    assert len(out) == len(set(out)) == 1 + 4 + 4 * 4 * 5
    return out


def _full_recomputation(policy, completion, beta):
    """Mixture probability of one completion: both models run on the whole sequence, no cache."""
    ids = torch.tensor([PROMPT + list(completion)])
    start = len(PROMPT) - 1
    with torch.no_grad():
        z_pi = policy(input_ids=ids).logits[0, start:-1].double()
        with policy.disable_adapter():
            z_ref = policy(input_ids=ids).logits[0, start:-1].double()
    lp = torch.log_softmax((1 - beta) * z_pi + beta * z_ref, -1)
    return float(lp.gather(-1, torch.tensor(completion)[:, None]).sum().exp())


def test_correct_sampler_distribution_is_the_token_level_mixture(policy, completions):
    dist = tb.sampler_distribution(
        tb.correct_streams(policy), [1 - BETA, BETA], PROMPT, completions
    )
    exact = np.array([_full_recomputation(policy, c, BETA) for c in completions])
    np.testing.assert_allclose(dist, exact, atol=1e-6)
    assert dist.sum() == pytest.approx(1.0, abs=1e-9)


def test_wrong_samplers_measured_exactly(policy, completions):
    w = [1 - BETA, BETA]
    good = tb.sampler_distribution(tb.correct_streams(policy), w, PROMPT, completions)
    d1 = tb.sampler_distribution(tb.shared_cache_streams(policy), w, PROMPT, completions)
    d2 = tb.sampler_distribution(tb.adapter_on_streams(policy), w, PROMPT, completions)
    pi = tb.sampler_distribution([LMStream(policy)], [1.0], PROMPT, completions)
    for d in (d1, d2, pi):
        assert d.sum() == pytest.approx(1.0, abs=1e-6)
    assert tb.total_variation(d2, pi) < 1e-6  # D2 samples pi whatever beta is
    assert tb.total_variation(good, pi) > 0.05  # ... and the mixture is not pi
    assert tb.total_variation(good, d1) > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("name", list(tb.SAMPLER_STREAMS))
def test_sampler_distribution_is_what_the_decode_loop_draws(policy, completions, name):
    """8 000 draws of the real decode loop with each sampler's streams pass a chi-square test
    against ``sampler_distribution`` of the same streams."""
    w = [1 - BETA, BETA]
    make = tb.SAMPLER_STREAMS[name]
    dist = tb.sampler_distribution(make(policy), w, PROMPT, completions)
    n = 8_000
    ids = torch.tensor([PROMPT] * n)
    s = sample_from_streams(
        make(policy),
        w,
        ids,
        torch.ones_like(ids),
        max_new_tokens=3,
        eos_token_id=EOS,
        generator=torch.Generator().manual_seed(5),
    )
    index = {c: i for i, c in enumerate(completions)}
    counts = np.zeros(len(completions))
    for row, keep in zip(s.tokens.numpy(), s.mask.numpy().astype(bool), strict=True):
        counts[index[tuple(row[keep].tolist())]] += 1
    exp = dist * n
    small = exp < 5
    obs = np.append(counts[~small], counts[small].sum())
    exp = np.append(exp[~small], exp[small].sum())
    assert chisquare(obs, exp * obs.sum() / exp.sum()).pvalue > 1e-3


# --- the notebook's exercise checkers ---------------------------------------------------------
def test_nb11_checkers_accept_the_references_and_reject_wrong_answers():
    from course_lib.exercises import nb12

    assert nb12.check_circular_preference(nb12.circular_preference)
    assert not nb12.check_circular_preference(lambda n, s: nb12.circular_preference(n, s).T)
    assert nb12.check_ipo_md_schedule(nb12.ipo_md_schedule)
    # restarting from pi_ref with too few iterations does not reach the stationary points
    assert not nb12.check_ipo_md_schedule(
        lambda P, r, t, b: nb12.ipo_md_schedule(P, r, t, b, iters=5)
    )
    assert nb12.check_length_penalised_preference(nb12.length_penalised_preference)
    assert not nb12.check_length_penalised_preference(
        lambda P, L, lam: nb12.length_penalised_preference(P, L, -lam)
    )
    # the length penalty keeps a preference antisymmetric, and a cycle stays a valid P
    P = nb12.length_penalised_preference(CYCLE, [10, 20, 40], 0.05)
    np.testing.assert_allclose(P + P.T, 1.0, atol=1e-12)
