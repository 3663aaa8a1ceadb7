#!/usr/bin/env bash
# Merge a LoRA output folder (adapter + trained vision/projector weights) into a full checkpoint.
#   bash sft/gemma/merge_lora.sh ADAPTER_DIR OUT_DIR [--base BASE_MODEL]
set -euo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
PYTHON=${PYTHON:-$( [ -x "$ROOT/.venv/bin/python" ] && echo "$ROOT/.venv/bin/python" || echo python3)}
exec "$PYTHON" -m cogip.train.merge --family gemma --adapter "$1" --out "$2" "${@:3}"
