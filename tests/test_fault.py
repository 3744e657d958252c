"""Kill `python -m course_lib train` with SIGKILL and resume it: the result is bit for bit the
uninterrupted run's. (A run with 24 kills is committed in results/fault-test/report.json.)"""

import json
import subprocess
import sys
from pathlib import Path

import pytest

TOOL = Path(__file__).resolve().parent.parent / "tools" / "fault_test.py"


@pytest.mark.slow
def test_killed_and_resumed_run_equals_the_uninterrupted_one(tmp_path):
    report = tmp_path / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            str(TOOL),
            "--kills",
            "3",
            "--steps",
            "10",
            "--seed",
            "7",
            "--report",
            str(report),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    result = json.loads(report.read_text())
    assert result["identical"] and all(result["files"].values())
    assert result["kills"] >= 1
