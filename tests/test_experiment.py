"""`python -m course_lib reproduce` end to end at smoke size, on the committed tiny policy."""

import json

import numpy as np
import pytest

from course_lib.commands import main
from course_lib.experiments.tiny import Experiment, last_kl
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
