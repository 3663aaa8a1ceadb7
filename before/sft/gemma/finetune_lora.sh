#!/usr/bin/env bash
# Soft-label LoRA SFT of google/gemma-3-12b-it (published recipe). Overrides: see sft/common.sh;
# TUNE_MODE=full for full fine-tuning with the same per-part learning rates.
FAMILY=gemma
DEFAULT_MODEL_ID=google/gemma-3-12b-it
DEFAULT_LR=1e-5
DEFAULT_ADAM_BETA2=0.95
DEFAULT_SOFT_ETA=0.15
# Measured fastest at batch 4 (docs/benchmarks.md): no recomputation (62.6 GiB peak on one 80 GB card at
# 896 px) and Liger's fused kernels. CHECKPOINT_PARTS=all for smaller cards.
DEFAULT_CHECKPOINT_PARTS=none
DEFAULT_LIGER=True
# One GPU: no DeepSpeed (ZeRO shards nothing there): a real-size step 0.70 s against ZeRO-2's 0.85 s, losses
# within 0.6% over 10 steps, peak 66.1 GiB against 62.5 (docs/benchmarks.md, twelfth round).
DEFAULT_ONE_GPU_DS=""
FAMILY_ARGS=()
source "$(dirname "$0")/../common.sh"
