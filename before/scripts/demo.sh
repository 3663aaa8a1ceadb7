#!/usr/bin/env bash
# The embedded default on a CPU: synthetic bench + tiny offline Qwen2.5-VL, scored, fine-tuned with
# soft labels, scored again in both modes, then used as Qwen-Image's text encoder; writes
# ${OUT:-runs/demo}/report.md. Extra arguments go to `python -m cogip.demo` (e.g. --families qwen llama gemma).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup_env.sh
exec .venv/bin/python -m cogip.demo --out "${OUT:-runs/demo}" "$@"
