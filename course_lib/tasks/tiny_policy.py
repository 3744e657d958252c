"""The tiny reference policy: a small Llama pre-trained from scratch on the synthetic corpus.

The paper's policy and reference are an SFT'd T5X-L (paper notes §5.1). The course's tiny track
replaces it with a Llama-architecture decoder of about a million parameters, with the word-level
tokenizer of :mod:`course_lib.tasks.tokenizer`, trained by next-token prediction on

    <s> post <tldr> summary </s>

for every record of ``records_pretrain.jsonl`` and every one of its eight summaries (the good,
the incomplete, the unfaithful, the long, the short, the malformed and the lead). So the
reference policy writes summaries of every quality, and there is something to align. Two
phases: pre-training with the loss on every token (it learns the language of the posts), then
fine-tuning with the loss on the summary tokens only (it learns to summarise; without this phase
the model writes well-formed summaries whose detail it invents instead of copying).

Remake the committed weights (``data/tiny_policy/``) with::

    python -m course_lib.tasks.tiny_policy train --out data/tiny_policy

(1500 pre-training steps, then 1500 fine-tuning steps, batch 16; ``--init FOLDER`` skips the
pre-training by starting from a saved model)
which also evaluates the result: the oracle win rate of the policy's samples against the corpus
reference summaries of the test prompts, P(pi > reference) = mean_x P*(y ~ pi(.|x) > y_ref(x)|x)
(paper notes §1, win rates), with a standard error over prompts.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import platform
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from course_lib.tasks.oracle import Oracle
from course_lib.tasks.summarisation import Record, default_data_dir, load_split
from course_lib.tasks.tokenizer import BOS, EOS, SEP, load_tokenizer

SEP_ID = 4  # id of <tldr> in data/tokenizer (the tokenizer module fixes the special ids)


@dataclass(frozen=True)
class TinyPolicySpec:
    """Architecture and optimiser of the tiny policy (defaults: the committed model)."""

    hidden_size: int = 128
    num_layers: int = 4
    num_heads: int = 4
    intermediate_size: int = 384
    max_len: int = 320  # tokens; the longest post + summary of the corpus is about 230
    batch_size: int = 16
    lr: float = 3e-3
    sft_lr: float = 1e-3  # fine-tuning on the summaries, after pre-training
    warmup: int = 50
    weight_decay: float = 0.01
    seed: int = 0


def default_policy_dir() -> Path:
    return default_data_dir() / "tiny_policy"


def make_model(vocab_size: int, spec: TinyPolicySpec = TinyPolicySpec()):
    """A freshly initialised ``LlamaForCausalLM`` (tied input/output embeddings)."""
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=vocab_size,
        hidden_size=spec.hidden_size,
        intermediate_size=spec.intermediate_size,
        num_hidden_layers=spec.num_layers,
        num_attention_heads=spec.num_heads,
        num_key_value_heads=spec.num_heads,
        max_position_embeddings=spec.max_len,
        tie_word_embeddings=True,
        pad_token_id=0,
        bos_token_id=1,
        eos_token_id=2,
    )
    torch.manual_seed(spec.seed)
    return LlamaForCausalLM(config)


def prompt_text(post: str) -> str:
    """What the policy is conditioned on: ``<s> post <tldr>``."""
    return f"{BOS} {post} {SEP}"


def example_ids(tok, post: str, summary: str) -> list[int]:
    """Token ids of one training example ``<s> post <tldr> summary </s>``."""
    return tok(f"{prompt_text(post)} {summary} {EOS}")["input_ids"]


def encode_corpus(tok, records: list[Record], max_len: int) -> list[list[int]]:
    """Every (post, summary) pair of ``records``; examples over ``max_len`` tokens are dropped."""
    texts = [f"{prompt_text(r.post)} {s.text} {EOS}" for r in records for s in r.summaries]
    return [ids for ids in tok(texts)["input_ids"] if len(ids) <= max_len]


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


def pretrain(
    steps: int,
    spec: TinyPolicySpec = TinyPolicySpec(),
    records: list[Record] | None = None,
    tok=None,
    progress: bool = True,
    log_every: int = 50,
    init=None,
    completion_only: bool = False,
):
    """Train the tiny policy for ``steps`` AdamW steps; return (model, tok, log).

    Batches are drawn uniformly with replacement from all (post, summary) examples; the learning
    rate warms up linearly for ``spec.warmup`` steps, then follows a cosine to 10%. The log holds
    the mean training loss (nats per token) every ``log_every`` steps and the wall time.

    ``init=None`` starts from a fresh model (pre-training, loss on every token); ``init=model``
    continues from it, and ``completion_only=True`` puts the loss on the summary tokens only
    (supervised fine-tuning, as the paper's policy is an SFT model, paper notes §5.1).
    """
    import torch
    from tqdm.auto import tqdm

    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    tok = tok or load_tokenizer()
    records = records if records is not None else load_split("pretrain")
    examples = encode_corpus(tok, records, spec.max_len)
    if not examples:
        raise ValueError("no training example fits in max_len; raise spec.max_len")
    model = make_model(len(tok), spec) if init is None else init
    if tok.sep_token_id != SEP_ID:
        raise ValueError(f"expected <tldr> to have id {SEP_ID}, got {tok.sep_token_id}")
    model.train()
    decay = [p for n, p in model.named_parameters() if p.ndim >= 2]
    no_decay = [p for n, p in model.named_parameters() if p.ndim < 2]
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

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_at)
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


def generate_summaries(
    model,
    tok,
    posts: list[str],
    max_new_tokens: int = 64,
    temperature: float = 1.0,
    greedy: bool = False,
    seed: int = 0,
    batch_size: int = 32,
) -> list[str]:
    """One summary per post: ancestral sampling at ``temperature`` (or greedy decoding)."""
    import torch

    if temperature <= 0 and not greedy:
        raise ValueError(f"temperature must be > 0 (or greedy=True), got {temperature}")
    torch.manual_seed(seed)
    tok.padding_side = "left"
    out: list[str] = []
    for k in range(0, len(posts), batch_size):
        enc = tok(
            [prompt_text(p) for p in posts[k : k + batch_size]], return_tensors="pt", padding=True
        )
        with torch.no_grad():
            gen = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                do_sample=not greedy,
                temperature=None if greedy else temperature,
                top_k=0 if not greedy else None,
                top_p=None,
                eos_token_id=tok.eos_token_id,
                pad_token_id=tok.pad_token_id,
            )
        new = gen[:, enc["input_ids"].shape[1] :]
        out.extend(tok.batch_decode(new, skip_special_tokens=True))
    return out


def win_rate_vs_reference(
    records: list[Record], samples: list[str], oracle: Oracle | None = None
) -> dict:
    """mean_x P*(sample(x) > reference(x) | x) and its standard error over prompts."""
    oracle = oracle or Oracle("bt")
    if len(records) != len(samples) or not records:
        raise ValueError(f"need one sample per record, got {len(samples)} for {len(records)}")
    p = np.array([oracle.prob(r, y, r.reference) for r, y in zip(records, samples, strict=True)])
    aspects = np.array(
        [oracle.aspects(r, y).vector() for r, y in zip(records, samples, strict=True)]
    )
    return {
        "win_rate": float(p.mean()),
        "stderr": float(p.std(ddof=1) / math.sqrt(len(p))) if len(p) > 1 else float("nan"),
        "n": len(p),
        "mean_aspects": dict(
            zip(
                ("coverage", "faithfulness", "length", "form"),
                aspects.mean(0).round(4).tolist(),
                strict=True,
            )
        ),
    }


def save_policy(model, tok, folder: str | Path, log: dict | None = None) -> None:
    """safetensors weights + config (``AutoModelForCausalLM``) + tokenizer (``AutoTokenizer``)."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(folder, safe_serialization=True)
    tok.save_pretrained(folder)
    if log is not None:
        (folder / "training_log.json").write_text(json.dumps(log, indent=1, sort_keys=True) + "\n")


def load_tiny_policy(folder: str | Path | None = None):
    """The committed tiny policy and its tokenizer: ``(model, tok)``, model in eval mode."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = Path(folder or default_policy_dir())
    if not (folder / "model.safetensors").is_file():
        raise FileNotFoundError(
            f"no model.safetensors in {folder}; remake it with "
            "`python -m course_lib.tasks.tiny_policy train --out data/tiny_policy`"
        )
    model = AutoModelForCausalLM.from_pretrained(folder)
    model.eval()
    return model, AutoTokenizer.from_pretrained(folder)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m course_lib.tasks.tiny_policy")
    sub = parser.add_subparsers(dest="cmd", required=True)
    t = sub.add_parser("train", help="pre-train + fine-tune the tiny policy, then evaluate it")
    t.add_argument("--out", default=str(default_policy_dir()))
    t.add_argument("--steps", type=int, default=1500, help="pre-training steps (all tokens)")
    t.add_argument("--sft-steps", type=int, default=1500, help="fine-tuning steps (summaries)")
    t.add_argument("--init", default=None, help="skip pre-training: start from this folder")
    t.add_argument("--eval-prompts", type=int, default=500)
    t.add_argument("--no-progress", action="store_true")
    e = sub.add_parser("eval", help="win rate of a saved policy against the references")
    e.add_argument("--out", default=str(default_policy_dir()))
    e.add_argument("--eval-prompts", type=int, default=500)
    args = parser.parse_args(argv)
    import torch

    log = None
    if args.cmd == "train":
        spec = TinyPolicySpec()
        env = {
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
            "machine": platform.processor() or platform.machine(),
        }
        if args.init:
            model, tok = load_tiny_policy(args.init)
            prior = json.loads((Path(args.init) / "training_log.json").read_text())
            phases = prior.get("phases") or [prior]
        else:
            model, tok, first = pretrain(args.steps, spec, progress=not args.no_progress)
            phases = [{"phase": "pretrain", "steps": args.steps, **env, **first}]
            print(
                f"pre-trained {first['parameters']:,} parameters for {args.steps} steps "
                f"in {first['seconds']:.0f} s; last loss {first['loss'][-1]:.3f}"
            )
        if args.sft_steps:
            sft_spec = dataclasses.replace(spec, lr=spec.sft_lr)
            model, tok, second = pretrain(
                args.sft_steps,
                sft_spec,
                tok=tok,
                init=model,
                completion_only=True,
                progress=not args.no_progress,
            )
            phases.append({"phase": "sft", "steps": args.sft_steps, **env, **second})
            print(
                f"fine-tuned for {args.sft_steps} steps in {second['seconds']:.0f} s; "
                f"last loss {second['loss'][-1]:.3f}"
            )
        log = {
            "spec": asdict(spec),
            "phases": phases,
            "command": "python -m course_lib.tasks.tiny_policy train "
            f"--steps {args.steps} --sft-steps {args.sft_steps}",
        }
    else:
        model, tok = load_tiny_policy(args.out)
    test = load_split("test")[: args.eval_prompts]
    t0 = time.perf_counter()
    result = {}
    for name, kw in (("sampled", {}), ("greedy", {"greedy": True})):
        samples = generate_summaries(model, tok, [r.post for r in test], **kw)
        result[name] = {m: win_rate_vs_reference(test, samples, Oracle(m)) for m in ("bt", "nt")}
        r = result[name]["bt"]
        print(
            f"{name}: win rate vs reference (bt) {r['win_rate']:.3f} +- {r['stderr']:.3f}; "
            f"(nt) {result[name]['nt']['win_rate']:.3f}; aspects {r['mean_aspects']}"
        )
    result["eval_seconds"] = time.perf_counter() - t0
    if log is not None:
        log["evaluation"] = result
        save_policy(model, tok, args.out, log)
        print(f"saved to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
