#!/usr/bin/env bash
# Soft-label LoRA SFT of meta-llama/Llama-3.2-11B-Vision-Instruct, the published recipe (sft/recipe.yaml + sft/llama/recipe.yaml).
# --help: the variables and main options; docs/train.md: every option.
FAMILY=llama
ONE_GPU_DS=""   # one GPU: no DeepSpeed (ZeRO shards nothing there; measured faster, docs/performance.md)
source "$(dirname "$0")/../common.sh"
