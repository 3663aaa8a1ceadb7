#!/usr/bin/env bash
# Every GPU check in one device call (sections log to $OUT; one failing does not stop the rest).
#   SECTIONS="loss eval multigpu" bash benchmarks/device_run.sh
set -u
OUT=${OUT:-/tmp/out}; mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl \
    > "$OUT/pip.log" 2>&1 || { echo "wheel install failed"; tail "$OUT/pip.log"; }
  export PYTHONPATH=/tmp/site:$PWD PATH=/tmp/site/bin:$PATH
else
  export PYTHONPATH=$PWD
fi
nvidia-smi -L; python3 -c "import torch, transformers, peft, accelerate; print('torch', torch.__version__, 'transformers', transformers.__version__, 'peft', peft.__version__, 'accelerate', accelerate.__version__)"
section() { echo "=== $1"; local t=$SECONDS; shift; "$@" > "$OUT/$1.log" 2>&1; echo "rc=$? ($((SECONDS - t)) s)"; tail -n 25 "$OUT/$1.log"; }

loss() { python3 benchmarks/loss_bench.py --out "$OUT/loss_bench.json"; }
eval_() { python3 benchmarks/eval_bench.py --out /tmp/evalbench --n "${EVAL_N:-128}" && cp /tmp/evalbench/eval_bench.json "$OUT/"; }
multigpu() { bash benchmarks/multigpu_check.sh; }
breakdown() { python3 benchmarks/eval_breakdown.py; }
train() { for f in ${FAMILIES:-qwen}; do python3 benchmarks/train_bench.py --family "$f" --variants ${VARIANTS:-published ours-loss ours} --out /tmp/trainbench; done; cp /tmp/trainbench/train_bench_*.json "$OUT/"; }

for s in ${SECTIONS:-loss eval multigpu}; do
  case $s in
    loss) section loss loss ;;
    eval) section eval eval_ ;;
    multigpu) section multigpu multigpu ;;
    train) section train train ;;
    breakdown) section breakdown breakdown ;;
  esac
done
