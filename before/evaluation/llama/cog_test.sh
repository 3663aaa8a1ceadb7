#!/usr/bin/env bash
# Score meta-llama/Llama-3.2-11B-Vision-Instruct (or a merged SFT model, or a LoRA adapter) on CogIP-Bench.
# Overrides: see evaluation/common.sh, e.g. MODEL_ID=outputs/sft-llama-lora MODE=expected bash evaluation/llama/cog_test.sh
FAMILY=llama
DEFAULT_MODEL_ID=meta-llama/Llama-3.2-11B-Vision-Instruct
FAMILY_ARGS=()
source "$(dirname "$0")/../common.sh"
