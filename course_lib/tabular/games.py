"""The KL-regularised preference game on a finite set of responses, solved exactly.

Notation (notes/paper.md §1): ``P[i, j] = P(y_i > y_j)``; a policy is a probability vector; the win
rate of response ``y`` against a policy ``pi`` is ``P(y > pi) = (P @ pi)[y]``; ``tau > 0`` is the
KL coefficient; ``beta`` in [0, 1] is the weight of ``pi_ref`` in the geometric mixture.

* :func:`regularised_nash` -- the unique ``pi`` with ``pi ∝ pi_ref exp(P(. > mix)/tau)``,
  ``mix = geometric_mixture(pi, pi_ref, beta)`` (Calandriello et al. eq. 12 for beta = 0,
  eq. 13 for beta > 0), solved to 1e-12.
* :func:`best_response`, :func:`offline_ipo_solution` -- the Gibbs closed forms.
* :func:`exploitability`, :func:`regularised_exploitability`, :func:`von_neumann_winner`.
* :func:`nash_md`, :func:`mirror_descent` -- exact tabular iterates of Nash-MD (NLHF §5) and of
  plain online mirror descent, whose opponent is the current policy instead of the mixture.

Everything works in log space, so zero probabilities (responses outside ``pi_ref``'s support) are
handled exactly: they keep probability 0.
"""

from __future__ import annotations

import numbers
from typing import NamedTuple

import numpy as np
from scipy.optimize import linprog

from course_lib.tabular.preferences import (
    validate_beta,
    validate_distribution,
    validate_preference_matrix,
    validate_tau,
)

__all__ = [
    "NashSolution",
    "best_response",
    "exploitability",
    "geometric_mixture",
    "kl",
    "mirror_descent",
    "nash_md",
    "offline_ipo_solution",
    "regularised_exploitability",
    "regularised_nash",
    "von_neumann_winner",
    "win_rates",
]


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------
def _log(p: np.ndarray) -> np.ndarray:
    """log with log(0) = -inf and no warning."""
    out = np.full(p.shape, -np.inf)
    pos = p > 0
    out[pos] = np.log(p[pos])
    return out


def logsumexp(z: np.ndarray) -> float:
    """log sum exp(z) for a vector that may hold -inf (a plain-numpy version: scipy's general one
    costs tens of microseconds per call, which dominates the tabular iterations)."""
    m = np.max(z)
    return float(m + np.log(np.sum(np.exp(z - m))))


def _softmax(z: np.ndarray) -> np.ndarray:
    """softmax of a vector that may hold -inf (those entries get exactly 0)."""
    m = np.max(z)
    e = np.exp(z - m)
    return e / e.sum()


def _check_pair(P, pi, pi_name="pi"):
    P = validate_preference_matrix(P)
    pi = validate_distribution(pi, name=pi_name, n=P.shape[0])
    return P, pi


# --------------------------------------------------------------------------------------------
# basic quantities
# --------------------------------------------------------------------------------------------
def kl(p, q) -> float:
    """``KL(p || q) = sum_y p(y) log(p(y)/q(y))``, with ``0 log 0 = 0``; ``inf`` when ``p``
    puts mass where ``q`` has none."""
    p = validate_distribution(p, name="p")
    q = validate_distribution(q, name="q", n=p.size)
    pos = p > 0
    if np.any(q[pos] == 0):
        return float("inf")
    return float(max(np.sum(p[pos] * (np.log(p[pos]) - np.log(q[pos]))), 0.0))


def geometric_mixture(pi, pi_ref, beta) -> np.ndarray:
    """The geometric mixture ``pi^(1-beta) pi_ref^beta / Z`` (notes/paper.md §1.6; Calandriello §5,
    NLHF §5). beta = 0 gives ``pi``, beta = 1 gives ``pi_ref``.

    Computed in log space. A response where ``pi`` is 0 (and beta < 1) or where ``pi_ref`` is 0
    (and beta > 0) gets 0. Raises ``ValueError`` if the two supports do not meet.
    """
    beta = validate_beta(beta)
    pi = validate_distribution(pi, name="pi")
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=pi.size)
    return _mixture(_log(pi), _log(pi_ref), beta)


def _mixture(log_pi: np.ndarray, log_ref: np.ndarray, beta: float) -> np.ndarray:
    # (1-beta)*log_pi with beta = 1 must ignore pi entirely (0 * -inf would be nan), and likewise
    # beta * log_ref with beta = 0.
    z = np.zeros_like(log_pi)
    if beta < 1.0:
        z = z + (1.0 - beta) * log_pi
    if beta > 0.0:
        z = z + beta * log_ref
    if not np.any(np.isfinite(z)):
        raise ValueError("pi and pi_ref have disjoint supports: their geometric mixture is empty")
    return _softmax(z)


def win_rates(P, pi) -> np.ndarray:
    """The vector of win rates ``P(y > pi) = sum_y' pi(y') P(y > y')`` (notes/paper.md §1.2)."""
    P, pi = _check_pair(P, pi)
    return P @ pi


def best_response(P, pi_ref, tau, opponent) -> np.ndarray:
    """The best response to a fixed opponent in the regularised game (notes/paper.md §1.4):
    ``argmax_pi P(pi > opponent) - tau KL(pi || pi_ref) ∝ pi_ref exp(P(. > opponent)/tau)``
    (Gibbs variational principle)."""
    tau = validate_tau(tau)
    P, opponent = _check_pair(P, opponent, "opponent")
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    return _softmax(_log(pi_ref) + (P @ opponent) / tau)


def offline_ipo_solution(P, pi_ref, mu, tau) -> np.ndarray:
    """Offline IPO's optimum for pairs drawn from ``mu`` (Azar et al. §4-5, notes/paper.md §2.2):
    ``pi*(y) ∝ pi_ref(y) exp(P(y > mu)/tau)``. It depends on the data policy ``mu``; only when
    ``mu`` is the policy itself (online IPO) is it the Nash equilibrium."""
    tau = validate_tau(tau)
    P, mu = _check_pair(P, mu, "mu")
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    return _softmax(_log(pi_ref) + (P @ mu) / tau)


def exploitability(P, pi) -> float:
    """``max_y P(y > pi) - 1/2`` (>= 0, because the pi-average of the win rates is 1/2). It is 0
    exactly when ``pi`` is a von Neumann winner, an equilibrium of the unregularised game."""
    P, pi = _check_pair(P, pi)
    return float(np.max(P @ pi) - 0.5)


def regularised_exploitability(P, pi, pi_ref, tau) -> float:
    """The gap ``max_pi' P_tau(pi' > pi) - 1/2`` of the regularised game (NLHF §3), with
    ``P_tau(pi' > pi) = P(pi' > pi) - tau KL(pi', pi_ref) + tau KL(pi, pi_ref)``.

    In closed form ``tau log sum_y pi_ref(y) exp(P(y > pi)/tau) + tau KL(pi, pi_ref) - 1/2``;
    it is >= 0 and equals 0 exactly at the regularised Nash equilibrium.
    """
    tau = validate_tau(tau)
    P, pi = _check_pair(P, pi)
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    value = tau * logsumexp(_log(pi_ref) + (P @ pi) / tau) + tau * kl(pi, pi_ref) - 0.5
    return float(value)


def von_neumann_winner(P) -> np.ndarray:
    """An unregularised equilibrium (von Neumann winner, maximal lottery; NLHF §3,
    notes/paper.md §1.4) by linear programming: maximise ``v`` subject to ``P(pi > y') >= v``
    for every ``y'`` and ``pi`` in the simplex. The optimal value is 1/2 for any antisymmetric
    ``P``.

    When the winner is not unique the solver returns one of them (a vertex of the optimal set).
    The LP is solved by HiGHS to about 1e-9; the result is clipped at 0 and renormalised.
    """
    P = validate_preference_matrix(P)
    n = P.shape[0]
    # variables (pi_1..pi_n, v); minimise -v; constraints v - (P^T pi)_j <= 0, sum pi = 1
    c = np.zeros(n + 1)
    c[-1] = -1.0
    A_ub = np.hstack([-P.T, np.ones((n, 1))])
    b_ub = np.zeros(n)
    A_eq = np.hstack([np.ones((1, n)), np.zeros((1, 1))])
    bounds = [(0, None)] * n + [(None, None)]
    res = linprog(c, A_ub=A_ub, b_ub=b_ub, A_eq=A_eq, b_eq=[1.0], bounds=bounds, method="highs")
    if res.status != 0:  # cannot happen for a valid P: the LP is feasible and bounded
        raise RuntimeError(f"linear program failed: {res.message}")
    pi = np.clip(res.x[:n], 0.0, None)
    return pi / pi.sum()


# --------------------------------------------------------------------------------------------
# the regularised equilibrium
# --------------------------------------------------------------------------------------------
class NashSolution(NamedTuple):
    """What :func:`regularised_nash` returns with ``return_residual=True``.

    ``pi`` is the policy; ``residual`` is ``max_y |pi(y) - T(pi)(y)|`` with
    ``T(pi) ∝ pi_ref exp(P(. > mix(pi))/tau)``, recomputed from the returned ``pi``.
    Unpacks as ``pi, residual = regularised_nash(..., return_residual=True)``.
    """

    pi: np.ndarray
    residual: float


# Below this size a dense LU of the Newton system costs less than the Python loop of CG steps.
_KRYLOV_MIN_N = 200


class _Game:
    """The fixed-point map on the support S of pi_ref, in log coordinates x = log pi (up to a
    constant): T(x) = log softmax(log pi_ref + P m(x) / tau), with the mixture
    m(x) = softmax((1-b) x + b log pi_ref).
    """

    def __init__(self, P, log_ref, tau, beta):
        self.P, self.log_ref, self.tau, self.beta = P, log_ref, tau, beta
        self.dense = P.shape[0] < _KRYLOV_MIN_N  # set for good once CG runs out of its budget

    def mix(self, x):
        return _softmax((1.0 - self.beta) * x + self.beta * self.log_ref)

    def target(self, m):
        u = self.log_ref + (self.P @ m) / self.tau
        return u - logsumexp(u)

    def residual(self, x):
        """F(x) = x - T(x), in log space (zero exactly at the fixed point)."""
        return x - self.target(self.mix(x))

    def margin(self, v):
        """K v with K = P - 1/2, the antisymmetric part of P (K^T = -K because P + P^T = 1)."""
        return self.P @ v - 0.5 * v.sum()

    def newton_step(self, x, rtol: float):
        """The Newton step dx solving J dx = -F, J = I - dT/dx, through a system that is the
        identity minus an antisymmetric matrix.

        dT/dx = (I - 1 s^T) c P (diag m - m m^T), with s = exp(T(x)), c = (1 - beta)/tau and
        diag m - m m^T = D Pi D, where D = diag(q), q = sqrt(m) and Pi = I - q q^T. The change
        of the mixture v = (diag m - m m^T) dx sums to 0, so P v = K v; multiplying J dx = -F
        by diag m - m m^T and writing v = D w gives

            (I - c Pi S Pi) w = -Pi (q * F),   S = D K D antisymmetric,
            dx = c (I - 1 s^T) K v - F.

        The eigenvalues of I - c Pi S Pi are 1 + i omega with |omega| <= rho = c ||Pi S Pi||
        <= c/2 (|K| <= 1/2 entrywise), so the system is never singular and CG on its normal
        equations needs about log(1/rtol) / log((sqrt(1 + rho^2) + 1)/(sqrt(1 + rho^2) - 1))
        steps of two products with P each, instead of a dense O(n^3) solve. rho is small
        unless tau is small (0.3 at tau = 0.1 for a random 1000-response game); when CG runs
        out of its budget of n / 10 steps, the same system is solved densely from then on.
        """
        m = self.mix(x)
        t = self.target(m)
        F = x - t
        c = (1.0 - self.beta) / self.tau
        q = np.sqrt(m)

        def project(w):
            return w - q * (q @ w)

        def skew(w):  # c Pi S Pi w
            return c * project(q * self.margin(q * project(w)))

        b = -project(q * F)
        w = None
        if not self.dense:  # B = I - c Pi S Pi, B^T = I + c Pi S Pi
            w = _cgls(lambda w: w - skew(w), lambda w: w + skew(w), b, rtol, x.size // 10)
            self.dense = w is None  # n / 10 CG steps cost about one LU; later steps go to LU
        if w is None:
            S = q[:, None] * (self.P - 0.5) * q[None, :]
            Sq = S @ q  # Pi S Pi = S + q (S q)^T - (S q) q^T, since q^T S = -(S q)^T
            w = np.linalg.solve(np.eye(x.size) - c * (S + np.outer(q, Sq) - np.outer(Sq, q)), b)
        u = c * self.margin(q * w)
        return F, u - np.exp(t) @ u - F


def _cgls(B, B_t, b, rtol: float, max_steps: int):
    """Conjugate gradients on the normal equations B^T B w = B^T b (CGLS; Hestenes & Stiefel
    1952; Björck, Numerical Methods for Least Squares Problems, 1996, ch. 7). For B = I - A with
    A antisymmetric, B^T B = I + A^T A is symmetric positive definite, which plain CG needs.
    Returns w with ||b - B w|| <= rtol ||b||, or None if that takes more than max_steps steps."""
    w, r = np.zeros_like(b), b.copy()
    s = B_t(r)
    p, gamma = s, s @ s
    goal = (rtol * np.linalg.norm(b)) ** 2
    for _ in range(max_steps):
        if r @ r <= goal:
            return w
        Bp = B(p)
        alpha = gamma / (Bp @ Bp)
        w = w + alpha * p
        r = r - alpha * Bp
        s = B_t(r)
        gamma, gamma_old = s @ s, gamma
        p = s + (gamma / gamma_old) * p
    return w if r @ r <= goal else None


def _extragradient(game: _Game, x, steps: int):
    """Entropy-regularised extragradient ("predictive update", Cen, Wei & Chi, NeurIPS 2021) for
    the beta = 0 game, symmetric form: with eta <= 1/(tau + 2 max|P - 1/2|),

        xbar    = (1 - eta tau) x + eta tau log pi_ref + eta P pi(x)
        x_next  = (1 - eta tau) x + eta tau log pi_ref + eta P pi(xbar)

    (normalised). It converges linearly, at rate about (1 - eta tau) per step, for any tau > 0.
    """
    a = float(np.max(np.abs(game.P - 0.5)))
    eta = 1.0 / (game.tau + 2.0 * a)
    et = eta * game.tau
    for _ in range(steps):
        base = (1.0 - et) * x + et * game.log_ref
        xbar = base + eta * (game.P @ _softmax(x))
        xbar -= logsumexp(xbar)
        x = base + eta * (game.P @ _softmax(xbar))
        x -= logsumexp(x)
    return x


def _newton(game: _Game, x, tol: float, max_steps: int = 40):
    """Damped Newton on F(x) = 0. Returns (x, converged). Gives up (returns the best point so far)
    when a backtracking step cannot reduce ||F||, so a caller can fall back to extragradient."""
    F = game.residual(x)
    norm = np.max(np.abs(F))
    for _ in range(max_steps):
        if norm <= tol:
            return x, True
        try:
            # inexact Newton (Dembo, Eisenstat & Steihaug 1982): a relative linear residual of
            # O(||F||) keeps the quadratic convergence; ||F||^2 also keeps the last step as
            # accurate as an exact solve, so the final residual matches the dense solver's
            _, dx = game.newton_step(x, rtol=min(max(norm**2, 1e-14), 1e-2))
        except np.linalg.LinAlgError:
            return x, False
        for step in (1.0, 0.5, 0.25, 0.125, 0.0625):
            x_new = x + step * dx
            F_new = game.residual(x_new)
            norm_new = np.max(np.abs(F_new))
            if np.isfinite(norm_new) and norm_new < norm:
                break
        else:
            return x, norm <= tol
        x, norm = x_new - logsumexp(x_new), norm_new
    return x, norm <= tol


def regularised_nash(
    P,
    pi_ref,
    tau,
    beta: float = 0.0,
    tol: float = 1e-12,
    max_iter: int = 200_000,
    return_residual: bool = False,
):
    """The regularised Nash equilibrium (beta = 0) or the IPO-MD / Nash-MD-PG stationary point
    (beta > 0): the unique ``pi`` with

        pi(y) ∝ pi_ref(y) exp( P(y > mix) / tau ),   mix = geometric_mixture(pi, pi_ref, beta)

    (Calandriello et al. eq. 12 and eq. 13; NLHF Prop. 1 for existence and uniqueness at
    beta = 0). Responses outside ``pi_ref``'s support get probability 0.

    Method. For beta < 1 the mixture itself solves the beta = 0 problem at temperature
    ``tau / (1 - beta)`` (one line of algebra: log mix = (1-beta) log pi + beta log pi_ref + c;
    Calandriello Prop. 5.2). That beta = 0 problem is solved by damped Newton on the log-space
    residual, started at ``log pi_ref``; whenever Newton stalls (it is not globally convergent
    for small tau), chunks of growing length of the entropy-regularised extragradient method
    (Cen, Wei & Chi 2021), which converges linearly for every tau > 0, bring the iterate closer
    and Newton is tried again. The answer is then polished by Newton **on the beta equation
    itself**, so the reported residual is the beta equation's, whatever the route. beta = 1 is
    closed form: ``best_response(P, pi_ref, tau, pi_ref)``.

    Cost. Each Newton system is rewritten as identity minus an antisymmetric matrix (see
    ``_Game.newton_step``) and, when pi_ref's support has 200 responses or more, solved by
    conjugate gradients to a relative residual ``||F||^2`` (inexact Newton), a few dozen
    products with ``P`` instead of a dense O(n^3) solve; on smaller supports, or once CG needs
    more than n / 10 steps (small tau), by a dense LU. At tau = 0.1, 1000 responses take about
    15 ms of CPU time on one core, against about 160 ms for a dense solve at every step
    (``benchmarks/bench_nash.py``).

    Args:
        tol: target for ``max |log pi - log T(pi)|`` on the support, which bounds the max-norm
            probability residual.
        max_iter: budget of extragradient steps; ``RuntimeError`` if it is exhausted.
        return_residual: if True return a :class:`NashSolution` ``(pi, residual)`` where
            residual = ``max_y |pi(y) - T(pi)(y)|``, else just ``pi``.
    """
    tau = validate_tau(tau)
    beta = validate_beta(beta)
    P = validate_preference_matrix(P)
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    if not (isinstance(tol, numbers.Real) and tol > 0):
        raise ValueError(f"tol must be a number > 0, got {tol!r}")
    if not (isinstance(max_iter, numbers.Integral) and max_iter >= 1):
        raise ValueError(f"max_iter must be a positive integer, got {max_iter!r}")

    S = np.flatnonzero(pi_ref > 0)
    P_S = P if S.size == P.shape[0] else P[np.ix_(S, S)]
    log_ref = np.log(pi_ref[S])

    if beta == 1.0:
        x = log_ref + (P_S @ pi_ref[S]) / tau
        x -= logsumexp(x)
    else:
        # 1. the mixture solves the beta = 0 game at temperature tau / (1 - beta)
        base = _Game(P_S, log_ref, tau / (1.0 - beta), 0.0)
        z, converged, used, chunk = log_ref.copy(), False, 0, 16
        while True:
            z, converged = _newton(base, z, tol=tol)
            if converged or used >= max_iter:
                break
            n_steps = min(chunk, max_iter - used)
            z = _extragradient(base, z, n_steps)
            used += n_steps
            chunk *= 2
        # 2. pi = best response (at tau) to that mixture; 3. Newton on the beta equation itself
        x = log_ref + (P_S @ np.exp(z)) / tau
        x -= logsumexp(x)
        game = _Game(P_S, log_ref, tau, beta)
        x, converged = _newton(game, x, tol=tol)
        if not converged and np.max(np.abs(game.residual(x))) > max(tol, 1e-10):
            raise RuntimeError(
                f"regularised_nash did not reach tol={tol} within max_iter={max_iter} "
                f"(residual {np.max(np.abs(game.residual(x))):.3g}); raise max_iter"
            )

    pi = np.zeros(P.shape[0])
    pi[S] = np.exp(x - logsumexp(x))
    if not return_residual:
        return pi
    mix = _mixture(_log(pi), _log(pi_ref), beta)
    T = _softmax(_log(pi_ref) + (P @ mix) / tau)
    return NashSolution(pi=pi, residual=float(np.max(np.abs(pi - T))))


# --------------------------------------------------------------------------------------------
# mirror descent
# --------------------------------------------------------------------------------------------
def _step_sizes(eta, steps: int, tau: float, name: str, require_mix: bool) -> np.ndarray:
    if callable(eta):
        etas = [eta(t) for t in range(steps)]
    else:
        etas = [eta] * steps
    out = np.empty(steps)
    for t, e in enumerate(etas):
        if isinstance(e, bool) or not isinstance(e, numbers.Real) or not np.isfinite(e) or e <= 0:
            raise ValueError(f"{name}: step size eta_{t} = {e!r}; it must be a finite number > 0")
        if require_mix and e * tau > 1.0 + 1e-12:
            raise ValueError(
                f"{name}: eta_{t} * tau = {e!r} * {tau!r} = {e * tau!r} > 1; the mixture "
                f"weight eta_t * tau on pi_ref must lie in [0, 1]"
            )
        out[t] = min(e, 1.0 / tau) if require_mix else e
    return out


def _check_steps(steps):
    if isinstance(steps, bool) or not isinstance(steps, numbers.Integral) or steps < 0:
        raise ValueError(f"steps must be an integer >= 0, got {steps!r}")
    return int(steps)


def nash_md(P, pi_ref, tau, eta, steps: int, pi0=None) -> np.ndarray:
    """Exact tabular Nash-MD (NLHF §5, Theorem 1; notes/paper.md §3.3):

        pi_t^mu   ∝ pi_t^(1 - eta_t tau) pi_ref^(eta_t tau)           (the regularised opponent)
        pi_{t+1}  ∝ pi_t^mu exp( eta_t P(. > pi_t^mu) )

    ``eta`` is a number or a callable ``t -> eta_t`` (t = 0, 1, ...), e.g.
    ``lambda t: 2 / (tau * (t + 2))``, for which NLHF Theorem 1 gives
    ``KL(pi*_tau, pi_T) <= 8 / (tau^2 (T + 1))``. Every ``eta_t tau`` must lie in (0, 1].
    Starts from ``pi0`` (default ``pi_ref``). Returns all iterates, shape ``(steps + 1, n)``.
    """
    tau = validate_tau(tau)
    P = validate_preference_matrix(P)
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    steps = _check_steps(steps)
    pi0 = pi_ref if pi0 is None else validate_distribution(pi0, name="pi0", n=P.shape[0])
    etas = _step_sizes(eta, steps, tau, "nash_md", require_mix=True)
    log_ref = _log(pi_ref)
    out = np.empty((steps + 1, P.shape[0]))
    out[0] = pi0
    log_pi = _log(pi0)
    for t, e in enumerate(etas):
        mix = _mixture(log_pi, log_ref, e * tau)
        z = _log(mix) + e * (P @ mix)
        log_pi = z - logsumexp(z)
        out[t + 1] = np.exp(log_pi)
    return out


def mirror_descent(P, pi_ref, tau, eta, steps: int, pi0=None) -> np.ndarray:
    """Plain online mirror descent on the regularised game, *without* the mixture: the opponent
    is the current policy pi_t (notes/paper.md §3.3, "difference from plain online mirror descent"):

        pi_{t+1} ∝ pi_t^(1 - eta_t tau) pi_ref^(eta_t tau) exp( eta_t P(. > pi_t) )

    Its fixed point is the regularised equilibrium (the limit of Nash-MD with decreasing steps),
    but with a constant step it can orbit a cyclic preference instead of converging.
    ``tau = 0`` (allowed here) is unregularised multiplicative-weights self-play, which spirals
    away from the equilibrium. Returns all iterates, shape ``(steps + 1, n)``.
    """
    tau = _nonneg_tau(tau)
    P = validate_preference_matrix(P)
    pi_ref = validate_distribution(pi_ref, name="pi_ref", n=P.shape[0])
    steps = _check_steps(steps)
    pi0 = pi_ref if pi0 is None else validate_distribution(pi0, name="pi0", n=P.shape[0])
    etas = _step_sizes(eta, steps, tau, "mirror_descent", require_mix=tau > 0)
    log_ref = _log(pi_ref)
    out = np.empty((steps + 1, P.shape[0]))
    out[0] = pi0
    log_pi = _log(pi0)
    for t, e in enumerate(etas):
        prior = log_pi if tau == 0 else _log(_mixture(log_pi, log_ref, e * tau))
        z = prior + e * (P @ np.exp(log_pi))
        log_pi = z - logsumexp(z)
        out[t + 1] = np.exp(log_pi)
    return out


def _nonneg_tau(tau) -> float:
    if isinstance(tau, numbers.Real) and not isinstance(tau, bool) and tau == 0:
        return 0.0
    return validate_tau(tau)
