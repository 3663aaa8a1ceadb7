#!/usr/bin/env bash
# Soft-label LoRA SFT of meta-llama/Llama-3.2-11B-Vision-Instruct (published recipe). Overrides: see sft/common.sh;
# TUNE_MODE=full for full fine-tuning with the same per-part learning rates.
FAMILY=llama
DEFAULT_MODEL_ID=meta-llama/Llama-3.2-11B-Vision-Instruct
DEFAULT_LR=9e-5
DEFAULT_ADAM_BETA2=0.95
DEFAULT_SOFT_ETA=0.08
FAMILY_ARGS=()
source "$(dirname "$0")/../common.sh"
