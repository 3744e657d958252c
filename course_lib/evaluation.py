"""Side-by-side evaluation: win rates with confidence intervals, and win-rate matrices.

A side-by-side comparison of policies A and B draws, for each held-out prompt x, y ~ A(.|x) and
y' ~ B(.|x), and records a judge's probability p(x) = P(y > y'|x) (an oracle, or a learned
preference model). The win rate of A over B is P(A > B) = E_x E_{y,y'}[P(y > y'|x)]
(Calandriello et al. 2024, §2; NLHF §2). The paper's Table 2 reports, for each pair of methods, the
mean over 3 x 3 seed pairs and the standard deviation across those 9 comparisons.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats


@dataclass(frozen=True)
class WinRate:
    """A win rate with its uncertainty.

    ``mean`` pools every judged pair; ``stderr`` is the standard error of that mean, computed over
    runs (seed pairs) when there are several, since prompts within a run share the run's policies
    and are not independent of one another; ``std_runs`` is the spread of per-run win rates (what
    the paper's Table 2 shows in brackets); ``low``/``high`` the two-sided interval.
    """

    mean: float
    stderr: float
    low: float
    high: float
    std_runs: float
    n_runs: int
    n_prompts: int
    confidence: float

    def __str__(self) -> str:
        pct = round(100 * self.confidence)
        return f"{self.mean:.3f} [{self.low:.3f}, {self.high:.3f}] ({pct}% CI)"


def _as_runs(p) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise ValueError(
            f"preferences must be a non-empty array of shape (n_prompts,) or (n_runs, n_prompts), "
            f"got shape {np.shape(p)}"
        )
    if not np.all(np.isfinite(arr)) or arr.min() < 0 or arr.max() > 1:
        bad = arr[~(np.isfinite(arr) & (arr >= 0) & (arr <= 1))][:3]
        raise ValueError(f"preferences must be probabilities in [0, 1]; found {bad.tolist()}")
    return arr


def win_rate(p, confidence: float = 0.95) -> WinRate:
    """Win rate of A over B from judged probabilities ``p`` of shape (n_prompts,) or
    (n_runs, n_prompts).

    With one run the interval is a t-interval over prompts; with several it is a t-interval over
    the per-run means (n_runs - 1 degrees of freedom), which accounts for seed-to-seed variation.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence must be in (0, 1), got {confidence}")
    runs = _as_runs(p)
    n_runs, n_prompts = runs.shape
    mean = float(runs.mean())
    run_means = runs.mean(axis=1)
    std_runs = float(run_means.std(ddof=1)) if n_runs > 1 else 0.0
    if n_runs > 1:
        stderr, dof = std_runs / np.sqrt(n_runs), n_runs - 1
    elif n_prompts > 1:
        stderr, dof = float(runs.std(ddof=1)) / np.sqrt(n_prompts), n_prompts - 1
    else:
        stderr, dof = float("nan"), 1
    half = float(stats.t.ppf(0.5 + confidence / 2, dof)) * stderr
    low, high = max(0.0, mean - half), min(1.0, mean + half)
    return WinRate(mean, stderr, low, high, std_runs, n_runs, n_prompts, confidence)


@dataclass(frozen=True)
class WinRateMatrix:
    """Row method's win rate over column method; ``mean + mean.T == 1`` exactly."""

    names: tuple[str, ...]
    mean: np.ndarray
    std_runs: np.ndarray
    stderr: np.ndarray

    def to_markdown(self, digits: int = 3, spread: str = "std_runs") -> str:
        """The layout of the paper's Table 2: the upper triangle shows the std across runs
        (``spread="std_runs"``, the paper's choice) or the standard error of the mean
        (``spread="stderr"``: over prompts when there is one run)."""
        if spread not in ("std_runs", "stderr"):
            raise ValueError(f"spread={spread!r} is invalid: 'std_runs' or 'stderr'")
        shown = getattr(self, spread)
        head = "| row \\ col | " + " | ".join(self.names) + " |"
        rule = "|" + " --- |" * (len(self.names) + 1)
        lines = [head, rule]
        for i, row in enumerate(self.names):
            cells = []
            for j in range(len(self.names)):
                cell = f"{self.mean[i, j]:.{digits}f}"
                if j > i and np.isfinite(shown[i, j]) and shown[i, j] > 0:
                    cell += f" ({shown[i, j]:.{digits}f})"
                cells.append(cell)
            lines.append(f"| {row} | " + " | ".join(cells) + " |")
        return "\n".join(lines)


def winrate_matrix(
    names: Sequence[str], pairwise: Mapping[tuple[str, str], object], confidence: float = 0.95
) -> WinRateMatrix:
    """Assemble the full matrix from one comparison per unordered pair.

    ``pairwise[(a, b)]`` holds the judged probabilities that a's sample beats b's. Only one order
    of each pair may be given: the other is 1 minus it, so the matrix is antisymmetric by
    construction (and the diagonal is 1/2), never by two noisy estimates that happen to disagree.
    """
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be distinct, got {names}")
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    mean = np.full((k, k), 0.5)
    std = np.zeros((k, k))
    err = np.zeros((k, k))
    seen = set()
    for (a, b), p in pairwise.items():
        for n in (a, b):
            if n not in index:
                raise ValueError(f"unknown method {n!r} in pair ({a!r}, {b!r}); known: {names}")
        if a == b:
            raise ValueError(f"pair ({a!r}, {b!r}) compares a method with itself")
        key = frozenset((a, b))
        if key in seen:
            raise ValueError(f"pair ({a!r}, {b!r}) given twice (in either order)")
        seen.add(key)
        wr = win_rate(p, confidence)
        i, j = index[a], index[b]
        mean[i, j], mean[j, i] = wr.mean, 1.0 - wr.mean
        std[i, j] = std[j, i] = wr.std_runs
        err[i, j] = err[j, i] = wr.stderr
    missing = [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :] if frozenset((a, b)) not in seen
    ]
    if missing:
        raise ValueError(f"no comparison given for pairs {missing}")
    return WinRateMatrix(names, mean, std, err)


def kl_estimate(logp, ref_logp, mask=None) -> np.ndarray:
    """Per-sequence Monte-Carlo estimate of KL(pi || pi_ref) from samples y ~ pi:
    sum_t [log pi(y_t|.) - log pi_ref(y_t|.)] over the completion tokens (unbiased, since
    KL = E_{y~pi}[log pi(y) - log pi_ref(y)]). Arrays of shape (batch, tokens)."""
    logp = np.asarray(logp, dtype=float)
    ref_logp = np.asarray(ref_logp, dtype=float)
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp shape {logp.shape} != ref_logp shape {ref_logp.shape}")
    diff = logp - ref_logp
    if mask is not None:
        diff = np.where(np.asarray(mask, dtype=bool), diff, 0.0)
    return diff.sum(axis=-1)
