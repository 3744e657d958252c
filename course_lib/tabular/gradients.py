"""Exact and Monte-Carlo gradients of the online losses on a bandit, and small training loops.

A *bandit policy* is a softmax over K actions with logits ``theta``: ``pi = softmax(theta)``. In
logit coordinates ``grad_theta log pi(y) = e_y - pi``, so every expectation over pairs can be
written out exactly as a sum over the K x K pairs. Every loss is taken from
:mod:`course_lib.losses` and differentiated with torch autograd, so the one definition used by the
language-model trainer is also the one these exact statements are about.

Conventions (Calandriello et al. 2024; notes/paper.md §2.3, §3 and §4):

* the *sampler* of a pair is ``SG[pi^(1-beta) pi_ref^beta]`` (``beta = 0``: online IPO, DPO,
  SLiC; ``beta > 0``: IPO-MD), or a fixed data distribution ``mu`` (offline); no gradient flows
  through it;
* the soft label of a pair is ``p = P[y, y']``, ``h`` is computed from ``pi`` itself (never from
  the mixture);
* every gradient returned here is the gradient of a *loss* (descent direction = minus it). The
  Nash-MD-PG "direction" of NLHF is an ascent direction, so it is minus
  :func:`expected_nash_md_pg_gradient`.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import torch

from course_lib import losses
from course_lib.losses import nash_md_pg_loss
from course_lib.tabular.games import geometric_mixture
from course_lib.tabular.preferences import (
    validate_beta,
    validate_distribution,
    validate_preference_matrix,
    validate_tau,
)

__all__ = [
    "CONTRASTIVE_LOSSES",
    "single_thread",
    "BanditRun",
    "softmax",
    "logits_of",
    "pair_sampler",
    "expected_pair_loss",
    "expected_contrastive_gradient",
    "expected_ipo_md_gradient",
    "expected_nash_md_pg_loss",
    "expected_nash_md_pg_gradient",
    "nash_md_pg_objective",
    "sample_contrastive_gradients",
    "sample_nash_md_pg_gradients",
    "train_offline_bandit",
    "train_offline_bandits",
    "train_population_offline",
    "train_online_bandit",
    "sequence_level_mixture",
    "token_level_mixture",
]

CONTRASTIVE_LOSSES: dict[str, Callable] = losses.CONTRASTIVE
DTYPE = torch.float64


@contextmanager
def single_thread() -> Iterator[None]:
    """Run torch on one intra-op thread inside the block, then restore the setting.

    Bandit tensors have a handful of entries: a parallel region costs more than the work, and on a
    busy machine an OpenMP barrier can take a millisecond per op (measured: ``logsigmoid`` on a
    2x2 tensor 1.2 ms with 2 threads, 3 us with 1, on the course's 2-core CI machine under load).
    """
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _one_thread(fn: Callable) -> Callable:
    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        with single_thread():
            return fn(*args, **kwargs)

    return wrapper


# ---------------------------------------------------------------------------------------------
# policies and samplers
# ---------------------------------------------------------------------------------------------
def softmax(theta) -> np.ndarray:
    """``pi = softmax(theta)`` (numerically stable), a numpy array."""
    theta = np.asarray(theta, dtype=float)
    z = np.exp(theta - theta.max())
    return z / z.sum()


def logits_of(pi) -> np.ndarray:
    """Logits ``log pi`` of a full-support policy (the inverse of :func:`softmax` up to a shift)."""
    pi = validate_distribution(pi, "pi")
    if np.any(pi <= 0):
        raise ValueError(f"pi must have full support to have finite logits, got pi = {pi}")
    return np.log(pi)


def _loss_fn(loss) -> Callable:
    if callable(loss):
        return loss
    if loss not in CONTRASTIVE_LOSSES:
        raise ValueError(f"loss must be one of {sorted(CONTRASTIVE_LOSSES)}, got {loss!r}")
    return CONTRASTIVE_LOSSES[loss]


def _theta(theta, n: int | None = None) -> np.ndarray:
    theta = np.asarray(theta, dtype=float)
    if theta.ndim != 1 or (n is not None and theta.shape[0] != n):
        raise ValueError(f"theta must be a vector of {n} logits, got shape {theta.shape}")
    if not np.all(np.isfinite(theta)):
        raise ValueError(f"theta must be finite, got {theta}")
    return theta


def _setup(theta, P, pi_ref, tau, beta=0.0):
    P = validate_preference_matrix(P)
    n = P.shape[0]
    pi_ref = validate_distribution(pi_ref, "pi_ref")
    if pi_ref.shape != (n,):
        raise ValueError(f"pi_ref has {pi_ref.shape[0]} actions but P has {n}")
    if np.any(pi_ref <= 0):
        raise ValueError(f"pi_ref must have full support (h needs log pi_ref), got {pi_ref}")
    return _theta(theta, n), P, pi_ref, validate_tau(tau), validate_beta(beta)


def pair_sampler(theta, pi_ref, beta) -> np.ndarray:
    """The (stop-gradient) distribution each response of a pair is drawn from:
    ``pi^(1-beta) pi_ref^beta`` normalised (Calandriello eq. for IPO-MD; notes/paper.md §1.6,
    §3.2)."""
    return geometric_mixture(softmax(theta), pi_ref, beta)


# ---------------------------------------------------------------------------------------------
# exact expectations (sums over all K x K pairs), differentiated by autograd
# ---------------------------------------------------------------------------------------------
def _log_ratio(theta_t: torch.Tensor, pi_ref) -> torch.Tensor:
    """``l(y) = log pi(y) - log pi_ref(y)`` as a differentiable function of the logits."""
    return torch.log_softmax(theta_t, 0) - torch.as_tensor(np.log(pi_ref), dtype=DTYPE)


def expected_pair_loss(theta_t: torch.Tensor, P, pi_ref, tau, mu, loss="ipo") -> torch.Tensor:
    """``E_{y, y' ~ mu}[ loss(h(y, y'), P[y, y'], tau) ]``, a differentiable torch scalar.

    ``mu`` is held fixed (the stop-gradient of Calandriello eq. 10-11); ``h`` comes from
    ``softmax(theta_t)``. With ``mu`` the current mixture this is the online-IPO / IPO-MD loss at
    the current iterate; with ``mu`` a data distribution it is the offline (population) loss.
    """
    fn = _loss_fn(loss)
    ell = _log_ratio(theta_t, pi_ref)
    h = ell[:, None] - ell[None, :]
    mu_t = torch.as_tensor(np.asarray(mu, dtype=float), dtype=DTYPE)
    weights = mu_t[:, None] * mu_t[None, :]
    return (weights * fn(h, torch.as_tensor(P, dtype=DTYPE), tau)).sum()


@_one_thread
def _grad(fn: Callable[[torch.Tensor], torch.Tensor], theta: np.ndarray) -> np.ndarray:
    theta_t = torch.tensor(theta, dtype=DTYPE, requires_grad=True)
    (g,) = torch.autograd.grad(fn(theta_t), theta_t)
    return g.numpy()


def expected_contrastive_gradient(theta, P, pi_ref, tau, beta=0.0, loss="ipo", mu=None):
    """Exact expected gradient (in logits) of a contrastive loss on pairs from the sampler.

    The sampler is ``SG[pi^(1-beta) pi_ref^beta]`` at the current ``theta`` (online, IPO-MD) unless
    a fixed ``mu`` is given (offline). ``loss`` is ``"ipo"``, ``"dpo"``, ``"slic"`` or a callable
    ``(h, p, tau) -> per-pair tensor`` from :mod:`course_lib.losses`.
    """
    theta, P, pi_ref, tau, beta = _setup(theta, P, pi_ref, tau, beta)
    if mu is None:
        mu = pair_sampler(theta, pi_ref, beta)
    else:
        mu = validate_distribution(mu, "mu")
    return _grad(lambda t: expected_pair_loss(t, P, pi_ref, tau, mu, loss), theta)


def expected_ipo_md_gradient(theta, P, pi_ref, tau, beta=0.0) -> np.ndarray:
    """Exact expected gradient of the IPO-MD loss (online IPO at ``beta = 0``), in logits.

    Calandriello et al. section 5 (IPO-MD) and eq. (11) (online IPO): pairs from
    ``SG[pi^(1-beta) pi_ref^beta]``, soft labels ``P[y, y']``, ``h`` from ``pi``. At ``beta = 0``
    it equals ``(4/tau) *`` :func:`expected_nash_md_pg_gradient` (the paper's first result, with the
    per-pair normalisation of :func:`course_lib.losses.ipo_loss`; notes/paper.md §4.2 step 4).
    """
    return expected_contrastive_gradient(theta, P, pi_ref, tau, beta, loss="ipo")


def expected_nash_md_pg_loss(theta_t, P, pi_ref, tau, opponent) -> torch.Tensor:
    """``E_{y~SG[pi], y'~opponent}[ nash_md_pg_loss(log pi(y), log pi_ref(y), P[y, y'], tau) ]``.

    A differentiable scalar whose gradient is the exact expected Nash-MD-PG estimator (NLHF
    Appendix F; notes/paper.md §3.4). The weights ``pi(y)`` are detached, as sampling is.
    """
    logpi = torch.log_softmax(theta_t, 0)
    logref = torch.as_tensor(np.log(pi_ref), dtype=DTYPE)
    P_t = torch.as_tensor(P, dtype=DTYPE)
    opp = torch.as_tensor(np.asarray(opponent, dtype=float), dtype=DTYPE)
    n = P_t.shape[0]
    per_pair = nash_md_pg_loss(
        logpi[:, None].expand(n, n), logref[:, None].expand(n, n), P_t, tau
    )  # row y, column y'
    weights = torch.exp(logpi.detach())[:, None] * opp[None, :]
    return (weights * per_pair).sum()


def expected_nash_md_pg_gradient(theta, P, pi_ref, tau, beta=0.0) -> np.ndarray:
    """Exact expected gradient of the Nash-MD-PG surrogate loss: ``y ~ pi``, ``y' ~`` the mixture.

    Equals ``-E_{y~pi}[ (e_y - pi) (P(y > pi') - 1/2 - tau log(pi(y)/pi_ref(y))) ]`` in logits,
    ``pi' = pi^(1-beta) pi_ref^beta``: minus the gradient of :func:`nash_md_pg_objective`.
    """
    theta, P, pi_ref, tau, beta = _setup(theta, P, pi_ref, tau, beta)
    opponent = pair_sampler(theta, pi_ref, beta)
    return _grad(lambda t: expected_nash_md_pg_loss(t, P, pi_ref, tau, opponent), theta)


def nash_md_pg_objective(theta, P, pi_ref, tau, beta=0.0, opponent=None) -> float:
    """``P(pi > pi') - tau KL(pi, pi_ref)``, the objective Nash-MD-PG ascends (NLHF App. F).

    ``pi'`` is ``opponent`` if given, else the mixture ``pi^(1-beta) pi_ref^beta`` at ``theta``
    (frozen: at the current iterate its gradient with the opponent frozen is minus
    :func:`expected_nash_md_pg_gradient`).
    """
    theta, P, pi_ref, tau, beta = _setup(theta, P, pi_ref, tau, beta)
    pi = softmax(theta)
    opp = pair_sampler(theta, pi_ref, beta) if opponent is None else validate_distribution(opponent)
    kl = float(np.sum(pi * (np.log(pi) - np.log(pi_ref))))
    return float(pi @ P @ opp) - tau * kl


# ---------------------------------------------------------------------------------------------
# Monte-Carlo estimators from sampled pairs
# ---------------------------------------------------------------------------------------------
def _labels(P, y, yp, labels: str, rng: np.random.Generator) -> np.ndarray:
    p = P[y, yp]
    if labels == "soft":
        return p
    # a Bernoulli(p) winner: same expectation, more variance (notes/paper.md §3.5)
    if labels == "sampled":
        return (rng.random(p.shape) < p).astype(float)
    raise ValueError(f"labels must be 'soft' or 'sampled', got {labels!r}")


@_one_thread
def sample_contrastive_gradients(
    theta, P, pi_ref, tau, beta, n_pairs, rng, loss="ipo", labels="soft", mu=None
) -> np.ndarray:
    """Per-pair gradients (shape ``(n_pairs, K)``) of a contrastive loss on sampled pairs.

    ``y, y'`` are drawn i.i.d. from the sampler (``mu`` if given, else the mixture at ``theta``)
    with the numpy ``Generator`` ``rng``. Their mean is the Monte-Carlo estimate of
    :func:`expected_contrastive_gradient`; their spread gives its standard error. Each row is
    ``dloss/dh * (e_y - e_y')`` with ``dloss/dh`` from autograd through :mod:`course_lib.losses`.
    """
    theta, P, pi_ref, tau, beta = _setup(theta, P, pi_ref, tau, beta)
    fn = _loss_fn(loss)
    mu = pair_sampler(theta, pi_ref, beta) if mu is None else validate_distribution(mu, "mu")
    n = P.shape[0]
    y = rng.choice(n, size=int(n_pairs), p=mu)
    yp = rng.choice(n, size=int(n_pairs), p=mu)
    p = _labels(P, y, yp, labels, rng)
    ell = np.log(softmax(theta)) - np.log(pi_ref)
    h = torch.tensor(ell[y] - ell[yp], dtype=DTYPE, requires_grad=True)
    (dh,) = torch.autograd.grad(fn(h, torch.as_tensor(p, dtype=DTYPE), tau).sum(), h)
    eye = np.eye(n)
    # grad_theta h(y, y') = (e_y - pi) - (e_y' - pi) = e_y - e_y'
    return dh.numpy()[:, None] * (eye[y] - eye[yp])


@_one_thread
def sample_nash_md_pg_gradients(
    theta, P, pi_ref, tau, beta, n_samples, rng, labels="soft"
) -> np.ndarray:
    """Per-sample Nash-MD-PG gradients (shape ``(n_samples, K)``): ``y ~ pi``, ``y' ~`` mixture.

    Each row is ``dloss/dlogp * (e_y - pi)`` with the loss :func:`course_lib.losses.nash_md_pg_loss`
    (autograd), i.e. ``-(p - 1/2 - tau log(pi(y)/pi_ref(y))) (e_y - pi)``.
    """
    theta, P, pi_ref, tau, beta = _setup(theta, P, pi_ref, tau, beta)
    pi = softmax(theta)
    opponent = pair_sampler(theta, pi_ref, beta)
    n = P.shape[0]
    y = rng.choice(n, size=int(n_samples), p=pi)
    yp = rng.choice(n, size=int(n_samples), p=opponent)
    p = _labels(P, y, yp, labels, rng)
    logp = torch.tensor(np.log(pi)[y], dtype=DTYPE, requires_grad=True)
    logref = torch.as_tensor(np.log(pi_ref)[y], dtype=DTYPE)
    loss = nash_md_pg_loss(logp, logref, torch.as_tensor(p, dtype=DTYPE), tau).sum()
    (dlogp,) = torch.autograd.grad(loss, logp)
    return dlogp.numpy()[:, None] * (np.eye(n)[y] - pi)


# ---------------------------------------------------------------------------------------------
# training loops
# ---------------------------------------------------------------------------------------------
@dataclass
class BanditRun:
    """A recorded training run: ``policies[i]`` is ``pi`` after ``steps[i]`` optimiser steps."""

    steps: np.ndarray
    policies: np.ndarray
    final_theta: np.ndarray
    config: dict = field(default_factory=dict)

    @property
    def final_policy(self) -> np.ndarray:
        return softmax(self.final_theta)


class _Optimizer:
    """Adam (torch's defaults: betas 0.9, 0.999, eps 1e-8; Kingma & Ba 2015) or plain SGD on a
    numpy array of logits. Written out here because the bandit has a handful of parameters: a
    torch optimizer's per-step overhead would dominate, and every coordinate is independent, so a
    stack of runs (one row each) trains exactly like separate runs."""

    def __init__(self, name: str, lr: float, shape):
        if name not in ("adam", "sgd"):
            raise ValueError(f"optimizer must be 'adam' or 'sgd', got {name!r}")
        self.name, self.lr, self.t = name, lr, 0
        self.m, self.v = np.zeros(shape), np.zeros(shape)

    def step(self, theta: np.ndarray, grad: np.ndarray) -> np.ndarray:
        if self.name == "sgd":
            return theta - self.lr * grad
        self.t += 1
        self.m = 0.9 * self.m + 0.1 * grad
        self.v = 0.999 * self.v + 0.001 * grad**2
        m_hat = self.m / (1 - 0.9**self.t)
        v_hat = self.v / (1 - 0.999**self.t)
        return theta - self.lr * m_hat / (np.sqrt(v_hat) + 1e-8)


def _record_points(steps: int, n_records: int) -> set[int]:
    return set(np.unique(np.linspace(0, steps, min(n_records, steps + 1)).astype(int)).tolist())


def _check_steps(steps, lr):
    if int(steps) != steps or steps < 0:
        raise ValueError(f"steps must be a non-negative integer, got {steps!r}")
    if not (np.isfinite(lr) and lr > 0):
        raise ValueError(f"lr must be a finite number > 0, got {lr!r}")
    return int(steps), float(lr)


def _as_pairs(pairs) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(y, y') pairs meaning y preferred (p = 1), or (y, y', p) triples with soft labels."""
    rows = [tuple(r) for r in pairs]
    if not rows or any(len(r) not in (2, 3) for r in rows):
        raise ValueError(
            f"pairs must be a non-empty list of (y_w, y_l) or (y, y', p), got {pairs!r}"
        )
    y = np.array([int(r[0]) for r in rows])
    yp = np.array([int(r[1]) for r in rows])
    p = np.array([float(r[2]) if len(r) == 3 else 1.0 for r in rows])
    return y, yp, p


def train_offline_bandit(
    pairs: Sequence,
    n_actions: int,
    tau: float,
    loss="ipo",
    steps: int = 1000,
    lr: float = 0.01,
    batch: int | None = 9,
    pi_ref=None,
    theta0=None,
    seed: int = 0,
    optimizer: str = "adam",
    n_records: int = 200,
) -> BanditRun:
    """Train a softmax bandit on a fixed dataset of pairs (Azar et al. section 5 setup).

    Each step draws ``batch`` pairs with replacement from ``pairs`` (``batch=None``: the whole
    dataset) and takes one optimiser step on the mean per-pair loss. Defaults follow the IPO
    paper's experiment (Adam, lr 0.01, batch 9, start at ``pi_ref``, uniform ``pi_ref``;
    notes/paper.md §5.2). ``pairs`` holds ``(y_w, y_l)`` (a hard label) or ``(y, y', p)`` (a soft
    label). The mini-batches are drawn with ``numpy.random.default_rng(seed)``.
    """
    return train_offline_bandits(
        pairs,
        n_actions,
        tau,
        loss,
        steps,
        lr,
        batch,
        pi_ref,
        theta0,
        (seed,),
        optimizer,
        n_records,
    )[0]


@_one_thread
def train_offline_bandits(
    pairs: Sequence,
    n_actions: int,
    tau: float,
    loss="ipo",
    steps: int = 1000,
    lr: float = 0.01,
    batch: int | None = 9,
    pi_ref=None,
    theta0=None,
    seeds: Sequence[int] = (0,),
    optimizer: str = "adam",
    n_records: int = 200,
) -> list[BanditRun]:
    """:func:`train_offline_bandit` for several seeds at once: one run per seed, trained side by
    side as the rows of one array (run ``k`` equals ``train_offline_bandit(..., seed=seeds[k])``).
    """
    tau = validate_tau(tau)
    steps, lr = _check_steps(steps, lr)
    fn = _loss_fn(loss)
    y, yp, p = _as_pairs(pairs)
    if batch is not None and (int(batch) != batch or batch < 1):
        raise ValueError(f"batch must be None (whole dataset) or an integer >= 1, got {batch!r}")
    if min(y.min(), yp.min()) < 0 or max(y.max(), yp.max()) >= n_actions:
        raise ValueError(f"pairs name actions outside 0..{n_actions - 1}: {pairs!r}")
    if pi_ref is None:
        pi_ref = np.full(n_actions, 1 / n_actions)
    pi_ref = validate_distribution(pi_ref, "pi_ref", n=n_actions)
    theta_init = np.log(pi_ref) if theta0 is None else _theta(theta0, n_actions)
    seeds = [int(s) for s in seeds]
    rngs = [np.random.default_rng(s) for s in seeds]
    runs = len(seeds)
    theta = np.tile(theta_init, (runs, 1))
    opt = _Optimizer(optimizer, lr, theta.shape)
    log_ref = torch.as_tensor(np.log(pi_ref), dtype=DTYPE)
    y_t, yp_t, p_t = torch.as_tensor(y), torch.as_tensor(yp), torch.as_tensor(p, dtype=DTYPE)
    rows = torch.arange(runs)[:, None]
    record = _record_points(steps, n_records)
    rec_steps, rec_pi = [], []
    for t in range(steps + 1):
        if t in record:
            rec_steps.append(t)
            rec_pi.append(np.stack([softmax(th) for th in theta]))
        if t == steps:
            break
        if batch is None:  # full batch: every pair of the dataset once per step
            idx = torch.arange(len(y)).expand(runs, len(y))
        else:
            idx = torch.as_tensor(np.stack([r.integers(0, len(y), size=batch) for r in rngs]))
        theta_t = torch.tensor(theta, dtype=DTYPE, requires_grad=True)
        ell = torch.log_softmax(theta_t, 1) - log_ref
        h = ell[rows, y_t[idx]] - ell[rows, yp_t[idx]]
        # each run's loss is its batch mean; summing over runs keeps their gradients separate
        total = fn(h, p_t[idx], tau).mean(1).sum()
        (grad,) = torch.autograd.grad(total, theta_t)
        theta = opt.step(theta, grad.numpy())
    policies = np.array(rec_pi)  # (records, runs, K)
    out = []
    for k, seed in enumerate(seeds):
        cfg = dict(
            loss=getattr(fn, "__name__", str(loss)),
            tau=tau,
            lr=lr,
            batch=batch,
            seed=seed,
            optimizer=optimizer,
        )
        out.append(BanditRun(np.array(rec_steps), policies[:, k], theta[k].copy(), cfg))
    return out


@_one_thread
def train_population_offline(
    P,
    pi_ref,
    tau: float,
    mu,
    loss="ipo",
    steps: int = 1000,
    lr: float = 0.05,
    optimizer: str = "adam",
    n_records: int = 200,
) -> BanditRun:
    """Minimise the exact *population* offline loss ``E_{y,y'~mu}[loss(h, P[y,y'], tau)]``.

    The limit of infinitely many pairs drawn from a fixed data distribution ``mu`` with soft
    labels ``P`` (Azar et al. eq. 10-11; Calandriello eq. 10 with ``mu`` fixed). For IPO its
    minimiser is ``offline_ipo_solution(P, pi_ref, mu, tau)``. Starts from ``pi_ref``.
    """
    theta0 = np.log(validate_distribution(pi_ref, "pi_ref"))
    theta0, P, pi_ref, tau, _ = _setup(theta0, P, pi_ref, tau, 0.0)
    mu = validate_distribution(mu, "mu", n=P.shape[0])
    steps, lr = _check_steps(steps, lr)
    _loss_fn(loss)
    theta = theta0.copy()
    opt = _Optimizer(optimizer, lr, theta.shape)
    record = _record_points(steps, n_records)
    rec_steps, rec_pi = [], []
    for t in range(steps + 1):
        if t in record:
            rec_steps.append(t)
            rec_pi.append(softmax(theta))
        if t == steps:
            break
        grad = _grad(lambda th: expected_pair_loss(th, P, pi_ref, tau, mu, loss), theta)
        theta = opt.step(theta, grad)
    cfg = dict(loss=str(loss), tau=tau, lr=lr, optimizer=optimizer, mu=mu)
    return BanditRun(np.array(rec_steps), np.array(rec_pi), theta.copy(), cfg)


ONLINE_METHODS = ("ipo", "dpo", "slic", "nash_md_pg")


@_one_thread
def train_online_bandit(
    P,
    pi_ref,
    tau: float,
    method: str = "ipo",
    beta: float = 0.0,
    steps: int = 1000,
    lr: float = 0.01,
    batch: int | None = None,
    theta0=None,
    seed: int = 0,
    optimizer: str = "sgd",
    n_records: int = 200,
) -> BanditRun:
    """Online training of a softmax bandit against the preference matrix ``P``.

    ``method`` is a contrastive loss (``"ipo"``: online IPO / IPO-MD, ``"dpo"``, ``"slic"``) with
    pairs from ``SG[pi^(1-beta) pi_ref^beta]`` and soft labels ``P[y, y']``, or ``"nash_md_pg"``
    (``y ~ pi``, ``y' ~`` the mixture). With ``batch=None`` each step uses the exact expected
    loss (a deterministic trajectory); otherwise ``batch`` sampled pairs, drawn with
    ``numpy.random.default_rng(seed)``. Starts from ``pi_ref`` unless ``theta0`` is given.
    """
    theta_init = np.log(validate_distribution(pi_ref, "pi_ref")) if theta0 is None else theta0
    theta_init, P, pi_ref, tau, beta = _setup(theta_init, P, pi_ref, tau, beta)
    steps, lr = _check_steps(steps, lr)
    if method not in ONLINE_METHODS:
        raise ValueError(f"method must be one of {ONLINE_METHODS}, got {method!r}")
    if batch is not None and (int(batch) != batch or batch < 1):
        raise ValueError(
            f"batch must be None (exact expectation) or an integer >= 1, got {batch!r}"
        )
    rng = np.random.default_rng(seed)
    theta = theta_init.copy()
    opt = _Optimizer(optimizer, lr, theta.shape)
    record = _record_points(steps, n_records)
    rec_steps, rec_pi = [], []
    for t in range(steps + 1):
        if t in record:
            rec_steps.append(t)
            rec_pi.append(softmax(theta))
        if t == steps:
            break
        mix = pair_sampler(theta, pi_ref, beta)
        if batch is None:
            if method == "nash_md_pg":
                grad = _grad(
                    lambda th, mix=mix: expected_nash_md_pg_loss(th, P, pi_ref, tau, mix), theta
                )
            else:
                grad = _grad(
                    lambda th, mix=mix: expected_pair_loss(th, P, pi_ref, tau, mix, method), theta
                )
        elif method == "nash_md_pg":
            grad = sample_nash_md_pg_gradients(theta, P, pi_ref, tau, beta, batch, rng).mean(0)
        else:
            grad = sample_contrastive_gradients(
                theta, P, pi_ref, tau, beta, batch, rng, loss=method
            ).mean(0)
        theta = opt.step(theta, grad)
    cfg = dict(
        method=method, tau=tau, beta=beta, lr=lr, batch=batch, seed=seed, optimizer=optimizer
    )
    return BanditRun(np.array(rec_steps), np.array(rec_pi), theta.copy(), cfg)


# ---------------------------------------------------------------------------------------------
# sequences of two tokens: the token-level mixture is not the sequence-level one
# ---------------------------------------------------------------------------------------------
def _two_token(first, second, name):
    first = validate_distribution(first, f"{name}_first")
    second = np.asarray(second, dtype=float)
    v = first.shape[0]
    if second.shape != (v, v):
        raise ValueError(
            f"{name}_second must be a ({v}, {v}) matrix of conditionals, got shape {second.shape}"
        )
    for row in range(v):
        validate_distribution(second[row], f"{name}_second[{row}]")
    return first, second


def sequence_level_mixture(pi_first, pi_second, ref_first, ref_second, beta) -> np.ndarray:
    """Exact sequence-level geometric mixture of two-token policies (notes/paper.md §1.6).

    A policy over sequences ``(y0, y1)`` is given by ``first[y0]`` and ``second[y0, y1] =
    pi(y1 | y0)``. Returns the ``(V, V)`` joint ``pi(y)^(1-beta) pi_ref(y)^beta / Z``.
    """
    pi_first, pi_second = _two_token(pi_first, pi_second, "pi")
    ref_first, ref_second = _two_token(ref_first, ref_second, "ref")
    joint = pi_first[:, None] * pi_second
    joint_ref = ref_first[:, None] * ref_second
    return geometric_mixture(joint.ravel(), joint_ref.ravel(), beta).reshape(joint.shape)


def token_level_mixture(pi_first, pi_second, ref_first, ref_second, beta) -> np.ndarray:
    """The per-token mixture actually sampled (NLHF App. F.1, TRL ``GeometricMixtureWrapper``):
    each next-token distribution is ``softmax((1-beta) log pi + beta log pi_ref)``, and the
    sequence probability is their product. Returns the ``(V, V)`` joint."""
    pi_first, pi_second = _two_token(pi_first, pi_second, "pi")
    ref_first, ref_second = _two_token(ref_first, ref_second, "ref")
    first = geometric_mixture(pi_first, ref_first, beta)
    second = np.stack(
        [geometric_mixture(a, b, beta) for a, b in zip(pi_second, ref_second, strict=True)]
    )
    return first[:, None] * second
