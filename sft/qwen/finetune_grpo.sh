#!/usr/bin/env bash
# GRPO ablation on the GRPO JSON (trl GRPOTrainer), reward 1 - |pred - gt| / range, -0.5 if unparseable.
# Env: MODEL_ID DATA_PATH IMAGE_FOLDER OUTPUT_DIR NUM_GPUS LR NUM_GENERATIONS; extra args pass through.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
args=(--model_id "${MODEL_ID:-Qwen/Qwen2.5-VL-7B-Instruct}" --family qwen
      --data_path "${DATA_PATH:-$ROOT/data/training_grpo.json}"
      --image_folder "${IMAGE_FOLDER:-$ROOT/data/cognition/cognition_images}"
      --output_dir "${OUTPUT_DIR:-$ROOT/outputs/grpo-qwen}"
      --learning_rate "${LR:-1e-6}" --num_generations "${NUM_GENERATIONS:-8}" --max_completion_length 32
      --per_device_train_batch_size "${PER_DEVICE_BATCH:-8}" --num_train_epochs "${EPOCHS:-1}"
      --lora_r 64 --lora_alpha 64 --lora_dropout 0.05 --logging_steps 1 --save_steps "${SAVE_STEPS:-100}"
      --report_to "${REPORT_TO:-tensorboard}" --seed "${SEED:-42}")
if (( NUM_GPUS > 0 )); then args+=(--bf16 True --activation_checkpointing True); else args+=(--use_cpu True); fi
if (( NUM_GPUS > 1 )); then
  exec "$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" -m cogip.train.grpo "${args[@]}" "$@"
fi
exec "$PYTHON" -m cogip.train.grpo "${args[@]}" "$@"
