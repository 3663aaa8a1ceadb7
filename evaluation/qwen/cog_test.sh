#!/usr/bin/env bash
# Score Qwen/Qwen2.5-VL-7B-Instruct (or a fine-tuned model, or a LoRA adapter) on CogIP-Bench.
# --help: the variables and main options, e.g. MODEL_ID=outputs/sft-qwen MODE=expected bash evaluation/qwen/cog_test.sh
FAMILY=qwen
source "$(dirname "$0")/../common.sh"
