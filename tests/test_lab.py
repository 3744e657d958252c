"""`make lab` starts JupyterLab: start it headless, ask its API on localhost, stop it."""

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")
@pytest.mark.skipif(
    not (ROOT / ".venv" / ".stamp-base").exists(),
    reason="the course's .venv is not installed (run `make lab` once)",
)
def test_make_lab_serves_the_api(tmp_path):
    port, token = free_port(), secrets.token_hex(8)
    args = (
        f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token} "
        f"--ServerApp.root_dir={ROOT}"
    )
    env = {**os.environ, "JUPYTER_RUNTIME_DIR": str(tmp_path), "JUPYTER_CONFIG_DIR": str(tmp_path)}
    proc = subprocess.Popen(
        ["make", "-s", "lab", f"LAB_ARGS={args}"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.time() + 120
        status = None
        while time.time() < deadline and proc.poll() is None:
            try:
                url = f"http://127.0.0.1:{port}/api/status?token={token}"
                with urllib.request.urlopen(url, timeout=2) as resp:
                    status = json.loads(resp.read())
                break
            except OSError:
                time.sleep(1)
        assert status is not None, "JupyterLab did not answer on its API"
        assert "started" in status
        url = f"http://127.0.0.1:{port}/lab/api/settings?token={token}"
        with urllib.request.urlopen(url, timeout=10) as resp:  # the JupyterLab extension is up
            assert resp.status == 200
    finally:
        output = b""
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                output = proc.communicate(timeout=30)[0]
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
        else:  # it exited on its own: show why
            output = proc.communicate()[0]
            print(output.decode(errors="replace")[-3000:])
