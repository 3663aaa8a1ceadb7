#!/usr/bin/env bash
# Soft-label LoRA SFT of google/gemma-3-12b-it, the published recipe (sft/recipe.yaml + sft/gemma/recipe.yaml).
# --help: the variables and main options; docs/train.md: every option.
FAMILY=gemma
ONE_GPU_DS=""   # one GPU: no DeepSpeed (ZeRO shards nothing there; measured faster, docs/performance.md)
source "$(dirname "$0")/../common.sh"
