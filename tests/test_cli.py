"""Every mistake a user can make on the command line: one line naming the value, exit 2, no
traceback, no file of theirs lost, no empty folder left behind."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from course_lib.atomic import MARKER
from course_lib.commands import main


def run_cli(capsys, *argv):
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_clear_error(code, err, *needles):
    assert code == 2, err
    assert "Traceback" not in err
    first = err.strip().splitlines()[0]
    for needle in needles:
        assert needle in first, (needle, first)


@pytest.fixture
def user_folder(tmp_path):
    """A folder holding a file of the user's, which no command may delete or change."""
    folder = tmp_path / "mine"
    folder.mkdir()
    (folder / "notes.txt").write_text("my notes")
    return folder


def assert_untouched(folder):
    assert sorted(p.name for p in folder.iterdir()) == ["notes.txt"]
    assert (folder / "notes.txt").read_text() == "my notes"


def test_unknown_command(capsys):
    code, _, err = run_cli(capsys, "trian")
    assert_clear_error(code, err, "'trian'", "train")


def test_bad_profile(capsys, tmp_path):
    code, _, err = run_cli(capsys, "reproduce", "--profile", "huge", "--out", str(tmp_path / "o"))
    assert_clear_error(code, err, "'huge'", "smoke, cpu, gpu")
    assert not (tmp_path / "o").exists()


def test_bad_modes_leave_no_folder(capsys, tmp_path):
    out = tmp_path / "o"
    code, _, err = run_cli(
        capsys, "reproduce", "--profile", "smoke", "--modes", "bogus", "--out", str(out)
    )
    assert_clear_error(code, err, "bogus", "bt, nt")
    assert not out.exists()


def test_bad_methods(capsys, tmp_path):
    code, _, err = run_cli(
        capsys, "reproduce", "--profile", "smoke", "--methods", "ppo", "--out", str(tmp_path / "o")
    )
    assert_clear_error(code, err, "'ppo'", "online_ipo")


def test_out_under_a_file(capsys, tmp_path):
    (tmp_path / "afile").write_text("x")
    for command in (["reproduce"], ["reproduce", "--track", "real"], ["train"]):
        code, _, err = run_cli(
            capsys, *command, "--profile", "smoke", "--out", str(tmp_path / "afile" / "sub")
        )
        assert_clear_error(code, err, "is a file")
    assert (tmp_path / "afile").read_text() == "x"


@pytest.mark.parametrize(
    "command",
    [["reproduce"], ["reproduce", "--track", "real"], ["train"]],
    ids=["reproduce", "reproduce-real", "train"],
)
def test_a_folder_of_the_users_is_refused(capsys, user_folder, command):
    code, _, err = run_cli(capsys, *command, "--profile", "smoke", "--out", str(user_folder))
    assert_clear_error(code, err, str(user_folder), "did not write")
    assert_untouched(user_folder)


def test_another_commands_folder_is_refused(capsys, tmp_path):
    out = tmp_path / "o"
    out.mkdir()
    (out / MARKER).write_text(json.dumps({"command": "python -m course_lib reproduce"}))
    code, _, err = run_cli(capsys, "train", "--profile", "smoke", "--out", str(out))
    assert_clear_error(code, err, "holds the output of")


def test_malformed_jsonl_line_is_named_before_loading(capsys, tmp_path):
    bad = tmp_path / "bad.jsonl"
    bad.write_text(
        '{"prompt": "SUBREDDIT: r/x\\nPOST: hello\\nTL;DR:", "completion": "hi"}\n{not json\n'
    )
    judge = tmp_path / "judge"
    judge.mkdir()
    (judge / "config.json").write_text("{}")
    code, _, err = run_cli(
        capsys,
        "reproduce",
        "--track",
        "real",
        "--profile",
        "smoke",
        "--prompts",
        str(bad),
        "--judge",
        str(judge),
        "--out",
        str(tmp_path / "o"),
    )
    assert_clear_error(code, err, "bad.jsonl", "2")
    assert not (tmp_path / "o").exists()


def test_missing_judge_folder(capsys, tmp_path):
    code, _, err = run_cli(
        capsys,
        "reproduce",
        "--track",
        "real",
        "--profile",
        "smoke",
        "--judge",
        str(tmp_path / "missing"),
        "--out",
        str(tmp_path / "o"),
    )
    assert_clear_error(code, err, "missing", "config.json")
    code, _, err = run_cli(
        capsys, "train", "--judge", str(tmp_path / "missing"), "--out", str(tmp_path / "o")
    )
    assert_clear_error(code, err, "missing", "config.json")
    assert not (tmp_path / "o").exists()


def test_unknown_model_offline(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    code, _, err = run_cli(
        capsys,
        "reproduce",
        "--track",
        "real",
        "--profile",
        "smoke",
        "--model",
        "nobody/no-such-model",
        "--out",
        str(tmp_path / "o"),
    )
    assert_clear_error(code, err, "'nobody/no-such-model'", "embedded")
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    "option, value, needle",
    [
        ("--lr", "inf", "lr=inf"),
        ("--lr", "nan", "lr=nan"),
        ("--lr", "-1", "lr=-1.0"),
        ("--tau", "0", "tau=0.0"),
        ("--beta", "1.5", "beta=1.5"),
        ("--steps", "0", "steps=0"),
        ("--algorithm", "ppo", "'ppo'"),
        ("--label", "hard", "'hard'"),
        ("--track", "huge", "'huge'"),
        ("--mode", "xx", "'xx'"),
    ],
)
def test_train_refuses_bad_numbers_before_loading(capsys, tmp_path, option, value, needle):
    out = tmp_path / "o"
    code, _, err = run_cli(capsys, "train", option, value, "--out", str(out))
    assert_clear_error(code, err, needle)
    assert not out.exists()


def test_train_refuses_to_overwrite_a_run_without_resume(capsys, tmp_path):
    out = tmp_path / "o"
    (out / "checkpoint").mkdir(parents=True)
    (out / MARKER).write_text(json.dumps({"command": "python -m course_lib train"}))
    (out / "checkpoint" / "state.json").write_text(json.dumps({"step": 3}))
    code, _, err = run_cli(capsys, "train", "--out", str(out))
    assert_clear_error(code, err, "step 3", "--resume")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ValueError, match="lr=inf"):
        main(["train", "--lr", "inf", "--out", str(tmp_path / "o"), "--debug"])


def test_the_real_entry_point_prints_one_line(tmp_path):
    """Through `python -m course_lib` itself: no traceback, no bitsandbytes noise, exit 2."""
    proc = subprocess.run(
        [sys.executable, "-m", "course_lib", "train", "--lr", "inf", "--out", str(tmp_path / "o")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert lines[0].startswith("python -m course_lib: error: lr=inf is invalid"), proc.stderr
    assert "Traceback" not in proc.stderr
    assert not (tmp_path / "o").exists()
