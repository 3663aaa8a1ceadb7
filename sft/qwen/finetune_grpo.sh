#!/usr/bin/env bash
# GRPO ablation of Qwen2.5-VL (trl's GRPOTrainer) with the published recipe (sft/qwen/grpo.yaml): language
# model frozen, vision tower and merger trained, the published reward (cogip/train/grpo.py).
# Variables: MODEL_ID DATA_PATH IMAGE_ROOT OUT NUM_GPUS GLOBAL_BATCH (4 completions a step) PER_DEVICE_BATCH (1);
# any `cogip grpo` option as an argument wins (e.g. --reward per-dimension-range, --tune_mode lora).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  cat <<'HELP'
usage: [VAR=value ...] bash sft/qwen/finetune_grpo.sh [cogip grpo options]

GRPO of Qwen2.5-VL (trl) with the published recipe (sft/qwen/grpo.yaml): language model frozen, vision tower
and merger trained, 2 generations per prompt, the published reward.

Variables: MODEL_ID DATA_PATH IMAGE_ROOT OUT NUM_GPUS GLOBAL_BATCH (4) PER_DEVICE_BATCH (1) MIN_PIXELS MAX_PIXELS
Main options: --reward published|per-dimension-range, --tune-mode frozen-llm|lora|full, --num-generations N,
  --max-steps N, --accel off; every option of docs/train.md's Model and Speed tables, and trl's GRPOConfig.
HELP
  exit 0
fi
source "$HERE/../../scripts/lib.sh"
devices=$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-1}
GRAD_ACCUM=$(( ${GLOBAL_BATCH:-4} / (PER_DEVICE_BATCH * devices) ))
(( GRAD_ACCUM >= 1 )) || GRAD_ACCUM=1
args=(--recipe "$HERE/grpo.yaml" --data_path "${DATA_PATH:-$ROOT/data/cognition_training.json}"
      --image_folder "${IMAGE_ROOT:-${IMAGE_FOLDER:-$ROOT/data/cognition/cognition_images}}"
      --output_dir "${OUT:-${OUTPUT_DIR:-$ROOT/outputs/grpo-qwen}}"
      --per_device_train_batch_size "$PER_DEVICE_BATCH" --gradient_accumulation_steps "$GRAD_ACCUM")
[ -n "${MODEL_ID:-}" ] && args+=(--model_id "$MODEL_ID")
[ -n "${MIN_PIXELS:-}" ] && args+=(--min_pixels "$MIN_PIXELS")
[ -n "${MAX_PIXELS:-}" ] && args+=(--max_pixels "$MAX_PIXELS")
if (( NUM_GPUS > 0 )); then args+=(--bf16 True --activation_checkpointing True); else args+=(--use_cpu True); fi
if (( NUM_GPUS > 1 )); then
  exec "$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" -m cogip grpo "${args[@]}" "$@"
fi
exec "$PYTHON" -m cogip grpo "${args[@]}" "$@"
