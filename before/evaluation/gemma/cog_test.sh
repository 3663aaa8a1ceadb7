#!/usr/bin/env bash
# Score google/gemma-3-12b-it (or a merged SFT model, or a LoRA adapter) on CogIP-Bench.
# Overrides: see evaluation/common.sh, e.g. MODEL_ID=outputs/sft-gemma-lora MODE=expected bash evaluation/gemma/cog_test.sh
FAMILY=gemma
DEFAULT_MODEL_ID=google/gemma-3-12b-it
FAMILY_ARGS=()
source "$(dirname "$0")/../common.sh"
