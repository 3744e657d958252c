#!/usr/bin/env bash
# The course's one prepared GPU check: under 5 minutes on one GPU, it
#   1. prints the GPU, the library versions and `python -m course_lib check-env`;
#   2. runs the unit tests marked `gpu` (tests/test_gpu.py: NF4 with bf16 compute, the two-cache
#      mixture sampler, a 4-bit online step with LoRA, the CUDA memory estimate, SmolLM2 on CUDA);
#   3. trains IPO-MD for 20 steps on the embedded SmolLM2-135M-Instruct in 4-bit with LoRA
#      (`reproduce --track real`, gpu-profile batch and lengths), printing the memory and time
#      estimated before and measured after;
#   4. runs the sampling benchmark (mixture vs plain sampling cost, memory of fp32/bf16/NF4).
#
#   bash benchmarks/gpu_check.sh              # writes logs and results to gpu_check_out/
#   GPU_CHECK_OUT=/some/dir PYTHON=python3 bash benchmarks/gpu_check.sh
#
# Each step is time-limited and the script goes on after a failing step, so one run reports
# everything; it exits 1 if any step failed. Paste the figures into benchmarks/RESULTS.md with the
# GPU named (step 4 prints a ready-made section).
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${GPU_CHECK_OUT:-gpu_check_out}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
failed=()
start=$SECONDS

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $OUT/NAME.log
  local name=$1 limit=$2
  shift 2
  local t0=$SECONDS
  echo
  echo "=== $name (limit ${limit}s) ==="
  if timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.log"; then
    echo "[OK]   $name in $((SECONDS - t0)) s"
  else
    echo "[FAIL] $name after $((SECONDS - t0)) s (exit ${PIPESTATUS[0]})"
    failed+=("$name")
  fi
}

if ! command -v nvidia-smi >/dev/null || ! nvidia-smi >/dev/null 2>&1; then
  echo "[FAIL] no NVIDIA GPU here (nvidia-smi missing or failing): this script checks the GPU path"
  exit 1
fi
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/gpu.txt"
"$PY" - <<'EOF' | tee -a "$OUT/gpu.txt"
import importlib.metadata as md, platform, torch
names = ["torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors"]
vers = {n: (md.version(n) if n != "torch" else torch.__version__) for n in names}
print("python", platform.python_version(), "|", " ".join(f"{n} {v}" for n, v in vers.items()))
print("CUDA", torch.version.cuda, "| bf16", torch.cuda.is_bf16_supported())
EOF

step check_env 60 "$PY" -m course_lib check-env
step gpu_tests 90 "$PY" -m pytest -m gpu tests/test_gpu.py -q -p no:cacheprovider -o addopts="" -rs
# 16 prompts x 2 completions per step as in the gpu profile, 32 new tokens (not 64): decoding a
# 4-bit SmolLM2 is launch-bound on a GPU (about 70 ms a token on an H200, about 140 ms for the
# mixture's two forwards), so length, not batch, sets the time of this check.
step ipo_md_20_steps 170 "$PY" -m course_lib reproduce --track real --profile gpu \
  --methods ipo_md --steps 20 --new-tokens 32 --eval-prompts 32 --out "$OUT/real_ipo_md"
step bench_sampling 110 "$PY" benchmarks/bench_sampling.py --tokens 16,64 --batch 16 \
  --repeats 2 --smollm2-max-tokens 64 --nocache-max 16 --no-write

echo
echo "gpu_check: $((SECONDS - start)) s in all; outputs in $OUT/"
if ((${#failed[@]})); then
  echo "[FAIL] steps that failed: ${failed[*]}"
  exit 1
fi
echo "[OK] every step passed"
