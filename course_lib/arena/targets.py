"""Where each algorithm goes: its exact destination on the arena's sequence space, per prompt.

Every algorithm of :mod:`course_lib.online.algorithms` has a stationary point of its *expected*
update; in the arena it is computed exactly on the enumerated completions of each prompt (``P``
is that prompt's ``(n, n)`` preference matrix, ``pi_ref`` its reference distribution).

* online IPO and Nash-MD-PG at beta = 0: the regularised Nash equilibrium (Calandriello et al.
  2024, eq. 12; NLHF Prop. 1)

      pi*_tau(y) ∝ pi_ref(y) exp(P(y > pi*_tau) / tau).

* IPO-MD (and Nash-MD-PG, whose opponent is drawn from the same mixture) with the
  *sequence-level* geometric mixture ``mix = pi^(1-beta) pi_ref^beta / Z`` (the paper's object,
  eq. 13): ``pi ∝ pi_ref exp(P(. > mix(pi)) / tau)``. Taking logs, ``log mix = (1-beta) log pi +
  beta log pi_ref + c = log pi_ref + (1-beta) P(. > mix) / tau + c``, so the mixture is
  ``pi*_{tau/(1-beta)}`` (Prop. 5.2) and pi is the best response at tau to it:
  ``course_lib.tabular.regularised_nash(P, pi_ref, tau, beta)`` (:func:`sequence_level_target`).

* IPO-MD with the *token-level* mixture that :func:`course_lib.sampling.sample_mixture` draws:
  ``mu_tok(pi)(y) = prod_n mix(y_n | x, y_<n)``, ``mix(a | u) ∝ pi(a | u)^(1-beta)
  pi_ref(a | u)^beta`` at every prefix ``u``, the conditionals read off the sequence
  distributions on the tree. The same derivation as for online IPO (the expected IPO loss
  ``E_{y,y'~mu}[(h - (P(y > y') - 1/2)/tau)^2]`` is minimised, for a fixed sampler mu of full
  support, by ``log pi/pi_ref (y) = P(y > mu)/tau + c``) with mu = mu_tok(pi) gives

      pi(y) ∝ pi_ref(y) exp(P(y > mu_tok(pi)) / tau)

  (:func:`token_level_target`, solved by Newton to a residual <= 1e-10). Both mixtures are pi at
  beta = 0 and pi_ref at beta = 1, so there the two destinations coincide.

* online DPO and online SLiC (soft or sampled labels), pairs y, y' ~ pi independently: the
  zero of the expected gradient in the logits theta of a softmax over sequences,
  ``G(theta) = d/dtheta' E_{y,y'~SG[pi]}[loss(h_theta'(y, y'), P(y > y'), tau)]``. For a loss
  ``p l(h) + (1-p) l(-h)`` it is ``G_z = 2 pi_z R_z`` with
  ``R_z = sum_y' pi(y') dloss/dh(h(z, y'), P(z > y'))`` (:func:`contrastive_stationary_point`).
  For IPO, ``R_z = 0`` is the equation of pi*_tau again; for DPO it is
  ``sum_y' pi(y') sigmoid(tau h(z, y')) = P(z > pi)``, another point. SLiC's hinge has a set of
  stationary points, not one; see :func:`contrastive_stationary_point` for what is reported.

Labels. Every loss is linear in its label, so sampled (Bernoulli) labels have the destination of
soft ones and thresholded labels that of the preference ``1[P > 1/2]``
(:func:`course_lib.arena.preference.label_preference`).

Parametrisation. These are stationary points in the logits of a softmax over whole sequences.
The transformer's expected gradient is ``J^T G`` with J the Jacobian of its sequence log-probs in
its weights, so a zero of ``G`` is a stationary point of any parametrisation that can represent
it; a parametrisation without the capacity may also stop where ``J^T G = 0`` with ``G != 0``.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import torch

from course_lib import losses
from course_lib.arena.language import Tree
from course_lib.tabular import kl, regularised_nash, validate_beta, validate_tau

DTYPE = torch.float64
CONTRASTIVE = {"ipo": losses.ipo_loss, "dpo": losses.dpo_loss, "slic": losses.slic_loss}


class FixedPoint(NamedTuple):
    """A destination: the policy ``pi``, the residual of its defining equation, and how it was
    found. The residual is ``max_y |pi(y) - T(pi)(y)|`` for the fixed points of IPO and IPO-MD,
    ``max_z |R_z|`` for DPO's stationary point, and the size ``max_z |2 pi_z R_z|`` of the
    expected gradient at SLiC's reported point (not a certificate: see
    :func:`contrastive_stationary_point`)."""

    pi: np.ndarray
    residual: float
    method: str


# ---------------------------------------------------------------------------------------------
# mixtures
# ---------------------------------------------------------------------------------------------
def _log_conditionals(log_pi: torch.Tensor, tree: Tree) -> torch.Tensor:
    """``log pi(a | u)`` per edge from a log sequence distribution (torch, differentiable)."""
    paths = torch.as_tensor(tree.paths, dtype=DTYPE)
    log_edge = torch.logsumexp(log_pi[:, None] + torch.log(paths), dim=0)
    V = paths.shape[1] // tree.n_nodes
    log_node = torch.logsumexp(log_edge.view(tree.n_nodes, V), dim=1)
    return log_edge - log_node.repeat_interleave(V)


def _log_token_mixture(log_pi, log_ref, beta: float, tree: Tree) -> torch.Tensor:
    """``log mu_tok(y)``: the product over y's tokens of the per-prefix mixtures."""
    V = tree.paths.shape[1] // tree.n_nodes
    z = (1.0 - beta) * _log_conditionals(log_pi, tree) + beta * _log_conditionals(log_ref, tree)
    log_mix = torch.log_softmax(z.view(tree.n_nodes, V), dim=1).reshape(-1)
    return torch.as_tensor(tree.paths, dtype=DTYPE) @ log_mix


def token_level_mixture(pi, pi_ref, beta, tree: Tree) -> np.ndarray:
    """The token-level geometric mixture of two sequence distributions on the tree: what
    :func:`course_lib.sampling.sample_mixture` draws when pi and pi_ref are its two models."""
    beta = validate_beta(beta)
    log_pi = torch.log(torch.as_tensor(np.asarray(pi, dtype=float), dtype=DTYPE))
    log_ref = torch.log(torch.as_tensor(np.asarray(pi_ref, dtype=float), dtype=DTYPE))
    return torch.exp(_log_token_mixture(log_pi, log_ref, beta, tree)).numpy()


# ---------------------------------------------------------------------------------------------
# IPO-MD's destinations
# ---------------------------------------------------------------------------------------------
def sequence_level_target(P, pi_ref, tau, beta: float = 0.0) -> FixedPoint:
    """``pi ∝ pi_ref exp(P(. > pi^(1-beta) pi_ref^beta / Z) / tau)`` by
    :func:`course_lib.tabular.regularised_nash` (beta = 0: the regularised Nash equilibrium)."""
    pi, residual = regularised_nash(P, pi_ref, tau, beta, return_residual=True)
    return FixedPoint(pi, residual, "course_lib.tabular.regularised_nash")


class _TokenGame:
    """The token-level IPO-MD map in log coordinates x = log pi (normalised):
    ``T(x) = log softmax(log pi_ref + P mu_tok(exp x) / tau)``."""

    def __init__(self, P, pi_ref, tau, beta, tree):
        self.P = torch.as_tensor(P, dtype=DTYPE)
        self.log_ref = torch.log(torch.as_tensor(pi_ref, dtype=DTYPE))
        self.tau, self.beta, self.tree = tau, beta, tree

    def T(self, x: torch.Tensor) -> torch.Tensor:
        mu = torch.exp(_log_token_mixture(x, self.log_ref, self.beta, self.tree))
        return torch.log_softmax(self.log_ref + self.P @ mu / self.tau, dim=0)

    def F(self, x: torch.Tensor) -> torch.Tensor:
        return x - self.T(x)

    def residual(self, x: torch.Tensor) -> float:
        """``max_y |pi(y) - T(pi)(y)|`` in probabilities (as ``regularised_nash`` reports)."""
        with torch.no_grad():
            return float(torch.max(torch.abs(torch.exp(x) - torch.exp(self.T(x)))))


def _newton(F, x: torch.Tensor, tol: float, max_steps: int = 50, lstsq: bool = False):
    """Damped Newton on ``F(x) = 0`` with a backtracking line search on ``max |F|``; ``x`` is a
    normalised log-distribution and stays one. Returns ``(x, max |F(x)|)``."""
    with torch.no_grad():
        norm = float(torch.max(torch.abs(F(x))))
    for _ in range(max_steps):
        if norm <= tol:
            break
        J = torch.autograd.functional.jacobian(F, x)
        with torch.no_grad():
            f = F(x)
            if lstsq:  # F is invariant to x + c: J is singular along 1, take the min-norm step
                dx = torch.linalg.lstsq(J, -f[:, None], driver="gelsd").solution[:, 0]
            else:
                dx = torch.linalg.solve(J, -f)
            for step in (1.0, 0.5, 0.25, 0.125, 0.0625, 0.03125):
                x_new = x + step * dx
                x_new = x_new - torch.logsumexp(x_new, 0)
                norm_new = float(torch.max(torch.abs(F(x_new))))
                if np.isfinite(norm_new) and norm_new < norm:
                    break
            else:
                break
        x, norm = x_new, norm_new
    return x, norm


def token_level_target(
    P, pi_ref, tau, beta, tree: Tree, start=None, tol: float = 1e-12
) -> FixedPoint:
    """IPO-MD's destination with the token-level mixture: ``pi ∝ pi_ref exp(P(. > mu_tok(pi)) /
    tau)``, by damped Newton on ``F(x) = x - log T(x)`` (x = log pi) from ``start`` (default the
    sequence-level point at the same beta, which is close); where that stalls, by continuation in
    beta from 0, where the two points coincide. ``residual`` is ``max_y |pi(y) - T(pi)(y)|``;
    ValueError if it stays above 1e-10."""
    tau, beta = validate_tau(tau), validate_beta(beta)
    pi_ref = np.asarray(pi_ref, dtype=float)
    if np.any(pi_ref <= 0):
        raise ValueError("pi_ref must give every completion probability > 0")
    if start is None:
        start = sequence_level_target(P, pi_ref, tau, beta).pi
    game = _TokenGame(P, pi_ref, tau, beta, tree)
    x, _ = _newton(game.F, torch.log(torch.as_tensor(start, dtype=DTYPE)), tol)
    method = "Newton"
    if game.residual(x) > 1e-10:
        x = torch.log(torch.as_tensor(sequence_level_target(P, pi_ref, tau, 0.0).pi, dtype=DTYPE))
        for b in np.linspace(0.0, beta, 11)[1:]:
            game = _TokenGame(P, pi_ref, tau, float(b), tree)
            x, _ = _newton(game.F, x, tol)
        method = "Newton with continuation in beta"
    residual = game.residual(x)
    if residual > 1e-10:
        raise ValueError(
            f"token_level_target: residual {residual:.3g} > 1e-10 at tau={tau}, beta={beta}"
        )
    return FixedPoint(torch.exp(x).numpy(), residual, method)


# ---------------------------------------------------------------------------------------------
# contrastive losses under self-play: online IPO, DPO, SLiC
# ---------------------------------------------------------------------------------------------
def _contrastive_field(loss: str, P, pi_ref, tau):
    """``R(x)_z = sum_y' pi(y') dloss/dh(h(z, y'), P(z > y'))`` with ``pi = exp x`` and
    ``h(z, y') = l(z) - l(y')``, ``l = x - log pi_ref``; dloss/dh by autograd through
    :mod:`course_lib.losses`."""
    fn = CONTRASTIVE[loss]
    P_t = torch.as_tensor(P, dtype=DTYPE)
    log_ref = torch.log(torch.as_tensor(pi_ref, dtype=DTYPE))

    def R(x: torch.Tensor) -> torch.Tensor:
        x = x - torch.logsumexp(x, 0)  # R depends on pi only: invariant to x + c
        ell = x - log_ref
        h = ell[:, None] - ell[None, :]
        with torch.enable_grad():
            h_var = h if h.requires_grad else h.detach().requires_grad_(True)
            (dh,) = torch.autograd.grad(fn(h_var, P_t, tau).sum(), h_var, create_graph=True)
        return (torch.exp(x)[None, :] * dh).sum(1)

    return R


def expected_gradient(loss: str, P, pi_ref, tau, pi) -> np.ndarray:
    """``G = 2 pi ⊙ R``: the exact expected gradient in softmax logits under self-play (the same
    quantity as ``course_lib.tabular.expected_contrastive_gradient`` at ``theta = log pi``)."""
    x = torch.log(torch.as_tensor(np.asarray(pi, dtype=float), dtype=DTYPE))
    R = _contrastive_field(loss, P, pi_ref, validate_tau(tau))
    return (2.0 * torch.exp(x) * R(x)).detach().numpy()


def contrastive_stationary_point(
    loss: str, P, pi_ref, tau, tol: float = 1e-12, slic_steps: int = 5000
) -> FixedPoint:
    """The self-play stationary point of a contrastive loss (``"ipo"``, ``"dpo"``, ``"slic"``).

    Smooth losses (IPO, DPO): Newton on ``R(x) = 0`` (R is invariant to ``x + c``, so the step
    is the least-squares one), from pi*_tau, else by continuation in tau from ``10 tau``;
    ``residual = max_z |R_z|`` (<= 1e-10, else ValueError).

    SLiC: the hinge makes ``R`` piecewise constant, and its self-play stationary points are a
    *set* (wherever 0 lies in the expected subgradient; e.g. for a Bradley-Terry P, every policy
    whose winner sits exactly 1/tau above all the rest in log-ratio). There is no point to
    converge to, and the exact dynamics show it: exact full-batch subgradient descent in the
    logits chatters around a set of kinks (tau = 0.25: the expected gradient stays near 1e-3,
    the iterate keeps drifting), or, for small tau, collapses onto a near-deterministic plateau
    whose mode need not be the winner (the gradient ``2 pi ⊙ R`` of a rare completion is
    exponentially small). What is returned is where that descent from pi_ref stands after
    ``slic_steps`` steps of size ``1/(tau sqrt(1 + t/100))``, with ``residual = max_z
    |2 pi_z R_z|``, the size of the expected gradient there: NOT a certified stationary point.
    """
    if loss not in CONTRASTIVE:
        raise ValueError(f"loss={loss!r} is invalid: one of {', '.join(CONTRASTIVE)}")
    tau = validate_tau(tau)
    pi_ref = np.asarray(pi_ref, dtype=float)
    R = _contrastive_field(loss, P, pi_ref, tau)
    if loss == "slic":
        return _slic_point(R, pi_ref, tau, slic_steps)
    x = torch.log(torch.as_tensor(regularised_nash(P, pi_ref, tau), dtype=DTYPE))
    x, norm = _newton(R, x, tol, lstsq=True)
    method = "Newton on R(x) = 0 from pi*_tau"
    if not norm <= 1e-10:
        # far from pi*_tau (DPO's point can put log-probs near -150 for a Bradley-Terry P):
        # follow the point down from a large tau, where it is near pi_ref
        x = torch.log(torch.as_tensor(pi_ref, dtype=DTYPE))
        for t in np.geomspace(max(10.0, 10.0 * tau), tau, 25):
            x, norm = _newton(_contrastive_field(loss, P, pi_ref, float(t)), x, tol, lstsq=True)
        method = "Newton on R(x) = 0 with continuation in tau"
    if not norm <= 1e-10:
        raise ValueError(f"{loss} stationary point: residual {norm:.3g} > 1e-10 at tau={tau}")
    return FixedPoint(torch.exp(x).detach().numpy(), norm, method)


def _slic_point(R, pi_ref, tau, steps: int) -> FixedPoint:
    x = torch.log(torch.as_tensor(pi_ref, dtype=DTYPE))
    with torch.no_grad():
        for t in range(steps):
            x = x - 2.0 * torch.exp(x) * R(x) / (tau * np.sqrt(1.0 + t / 100.0))
            x = x - torch.logsumexp(x, 0)
        residual = float(torch.max(torch.abs(2.0 * torch.exp(x) * R(x))))
    return FixedPoint(
        torch.exp(x).numpy(),
        residual,
        "plateau of exact subgradient descent (the hinge's stationary set is not a point)",
    )


# ---------------------------------------------------------------------------------------------
# per algorithm
# ---------------------------------------------------------------------------------------------
def destination(algorithm: str, P, pi_ref, tau, beta: float, tree: Tree) -> FixedPoint:
    """The exact destination of ``algorithm`` (a name of :data:`course_lib.online.ALGORITHMS`'s
    online entries) for one prompt, against the preference ``P`` its labels carry.

    Nash-MD-PG's stationary condition is IPO-MD's with the same mixture (Calandriello Prop. 5.1)
    and its opponent comes from the token-level sampler, so both share
    :func:`token_level_target` (pi*_tau at beta = 0).
    """
    if algorithm == "online_ipo":
        return sequence_level_target(P, pi_ref, tau, 0.0)
    if algorithm in ("ipo_md", "nash_md_pg"):
        return token_level_target(P, pi_ref, tau, beta, tree)
    if algorithm == "online_dpo":
        return contrastive_stationary_point("dpo", P, pi_ref, tau)
    if algorithm == "online_slic":
        return contrastive_stationary_point("slic", P, pi_ref, tau)
    raise ValueError(
        f"algorithm={algorithm!r} is invalid: one of online_ipo, ipo_md, nash_md_pg, "
        "online_dpo, online_slic"
    )


def token_vs_sequence(P, pi_ref, tree: Tree, taus, betas) -> list[dict]:
    """``KL(token-level point || sequence-level point)`` of IPO-MD for each (tau, beta), with
    both points' residuals, for one prompt."""
    rows = []
    for tau in taus:
        for beta in betas:
            tok = token_level_target(P, pi_ref, tau, beta, tree)
            seq = sequence_level_target(P, pi_ref, tau, beta)
            rows.append(
                dict(
                    tau=float(tau),
                    beta=float(beta),
                    kl_token_sequence=kl(tok.pi, seq.pi),
                    kl_sequence_token=kl(seq.pi, tok.pi),
                    residual_token=tok.residual,
                    residual_sequence=seq.residual,
                )
            )
    return rows
