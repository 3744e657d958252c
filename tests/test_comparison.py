"""course_lib.comparison: the paper's Table 2 and the statements read from a win-rate matrix."""

import numpy as np
import pytest

from course_lib import comparison as cmp
from course_lib.evaluation import winrate_matrix

# The lower triangle of Table 2 as notes/paper-tables.md §2.5 prints it, row by row; the module
# stores only the upper triangle, so this checks the transcription against the lower half.
NOTES_LOWER = {
    ("IPO-MD", "IPO"): 0.485,
    ("DPO", "IPO"): 0.392,
    ("DPO", "IPO-MD"): 0.400,
    ("Nash-MD-PG", "IPO"): 0.379,
    ("Nash-MD-PG", "IPO-MD"): 0.392,
    ("Nash-MD-PG", "DPO"): 0.480,
    ("SLiC", "IPO"): 0.392,
    ("SLiC", "IPO-MD"): 0.406,
    ("SLiC", "DPO"): 0.507,
    ("SLiC", "Nash-MD-PG"): 0.521,
    ("RL", "IPO"): 0.209,
    ("RL", "IPO-MD"): 0.222,
    ("RL", "DPO"): 0.273,
    ("RL", "Nash-MD-PG"): 0.271,
    ("RL", "SLiC"): 0.272,
}


def test_paper_table_is_antisymmetric_and_matches_the_notes_lower_triangle():
    t = cmp.paper_table2(include_rl=True)
    np.testing.assert_allclose(t.mean + t.mean.T, 1.0, atol=1e-12)
    np.testing.assert_allclose(np.diag(t.mean), 0.5)
    for (a, b), value in NOTES_LOWER.items():
        assert cmp.cell(t, a, b)[0] == pytest.approx(value, abs=1e-9), (a, b)
    assert cmp.paper_table2().names == cmp.PAPER_NAMES[:-1]


def test_the_papers_reading_of_its_table_follows_from_the_functions():
    """notes/paper-tables.md §2.6: IPO has the highest mean; IPO and IPO-MD are within one std; DPO,
    SLiC and Nash-MD-PG cannot be separated; IPO and IPO-MD beat those three."""
    t = cmp.paper_table2()
    assert cmp.ranking(t)[:2] == ("IPO", "IPO-MD")
    close = set(cmp.within_std_of_half(t))
    assert ("IPO", "IPO-MD") in close
    assert {("DPO", "Nash-MD-PG"), ("DPO", "SLiC"), ("Nash-MD-PG", "SLiC")} <= close
    assert ("IPO", "DPO") not in close and ("IPO-MD", "SLiC") not in close
    assert len(close) == 4


def test_row_means_and_ranking_on_a_hand_computed_matrix():
    m = cmp.from_upper(
        ("a", "b", "c"), {("a", "b"): (0.7, 0.1), ("a", "c"): (0.6, 0.0), ("b", "c"): (0.4, 0.2)}
    )
    # a: (0.7 + 0.6) / 2, b: (0.3 + 0.4) / 2, c: (0.4 + 0.6) / 2
    np.testing.assert_allclose(cmp.row_means(m), [0.65, 0.35, 0.5])
    assert cmp.ranking(m) == ("a", "c", "b")
    # |0.2| > 0.1; |0.1| > 0 std; |-0.1| <= 0.2
    assert cmp.within_std_of_half(m) == [("b", "c")]
    assert cmp.within_std_of_half(m, k=2.0) == [("a", "b"), ("b", "c")]


def test_agreement_is_one_with_itself_and_minus_one_or_zero_with_the_transpose():
    t = cmp.paper_table2()
    flipped = cmp.from_upper(
        t.names, {(a, b): (1 - cmp.cell(t, a, b)[0], 0.0) for a, b in cmp.upper_pairs(t)}
    )
    assert cmp.rank_agreement(t, t) == pytest.approx(1.0)
    assert cmp.rank_agreement(t, flipped) == pytest.approx(-1.0)
    assert cmp.sign_agreement(t, t) == 1.0
    assert cmp.sign_agreement(t, flipped) == 0.0
    # only the common methods count, in either matrix's order
    sub = cmp.restrict(t, ("SLiC", "IPO", "DPO"))
    assert cmp.sign_agreement(sub, t) == 1.0
    assert cmp.cell(sub, "IPO", "SLiC") == cmp.cell(t, "IPO", "SLiC")


def test_from_summary_reads_what_reproduce_writes():
    rng = np.random.default_rng(0)
    names = ["A", "B", "C"]
    pairwise = {
        (a, b): rng.uniform(size=(9, 20)) for i, a in enumerate(names) for b in names[i + 1 :]
    }
    wm = winrate_matrix(names, pairwise)
    back = cmp.from_summary(
        {"names": names, "mean": wm.mean.tolist(), "std_runs": wm.std_runs.tolist()}
    )
    np.testing.assert_allclose(back.mean, wm.mean)
    np.testing.assert_allclose(back.std_runs, wm.std_runs)
    with pytest.raises(ValueError, match="antisymmetric"):
        cmp.from_summary({"names": names, "mean": np.eye(3).tolist(), "std_runs": np.eye(3)})


def test_bad_input_is_named():
    with pytest.raises(ValueError, match="no comparison given"):
        cmp.from_upper(("a", "b", "c"), {("a", "b"): (0.5, 0.0)})
    with pytest.raises(ValueError, match="unknown method .z."):
        cmp.from_upper(("a", "b"), {("a", "z"): (0.5, 0.0)})
    with pytest.raises(ValueError, match="given twice"):
        cmp.from_upper(("a", "b"), {("a", "b"): (0.5, 0.0), ("b", "a"): (0.5, 0.0)})
    with pytest.raises(ValueError, match="mean 1.5"):
        cmp.from_upper(("a", "b"), {("a", "b"): (1.5, 0.0)})
    with pytest.raises(ValueError, match="unknown methods"):
        cmp.restrict(cmp.paper_table2(), ("IPO", "PPO"))
    with pytest.raises(ValueError, match="fewer than two"):
        cmp.rank_agreement(cmp.restrict(cmp.paper_table2(), ("IPO",)), cmp.paper_table2())
    with pytest.raises(ValueError, match="k=-1"):
        cmp.within_std_of_half(cmp.paper_table2(), k=-1)
