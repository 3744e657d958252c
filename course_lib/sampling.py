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

* each model keeps **its own** KV cache (:class:`~course_lib.streams.LMStream`). Sharing one
  cache between the two forward passes -- what TRL's ``GeometricMixtureWrapper`` ends up doing
  with transformers >= 4.56 (defect D1, notes/trl.md §4.1) -- appends both models' keys and
  values to the same layers, and the samples follow neither model;
* with one PEFT model serving both, the reference forward runs under ``disable_adapter()``, with
  its own cache. Taking the reference from the model with the adapter still on (defect D2,
  notes/trl.md §4.2) samples from pi whatever beta is. Or both run in one forward over 2B rows,
  B with the adapter and B without (``fused``, :class:`~course_lib.streams.MixedBatchStream`);
* prompts are left-padded and position ids are counted over real tokens only;
* each row stops at its own first EOS; later positions hold the pad token, mask 0, log-prob 0;
* each model's own log-prob of every drawn token is kept (``Samples.stream_logprobs``): the
  reference's is log pi_ref(y_n | x, y_<n), which IPO-MD's h needs, at no extra forward.
* ``cache="static"``: the same loop on preallocated KV caches, one fixed-shape step per token,
  replayed as a CUDA graph on a GPU (:class:`~course_lib.streams.StaticLMStream`).

The tests (tests/test_sampling.py) check the returned log-probs against a full recomputation of
both models without cache, and the empirical distribution of many samples against the exact
token-level mixture on a tiny vocabulary, and show that both defects fail those tests.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from course_lib import validation as check
from course_lib.logprobs import position_ids_from_mask
from course_lib.streams import (
    CACHES,
    LMStream,
    MixedBatchStream,
    StaticMixedStream,
    mixed_batch_problem,
    stream_for,
)
from course_lib.streams import _cache_kwarg as _cache_kwarg  # re-exported (older imports)
from course_lib.streams import new_cache as new_cache  # re-exported: where learners look


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


@dataclass
class Samples:
    """Sampled completions.

    ``tokens`` (B, T) with the pad token after each row's EOS; ``mask`` (B, T) is 1 up to and
    including the first EOS; ``logprobs`` (B, T) are log-probs under the distribution sampled
    from (0 where masked). T <= max_new_tokens: the loop stops when every row has ended.
    ``stream_logprobs`` holds one (B, T) tensor per weighted distribution, in the order of the
    weights: that model's own log-softmax at temperature 1 of each drawn token, log pi(y_n|x, y_<n)
    (0 where masked) -- for the mixture, (log pi, log pi_ref) per token.
    """

    tokens: torch.Tensor
    mask: torch.Tensor
    logprobs: torch.Tensor
    prompt_ids: torch.Tensor
    prompt_mask: torch.Tensor
    stream_logprobs: tuple[torch.Tensor, ...] = ()

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


def token_logprob(logits, token):
    """log softmax(z)[y] = z_y - logsumexp(z): one model's log-prob of the drawn token ``token``
    (B,), from its logits z (B, V), without writing the (B, V) log-softmax."""
    return logits.gather(-1, token.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def _next_logits(streams, inputs, attention, positions) -> list:
    """Every stream's next-token logits, one (B, V) tensor per distribution, in weight order."""
    logits = []
    for stream in streams:
        z = stream(inputs, attention, positions)
        logits += z if stream.outputs > 1 else [z]
    return logits


def _check_decoding(streams, weights, max_new_tokens, temperature) -> None:
    n = sum(s.outputs for s in streams)
    if n != len(weights) or not streams:
        raise ValueError(
            f"need one weight per distribution, got {len(streams)} streams giving {n} "
            f"and {len(weights)} weights"
        )
    if not (isinstance(max_new_tokens, int) and max_new_tokens >= 1):
        raise ValueError(f"max_new_tokens must be a positive integer, got {max_new_tokens!r}")
    check.positive("temperature", temperature, what="the sampling temperature")


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
    mixture draws exactly the tokens of plain sampling from pi at the same seed. A stream may
    give several distributions (``stream.outputs``: a :class:`MixedBatchStream` gives pi's and
    pi_ref's); ``weights`` has one entry per distribution. Streams on a static cache
    (:class:`~course_lib.streams.StaticLMStream`) take the same calls.
    """
    _check_decoding(streams, weights, max_new_tokens, temperature)
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
    tokens, masks, logps, own_logps = [], [], [], []
    with _eval_mode(models):
        attention = prompt_mask
        positions = position_ids_from_mask(attention)
        inputs = prompt_ids
        finished = torch.zeros(B, dtype=torch.bool, device=device)
        for _ in range(max_new_tokens):
            logits = _next_logits(streams, inputs, attention, positions)
            logp = weighted_logprobs(logits, weights, temperature)
            token = torch.multinomial(logp.exp(), 1, generator=generator).squeeze(-1)
            token_logp = logp.gather(-1, token.unsqueeze(-1)).squeeze(-1)
            alive = ~finished
            zero = torch.zeros_like(token_logp)
            own_logps.append([torch.where(alive, token_logprob(z, token), zero) for z in logits])
            token = torch.where(alive, token, torch.full_like(token, pad_token_id))
            tokens.append(token)
            masks.append(alive.long())
            logps.append(torch.where(alive, token_logp, zero))
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
        stream_logprobs=tuple(torch.stack(steps, 1) for steps in zip(*own_logps, strict=True)),
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
    cache: str = "dynamic",
) -> Samples:
    """Plain sampling from pi (``model``), or from pi_ref, the adapter-off base (``adapter=False``).

    Seeded by ``seed`` or a ``torch.Generator`` on the prompts' device. ``cache="static"``
    decodes on a preallocated KV cache with fixed-shape steps, replayed as a CUDA graph on a GPU
    (:class:`~course_lib.streams.StaticLMStream`): the same tokens at the same seed.
    """
    gen = _generator(seed, generator, prompt_ids.device)
    stream = stream_for(model, cache, _slots(prompt_ids, max_new_tokens), adapter, use_cache)
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


def _slots(prompt_ids, max_new_tokens) -> int:
    """A static cache's size, prompt length + max_new_tokens (a bad count is refused later)."""
    extra = max_new_tokens if isinstance(max_new_tokens, int) else 0
    return prompt_ids.shape[-1] + max(extra, 0)


def _fuse(fused: bool | None, model, ref_model, use_cache: bool) -> bool:
    """Whether :func:`sample_mixture` runs pi and pi_ref in one forward (see its ``fused``)."""
    problem = (
        "a separate ref_model is another model"
        if ref_model is not None
        else "use_cache=False"
        if not use_cache
        else mixed_batch_problem(model)
    )
    if fused is None:  # automatic: where a forward is launch-bound (a GPU), not on the CPU
        return problem is None and next(model.parameters()).device.type == "cuda"
    if fused and problem is not None:
        raise ValueError(f"fused=True needs pi and pi_ref in one LoRA model: {problem}")
    return bool(fused)


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
    fused: bool | None = None,
    cache: str = "dynamic",
) -> Samples:
    """Sample from the token-level geometric mixture softmax(((1-beta) z_pi + beta z_ref) / T).

    pi is ``model`` (adapter on); pi_ref is ``ref_model`` when given, else ``model`` with its
    adapter disabled. Each of the two forward passes keeps its own KV cache, so the cost per token
    is two cached forwards (about 2x plain sampling); ``use_cache=False`` recomputes the prefix.
    ``fused=True`` runs the two in one forward over 2B rows instead (a LoRA ``model``, no
    ``ref_model``: :class:`~course_lib.streams.MixedBatchStream`); the logits agree with the
    two forwards' to float rounding (tested to 1e-5), so a token may rarely differ. ``None`` (the
    default) fuses when possible on a GPU, where a decode step costs its kernel launches: one
    forward instead of two. On a 2-core CPU the cost is arithmetic, and peft copies the LoRA rows
    out and back in every layer: measured (tiny Llamas + LoRA, 48 tokens), fused was 4-14% slower
    at 32 rows, the course's batches, and 2-14% faster at 4 rows; so the CPU keeps two forwards.
    ``Samples.stream_logprobs`` is (log pi, log pi_ref) of each drawn token, at temperature 1.
    ``cache`` is ``"dynamic"`` or ``"static"``, as in :func:`sample`; fused and static, the
    2B rows run in one captured step (:class:`~course_lib.streams.StaticMixedStream`).
    """
    check.beta(beta)
    check.choice("cache", cache, CACHES)
    slots = _slots(prompt_ids, max_new_tokens)
    gen = _generator(seed, generator, prompt_ids.device)
    if ref_model is not None and ref_model is model:
        raise ValueError(
            "ref_model is the policy itself; pass a frozen copy or leave it None "
            "to use the adapter-off base of a PEFT policy"
        )
    if _fuse(fused, model, ref_model, use_cache):
        fuse = StaticMixedStream(model, slots) if cache == "static" else MixedBatchStream(model)
        streams = [fuse]
    else:
        policy = stream_for(model, cache, slots, True, use_cache)
        ref = (
            stream_for(ref_model, cache, slots, True, use_cache)
            if ref_model is not None
            else stream_for(model, cache, slots, False, use_cache)
        )
        streams = [policy, ref]
    return sample_from_streams(
        streams,
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
    cache: str = "dynamic",
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
                cache=cache,
            )
        out += smp.texts(tokenizer)
    return out
