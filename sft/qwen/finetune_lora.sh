#!/usr/bin/env bash
# Soft-label LoRA SFT of Qwen/Qwen2.5-VL-7B-Instruct, the published recipe (sft/recipe.yaml + sft/qwen/recipe.yaml).
# --help: the variables and main options; docs/train.md: every option.
FAMILY=qwen
source "$(dirname "$0")/../common.sh"
