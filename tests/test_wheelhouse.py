"""`make wheelhouse` for a lab room without internet: the folder it builds installs into a fresh
virtual environment with pip's index switched off. (A small requirement list stands in for the
lock files, whose torch alone is gigabytes; the mechanism is the same.)"""

from __future__ import annotations

import os
import subprocess
import sys
import venv
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_a_wheelhouse_installs_with_the_index_disabled(tmp_path):
    reqs = tmp_path / "reqs.txt"
    reqs.write_text("packaging==24.2\n")
    house = tmp_path / "wheelhouse"
    env = {**os.environ, "WHEELHOUSE_REQUIREMENTS": str(reqs)}
    built = subprocess.run(
        ["bash", str(ROOT / "tools" / "wheelhouse.sh"), sys.executable, str(house), "", ""],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    if built.returncode != 0 and "Could not find" in built.stderr + built.stdout:
        pytest.skip("the package index cannot be reached here")
    assert built.returncode == 0, built.stderr
    names = sorted(p.name for p in house.iterdir())
    assert any(n.startswith("course_lib-") and n.endswith(".whl") for n in names), names
    assert any(n.startswith("packaging-24.2") for n in names), names

    target = tmp_path / "lab-venv"
    venv.EnvBuilder(with_pip=True).create(target)
    python = target / "bin" / "python"
    install = [str(python), "-m", "pip", "install", "-q", "--no-index", "--find-links", str(house)]
    for what in (["-r", str(reqs)], ["--no-deps", "course-lib"]):
        done = subprocess.run(install + what, capture_output=True, text=True, timeout=600)
        assert done.returncode == 0, done.stderr
    shown = subprocess.run(
        [str(python), "-c", "import importlib.metadata as m; print(m.version('course-lib'))"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.stdout.strip() == "0.1.0"
    # and with the index off, a package that is not in the folder is refused, not downloaded
    missing = subprocess.run(install + ["six"], capture_output=True, text=True, timeout=120)
    assert missing.returncode != 0
