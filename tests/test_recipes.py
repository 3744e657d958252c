"""The two recipes of CONTRIBUTING.md, followed: a registered algorithm variant and a new judge."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from course_lib import judges, losses
from course_lib.logprobs import pair_logratios
from course_lib.online import ALGORITHMS, OnlineConfig, OnlineTrainer
from course_lib.tasks import load_split

pytestmark = pytest.mark.usefixtures("torch_one_thread")


@pytest.fixture(scope="module")
def tiny():
    from course_lib.tasks.tiny_policy import load_tiny_policy, prompt_text

    policy, tok = load_tiny_policy()
    ref, _ = load_tiny_policy()
    records = load_split("train")[:32]
    return policy, ref, tok, records, [prompt_text(r.post) for r in records]


def test_per_token_slic_is_slic_on_length_normalised_h(tiny):
    """Recipe 1: online SLiC with TRL's length normalisation of the log-ratios is one registry
    entry; its loss is slic_loss on h = r(y)/|y| - r(y')/|y'|."""
    policy, ref, tok, records, prompts = tiny
    algorithm = ALGORITHMS["online_slic_per_token"]
    assert algorithm.per_token and algorithm.loss == "slic" and algorithm.online
    config = OnlineConfig(
        algorithm="online_slic_per_token",
        tau=0.5,
        prompts_per_step=4,
        max_new_tokens=12,
        steps=2,
        monitor_every=0,
        progress=False,
        lr=1e-4,
    )
    policy = policy.train().requires_grad_(True)
    trainer = OnlineTrainer(
        config, policy, tok, judges.OracleJudge("bt"), prompts, records, ref_model=ref
    )
    pair = trainer.batch(0)
    label = torch.full((4,), 0.7)
    with torch.no_grad():
        loss, h, _ = trainer.loss(pair, label)
        r1, r2 = pair_logratios(
            policy,
            pair.prompt_ids,
            pair.prompt_mask,
            pair.y,
            pair.y_mask,
            pair.y2,
            pair.y2_mask,
            ref_model=ref,
            eos_token_id=tok.eos_token_id,
        )
    expected = r1 / pair.y_mask.sum(-1) - r2 / pair.y2_mask.sum(-1)
    torch.testing.assert_close(h, expected)
    assert loss.item() == pytest.approx(losses.slic_loss(expected, label, 0.5).mean().item())
    history = trainer.train()
    assert len(history) == 2 and all(np.isfinite(m["loss"]) for m in history)


def test_a_scalar_reward_model_is_a_bradley_terry_judge():
    """Recipe 2: a scalar reward r(x, y) judges through sigmoid(r(y) - r(y')); with the
    synthetic task's BT score it is the bt oracle, up to the oracle's rounding."""
    records = load_split("valid")[:5]
    ys = [r.summaries[0].text for r in records]
    y2s = [r.summaries[-1].text for r in records]
    reward = judges.oracle_reward()
    p = reward(records, ys, y2s)
    np.testing.assert_allclose(p, judges.OracleJudge("bt")(records, ys, y2s), atol=2.0**-39)
    np.testing.assert_allclose(p + reward(records, y2s, ys), 1.0)
    with pytest.raises(ValueError, match="scale=0"):
        judges.RewardJudge(lambda c, y: 0.0, scale=0)


@pytest.mark.slow
def test_online_dpo_trains_on_the_reward_judge(tmp_path):
    """Recipe 2, end to end: `python -m course_lib train --judge reward` on the tiny track."""
    from course_lib.commands import main

    out = tmp_path / "dpo_reward"
    code = main(
        [
            "train",
            "--algorithm",
            "online_dpo",
            "--judge",
            "reward",
            "--steps",
            "2",
            "--prompts-per-step",
            "2",
            "--new-tokens",
            "8",
            "--profile",
            "smoke",
            "--out",
            str(out),
            "--no-progress",
        ]
    )
    assert code == 0
    log = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [1, 2] and 0 < log[0]["p_mean"] < 1
    assert json.loads((out / "run.json").read_text())["settings"]["judge"] == "reward"
