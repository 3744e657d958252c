"""Sampling completions from pi, from pi_ref, and from the token-level geometric mixture.

IPO-MD and Nash-MD (Calandriello et al., 2024, Sec. 5 and Algorithm 1; Munos et al., 2023,
Sec. 7) sample from the geometric mixture pi^beta ∝ pi^(1-beta) pi_ref^beta. Over whole sequences
its normaliser is intractable, so in practice it is applied per token:

    pi~^beta(y_n | x, y_<n) = softmax( ((1 - beta) z_pi + beta z_ref) / temperature ),

where z_pi and z_ref are the two models' next-token logits for the same prefix (raw logits or
log-softmax give the same result: per-distribution constants cancel in the softmax), and
pi~^beta(y|x) = prod_n pi~^beta(y_n | x, y_<n). ``beta`` is the weight on the reference
(TRL's ``mixture_coef``); beta = 0 is pi, beta = 1 is pi_ref.

The decode loop here is written out over plain model forward calls so that every part of it is
visible and testable:

* each model keeps **its own** KV cache (:class:`LMStream`). Sharing one cache between the two
  forward passes -- what TRL's ``GeometricMixtureWrapper`` ends up doing with transformers >= 4.56
  (defect D1, notes/trl.md §4.1) -- appends both models' keys and values to the same
  layers, and the samples follow neither model;
* with one PEFT model serving both, the reference forward runs under ``disable_adapter()``, with
  its own cache. Taking the reference from the model with the adapter still on (defect D2,
  notes/trl.md §4.2) samples from pi whatever beta is;
* prompts are left-padded and position ids are counted over real tokens only;
* each row stops at its own first EOS; later positions hold the pad token, mask 0, log-prob 0.

The tests (tests/test_sampling.py) check the returned log-probs against a full recomputation of
both models without cache, and the empirical distribution of many samples against the exact
token-level mixture on a tiny vocabulary, and show that both defects fail those tests.
"""

from __future__ import annotations

import contextlib
import inspect
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from course_lib import validation as check
from course_lib.llm import adapter_disabled, is_peft_model, tuner_layers
from course_lib.logprobs import position_ids_from_mask


def mixture_logprobs(z_pi, z_ref, beta: float, temperature: float = 1.0):
    """Log-probs of the token-level geometric mixture (paper Sec. 5, "regularised policy"):

        log softmax( ((1 - beta) z_pi + beta z_ref) / temperature ).

    ``z_pi``, ``z_ref``: next-token logits (..., V). Temperature is applied after mixing, so
    beta = 0 and beta = 1 give exactly the tempered pi and pi_ref. The sampler's decode loop
    computes its next-token distribution with this same formula (:func:`weighted_logprobs`).
    """
    check.beta(beta)
    return weighted_logprobs([z_pi, z_ref], [1.0 - beta, beta], temperature)


def weighted_logprobs(logits: Sequence, weights: Sequence[float], temperature: float = 1.0):
    """log softmax( sum_i weights[i] * logits[i] / temperature ): one stream with weight 1 is
    plain sampling, two with (1 - beta, beta) the geometric mixture (:func:`mixture_logprobs`)."""
    check.positive("temperature", temperature, what="the sampling temperature")
    z = None
    for zi, w in zip(logits, weights, strict=True):
        term = w * zi.float()
        z = term if z is None else z + term
    return torch.log_softmax(z / temperature, dim=-1)


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

    def __call__(self, input_ids, attention_mask, position_ids):
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
                )
        return out.logits[:, -1].float()


@dataclass
class Samples:
    """Sampled completions.

    ``tokens`` (B, T) with the pad token after each row's EOS; ``mask`` (B, T) is 1 up to and
    including the first EOS; ``logprobs`` (B, T) are log-probs under the distribution sampled
    from (0 where masked). T <= max_new_tokens: the loop stops when every row has ended.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor

    @property
    def sequence_logprobs(self):
        """log pi~(y|x) = sum over completion tokens of the per-token log-probs."""
        return self.logprobs.sum(-1)

    @property
    def lengths(self):
        return self.mask.sum(-1)

    def texts(self, tokenizer, skip_special_tokens: bool = True) -> list[str]:
        return [
            tokenizer.decode(row[m.bool()], skip_special_tokens=skip_special_tokens)
            for row, m in zip(self.tokens, self.mask, strict=True)
        ]


def _check_prompts(prompt_ids, prompt_mask):
    if prompt_ids.dim() != 2 or prompt_ids.shape[1] < 1:
        raise ValueError(f"prompt_ids must be (batch, length >= 1), got {tuple(prompt_ids.shape)}")
    if prompt_mask is None:
        return torch.ones_like(prompt_ids)
    if prompt_mask.shape != prompt_ids.shape:
        raise ValueError(
            f"prompt_mask shape {tuple(prompt_mask.shape)} differs from prompt_ids "
            f"{tuple(prompt_ids.shape)}"
        )
    if not bool(prompt_mask[:, -1].all()):
        raise ValueError(
            "prompts must be left-padded (the last column real for every row): "
            "set tokenizer.padding_side = 'left' or use models.pad_left"
        )
    if bool((prompt_mask[:, 1:] < prompt_mask[:, :-1]).any()):
        raise ValueError("prompt_mask must be 0...0 1...1 per row (left padding only)")
    return prompt_mask.long()


@contextlib.contextmanager
def _eval_mode(models):
    """Dropout off while sampling; each model's training flag is restored afterwards."""
    flags = [(m, m.training) for m in models]
    for m, _ in flags:
        m.eval()
    try:
        with torch.no_grad():
            yield
    finally:
        for m, flag in flags:
            m.train(flag)


def sample_from_streams(
    streams: Sequence[LMStream],
    weights: Sequence[float],
    prompt_ids,
    prompt_mask=None,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    eos_token_id=None,
    pad_token_id: int | None = None,
    generator: torch.Generator | None = None,
) -> Samples:
    """The decode loop: next-token logits z = sum_i weights[i] * z_i, sample softmax(z / T).

    One stream with weight 1 is plain sampling; two streams with weights (1 - beta, beta) are the
    token-level geometric mixture. The same operations run in both cases, so at beta = 0 the
    mixture draws exactly the tokens of plain sampling from pi at the same seed.
    """
    if len(streams) != len(weights) or not streams:
        raise ValueError(
            f"need one weight per stream, got {len(streams)} streams and {len(weights)} weights"
        )
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    check.positive("temperature", temperature, what="the sampling temperature")
    prompt_mask = _check_prompts(prompt_ids, prompt_mask)
    device = prompt_ids.device
    eos = (
        torch.as_tensor(eos_token_id, device=device).reshape(-1)
        if eos_token_id is not None
        else None
    )
    if pad_token_id is None:
        pad_token_id = int(eos[0]) if eos is not None else 0
    B = prompt_ids.shape[0]
    models = list({id(s.model): s.model for s in streams}.values())
    tokens, masks, logps = [], [], []
    with _eval_mode(models):
        attention = prompt_mask
        positions = position_ids_from_mask(attention)
        inputs = prompt_ids
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logits = [stream(inputs, attention, positions) for stream in streams]
            logp = weighted_logprobs(logits, weights, temperature)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            token_logp = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            alive = ~finished
            token = torch.where(alive, token, torch.full_like(token, pad_token_id))
            tokens.append(token)
            masks.append(alive.long())
            logps.append(torch.where(alive, token_logp, torch.zeros_like(token_logp)))
            if eos is not None:
                finished = finished | (alive & torch.isin(token, eos))
            if bool(finished.all()):
                break
            # next step: the new token, at the position after each row's last real token
            inputs = token.unsqueeze(-1)
            positions = positions[:, -1:] + 1
            attention = torch.cat([attention, torch.ones_like(attention[:, :1])], dim=1)
    return Samples(
        tokens=torch.stack(tokens, 1),
        mask=torch.stack(masks, 1),
        logprobs=torch.stack(logps, 1),
        prompt_ids=prompt_ids,
        prompt_mask=prompt_mask,
    )


def _generator(seed, generator, device):
    if generator is not None:
        return generator
    if seed is None:
        return None
    return torch.Generator(device=device).manual_seed(int(seed))


def sample(
    model,
    prompt_ids,
    prompt_mask=None,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    eos_token_id=None,
    pad_token_id=None,
    seed: int | None = None,
    generator=None,
    adapter: bool = True,
    use_cache: bool = True,
) -> Samples:
    """Plain sampling from pi (``model``), or from pi_ref, the adapter-off base (``adapter=False``).

    Seeded by ``seed`` or a ``torch.Generator`` on the prompts' device.
    """
    gen = _generator(seed, generator, prompt_ids.device)
    stream = LMStream(model, adapter=adapter, use_cache=use_cache)
    return sample_from_streams(
        [stream],
        [1.0],
        prompt_ids,
        prompt_mask,
        max_new_tokens,
        temperature,
        eos_token_id,
        pad_token_id,
        gen,
    )


def sample_mixture(
    model,
    prompt_ids,
    prompt_mask=None,
    beta: float = 0.5,
    ref_model=None,
    max_new_tokens: int = 16,
    temperature: float = 1.0,
    eos_token_id=None,
    pad_token_id=None,
    seed: int | None = None,
    generator=None,
    use_cache: bool = True,
) -> Samples:
    """Sample from the token-level geometric mixture softmax(((1-beta) z_pi + beta z_ref) / T).

    pi is ``model`` (adapter on); pi_ref is ``ref_model`` when given, else ``model`` with its
    adapter disabled. Each of the two forward passes keeps its own KV cache, so the cost per token
    is two cached forwards (about 2x plain sampling); ``use_cache=False`` recomputes the prefix.
    """
    check.beta(beta)
    gen = _generator(seed, generator, prompt_ids.device)
    policy = LMStream(model, adapter=True, use_cache=use_cache)
    if ref_model is not None:
        if ref_model is model:
            raise ValueError(
                "ref_model is the policy itself; pass a frozen copy or leave it None "
                "to use the adapter-off base of a PEFT policy"
            )
        ref = LMStream(ref_model, adapter=True, use_cache=use_cache)
    else:
        ref = LMStream(model, adapter=False, use_cache=use_cache)
    return sample_from_streams(
        [policy, ref],
        [1.0 - float(beta), float(beta)],
        prompt_ids,
        prompt_mask,
        max_new_tokens,
        temperature,
        eos_token_id,
        pad_token_id,
        gen,
    )


def sample_texts(
    model,
    tokenizer,
    prompts: Sequence[str],
    max_new_tokens: int,
    seed: int,
    batch_size: int = 64,
    adapter: bool = True,
    add_special_tokens: bool = False,
) -> list[str]:
    """One completion per prompt text, decoded (temperature 1), seeded by ``seed``.

    ``adapter=False`` samples pi_ref, the adapter-off base of a LoRA model. Runs on the model's
    device, in batches of ``batch_size`` prompts. Both tracks' evaluations sample with it.
    """
    from course_lib.logprobs import pad_left

    device = next(model.parameters()).device
    gen = torch.Generator(device=device).manual_seed(seed)
    out: list[str] = []
    for s in range(0, len(prompts), batch_size):
        chunk = prompts[s : s + batch_size]
        ids = [tokenizer(p, add_special_tokens=add_special_tokens)["input_ids"] for p in chunk]
        prompt_ids, prompt_mask = pad_left(ids, tokenizer.pad_token_id)
        with torch.no_grad():
            smp = sample(
                model,
                prompt_ids.to(device),
                prompt_mask.to(device),
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                generator=gen,
                adapter=adapter,
            )
        out += smp.texts(tokenizer)
    return out
