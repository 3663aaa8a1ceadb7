#!/usr/bin/env bash
# Score meta-llama/Llama-3.2-11B-Vision-Instruct (or a fine-tuned model, or a LoRA adapter) on CogIP-Bench.
# --help: the variables and main options, e.g. MODEL_ID=outputs/sft-llama MODE=expected bash evaluation/llama/cog_test.sh
FAMILY=llama
source "$(dirname "$0")/../common.sh"
