#!/usr/bin/env bash
# Score Qwen/Qwen2.5-VL-7B-Instruct (or a merged SFT model, or a LoRA adapter) on CogIP-Bench.
# Overrides: see evaluation/common.sh, e.g. MODEL_ID=outputs/sft-qwen-lora MODE=expected bash evaluation/qwen/cog_test.sh
FAMILY=qwen
DEFAULT_MODEL_ID=Qwen/Qwen2.5-VL-7B-Instruct
FAMILY_ARGS=(--min-pixels "${MIN_PIXELS:-$((256 * 28 * 28))}" --max-pixels "${MAX_PIXELS:-$((1280 * 28 * 28))}")
source "$(dirname "$0")/../common.sh"
