"""Exercises of notebook 09: one step of online preference optimisation, by hand."""

from __future__ import annotations

import numpy as np
import torch

from course_lib import losses
from course_lib.exercises import CheckResult, check_function


# -- exercise 1: h and the IPO loss from four log-probs ------------------------------------------
def reference_ipo_loss_from_logprobs(logp_y, ref_logp_y, logp_y2, ref_logp_y2, p, tau):
    """Per-pair soft-label IPO loss (Calandriello et al. 2024, eq. 10) on
    h = [log pi(y) - log pi_ref(y)] - [log pi(y') - log pi_ref(y')]."""
    h = (torch.as_tensor(logp_y) - torch.as_tensor(ref_logp_y)) - (
        torch.as_tensor(logp_y2) - torch.as_tensor(ref_logp_y2)
    )
    return losses.ipo_loss(h, p, tau)


def _logprob_cases():
    gen = torch.Generator().manual_seed(9)
    cases = []
    for n, tau in ((1, 1.0), (5, 0.1), (16, 0.03)):
        lp = [-30 * torch.rand(n, generator=gen, dtype=torch.float64) for _ in range(4)]
        p = torch.rand(n, generator=gen, dtype=torch.float64)
        cases.append(((*lp, p, tau), {}))
    # pi = pi_ref: h = 0 and the loss is 1/(4 tau^2) whatever p
    same = -torch.arange(1.0, 5.0, dtype=torch.float64)
    cases.append(((same, same, same - 1, same - 1, torch.tensor([0.0, 0.3, 0.5, 1.0]), 0.5), {}))
    return cases


def check_ipo_loss(learner) -> CheckResult:
    """Exercise 1: ``learner(logp_y, ref_logp_y, logp_y2, ref_logp_y2, p, tau)`` returns the
    per-pair IPO loss ``p (h - 1/(2 tau))^2 + (1 - p) (h + 1/(2 tau))^2``."""
    return check_function(
        "h and the soft-label IPO loss",
        learner,
        reference_ipo_loss_from_logprobs,
        _logprob_cases(),
        atol=1e-9,
        hint="h is the difference of the two log-ratios log pi - log pi_ref (y first); the loss "
        "is one value per pair, not the mean; the target 1/(2 tau) is the same for both terms",
    )


def solution_ipo_loss_from_logprobs(logp_y, ref_logp_y, logp_y2, ref_logp_y2, p, tau):
    h = (logp_y - ref_logp_y) - (logp_y2 - ref_logp_y2)
    a = 1 / (2 * tau)
    return p * (h - a) ** 2 + (1 - p) * (h + a) ** 2


# -- exercise 2: the gradient of the IPO loss with respect to h ----------------------------------
def reference_ipo_grad_h(h, p, tau):
    """d/dh of the per-pair IPO loss, by autograd through :func:`course_lib.losses.ipo_loss`."""
    h = torch.as_tensor(h, dtype=torch.float64).clone().requires_grad_(True)
    losses.ipo_loss(h, torch.as_tensor(p, dtype=torch.float64), tau).sum().backward()
    return h.grad


def check_ipo_gradient(learner) -> CheckResult:
    """Exercise 2: ``learner(h, p, tau)`` returns dL/dh per pair, the closed form of the
    derivative (checked against autograd)."""
    rng = np.random.default_rng(90)
    cases = [((np.zeros(4), np.array([0.0, 0.25, 0.5, 0.9]), 0.1), {})]
    for n, tau in ((3, 1.0), (10, 0.03), (10, 5.0)):
        cases.append(((rng.normal(scale=3, size=n), rng.uniform(size=n), tau), {}))
    return check_function(
        "the gradient of the IPO loss with respect to h",
        learner,
        reference_ipo_grad_h,
        cases,
        atol=1e-8,
        hint="differentiate p (h - a)^2 + (1 - p)(h + a)^2 with a = 1/(2 tau): the result is "
        "linear in h and vanishes at the IPO target h = (p - 1/2)/tau",
    )


def check_gradient_signs(predicted, h_grad) -> CheckResult:
    """Exercise 2, second part: the predicted signs (+1, -1 or 0) of dL/dh for the batch of
    section 2, before the update, against the signs autograd found (``h.grad``)."""
    name = "the signs of dL/dh at the first step"
    got = np.sign(np.asarray(predicted, dtype=float)).ravel()
    true = np.sign(np.asarray(torch.as_tensor(h_grad).detach().cpu(), dtype=float)).ravel()
    if got.shape != true.shape:
        return CheckResult(name, False, [f"{got.size} signs for {true.size} pairs"])
    wrong = np.flatnonzero(got != true)
    if wrong.size:
        return CheckResult(
            name,
            False,
            [
                f"pairs {wrong.tolist()} have the wrong sign (autograd: {true[wrong].tolist()})",
                "hint: at the first step pi = pi_ref, so h = 0; what is left of dL/dh at h = 0?",
            ],
        )
    return CheckResult(
        name,
        True,
        [
            "a gradient-descent step raises h (makes y more likely than y', relative to pi_ref) "
            "exactly where dL/dh < 0, i.e. where the judge prefers y (p > 1/2)"
        ],
    )


def solution_ipo_grad_h(h, p, tau):
    return 2 * h - (2 * p - 1) / tau


# -- exercise 3: the h the IPO loss aims at, with soft and thresholded labels --------------------
def _threshold(p):
    """TRL's online trainers' label (``OnlineTrainer`` with ``label="threshold"``)."""
    p = np.asarray(p, dtype=float)
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def reference_ipo_h_target(p, tau, label="soft"):
    """argmin_h of the IPO loss for the label the trainer uses: ``(l - 1/2)/tau`` with ``l = p``
    (``label="soft"``) or ``l = 1[p > 1/2]`` (1/2 at a tie; ``label="threshold"``)."""
    if label not in ("soft", "threshold"):
        raise ValueError(f"label={label!r} is invalid: 'soft' or 'threshold'")
    p = np.asarray(p, dtype=float)
    lab = p if label == "soft" else _threshold(p)
    return (lab - 0.5) / tau


def check_ipo_h_target(learner) -> CheckResult:
    """Exercise 3: ``learner(p, tau, label)`` returns the h at which the IPO loss is smallest."""
    rng = np.random.default_rng(93)
    cases = []
    for label in ("soft", "threshold"):
        cases.append(((np.array([0.0, 0.49, 0.5, 0.51, 1.0]), 0.1, label), {}))
        cases.append(((rng.uniform(size=12), 1.0, label), {}))
    return check_function(
        "the IPO target of h for soft and thresholded labels",
        learner,
        reference_ipo_h_target,
        cases,
        atol=1e-9,
        hint="the loss with label l is minimised at h = (2 l - 1)/(2 tau); the thresholded "
        "label is 1 if p > 1/2, 0 if p < 1/2 and 1/2 at a tie",
    )


def solution_ipo_h_target(p, tau, label="soft"):
    p = np.asarray(p, dtype=float)
    if label == "threshold":
        p = (p > 0.5) + 0.5 * (p == 0.5)
    return (p - 0.5) / tau
