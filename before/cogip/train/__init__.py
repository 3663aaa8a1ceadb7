"""Supervised fine-tuning (soft-label LoRA or full), adapter merging, GRPO."""
