# Sourced by the launchers: ROOT, PYTHON (the repo's .venv if there is one) and NUM_GPUS (auto).
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
if [ -z "${PYTHON:-}" ]; then
  if [ -x "$ROOT/.venv/bin/python" ]; then PYTHON="$ROOT/.venv/bin/python"; else PYTHON=python3; fi
fi
if [ -z "${NUM_GPUS:-}" ]; then
  NUM_GPUS=$("$PYTHON" -c 'import torch; print(torch.cuda.device_count())' 2>/dev/null || echo 0)
fi
export NCCL_NVLS_ENABLE=${NCCL_NVLS_ENABLE:-0}
