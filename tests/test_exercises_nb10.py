"""Notebook 10's exercise checkers accept the reference solutions and reject wrong answers."""

from types import SimpleNamespace

import numpy as np
import torch

from course_lib import losses
from course_lib.exercises import nb10


def _trainer_threshold(p):
    try:
        from course_lib.online.step import labels
    except ImportError:  # before the trainer was split into course_lib.online.step
        from course_lib.online import OnlineTrainer

        fake = SimpleNamespace(config=SimpleNamespace(label="threshold"))
        return OnlineTrainer._labels(fake, p, 0, 0)
    return labels(p, "threshold")


def test_ipo_loss_checker():
    assert nb10.check_ipo_loss(nb10.ipo_loss_from_logprobs)
    # y and y' swapped: h changes sign
    assert not nb10.check_ipo_loss(
        lambda a, b, c, d, p, tau: nb10.ipo_loss_from_logprobs(c, d, a, b, p, tau)
    )
    # the mean instead of one loss per pair
    assert not nb10.check_ipo_loss(lambda *args: nb10.ipo_loss_from_logprobs(*args).mean())
    # target 1/tau instead of 1/(2 tau)
    assert not nb10.check_ipo_loss(
        lambda a, b, c, d, p, tau: nb10.ipo_loss_from_logprobs(a, b, c, d, p, tau / 2)
    )
    # an error in the learner's code is reported, not raised
    assert not nb10.check_ipo_loss(lambda *args: 1 / 0)
    # the reference agrees with the library's loss on every case
    assert nb10.check_ipo_loss(nb10.library_ipo_loss_from_logprobs)


def test_ipo_gradient_checker_and_the_closed_form_against_finite_differences():
    assert nb10.check_ipo_gradient(nb10.ipo_grad_h)
    assert not nb10.check_ipo_gradient(lambda h, p, tau: 2 * h - (p - 0.5) / tau)
    h, p, tau, eps = np.array([-1.3, 0.0, 2.2]), np.array([0.2, 0.5, 0.9]), 0.3, 1e-6

    def loss(x):
        return losses.ipo_loss(torch.as_tensor(x, dtype=torch.float64), p, tau).numpy()

    fd = (loss(h + eps) - loss(h - eps)) / (2 * eps)
    np.testing.assert_allclose(nb10.ipo_grad_h(h, p, tau), fd, atol=1e-6)


def test_gradient_sign_checker():
    p = np.array([0.2, 0.7, 0.5])
    grad = nb10.autograd_ipo_grad_h(np.zeros(3), p, 0.1)
    assert nb10.check_gradient_signs(np.sign(1 - 2 * p), grad)
    assert not nb10.check_gradient_signs(np.sign(2 * p - 1), grad)
    assert not nb10.check_gradient_signs([1, -1], grad)


def test_ipo_target_checker_and_its_rule_is_the_trainers():
    assert nb10.check_ipo_h_target(nb10.ipo_h_target)
    # thresholding without the tie rule
    assert not nb10.check_ipo_h_target(
        lambda p, tau, label: nb10.ipo_h_target(np.where(p == 0.5, 0.6, p), tau, label)
    )
    assert not nb10.check_ipo_h_target(lambda p, tau, label: (p - 0.5) / tau)
    p = np.array([0.0, 0.3, 0.5, 0.500001, 1.0])
    # the same labels as the trainer's with label="threshold"
    trainer_labels = _trainer_threshold(p)
    np.testing.assert_array_equal(nb10._threshold(p), trainer_labels)
    # each target is where the IPO loss with that label has zero gradient
    for label, lab in (("soft", p), ("threshold", trainer_labels)):
        target = nb10.library_ipo_h_target(p, 0.2, label)
        np.testing.assert_allclose(nb10.autograd_ipo_grad_h(target, lab, 0.2), 0.0, atol=1e-12)
