#!/usr/bin/env bash
# Default vs aligned text encoder on the four trait prompt sets (qwen-image/prompts/*.json), same seeds.
# Environment: PIPELINE (Qwen/Qwen-Image)  ALIGNED (SFT'd Qwen2.5-VL or adapter; required)  ALIGNED_BASE
#   OUT (outputs/qwen-image)  TRAITS ("aesthetics funniness emotion memorability")  PROMPT_DIR
#   SEED (55) SIZE (768) STEPS (14) TRUE_CFG (2.0) IMAGES_PER_PROMPT (1) DTYPE (bfloat16)
#   SCORE_WITH (a benchmark model: score every image on its trait)  SCORE_PROMPT (full|short: its training prompts)
# Extra arguments go to every `cogip.generate` call (e.g. --device cpu --no-combined).
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
source "$HERE/../scripts/lib.sh"
: "${ALIGNED:?set ALIGNED to the fine-tuned Qwen2.5-VL checkpoint or adapter folder}"
OUT=${OUT:-$ROOT/outputs/qwen-image}
declare -A TRAIT=([aesthetics]=Aesthetics [funniness]=Funniness [emotion]=Emotional_Valence [memorability]=Memorability)
for set in ${TRAITS:-aesthetics funniness emotion memorability}; do
  [ -n "${TRAIT[$set]:-}" ] || { echo "run_batch: unknown trait set $set" >&2; exit 2; }
  args=(--pipeline "${PIPELINE:-Qwen/Qwen-Image}" --aligned-encoder "$ALIGNED" --prompts "${PROMPT_DIR:-$HERE/prompts}/$set.json"
        --out "$OUT/$set" --seed "${SEED:-55}" --height "${SIZE:-768}" --width "${SIZE:-768}" --steps "${STEPS:-14}"
        --true-cfg-scale "${TRUE_CFG:-2.0}" --images-per-prompt "${IMAGES_PER_PROMPT:-1}" --dtype "${DTYPE:-bfloat16}")
  [ -n "${ALIGNED_BASE:-}" ] && args+=(--aligned-base "$ALIGNED_BASE")
  [ -n "${SCORE_WITH:-}" ] && args+=(--score-with "$SCORE_WITH" --trait "${TRAIT[$set]}" --score-prompt "${SCORE_PROMPT:-full}")
  echo "== $set (${TRAIT[$set]})" >&2
  "$PYTHON" "$HERE/batch_gene_image.py" "${args[@]}" "$@"
done
