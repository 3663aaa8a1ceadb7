#!/usr/bin/env bash
# Soft-label LoRA SFT of meta-llama/Llama-3.2-11B-Vision-Instruct (published recipe). Overrides: see sft/common.sh;
# TUNE_MODE=full for full fine-tuning with the same per-part learning rates.
FAMILY=llama
DEFAULT_MODEL_ID=meta-llama/Llama-3.2-11B-Vision-Instruct
DEFAULT_LR=9e-5
DEFAULT_ADAM_BETA2=0.95
DEFAULT_SOFT_ETA=0.08
# Recompute only the vision encoder (transformers never checkpoints it): 18 GiB of activations instead
# of 44 at 4 tiles x batch 4, and no slower (docs/benchmarks.md).
# On cards with room, CHECKPOINT_PARTS=vision=12+28 recomputes only the MLP of the last 28 vision blocks:
# 0.98 -> 0.87 s a step with GRAPH_PARTS=language on one H200, peak 51.8 -> 68.3 GiB (70.2 reserved).
DEFAULT_CHECKPOINT_PARTS=vision
# The host-bound LoRA language layers replayed as CUDA graphs (GRAPH_PARTS=none to switch off); at real size
# on H200s with 4 micro-batches of 4 per step on each GPU: one GPU 4.38 samples/s, two (ZeRO-2) 7.18 -> 8.32
# (peak 43.1 -> 39.5 GiB); one GPU with this launcher's 32 micro-batches 3.38 -> 4.08. The same first-step
# loss as eager, and (16-layer model) closer to float32 training than eager bf16 (docs/benchmarks.md,
# fourteenth and fifteenth rounds).
DEFAULT_GRAPH_PARTS=language
# One GPU: no DeepSpeed (ZeRO shards nothing there): a real-size step 1.39 s against ZeRO-2's 1.74 s, the
# same losses; the trainer keeps fp32 master weights itself (docs/benchmarks.md, eleventh round).
DEFAULT_ONE_GPU_DS=""
FAMILY_ARGS=()
source "$(dirname "$0")/../common.sh"
