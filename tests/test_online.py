"""The online trainer on a tiny model: directions, labels, resume, NaN stop, config errors."""

import dataclasses
import json
import math

import numpy as np
import pytest
import torch

from course_lib import llm, logprobs
from course_lib.online import (
    ALGORITHMS,
    NonFiniteLoss,
    OfflinePair,
    OnlineConfig,
    OnlineTrainer,
)
from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer

pytestmark = pytest.mark.usefixtures("torch_one_thread")

WORDS = "good bad fine the a summary post yes no maybe".split()


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    from transformers import AutoTokenizer

    folder = tmp_path_factory.mktemp("tok")
    save_tokenizer(build_tokenizer([" ".join(WORDS)]), folder)
    return AutoTokenizer.from_pretrained(folder)


def good_judge(contexts, ys, y2s):
    """P(y > y') = sigmoid(#good - #good'): a Bradley-Terry preference that likes 'good'."""
    score = np.array([y.split().count("good") for y in ys], float)
    score2 = np.array([y.split().count("good") for y in y2s], float)
    return 1.0 / (1.0 + np.exp(-(score - score2)))


def make_policy(tokenizer, lora=True, seed=0):
    torch.manual_seed(seed)  # LoRA's A matrices are drawn from the global generator
    model = llm.tiny_llama(
        vocab_size=len(tokenizer),
        hidden=32,
        layers=1,
        heads=2,
        seed=seed,
        init_std=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    if lora:
        return llm.apply_lora(model, llm.LoraSettings(r=4, alpha=8.0)), None
    ref = llm.tiny_llama(
        vocab_size=len(tokenizer),
        hidden=32,
        layers=1,
        heads=2,
        seed=seed,
        init_std=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    model.train().requires_grad_(True)
    return model, ref


PROMPTS = ["<s> post yes <tldr>", "<s> post no maybe <tldr>", "<s> the post <tldr>"]


def trainer_for(tokenizer, tmp_path=None, lora=True, **overrides):
    settings = dict(
        algorithm="online_ipo",
        tau=0.5,
        steps=3,
        prompts_per_step=4,
        lr=5e-3,
        max_new_tokens=5,
        seed=1,
        progress=False,
        monitor_every=0,
    )
    settings.update(overrides)
    if tmp_path is not None:
        settings["out_dir"] = str(tmp_path)
    model, ref = make_policy(tokenizer, lora=lora)
    return OnlineTrainer(
        OnlineConfig(**settings), model, tokenizer, good_judge, prompts=PROMPTS, ref_model=ref
    )


@pytest.mark.parametrize(
    "name", ["online_dpo", "online_slic", "online_ipo", "ipo_md", "nash_md_pg"]
)
def test_step_moves_policy_down_its_loss(tokenizer, name):
    """One small step lowers the algorithm's own loss on the batch it was computed on."""
    beta = 0.3 if ALGORITHMS[name].uses_beta else 0.0
    tr = trainer_for(
        tokenizer, algorithm=name, beta=beta, lr=1e-3, tau=0.5 if name != "online_slic" else 0.05
    )
    batch = tr.batch(0, 0)
    p = good_judge(None, batch.y_texts, batch.y2_texts)
    labels = torch.as_tensor(p, dtype=torch.float32)
    with torch.no_grad():
        before = tr.loss(batch, labels)[0].item()
    tr.batch = lambda step, micro=0: batch
    metrics = tr.step()
    with torch.no_grad():
        after = tr.loss(batch, labels)[0].item()
    assert metrics["loss"] == pytest.approx(before, rel=1e-5)
    assert after < before, (name, before, after)


def test_samples_come_from_pi_and_reference_stays_fixed(tokenizer):
    """After training, the adapter-off reference still equals the untouched base."""
    tr = trainer_for(tokenizer, steps=3)
    base, _ = make_policy(tokenizer, lora=False)
    tr.train()
    batch = tr.batch(99, 0)
    eos = tokenizer.eos_token_id
    args = (batch.prompt_ids, batch.prompt_mask, batch.y, batch.y_mask)
    with torch.no_grad():
        ratio_y, _ = logprobs.pair_logratios(
            tr.policy, *args, batch.y2, batch.y2_mask, eos_token_id=eos
        )
        direct = logprobs.sequence_logprobs(tr.policy, *args, eos_token_id=eos)[0]
        direct = direct - logprobs.sequence_logprobs(base, *args, eos_token_id=eos)[0]
    torch.testing.assert_close(ratio_y, direct)
    lora_b = [p for n, p in tr.policy.named_parameters() if "lora_B" in n]
    assert any(p.abs().sum() > 0 for p in lora_b)  # the adapter did move


@pytest.mark.parametrize("lora", [True, False], ids=["adapter-off base", "frozen ref_model"])
def test_ipo_md_takes_log_pi_ref_from_the_sampler_with_the_same_loss_and_gradient(tokenizer, lora):
    """IPO-MD draws y and y' from the mixture, whose sampler ran pi_ref on every token it drew:
    the loss sums those log pi_ref(y_n | x, y_<n) instead of running a teacher-forced reference
    forward, and its value, h and gradient are those of the forward: within 1e-5 of float32
    rounding, relative to each quantity's size (the cached decode and the teacher-forced forward
    round differently; measured: 5e-6 on h of size 3 and 2e-6 of the gradient's largest entry)."""
    tr = trainer_for(tokenizer, lora=lora, algorithm="ipo_md", beta=0.3, max_new_tokens=8)
    params = [p for p in tr.policy.parameters() if p.requires_grad]
    torch.manual_seed(0)
    with torch.no_grad():  # move pi away from pi_ref, so that log pi_ref is not log pi
        for p in params:
            p.add_(0.1 * torch.randn_like(p))
    pair = tr.batch(0, 0)
    assert pair.ref_logprobs is not None and pair.ref_logprobs[0].shape == pair.y.shape
    assert 0 < int(pair.y_mask.sum() + pair.y2_mask.sum()) < 2 * pair.y.numel()  # EOS masks
    label = torch.as_tensor(good_judge(None, pair.y_texts, pair.y2_texts), dtype=torch.float32)

    def loss_h_grads(batch):
        tr.optimizer.zero_grad()
        loss, h, _ = tr.loss(batch, label)
        loss.backward()
        return loss.detach(), h, [p.grad.clone() for p in params]

    new, old = loss_h_grads(pair), loss_h_grads(dataclasses.replace(pair, ref_logprobs=None))
    torch.testing.assert_close(new[0], old[0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(new[1], old[1], atol=1e-5, rtol=1e-5)
    for g_new, g_old in zip(new[2], old[2], strict=True):
        torch.testing.assert_close(g_new, g_old, atol=1e-5 * float(g_old.abs().max()), rtol=0)
    assert float(old[1].abs().max()) > 1e-2  # h is not trivially 0: pi differs from pi_ref
    if not lora:  # and the frozen reference model did not run at all
        calls = []
        hook = tr.ref_model.register_forward_pre_hook(lambda *a: calls.append(1))
        tr.loss(pair, label)
        hook.remove()
        assert calls == []


@pytest.mark.parametrize("name", ["online_ipo", "online_dpo", "nash_md_pg"])
def test_pairs_not_both_from_the_mixture_keep_the_reference_forward(tokenizer, name):
    beta = 0.3 if ALGORITHMS[name].uses_beta else 0.0
    assert trainer_for(tokenizer, algorithm=name, beta=beta).batch(0, 0).ref_logprobs is None


def test_labels(tokenizer):
    tr = trainer_for(tokenizer, label="threshold")
    np.testing.assert_array_equal(tr.labels(np.array([0.2, 0.5, 0.9]), 0, 0), [0.0, 0.5, 1.0])
    tr = trainer_for(tokenizer, label="sampled")
    p = np.full(20_000, 0.3)
    drawn = tr.labels(p, 0, 0)
    assert set(np.unique(drawn)) == {0.0, 1.0} and abs(drawn.mean() - 0.3) < 0.02
    np.testing.assert_array_equal(drawn, tr.labels(p, 0, 0))  # seeded by the step


def test_resume_continues_exactly(tokenizer, tmp_path):
    full = trainer_for(tokenizer, tmp_path / "full", steps=4, monitor_every=2)
    full.train()
    half = trainer_for(tokenizer, tmp_path / "half", steps=4, checkpoint_every=2, monitor_every=2)
    half.train(steps=2)
    resumed = trainer_for(tokenizer, tmp_path / "half", steps=4, monitor_every=2)
    assert resumed.load_checkpoint() == 2
    resumed.train()
    for a, b in zip(full.state.history, resumed.state.history, strict=True):
        assert a["loss"] == b["loss"] and a["p_mean"] == b["p_mean"]
    for (n, p), (_, q) in zip(
        full.policy.named_parameters(), resumed.policy.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), n
    log = [json.loads(x) for x in (tmp_path / "half" / "metrics.jsonl").read_text().splitlines()]
    assert [m["step"] for m in log] == [1, 2, 3, 4]


def test_full_finetune_with_frozen_reference_resumes(tokenizer, tmp_path):
    tr = trainer_for(tokenizer, tmp_path, lora=False, algorithm="ipo_md", beta=0.25, steps=2)
    tr.train()
    assert all(not p.requires_grad for p in tr.ref_model.parameters())
    again = trainer_for(tokenizer, tmp_path, lora=False, algorithm="ipo_md", beta=0.25, steps=2)
    assert again.load_checkpoint() == 2
    for (n, p), (_, q) in zip(
        tr.policy.named_parameters(), again.policy.named_parameters(), strict=True
    ):
        assert torch.equal(p, q), n


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tokenizer, tmp_path, monkeypatch):
    tr = trainer_for(tokenizer, tmp_path, steps=4, checkpoint_every=1)
    tr.train(steps=1)
    saved = (tmp_path / "checkpoint" / "trainable.safetensors").read_bytes()
    real_loss = tr.loss

    def nan_loss(batch, labels):
        loss, h, ratio = real_loss(batch, labels)
        return loss * float("nan"), h, ratio

    monkeypatch.setattr(tr, "loss", nan_loss)
    with pytest.raises(NonFiniteLoss, match=r"step 2 is nan.*step 1\)"):
        tr.train()
    assert (tmp_path / "checkpoint" / "trainable.safetensors").read_bytes() == saved
    assert all(torch.isfinite(p).all() for p in tr.policy.parameters())  # no step was taken
    again = trainer_for(tokenizer, tmp_path, steps=4)
    assert again.load_checkpoint() == 1


def test_nan_weights_stop_at_sampling(tokenizer, tmp_path):
    tr = trainer_for(tokenizer, tmp_path, steps=4, checkpoint_every=1)
    tr.train(steps=1)
    with torch.no_grad():
        next(p for n, p in tr.policy.named_parameters() if "lora_A" in n).fill_(float("nan"))
    with pytest.raises(NonFiniteLoss, match="next-token probabilities are not finite"):
        tr.train()
    again = trainer_for(tokenizer, tmp_path, steps=4)
    assert again.load_checkpoint() == 1
    assert all(torch.isfinite(p).all() for p in again.policy.parameters())


def test_monitor_reports_win_rate_and_kl(tokenizer):
    tr = trainer_for(tokenizer, monitor_every=1, steps=1)
    m = tr.train()[-1]
    assert 0.0 <= m["win_vs_ref"] <= 1.0 and math.isfinite(m["kl"])
    assert 1 <= m["length"] <= 5 and 0.0 <= m["eos_rate"] <= 1.0 and m["tokens_per_s"] > 0


def test_offline_pairs(tokenizer):
    pairs = [
        OfflinePair(None, PROMPTS[0], "good good", "bad", 1.0),
        OfflinePair(None, PROMPTS[1], "fine", "good", 0.2),
    ]
    model, _ = make_policy(tokenizer)
    tr = OnlineTrainer(
        OnlineConfig(
            algorithm="offline_ipo",
            tau=0.5,
            steps=2,
            prompts_per_step=2,
            progress=False,
            monitor_every=0,
        ),
        model,
        tokenizer,
        good_judge,
        pairs=pairs,
    )
    hist = tr.train()
    assert len(hist) == 2 and all(math.isfinite(h["loss"]) for h in hist)


@pytest.mark.parametrize(
    "field, value, words",
    [
        ("tau", 0.0, "tau=0.0"),
        ("tau", -1, "tau=-1"),
        ("beta", 1.5, "beta=1.5"),
        ("algorithm", "ppo", "algorithm='ppo'"),
        ("label", "hard", "label='hard'"),
        ("prompts_per_step", 0, "prompts_per_step=0"),
        ("max_new_tokens", 2.5, "max_new_tokens=2.5"),
        ("mixed_precision", "fp8", "mixed_precision='fp8'"),
        ("lr", float("inf"), "lr=inf"),
        ("lr", float("nan"), "lr=nan"),
        ("lr", 0.0, "lr=0.0"),
        ("temperature", float("inf"), "temperature=inf"),
        ("tau", float("nan"), "tau=nan"),
        ("beta", True, "beta=True"),
        ("beta", float("nan"), "beta=nan"),
        ("steps", True, "steps=True"),
        ("seed", -1, "seed=-1"),
        ("max_grad_norm", float("inf"), "max_grad_norm=inf"),
    ],
)
def test_config_errors_name_the_value(field, value, words):
    with pytest.raises(ValueError, match=words.replace("(", r"\(")):
        OnlineConfig(**{field: value}).validate()


def test_beta_on_a_pi_only_algorithm_is_an_error():
    with pytest.raises(ValueError, match="online_dpo samples from pi only"):
        OnlineConfig(algorithm="online_dpo", beta=0.2).validate()


def test_judge_reading_other_tokens_is_rejected(tokenizer, tmp_path):
    from transformers import AutoTokenizer

    other = tmp_path / "other"
    save_tokenizer(build_tokenizer(["completely different words here"]), other)

    def judge(c, a, b):
        return np.full(len(a), 0.5)

    judge.tokenizer = AutoTokenizer.from_pretrained(other)
    judge.reads_policy_tokens = True
    model, _ = make_policy(tokenizer)
    with pytest.raises(ValueError, match="does not match the policy's"):
        OnlineTrainer(OnlineConfig(progress=False), model, tokenizer, judge, prompts=PROMPTS)


def test_full_model_without_reference_is_an_error(tokenizer):
    model, _ = make_policy(tokenizer, lora=False)
    with pytest.raises(ValueError, match="no LoRA adapter and no ref_model"):
        OnlineTrainer(OnlineConfig(progress=False), model, tokenizer, good_judge, prompts=PROMPTS)


def test_a_non_finite_weight_is_never_checkpointed(tokenizer, tmp_path):
    """lr=inf used to pass validation and write a checkpoint of NaN weights called the last good
    one; now no checkpoint is written whose weights or optimiser state are not finite."""
    tr = trainer_for(tokenizer, tmp_path, steps=3, checkpoint_every=1)
    tr.train(steps=1)
    saved = {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()}
    with torch.no_grad():
        next(p for n, p in tr.policy.named_parameters() if "lora_B" in n)[0, 0] = float("inf")
    with pytest.raises(NonFiniteLoss, match="not finite.*no checkpoint was written"):
        tr.save_checkpoint()
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == saved
    with torch.no_grad():  # a NaN in Adam's moments is refused too
        tr.policy.zero_grad()
        state = next(iter(tr.optimizer.state.values()))
        state["exp_avg_sq"].view(-1)[0] = float("nan")
        next(p for n, p in tr.policy.named_parameters() if "lora_B" in n)[0, 0] = 0.0
    with pytest.raises(NonFiniteLoss, match="exp_avg_sq"):
        tr.save_checkpoint()
    assert {p.name: p.read_bytes() for p in (tmp_path / "checkpoint").iterdir()} == saved


def test_resume_rewrites_the_log_atomically(tokenizer, tmp_path):
    """A log line of a step after the checkpoint (and a partial line from a kill) is dropped on
    resume; timing goes to its own log, so metrics.jsonl is the same on every machine."""
    tr = trainer_for(tokenizer, tmp_path, steps=3, checkpoint_every=2, monitor_every=0)
    tr.train()
    log = tmp_path / "metrics.jsonl"
    full = log.read_text()
    lines = full.splitlines()
    assert len(lines) == 3 and all("seconds" not in json.loads(x) for x in lines)
    assert len((tmp_path / "timing.jsonl").read_text().splitlines()) == 3
    # a run whose last checkpoint is step 2, with step 3 logged and a half-written line (a kill
    # in the middle of an append): both must go
    again = trainer_for(tokenizer, tmp_path / "b", steps=3, checkpoint_every=2, monitor_every=0)
    again.train(steps=2)
    (tmp_path / "b" / "metrics.jsonl").write_text(full + '{"step": 4, "lo')
    resumed = trainer_for(tokenizer, tmp_path / "b", steps=3, monitor_every=0)
    assert resumed.load_checkpoint() == 2
    assert (tmp_path / "b" / "metrics.jsonl").read_text().splitlines() == lines[:2]
    resumed.train()
    assert (tmp_path / "b" / "metrics.jsonl").read_text() == full


def test_cosine_schedule_and_the_per_step_hook(tokenizer, tmp_path):
    """The learning rate decays as 1/2 (1 + cos(pi t)) after warm-up; the hook's dict lands in
    the history and the log; a cosine run cannot be resumed with another length."""
    cfg = OnlineConfig(steps=6, warmup_steps=2, lr_schedule="cosine", lr=1e-3)
    assert [cfg.lr_factor(s) for s in (0, 1)] == [0.5, 1.0]
    assert cfg.lr_factor(4) == pytest.approx(0.5) and cfg.lr_factor(6) == pytest.approx(0.0)
    tr = trainer_for(
        tokenizer, tmp_path, steps=4, lr_schedule="cosine", checkpoint_every=2, monitor_every=0
    )
    hist = tr.train(on_step=lambda trainer, m: {"exact": trainer.state.step * 10})
    # the logged lr is the scheduler's after the step: the next step's
    assert [h["lr"] for h in hist] == pytest.approx(
        [
            5e-3 * cfg_factor
            for cfg_factor in (
                tr.config.lr_factor(1),
                tr.config.lr_factor(2),
                tr.config.lr_factor(3),
                0.0,
            )
        ]
    )
    assert [h["exact"] for h in hist] == [10, 20, 30, 40]
    logged = [json.loads(x)["exact"] for x in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert logged == [10, 20, 30, 40]
    longer = trainer_for(tokenizer, tmp_path, steps=8, lr_schedule="cosine")
    with pytest.raises(ValueError, match="steps"):
        longer.load_checkpoint()
