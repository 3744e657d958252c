"""Run by tests/test_online_ddp.py under `accelerate launch --num_processes 2 --cpu`.

Each process trains the same tiny LoRA policy on its own prompts and samples; data parallelism
averages the gradients, so both processes must end with identical weights.
"""

import sys
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import save_file
from transformers import AutoTokenizer

from course_lib import llm
from course_lib.online import OnlineConfig, OnlineTrainer
from course_lib.tasks.tokenizer import build_tokenizer, save_tokenizer


def judge(contexts, ys, y2s):
    a = np.array([y.split().count("good") for y in ys], float)
    b = np.array([y.split().count("good") for y in y2s], float)
    return 1.0 / (1.0 + np.exp(b - a))


def main(out: Path) -> None:
    from accelerate import Accelerator

    acc = Accelerator(cpu=True)
    tok_dir = out / "tok"
    if acc.is_main_process:
        save_tokenizer(build_tokenizer(["good bad fine the post yes no"]), tok_dir)
    acc.wait_for_everyone()
    tokenizer = AutoTokenizer.from_pretrained(tok_dir)
    torch.manual_seed(0)
    base = llm.tiny_llama(
        vocab_size=len(tokenizer),
        hidden=32,
        layers=1,
        heads=2,
        seed=0,
        init_std=0.3,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    policy = llm.apply_lora(base, llm.LoraSettings(r=4, alpha=8.0))
    config = OnlineConfig(
        algorithm="ipo_md",
        beta=0.25,
        tau=0.5,
        steps=3,
        prompts_per_step=3,
        lr=5e-3,
        max_new_tokens=5,
        seed=7,
        progress=False,
        monitor_every=0,
    )
    trainer = OnlineTrainer(
        config,
        policy,
        tokenizer,
        judge,
        accelerator=acc,
        prompts=["<s> post yes <tldr>", "<s> post no <tldr>", "<s> the <tldr>"],
    )
    trainer.train()
    weights = {
        n: p.detach().contiguous() for n, p in trainer.policy.named_parameters() if p.requires_grad
    }
    save_file(weights, str(out / f"rank{acc.process_index}.safetensors"))
    # the prompts each process drew at step 0 (they must differ: real data parallelism)
    first = trainer.batch(0, 0).prompt_ids
    save_file({"ids": first.contiguous()}, str(out / f"batch{acc.process_index}.safetensors"))


if __name__ == "__main__":
    main(Path(sys.argv[1]))
