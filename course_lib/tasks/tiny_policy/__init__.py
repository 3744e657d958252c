"""The tiny reference policy: a small Llama pre-trained from scratch on the synthetic corpus.

The paper's policy and reference are an SFT'd T5X-L (notes/paper-tables.md §2.1). The course's
tiny track replaces it with a Llama-architecture decoder of about a million parameters, with the
word-level tokenizer of :mod:`course_lib.tasks.tokenizer`, trained by next-token prediction on

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
(notes/paper.md §1.2, win rates), with a standard error over prompts.

The weights, tokenizer and training log are written to a temporary folder that then takes
``--out``'s place (:func:`course_lib.atomic.atomic_dir`), so a killed run leaves the old model or
the new one. Since that replaces the folder whole, ``--out`` must be new, empty, or a tiny policy
the course saved (its files only, with its ``training_log.json`` or its tokenizer's ``<tldr>``
separator), as ``data/tiny_policy`` is; anything else is refused before training starts.

The package, by concern: :mod:`.model` (the architecture, the prompt format, sampling and the
win rate), :mod:`.training` (pre-training and fine-tuning), :mod:`.storage` (saving and loading
the folder) and :mod:`.cli` (the command above).
"""

from course_lib.tasks.tiny_policy.model import (
    SEP_ID,
    TinyPolicySpec,
    encode_corpus,
    example_ids,
    generate_summaries,
    make_model,
    prompt_text,
    win_rate_vs_reference,
)
from course_lib.tasks.tiny_policy.storage import (
    POLICY_FILES,
    TRAIN_COMMAND,
    check_policy_dir,
    default_policy_dir,
    load_tiny_policy,
    save_policy,
)
from course_lib.tasks.tiny_policy.training import pretrain

__all__ = [
    "POLICY_FILES",
    "SEP_ID",
    "TRAIN_COMMAND",
    "TinyPolicySpec",
    "check_policy_dir",
    "default_policy_dir",
    "encode_corpus",
    "example_ids",
    "generate_summaries",
    "load_tiny_policy",
    "make_model",
    "pretrain",
    "prompt_text",
    "save_policy",
    "win_rate_vs_reference",
]
