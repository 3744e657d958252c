"""Notebook 10 (one step of online preference optimisation, by hand): reference solutions, cases,
hints and answers of its exercises.

The checks compare with the library (``course_lib.losses.ipo_loss``, through autograd where the
exercise is a derivative), so an answer that passes is one the trainer agrees with.
``check_<name>(...)`` checks an answer, ``hint(name)`` gives the next hint tier,
``solution(name, reveal=True)`` the reference solution, ``case(name, i)`` a case's inputs.
"""

from __future__ import annotations

import numpy as np
import torch

from course_lib import losses
from course_lib.exercises import Exercise, ExerciseSet


# ---- reference solutions ---------------------------------------------------------------------
def ipo_loss_from_logprobs(logp_y, ref_logp_y, logp_y2, ref_logp_y2, p, tau):
    """h = [log pi(y) - log pi_ref(y)] - [log pi(y') - log pi_ref(y')], then the per-pair
    soft-label IPO loss p (h - a)^2 + (1 - p) (h + a)^2 with a = 1/(2 tau) (paper eq. 10)."""
    h = (logp_y - ref_logp_y) - (logp_y2 - ref_logp_y2)
    a = 1 / (2 * tau)
    return p * (h - a) ** 2 + (1 - p) * (h + a) ** 2


def ipo_grad_h(h, p, tau):
    """d/dh [p (h - a)^2 + (1 - p)(h + a)^2] = 2h - 2a(2p - 1) = 2h - (2p - 1)/tau."""
    return 2 * h - (2 * p - 1) / tau


def gradient_signs(p):
    """At step 0 pi = pi_ref, so h = 0 and dL/dh = -(2p - 1)/tau: its sign is that of 1/2 - p."""
    return np.sign(0.5 - np.asarray(p, dtype=float))


def ipo_h_target(p, tau, label="soft"):
    """The IPO loss with label l is smallest at h = (l - 1/2)/tau; the thresholded label is
    1 if p > 1/2, 0 if p < 1/2 and 1/2 at a tie."""
    p = np.asarray(p, dtype=float)
    if label == "threshold":
        p = (p > 0.5) + 0.5 * (p == 0.5)
    return (p - 0.5) / tau


# ---- what the checks compare with: the library ------------------------------------------------
def library_ipo_loss_from_logprobs(logp_y, ref_logp_y, logp_y2, ref_logp_y2, p, tau):
    """The same loss through :func:`course_lib.losses.ipo_loss`."""
    h = (torch.as_tensor(logp_y) - torch.as_tensor(ref_logp_y)) - (
        torch.as_tensor(logp_y2) - torch.as_tensor(ref_logp_y2)
    )
    return losses.ipo_loss(h, p, tau)


def autograd_ipo_grad_h(h, p, tau):
    """d/dh of the per-pair IPO loss, by autograd through :func:`course_lib.losses.ipo_loss`."""
    h = torch.as_tensor(h, dtype=torch.float64).clone().requires_grad_(True)
    losses.ipo_loss(h, torch.as_tensor(p, dtype=torch.float64), tau).sum().backward()
    return h.grad


def _threshold(p):
    """TRL's online trainers' label (``OnlineTrainer`` with ``label="threshold"``)."""
    p = np.asarray(p, dtype=float)
    return np.where(p > 0.5, 1.0, np.where(p < 0.5, 0.0, 0.5))


def library_ipo_h_target(p, tau, label="soft"):
    """argmin_h of the IPO loss for the label the trainer uses: ``(l - 1/2)/tau`` with ``l = p``
    (``label="soft"``) or ``l = 1[p > 1/2]`` (1/2 at a tie; ``label="threshold"``)."""
    if label not in ("soft", "threshold"):
        raise ValueError(f"label={label!r} is invalid: 'soft' or 'threshold'")
    p = np.asarray(p, dtype=float)
    lab = p if label == "soft" else _threshold(p)
    return (lab - 0.5) / tau


# ---- cases and checks ------------------------------------------------------------------------
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


def _gradient_cases():
    rng = np.random.default_rng(90)
    cases = [((np.zeros(4), np.array([0.0, 0.25, 0.5, 0.9]), 0.1), {})]
    for n, tau in ((3, 1.0), (10, 0.03), (10, 5.0)):
        cases.append(((rng.normal(scale=3, size=n), rng.uniform(size=n), tau), {}))
    return cases


def _target_cases():
    rng = np.random.default_rng(93)
    cases = []
    for label in ("soft", "threshold"):
        cases.append(((np.array([0.0, 0.49, 0.5, 0.51, 1.0]), 0.1, label), {}))
        cases.append(((rng.uniform(size=12), 1.0, label), {}))
    return cases


def _verify_signs(predicted_signs, h_grad) -> list[str]:
    got = np.sign(np.asarray(predicted_signs, dtype=float)).ravel()
    true = np.sign(np.asarray(torch.as_tensor(h_grad).detach().cpu(), dtype=float)).ravel()
    if got.shape != true.shape:
        return [f"{got.size} signs for {true.size} pairs: give one sign per pair"]
    wrong = int((got != true).sum())
    if wrong:  # how many, not which: the answer stays yours to find
        return [f"{wrong} of {true.size} signs are wrong"]
    return []


EXERCISES = ExerciseSet(
    "nb10",
    [
        Exercise(
            "ipo_loss_from_logprobs",
            1,
            ipo_loss_from_logprobs,
            cases=_logprob_cases,
            expected=library_ipo_loss_from_logprobs,
            title="h and the soft-label IPO loss",
            atol=1e-9,
            hints=(
                "first h, the difference of the two log-ratios (y first, then y'); then the "
                "soft-label IPO loss of section 2.5, one value per pair (no mean).",
                "h is the log-ratio log pi/pi_ref of y minus that of y'; the loss of section 2.5 "
                "is p (h - a)^2 + (1 - p)(h + a)^2 with a = 1/(2 tau), elementwise.",
            ),
        ),
        Exercise(
            "ipo_grad_h",
            2,
            ipo_grad_h,
            cases=_gradient_cases,
            expected=autograd_ipo_grad_h,
            title="the gradient of the IPO loss with respect to h",
            atol=1e-8,
            hints=(
                "differentiate p (h - a)^2 + (1 - p)(h + a)^2, a = 1/(2 tau), term by term; "
                "the result is linear in h.",
                "2p (h - a) + 2(1 - p)(h + a): collect the terms in h and in a, and write a in "
                "terms of tau. It vanishes at the IPO target h = (p - 1/2)/tau.",
            ),
        ),
        Exercise(
            "gradient_signs",
            2,
            gradient_signs,
            title="the signs of dL/dh at the first step",
            verify=_verify_signs,
            answers=("predicted_signs",),
            hints=(
                "at the first step pi = pi_ref: what is h then, for every pair?",
                "with h = 0, your ipo_grad_h leaves -(2p - 1)/tau: its sign depends only on "
                "whether p is above or below 1/2.",
            ),
            answer=(
                "At step 0, h = 0 and dL/dh = -(2p - 1)/tau: negative where p > 1/2, positive "
                "where p < 1/2. A gradient-descent step raises h where dL/dh < 0, i.e. it makes "
                "y more likely than y' (relative to pi_ref) exactly when the judge prefers y."
            ),
        ),
        Exercise(
            "ipo_h_target",
            3,
            ipo_h_target,
            cases=_target_cases,
            expected=library_ipo_h_target,
            title="the IPO target of h for soft and thresholded labels",
            atol=1e-9,
            hints=(
                "the IPO loss with label l is a regression of h onto a target that depends on "
                "l; only the label changes between 'soft' (l = p) and 'threshold'.",
                "the target is (l - 1/2)/tau; the thresholded label is 1 if p > 1/2, 0 if "
                "p < 1/2 and 1/2 at a tie.",
            ),
            answer=(
                "Soft: h* = (p - 1/2)/tau; thresholded: +-1/(2 tau) (0 at a tie). The pairs whose "
                "p is near 1/2, most of section 2's (p around 0.53), get thresholded targets far "
                "from their soft ones. With p = 0.51 and tau = 0.1 the soft target is 0.1 and "
                "the thresholded one 5: a near tie becomes a certain preference, pushed fifty "
                "times harder. The policy then solves the game of the thresholded preference "
                "1[P > 1/2] (the majority relation, notebook 12 section 1.a), not of P. With "
                "label='threshold' in section 3 the targets are +-5 instead of a few tenths, so "
                "expect the trainer's h to move further from 0 (read h_mean in its history)."
            ),
        ),
    ],
)
hint, solution, case = EXERCISES.hint, EXERCISES.solution, EXERCISES.case
check_ipo_loss = EXERCISES.checker("ipo_loss_from_logprobs")
check_ipo_gradient = EXERCISES.checker("ipo_grad_h")
check_gradient_signs = EXERCISES.checker("gradient_signs")
check_ipo_h_target = EXERCISES.checker("ipo_h_target")
