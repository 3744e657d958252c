#!/usr/bin/env bash
# The real track trained for real (issue 14): IPO-MD, online IPO and online DPO on SmolLM2-135M in
# 4-bit NF4 with LoRA, each from the same initial adapter, then every trained adapter and pi_ref
# sampled on held-out prompts and judged by the oracle. Resumable: run it again after a kill and
# every method continues from its last checkpoint; a finished method is not trained again.
#
#   bash tools/real_trained.sh                 # the committed run: the cpu sizes below
#   STEPS=64 RUNS=runs/rt-64 OUT=results/real-trained-cpu/after-64-steps bash tools/real_trained.sh
#                                              # its half-way evaluation (the same runs' first 64)
#   PROFILE=gpu bash tools/real_trained.sh     # the gpu profile's sizes (100 steps x 16 prompts x 64)
#   STEPS=256 RUNS=runs/rt-256 bash tools/real_trained.sh  # any size; a new RUNS folder for new sizes
#
# Runs go to runs/real-trained-$PROFILE/<method>/ (checkpoints; not committed). A method whose
# adapter exists is not trained again; a method killed half-way resumes from its last checkpoint.
#
# The evaluation writes results/real-trained-$PROFILE/ (summary.json, samples.jsonl, the adapters
# as safetensors, each run's run.json and metrics.jsonl).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
PROFILE=${PROFILE:-cpu}
if [ "$PROFILE" = cpu ]; then
    # 30-45 minutes of step time per method on an idle 2-core CPU; the cpu profile's own sizes
    # (4 steps) are a smoke test of the machinery, too short to learn
    STEPS=${STEPS:-128}
    PROMPTS=${PROMPTS:-4}
    TOKENS=${TOKENS:-32}
fi
EVAL=${EVAL:-256}  # held-out test prompts: the gpu profile's number, on every profile
SIZES=()
[ -n "${STEPS:-}" ] && SIZES+=(--steps "$STEPS")
[ -n "${PROMPTS:-}" ] && SIZES+=(--prompts-per-step "$PROMPTS")
[ -n "${TOKENS:-}" ] && SIZES+=(--new-tokens "$TOKENS")
TAU=${TAU:-0.1}
BETA=${BETA:-0.125}
SEED=${SEED:-0}
METHODS=${METHODS:-ipo_md online_ipo online_dpo}
RUNS=${RUNS:-runs/real-trained-$PROFILE}
OUT=${OUT:-results/real-trained-$PROFILE}

for method in $METHODS; do
    if [ -f "$RUNS/$method/adapter/adapter_model.safetensors" ]; then
        echo "$method: trained already ($RUNS/$method/adapter)"
        continue
    fi
    start=$(date +%s)
    "$PYTHON" -m course_lib train --track real --profile "$PROFILE" --algorithm "$method" \
        --tau "$TAU" --beta "$BETA" "${SIZES[@]}" --seed "$SEED" --checkpoint-every 4 \
        --no-progress \
        --out "$RUNS/$method" --resume
    echo "$method: this call took $(( $(date +%s) - start )) s"
done

RUN_DIRS=$(for method in $METHODS; do printf '%s,' "$RUNS/$method"; done)
start=$(date +%s)
"$PYTHON" -m course_lib evaluate --runs "${RUN_DIRS%,}" --eval-prompts "$EVAL" --out "$OUT"
echo "evaluation took $(( $(date +%s) - start )) s"
