#!/usr/bin/env bash
# Benchmark sections in one call on a GPU machine (each logs to $RES; one failing does not stop the rest), then
# their logs and JSON packed into $OUT/results.tgz. Wheels in .whl/ (bash benchmarks/fetch_wheels.sh) are
# installed first: DeepSpeed, Liger, a transformers at or above the floor where the machine's own is older.
#   SECTIONS="loss eval train" (default) bash benchmarks/device_run.sh
#   SECTIONS=defaults FAMILY=qwen RUNS=sft TAG=prof SFT_ARGS="--profile_step 6" bash benchmarks/device_run.sh
#   LANES="0=gemma 1=llama 2,3=scaling" bash benchmarks/device_run.sh   # sections in parallel, one lane per GPU set
#   SMOKE=1: every section at its CPU size (the tests run it so)
# Sections:
#   loss          loss_bench.py: the soft-label loss against the published algorithm
#   eval          eval_bench.py on EVAL_N (480) items: the benchmark loop against a one-image loop
#   evalvar       eval_bench.py, batch 32, the EVAL_VARIANTS (base compile compileall+pipe2)
#   train         train_bench.py for each of FAMILIES (qwen), the VARIANTS (published ours-loss ours)
#   gemma, llama  train_bench.py of that family with its variants (GEMMA_VARIANTS, LLAMA_VARIANTS) and a profile
#   defaults      defaults_bench.sh (FAMILY, RUNS, TAG, SFT_ARGS, EVAL_ARGS as it reads them), its run folders'
#                 timing, training and profile files kept
#   before_after  before_after.sh (BEFORE, RUNS, REPEATS as it reads them)
#   scaling       scaling.sh on the lane's GPUs (scaling:gemma: that family); scaling_prep: its model and images only
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RES=${RES:-/tmp/res}; mkdir -p "$RES"   # everything is written here; $OUT gets results.tgz of its logs and JSON
SMOKE=${SMOKE:-0}; smoke=(); [ "$SMOKE" = 1 ] && smoke=(--cpu-smoke)
export SMOKE PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
PY=${PYTHON:-python3}
# Bytecode kept between processes, as a user's install has it (pip writes it): without it every process compiled
# ~2,650 modules' source again, ~11 s of a cog_test.sh call's start (docs/performance.md)
echo "bytecode: PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-} PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-}"
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
if [ -d .whl ] && [ "$SMOKE" != 1 ]; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheel install failed"; tail "$OUT/pip.log"; }
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
fi
nvidia-smi -L 2>/dev/null || echo "no GPU (nvidia-smi)"
$PY -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
section() { echo "=== $1"; local t=$SECONDS name=$1; shift; "$@" > "$RES/$name.log" 2>&1; echo "rc=$? ($((SECONDS - t)) s)"; tail -n 25 "$RES/$name.log"; }

loss() { $PY benchmarks/loss_bench.py "${smoke[@]}" --out "$RES/loss_bench.json"; }
eval_() { $PY benchmarks/eval_bench.py "${smoke[@]}" --out "$RES/eval" --n "${EVAL_N:-480}"; }
evalvar() { $PY benchmarks/eval_bench.py "${smoke[@]}" --out "$RES/evalvar" --n "${EVAL_N:-480}" --batch-sizes 32 \
              --variants ${EVAL_VARIANTS:-base compile compileall+pipe2} ${EVALVAR_ARGS:-}; }
train() { local f rc=0; for f in ${FAMILIES:-qwen}; do
            $PY benchmarks/train_bench.py "${smoke[@]}" --family "$f" --variants ${VARIANTS:-published ours-loss ours} --out "$RES/train" || rc=1
          done; return $rc; }
gemma() { $PY benchmarks/train_bench.py "${smoke[@]}" --family gemma --out "$RES/gemma" --variants ${GEMMA_VARIANTS:-ours ours:ckpt=none ours:liger:ckpt=none} --profile ${GEMMA_PROFILE:-ours}; }
llama() { $PY benchmarks/train_bench.py "${smoke[@]}" --family llama --out "$RES/llama" --variants ${LLAMA_VARIANTS:-ours-loss ours ours:ckpt=vision} --profile ${LLAMA_PROFILE:-ours} ${LLAMA_ARGS:-}; }
defaults() {   # the run folders' small files beside results.jsonl; the model and images stay in WORK
  local w=${WORK:-/tmp/defaults} rc=0
  WORK=$w OUT=$RES/defaults bash benchmarks/defaults_bench.sh || rc=1
  (cd "$w" && find . -maxdepth 2 \( -name timing.json -o -name cogip_train.json -o -name 'profile*.txt' -o -name 'timeline*.json' \) \
     | grep -v -e '^./model' -e '^./bench' | tar cf - -T - 2>/dev/null) | (mkdir -p "$RES/defaults/runs" && cd "$RES/defaults/runs" && tar xf -)
  return $rc
}
before_after_() { OUT=$RES/before_after bash benchmarks/before_after.sh; }
scaling_prep() { OUT=$RES/scaling_prep RUNS=none bash benchmarks/scaling.sh; }   # model + images only, while other lanes run
scaling() {
  local n; n=$( [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | wc -l || nvidia-smi -L | wc -l)
  local fam=${FAMILY:-qwen} runs="RUNS_${FAMILY:-qwen}"   # RUNS_<family>, when set, instead of RUNS
  OUT=$RES/scaling$([ "$fam" = qwen ] || echo "_$fam") FAMILY=$fam NUM_GPUS=$n RUNS=${!runs-${RUNS:-}} bash benchmarks/scaling.sh
}

run_section() {
  case $1 in
    eval) section eval eval_ ;;
    before_after) section before_after before_after_ ;;
    loss|train|defaults|gemma|llama|evalvar|scaling|scaling_prep) section "$1" "$1" ;;
    scaling:*) FAMILY=${1#scaling:} section "scaling_${1#scaling:}" scaling ;;   # e.g. LANES="0=scaling:qwen 1=scaling:gemma"
    *) echo "=== $1: no such section (see the head of benchmarks/device_run.sh)" ;;
  esac
}
rm -f "$RES/.sections_done"
# a watchdog stops whatever still runs at DEADLINE seconds, so the results still get packed in time. It matches
# command lines that start with python3 (not -f python3: that also matched a device command line that merely
# named python3 after this script, and killed it), and does nothing once the sections are done: stopping its
# sleep first would have let it go on to the kill
( sleep "${DEADLINE:-530}"; [ -e "$RES/.sections_done" ] && exit; echo "deadline: stopping"
  pkill -TERM -f '^[^ ]*python3[.0-9]* '; sleep 5; pkill -KILL -f '^[^ ]*python3[.0-9]* ' ) > "$RES/watchdog.log" 2>&1 &
watchdog=$!
if [ -n "${LANES:-}" ]; then
  lanes=()
  port=29500
  for lane in $LANES; do
    gpus=${lane%%=*}; secs=${lane#*=}; port=$((port + 10))   # each lane's launchers rendezvous on a port of its own
    ( export CUDA_VISIBLE_DEVICES=$gpus MASTER_PORT=$port; for s in ${secs//,/ }; do run_section "$s"; done ) \
      > "$RES/lane_${gpus//,/-}.log" 2>&1 &
    lanes+=($!)
  done
  wait "${lanes[@]}"
  cat "$RES"/lane_*.log
  for s in ${AFTER:-}; do run_section "$s"; done   # e.g. multi-GPU runs once the lanes are done
else
  for s in ${SECTIONS:-loss eval train}; do run_section "$s"; done
fi
touch "$RES/.sections_done"; kill "$watchdog" 2>/dev/null; pkill -P "$watchdog" sleep 2>/dev/null
(cd "$RES" && find . \( -name "*.log" -o -name "*.json" -o -name "*.jsonl" -o -name "*.txt" \) | grep -v -e tiny_ -e /bench/ -e /model/ \
  | tar czf "$OUT/results.tgz" -T -)
