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

from course_lib import validation as check
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

    def _step_context(self):
        """The context of one forward (a subclass may add hooks for its own forwards only)."""
        return self._context()

    def __call__(self, input_ids, attention_mask, position_ids, **forward_kwargs):
        """Logits (B, V) for the next token, given the new tokens and the full attention mask."""
        with self._step_context():
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


# ---------------------------------------------------------------------------------------------
# Static KV caches: fixed shapes, so a GPU can replay the one-token step as a CUDA graph
# ---------------------------------------------------------------------------------------------

CACHES = ("dynamic", "static")  # the sampler's ``cache=`` choices; dynamic is the default


def new_static_cache(model, max_cache_len: int):
    """transformers' ``StaticCache`` for ``model``: keys and values for ``max_cache_len``
    positions (prompt + new tokens), allocated on the first forward, then written in place."""
    from transformers import StaticCache

    config = model.get_base_model().config if is_peft_model(model) else model.config
    return StaticCache(config=config, max_cache_len=max_cache_len)


class StaticLMStream(LMStream):
    """:class:`LMStream` on a preallocated KV cache, decode steps of one fixed shape.

    The prompt's forward (the prefill) runs eagerly. Every later step feeds one token through
    buffers that keep their addresses -- the token, its position, and the attention mask over all
    ``max_len`` cache slots (the prompt's mask, then ones) -- so the same kernels run at every
    step and on CUDA the step is captured once as a CUDA graph and replayed (``capture``; default:
    on CUDA only). A kernel launch costs about as much as a small model's kernel itself, and a
    replay launches the whole forward at once. The mask's future slots are never read: the causal
    mask of a static cache stops each query at its own slot. Positions are the decode loop's,
    counted over real tokens (left padding), as in :class:`LMStream`; the tests check that both
    draw the same tokens at the same seed. If capture fails (an operation that cannot be
    recorded), the stream warns, keeps the reason in ``graph_error`` and steps eagerly.
    """

    def __init__(self, model, max_len: int, adapter: bool = True, capture: bool | None = None):
        super().__init__(model, adapter=adapter, cache=new_static_cache(model, max_len))
        self.max_len = int(max_len)
        device = next(model.parameters()).device
        self.capture = device.type == "cuda" if capture is None else bool(capture)
        if self.capture and device.type != "cuda":
            raise ValueError(f"capture=True needs a CUDA model; this one is on {device}")
        self.graph_error: str | None = None
        self._graph = None
        self._buffers = None  # (token, position, mask, cache position) of the one-token step
        self._logits = None  # the captured step's output, overwritten by every replay
        self._filled = 0  # cache slots written
        # older transformers take the slot as ``cache_position``; without it they would count
        # the cache's filled slots, a read of GPU memory that a graph cannot record
        base = model.get_base_model() if is_peft_model(model) else model
        self._positional = "cache_position" in inspect.signature(base.forward).parameters

    def _forward(self, input_ids, attention_mask, position_ids, cache_position):
        extra = {"cache_position": cache_position} if self._positional else {}
        return super().__call__(input_ids, attention_mask, position_ids, **extra)

    def __call__(self, input_ids, attention_mask, position_ids):
        n = input_ids.shape[1]
        if self._filled + n > self.max_len:
            raise ValueError(
                f"the static cache holds {self.max_len} positions and {self._filled + n} are "
                "needed: size it prompt length + max_new_tokens"
            )
        device = input_ids.device
        if self._filled == 0:  # the prefill: its own shape, eager
            B = input_ids.shape[0]
            mask = torch.ones(B, self.max_len, dtype=attention_mask.dtype, device=device)
            mask[:, :n] = attention_mask
            self._buffers = (
                torch.zeros_like(input_ids[:, :1]),
                torch.zeros_like(position_ids[:, :1]),
                mask,
                torch.zeros(1, dtype=torch.long, device=device),
            )
            self._filled = n
            return self._forward(
                input_ids, attention_mask, position_ids, torch.arange(n, device=device)
            )
        token, position, mask, slot = self._buffers
        token.copy_(input_ids)
        position.copy_(position_ids)
        seen = attention_mask.shape[1]
        mask[:, :seen].copy_(attention_mask)  # the loop's mask, into the fixed-shape buffer
        slot.fill_(self._filled)
        self._filled += 1
        if self._graph is not None:
            self._graph.replay()
            return self._logits.clone()
        if not self.capture or self.graph_error is not None:
            return self._forward(token, mask, position, slot)
        return self._warm_up_and_capture()

    def _warm_up_and_capture(self):
        """This step eagerly on a side stream (cuBLAS and allocator warm-up, as PyTorch's CUDA
        graph notes ask), then the same step recorded: recording runs no kernel, so the cache is
        written once, by the eager step. Later steps replay the record."""
        token, position, mask, slot = self._buffers
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            logits = self._forward(token, mask, position, slot)
        torch.cuda.current_stream().wait_stream(side)
        graph = torch.cuda.CUDAGraph()
        try:
            with torch.cuda.graph(graph):
                self._logits = self._forward(token, mask, position, slot)
        except Exception as error:  # noqa: BLE001 -- any failure to record: step eagerly instead
            import warnings

            self.graph_error = f"{type(error).__name__}: {error}"
            warnings.warn(
                f"CUDA graph capture of the decode step failed ({self.graph_error}); "
                "decoding eagerly on the static cache",
                RuntimeWarning,
                stacklevel=3,
            )
            return logits
        self._graph = graph
        return logits

    @property
    def captured(self) -> bool:
        """Whether the decode step runs as a CUDA graph."""
        return self._graph is not None


class StaticMixedStream(StaticLMStream):
    """pi and pi_ref of one LoRA model in one static-cache forward over 2B rows: (z_pi, z_ref).

    What :class:`MixedBatchStream` does with peft's ``adapter_names``, in a form a CUDA graph can
    record: peft selects each adapter's rows with Python lists of indices, which become a
    host-to-device copy at every layer, and a copy cannot be recorded. Here every LoRA layer runs
    on all 2B rows and its output (alpha/r) B A x is multiplied by a fixed row mask, 1 for the
    policy's rows 0..B-1 and 0 for the reference's B..2B-1: W x + 0 is the base's W x exactly,
    so the reference rows get the adapter-off logits. The hooks that apply the mask are on only
    during this stream's forwards; a replayed graph carries the multiplication inside it.
    """

    outputs = 2

    def __init__(self, model, max_len: int, capture: bool | None = None):
        problem = mixed_batch_problem(model)
        if problem is not None:
            raise ValueError(f"pi and pi_ref cannot share one forward: {problem}")
        super().__init__(model, max_len, adapter=True, capture=capture)
        name = model.active_adapter
        layers = tuner_layers(model)
        if any(name in getattr(m, "lora_embedding_A", {}) for m in layers):
            raise ValueError("StaticMixedStream masks linear LoRA layers; this adapter has more")
        self._lora_b = [m.lora_B[name] for m in layers if name in getattr(m, "lora_B", {})]
        if not all(isinstance(m, torch.nn.Linear) for m in self._lora_b):
            raise ValueError("StaticMixedStream masks LoRA rows of linear layers only")
        self._rows = None  # (2B,): 1 on pi's rows, 0 on pi_ref's

    @contextlib.contextmanager
    def _step_context(self):
        def mask_rows(module, args, output):
            rows = self._rows.view(-1, *[1] * (output.dim() - 1))
            return output * rows.to(output.dtype)

        handles = [m.register_forward_hook(mask_rows) for m in self._lora_b]
        try:
            yield
        finally:
            for handle in handles:
                handle.remove()

    def __call__(self, input_ids, attention_mask, position_ids):
        B = input_ids.shape[0]
        if self._rows is None:
            self._rows = torch.cat([torch.ones(B), torch.zeros(B)]).to(input_ids.device)
        z = super().__call__(
            input_ids.repeat(2, 1), attention_mask.repeat(2, 1), position_ids.repeat(2, 1)
        )
        return z[:B], z[B:]


def stream_for(model, cache: str, max_len: int, adapter: bool = True, use_cache: bool = True):
    """One model's stream on the cache ``cache`` names (:data:`CACHES`): an :class:`LMStream`,
    or a :class:`StaticLMStream` of ``max_len`` slots (prompt length + max_new_tokens)."""
    check.choice("cache", cache, CACHES)
    if cache == "dynamic":
        return LMStream(model, adapter=adapter, use_cache=use_cache)
    if not use_cache:
        raise ValueError("cache='static' is a KV cache and use_cache=False asks for none")
    return StaticLMStream(model, max_len, adapter=adapter)
