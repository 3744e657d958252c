"""How precise a side-by-side win rate is: variance components, confidence intervals, power.

A comparison of method A with method B (Calandriello et al. 2024, Table 2) trains S seeds of
each, judges every one of the S x S seed pairs on the same N held-out prompts, and reports the
mean of

    p[i, j, n] = P*(y_{A,i,n} > y_{B,j,n} | x_n)      (seed i of A, seed j of B, prompt n).

The array is a balanced three-way crossed layout with one observation per cell, and its spread
is modelled as the crossed random-effects model

    p_ijn = mu + a_i + b_j + c_n + (ab)_ij + (ac)_in + (bc)_jn + e_ijn

with every term independent, of mean 0 and variance sigma^2_term (Searle, Casella and
McCulloch 1992, "Variance Components", §4.7 and Table 4.8; Cornfield & Tukey 1956). e_ijn holds the
three-way interaction and the evaluation's own noise, which one observation per cell cannot
tell apart. Seeds and prompts are both random: the quantity estimated is A's win rate over B
for a new training seed on a new prompt of the task, not over these seeds and prompts. The
components are estimated by the method of moments (the ANOVA estimators), which are unbiased;
negative estimates are clipped at 0 and the clipped names are reported. Generalizability
theory calls this a "G-study" and the prediction of the error of other designs a "D-study"
(Brennan 2001, "Generalizability Theory", §4.1-4.4); :func:`variance_of_mean` is its absolute
error variance of a p x i x o design.

With K completions per prompt and policy, drawn with K independent seeds, the replicates
separate the evaluation's sampling noise from what training and prompts fix
(:func:`split_components`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from scipy import stats

from course_lib import validation as check

#: The model's terms, in the order of the formulas; ``a`` is A's seed, ``b`` B's, ``c`` the
#: prompt, and a pair of letters their interaction.
TERMS = (
    "seed_A",
    "seed_B",
    "prompt",
    "seed_A:seed_B",
    "seed_A:prompt",
    "seed_B:prompt",
    "residual",
)


@dataclass(frozen=True)
class Components:
    """Estimated variance components of one p[i, j, n] array.

    ``variances``: the estimates clipped at 0 (what the predictions use); ``raw``: the
    unclipped method-of-moments estimates (unbiased, may be negative); ``clipped``: the terms
    whose raw estimate was negative and was set to 0; ``mean_squares`` and ``df``: the ANOVA
    table; ``mean``: the grand mean (the win rate of A over B); ``shape``: (I, J, N).
    """

    variances: dict[str, float]
    raw: dict[str, float]
    clipped: tuple[str, ...]
    mean_squares: dict[str, float] = field(default_factory=dict)
    df: dict[str, int] = field(default_factory=dict)
    mean: float = float("nan")
    shape: tuple[int, ...] = ()

    def as_dict(self) -> dict:
        return {
            "variances": dict(self.variances),
            "raw": dict(self.raw),
            "clipped": list(self.clipped),
            "mean_squares": dict(self.mean_squares),
            "df": dict(self.df),
            "mean": self.mean,
            "shape": list(self.shape),
        }


def _check_array(p, ndim: int, what: str) -> np.ndarray:
    arr = np.asarray(p, dtype=float)
    if arr.ndim != ndim or min(arr.shape) < 2:
        raise ValueError(
            f"p of shape {arr.shape} is invalid: {what}, every size at least 2 (a variance "
            "needs two levels)"
        )
    if not np.all(np.isfinite(arr)):
        raise ValueError(f"p holds {int((~np.isfinite(arr)).sum())} non-finite values")
    return arr


def mean_squares(p) -> tuple[dict[str, float], dict[str, int]]:
    """The ANOVA table of a balanced three-way layout with one observation per cell.

    With dots for means over an index (I seeds of A, J of B, N prompts):

        MS_A  = J N sum_i (p_i.. - p...)^2 / (I - 1)
        MS_AB = N sum_ij (p_ij. - p_i.. - p_.j. + p...)^2 / ((I - 1)(J - 1))
        MS_E  = sum_ijn (p_ijn - p_ij. - p_i.n - p_.jn + p_i.. + p_.j. + p_..n - p...)^2
                / ((I - 1)(J - 1)(N - 1))

    and likewise for B, C (prompts), AC and BC (Searle, Casella & McCulloch 1992, §4.7).
    """
    p = _check_array(p, 3, "an array p[i, j, n] (seeds of A, seeds of B, prompts)")
    I, J, N = p.shape
    m = p.mean()
    m_a, m_b, m_c = p.mean((1, 2)), p.mean((0, 2)), p.mean((0, 1))
    m_ab, m_ac, m_bc = p.mean(2), p.mean(1), p.mean(0)
    r_ab = m_ab - m_a[:, None] - m_b[None, :] + m
    r_ac = m_ac - m_a[:, None] - m_c[None, :] + m
    r_bc = m_bc - m_b[:, None] - m_c[None, :] + m
    r_e = (
        p
        - m_ab[:, :, None]
        - m_ac[:, None, :]
        - m_bc[None, :, :]
        + m_a[:, None, None]
        + m_b[None, :, None]
        + m_c[None, None, :]
        - m
    )
    df = {
        "seed_A": I - 1,
        "seed_B": J - 1,
        "prompt": N - 1,
        "seed_A:seed_B": (I - 1) * (J - 1),
        "seed_A:prompt": (I - 1) * (N - 1),
        "seed_B:prompt": (J - 1) * (N - 1),
        "residual": (I - 1) * (J - 1) * (N - 1),
    }
    ss = {
        "seed_A": J * N * np.sum((m_a - m) ** 2),
        "seed_B": I * N * np.sum((m_b - m) ** 2),
        "prompt": I * J * np.sum((m_c - m) ** 2),
        "seed_A:seed_B": N * np.sum(r_ab**2),
        "seed_A:prompt": J * np.sum(r_ac**2),
        "seed_B:prompt": I * np.sum(r_bc**2),
        "residual": np.sum(r_e**2),
    }
    return {t: float(ss[t] / df[t]) for t in TERMS}, df


def _from_mean_squares(ms: Mapping[str, float], I: int, J: int, N: int) -> dict[str, float]:
    """Solve the expected mean squares of the random model for the components:

        E[MS_E]  = s_e                      E[MS_AB] = s_e + N s_ab
        E[MS_AC] = s_e + J s_ac             E[MS_BC] = s_e + I s_bc
        E[MS_A]  = s_e + N s_ab + J s_ac + J N s_a
        E[MS_B]  = s_e + N s_ab + I s_bc + I N s_b
        E[MS_C]  = s_e + J s_ac + I s_bc + I J s_c

    (Searle, Casella & McCulloch 1992, Table 4.8; Brennan 2001, Table 3.3).
    """
    e = ms["residual"]
    ab = (ms["seed_A:seed_B"] - e) / N
    ac = (ms["seed_A:prompt"] - e) / J
    bc = (ms["seed_B:prompt"] - e) / I
    a = (ms["seed_A"] - ms["seed_A:seed_B"] - ms["seed_A:prompt"] + e) / (J * N)
    b = (ms["seed_B"] - ms["seed_A:seed_B"] - ms["seed_B:prompt"] + e) / (I * N)
    c = (ms["prompt"] - ms["seed_A:prompt"] - ms["seed_B:prompt"] + e) / (I * J)
    values = (a, b, c, ab, ac, bc, e)
    return {t: float(v) for t, v in zip(TERMS, values, strict=True)}


def _clip(raw: Mapping[str, float]) -> tuple[dict[str, float], tuple[str, ...]]:
    return {t: max(0.0, v) for t, v in raw.items()}, tuple(t for t, v in raw.items() if v < 0)


def variance_components(p) -> Components:
    """Method-of-moments (ANOVA) estimates of the seven components of

        p_ijn = mu + a_i + b_j + c_n + (ab)_ij + (ac)_in + (bc)_jn + e_ijn

    from a balanced array p[i, j, n] (I >= 2 seeds of A, J >= 2 of B, N >= 2 prompts): the
    mean squares of :func:`mean_squares` set equal to their expectations and solved
    (Searle, Casella & McCulloch 1992, §4.7, Table 4.8). The raw estimates are unbiased but can
    be negative when a component is small; they are clipped at 0 (the usual truncation,
    Searle et al. §4.8), and ``Components.clipped`` names the terms that were.
    """
    p = _check_array(p, 3, "an array p[i, j, n] (seeds of A, seeds of B, prompts)")
    ms, df = mean_squares(p)
    raw = _from_mean_squares(ms, *p.shape)
    values, clipped = _clip(raw)
    return Components(values, raw, clipped, ms, df, float(p.mean()), tuple(p.shape))


def _variances(components) -> dict[str, float]:
    values = components.variances if isinstance(components, Components) else components
    if not isinstance(values, Mapping) or set(values) != set(TERMS):
        got = sorted(values) if isinstance(values, Mapping) else type(values).__name__
        raise ValueError(f"components {got} are invalid: give a value for each of {TERMS}")
    bad = {t: v for t, v in values.items() if not (np.isfinite(v) and v >= 0)}
    if bad:
        raise ValueError(f"components {bad} are invalid: variances are finite and >= 0")
    return {t: float(values[t]) for t in TERMS}


def _sizes(seeds, prompts) -> tuple[int, int]:
    return check.integer("seeds", seeds), check.integer("prompts", prompts)


def variance_terms(components, seeds: int, prompts: int) -> dict[str, float]:
    """Each term's share of Var(mean) for S seeds of each method and N prompts (all S x S
    seed pairs judged on the same N prompts): sigma^2_term divided by the number of levels its
    factors take together, e.g. sigma^2_a / S, sigma^2_ab / S^2, sigma^2_ac / (S N),
    sigma^2_e / (S^2 N) (Brennan 2001, eq. 4.13, the absolute error variance)."""
    S, N = _sizes(seeds, prompts)
    v = _variances(components)
    levels = {
        "seed_A": S,
        "seed_B": S,
        "prompt": N,
        "seed_A:seed_B": S * S,
        "seed_A:prompt": S * N,
        "seed_B:prompt": S * N,
        "residual": S * S * N,
    }
    return {t: v[t] / levels[t] for t in TERMS}


def variance_of_mean(components, seeds: int, prompts: int) -> float:
    """Var of the mean of p over all S x S seed pairs and N prompts, under the model:

        Var = s_a/S + s_b/S + s_ab/S^2 + s_c/N + s_ac/(S N) + s_bc/(S N) + s_e/(S^2 N)

    exact for independent terms (each mean of L independent effects has variance s/L; Brennan
    2001, eq. 4.13; Searle, Casella & McCulloch 1992, §4.7)."""
    return float(sum(variance_terms(components, seeds, prompts).values()))


def expected_pair_std(components, seeds: int, prompts: int) -> float:
    """The expected spread reported beside a win rate in the paper's Table 2 (and by
    ``reproduce`` as std_runs): the sample variance, over the S x S seed pairs, of each pair's
    mean over the same N prompts, has expectation

        S / (S + 1) * (s_a + s_b + (s_ac + s_bc) / N) + s_ab + s_e / N

    (a seed's effect is shared by the S pairs of its row, so its squared deviations sum to
    S (S - 1) s_a over S^2 - 1 degrees of freedom; the prompt effect s_c is common to every
    pair and drops out). Returns the square root of that expectation.
    """
    S, N = _sizes(seeds, prompts)
    if S < 2:
        raise ValueError(f"seeds={seeds!r} is invalid: a spread over seed pairs needs >= 2")
    v = _variances(components)
    rows = v["seed_A"] + v["seed_B"] + (v["seed_A:prompt"] + v["seed_B:prompt"]) / N
    return float(np.sqrt(S / (S + 1) * rows + v["seed_A:seed_B"] + v["residual"] / N))


def ci_halfwidth(components, seeds: int, prompts: int, confidence: float = 0.95) -> float:
    """Half-width of the normal confidence interval of the win rate:

        z_{(1 + confidence)/2} * sqrt(Var),  Var = :func:`variance_of_mean`

    (1.96 sqrt(Var) at 95%). It treats the components as known; an interval computed from
    S = 3 seeds would use a t quantile with few (Satterthwaite) degrees of freedom and be wider.
    """
    check.real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    z = float(stats.norm.ppf(0.5 + confidence / 2))
    return z * float(np.sqrt(variance_of_mean(components, seeds, prompts)))


def minimum_detectable_effect(
    components, seeds: int, prompts: int, power: float = 0.8, alpha: float = 0.05
) -> float:
    """The smallest |win rate - 1/2| a two-sided z-test at level ``alpha`` detects with
    probability ``power``:

        MDE = (z_{1 - alpha/2} + z_{power}) * sqrt(Var),  Var = :func:`variance_of_mean`

    (2.80 SE at alpha = 0.05, power = 0.8; Cohen 1988, "Statistical Power Analysis", §2.3;
    Lachin 1981, "Introduction to sample size determination and power analysis").
    """
    check.real("power", power, low=0.0, high=1.0, low_open=True, high_open=True)
    check.real("alpha", alpha, low=0.0, high=1.0, low_open=True, high_open=True)
    z = float(stats.norm.ppf(1 - alpha / 2) + stats.norm.ppf(power))
    return z * float(np.sqrt(variance_of_mean(components, seeds, prompts)))


def mean_interval(p, confidence: float = 0.95) -> dict[str, float]:
    """The interval of this array's own mean, with the components estimated, not known.

    Var(mean) = s_a/I + s_b/J + s_ab/(I J) + s_c/N + s_ac/(I N) + s_bc/(J N) + s_e/(I J N) has
    the unbiased estimate

        V = (MS_A + MS_B + MS_C - MS_AB - MS_AC - MS_BC + MS_E) / (I J N)

    (substitute the expected mean squares of :func:`variance_components`), and V / Var is
    close to chi^2_nu / nu with Satterthwaite's degrees of freedom

        nu = (sum_t c_t MS_t)^2 / sum_t (c_t MS_t)^2 / df_t,   c_t = +-1

    (Satterthwaite 1946, "An approximate distribution of estimates of variance components";
    Searle, Casella & McCulloch 1992, §5.2). Half-width t_{nu, (1 + confidence)/2} sqrt(V):
    with few seeds nu is small and the interval wider than :func:`ci_halfwidth`'s.
    """
    check.real("confidence", confidence, low=0.0, high=1.0, low_open=True, high_open=True)
    p = _check_array(p, 3, "an array p[i, j, n] (seeds of A, seeds of B, prompts)")
    ms, df = mean_squares(p)
    sign = {"seed_A:seed_B": -1, "seed_A:prompt": -1, "seed_B:prompt": -1}
    combo = sum(sign.get(t, 1) * ms[t] for t in TERMS)
    se = float(np.sqrt(max(combo, 0.0) / p.size))
    spread = sum(ms[t] ** 2 / df[t] for t in TERMS)
    nu = float(combo**2 / spread) if spread > 0 and combo > 0 else float("nan")
    t = float(stats.t.ppf(0.5 + confidence / 2, nu)) if np.isfinite(nu) else float("nan")
    return {"mean": float(p.mean()), "se": se, "df": nu, "halfwidth": t * se if se else 0.0}


@dataclass(frozen=True)
class Split:
    """The components of the K-completion mean, split into what the evaluation's sampling adds
    and what training seeds and prompts fix (see :func:`split_components`)."""

    total: Components  # of p averaged over the K completions
    sampling: dict[str, float]  # of one completion's sampling noise, clipped at 0
    sampling_raw: dict[str, float]
    fixed: dict[str, float]  # total minus sampling / K, clipped at 0: the limit of many draws
    completions: int

    def at(self, completions: int) -> dict[str, float]:
        """The components with K' completions per prompt, clipped at 0:

            total + sampling * (1/K' - 1/K)

        on the unclipped estimates, so that K' = K gives back ``total`` exactly."""
        k = check.integer("completions", completions)
        shift = 1.0 / k - 1.0 / self.completions
        return _clip({t: self.total.raw[t] + self.sampling_raw[t] * shift for t in TERMS})[0]

    def as_dict(self) -> dict:
        return {
            "total": self.total.as_dict(),
            "sampling_per_completion": dict(self.sampling),
            "sampling_per_completion_raw": dict(self.sampling_raw),
            "fixed": dict(self.fixed),
            "completions": self.completions,
        }


def split_components(pk) -> Split:
    """Components of p[i, j, n, k] (k: K >= 2 completions drawn with independent seeds).

    Write p_ijnk = t_ijn + eps_ijnk: t is fixed by the trained policies and the prompt, eps is
    the noise of the k-th draw of completions, independent across k with the same law. Any
    contrast d = sum_k w_k p_k with sum_k w_k = 0 and sum_k w_k^2 = 1 removes t and keeps one
    draw's noise, so the ANOVA of d estimates the noise's components; the K - 1 orthonormal
    Helmert contrasts w_m = (1, ..., 1, -m, 0, ...) / sqrt(m (m + 1)) give K - 1 such
    estimates, averaged. The mean over k carries the noise divided by K, so

        fixed = components(mean_k p) - sampling / K

    (the expected mean squares are linear in the covariance, so each identity holds for the
    unclipped estimates in expectation; Searle, Casella & McCulloch 1992, §4.7).
    """
    pk = _check_array(pk, 4, "an array p[i, j, n, k] (seeds of A, seeds of B, prompts, draws)")
    K = pk.shape[3]
    total = variance_components(pk.mean(axis=3))
    noise = {t: 0.0 for t in TERMS}
    for m in range(1, K):
        w = np.zeros(K)
        w[:m], w[m] = 1.0, -m
        d = pk @ (w / np.sqrt(m * (m + 1)))
        for t, v in _from_mean_squares(mean_squares(d)[0], *d.shape).items():
            noise[t] += v / (K - 1)
    sampling, _ = _clip(noise)
    fixed, _ = _clip({t: total.raw[t] - noise[t] / K for t in TERMS})
    return Split(total, sampling, noise, fixed, K)
