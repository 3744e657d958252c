"""Reading a win-rate matrix against the paper's Table 2 (notebook 10).

A win-rate matrix M holds, for every pair of methods, the row method's win rate over the column
method, M[i, j] = P(row > column), with M + M^T = 1 (Calandriello et al. 2024, §6, Table 2; the
course's :class:`course_lib.evaluation.WinRateMatrix`). The functions here turn such a matrix into
the statements the paper makes about its own: which method has the highest mean win rate over the
others, which pairs cannot be told apart (|M[i, j] - 1/2| within k standard deviations of the
runs), and whether two matrices rank the methods alike (Kendall's tau of their row means) and put
each pair on the same side of 1/2.

``PAPER_TABLE2`` is the paper's Table 2 as transcribed in notes/paper-tables.md §2.5 from a
secondary source, tagged [S-A] there: not checked against the PDF. Its judge is PaLM 2, its
policies 770M-parameter T5X-L models; only the upper triangle (means and the std over 3 x 3 seed
pairs) is stored, the lower triangle follows from antisymmetry (notes/paper-tables.md §1.1
checks that it does).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np
from scipy import stats

from course_lib.evaluation import WinRateMatrix, antisymmetric_matrix

PAPER_TABLE2_SOURCE = (
    "Calandriello et al. 2024, Table 2 (judge: PaLM 2; policies: T5X-L), transcribed from a "
    "secondary source [S-A]: notes/paper-tables.md §2.5"
)
PAPER_NAMES = ("IPO", "IPO-MD", "DPO", "Nash-MD-PG", "SLiC", "RL")
# (row, column): (mean win rate of the row method, std over the 9 seed pairs)
PAPER_TABLE2: dict[tuple[str, str], tuple[float, float]] = {
    ("IPO", "IPO-MD"): (0.515, 0.024),
    ("IPO", "DPO"): (0.608, 0.038),
    ("IPO", "Nash-MD-PG"): (0.621, 0.030),
    ("IPO", "SLiC"): (0.608, 0.025),
    ("IPO", "RL"): (0.791, 0.012),
    ("IPO-MD", "DPO"): (0.600, 0.028),
    ("IPO-MD", "Nash-MD-PG"): (0.608, 0.026),
    ("IPO-MD", "SLiC"): (0.594, 0.020),
    ("IPO-MD", "RL"): (0.778, 0.004),
    ("DPO", "Nash-MD-PG"): (0.520, 0.041),
    ("DPO", "SLiC"): (0.493, 0.040),
    ("DPO", "RL"): (0.727, 0.020),
    ("Nash-MD-PG", "SLiC"): (0.479, 0.029),
    ("Nash-MD-PG", "RL"): (0.729, 0.020),
    ("SLiC", "RL"): (0.728, 0.010),
}


def from_upper(
    names: Sequence[str], upper: Mapping[tuple[str, str], tuple[float, float]]
) -> WinRateMatrix:
    """An antisymmetric matrix from one (mean, std) per unordered pair of ``names``.

    M[i, j] = mean, M[j, i] = 1 - mean, diagonal 1/2; the std is shared by both cells. The
    stderr is unknown for a transcribed table and left NaN.
    """
    k = len(tuple(names))
    matrix = antisymmetric_matrix(names, {pair: (m, sd, np.nan) for pair, (m, sd) in upper.items()})
    return WinRateMatrix(matrix.names, matrix.mean, matrix.std_runs, np.full((k, k), np.nan))


def paper_table2(include_rl: bool = False) -> WinRateMatrix:
    """The paper's Table 2 (``PAPER_TABLE2_SOURCE``); without the RL column by default, since
    the course trains no RL baseline."""
    names = PAPER_NAMES if include_rl else PAPER_NAMES[:-1]
    return from_upper(names, {k: v for k, v in PAPER_TABLE2.items() if set(k) <= set(names)})


def from_summary(matrix: Mapping) -> WinRateMatrix:
    """The matrix of one judge in ``summary.json`` (``summary["modes"][mode]["matrices"][judge]``
    as written by ``python -m course_lib reproduce``)."""
    mean = np.asarray(matrix["mean"], dtype=float)
    std = np.asarray(matrix["std_runs"], dtype=float)
    names = tuple(matrix["names"])
    if mean.shape != (len(names), len(names)) or std.shape != mean.shape:
        raise ValueError(f"shapes {mean.shape} and {std.shape} do not fit {len(names)} names")
    if not np.allclose(mean + mean.T, 1.0, atol=1e-9):
        raise ValueError("the matrix is not antisymmetric (mean + mean.T != 1)")
    return WinRateMatrix(names, mean, std, np.full(mean.shape, np.nan))


def restrict(m: WinRateMatrix, names: Sequence[str]) -> WinRateMatrix:
    """The sub-matrix of ``names``, in that order."""
    unknown = [n for n in names if n not in m.names]
    if unknown:
        raise ValueError(f"unknown methods {unknown}; the matrix has {m.names}")
    idx = [m.names.index(n) for n in names]
    sub = np.ix_(idx, idx)
    return WinRateMatrix(tuple(names), m.mean[sub], m.std_runs[sub], m.stderr[sub])


def row_means(m: WinRateMatrix) -> np.ndarray:
    """Each method's mean win rate over the *other* methods (the diagonal's 1/2 left out)."""
    k = len(m.names)
    if k < 2:
        raise ValueError("a ranking needs at least two methods")
    return (m.mean.sum(axis=1) - np.diag(m.mean)) / (k - 1)


def ranking(m: WinRateMatrix) -> tuple[str, ...]:
    """Methods by decreasing row mean (ties keep the matrix's order)."""
    order = np.argsort(-row_means(m), kind="stable")
    return tuple(m.names[i] for i in order)


def upper_pairs(m: WinRateMatrix) -> list[tuple[str, str]]:
    return [(a, b) for i, a in enumerate(m.names) for b in m.names[i + 1 :]]


def within_std_of_half(m: WinRateMatrix, k: float = 1.0) -> list[tuple[str, str]]:
    """The pairs (upper triangle) whose win rate is within ``k`` std of 1/2: |M - 1/2| <= k std,
    the paper's reading of "statistically indistinguishable" (notes/paper-tables.md §2.6)."""
    if not k >= 0:
        raise ValueError(f"k={k!r} is invalid: a number of standard deviations >= 0")
    out = []
    for a, b in upper_pairs(m):
        i, j = m.names.index(a), m.names.index(b)
        if abs(m.mean[i, j] - 0.5) <= k * m.std_runs[i, j]:
            out.append((a, b))
    return out


def cell(m: WinRateMatrix, a: str, b: str) -> tuple[float, float]:
    """(mean, std) of the row ``a`` over the column ``b``."""
    for n in (a, b):
        if n not in m.names:
            raise ValueError(f"unknown method {n!r}; the matrix has {m.names}")
    i, j = m.names.index(a), m.names.index(b)
    return float(m.mean[i, j]), float(m.std_runs[i, j])


def _common(m1: WinRateMatrix, m2: WinRateMatrix) -> tuple[str, ...]:
    names = tuple(n for n in m1.names if n in m2.names)
    if len(names) < 2:
        raise ValueError(f"the matrices share fewer than two methods: {m1.names} vs {m2.names}")
    return names


def rank_agreement(m1: WinRateMatrix, m2: WinRateMatrix) -> float:
    """Kendall's tau between the row means of the two matrices over their common methods:
    1 for the same order, -1 for the reverse."""
    names = _common(m1, m2)
    r1, r2 = row_means(restrict(m1, names)), row_means(restrict(m2, names))
    return float(stats.kendalltau(r1, r2).statistic)


def sign_agreement(m1: WinRateMatrix, m2: WinRateMatrix) -> float:
    """The share of common pairs that both matrices put on the same side of 1/2 (a cell of
    exactly 1/2 agrees only with another 1/2)."""
    names = _common(m1, m2)
    s1, s2 = restrict(m1, names), restrict(m2, names)
    pairs = upper_pairs(s1)
    same = [np.sign(cell(s1, a, b)[0] - 0.5) == np.sign(cell(s2, a, b)[0] - 0.5) for a, b in pairs]
    return float(np.mean(same))
