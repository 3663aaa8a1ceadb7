#!/usr/bin/env bash
# Score google/gemma-3-12b-it (or a fine-tuned model, or a LoRA adapter) on CogIP-Bench.
# --help: the variables and main options, e.g. MODEL_ID=outputs/sft-gemma MODE=expected bash evaluation/gemma/cog_test.sh
FAMILY=gemma
source "$(dirname "$0")/../common.sh"
