"""Where the sampler's next-token logits come from: one model per stream, or pi and pi_ref at once.

The decode loop of :mod:`course_lib.sampling` asks its streams for next-token logits z given the
new tokens. A stream is

* :class:`LMStream`: one model (or a PEFT model with its adapter off, the reference) with its own
  KV cache: one forward per token, one distribution;
* :class:`MixedBatchStream`: a LoRA policy and its adapter-off base in **one** forward per token,
  through peft's mixed-adapter batches (the B rows twice: B with the adapter, B as ``"__base__"``).
  It returns two distributions, (z_pi, z_ref), where two :class:`LMStream` would run two forwards.

The tests (tests/test_sampling.py) check that both give the logits of full recomputations.
"""

from __future__ import annotations

import contextlib
import inspect

import torch

from course_lib.llm import adapter_disabled, is_peft_model, tuner_layers
from course_lib.logprobs import position_ids_from_mask


def _cache_kwarg(model) -> str:
    """transformers renamed ``past_key_values`` to ``cache`` (5.x); support both."""
    base = model.get_base_model() if is_peft_model(model) else model
    params = inspect.signature(base.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def new_cache(model):
    """A fresh, empty KV cache object for ``model``."""
    from transformers import DynamicCache

    config = model.get_base_model().config if is_peft_model(model) else model.config
    try:
        return DynamicCache(config=config)
    except TypeError:  # transformers < 4.56 takes no config
        return DynamicCache()


class LMStream:
    """One model's incremental next-token logits, with its own KV cache.

    ``adapter=False`` runs a PEFT model with its adapter disabled (the reference pi_ref).
    ``use_cache=False`` recomputes the whole prefix at every token instead (exact but O(T^2): the
    behaviour of old TRL mixture sampling, kept for benchmarks). ``cache`` lets a caller pass a
    cache object explicitly -- the tests pass *the same* object to two streams to build the
    shared-cache sampler and show that it is wrong; normal use leaves it None (a fresh cache).
    """

    outputs = 1  # distributions per call: the decode loop gives each one weight

    def __init__(self, model, adapter: bool = True, use_cache: bool = True, cache=None):
        if not adapter and not is_peft_model(model):
            raise ValueError(
                f"adapter=False needs a PEFT model with a LoRA adapter to disable; "
                f"{type(model).__name__} has none (pass a separate reference model)"
            )
        self.model = model
        self.adapter = adapter
        self.use_cache = use_cache
        self.cache = cache if cache is not None or not use_cache else new_cache(model)
        self._kwarg = _cache_kwarg(model)
        self._ids = None  # the full sequence so far, when use_cache=False
        self._layers = None if adapter else tuner_layers(model)  # found once, switched per token

    def _context(self):
        return (
            contextlib.nullcontext() if self.adapter else adapter_disabled(self.model, self._layers)
        )

    def __call__(self, input_ids, attention_mask, position_ids, **forward_kwargs):
        """Logits (B, V) for the next token, given the new tokens and the full attention mask."""
        with self._context():
            if self.use_cache:
                out = self.model(
                    input_ids=input_ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids,
                    use_cache=True,
                    logits_to_keep=1,
                    **{self._kwarg: self.cache},
                    **forward_kwargs,
                )
            else:
                self._ids = (
                    input_ids if self._ids is None else torch.cat([self._ids, input_ids], dim=1)
                )
                out = self.model(
                    input_ids=self._ids,
                    attention_mask=attention_mask,
                    position_ids=position_ids_from_mask(attention_mask),
                    use_cache=False,
                    logits_to_keep=1,
                    **forward_kwargs,
                )
        return out.logits[:, -1].float()


def mixed_batch_problem(model) -> str | None:
    """Why pi and pi_ref of ``model`` cannot share one forward, or None when they can.

    peft's mixed-adapter batches (``model(..., adapter_names=[...])``, peft >= 0.10) need a
    ``PeftModel`` with one active LoRA adapter, not DoRA, not merged into the base weights.
    """
    if not is_peft_model(model):
        return f"{type(model).__name__} is not a PEFT model"
    name = model.active_adapter
    if not isinstance(name, str):
        return f"more than one adapter is active ({name})"
    config = model.peft_config[name]
    kind = getattr(config, "peft_type", None)
    if kind != "LORA":  # peft's PeftType is a str enum
        return f"the adapter is {kind}, not LoRA"
    if getattr(config, "use_dora", False):
        return "peft's mixed-adapter batches do not take DoRA"
    if any(getattr(layer, "merged", False) for layer in tuner_layers(model)):
        return "the adapter is merged into the base weights"
    return None


class MixedBatchStream(LMStream):
    """pi and pi_ref of one LoRA model in one forward per token: returns (z_pi, z_ref), each (B, V).

    The B rows run twice in one batch of 2B, rows 0..B-1 with the adapter (pi) and B..2B-1 as
    peft's ``"__base__"`` (the adapter-off base, pi_ref). Every LoRA layer computes the base
    W x for all 2B rows and adds (alpha/r) B A x to the first B only, so the rows get the
    logits of the two separate forwards. One KV cache over the 2B rows is right here, unlike the
    shared cache of defect D1 (notes/trl.md §4.1): each row is its own sequence and attends to
    its own keys and values only. peft refuses ``adapter_names`` in training mode; the sampler
    runs in eval mode.
    """

    outputs = 2

    def __init__(self, model):
        problem = mixed_batch_problem(model)
        if problem is not None:
            raise ValueError(f"pi and pi_ref cannot share one forward: {problem}")
        super().__init__(model, adapter=True, use_cache=True)

    def __call__(self, input_ids, attention_mask, position_ids):
        B = input_ids.shape[0]
        names = [self.model.active_adapter] * B + ["__base__"] * B
        z = super().__call__(
            input_ids.repeat(2, 1),
            attention_mask.repeat(2, 1),
            position_ids.repeat(2, 1),
            adapter_names=names,
        )
        return z[:B], z[B:]
