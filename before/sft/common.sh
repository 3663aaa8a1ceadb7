# Shared body of sft/<family>/finetune_lora.sh (sourced, not run). The family script sets FAMILY and
# its published defaults; everything here is overridable by environment variables, and any extra
# arguments are passed last to `python -m cogip.train.sft`, so they win over the defaults.
#
#   MODEL_ID DATA_PATH IMAGE_FOLDER OUTPUT_DIR  model, data, images, output
#   NUM_GPUS (auto)  GLOBAL_BATCH (128)  PER_DEVICE_BATCH (4)  -> accumulation computed
#   DS_CONFIG (sft/deepspeed/zero2.json on GPUs, on one GPU the family's DEFAULT_ONE_GPU_DS; "" for none)
#   LAUNCHER (deepspeed|torchrun|python)  MASTER_PORT (29500; another for a second run on the same host)
#   FSDP_CONFIG (instead of DeepSpeed: PyTorch FSDP2 via accelerate, e.g. sft/fsdp/fsdp2.json; torchrun)
#   TUNE_MODE (lora|full)  LR  VISION_LR  MERGER_LR  EPOCHS  SOFT_LABELS  SOFT_ETA  SOFT_LAMBDA  ADAM_BETA2
#   SOFT_KERNEL (published | narrow-triangle | gaussian | uniform)  SOFT_MULTIDIGIT (False; cogip/loss.py)
#   GPU only: GRADIENT_CHECKPOINTING (True)  CHECKPOINT_PARTS (family default: where recomputing pays; e.g.
#                          vision=24: only the first 24 vision blocks, the rest keep their activations;
#                          vision=9+31: the first 9 whole, the next 31 only their MLP)
#             CHECKPOINT_KEEP (none, or attention: checkpointed blocks keep their attention outputs)
#             GRAPH_PARTS (the family's DEFAULT_GRAPH_PARTS, e.g. language for Llama, else none;
#                          language | vision | all: those blocks compiled and replayed as CUDA graphs; not with
#                          their checkpointing, ZeRO-3 or FSDP: there a family default steps aside, with a printed
#                          line, and an explicit value is an error)
#             CAST_VISION_NORMS (True: one bf16 copy of a vision norm's float32 output under autocast)
#             LIGER (family default: Liger's fused kernels where they measured faster; needs .[gpu])
#             SDPA_BACKENDS (auto, or a comma list of cudnn, flash, efficient: the fused attention kernels allowed)
set -euo pipefail
SFT_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
source "$SFT_DIR/../scripts/lib.sh"
GLOBAL_BATCH=${GLOBAL_BATCH:-128}
PER_DEVICE_BATCH=${PER_DEVICE_BATCH:-4}
devices=$(( NUM_GPUS > 0 ? NUM_GPUS : 1 ))
GRAD_ACCUM=${GRAD_ACCUM:-$(( GLOBAL_BATCH / (PER_DEVICE_BATCH * devices) ))}
(( GRAD_ACCUM >= 1 )) || GRAD_ACCUM=1

FSDP_CONFIG=${FSDP_CONFIG:-}
if [ -n "$FSDP_CONFIG" ]; then   # one sharding engine per run
  [ -n "${DS_CONFIG:-}" ] && { echo "cogip sft: set DS_CONFIG or FSDP_CONFIG, not both" >&2; exit 2; }
  DS_CONFIG=""
fi
if (( NUM_GPUS > 0 )); then
  # ZeRO-2 on several GPUs; on one, the family's measured choice (DEFAULT_ONE_GPU_DS, e.g. none for Llama)
  if (( NUM_GPUS > 1 )); then ds_default=$SFT_DIR/deepspeed/zero2.json
  else ds_default=${DEFAULT_ONE_GPU_DS-$SFT_DIR/deepspeed/zero2.json}; fi
  DS_CONFIG=${DS_CONFIG-$ds_default}
  device_args=(--bf16 True --activation_checkpointing "${GRADIENT_CHECKPOINTING:-True}" --dataloader_num_workers 4
               --checkpoint_parts "${CHECKPOINT_PARTS:-${DEFAULT_CHECKPOINT_PARTS:-all}}"
               --checkpoint_keep "${CHECKPOINT_KEEP:-${DEFAULT_CHECKPOINT_KEEP:-none}}"
               --graph_parts "${GRAPH_PARTS:-${DEFAULT_GRAPH_PARTS:-none}}"
               --graph_parts_fallback "$([ -z "${GRAPH_PARTS:-}" ] && echo True || echo False)"
               --cast_vision_norms "${CAST_VISION_NORMS:-True}"
               --use_liger_kernel "${LIGER:-${DEFAULT_LIGER:-False}}"
               --sdpa_backends "${SDPA_BACKENDS:-${DEFAULT_SDPA_BACKENDS:-auto}}")
  [ -n "$DS_CONFIG" ] && device_args+=(--deepspeed "$DS_CONFIG")
  [ -n "$FSDP_CONFIG" ] && device_args+=(--fsdp --fsdp_config "$FSDP_CONFIG")
else   # the same script on a CPU: the demo and the tests use it unchanged
  DS_CONFIG=""
  device_args=(--use_cpu True --activation_checkpointing "${GRADIENT_CHECKPOINTING:-False}" --dataloader_num_workers 0)
fi

args=(
  --model_id "${MODEL_ID:-$DEFAULT_MODEL_ID}" --family "$FAMILY" --tune_mode "${TUNE_MODE:-lora}"
  --data_path "${DATA_PATH:-$ROOT/data/cognition_training.json}"
  --image_folder "${IMAGE_FOLDER:-$ROOT/data/cognition/cognition_images}"
  --output_dir "${OUTPUT_DIR:-$ROOT/outputs/sft-$FAMILY-${TUNE_MODE:-lora}}"
  --lora_r 64 --lora_alpha 64 --lora_dropout 0.05
  --learning_rate "${LR:-$DEFAULT_LR}" --vision_lr "${VISION_LR:-2e-6}" --merger_lr "${MERGER_LR:-1e-5}"
  --adam_beta2 "${ADAM_BETA2:-$DEFAULT_ADAM_BETA2}" --weight_decay 0.1 --warmup_steps 0.03 --lr_scheduler_type cosine
  --num_train_epochs "${EPOCHS:-1}" --per_device_train_batch_size "$PER_DEVICE_BATCH"
  --gradient_accumulation_steps "$GRAD_ACCUM" --activation_checkpointing_kwargs '{"use_reentrant": false}'
  --soft_labels "${SOFT_LABELS:-True}" --soft_eta "${SOFT_ETA:-$DEFAULT_SOFT_ETA}" --soft_lambda "${SOFT_LAMBDA:-2.0}"
  --soft_kernel "${SOFT_KERNEL:-published}" --soft_multidigit "${SOFT_MULTIDIGIT:-False}"
  --logging_steps 1 --save_strategy steps --save_steps "${SAVE_STEPS:-100}" --save_total_limit 3
  --report_to "${REPORT_TO:-tensorboard}" --seed "${SEED:-42}"
  "${device_args[@]}" "${FAMILY_ARGS[@]}" "$@"
)

LAUNCHER=${LAUNCHER:-$( { (( NUM_GPUS > 1 )) || { [ -n "$FSDP_CONFIG" ] && (( NUM_GPUS > 0 )); }; } && { [ -n "$DS_CONFIG" ] && echo deepspeed || echo torchrun; } || echo python)}
echo "cogip sft: family=$FAMILY gpus=$NUM_GPUS per_device=$PER_DEVICE_BATCH accumulation=$GRAD_ACCUM launcher=$LAUNCHER" >&2
case "$LAUNCHER" in
  deepspeed) exec deepspeed --num_gpus "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" --module cogip.train.sft "${args[@]}" ;;
  torchrun)  exec "$PYTHON" -m torch.distributed.run --nproc_per_node "$NUM_GPUS" --master_port "${MASTER_PORT:-29500}" \
               -m cogip.train.sft "${args[@]}" ;;
  python)    exec "$PYTHON" -m cogip.train.sft "${args[@]}" ;;
  *) echo "cogip sft: unknown LAUNCHER=$LAUNCHER" >&2; exit 2 ;;
esac
