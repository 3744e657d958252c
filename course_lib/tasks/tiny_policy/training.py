"""Training the tiny policy: pre-training on every token, then fine-tuning on the summaries."""

from __future__ import annotations

import math
import time

from course_lib.tasks.summarisation import Record, load_split
from course_lib.tasks.tiny_policy.model import SEP_ID, TinyPolicySpec, encode_corpus, make_model
from course_lib.tasks.tokenizer import load_tokenizer


def _batch(examples: list[list[int]], idx, pad_id: int = 0, completion_only: bool = False):
    import torch

    seqs = [examples[i] for i in idx]
    n = max(len(s) for s in seqs)
    ids = torch.full((len(seqs), n), pad_id, dtype=torch.long)
    mask = torch.zeros((len(seqs), n), dtype=torch.long)
    for k, s in enumerate(seqs):
        ids[k, : len(s)] = torch.tensor(s)
        mask[k, : len(s)] = 1
    labels = ids.masked_fill(mask == 0, -100)
    if completion_only:  # loss on the summary and </s> only: everything up to <tldr> is context
        for k, s in enumerate(seqs):
            labels[k, : s.index(SEP_ID) + 1] = -100
    return ids, mask, labels


def _optimiser(model, spec: TinyPolicySpec, steps: int):
    """AdamW (weight decay on the matrices only) and its schedule: a linear warm-up over
    ``spec.warmup`` steps, then a cosine down to 10% of ``spec.lr`` at ``steps``."""
    import torch

    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    opt = torch.optim.AdamW(
        [{"params": decay, "weight_decay": spec.weight_decay}, {"params": no_decay}],
        lr=spec.lr,
        betas=(0.9, 0.98),
    )

    def lr_at(step: int) -> float:
        if step < spec.warmup:
            return (step + 1) / spec.warmup
        t = (step - spec.warmup) / max(1, steps - spec.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * t))

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, lr_at)


def pretrain(
    steps: int,
    spec: TinyPolicySpec | None = None,
    records: list[Record] | None = None,
    tok=None,
    progress: bool = True,
    log_every: int = 50,
    init=None,
    completion_only: bool = False,
):
    """Train the tiny policy for ``steps`` AdamW steps; return (model, tok, log). ``spec``
    defaults to :class:`TinyPolicySpec` (the committed model's).

    Batches are drawn uniformly with replacement from all (post, summary) examples; the learning
    rate warms up linearly for ``spec.warmup`` steps, then follows a cosine to 10%. The log holds
    the mean training loss (nats per token) every ``log_every`` steps and the wall time.

    ``init=None`` starts from a fresh model (pre-training, loss on every token); ``init=model``
    continues from it, and ``completion_only=True`` puts the loss on the summary tokens only
    (supervised fine-tuning, as the paper's policy is an SFT model, notes/paper-tables.md §2.1).
    """
    import torch
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    spec = TinyPolicySpec() if spec is None else spec
    tok = tok or load_tokenizer()
    records = records if records is not None else load_split("pretrain")
    examples = encode_corpus(tok, records, spec.max_len)
    if not examples:
        raise ValueError("no training example fits in max_len; raise spec.max_len")
    model = make_model(len(tok), spec) if init is None else init
    if tok.sep_token_id != SEP_ID:
        raise ValueError(f"expected <tldr> to have id {SEP_ID}, got {tok.sep_token_id}")
    model.train()
    opt, sched = _optimiser(model, spec, steps)
    gen = torch.Generator().manual_seed(spec.seed)
    log = {"loss": [], "step": []}
    running, count = 0.0, 0
    t0 = time.perf_counter()
    bar = tqdm(range(steps), desc="pre-training", disable=not progress)
    for step in bar:
        idx = torch.randint(len(examples), (spec.batch_size,), generator=gen).tolist()
        ids, mask, labels = _batch(examples, idx, completion_only=completion_only)
        loss = model(input_ids=ids, attention_mask=mask, labels=labels).loss
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        sched.step()
        running += loss.item()
        count += 1
        if (step + 1) % log_every == 0 or step + 1 == steps:
            log["step"].append(step + 1)
            log["loss"].append(running / count)
            bar.set_postfix(loss=f"{running / count:.3f}")
            running, count = 0.0, 0
    log["seconds"] = time.perf_counter() - t0
    log["examples"] = len(examples)
    log["parameters"] = sum(p.numel() for p in model.parameters())
    model.eval()
    return model, tok, log
