#!/usr/bin/env bash
# Soft-label LoRA SFT of Qwen/Qwen2.5-VL-7B-Instruct (published recipe). Overrides: see sft/common.sh;
# TUNE_MODE=full for full fine-tuning with the same per-part learning rates.
FAMILY=qwen
DEFAULT_MODEL_ID=Qwen/Qwen2.5-VL-7B-Instruct
DEFAULT_LR=3e-5
DEFAULT_ADAM_BETA2=0.999
DEFAULT_SOFT_ETA=0.15
# One GPU keeps ZeRO-2 (common.sh's default): at real size 1.28 s a step against 1.32 s without DeepSpeed,
# equal losses (docs/benchmarks.md, twelfth round).
FAMILY_ARGS=(--min_pixels "${MIN_PIXELS:-$((256 * 28 * 28))}" --max_pixels "${MAX_PIXELS:-$((1280 * 28 * 28))}")
source "$(dirname "$0")/../common.sh"
