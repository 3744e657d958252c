"""Side-by-side evaluation: win rates with confidence intervals, and win-rate matrices.

A side-by-side comparison of policies A and B draws, for each held-out prompt x, y ~ A(.|x) and
y' ~ B(.|x), and records a judge's probability p(x) = P(y > y'|x) (an oracle, or a learned
preference model). The win rate of A over B is P(A > B) = E_x E_{y,y'}[P(y > y'|x)]
(Calandriello et al. 2024, §2; NLHF §2). The paper's Table 2 reports, for each pair of methods, the
mean over 3 x 3 seed pairs and the standard deviation across those 9 comparisons.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
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


def antisymmetric_matrix(
    names: Sequence[str], cells: Mapping[tuple[str, str], tuple[float, float, float]]
) -> WinRateMatrix:
    """The full matrix from one ``(mean, std_runs, stderr)`` per unordered pair ``(a, b)``.

    M[a, b] = mean and M[b, a] = 1 - mean, the diagonal 1/2: the matrix is antisymmetric by
    construction, never by two noisy estimates that happen to disagree. Every pair must be
    given exactly once, in either order.
    """
    names = tuple(names)
    if len(set(names)) != len(names):
        raise ValueError(f"method names must be distinct, got {names}")
    index = {n: i for i, n in enumerate(names)}
    k = len(names)
    mean, std, err = np.full((k, k), 0.5), np.zeros((k, k)), np.zeros((k, k))
    seen = set()
    for (a, b), (m, sd, se) in cells.items():
        for n in (a, b):
            if n not in index:
                raise ValueError(f"unknown method {n!r} in pair ({a!r}, {b!r}); known: {names}")
        if a == b:
            raise ValueError(f"pair ({a!r}, {b!r}) compares a method with itself")
        if frozenset((a, b)) in seen:
            raise ValueError(f"pair ({a!r}, {b!r}) given twice (in either order)")
        if not (0.0 <= m <= 1.0 and sd >= 0.0):
            raise ValueError(f"pair ({a!r}, {b!r}): mean {m} must be in [0, 1], std {sd} >= 0")
        seen.add(frozenset((a, b)))
        i, j = index[a], index[b]
        mean[i, j], mean[j, i] = m, 1.0 - m
        std[i, j] = std[j, i] = sd
        err[i, j] = err[j, i] = se
    missing = [
        (a, b) for i, a in enumerate(names) for b in names[i + 1 :] if frozenset((a, b)) not in seen
    ]
    if missing:
        raise ValueError(f"no comparison given for pairs {missing}")
    return WinRateMatrix(names, mean, std, err)


def winrate_matrix(
    names: Sequence[str], pairwise: Mapping[tuple[str, str], object], confidence: float = 0.95
) -> WinRateMatrix:
    """The matrix from judged comparisons: ``pairwise[(a, b)]`` holds the probabilities that a's
    sample beats b's, of shape (n_prompts,) or (n_runs, n_prompts); one order of each pair."""
    cells = {}
    for pair, p in pairwise.items():
        wr = win_rate(p, confidence)
        cells[pair] = (wr.mean, wr.std_runs, wr.stderr)
    return antisymmetric_matrix(names, cells)


def compare(
    judges: Mapping[str, Callable],
    contexts: Sequence,
    samples: Mapping[str, Sequence[Sequence[str]]],
    reference: Sequence[str],
    labels: Mapping[str, str] | None = None,
    spread: str = "std_runs",
    keep_arrays: bool = False,
) -> dict:
    """Every method against pi_ref and against every other method, for each judge.

    ``samples[method]`` is a list of runs (seeds), each one completion per context; every pair
    of runs of two methods is judged (3 x 3 seed pairs for 3 seeds, as in the paper's Table 2).
    Returns ``vs_reference[judge][label]`` (mean, low, high, std_runs, stderr, ci95_halfwidth: a
    95% interval over runs, or over prompts with one run), ``per_prompt_vs_reference[judge]
    [method]`` (averaged over runs) and ``matrices[judge]`` (names, mean, std_runs, stderr,
    ci95_halfwidth from :func:`pair_halfwidth`, markdown); with ``keep_arrays``, also
    ``arrays[judge]["<a>|<b>"]``, the judged p[i, j, n] of every pair (float32), to re-analyse.
    """
    labels = dict(labels or {})
    methods = list(samples)
    names = [labels.get(m, m) for m in methods]
    out: dict = {"vs_reference": {}, "per_prompt_vs_reference": {}, "matrices": {}}
    if keep_arrays:
        out["arrays"] = {}
    for judge_name, judge in judges.items():
        vs, per_prompt = {}, {}
        for m in methods:
            runs = np.stack([np.asarray(judge(contexts, s, reference), float) for s in samples[m]])
            wr = win_rate(runs)
            vs[labels.get(m, m)] = {
                "mean": wr.mean,
                "low": wr.low,
                "high": wr.high,
                "std_runs": wr.std_runs,
                "stderr": wr.stderr,
                "ci95_halfwidth": pair_halfwidth(runs[None]),
            }
            per_prompt[m] = runs.mean(axis=0).tolist()
        out["vs_reference"][judge_name] = vs
        out["per_prompt_vs_reference"][judge_name] = per_prompt
        if len(methods) < 2:
            continue
        pairwise = {
            (labels.get(a, a), labels.get(b, b)): np.stack(
                [
                    np.asarray(judge(contexts, sa, sb), float)
                    for sa in samples[a]
                    for sb in samples[b]
                ]
            )
            for a, b in itertools.combinations(methods, 2)
        }
        matrix = winrate_matrix(names, pairwise)
        half = np.zeros((len(methods), len(methods)))
        for (i, a), (j, b) in itertools.combinations(enumerate(methods), 2):
            key = (labels.get(a, a), labels.get(b, b))
            p = pairwise[key].reshape(len(samples[a]), len(samples[b]), -1)
            half[i, j] = half[j, i] = pair_halfwidth(p)
            if keep_arrays:
                out["arrays"].setdefault(judge_name, {})["|".join(key)] = p.astype(np.float32)
        out["matrices"][judge_name] = {
            "names": names,
            "mean": matrix.mean.tolist(),
            "std_runs": matrix.std_runs.tolist(),
            "stderr": matrix.stderr.tolist(),
            "ci95_halfwidth": half.tolist(),
            "markdown": matrix.to_markdown(spread=spread),
        }
    return out


def pair_halfwidth(p, confidence: float = 0.95) -> float:
    """Half-width of the confidence interval of a pairwise win rate from p[i, j, n] (seed i of A,
    seed j of B, prompt n).

    The S x S seed pairs are not S^2 independent runs: every pair that shares A's seed i shares
    its policy. Under the crossed random-effects model of :mod:`course_lib.power`,

        Var(mean) = s_a/I + s_b/J + s_c/N + s_ab/(IJ) + s_ac/(IN) + s_bc/(JN) + s_e/(IJN),

    and the expected mean squares give E[MS_A + MS_B + MS_C] / (IJN) = Var(mean) + s_ab/(IJ) +
    s_ac/(IN) + s_bc/(JN) + 2 s_e/(IJN). So

        V+ = (MS_A + MS_B + MS_C) / (I J N)

    errs only upward, by interaction terms that many prompts make small. The unbiased estimate
    subtracts MS_AB, MS_AC and MS_BC (:func:`course_lib.power.mean_interval`), but with three
    seeds a side the difference can come out near 0 and Satterthwaite's degrees of freedom with
    it: the first run of this code printed a half-width of 5e7. V+ has positive coefficients
    only, so its Satterthwaite degrees of freedom, nu = (sum MS)^2 / sum MS^2/df, never fall
    below the smallest df (Satterthwaite 1946; Searle, Casella & McCulloch 1992, §5.2). The
    half-width is t_{nu, (1 + confidence)/2} sqrt(V+): conservative. With one seed on a side,
    the t-interval over the seed pairs' means (:func:`win_rate`) is used instead.
    """
    from course_lib.power import mean_squares  # power imports nothing from here; kept lazy

    p = np.asarray(p, dtype=float)
    if p.ndim != 3:
        raise ValueError(f"p must have shape (seeds of A, seeds of B, prompts), got {p.shape}")
    if min(p.shape[:2]) >= 2 and p.shape[2] >= 2:
        ms, df = mean_squares(p)
        terms = ("seed_A", "seed_B", "prompt")
        total = sum(ms[t] for t in terms)
        if total <= 0:
            return 0.0
        nu = total**2 / sum(ms[t] ** 2 / df[t] for t in terms)
        return float(stats.t.ppf(0.5 + confidence / 2, nu) * np.sqrt(total / p.size))
    wr = win_rate(p.reshape(-1, p.shape[2]), confidence)
    dof = wr.n_runs - 1 if wr.n_runs > 1 else wr.n_prompts - 1
    return float(stats.t.ppf(0.5 + confidence / 2, max(1, dof)) * wr.stderr)


def kl_estimate(logp, ref_logp, mask=None) -> np.ndarray:
    """Per-sequence Monte-Carlo estimate of KL(pi || pi_ref) from samples y ~ pi, never negative:

        sum_t [ r_t - 1 - log r_t ],   r_t = pi_ref(y_t | x, y_<t) / pi(y_t | x, y_<t)

    over the completion tokens (Schulman's "k3" estimator, per token). Given the prefix,
    E[r_t - 1] = 0 and E[-log r_t] = KL(pi(.|prefix) || pi_ref(.|prefix)), so by the chain rule of
    KL the sum is an unbiased estimate of the sequence-level KL(pi || pi_ref); each term is
    >= 0 (x - 1 >= log x), so unlike the plain sum of log-ratios it cannot show a negative KL.
    Arrays of shape (batch, tokens).
    """
    logp = np.asarray(logp, dtype=float)
    ref_logp = np.asarray(ref_logp, dtype=float)
    if logp.shape != ref_logp.shape:
        raise ValueError(f"logp shape {logp.shape} != ref_logp shape {ref_logp.shape}")
    log_r = ref_logp - logp
    terms = np.expm1(log_r) - log_r
    if mask is not None:
        terms = np.where(np.asarray(mask, dtype=bool), terms, 0.0)
    return terms.sum(axis=-1)
