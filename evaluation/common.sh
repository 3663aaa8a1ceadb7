# Shared body of evaluation/<family>/cog_test.sh (sourced): picks the launcher and passes through to
# `cogip evaluate`; any of its options given as an argument wins (docs/evaluate.md).
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/../scripts/lib.sh"
if [ "$FAMILY" = auto ]; then
  what="any vision-language model (its family read from its config.json),
or one behind an OpenAI-compatible server (--backend openai),"; default_model="required, unless --backend openai"
else
  what="a $FAMILY model"; default_model="default: the family's base model"
fi
if [[ " $* " == *" --help "* || " $* " == *" -h "* ]]; then
  cat <<HELP
usage: [VAR=value ...] bash $(script=$(cd "$(dirname "$0")" && pwd)/$(basename "$0"); echo "${script#"$ROOT"/}") [cogip evaluate options]

Scores $what on CogIP-Bench (published protocol: 120 items a dimension, seed 19)
and writes per dimension records, metrics (Spearman, MAE, MSE) and a scatter plot, and a summary table and plot.

Variables:
  MODEL_ID      a checkpoint (hub id or folder) or a LoRA adapter folder ($default_model)
  BASE_MODEL    an adapter's base model (default: the one it records)
  TEST_DIR      data/test_msg_file         IMAGE_ROOT  data/cognition/cognition_images
  OUT           outputs/eval-$FAMILY-<model name>-<mode> (rerunning into it resumes)
  SAMPLE_N      items per dimension (120; 0 = all)   MODE  generate | expected
  BATCH_SIZE    images a batch (default: on a GPU from free memory and image sizes, at most 32; else 8)
  NUM_GPUS      GPUs (default: all visible; >1 runs data-parallel)
  MIN_PIXELS, MAX_PIXELS   Qwen's image-size bounds (default: the published 256·28², 1280·28²)

Main options (every one: docs/evaluate.md, or python -m cogip evaluate --help):
  --dims D [D ...]   a subset of Aesthetics Funniness Emotional_Valence Memorability
  --sampling published|per-dimension, --seed N, --indices-from DIR   which items
  --backend openai --base-url URL --model NAME   a served model (key: \$OPENAI_API_KEY; docs/serving.md)
  --trust-remote-code                                                  run a checkpoint's own code
  --compile none|vision|language|all, --pipeline N   speed, chosen by themselves unless given (docs/performance.md)
  --accel off                                                          the plain loop
HELP
  exit 0
fi
SAMPLE_N=${SAMPLE_N:-120}
model_name() {   # for the default OUT: the served model's name (--model), or the model folder's
  local name=${MODEL_ID:-base}
  while (( $# )); do
    case $1 in --model) name=${2:-$name}; shift ;; --model=*) name=${1#--model=} ;; esac
    shift
  done
  basename "$name"
}
args=(--family "$FAMILY"
      --test-dir "${TEST_DIR:-$ROOT/data/test_msg_file}" --image-root "${IMAGE_ROOT:-$ROOT/data/cognition/cognition_images}"
      --out "${OUT:-$ROOT/outputs/eval-$FAMILY-$(model_name "$@")-${MODE:-generate}}"
      --mode "${MODE:-generate}"
      --dtype "$( (( NUM_GPUS > 0 )) && echo bfloat16 || echo float32)")
[ -n "${BATCH_SIZE:-}" ] && args+=(--batch-size "$BATCH_SIZE")
[ -n "${MODEL_ID:-}" ] && args+=(--model-id "$MODEL_ID")
[ -n "${BASE_MODEL:-}" ] && args+=(--base-model "$BASE_MODEL")
[ -n "${MIN_PIXELS:-}" ] && args+=(--min-pixels "$MIN_PIXELS")
[ -n "${MAX_PIXELS:-}" ] && args+=(--max-pixels "$MAX_PIXELS")
(( SAMPLE_N > 0 )) && args+=(--sample-n "$SAMPLE_N")
args+=("$@")
# inductor's cache (with --compile) in the user's cache folder, often shared by a cluster's nodes; torch's
# default (/tmp) is one machine's. Entries are keyed by torch version, device and graph.
export TORCHINDUCTOR_CACHE_DIR=${TORCHINDUCTOR_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/cogip/torchinductor}
if (( NUM_GPUS > 1 )); then
  exec "$PYTHON" -m accelerate.commands.launch --num_processes "$NUM_GPUS" -m cogip evaluate "${args[@]}"
fi
exec "$PYTHON" -m cogip evaluate "${args[@]}"
