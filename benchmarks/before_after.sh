#!/usr/bin/env bash
# Two source trees on the same card, through the users' own launchers: a Qwen2.5-VL-7B-architecture SFT
# (finetune_lora.sh, one GPU, ZeRO-2, batch 4, STEPS steps) and a whole cog_test.sh call on 1,720 images of
# 640-1152 px (batch 32, 10 new tokens), each run alternately in BEFORE and AFTER (default: git's HEAD~1 export
# in ./before, and this tree). Prints one JSON line per run; docs/performance.md records them.
#   SECTIONS="prep sft" bash benchmarks/before_after.sh; SECTIONS=eval bash benchmarks/before_after.sh
set -uo pipefail
W=${WORK:-/tmp/before_after}; BEFORE=${BEFORE:-$PWD/before}; AFTER=${AFTER:-$PWD}; STEPS=${STEPS:-12}
PY=${PYTHON:-python3}; export PYTHON=$PY
mkdir -p "$W"
prep() {   # its scripts import cogip from this tree
  local PYTHONPATH="$AFTER${PYTHONPATH:+:$PYTHONPATH}"; export PYTHONPATH
  [ -d "$W/model" ] || $PY benchmarks/real_model.py --family qwen "$W/model" || return 1
  [ -d "$W/bench" ] || $PY -m cogip data synth "$W/bench" --n 478 --n-train 48 > /dev/null || return 1
  [ -d "$W/images" ] || $PY -m cogip data synth "$W/images" --from-bench "$W/bench" --size-range 640 1152 | tail -1
}
sft() {   # sft TREE NAME
  local out="$W/sft_$2"; rm -rf "$out"
  (cd "$1" && MODEL_ID="$W/model" DATA_PATH="$W/bench/cognition_training.json" IMAGE_FOLDER="$W/images" OUTPUT_DIR="$out" OUT="$out" \
    MIN_PIXELS=$((256 * 28 * 28)) MAX_PIXELS=$((1280 * 28 * 28)) NUM_GPUS=1 LAUNCHER=torchrun GLOBAL_BATCH=4 PER_DEVICE_BATCH=4 \
    bash sft/qwen/finetune_lora.sh --max_steps "$STEPS" --save_strategy no --report_to none > "$W/sft_$2.log" 2>&1)
  echo "sft_$2 rc=$? $($PY -c 'import json,sys; print(json.dumps(json.load(open(sys.argv[1]))["throughput"]))' "$out/cogip_train.json" 2>&1 | tail -1)"
}
evaluate() {   # evaluate TREE NAME
  local out="$W/eval_$2"; rm -rf "$out"; local t0; t0=$(date +%s.%N)
  (cd "$1" && MODEL_ID="$W/model" TEST_DIR="$W/bench/test_msg_file" IMAGE_ROOT="$W/images" OUT="$out" SAMPLE_N=0 \
    MIN_PIXELS=$((256 * 28 * 28)) MAX_PIXELS=$((1280 * 28 * 28)) BATCH_SIZE=32 NUM_GPUS=1 \
    bash evaluation/qwen/cog_test.sh --max-new-tokens 10 > "$W/eval_$2.log" 2>&1)
  local rc=$? wall; wall=$($PY -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 2))' "$t0")
  echo "eval_$2 rc=$rc process_s=$wall images_per_s_whole_call=$($PY -c "print(round(1720 / $wall, 2))") $($PY -c '
import json, sys; t = json.load(open(sys.argv[1])); print(json.dumps({k: t.get(k) for k in ("items", "seconds", "images_per_s", "call_images_per_s", "model_load_s")}))' "$out/timing.json" 2>&1 | tail -1)"
}
for s in ${SECTIONS:-prep sft eval}; do
  case $s in
    prep) prep ;;
    sft) sft "$BEFORE" before; sft "$AFTER" after ;;
    eval) evaluate "$BEFORE" before; evaluate "$AFTER" after ;;
    eval_reversed) evaluate "$AFTER" after; evaluate "$BEFORE" before ;;
  esac
done
