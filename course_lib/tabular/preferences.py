"""Preference matrices over a finite set of responses, and the checks every function runs on them.

A preference matrix ``P`` holds ``P[i, j] = P(y_i > y_j)``, the probability that a random rater
prefers response ``y_i`` to ``y_j`` (NLHF §2; Calandriello et al. §2). It must be *antisymmetric*
in the probability sense, ``P + P^T = 1``, hence ``P[i, i] = 1/2`` (notes/paper.md §1.2).

Builders here:

* :func:`bradley_terry` -- ``P[i, j] = sigmoid(s_i - s_j)``, every preference a reward can express;
* :func:`dice_preference` and :data:`NONTRANSITIVE_DICE` -- a cycle no reward can express;
* :func:`rater_type`, :func:`mixture_preference`, :func:`three_rater_types` -- a population of
  raters who each care about one pair (NLHF §3.2; notes/paper.md §5.4);
* :func:`random_preference` -- a seeded random antisymmetric matrix;
* :func:`fit_bradley_terry` -- the maximum-likelihood Bradley-Terry fit to any ``P``, and a report
  of what the fit loses.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit, log_expit

from course_lib import validation as check

__all__ = [
    "NONTRANSITIVE_DICE",
    "BradleyTerryFit",
    "bradley_terry",
    "dice_preference",
    "fit_bradley_terry",
    "mixture_preference",
    "random_preference",
    "rater_type",
    "three_rater_types",
    "validate_beta",
    "validate_distribution",
    "validate_preference_matrix",
    "validate_tau",
]

# Tolerances: inputs may come from float32 models or from rounding; the validators accept small
# deviations and return an exactly consistent array (antisymmetric P, distribution summing to 1).
P_ATOL = 1e-6
DIST_ATOL = 1e-6


# --------------------------------------------------------------------------------------------
# validation
# --------------------------------------------------------------------------------------------
def _fmt(value) -> str:
    """A number as a short readable string (numpy scalars would print as np.float64(...))."""
    try:
        return f"{float(value):.10g}"
    except (TypeError, ValueError):
        return repr(value)


def _scalar(value, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        arr = np.asarray(value)
        if arr.ndim != 0 or not np.issubdtype(arr.dtype, np.number) or arr.dtype == bool:
            raise ValueError(f"{name} must be a real number, got {value!r}")
        value = arr.item()
    value = float(value)
    if not np.isfinite(value):
        raise ValueError(f"{name} must be finite, got {_fmt(value)}")
    return value


# tau and beta are checked by the course's one validation module, shared with the trainers.
validate_tau = check.tau
validate_beta = check.beta


def validate_distribution(pi, name: str = "pi", n: int | None = None, atol: float = DIST_ATOL):
    """Check a probability vector: 1-D, finite, non-negative, summing to 1 within ``atol``.

    Returns a float64 copy divided by its sum, so it sums to 1 to rounding. ``n``, if given, is
    the required length. Raises ``ValueError`` naming the offending entry or the sum.
    """
    arr = np.asarray(pi, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D array, got shape {arr.shape}")
    if n is not None and arr.size != n:
        raise ValueError(f"{name} has {arr.size} entries, expected {n} (one per response)")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        i = int(bad[0])
        raise ValueError(
            f"{name}[{i}] = {_fmt(arr[i])} is not finite; probabilities must be finite"
        )
    bad = np.flatnonzero(arr < 0)
    if bad.size:
        i = int(bad[0])
        raise ValueError(f"{name}[{i}] = {_fmt(arr[i])} is negative; probabilities must be >= 0")
    total = float(arr.sum())
    if abs(total - 1.0) > atol:
        raise ValueError(
            f"{name} sums to {_fmt(total)}; a distribution must sum to 1 (within {atol})"
        )
    return arr / total


def validate_preference_matrix(P, name: str = "P", atol: float = P_ATOL) -> np.ndarray:
    """Check a preference matrix and return it as an exactly antisymmetric float64 array.

    Requirements (notes/paper.md §1.2): square, finite, every entry in [0, 1], and
    ``P[i, j] + P[j, i] = 1`` within ``atol`` (so ``P[i, i] = 1/2``). The returned matrix is
    ``(P + 1 - P^T) / 2``, which moves entries by at most ``atol / 2`` and makes later algebra
    (``E_pi[P(y > pi)] = 1/2``) exact to rounding. Raises ``ValueError`` naming the entry.
    """
    arr = np.asarray(P, dtype=float)
    if arr.ndim != 2 or arr.shape[0] != arr.shape[1] or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty square matrix, got shape {arr.shape}")
    # min and max catch nan, inf and entries outside [0, 1] in two passes; the searches for the
    # offending entry allocate n x n index arrays, so they run only when there is one
    if not 0.0 <= arr.min() <= arr.max() <= 1.0:
        bad = np.argwhere(~np.isfinite(arr))
        if bad.size:
            i, j = map(int, bad[0])
            raise ValueError(f"{name}[{i}, {j}] = {_fmt(arr[i, j])} is not finite")
        i, j = map(int, np.argwhere((arr < 0) | (arr > 1))[0])
        raise ValueError(
            f"{name}[{i}, {j}] = {_fmt(arr[i, j])} is not a probability; entries must lie in [0, 1]"
        )
    # sym = (P + 1 - P^T) / 2 takes one pass over P^T (the slow, strided one); then
    # P - sym = (P + P^T - 1) / 2 measures the deviation without a second one
    sym = arr + 1.0
    sym -= arr.T
    sym *= 0.5
    dev = arr - sym
    np.abs(dev, out=dev)
    if 2.0 * dev.max() > atol:  # recomputed exactly, to confirm and to name the entry
        dev = np.abs(arr + arr.T - 1.0)
        if dev.max() > atol:
            i, j = map(int, np.unravel_index(np.argmax(dev), dev.shape))
            if i == j:
                raise ValueError(
                    f"{name}[{i}, {i}] = {_fmt(arr[i, i])}; the diagonal must be 1/2 "
                    f"(P(y > y) = 1/2 because P + P^T = 1)"
                )
            raise ValueError(
                f"{name}[{i}, {j}] + {name}[{j}, {i}] = {_fmt(arr[i, j])} + {_fmt(arr[j, i])} = "
                f"{_fmt(arr[i, j] + arr[j, i])}; a preference matrix needs P + P^T = 1 "
                f"(within {atol})"
            )
    return sym


# --------------------------------------------------------------------------------------------
# builders
# --------------------------------------------------------------------------------------------
def bradley_terry(scores) -> np.ndarray:
    """Bradley-Terry preferences ``P[i, j] = sigmoid(s_i - s_j)`` (notes/paper.md §1.3).

    ``scores`` are rewards or Elo-style log-strengths; any finite real vector.
    """
    s = np.asarray(scores, dtype=float)
    if s.ndim != 1 or s.size == 0:
        raise ValueError(f"scores must be a non-empty 1-D array, got shape {s.shape}")
    if not np.all(np.isfinite(s)):
        i = int(np.flatnonzero(~np.isfinite(s))[0])
        raise ValueError(f"scores[{i}] = {_fmt(s[i])} is not finite")
    return expit(s[:, None] - s[None, :])


# Three dice with P(A > B) = P(B > C) = P(C > A) = 5/9 (notes/paper.md §5.5).
NONTRANSITIVE_DICE: dict[str, tuple[int, ...]] = {
    "A": (2, 2, 4, 4, 9, 9),
    "B": (1, 1, 6, 6, 8, 8),
    "C": (3, 3, 5, 5, 7, 7),
}


def dice_preference(dice: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """``P[i, j] = Pr(die i shows more than die j) + Pr(tie) / 2`` for fair dice.

    ``dice`` is a list of face lists (any lengths); default :data:`NONTRANSITIVE_DICE`
    in the order A, B, C. Computed by exact enumeration of all face pairs.
    """
    if dice is None:
        dice = list(NONTRANSITIVE_DICE.values())
    faces = [np.asarray(d, dtype=float) for d in dice]
    for k, f in enumerate(faces):
        if f.ndim != 1 or f.size == 0 or not np.all(np.isfinite(f)):
            raise ValueError(f"die {k} must be a non-empty list of finite faces, got {dice[k]!r}")
    n = len(faces)
    P = np.empty((n, n))
    for i in range(n):
        for j in range(n):
            diff = faces[i][:, None] - faces[j][None, :]
            P[i, j] = np.mean(diff > 0) + 0.5 * np.mean(diff == 0)
    return P


def rater_type(n: int, strict_pairs: Sequence[tuple[int, int]]) -> np.ndarray:
    """One deterministic rater type: prefers ``w`` to ``l`` for each ``(w, l)`` in
    ``strict_pairs`` and is indifferent (probability 1/2) on every other pair."""
    if not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    P = np.full((n, n), 0.5)
    for w, l in strict_pairs:
        if not (0 <= w < n and 0 <= l < n) or w == l:
            raise ValueError(f"pair ({w}, {l}) must name two different responses in 0..{n - 1}")
        P[w, l], P[l, w] = 1.0, 0.0
    return P


def mixture_preference(matrices: Sequence, weights) -> np.ndarray:
    """The preference of a population: ``sum_k w_k P_k`` for rater types ``P_k`` in
    proportions ``w`` (a distribution). A mixture of antisymmetric matrices is antisymmetric."""
    mats = [validate_preference_matrix(M, name=f"matrices[{k}]") for k, M in enumerate(matrices)]
    if not mats:
        raise ValueError("matrices must contain at least one preference matrix")
    shapes = {M.shape for M in mats}
    if len(shapes) != 1:
        raise ValueError(f"all rater matrices must have the same shape, got {sorted(shapes)}")
    w = validate_distribution(weights, name="weights", n=len(mats))
    return np.einsum("k,kij->ij", w, np.stack(mats))


def three_rater_types(eps: float) -> np.ndarray:
    """NLHF §3.2's population of three rater types (notes/paper.md §5.4), responses y1, y2, y3:

    * type 1, proportion 1/3 - eps, strictly prefers y2 to y1;
    * type 2, proportion 1/3 + eps/2, strictly prefers y1 to y3;
    * type 3, proportion 1/3 + eps/2, strictly prefers y3 to y2;

    each indifferent on the other pairs. The von Neumann winner is
    (1/3 + eps/2, 1/3 + eps/2, 1/3 - eps); ``-2/3 < eps < 1/3`` keeps the proportions positive.
    """
    eps = _scalar(eps, "eps")
    if not -2.0 / 3.0 < eps < 1.0 / 3.0:
        raise ValueError(f"eps must lie in (-2/3, 1/3) so every proportion is > 0, got {_fmt(eps)}")
    types = [rater_type(3, [(1, 0)]), rater_type(3, [(0, 2)]), rater_type(3, [(2, 1)])]
    return mixture_preference(types, [1 / 3 - eps, 1 / 3 + eps / 2, 1 / 3 + eps / 2])


def random_preference(n: int, seed: int = 0, low: float = 0.0, high: float = 1.0) -> np.ndarray:
    """A random antisymmetric preference matrix: ``P[i, j] ~ U(low, high)`` for ``i < j``,
    ``P[j, i] = 1 - P[i, j]``, diagonal 1/2. Seeded, so the same ``seed`` gives the same ``P``."""
    if not isinstance(n, numbers.Integral) or n < 1:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    if not 0.0 <= low <= high <= 1.0:
        raise ValueError(f"need 0 <= low <= high <= 1, got low={low!r}, high={high!r}")
    rng = np.random.default_rng(seed)
    upper = np.triu(rng.uniform(low, high, size=(n, n)), k=1)
    lower = np.tril(1.0 - upper.T, k=-1)
    return upper + lower + 0.5 * np.eye(n)


# --------------------------------------------------------------------------------------------
# Bradley-Terry fit
# --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class BradleyTerryFit:
    """Result of :func:`fit_bradley_terry`.

    Attributes:
        scores: fitted rewards, centred to mean 0 (only differences are identified).
        P_fit: ``sigmoid(s_i - s_j)``.
        max_abs_error: ``max |P - P_fit|``.
        mean_kl: average over unordered pairs of ``KL(Bernoulli(P_ij) || Bernoulli(P_fit_ij))``,
            the extra log-loss per comparison that the fit pays (0 iff P is Bradley-Terry).
        flipped_pairs: pairs ``(i, j)`` with ``P_ij > 1/2`` where the fit says ``P_fit_ij <= 1/2``
            (the majority preference is reversed or erased).
    """

    scores: np.ndarray
    P_fit: np.ndarray
    max_abs_error: float
    mean_kl: float
    flipped_pairs: list[tuple[int, int]]


def _binary_kl(p, q):
    p = np.clip(p, 0.0, 1.0)
    out = np.zeros_like(p)
    for a, b in ((p, q), (1 - p, 1 - q)):
        mask = a > 0
        out[mask] += a[mask] * (np.log(a[mask]) - np.log(b[mask]))
    return out


def fit_bradley_terry(P, tol: float = 1e-10) -> BradleyTerryFit:
    """Maximum-likelihood Bradley-Terry scores for a preference matrix, every pair weighted equally.

    Minimises the expected log-loss ``-sum_{i<j} [P_ij log s(d_ij) + P_ji log s(-d_ij)]`` with
    ``d_ij = s_i - s_j`` and ``s`` the sigmoid; this is the population version of the usual
    reward-model loss (Bradley & Terry 1952; notes/paper.md §2.1) with comparisons drawn uniformly
    over pairs. The loss is convex in the scores. On the optimum the gradient condition
    ``sum_j sigmoid(s_i - s_j) = sum_j P_ij`` says the fit matches every response's total win
    probability (its Borda score), so a cyclic ``P`` whose rows sum to the same value is fitted
    by equal scores: every preference is erased. If some response wins every comparison with
    probability 1 the maximum-likelihood scores are infinite; the optimiser then stops at large
    finite scores.
    """
    P = validate_preference_matrix(P)
    n = P.shape[0]
    iu, ju = np.triu_indices(n, k=1)
    p = P[iu, ju]

    def loss_grad(z):
        s = np.concatenate([[0.0], z])  # gauge: s_0 = 0
        d = s[iu] - s[ju]
        loss = -np.sum(p * log_expit(d) + (1 - p) * log_expit(-d))
        g_d = expit(d) - p
        g = np.zeros(n)
        np.add.at(g, iu, g_d)
        np.add.at(g, ju, -g_d)
        return loss, g[1:]

    if n == 1:
        scores = np.zeros(1)
    else:
        res = minimize(loss_grad, np.zeros(n - 1), jac=True, method="BFGS", options={"gtol": tol})
        scores = np.concatenate([[0.0], res.x])
        scores -= scores.mean()
    P_fit = bradley_terry(scores)
    kl = _binary_kl(p, P_fit[iu, ju])
    flipped = [
        (int(i), int(j))
        for i in range(n)
        for j in range(n)
        if P[i, j] > 0.5 + 1e-12 and P_fit[i, j] <= 0.5 + 1e-9
    ]
    return BradleyTerryFit(
        scores=scores,
        P_fit=P_fit,
        max_abs_error=float(np.max(np.abs(P - P_fit))),
        mean_kl=float(kl.mean()) if kl.size else 0.0,
        flipped_pairs=flipped,
    )
