"""Kill `python -m course_lib train` with SIGKILL at random moments, resume it, compare bit for bit.

    python tools/fault_test.py --kills 24 --steps 50 --report results/fault-test/report.json

1. An uninterrupted run of the tiny track writes its checkpoint, final weights and metrics log.
2. The same command with ``--resume`` is started again and again into a second folder; each life
   is killed with SIGKILL at a random moment after it has logged a new step (so kills land inside
   steps, checkpoint writes, log appends and the final save alike), until ``--kills`` kills have
   been dealt; then it is let finish.
3. The final trainable weights (``checkpoint/trainable.safetensors``, ``policy/model.safetensors``),
   the optimiser state and ``metrics.jsonl`` of both runs must be byte for byte equal.

Exit status 0 when they are; the report (JSON) says how many kills were dealt, how many left a
temporary checkpoint folder behind (a kill during a checkpoint write), and which files matched.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMPARED = (
    "metrics.jsonl",
    "checkpoint/trainable.safetensors",
    "checkpoint/optimizer.safetensors",
    "policy/model.safetensors",
)


def command(out: Path, steps: int, resume: bool) -> list[str]:
    cmd = [sys.executable, "-m", "course_lib", "train", "--track", "tiny"]
    cmd += ["--algorithm", "ipo_md", "--beta", "0.25", "--tau", "0.1", "--label", "sampled"]
    cmd += ["--steps", str(steps), "--prompts-per-step", "2", "--new-tokens", "8"]
    cmd += ["--checkpoint-every", "1", "--monitor-every", "3", "--profile", "smoke"]
    cmd += ["--out", str(out), "--no-progress"]
    return cmd + (["--resume"] if resume else [])


def env() -> dict:
    return {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "PYTHONHASHSEED": "0"}


def machine() -> str:
    """The CPU's model name and core count (the figures belong to a machine)."""
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, {os.cpu_count()} cores"


def logged_steps(out: Path) -> int:
    try:
        return sum(1 for line in (out / "metrics.jsonl").read_text().splitlines() if line.strip())
    except OSError:
        return 0


def digest(path: Path) -> str | None:
    return hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else None


def killed_run(out: Path, steps: int, kills: int, step_seconds: float, rng: random.Random):
    dealt, during_write, lives = 0, 0, 0
    while True:
        lives += 1
        proc = subprocess.Popen(
            command(out, steps, resume=True),
            env=env(),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        if dealt >= kills:  # enough: let this life finish
            _, err = proc.communicate(timeout=600)
            if proc.returncode != 0:
                raise RuntimeError(f"the last life failed ({proc.returncode}): {err.decode()}")
            return {"kills": dealt, "kills_during_checkpoint_write": during_write, "lives": lives}
        start_lines = logged_steps(out)
        deadline = time.monotonic() + 300
        # wait for this life to log a step (resumed runs first rewrite the log to the checkpoint)
        while proc.poll() is None and time.monotonic() < deadline:
            if logged_steps(out) > start_lines:
                break
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.5 * step_seconds))
        if proc.poll() is None:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
            dealt += 1
            if any(out.glob(".checkpoint-*")) or (out / "checkpoint.old").exists():
                during_write += 1
        elif proc.returncode != 0:
            raise RuntimeError(f"a life failed ({proc.returncode}): {proc.stderr.read().decode()}")
        else:  # it finished before the kill: start again (a finished run resumes to a no-op)
            if dealt < kills and logged_steps(out) >= steps:
                return {
                    "kills": dealt,
                    "kills_during_checkpoint_write": during_write,
                    "lives": lives,
                    "finished_early": True,
                }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=20)
    parser.add_argument("--steps", type=int, default=50)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--report", default=None, help="write the JSON report here")
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    with tempfile.TemporaryDirectory(prefix="course_fault_") as tmp:
        clean, faulty = Path(tmp) / "clean", Path(tmp) / "faulty"
        t0 = time.perf_counter()
        subprocess.run(
            command(clean, args.steps, resume=False),
            env=env(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        clean_seconds = time.perf_counter() - t0
        timing = [json.loads(x) for x in (clean / "timing.jsonl").read_text().splitlines()]
        # a step's wall time as seen from outside: its own seconds plus the checkpoint write
        step_seconds = max(0.2, 2.0 * sum(t["seconds"] for t in timing) / len(timing))
        t0 = time.perf_counter()
        stats = killed_run(faulty, args.steps, args.kills, step_seconds, rng)
        faulty_seconds = time.perf_counter() - t0
        files = {
            name: {"clean": digest(clean / name), "resumed": digest(faulty / name)}
            for name in COMPARED
        }
        identical = all(
            v["clean"] is not None and v["clean"] == v["resumed"] for v in files.values()
        )
    report = {
        "command": " ".join(command(Path("OUT"), args.steps, resume=True)[1:]),
        "machine": machine(),
        "steps": args.steps,
        **stats,
        "identical": identical,
        "files": {k: v["clean"] == v["resumed"] for k, v in files.items()},
        "seconds_uninterrupted": round(clean_seconds, 1),
        "seconds_with_kills": round(faulty_seconds, 1),
    }
    text = json.dumps(report, indent=1)
    print(text)
    if args.report:
        sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
        from course_lib.atomic import atomic_write_text

        atomic_write_text(args.report, text + "\n")
    return 0 if identical else 1


if __name__ == "__main__":
    sys.exit(main())
