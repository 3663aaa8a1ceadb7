#!/usr/bin/env bash
# Merge a LoRA output folder (adapter + trained vision/projector weights) into a full checkpoint.
#   bash sft/qwen/merge_lora.sh ADAPTER_DIR OUT_DIR [--base BASE_MODEL]
#   (or the published flags: --model-path ADAPTER_DIR --model-base BASE --save-model-path OUT_DIR)
set -euo pipefail
NUM_GPUS=0 source "$(dirname "$0")/../../scripts/lib.sh"
exec "$PYTHON" -m cogip.train.merge --family qwen "$@"
