"""Sequence log-probabilities and h, the quantities every loss reads (notebooks 07 and 10).

For a completion y of a prompt x (Calandriello et al. 2024, Sec. 5; the losses use sums):

    log pi(y|x) = sum_n log pi(y_n | x, y_<n)
    h(y, y') = [log pi(y|x) - log pi_ref(y|x)] - [log pi(y'|x) - log pi_ref(y'|x)]

Prompts are left-padded (generation continues at the right end), completions right-padded and
masked after their first EOS."""

from __future__ import annotations

from collections.abc import Sequence

from course_lib.llm.reference import reference

# ---------------------------------------------------------------------------------------------
# Sequence log-probs and h
# ---------------------------------------------------------------------------------------------


def position_ids_from_mask(attention_mask):
    """Positions 0, 1, ... counted over the real tokens of each row (pads get 1, as in HF).

    With left padding a row's first real token sits at column k > 0 but must get position 0:
    rotary and absolute position embeddings see the same positions as without padding.
    """
    positions = attention_mask.long().cumsum(-1) - 1
    return positions.masked_fill(attention_mask == 0, 1)


def mask_after_eos(completion_ids, eos_token_id, completion_mask=None):
    """Completion mask with every token after the first EOS set to 0 (the EOS itself is kept)."""
    import torch

    mask = (
        torch.ones_like(completion_ids)
        if completion_mask is None
        else completion_mask.to(completion_ids.dtype)
    )
    if eos_token_id is None:
        return mask
    eos_ids = torch.as_tensor(eos_token_id, device=completion_ids.device).reshape(-1)
    is_eos = torch.isin(completion_ids, eos_ids) & (mask > 0)
    # tokens strictly after the first EOS: an EOS occurred at an earlier column
    seen_before = (is_eos.long().cumsum(-1) - is_eos.long()) > 0
    return mask * (~seen_before).to(mask.dtype)


def _check_pair(name_ids, ids, name_mask, mask):
    if ids.dim() != 2:
        raise ValueError(f"{name_ids} must be 2-D (batch, length), got shape {tuple(ids.shape)}")
    if mask is not None and mask.shape != ids.shape:
        raise ValueError(
            f"{name_mask} has shape {tuple(mask.shape)} but {name_ids} has {tuple(ids.shape)}"
        )


def sequence_logprobs(
    model,
    prompt_ids,
    prompt_mask,
    completion_ids,
    completion_mask=None,
    eos_token_id=None,
    temperature: float = 1.0,
):
    """Summed and per-token log-probs of completions given prompts.

        log pi(y|x) = sum_{n=1}^{|y|} log pi(y_n | x, y_<n)     (paper Sec. 5, h uses sums)

    Prompts may be left-padded (``prompt_mask`` 0 on pads); position ids come from the mask, so a
    padded row gives the same values as the unpadded one. Completions are right-padded by
    ``completion_mask``; with ``eos_token_id`` every token after the first EOS is masked too.
    Returns ``(sums, per_token)`` of shapes (B,) and (B, T), zeros where masked; gradients flow
    when grad mode is on. ``temperature`` divides the logits (1 for training).
    """
    import torch

    _check_pair("prompt_ids", prompt_ids, "prompt_mask", prompt_mask)
    _check_pair("completion_ids", completion_ids, "completion_mask", completion_mask)
    if prompt_ids.shape[0] != completion_ids.shape[0]:
        raise ValueError(
            f"batch sizes differ: {prompt_ids.shape[0]} prompts, "
            f"{completion_ids.shape[0]} completions"
        )
    if prompt_ids.shape[1] < 1:
        raise ValueError(
            "prompts must hold at least one token (the first completion token is "
            "predicted from the last prompt position)"
        )
    if not temperature > 0:
        raise ValueError(f"temperature must be > 0, got {temperature!r}")
    if prompt_mask is None:
        prompt_mask = torch.ones_like(prompt_ids)
    comp_mask = mask_after_eos(completion_ids, eos_token_id, completion_mask)
    T = completion_ids.shape[1]
    input_ids = torch.cat([prompt_ids, completion_ids], dim=1)
    attention = torch.cat([prompt_mask.long(), comp_mask.long()], dim=1)
    out = model(
        input_ids=input_ids,
        attention_mask=attention,
        position_ids=position_ids_from_mask(attention),
        use_cache=False,
        logits_to_keep=T + 1,
    )
    # the logit at column P-1+n predicts completion token n; keep the last T+1, drop the final
    logits = out.logits[:, :T].float() / temperature
    per_token = torch.log_softmax(logits, dim=-1).gather(-1, completion_ids.unsqueeze(-1))
    per_token = per_token.squeeze(-1) * comp_mask.to(per_token.dtype)
    return per_token.sum(-1), per_token


def pair_logratios(
    model,
    prompt_ids,
    prompt_mask,
    y_ids,
    y_mask,
    y2_ids,
    y2_mask,
    ref_model=None,
    eos_token_id=None,
    forward=None,
    ref_logprobs=None,
):
    """``(log pi(y|x)/pi_ref(y|x), log pi(y'|x)/pi_ref(y'|x))`` for a batch of pairs, each (B,).

    pi is ``model`` (gradients flow when grad mode is on); pi_ref is ``ref_model``, or ``model``
    with its adapter off, under ``no_grad``. y and y' go through one padded forward per model
    (2B rows). ``forward`` is the module to call for pi when it is not ``model`` itself: the
    DDP-wrapped policy in data-parallel training (its gradients are averaged across processes).
    ``ref_logprobs``, when given, is the per-token log pi_ref of y and of y' ((B, T) each, e.g.
    what the mixture sampler computed while drawing them): then no reference forward runs.
    """
    import torch

    B = prompt_ids.shape[0]
    if y_ids.shape[0] != B or y2_ids.shape[0] != B:
        raise ValueError(
            f"y and y' must have one row per prompt ({B}); got {y_ids.shape[0]} and "
            f"{y2_ids.shape[0]}"
        )
    T = max(y_ids.shape[1], y2_ids.shape[1])

    def right_pad(ids, mask):  # the padded columns are masked: their ids never matter
        mask = torch.ones_like(ids) if mask is None else mask
        extra = T - ids.shape[1]
        return (
            torch.nn.functional.pad(ids, (0, extra), value=0),
            torch.nn.functional.pad(mask, (0, extra), value=0),
        )

    (a, am), (b, bm) = right_pad(y_ids, y_mask), right_pad(y2_ids, y2_mask)
    pids = torch.cat([prompt_ids, prompt_ids])
    pmask = torch.cat([prompt_mask, prompt_mask]) if prompt_mask is not None else None
    ids, mask = torch.cat([a, b]), torch.cat([am, bm])
    ref_tok = None
    if ref_logprobs is not None:  # padded like the ids; masked like them below
        ref_tok = torch.cat([right_pad(r, None)[0] for r in ref_logprobs])
    logp, logp_ref = policy_and_reference_logprobs(
        model, pids, pmask, ids, mask, ref_model, eos_token_id, forward, ref_tok
    )
    ratio = logp - logp_ref
    return ratio[:B], ratio[B:]


def policy_and_reference_logprobs(
    model,
    prompt_ids,
    prompt_mask,
    completion_ids,
    completion_mask=None,
    ref_model=None,
    eos_token_id=None,
    forward=None,
    ref_token_logprobs=None,
):
    """``(log pi(y|x), log pi_ref(y|x))``, each (B,): pi with gradient (through ``forward`` when
    given, e.g. the DDP-wrapped policy), pi_ref (``ref_model``, or ``model`` with its adapter
    off) under ``no_grad``. With ``ref_token_logprobs`` (B, T), the per-token log pi_ref already
    known (from the sampler), log pi_ref(y|x) is their sum over the tokens
    :func:`sequence_logprobs` would count, and no reference forward runs."""
    import torch

    pi = forward if forward is not None else model
    logp, _ = sequence_logprobs(
        pi, prompt_ids, prompt_mask, completion_ids, completion_mask, eos_token_id
    )
    if ref_token_logprobs is not None:
        if ref_token_logprobs.shape != completion_ids.shape:
            raise ValueError(
                f"ref_token_logprobs has shape {tuple(ref_token_logprobs.shape)}, the "
                f"completions {tuple(completion_ids.shape)}"
            )
        mask = mask_after_eos(completion_ids, eos_token_id, completion_mask)
        return logp, (ref_token_logprobs * mask.to(ref_token_logprobs.dtype)).sum(-1)
    with torch.no_grad(), reference(model, ref_model) as ref:
        logp_ref, _ = sequence_logprobs(
            ref, prompt_ids, prompt_mask, completion_ids, completion_mask, eos_token_id
        )
    return logp, logp_ref


def sequence_h(
    model,
    prompt_ids,
    prompt_mask,
    y_ids,
    y_mask,
    y2_ids,
    y2_mask,
    ref_model=None,
    eos_token_id=None,
):
    """h for a batch of pairs (paper Sec. 4-5; IPO, Azar et al. 2023, Eq. 17):

        h(y, y') = [log pi(y|x) - log pi_ref(y|x)] - [log pi(y'|x) - log pi_ref(y'|x)],

    the difference of :func:`pair_logratios` (the one place h is computed). Shape (B,).
    """
    ratio_y, ratio_y2 = pair_logratios(
        model, prompt_ids, prompt_mask, y_ids, y_mask, y2_ids, y2_mask, ref_model, eos_token_id
    )
    return ratio_y - ratio_y2


def pad_left(sequences: Sequence[Sequence[int]], pad_token_id: int):
    """Left-pad token lists into (ids, mask) tensors, the layout generation and log-probs expect."""
    import torch

    if not sequences or any(len(s) == 0 for s in sequences):
        raise ValueError("every sequence needs at least one token")
    width = max(len(s) for s in sequences)
    ids = torch.full((len(sequences), width), int(pad_token_id), dtype=torch.long)
    mask = torch.zeros((len(sequences), width), dtype=torch.long)
    for i, seq in enumerate(sequences):
        ids[i, width - len(seq) :] = torch.as_tensor(list(seq), dtype=torch.long)
        mask[i, width - len(seq) :] = 1
    return ids, mask


def supervised_steps(
    model,
    prompt_ids,
    prompt_mask,
    completion_ids,
    completion_mask=None,
    steps: int = 1,
    lr: float = 1e-3,
    eos_token_id=None,
) -> list[float]:
    """A few Adam steps maximising the summed log-prob of given completions (LoRA SFT).

    Loss = -mean_i log pi(y_i | x_i). Only parameters with ``requires_grad`` move (the adapter,
    for a PEFT model). Used to make a fresh adapter nonzero, so that pi and pi_ref differ.
    Returns the loss before each step.
    """
    import torch

    if not (isinstance(steps, int) and steps >= 1):
        raise ValueError(f"steps must be a positive integer, got {steps!r}")
    params = [p for p in model.parameters() if p.requires_grad]
    if not params:
        raise ValueError("the model has no trainable parameters (add a LoRA adapter first)")
    opt = torch.optim.Adam(params, lr=lr)
    was_training = model.training
    model.train()
    losses = []
    try:
        for _ in range(steps):
            logp, _ = sequence_logprobs(
                model, prompt_ids, prompt_mask, completion_ids, completion_mask, eos_token_id
            )
            loss = -logp.mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
    finally:
        model.train(was_training)
    return losses
