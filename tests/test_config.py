import dataclasses

import pytest

from course_lib import config
from course_lib.config import PROFILES, get_profile


def test_profiles_share_fields_and_grow_with_size():
    smoke, cpu, gpu = PROFILES["smoke"], PROFILES["cpu"], PROFILES["gpu"]
    for field in dataclasses.fields(config.Profile):
        value = getattr(smoke, field.name)
        if isinstance(value, int) and not isinstance(value, bool):
            # a bigger profile never does less work than a smaller one
            assert value <= getattr(cpu, field.name) <= getattr(gpu, field.name), field.name


def test_env_var_selects_profile(monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, "gpu")
    assert get_profile().name == "gpu"
    monkeypatch.setenv(config.ENV_VAR, " Smoke ")
    assert get_profile().name == "smoke"


def test_default_follows_hardware(monkeypatch):
    monkeypatch.delenv(config.ENV_VAR, raising=False)
    monkeypatch.setattr(config, "default_profile_name", lambda: "cpu")
    assert get_profile().name == "cpu"


def test_bad_profile_names_value_and_valid_ones(monkeypatch):
    monkeypatch.setenv(config.ENV_VAR, "fast")
    with pytest.raises(ValueError) as err:
        get_profile()
    message = str(err.value)
    assert "'fast'" in message and "$COURSE_PROFILE" in message
    for name in ("smoke", "cpu", "gpu"):
        assert name in message
    with pytest.raises(ValueError, match="'huge'"):
        get_profile("huge")


def test_setup_notebook_seeds_and_returns_profile(capsys):
    import numpy as np
    import torch

    from course_lib import setup_notebook

    prof = setup_notebook(seed=3, profile="smoke")
    a = (np.random.rand(), torch.rand(1).item())  # noqa: NPY002 (the global state is the point)
    setup_notebook(seed=3, profile="smoke")
    b = (np.random.rand(), torch.rand(1).item())  # noqa: NPY002
    assert a == b
    assert prof.name == "smoke"
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert line.startswith("[course] profile=smoke") and "torch=" in line and "device=" in line
