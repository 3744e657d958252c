"""A 2-process `accelerate launch` on the CPU ends with identical weights in both processes."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

WORKER = Path(__file__).with_name("ddp_worker.py")


@pytest.mark.slow
def test_two_process_data_parallel_keeps_weights_identical(tmp_path):
    # `accelerate launch --cpu` starts one process; several CPU processes go through its torchrun
    # launcher (--multi_gpu), and the worker's Accelerator(cpu=True) then uses the gloo backend.
    cmd = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--multi_gpu",
        "--num_processes",
        "2",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        str(WORKER),
        str(tmp_path),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "ACCELERATE_CONFIG_FILE": "/dev/null"}
    env["PYTHONPATH"] = str(WORKER.parent.parent) + os.pathsep + env.get("PYTHONPATH", "")
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    w0 = load_file(str(tmp_path / "rank0.safetensors"))
    w1 = load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys() and w0
    for name in w0:
        assert torch.equal(w0[name], w1[name]), name
    assert any(w0[n].abs().sum() > 0 for n in w0 if "lora_B" in n)  # training moved the adapter
    b0 = load_file(str(tmp_path / "batch0.safetensors"))["ids"]
    b1 = load_file(str(tmp_path / "batch1.safetensors"))["ids"]
    assert not torch.equal(b0, b1)  # each process drew its own prompts
