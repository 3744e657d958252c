"""course_lib.losses: values, soft labels, finite-difference gradients, bad input."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from course_lib.losses import dpo_loss, ipo_loss, ipo_target, nash_md_pg_loss, slic_loss

LOSSES = {"dpo": dpo_loss, "ipo": ipo_loss, "slic": slic_loss}

# the single-ordering losses l(h), written out independently of the module
REFERENCE = {
    "dpo": lambda h, tau: math.log1p(math.exp(-tau * h)),
    "ipo": lambda h, tau: (h - 1 / (2 * tau)) ** 2,
    "slic": lambda h, tau: max(0.0, 1 - tau * h),
}


def _grid():
    g = torch.Generator().manual_seed(0)
    h = torch.randn(5, 7, generator=g, dtype=torch.float64) * 2
    p = torch.rand(5, 7, generator=g, dtype=torch.float64)
    return h, p


@pytest.mark.parametrize("name", LOSSES)
@pytest.mark.parametrize("tau", [0.1, 0.7, 3.0])
def test_hard_labels_are_the_single_ordering_loss(name, tau):
    # p = 1: the loss of the ordering (y, y'); p = 0: of (y', y), i.e. l(-h)
    h = torch.tensor([-2.3, -0.4, 0.0, 0.3, 1.9], dtype=torch.float64)
    ones, zeros = torch.ones_like(h), torch.zeros_like(h)
    got1 = LOSSES[name](h, ones, tau)
    got0 = LOSSES[name](h, zeros, tau)
    want1 = torch.tensor([REFERENCE[name](v, tau) for v in h.tolist()], dtype=torch.float64)
    want0 = torch.tensor([REFERENCE[name](-v, tau) for v in h.tolist()], dtype=torch.float64)
    torch.testing.assert_close(got1, want1, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got0, want0, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", LOSSES)
def test_soft_label_is_weighted_sum_of_two_orderings(name):
    h, p = _grid()
    tau = 0.6
    loss = LOSSES[name]
    got = loss(h, p, tau)
    want = p * loss(h, torch.ones_like(p), tau) + (1 - p) * loss(-h, torch.ones_like(p), tau)
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert got.shape == h.shape


@pytest.mark.parametrize("name", LOSSES)
def test_antisymmetry_swapping_the_pair(name):
    # the pair (y', y) has h -> -h and p -> 1 - p: same loss
    h, p = _grid()
    loss = LOSSES[name]
    torch.testing.assert_close(loss(h, p, 0.9), loss(-h, 1 - p, 0.9), rtol=1e-12, atol=1e-12)


def test_ipo_regression_identity():
    # p (h - a)^2 + (1 - p)(-h - a)^2 = (h - (2p - 1) a)^2 + 4 p (1 - p) a^2   (notes/paper.md §2.3)
    h, p = _grid()
    for tau in (0.05, 0.5, 2.0):
        a = ipo_target(tau)
        assert a == pytest.approx(1 / (2 * tau))
        want = (h - (2 * p - 1) * a) ** 2 + 4 * p * (1 - p) * a**2
        torch.testing.assert_close(ipo_loss(h, p, tau), want, rtol=1e-12, atol=1e-10)


def test_ipo_minimiser_is_the_soft_target():
    # the per-pair minimiser in h is (p - 1/2)/tau; at p = 1 it is the paper's 1/(2 tau)
    p = torch.tensor([0.0, 0.2, 0.5, 0.9, 1.0], dtype=torch.float64)
    tau = 0.4
    h = torch.zeros_like(p, requires_grad=True)
    opt = torch.optim.LBFGS([h], line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = ipo_loss(h, p, tau).sum()
        loss.backward()
        return loss

    opt.step(closure)
    torch.testing.assert_close(h.detach(), (p - 0.5) / tau, rtol=0, atol=1e-8)


def _fd_grad(fn, x, eps=1e-6):
    g = torch.zeros_like(x)
    flat, gflat = x.view(-1), g.view(-1)
    for i in range(flat.numel()):
        old = flat[i].item()
        flat[i] = old + eps
        up = fn(x).sum().item()
        flat[i] = old - eps
        down = fn(x).sum().item()
        flat[i] = old
        gflat[i] = (up - down) / (2 * eps)
    return g


@pytest.mark.parametrize("name", LOSSES)
def test_finite_difference_gradient_in_h(name):
    h, p = _grid()
    tau = 0.8
    if name == "slic":  # keep away from the hinge's kinks at tau h = +-1
        h = torch.where((tau * h.abs() - 1).abs() < 1e-3, h + 0.01, h)
    loss = LOSSES[name]
    x = h.clone().requires_grad_(True)
    loss(x, p, tau).sum().backward()
    fd = _fd_grad(lambda z: loss(z, p, tau), h.clone())
    torch.testing.assert_close(x.grad, fd, rtol=1e-6, atol=1e-7)


def test_dpo_closed_form_gradient_and_large_margins():
    # d/dh [-p log s(tau h) - (1-p) log s(-tau h)] = tau (s(tau h) - p); finite for |tau h| = 800
    h = torch.tensor([-800.0, -1.0, 0.0, 2.0, 800.0], dtype=torch.float64, requires_grad=True)
    p = torch.tensor([0.3, 1.0, 0.5, 0.0, 0.8], dtype=torch.float64)
    tau = 1.0
    loss = dpo_loss(h, p, tau)
    assert torch.isfinite(loss).all()
    loss.sum().backward()
    torch.testing.assert_close(h.grad, tau * (torch.sigmoid(tau * h.detach()) - p))


def test_losses_differentiate_through_policy_parameters():
    # a tabular softmax policy: h depends on logits; autograd equals finite differences
    g = torch.Generator().manual_seed(1)
    theta = torch.randn(4, generator=g, dtype=torch.float64)
    log_ref = torch.log_softmax(torch.randn(4, generator=g, dtype=torch.float64), 0)
    y, yp = torch.tensor([0, 1, 3, 2]), torch.tensor([2, 1, 0, 3])
    p = torch.tensor([0.9, 0.5, 0.2, 0.7], dtype=torch.float64)

    def total(th, loss):
        ell = torch.log_softmax(th, 0) - log_ref
        return loss(ell[y] - ell[yp], p, 0.5).sum()

    for loss in LOSSES.values():
        x = theta.clone().requires_grad_(True)
        total(x, loss).backward()
        fd = _fd_grad(lambda z, loss=loss: total(z, loss), theta.clone())
        torch.testing.assert_close(x.grad, fd, rtol=1e-6, atol=1e-7)


def test_nash_md_pg_gradient_is_the_estimator():
    # grad of sum of losses w.r.t. logp is -(p - 1/2 - tau (logp - ref_logp)), per sample
    logp = torch.tensor([-1.2, -0.3, -2.5, -0.9], dtype=torch.float64, requires_grad=True)
    ref = torch.tensor([-1.0, -0.7, -1.5, -0.9], dtype=torch.float64)
    p = torch.tensor([0.8, 0.1, 0.5, 1.0], dtype=torch.float64)
    tau = 0.3
    nash_md_pg_loss(logp, ref, p, tau).sum().backward()
    want = -(p - 0.5 - tau * (logp.detach() - ref))
    torch.testing.assert_close(logp.grad, want, rtol=1e-12, atol=1e-12)


def test_nash_md_pg_ref_gets_no_gradient_and_through_a_policy():
    g = torch.Generator().manual_seed(2)
    theta = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    ref_theta = torch.randn(5, generator=g, dtype=torch.float64, requires_grad=True)
    y = torch.tensor([0, 3, 3, 1])
    p = torch.tensor([0.9, 0.4, 0.6, 0.5], dtype=torch.float64)
    tau = 0.7
    logpi = torch.log_softmax(theta, 0)
    logref = torch.log_softmax(ref_theta, 0)
    nash_md_pg_loss(logpi[y], logref[y], p, tau).sum().backward()
    assert ref_theta.grad is None or torch.all(ref_theta.grad == 0)
    # by hand: sum_i -(adv_i) (e_{y_i} - pi)
    pi = torch.softmax(theta.detach(), 0)
    adv = p - 0.5 - tau * (logpi.detach()[y] - logref.detach()[y])
    eye = torch.eye(5, dtype=torch.float64)
    want = -(adv[:, None] * (eye[y] - pi)).sum(0)
    torch.testing.assert_close(theta.grad, want, rtol=1e-12, atol=1e-12)


def test_accepts_numbers_arrays_and_float32():
    assert dpo_loss(0.0, 1.0, 1.0).item() == pytest.approx(math.log(2))
    out = ipo_loss(np.array([0.0, 1.0]), np.array([1.0, 0.0]), 0.5)
    torch.testing.assert_close(out, torch.tensor([1.0, 4.0]))
    h32 = torch.tensor([0.5, -0.5], dtype=torch.float32)
    assert slic_loss(h32, torch.tensor([1.0, 1.0]), 1.0).dtype == torch.float32
    assert slic_loss(h32, 1.0, 1.0).dtype == torch.float32  # a number p takes h's dtype
    # p broadcasts against h
    assert dpo_loss(torch.zeros(3, 2), 0.5, 1.0).shape == (3, 2)


@pytest.mark.parametrize("fn", [dpo_loss, ipo_loss, slic_loss])
@pytest.mark.parametrize("tau", [0.0, -1.0, float("nan"), float("inf"), "big"])
def test_bad_tau_rejected_naming_the_value(fn, tau):
    with pytest.raises(ValueError, match="tau") as err:
        fn(torch.zeros(2), torch.ones(2), tau)
    assert repr(tau) in str(err.value)


@pytest.mark.parametrize("fn", [dpo_loss, ipo_loss, slic_loss])
@pytest.mark.parametrize("bad", [1.5, -0.25, float("nan")])
def test_bad_p_rejected_naming_the_value(fn, bad):
    with pytest.raises(ValueError, match=r"p must be a probability .* got " + str(bad)):
        fn(torch.zeros(3), torch.tensor([0.5, bad, 0.2]), 1.0)


def test_nash_md_pg_bad_input():
    with pytest.raises(ValueError, match="-0.1"):
        nash_md_pg_loss(torch.zeros(2), torch.zeros(2), torch.ones(2), -0.1)
    with pytest.raises(ValueError, match="1.2"):
        nash_md_pg_loss(torch.zeros(2), torch.zeros(2), torch.tensor([1.2, 0.5]), 1.0)
