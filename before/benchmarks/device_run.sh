#!/usr/bin/env bash
# Every GPU check in one device call (sections log to $OUT; one failing does not stop the rest).
# Wheels in .whl/ (bash benchmarks/fetch_wheels.sh) are installed first: DeepSpeed, Liger, a transformers
# at or above the floor where the machine's own is older.
#   SECTIONS="loss eval multigpu" bash benchmarks/device_run.sh
#   LANES="0=gemma 1=llama,evalvar 2,3=scaling" bash benchmarks/device_run.sh   # sections in parallel, one lane per GPU set
#   LANES="0=gemma 1=scaling_prep" AFTER=scaling ...                           # then sections on all GPUs
#   LANES="0=scaling:qwen 1=scaling:gemma" RUNS_qwen=... RUNS_gemma=...        # scaling.sh of a family per lane
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
RES=${RES:-/tmp/res}; mkdir -p "$RES"   # everything is written here; $OUT gets results.tgz of its logs and JSON
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
# Bytecode kept between processes, as a user's install has it (pip writes it): without it every process compiled
# ~2,650 modules' source again, ~11 s of a cog_test.sh call's start (docs/benchmarks.md, twenty-first round)
echo "bytecode: PYTHONDONTWRITEBYTECODE=${PYTHONDONTWRITEBYTECODE:-} PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-}"
unset PYTHONDONTWRITEBYTECODE; export PYTHONPYCACHEPREFIX=${PYTHONPYCACHEPREFIX:-/tmp/pycache}
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheel install failed"; tail "$OUT/pip.log"; }
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L; python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
section() { echo "=== $1"; local t=$SECONDS name=$1; shift; "$@" > "$RES/$name.log" 2>&1; echo "rc=$? ($((SECONDS - t)) s)"; tail -n 25 "$RES/$name.log"; }

loss() { python3 benchmarks/loss_bench.py --out "$RES/loss_bench.json"; }
eval_() { python3 benchmarks/eval_bench.py --out /tmp/evalbench --n "${EVAL_N:-480}" && cp /tmp/evalbench/eval_bench.json "$RES/"; }
multigpu() { bash benchmarks/multigpu_check.sh; }
graphs() {   # one GPU: CUDA-graphed language blocks through the SFT launcher (REAL=1: at real size)
  local rc=0; WORK=/tmp/gc bash benchmarks/graph_check.sh || rc=$?
  for f in /tmp/gc/*.log; do cp "$f" "$RES/graphs_$(basename "$f")"; done; return $rc
}
probe() { python3 benchmarks/first_batch_probe.py --runs ${PROBE_RUNS:-default expandable default expandable} --out "$RES/first_batch_probe.json"; }
breakdown() { python3 benchmarks/eval_breakdown.py ${BREAKDOWN_ARGS:-}; }   # e.g. BREAKDOWN_ARGS="--compile all --stream 6"
sdpa() { python3 benchmarks/sdpa_host.py --out "$RES"; }
shapes() { python3 benchmarks/compiled_shapes.py --out "$RES/shapes" ${SHAPES_ARGS:-}; }   # compiled parts on images of varied sizes
numerics() { python3 benchmarks/graph_numerics.py --out "$RES/numerics" ${NUMERICS_ARGS:-}; }   # graphed vs eager training, fp32 and bf16
gemma() { python3 benchmarks/train_bench.py --family gemma --out "$RES/gemma" --variants ${GEMMA_VARIANTS:-ours ours:ckpt=none ours:liger:ckpt=none} --profile ${GEMMA_PROFILE:-ours}; }
llama() { python3 benchmarks/train_bench.py --family llama --out "$RES/llama" --variants ${LLAMA_VARIANTS:-ours-loss ours ours:ckpt=vision} --profile ${LLAMA_PROFILE:-ours} ${LLAMA_ARGS:-}; }   # e.g. LLAMA_ARGS="--diagnose ours"
evalvar() { python3 benchmarks/eval_bench.py --out /tmp/evalvar --n "${EVAL_N:-480}" --batch-sizes 32 --variants ${EVAL_VARIANTS:-base compile compileall+pipe2} ${EVALVAR_ARGS:-}; cp /tmp/evalvar/eval_bench.json "$RES/eval_variants.json"; }
scaling_prep() { OUT=$RES/scaling_prep RUNS=none bash benchmarks/scaling.sh; }   # model + images only, while other lanes run
scaling() {
  local n; n=$( [ -n "${CUDA_VISIBLE_DEVICES:-}" ] && echo "$CUDA_VISIBLE_DEVICES" | tr ',' '\n' | wc -l || nvidia-smi -L | wc -l)
  local fam=${FAMILY:-qwen} runs="RUNS_${FAMILY:-qwen}"   # RUNS_<family>, when set, instead of RUNS
  OUT=$RES/scaling$([ "$fam" = qwen ] || echo "_$fam") FAMILY=$fam NUM_GPUS=$n RUNS=${!runs-${RUNS:-}} bash benchmarks/scaling.sh
}
train() { for f in ${FAMILIES:-qwen}; do python3 benchmarks/train_bench.py --family "$f" --variants ${VARIANTS:-published ours-loss ours} --out /tmp/trainbench; done; cp /tmp/trainbench/train_bench_*.json "$RES/"; }

run_section() {
  case $1 in
    loss) section loss loss ;;
    eval) section eval eval_ ;;
    multigpu) section multigpu multigpu ;;
    train) section train train ;;
    breakdown) section breakdown breakdown ;;
    gemma|llama|evalvar|scaling|scaling_prep|sdpa|graphs|numerics|probe|shapes) section "$1" "$1" ;;
    scaling:*) FAMILY=${1#scaling:} section "scaling_${1#scaling:}" scaling ;;   # e.g. LANES="0=scaling:qwen 1=scaling:gemma"
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
  for s in ${SECTIONS:-loss eval multigpu}; do run_section "$s"; done
fi
touch "$RES/.sections_done"; kill "$watchdog" 2>/dev/null; pkill -P "$watchdog" sleep 2>/dev/null
(cd "$RES" && find . -name "*.log" -o -name "*.json" -o -name "*.txt" | grep -v -e tiny_ -e /bench/ -e /model/ \
  | tar czf "$OUT/results.tgz" -T -)
