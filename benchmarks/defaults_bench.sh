#!/usr/bin/env bash
# The users' launchers with their defaults (no speed flags), at real size with random weights, beside the
# published-style loop in the same call: docs/performance.md's headline table.
#   RUNS (in order, default all): pub eval480_cold eval1720_cold eval1720_warm eval480_warm sft
#     pub            benchmarks/published_eval.py on the first PUB_N (96) published-protocol items
#     evalN_cold     cog_test.sh on N items (480: the published protocol, 120 a dimension; 1720: all), the
#                    inductor cache emptied first; evalN_warm: the cache kept from the runs before;
#                    evalN_eager: with --compile none (the loop uncompiled, whatever the run's length)
#     sft            finetune_lora.sh, one GPU, batch 4, STEPS (10) steps, the family's image side (scaling.sh's)
#   FAMILY=qwen|llama|gemma  WORK=/tmp/defaults  OUT: where the results go (results.jsonl, one line per run, the
#   launchers' runs with their MFU by benchmarks/mfu.py)
#   EVAL_ARGS: more cog_test.sh arguments for every evaluation; SFT_ARGS: more finetune_lora.sh arguments
#   TAG: appended to each run's name (runs with other arguments beside the defaults)
#   TREE: the source tree whose launchers run (default: this one; before_after.sh gives another)
#   SMOKE=1: the tiny model on the CPU, small images, few items
set -uo pipefail
FAMILY=${FAMILY:-qwen}; W=${WORK:-/tmp/defaults}; OUT=${OUT:-$W/out}; STEPS=${STEPS:-10}; SMOKE=${SMOKE:-0}
PY=${PYTHON:-python3}; [[ $PY == */* ]] && PY=$(cd "$(dirname "$PY")" && pwd)/$(basename "$PY")
GIVEN_PYTHONPATH=${PYTHONPATH:-}   # e.g. a GPU machine's installed wheels
export PYTHON=$PY PYTHONPATH=$PWD${GIVEN_PYTHONPATH:+:$GIVEN_PYTHONPATH}
TREE=$(cd "${TREE:-$PWD}" && pwd) || exit 1
in_tree() { (cd "$TREE" && PYTHONPATH=$TREE${GIVEN_PYTHONPATH:+:$GIVEN_PYTHONPATH} "$@"); }   # the tree's own cogip first
mkdir -p "$W" "$OUT" && W=$(cd "$W" && pwd) && OUT=$(cd "$OUT" && pwd) || exit 1   # absolute: runs start in TREE
if [ "$SMOKE" = 1 ]; then
  n_test=3; n_train=4; sizes=(--size-range 56 84); model_args=(--tiny); gpus=0
  px=(MIN_PIXELS=3136 MAX_PIXELS=12544); mfu_px=(--min-pixels "${px[0]#*=}" --max-pixels "${px[1]#*=}")
  sft_side=(--size 84); PUB_N=${PUB_N:-4}; STEPS=3
else
  n_test=430; n_train=48; sizes=(--size-range 640 1152); model_args=(); px=(); gpus=1; mfu_px=()
  sft_side=(--size "$([ "$FAMILY" = qwen ] && echo 1008 || echo 1120)"); PUB_N=${PUB_N:-96}
fi
M=$W/model-$FAMILY
[ -d "$M" ] || $PY benchmarks/real_model.py --family "$FAMILY" "${model_args[@]}" "$M" || exit 1
[ -d "$W/bench" ] || $PY -m cogip data synth "$W/bench" --n $((n_train + n_test)) --n-train "$n_train" > /dev/null || exit 1
images() {   # the test images, once for a WORK folder
  [ -d "$W/images" ] || $PY -m cogip data synth "$W/images" --from-bench "$W/bench" "${sizes[@]}" | tail -n 1
}
record() { echo "$1" | $PY -c 'import json, sys; print(json.dumps(json.loads(sys.stdin.read())))' | tee -a "$OUT/results.jsonl"; }
elapsed() { $PY -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$1"; }

pub() {
  images; local line; line=$($PY benchmarks/published_eval.py --model-id "$M" --family "$FAMILY" --test-dir "$W/bench/test_msg_file" \
    --image-root "$W/images" --limit "$PUB_N" 2> "$OUT/pub_$FAMILY.log" | tail -n 1)
  record "{\"run\": \"pub_$FAMILY${TAG:+_$TAG}\", \"result\": ${line:-null}}"
}
evaluate() {   # evaluate N cold|warm|eager
  images
  local run="eval$1_$2_$FAMILY${TAG:+_$TAG}" out="$W/eval$1_$2_$FAMILY${TAG:+_$TAG}" t0 rc wall sample=$(( $1 == 480 ? 120 : 0 ))
  [ "$SMOKE" = 1 ] && sample=$(( $1 == 480 ? 2 : 0 ))
  export TORCHINDUCTOR_CACHE_DIR=$W/inductor-$FAMILY
  [ "$2" = cold ] && rm -rf "$TORCHINDUCTOR_CACHE_DIR"
  local extra=(); [ "$2" = eager ] && extra=(--compile none)
  rm -rf "$out"; t0=$(date +%s.%N)
  in_tree env MODEL_ID="$M" TEST_DIR="$W/bench/test_msg_file" IMAGE_ROOT="$W/images" OUT="$out" SAMPLE_N=$sample NUM_GPUS=$gpus \
    "${px[@]}" bash "evaluation/$FAMILY/cog_test.sh" --max-new-tokens 10 "${extra[@]}" ${EVAL_ARGS:-} > "$OUT/$run.log" 2>&1
  rc=$?; wall=$(elapsed "$t0")
  local mfu; mfu=$($PY benchmarks/mfu.py --eval "$out" "$M" "$W/images" --new-tokens 10 "${mfu_px[@]}" 2>> "$OUT/$run.log" || echo null)
  record "{\"run\": \"$run\", \"rc\": $rc, \"process_s\": $wall, \"mfu\": $mfu, \"chosen\": \"$(grep -ao -m1 'cogip evaluate: batch.*' "$OUT/$run.log" | sed 's/"/\\"/g')\", \"timing\": $(cat "$out/timing.json" 2>/dev/null || echo null)}"
}
sft() {
  local run="sft_$FAMILY${TAG:+_$TAG}" out="$W/sft_$FAMILY${TAG:+_$TAG}"
  [ -d "$W/images_sft" ] || $PY -m cogip data synth "$W/images_sft" --from-bench "$W/bench" --training-only "${sft_side[@]}" | tail -n 1
  rm -rf "$out"
  # IMAGE_FOLDER and OUTPUT_DIR: the names an older tree's launcher reads
  in_tree env MODEL_ID="$M" DATA_PATH="$W/bench/cognition_training.json" IMAGE_ROOT="$W/images_sft" IMAGE_FOLDER="$W/images_sft" \
    OUT="$out" OUTPUT_DIR="$out" NUM_GPUS=$gpus \
    LAUNCHER=$( ((gpus > 0)) && echo torchrun || echo python) GLOBAL_BATCH=4 PER_DEVICE_BATCH=4 "${px[@]}" \
    bash "sft/$FAMILY/finetune_lora.sh" --max_steps "$STEPS" --save_strategy no --report_to none \
    --include_num_input_tokens_seen True ${SFT_ARGS:-} > "$OUT/$run.log" 2>&1
  local rc=$?
  record "{\"run\": \"$run\", \"rc\": $rc, \"mfu\": $($PY benchmarks/mfu.py "$out" "$M" --data "$W/bench/cognition_training.json" "$W/images_sft" "${mfu_px[@]}" 2>> "$OUT/$run.log" || echo null), \"train\": $(cat "$out/cogip_train.json" 2>/dev/null || echo null)}"
}
for r in ${RUNS:-pub eval480_cold eval1720_cold eval1720_warm eval480_warm sft}; do
  case $r in
    pub) pub ;;
    sft) sft ;;
    eval*_cold|eval*_warm|eval*_eager) n=${r#eval}; evaluate "${n%_*}" "${n#*_}" ;;
    *) echo "unknown run $r" ;;
  esac
done
