#!/usr/bin/env bash
# The embedded default on a CPU: synthetic bench + tiny offline models. OUT defaults to runs/demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
export PATH="$PWD/.venv/bin:$PATH"
OUT=${OUT:-runs/demo}
cogip data synth "$OUT/bench"
cogip data validate "$OUT/bench"
cogip models tiny "$OUT/models" --family qwen llama gemma --nest
echo "bench: $OUT/bench   tiny models: $OUT/models/{qwen,llama,gemma}"
