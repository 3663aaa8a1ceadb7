# Shared body of evaluation/<family>/cog_test.sh (sourced). Environment overrides:
#   MODEL_ID (full checkpoint or LoRA adapter folder)  BASE_MODEL (an adapter's base)  FAMILY
#   TEST_DIR (data/test_msg_file)  IMAGE_ROOT (data/cognition/cognition_images)  OUT
#   SAMPLE_N (120 as published; 0 = all)  SEED (19)  SAMPLING (published | per-dimension)
#   INDICES_FROM (a folder of sample_indices_<Dim>.json: score exactly those items)  BATCH_SIZE (8)  MODE (generate|expected)
#   NUM_GPUS (auto; >1 runs data-parallel through accelerate)  DTYPE (bfloat16 on GPU)
#   TORCHINDUCTOR_CACHE_DIR (with --compile; ${XDG_CACHE_HOME:-~/.cache}/cogip/torchinductor)
#   Speed options go as extra arguments: --compile, --pipeline N, --num-workers N
# Extra arguments go last to `python -m cogip.evaluate.bench` and win.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
MODEL_ID=${MODEL_ID:-$DEFAULT_MODEL_ID}
SAMPLE_N=${SAMPLE_N:-120}
args=(--model-id "$MODEL_ID" --family "$FAMILY"
      --test-dir "${TEST_DIR:-$ROOT/data/test_msg_file}" --image-root "${IMAGE_ROOT:-$ROOT/data/cognition/cognition_images}"
      --out "${OUT:-$ROOT/outputs/eval-$FAMILY-$(basename "$MODEL_ID")-${MODE:-generate}}"
      --seed "${SEED:-19}" --sampling "${SAMPLING:-published}" --batch-size "${BATCH_SIZE:-8}" --mode "${MODE:-generate}"
      --dtype "${DTYPE:-$( (( NUM_GPUS > 0 )) && echo bfloat16 || echo float32)}")
[ -n "${BASE_MODEL:-}" ] && args+=(--base-model "$BASE_MODEL")
[ -n "${INDICES_FROM:-}" ] && args+=(--indices-from "$INDICES_FROM")
(( SAMPLE_N > 0 )) && args+=(--sample-n "$SAMPLE_N")
args+=("${FAMILY_ARGS[@]}" "$@")
# With --compile: inductor's cache in the user's cache folder, on a cluster usually shared by its nodes; torch's
# default (/tmp/torchinductor_<user>) is one machine's and often goes with a cluster job. Qwen2.5-VL-7B on an H200:
# ~6 s to compile, ~2-2.5 s from the cache (docs/benchmarks.md, twenty-first round). Entries are keyed by torch
# version, device and graph, so machines of different kinds share the folder.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cogip/torchinductor}
if (( NUM_GPUS > 1 )); then
  exec "$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" -m cogip.evaluate.bench "${args[@]}"
fi
exec "$PYTHON" -m cogip.evaluate.bench "${args[@]}"
