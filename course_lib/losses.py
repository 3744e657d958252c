"""The course's only definitions of the preference-optimisation losses.

Every loss is written once here, on the quantities the papers use, and is called both by the exact
tabular code (``course_lib.tabular.gradients``, where a "sequence" is one action) and by the
language-model trainer (where log-probs are summed over the completion's tokens).

Notation (Calandriello et al. 2024, ICML; notes/paper.md §2):

* ``h = log(pi(y)/pi_ref(y)) - log(pi(y')/pi_ref(y'))``, the log-likelihood-ratio difference of a
  pair (y, y'). Swapping the pair flips its sign: ``h(y', y) = -h(y, y')``.
* ``p = P(y > y')`` in [0, 1], used as a *soft label* (Calandriello eq. 4): the loss of the pair is
  ``p * l(h) + (1 - p) * l(-h)``, the loss of ordering it as (y, y') weighted by ``p`` plus the
  loss of the other ordering weighted by ``1 - p``. Hard labels are ``p`` in {0, 1}.
* ``tau > 0`` is the KL coefficient (TRL and DPO call it ``beta``).

Each function returns a tensor of per-pair (or per-sample) losses with the broadcast shape of its
inputs, so callers choose the reduction (a mean over the batch, a weighted sum over all pairs).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from course_lib import validation as check

__all__ = ["dpo_loss", "ipo_loss", "slic_loss", "nash_md_pg_loss", "ipo_target", "CONTRASTIVE"]


# ---------------------------------------------------------------------------------------------
# validation
# ---------------------------------------------------------------------------------------------
# the KL coefficient is checked where every config checks it
_check_tau = check.tau


def _as_float_tensor(x, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    """``x`` as a floating-point tensor (a number or an array is converted, a tensor kept)."""
    if isinstance(x, torch.Tensor):
        if not torch.is_floating_point(x):
            x = x.to(torch.get_default_dtype() if like is None else like.dtype)
        return x
    try:
        dtype = torch.get_default_dtype() if like is None else like.dtype
        device = None if like is None else like.device
        return torch.as_tensor(x, dtype=dtype, device=device)
    except (TypeError, ValueError, RuntimeError):
        raise ValueError(f"{name} must be a number or an array of numbers, got {x!r}") from None


def _check_p(p, like: torch.Tensor) -> torch.Tensor:
    """Soft labels in [0, 1]; a ValueError naming the first bad value otherwise."""
    p = _as_float_tensor(p, "p", like)
    if p.device != like.device:
        p = p.to(like.device)
    bad = torch.isnan(p) | (p < 0) | (p > 1)
    if bool(bad.any()):
        first = p[bad].flatten()[0].item()
        raise ValueError(
            f"p must be a probability P(y > y') in [0, 1], got {first!r} "
            f"({int(bad.sum())} bad value(s) of {p.numel()})"
        )
    return p


def _prepare(h, p, tau):
    tau = _check_tau(tau)
    h = _as_float_tensor(h, "h")
    p = _check_p(p, h)
    return h, p, tau


# ---------------------------------------------------------------------------------------------
# contrastive losses on h
# ---------------------------------------------------------------------------------------------
def dpo_loss(h, p, tau) -> torch.Tensor:
    """DPO loss with soft labels: ``p * l(h) + (1 - p) * l(-h)``, ``l(h) = -log sigmoid(tau h)``.

    Rafailov et al. 2023 (their beta is tau); Calandriello et al. eq. (4) for the soft label;
    notes/paper.md §2.1. Computed with ``logsigmoid`` so large ``|tau h|`` does not overflow.
    """
    h, p, tau = _prepare(h, p, tau)
    z = tau * h
    return -(p * F.logsigmoid(z) + (1 - p) * F.logsigmoid(-z))


def ipo_target(tau) -> float:
    """The IPO regression target ``1/(2 tau)`` (Azar et al. eq. 17): the midpoint of the labels
    0 and 1/tau."""
    return 0.5 / _check_tau(tau)


def ipo_loss(h, p, tau) -> torch.Tensor:
    """IPO loss with soft labels: ``p (h - a)^2 + (1 - p) (-h - a)^2`` with ``a = 1/(2 tau)``.

    Azar et al. 2023 eq. (17) for the hard-label form ``(h - 1/(2 tau))^2``; Calandriello et al.
    eq. (10) for the soft-label (online) form; notes/paper.md §2.2-2.3. Per pair it equals the
    regression ``(h - (2p - 1) a)^2 + 4 p (1 - p) a^2``: the target is ``(p - 1/2)/tau``, and the
    constant does not depend on the policy (``tests/test_losses.py`` checks the identity).
    """
    h, p, tau = _prepare(h, p, tau)
    a = 0.5 / tau
    return p * (h - a) ** 2 + (1 - p) * (-h - a) ** 2


def slic_loss(h, p, tau) -> torch.Tensor:
    """SLiC hinge loss, soft labels: ``p * l(h) + (1 - p) * l(-h)``, ``l(h) = max(0, 1 - tau h)``.

    Choice documented here: the reference-normalised hinge of the DeepMind direct-alignment papers,
    which is TRL's ``loss_type="hinge"`` (``relu(1 - beta * h)``, "beta is the reciprocal of the
    margin"): the pair is satisfied once ``h >= 1/tau``. SLiC-HF (Zhao et al. 2023) writes
    ``max(0, delta - log pi(y_w) + log pi(y_l))`` without the reference and with a margin delta;
    multiplying by tau shows the two agree up to the factor tau when ``delta = 1/tau`` and the
    reference log-probs are added to h. Calandriello et al. use "SLiC" with a KL coefficient tau
    (selected tau = 10), which fits this form; notes/paper.md §2.4 marks the exact form [inferred]
    (not checked against the PDF). The hinge is not differentiable at ``tau h = 1``; torch uses
    the subgradient 0 there.
    """
    h, p, tau = _prepare(h, p, tau)
    z = tau * h
    return p * F.relu(1 - z) + (1 - p) * F.relu(1 + z)


# ---------------------------------------------------------------------------------------------
# Nash-MD-PG (policy gradient, not contrastive)
# ---------------------------------------------------------------------------------------------
def nash_md_pg_loss(logp, ref_logp, p, tau) -> torch.Tensor:
    """Surrogate loss whose gradient is the Nash-MD-PG estimator (NLHF Appendix F).

    For ``y ~ pi``, ``y'`` from the opponent (the mixture ``pi^(1-beta) pi_ref^beta``) and
    ``p = P(y > y')``::

        loss = -(p - 1/2 - tau * sg[logp - ref_logp]) * logp
        grad = -(p - 1/2 - tau * log(pi(y)/pi_ref(y))) * grad log pi(y)

    i.e. minus the per-sample ascent direction of ``P(pi > pi') - tau KL(pi, pi_ref)``
    (notes/paper.md §3.4; TRL's ``NashMDTrainer`` loss
    ``tau * sg[logp - ref_logp] * logp - (p - 0.5) * logp``). The 1/2 is the variance-reducing
    baseline ``P(y > y)``. Only ``logp`` (the log-prob of y) carries gradient: ``ref_logp`` and the
    log-ratio inside the bracket are detached. The *value* of this loss is not an objective; only
    its gradient is meaningful.
    """
    tau = _check_tau(tau)
    logp = _as_float_tensor(logp, "logp")
    ref_logp = _as_float_tensor(ref_logp, "ref_logp", logp)
    p = _check_p(p, logp)
    advantage = p - 0.5 - tau * (logp.detach() - ref_logp.detach())
    return -advantage * logp


#: The contrastive losses by name: each takes (h, p, tau). Nash-MD-PG's loss takes log-probs.
CONTRASTIVE = {"dpo": dpo_loss, "ipo": ipo_loss, "slic": slic_loss}
