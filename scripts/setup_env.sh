#!/usr/bin/env bash
# Create (or reuse) .venv with torch pinned first, so no install pulls an unplanned multi-GB build.
# Reinstalls only when requirements.txt or pyproject.toml changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=${COGIP_VENV:-.venv}
stamp="$VENV/.cogip-installed"
want=$(cat requirements.txt pyproject.toml | sha1sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then exit 0; fi
python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch + torchvision 2.14.1/0.29.1: torchvision (needed by qwen-vl-utils and Qwen's video processor)
# fails beside the 2.13.0 CPU wheel; this pair runs on the CPU and on GPU nodes.
"$VENV/bin/python" -m pip install -q -r requirements.txt
echo "$want" > "$stamp"
