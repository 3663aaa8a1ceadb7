#!/usr/bin/env bash
# GRPO ablation (trl GRPOTrainer), the published recipe by default: language model frozen, vision tower and
# merger trained, 2 generations per prompt, the published reward (cogip/train/grpo.py).
# Env: MODEL_ID DATA_PATH IMAGE_FOLDER OUTPUT_DIR NUM_GPUS  TUNE_MODE (frozen-llm | lora | full)
#      LR (1e-6) VISION_LR (2e-7) MERGER_LR (LR) NUM_GENERATIONS (2) PER_DEVICE_BATCH (1 completion)
#      GLOBAL_BATCH (4 completions a step: the published 4 GPUs x 1) REWARD (published | per-dimension-range)
#      MIN_PIXELS MAX_PIXELS (128*28*28, 256*28*28)  EPOCHS SAVE_STEPS REPORT_TO SEED; extra args pass through.
set -euo pipefail
source "$(dirname "$0")/../../scripts/lib.sh"
devices=$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-1}
GRAD_ACCUM=$(( ${GLOBAL_BATCH:-4} / (PER_DEVICE_BATCH * devices) ))
(( GRAD_ACCUM >= 1 )) || GRAD_ACCUM=1
LR=${LR:-1e-6}
args=(--model_id "${MODEL_ID:-Qwen/Qwen2.5-VL-7B-Instruct}" --family qwen --tune_mode "${TUNE_MODE:-frozen-llm}"
      --data_path "${DATA_PATH:-$ROOT/data/cognition_training.json}"
      --image_folder "${IMAGE_FOLDER:-$ROOT/data/cognition/cognition_images}"
      --output_dir "${OUTPUT_DIR:-$ROOT/outputs/grpo-qwen}"
      --learning_rate "$LR" --vision_lr "${VISION_LR:-2e-7}" --merger_lr "${MERGER_LR:-$LR}"
      --reward "${REWARD:-published}" --num_generations "${NUM_GENERATIONS:-2}"
      --per_device_train_batch_size "$PER_DEVICE_BATCH" --gradient_accumulation_steps "$GRAD_ACCUM"
      --max_completion_length 256 --beta 0.04 --temperature 0.9 --top_k 50 --loss_type bnpo
      --min_pixels "${MIN_PIXELS:-$((128 * 28 * 28))}" --max_pixels "${MAX_PIXELS:-$((256 * 28 * 28))}"
      --weight_decay 0.1 --warmup_steps 0.03 --lr_scheduler_type cosine --num_train_epochs "${EPOCHS:-1}"
      --lora_r 64 --lora_alpha 64 --lora_dropout 0.05 --logging_steps 1 --save_steps "${SAVE_STEPS:-100}"
      --report_to "${REPORT_TO:-tensorboard}" --seed "${SEED:-42}")
if (( NUM_GPUS > 0 )); then args+=(--bf16 True --activation_checkpointing True); else args+=(--use_cpu True); fi
if (( NUM_GPUS > 1 )); then
  exec "$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" -m cogip.train.grpo "${args[@]}" "$@"
fi
exec "$PYTHON" -m cogip.train.grpo "${args[@]}" "$@"
