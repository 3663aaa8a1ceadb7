# Shared body of sft/<family>/finetune_lora.sh (sourced): picks the launcher and passes the recipe through.
# The hyperparameters are recipe files (sft/recipe.yaml, sft/$FAMILY/recipe.yaml; on a GPU also sft/gpu.yaml
# and sft/$FAMILY/gpu.yaml); any `cogip train` option given as an argument wins (docs/train.md).
set -euo pipefail
SFT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$SFT_DIR/../scripts/lib.sh"
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  cat <<HELP
usage: [VAR=value ...] bash sft/$FAMILY/finetune_lora.sh [cogip train options]

Soft-label LoRA SFT of the $FAMILY family with the published recipe (sft/recipe.yaml, sft/$FAMILY/recipe.yaml).

Variables:
  MODEL_ID          the model to fine-tune (default: the recipe's)
  DATA_PATH         training JSON (data/cognition_training.json)
  IMAGE_ROOT        image folder (data/cognition/cognition_images)
  OUT               output folder (outputs/sft-$FAMILY)
  NUM_GPUS          GPUs to train on (default: all visible; 0 = CPU)
  GLOBAL_BATCH      samples per optimizer step (128); PER_DEVICE_BATCH (4): accumulation follows
  DS_CONFIG         DeepSpeed config (sft/deepspeed/zero2.json on several GPUs; "" for none)
  FSDP_CONFIG       PyTorch FSDP2 instead (sft/fsdp/fsdp2.json)
  LAUNCHER          deepspeed | torchrun | python (default: from the above); MASTER_PORT (29500)
  MIN_PIXELS, MAX_PIXELS   Qwen's image-size bounds (default: the published 256·28², 1280·28²)

Main options (every one: docs/train.md; all of TrainingArguments too: --help-all):
  --learning-rate, --num-train-epochs, --max-steps   the usual Trainer options
  --tune-mode lora|full|frozen-llm                   what trains (lora, as published)
  --soft-kernel published|narrow-triangle|gaussian|uniform, --soft-eta, --soft-lambda, --soft-labels False
  --resume-from-checkpoint last                      go on from the newest checkpoint in OUT
  --accel off                                        the plain transformers path (no speed work)
HELP
  exit 0
fi
[[ " $* " == *" --help-all "* ]] && exec "$PYTHON" -m cogip train --help
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-4}
devices=$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))
GRAD_ACCUM=$(( GLOBAL_BATCH / (PER_DEVICE_BATCH * devices) ))
(( GRAD_ACCUM >= 1 )) || GRAD_ACCUM=1
OUT=${OUT:-${OUTPUT_DIR:-$ROOT/outputs/sft-$FAMILY}}
IMAGE_ROOT=${IMAGE_ROOT:-${IMAGE_FOLDER:-$ROOT/data/cognition/cognition_images}}

FSDP_CONFIG=${FSDP_CONFIG:-}
if [ -n "$FSDP_CONFIG" ]; then   # one sharding engine per run
  [ -n "${DS_CONFIG:-}" ] && { echo "cogip train: set DS_CONFIG or FSDP_CONFIG, not both" >&2; exit 2; }
  DS_CONFIG=""
fi
recipes=("$SFT_DIR/recipe.yaml" "$SFT_DIR/$FAMILY/recipe.yaml")
if (( NUM_GPUS > 0 )); then
  recipes+=("$SFT_DIR/gpu.yaml")
  [ -f "$SFT_DIR/$FAMILY/gpu.yaml" ] && recipes+=("$SFT_DIR/$FAMILY/gpu.yaml")
  # ZeRO-2 on several GPUs; on one, the family's measured choice (ONE_GPU_DS in its launcher)
  if (( NUM_GPUS > 1 )); then ds_default=$SFT_DIR/deepspeed/zero2.json; else ds_default=${ONE_GPU_DS-$SFT_DIR/deepspeed/zero2.json}; fi
  DS_CONFIG=${DS_CONFIG-$ds_default}
  device_args=()
  [ -n "$DS_CONFIG" ] && device_args+=(--deepspeed "$DS_CONFIG")
  [ -n "$FSDP_CONFIG" ] && device_args+=(--fsdp --fsdp_config "$FSDP_CONFIG")
else   # the same script on a CPU: the demo and the tests use it unchanged
  DS_CONFIG=""
  device_args=(--use_cpu True --dataloader_num_workers 0)
fi
args=(--recipe "${recipes[@]}" --data_path "${DATA_PATH:-$ROOT/data/cognition_training.json}" --image_folder "$IMAGE_ROOT"
      --output_dir "$OUT" --per_device_train_batch_size "$PER_DEVICE_BATCH" --gradient_accumulation_steps "$GRAD_ACCUM"
      "${device_args[@]}")
[ -n "${MODEL_ID:-}" ] && args+=(--model_id "$MODEL_ID")
[ -n "${MIN_PIXELS:-}" ] && args+=(--min_pixels "$MIN_PIXELS")
[ -n "${MAX_PIXELS:-}" ] && args+=(--max_pixels "$MAX_PIXELS")
args+=("$@")

LAUNCHER=${LAUNCHER:-$( { (( NUM_GPUS > 1 )) || { [ -n "$FSDP_CONFIG" ] && (( NUM_GPUS > 0 )); }; } && { [ -n "$DS_CONFIG" ] && echo deepspeed || echo torchrun; } || echo python)}
echo "cogip train: family=$FAMILY gpus=$NUM_GPUS per_device=$PER_DEVICE_BATCH accumulation=$GRAD_ACCUM launcher=$LAUNCHER" >&2
case "$LAUNCHER" in
  deepspeed) exec deepspeed --num_gpus "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" --module cogip train "${args[@]}" ;;
  torchrun)  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" \
               -m cogip train "${args[@]}" ;;
  python)    exec "$PYTHON" -m cogip train "${args[@]}" ;;
  *) echo "cogip train: unknown LAUNCHER=$LAUNCHER" >&2; exit 2 ;;
esac
