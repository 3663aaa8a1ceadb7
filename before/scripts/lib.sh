# Sourced by the launchers: ROOT, PYTHON (the repo's .venv if there is one) and NUM_GPUS (auto).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
# The GPUs CUDA will show: nvidia-smi's, narrowed as CUDA_VISIBLE_DEVICES narrows them (indices, up to the
# first invalid one, as CUDA reads it). Asking torch instead costs a whole Python start and torch import
# (~2 s of every call); it is asked only where this cannot tell: no nvidia-smi, MIG, devices named by UUID.
visible_gpus() {
  local listed n=0 seen=" " d count; local -a wanted
  listed=$(nvidia-smi -L 2>/dev/null) || return 1
  if grep -q MIG <<< "$listed"; then return 1; fi
  count=$(grep -c '^GPU [0-9]' <<< "$listed")
  if [ -z "${CUDA_VISIBLE_DEVICES+set}" ]; then echo "$count"; return 0; fi
  IFS=',' read -ra wanted <<< "$CUDA_VISIBLE_DEVICES"
  for d in "${wanted[@]}"; do
    d=${d// /}
    [[ $d =~ ^-?[0-9]+$ ]] || { [ -z "$d" ] && break; return 1; }   # a UUID: ask CUDA
    if (( d < 0 || d >= count )) || [[ $seen == *" $d "* ]]; then break; fi
    seen+="$d "; n=$((n + 1))
  done
  echo "$n"
}
if [ -z "${NUM_GPUS:-}" ]; then
  NUM_GPUS=$(visible_gpus || "$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
