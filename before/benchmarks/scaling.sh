#!/usr/bin/env bash
# Multi-GPU scaling at real size (issue 7), through the users' own launchers, on a Qwen2.5-VL-7B
# architecture with random weights (benchmarks/real_model.py) and 1008-px synthetic images
# (1296 visual tokens at MIN/MAX_PIXELS below); FAMILY=llama (or gemma): that family's launchers and
# architecture, 1120-px images (Llama: 4 tiles of 560 px), work folder /tmp/scaling-<family>:
#   SFT: sft/qwen/finetune_lora.sh, 4 samples per GPU, on 1 GPU and on NUM_GPUS, with ZeRO-2, ZeRO-3 and FSDP2;
#        samples/s = median step time after 2 warm-up steps (cogip_train.json "throughput").
#   Eval: evaluation/qwen/cog_test.sh, batch 32, on 1 GPU and data-parallel on NUM_GPUS (timing.json; process_s:
#         the whole call, model load included).
#   NUM_GPUS=2 OUT=dir bash benchmarks/scaling.sh          SMOKE=1: tiny model on the CPU, few steps
#   PROFILE_STEP=5: every SFT run also writes each rank's profile of step 5 (cogip.profiling) to OUT
#   TIMELINE_STEP=5: ... and each rank's block timeline of step 5 (cogip.profiling.BlockTimeline, no profiler)
#   EVAL_ARGS="--profile-batches 5": extra arguments of every evaluation run (cog_test.sh); profiles are copied to OUT
#   SIDE=896: Qwen's image side instead (and its pixel bounds), e.g. eval_bench.py's shapes; use a WORK of its own
#   SIZE_RANGE="640 1152": Qwen images of varied sizes (each side drawn from the range, as real benches' images
#         differ), read within cog_test.sh's default pixel bounds; use a WORK of its own
#   TEST_N=430: test images per dimension (96; the published test set has 1719 in all, 430 a dimension on average)
set -uo pipefail
FAMILY=${FAMILY:-qwen}
N=${NUM_GPUS:-2}; W=${WORK:-/tmp/scaling$([ "$FAMILY" = qwen ] || echo "-$FAMILY")}; OUT=${OUT:-$W/out}; STEPS=${STEPS:-10}; SMOKE=${SMOKE:-0}
PY=${PYTHON:-python3}
mkdir -p "$W" "$OUT"
if [ "$SMOKE" = 1 ]; then
  side=84; px=7056; train_n=8; test_n=8; gpus=(0); ds_configs=(none); model_args=(--tiny); STEPS=3; bs=4
else
  side=${SIDE:-$([ "$FAMILY" = qwen ] && echo 1008 || echo 1120)}; px=$((${SIDE:-1008} * ${SIDE:-1008})); train_n=48; test_n=${TEST_N:-96}; gpus=(1 "$N"); ds_configs=(zero2 zero3 fsdp2); model_args=(); bs=32
fi
minpx=$px; maxpx=$px; size_args=(--size "$side")
if [ -n "${SIZE_RANGE:-}" ]; then   # varied sizes: Qwen's bounds as cog_test.sh's defaults (the CPU smoke: scaled down)
  size_args=(--size-range $SIZE_RANGE)
  if [ "$SMOKE" = 1 ]; then minpx=3136; maxpx=12544; else minpx=$((256 * 28 * 28)); maxpx=$((1280 * 28 * 28)); fi
fi
[ -d "$W/model" ] || $PY benchmarks/real_model.py --family "$FAMILY" "${model_args[@]}" "$W/model" || exit 1
# the bench's own images are small (one random stream draws them in order); its images at $side px are drawn
# for its score lists, in parallel (each has a stream of its own), and resume where an earlier call stopped
[ -d "$W/bench" ] || $PY -m cogip.cli data synth "$W/bench" --n $((train_n + test_n)) --n-train "$train_n" || exit 1
$PY -m cogip.cli data synth "$W/images" --from-bench "$W/bench" "${size_args[@]}" || exit 1
common=(MODEL_ID="$W/model" DATA_PATH="$W/bench/cognition_training.json" IMAGE_FOLDER="$W/images"
        REPORT_TO=none MIN_PIXELS=$minpx MAX_PIXELS=$maxpx PER_DEVICE_BATCH=4 SAVE_STEPS=100000)
sft() {   # sft CONFIG_NAME GPUS [CHECKPOINT_PARTS [KEY=VALUE...]]; configs from DS_DIR (default sft/deepspeed),
            # or FSDP_DIR (sft/fsdp) for names fsdp*
  local ds=$1 g=$2 parts=${3:-} run="sft_$1_$2gpu${3:+_ckpt-$3}" dsarg=(DS_CONFIG=${DS_DIR:-sft/deepspeed}/$1.json)
  local launcher_env=("${@:4}"); for kv in "${launcher_env[@]}"; do run+="_${kv//[^A-Za-z0-9_=.-]/-}"; done
  [ "$ds" = none ] && dsarg=(DS_CONFIG=)
  [[ $ds == fsdp* ]] && dsarg=(DS_CONFIG= FSDP_CONFIG=${FSDP_DIR:-sft/fsdp}/$1.json)   # e.g. sft_fsdp2_2gpu
  echo "=== $run"
  env "${common[@]}" "${dsarg[@]}" NUM_GPUS="$g" LAUNCHER=$( ((g > 0)) && echo torchrun || echo python) \
    GLOBAL_BATCH=$((4 * (g > 0 ? g : 1))) OUTPUT_DIR="$W/$run" ${parts:+CHECKPOINT_PARTS=$parts} "${launcher_env[@]}" \
    bash "sft/$FAMILY/finetune_lora.sh" --max_steps "$STEPS" --save_strategy no ${PROFILE_STEP:+--profile_step $PROFILE_STEP} \
    ${TIMELINE_STEP:+--timeline_step $TIMELINE_STEP} \
    > "$OUT/$run.log" 2>&1; echo "rc=$?"
  grep "cogip sft:" "$OUT/$run.log" | tail -n 2
  [ -f "$W/$run/cogip_train.json" ] && cp "$W/$run/cogip_train.json" "$OUT/$run.json"
  for f in "$W/$run"/profile_rank*.txt "$W/$run"/timeline_rank*.json; do [ -f "$f" ] && cp "$f" "$OUT/${run}_$(basename "$f")"; done; true
}
evaluate() {   # evaluate GPUS [--option=value | KEY=VALUE ...]: extra cog_test.sh arguments, or launcher environment
  local run="eval_$1gpu" extra=() launcher_env=()
  for x in "${@:2}"; do
    run+="_${x//[^A-Za-z0-9_=.-]/-}"
    if [[ $x == --* ]]; then extra+=("$x"); else launcher_env+=("$x"); fi
  done
  echo "=== $run"
  local t0 rc; t0=$(date +%s.%N)
  env MODEL_ID="$W/model" TEST_DIR="$W/bench/test_msg_file" IMAGE_ROOT="$W/images" \
    SAMPLE_N=0 MIN_PIXELS=$minpx MAX_PIXELS=$maxpx BATCH_SIZE=$bs NUM_GPUS="$1" OUT="$W/$run" "${launcher_env[@]}" \
    bash "evaluation/$FAMILY/cog_test.sh" --max-new-tokens 10 ${EVAL_ARGS:-} "${extra[@]}" > "$OUT/$run.log" 2>&1
  rc=$?
  # the whole call as users run it (start-up, model load, loop, metrics), beside timing.json's loop
  local wall; wall=$($PY -c 'import sys, time; print(round(time.time() - float(sys.argv[1]), 3))' "$t0")
  [ -d "$W/$run" ] && echo "$wall" > "$W/$run/process_s.txt"
  for f in "$W/$run"/profile*.txt; do [ -f "$f" ] && cp "$f" "$OUT/${run}_$(basename "$f")"; done   # --profile-batches
  echo "rc=$rc process_s=$wall"; cat "$W/$run/timing.json" 2>/dev/null | tr -d '\n'; echo
}
# ZeRO-2 first, then the evaluation, the sharded configs last (ZeRO-3, FSDP2: their one-GPU runs give the
# like-for-like scaling; users also compare them on N GPUs with ZeRO-2's one-GPU run).
# RUNS instead runs exactly these, in order: sft_<config>_<G>gpu[:<checkpoint parts>][@KEY=VALUE...] or
# eval_<G>gpu[@--option=value...][@KEY=VALUE...] (cog_test.sh arguments, launcher environment), e.g. RUNS="sft_zero3_1gpu sft_zero3_2gpu:vision sft_zero3_2gpu:vision@SDPA_BACKENDS=flash eval_2gpu eval_1gpu@--prefetch=1";
# a config named fsdp* is an FSDP2 config (sft/fsdp/<config>.json), e.g. sft_fsdp2_2gpu:vision;
# each @KEY=VALUE is set for that run's launcher (sft/common.sh reads them)
if [ -n "${RUNS:-}" ]; then
  for r in $RUNS; do
    case $r in
      sft_*) spec=${r#sft_}; IFS=@ read -r -a kvs <<< "$spec"; spec=${kvs[0]}
             parts=${spec#*:}; [ "$parts" = "$spec" ] && parts=; spec=${spec%%:*}
             g=${spec##*_}; sft "${spec%_*}" "${g%gpu}" "$parts" "${kvs[@]:1}" ;;
      eval_*) IFS=@ read -r -a kvs <<< "${r#eval_}"; evaluate "${kvs[0]%gpu}" "${kvs[@]:1}" ;;
      none) ;;
      *) echo "unknown run $r" ;;
    esac
  done
else
  for g in "${gpus[@]}"; do sft "${ds_configs[0]}" "$g"; done
  for g in "${gpus[@]}"; do evaluate "$g"; done
  for ds in "${ds_configs[@]:1}"; do for g in "${gpus[@]}"; do sft "$ds" "$g"; done; done
fi
$PY - "$W" "$OUT" <<'PY'
import json, sys, glob, os
w, out = sys.argv[1:]
rows = {}
for f in sorted(glob.glob(f"{out}/sft_*.json")):
    if "_timeline_rank" not in f:   # the runs' cogip_train.json copies only
        rows[os.path.basename(f)[:-5]] = json.load(open(f)).get("throughput")
for d in sorted(glob.glob(f"{w}/eval_*gpu*")):
    if os.path.isfile(f"{d}/timing.json"):
        rows[os.path.basename(d)] = json.load(open(f"{d}/timing.json"))
        if os.path.isfile(f"{d}/process_s.txt"):   # the whole cog_test.sh call, seconds
            rows[os.path.basename(d)]["process_s"] = float(open(f"{d}/process_s.txt").read())
print(json.dumps(rows, indent=2))
json.dump(rows, open(f"{out}/scaling.json", "w"), indent=2)
PY
