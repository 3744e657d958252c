"""The arena's tiny language: every completion of every prompt can be listed.

A *language* has ``n_symbols`` symbols (``a``, ``b``, ...) and one special token, ``<eos>``; the
model's vocabulary is exactly these ``n_symbols + 1`` tokens, so nothing the sampler of
:mod:`course_lib.sampling` can draw lies outside the enumeration (no BOS, PAD or UNK to leak
probability into). ``<eos>`` plays three parts, none of which can collapse two sequences:

* it ends a completion (``eos_token_id``);
* it opens every prompt (``[<eos>, s]`` for the prompt of symbol ``s``): a Llama with rotary
  positions only needs a fixed first token to tell the first position from the others;
* it pads (left-padding of prompts never happens, every prompt has two tokens; after a
  completion's first EOS the sampler writes pad tokens that the mask drops).

Completions are what :func:`course_lib.sampling.sample` draws with ``max_new_tokens = M``:
up to ``M - 1`` symbols then ``<eos>``, or exactly ``M`` symbols **cut** at the length limit
(the sampler stops drawing; no EOS follows). With ``V`` symbols that is
``1 + V + ... + V^(M-1) + V^M`` completions per prompt (85 for V = 4, M = 3), and

    pi(y | x) = prod_n pi(y_n | x, y_<n)

over exactly the tokens the sampler draws, so the probabilities of the enumeration sum to one.

Texts. A completion's text is its symbols joined by single spaces, without the EOS (what
``Samples.texts`` decodes with ``skip_special_tokens=True``). Text and token sequence are one to
one: a text of ``M`` symbols is the cut sequence, a shorter one ended with EOS.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from course_lib.logprobs import pad_left

EOS = "<eos>"
SYMBOLS = "abcdefghijklmnopqrstuvwxyz"


def build_tokenizer(symbols):
    """A word-level ``PreTrainedTokenizerFast`` with vocabulary ``[<eos>, *symbols]`` (ids 0..V).

    Encoding a prompt text with ``add_special_tokens=True`` prepends ``<eos>`` (the fixed first
    token); a completion text is encoded with ``add_special_tokens=False``. There is no unknown
    token: a word outside the vocabulary is an error, never a silent ``<unk>``.
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {EOS: 0, **{s: i + 1 for i, s in enumerate(symbols)}}
    tok = Tokenizer(models.WordLevel(vocab=vocab))
    tok.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    tok.decoder = decoders.WordPiece(prefix="##", cleanup=False)  # joins words with one space
    tok.add_special_tokens([EOS])
    tok.post_processor = processors.TemplateProcessing(
        single=f"{EOS} $A", pair=f"{EOS} $A $B", special_tokens=[(EOS, 0)]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=EOS,
        bos_token=EOS,
        pad_token=EOS,
        padding_side="left",
        clean_up_tokenization_spaces=False,
    )


@dataclass(frozen=True)
class Language:
    """``n_prompts`` prompts, ``n_symbols`` symbols, completions of at most ``max_new_tokens``.

    Prompt ``i`` is the text ``symbols[i]`` (token ids ``[0, i + 1]``). Completions are listed
    in the same order for every prompt: by number of symbols, then lexicographically.
    """

    n_prompts: int = 3
    n_symbols: int = 4
    max_new_tokens: int = 3

    def __post_init__(self):
        for name in ("n_prompts", "n_symbols", "max_new_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}={value!r} is invalid: a positive integer")
        if self.n_symbols > len(SYMBOLS):
            raise ValueError(f"n_symbols={self.n_symbols} is invalid: at most {len(SYMBOLS)}")
        if self.n_prompts > self.n_symbols:
            raise ValueError(
                f"n_prompts={self.n_prompts} is invalid: at most n_symbols={self.n_symbols} "
                "(each prompt is one symbol)"
            )
        if self.n_completions > 5000:
            raise ValueError(
                f"{self.n_completions} completions per prompt is too many to enumerate; "
                "lower n_symbols or max_new_tokens"
            )

    # -- tokens -------------------------------------------------------------------------------
    eos_id = 0

    @property
    def vocab_size(self) -> int:
        return self.n_symbols + 1

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(SYMBOLS[: self.n_symbols])

    @cached_property
    def tokenizer(self):
        return build_tokenizer(self.symbols)

    # -- prompts ------------------------------------------------------------------------------
    @property
    def prompts(self) -> list[str]:
        """Prompt texts: prompt ``i`` is the symbol ``symbols[i]``."""
        return list(self.symbols[: self.n_prompts])

    def prompt_tokens(self, i: int) -> list[int]:
        return [self.eos_id, i + 1]

    def prompt_symbol(self, i: int) -> int:
        """The token id of prompt ``i``'s symbol (a feature of the preference)."""
        return i + 1

    # -- completions --------------------------------------------------------------------------
    @cached_property
    def completions(self) -> tuple[tuple[int, ...], ...]:
        """Every completion as its sampled token ids: ``(*symbols, eos)`` for fewer than
        ``max_new_tokens`` symbols, ``(*symbols,)`` (cut, no EOS) for exactly that many."""
        ids = range(1, self.n_symbols + 1)
        out = []
        for length in range(self.max_new_tokens + 1):
            for body in itertools.product(ids, repeat=length):
                out.append(body if length == self.max_new_tokens else (*body, self.eos_id))
        return tuple(out)

    @property
    def n_completions(self) -> int:
        V, M = self.n_symbols, self.max_new_tokens
        return sum(V**k for k in range(M + 1))

    @cached_property
    def index(self) -> dict[tuple[int, ...], int]:
        """Completion token ids -> position in :attr:`completions`."""
        return {y: k for k, y in enumerate(self.completions)}

    def symbols_of(self, y: tuple[int, ...]) -> tuple[int, ...]:
        """The symbol ids of a completion (its EOS, if any, dropped)."""
        return tuple(t for t in y if t != self.eos_id)

    def text(self, y: tuple[int, ...]) -> str:
        """The text the trainer's judge receives: symbols joined by spaces, no EOS."""
        return " ".join(self.symbols[t - 1] for t in self.symbols_of(y))

    @cached_property
    def texts(self) -> tuple[str, ...]:
        return tuple(self.text(y) for y in self.completions)

    def tokens_of_text(self, text: str) -> tuple[int, ...]:
        """The completion a text stands for, through the tokenizer (the inverse of :meth:`text`).

        Raises ValueError for a text that is no completion (too many symbols, unknown words).
        """
        try:
            body = tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
        except Exception as exc:  # tokenizers raises its own error type for an unknown word
            raise ValueError(f"text {text!r} is not a completion of the arena: {exc}") from None
        y = body if len(body) == self.max_new_tokens else (*body, self.eos_id)
        if y not in self.index:
            raise ValueError(
                f"text {text!r} is not a completion of the arena: at most "
                f"{self.max_new_tokens} of the symbols {' '.join(self.symbols)}"
            )
        return y

    def index_of_text(self, text: str) -> int:
        return self.index[self.tokens_of_text(text)]

    # -- batched tensors ----------------------------------------------------------------------
    def completion_tensors(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(ids, mask)`` of shape (n_completions, max_new_tokens), right-padded with EOS."""
        M = self.max_new_tokens
        ids = torch.full((len(self.completions), M), self.eos_id, dtype=torch.long)
        mask = torch.zeros((len(self.completions), M), dtype=torch.long)
        for k, y in enumerate(self.completions):
            ids[k, : len(y)] = torch.tensor(y)
            mask[k, : len(y)] = 1
        return ids, mask

    def all_pairs_tensors(self):
        """Every (prompt, completion) as one batch of ``n_prompts * n_completions`` rows, prompt
        major: ``(prompt_ids, prompt_mask, completion_ids, completion_mask)``."""
        n = len(self.completions)
        prompt_ids, prompt_mask = pad_left(
            [self.prompt_tokens(i) for i in range(self.n_prompts)], self.eos_id
        )
        ids, mask = self.completion_tensors()
        return (
            prompt_ids.repeat_interleave(n, 0),
            prompt_mask.repeat_interleave(n, 0),
            ids.repeat(self.n_prompts, 1),
            mask.repeat(self.n_prompts, 1),
        )

    # -- the tree of prefixes (token-level quantities) ------------------------------------------
    @cached_property
    def tree(self) -> Tree:
        return Tree.of(self)


@dataclass(frozen=True)
class Tree:
    """The completions as paths in the tree of decisions the sampler takes.

    A *node* is a prefix of fewer than ``max_new_tokens`` symbols; at each node the sampler draws
    one of the ``V + 1`` tokens, an *edge*. ``paths[y, e] = 1`` when completion ``y`` takes edge
    ``e``; ``edge_node[e]`` is the node edge ``e`` leaves. A sequence distribution's conditionals
    are edge masses over node masses, and a token-level product of conditionals is
    ``exp(paths @ log cond)``.
    """

    paths: np.ndarray  # (n_completions, n_edges), 0/1
    edge_node: np.ndarray  # (n_edges,)
    n_nodes: int

    @classmethod
    def of(cls, language: Language) -> Tree:
        V, M = language.vocab_size, language.max_new_tokens
        nodes: dict[tuple[int, ...], int] = {}
        for length in range(M):
            for body in itertools.product(range(1, V), repeat=length):
                nodes[body] = len(nodes)
        paths = np.zeros((len(language.completions), len(nodes) * V))
        for k, y in enumerate(language.completions):
            for n, token in enumerate(y):
                paths[k, nodes[y[:n]] * V + token] = 1.0
        edge_node = np.repeat(np.arange(len(nodes)), V)
        return cls(paths=paths, edge_node=edge_node, n_nodes=len(nodes))

    def conditionals(self, pi: np.ndarray) -> np.ndarray:
        """Log next-token conditionals ``log pi(a | prefix)`` per edge, from a sequence
        distribution ``pi`` (the distribution restricted to the tree is exactly the sampler's)."""
        edge_mass = self.paths.T @ pi
        node_mass = np.bincount(self.edge_node, weights=edge_mass, minlength=self.n_nodes)
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(edge_mass) - np.log(node_mass[self.edge_node])
