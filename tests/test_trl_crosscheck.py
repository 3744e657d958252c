"""The course's losses and online trainer against TRL's own OnlineDPOTrainer, on the same tensors.

TRL 1.16's ``trl.experimental.online_dpo.OnlineDPOTrainer.training_step`` samples two completions
per prompt, scores them with the reward functions and keeps only the hard pairing
``mask = first_half >= second_half`` (the higher reward is "chosen"), then computes on summed
log-ratios ``Delta = h(chosen, rejected)``:

* ``loss_type="ipo"``:     ``(Delta - 1/(2 beta))^2``       (beta is the course's tau)
* ``loss_type="sigmoid"``: ``-log sigmoid(beta Delta)``

The course writes the pair the other way round: ``h = h(y, y')`` for the two samples in the order
they were drawn and a label ``p = P(y > y')`` (Calandriello et al. 2024, eq. 4 and 10). With the
hard label ``p = 1[r(y) >= r(y')]`` the two must agree exactly: ``ipo_loss(h, 1) = (h - a)^2`` and
``ipo_loss(h, 0) = (-h - a)^2`` is TRL's loss on the swapped pair. These tests let TRL's code
compute its loss (a real trainer, one real ``training_step``, with its own generation, reward call
and log-prob forward) and read back what it used, then recompute everything with the course's code.

What differs with a soft label (the paper's choice, TRL cannot express it) is asserted as exact
identities: per pair, with ``Delta`` the chosen-minus-rejected log-ratio and ``p`` the chosen
side's probability,

* soft IPO = hard IPO + 2 (1 - p) Delta / tau   (target (p - 1/2)/tau instead of 1/(2 tau)),
* soft DPO = hard DPO + (1 - p) tau Delta       (minimiser logit(p)/tau instead of none).

The trl import alone takes several seconds on a CPU, hence ``slow``.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from course_lib import llm, logprobs, losses
from course_lib.online import OnlineConfig, OnlineTrainer, Pair
from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

pytest.importorskip("trl", reason="trl is an optional extra (pip install '.[trl]'); CI installs it")
online_dpo = pytest.importorskip(
    "trl.experimental.online_dpo",
    reason="this trl has no trl.experimental.online_dpo (the cross-check targets trl 1.16)",
)

pytestmark = pytest.mark.slow

WORDS = "good bad fine the a summary post yes no maybe".split()
PROMPTS = [
    "<s> post yes <tldr>",
    "<s> post no maybe <tldr>",
    "<s> the post <tldr>",
    "<s> yes fine <tldr>",
    "<s> a summary <tldr>",
    "<s> post <tldr>",
]
TAU = 0.5  # TRL's beta


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer([" ".join(WORDS)]), folder)
    return AutoTokenizer.from_pretrained(folder)


def tiny(tokenizer, seed):
    # peaked next-token distributions (init_std 0.3), so h is far from 0 and the checks bite
    return llm.tiny_llama(
        vocab_size=len(tokenizer),
        hidden=32,
        layers=1,
        heads=2,
        seed=seed,
        init_std=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )


def position_reward(prompts, completions, completion_ids, **kwargs):
    """A reward TRL calls like any reward function; ties are (almost) impossible."""
    return [float(sum((k + 1) * t for k, t in enumerate(ids))) for ids in completion_ids]


def run_trl_step(tokenizer, tmp_path, loss_type, reward=position_reward, seed=0):
    """One real ``OnlineDPOTrainer.training_step``; returns what TRL computed and used."""
    from datasets import Dataset

    policy, ref = tiny(tokenizer, 0), tiny(tokenizer, 1)
    args = online_dpo.OnlineDPOConfig(
        output_dir=str(tmp_path / f"trl-{loss_type}"),
        loss_type=loss_type,
        beta=TAU,
        max_new_tokens=6,
        temperature=1.0,
        # EOS first is likely under a random tiny model; two empty completions tie and give h = 0
        generation_kwargs={"min_new_tokens": 2},
        per_device_train_batch_size=len(PROMPTS),
        gradient_checkpointing=False,
        report_to="none",
        save_strategy="no",
        use_cpu=True,
        bf16=False,  # TRL's default is bf16 autocast, even on the CPU; compare in fp32
        seed=seed,
    )
    trainer = online_dpo.OnlineDPOTrainer(
        model=policy,
        ref_model=ref,
        reward_funcs=reward,
        args=args,
        train_dataset=Dataset.from_dict({"prompt": PROMPTS}),
        processing_class=tokenizer,
    )
    seen = {"forward": [], "rewards": None}
    generate, forward = trainer._generate, trainer._forward

    def spy_generate(*a, **k):
        seen["generate"] = out = generate(*a, **k)
        return out

    def spy_forward(*a, **k):
        out = forward(*a, **k)
        seen["forward"].append(out.detach().clone())
        return out

    def spy_reward(prompts, completions, completion_ids, **k):
        seen["rewards"] = out = reward(prompts, completions, completion_ids, **k)
        return out

    trainer._generate, trainer._forward = spy_generate, spy_forward
    trainer.reward_funcs = [spy_reward]
    loss = trainer.training_step(trainer.model, {"prompt": list(PROMPTS)})
    prompt_ids, prompt_mask, completion_ids, completion_mask, _ = seen["generate"]
    logprobs, ref_logprobs = seen["forward"]  # policy (with grad), then reference (no grad)
    mask = completion_mask.float()
    return {
        "trainer": trainer,
        "policy": policy,
        "ref": ref,
        # one step with gradient_accumulation_steps=1: the returned value is the loss itself
        "loss": loss.item() * args.gradient_accumulation_steps,
        "prompt_ids": prompt_ids,
        "prompt_mask": prompt_mask,
        "completion_ids": completion_ids,
        "completion_mask": completion_mask,
        "ratio": (logprobs * mask).sum(1) - (ref_logprobs * mask).sum(1),
        "rewards": torch.tensor(seen["rewards"], dtype=torch.float64),
    }


CASES = [("ipo", "online_ipo", losses.ipo_loss), ("sigmoid", "online_dpo", losses.dpo_loss)]


@pytest.mark.parametrize("loss_type, algorithm, course_loss", CASES)
def test_hard_label_loss_equals_trl(tokenizer, tmp_path, loss_type, algorithm, course_loss):
    """p = 1 for TRL's chosen side: the course's loss equals TRL's, on TRL's own samples."""
    trl = run_trl_step(tokenizer, tmp_path, loss_type)
    B = len(PROMPTS)
    r1, r2 = trl["rewards"][:B], trl["rewards"][B:]
    assert (r1 != r2).all(), "a tie: pick another reward (TRL breaks ties towards y)"
    # both orientations occur, so the swap (p = 0) path is exercised, not only p = 1
    assert 0 < int((r1 > r2).sum()) < B

    # 1) the course's summed log-probs on TRL's tokens equal what TRL's forward produced
    #    (TRL passes no position ids; the rotary embedding is shift-invariant, so only float
    #    rounding may differ)
    args = (trl["prompt_ids"], trl["prompt_mask"], trl["completion_ids"], trl["completion_mask"])
    eos = tokenizer.eos_token_id
    with torch.no_grad():
        course_ratio = (
            logprobs.sequence_logprobs(trl["policy"], *args, eos_token_id=eos)[0]
            - logprobs.sequence_logprobs(trl["ref"], *args, eos_token_id=eos)[0]
        )
    torch.testing.assert_close(course_ratio, trl["ratio"], atol=1e-5, rtol=1e-5)

    # 2) the course's loss on h(y, y') with the hard label equals TRL's loss on (chosen, rejected)
    h = trl["ratio"][:B] - trl["ratio"][B:]
    p = (r1 >= r2).float()  # TRL's pairing rule
    assert h.abs().min() > 1e-3  # the pair carries signal: a wrong sign or target would show
    course = course_loss(h, p, TAU).mean().item()
    assert course == pytest.approx(trl["loss"], rel=1e-5, abs=1e-6)

    # 3) the course's trainer, label="threshold", on the same batch: same loss again. Its label
    #    comes from a Bradley-Terry probability sigmoid(r(y) - r(y')), thresholded at 1/2.
    cfg = OnlineConfig(algorithm=algorithm, tau=TAU, label="threshold", progress=False)
    ours = OnlineTrainer(
        cfg, trl["policy"], tokenizer, lambda *a: None, PROMPTS, ref_model=trl["ref"]
    )
    ids, cmask = trl["completion_ids"], trl["completion_mask"]
    batch = Pair(
        list(PROMPTS),
        trl["prompt_ids"][:B],
        trl["prompt_mask"][:B],
        ids[:B],
        cmask[:B],
        ids[B:],
        cmask[B:],
        [""] * B,
        [""] * B,
    )
    bt = torch.sigmoid(r1 - r2).numpy()
    labels = torch.as_tensor(ours.labels(bt, 0, 0), dtype=torch.float32)
    torch.testing.assert_close(labels, p)
    with torch.no_grad():
        loss, h_trainer, _ = ours.loss(batch, labels)
    torch.testing.assert_close(h_trainer, h, atol=1e-5, rtol=1e-5)
    assert loss.item() == pytest.approx(trl["loss"], rel=1e-5, abs=1e-6)


@pytest.mark.parametrize(
    "loss_type, course_loss", [("ipo", losses.ipo_loss), ("sigmoid", losses.dpo_loss)]
)
def test_soft_label_differs_from_trl_as_derived(tokenizer, tmp_path, loss_type, course_loss):
    """With p = 0.7 for the chosen side the course's (paper's) loss is not TRL's, by exactly
    2 (1 - p) Delta / tau (IPO) or (1 - p) tau Delta (DPO) per pair."""
    trl = run_trl_step(tokenizer, tmp_path, loss_type)
    B = len(PROMPTS)
    r1, r2 = trl["rewards"][:B], trl["rewards"][B:]
    first = r1 >= r2
    h = trl["ratio"][:B] - trl["ratio"][B:]
    delta = torch.where(first, h, -h).double()  # chosen minus rejected, as TRL builds it
    p = 0.7
    soft = course_loss(delta, p, TAU)
    hard = course_loss(delta, 1.0, TAU)
    assert hard.mean().item() == pytest.approx(trl["loss"], rel=1e-5, abs=1e-6)
    shift = 2 * (1 - p) * delta / TAU if loss_type == "ipo" else (1 - p) * TAU * delta
    torch.testing.assert_close(soft - hard, shift, atol=1e-9, rtol=1e-9)
    gap = abs(soft.mean().item() - trl["loss"])
    assert gap > 1e-3 and gap == pytest.approx(abs(shift.mean().item()), rel=1e-5)
    # where the per-pair loss is flat: the soft label has a finite optimum, h* = (p - 1/2)/tau for
    # IPO (Calandriello eq. 10) and logit(p)/tau for DPO; TRL's hard label aims at 1/(2 tau)
    # (IPO) or at +infinity (DPO, the sigmoid loss only decreases).
    h_star = (p - 0.5) / TAU if loss_type == "ipo" else float(np.log(p / (1 - p))) / TAU
    x = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
    (grad,) = torch.autograd.grad(course_loss(x, p, TAU).sum(), x)
    assert abs(grad.item()) < 1e-12
    x = torch.tensor([h_star], dtype=torch.float64, requires_grad=True)
    (grad_hard,) = torch.autograd.grad(course_loss(x, 1.0, TAU).sum(), x)
    assert grad_hard.item() < -0.1  # TRL's loss still pushes Delta up there


def test_trl_breaks_ties_towards_the_first_sample(tokenizer, tmp_path):
    """With equal rewards TRL still trains: ``>=`` makes y (the first sample) the winner, so its
    loss is ``ipo_loss(h, 1)``; the course's threshold label is 1/2 there, and the soft-label
    IPO loss of a tie, ``h^2 + a^2``, pulls h to 0 instead of to 1/(2 tau)."""

    def flat(prompts, completions, completion_ids, **kwargs):  # e.g. a 0/1 rule that never fires
        return [0.0] * len(completions)

    trl = run_trl_step(tokenizer, tmp_path, "ipo", reward=flat)
    B = len(PROMPTS)
    h = trl["ratio"][:B] - trl["ratio"][B:]
    ones, halves = torch.ones(B), torch.full((B,), 0.5)
    assert losses.ipo_loss(h, ones, TAU).mean().item() == pytest.approx(trl["loss"], rel=1e-5)
    tie = losses.ipo_loss(h, halves, TAU)
    torch.testing.assert_close(tie, h**2 + (0.5 / TAU) ** 2)
    assert abs(tie.mean().item() - trl["loss"]) > 1e-3
