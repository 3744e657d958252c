"""`python -m course_lib reproduce` end to end at smoke size, on the committed tiny policy."""

import json

import numpy as np
import pytest

from course_lib.commands import main
from course_lib.experiments.tiny import (
    BETA_LADDER,
    TAU_LADDER,
    Experiment,
    grid_neighbours,
    last_kl,
)
from course_lib.judges import OracleJudge


def test_oracle_judge_is_antisymmetric():
    from course_lib.tasks import load_split

    rec = load_split("valid")[0]
    ys = [s.text for s in rec.summaries]
    judge = OracleJudge("nt")
    p = judge([rec] * len(ys), ys, ys[::-1])
    q = judge([rec] * len(ys), ys[::-1], ys)
    np.testing.assert_array_equal(p + q, np.ones(len(ys)))


@pytest.mark.slow
def test_reproduce_smoke_writes_an_antisymmetric_matrix(tmp_path, monkeypatch):
    monkeypatch.setenv("TQDM_DISABLE", "1")
    code = main(
        [
            "reproduce",
            "--profile",
            "smoke",
            "--modes",
            "bt",
            "--methods",
            "online_ipo,ipo_md",
            "--train-judge",
            "oracle",
            "--out",
            str(tmp_path),
        ]
    )
    assert code == 0
    summary = json.loads((tmp_path / "summary.json").read_text())
    mat = np.array(summary["modes"]["bt"]["matrices"]["oracle"]["mean"])
    np.testing.assert_allclose(mat + mat.T, np.ones_like(mat), atol=1e-12)
    assert summary["modes"]["bt"]["selected"]["ipo_md"]["beta"] > 0
    table = (tmp_path / "matrix_bt_oracle.md").read_text()
    assert "| IPO | 0.500 |" in table and "IPO-MD" in table
    for name in ("sweep.csv", "winrates.csv", "winrates_bt.png"):
        assert (tmp_path / name).is_file(), name


def test_bad_method_is_named(tmp_path):
    from course_lib.config import get_profile

    with pytest.raises(ValueError, match="unknown methods \\['ppo'\\]"):
        Experiment(get_profile("smoke"), tmp_path, methods=("ppo",))


def test_last_kl_skips_steps_without_a_kl():
    assert last_kl([{"kl": 0.1}, {"kl": 0.3}, {"loss": 1.0}]) == 0.3
    assert last_kl([{"loss": 1.0}]) is None


def test_grid_neighbours_asks_for_the_ladder_value_beyond_each_open_side():
    tried = [(t, b) for t in (0.03, 0.1, 1.0) for b in (0.125, 0.25)]
    add, stuck = grid_neighbours((0.03, 0.25), tried, TAU_LADDER, BETA_LADDER)
    assert add == [(0.01, 0.25), (0.03, 0.5)] and stuck == []
    # inside on both axes: nothing to add (0.1 has 0.03 below and 1.0 above, betas both sides
    # once 0.0625 is tried)
    inner = [*tried, (0.1, 0.0625)]
    assert grid_neighbours((0.1, 0.125), inner, TAU_LADDER, BETA_LADDER) == ([], [])
    # the ladder's ends cannot be left, and are named
    add, stuck = grid_neighbours((30.0, 0.5), [(30.0, 0.5), (10.0, 0.5)], TAU_LADDER, BETA_LADDER)
    assert add == [(30.0, 0.25)] and stuck == ["tau above", "beta above"]
    # methods without beta have one axis; scaled ladders compare within rounding
    scaled = [t * 0.1 for t in TAU_LADDER]
    add, _ = grid_neighbours((0.1 * 0.03, 0.0), [(0.1 * 0.03, 0.0), (0.1 * 0.1, 0.0)], scaled)
    assert add == [(scaled[2], 0.0)]


def test_sweep_walks_off_an_edge_to_an_interior_best(monkeypatch, tmp_path):
    """The sweep's search with training and validation replaced by a known score, peaked at
    tau = 3, beta = 0.0625 (both off the cpu grid): it walks toward the peak and stops there."""
    import dataclasses

    from course_lib.config import get_profile

    prof = dataclasses.replace(get_profile("cpu"), eval_prompts=4, sweep_extend=3)
    exp = Experiment(prof, tmp_path, modes=("bt",), methods=("ipo_md",))
    trained = []

    def fake_train(method, tau, beta, seed, mode):
        trained.append((tau, beta))
        return (tau, beta), 0.0, []

    def score(point, mode, ref_val):  # best at (3.0, 0.0625): off both grids' edges
        tau, beta = point
        return 0.6 - 0.01 * (np.log10(tau) - np.log10(3.0)) ** 2 - 0.02 * (beta - 0.0625)

    monkeypatch.setattr(exp, "train", fake_train)
    monkeypatch.setattr(exp, "validate", score)
    # the grid's best (1, 0.125) asks for (3, 0.125) and (1, 0.0625); the new best (3, 0.125)
    # for (10, 0.125), (3, 0.0625) and (3, 0.25), of which the budget of 3 allows one
    selection, policy, _ = exp.sweep("ipo_md", "bt", exp._load_policy()[0])
    assert (selection["tau"], selection["beta"]) == (3.0, 0.125) and policy == (3.0, 0.125)
    assert trained[6:] == [(3.0, 0.125), (1.0, 0.0625), (10.0, 0.125)]
    assert [(e["tau"], e["beta"]) for e in selection["extended"]] == trained[6:]
    assert selection["at_edge"] == ["(3, 0.0625) not tried", "(3, 0.25) not tried"]
    assert len(exp.runs) == len(trained)  # every run is in sweep.csv
    # with budget enough it reaches the peak; beta's ladder ends there, which it names
    exp.profile = dataclasses.replace(prof, sweep_extend=20)
    trained.clear()
    selection, _, _ = exp.sweep("ipo_md", "bt", exp._load_policy()[0])
    assert (selection["tau"], selection["beta"]) == (3.0, 0.0625)
    assert selection["at_edge"] == ["beta below"]
    assert trained[-2:] == [(3.0, 0.25), (10.0, 0.0625)] and len(selection["extended"]) == 6
