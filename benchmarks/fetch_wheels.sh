#!/usr/bin/env bash
# The wheels a GPU machine without a package index needs beside its own torch, transformers, peft and
# accelerate, into .whl/ (git-ignored), for `device_run.sh`, which installs them first:
#   bash benchmarks/fetch_wheels.sh [DIR]   (default .whl; PY_VERSION=3.12, the GPU image's Python)
# DeepSpeed is an sdist: built here into a pure-Python wheel (its ops are compiled on first use).
# transformers 5.24.0 (with a huggingface-hub it accepts) is included because the GPU image's may be older
# than the floor (cogip.TRANSFORMERS_FLOOR) and docs/performance.md's numbers
# were taken with 5.24.0.
set -euo pipefail
cd "$(dirname "$0")/.."
DIR=${1:-.whl}; PY_VERSION=${PY_VERSION:-3.12}
PYTHON=${PYTHON:-$([ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}
mkdir -p "$DIR"
binary=(--no-deps --only-binary=:all: --python-version "$PY_VERSION" --implementation cp
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 -d "$DIR")
"$PYTHON" -m pip download -q "${binary[@]}" \
  transformers==5.24.0 huggingface-hub==1.33.0 \
  hjson pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5 \
  datasets dill multiprocess qwen-vl-utils==0.0.14 liger-kernel
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
"$PYTHON" -m pip download -q --no-deps --no-binary :all: -d "$tmp" deepspeed==0.19.8
DS_BUILD_OPS=0 "$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$DIR" "$tmp"/deepspeed-*.tar.gz
ls "$DIR"
du -sh "$DIR"   # the working tree that travels is limited to 64 MiB
