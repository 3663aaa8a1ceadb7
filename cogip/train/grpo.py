"""`python -m cogip.train.grpo` — the RL ablation: trl's GRPOTrainer on the bench's GRPO JSON.

Reward per completion: 1 − |pred − gt| / range (range 10, 10, 6, 1), clipped to [−1, 1];
an answer that does not parse earns −0.5.
"""

from __future__ import annotations

import sys

import datasets
from transformers import HfArgumentParser, set_seed

from ..data.bench import read_training_json
from ..data.images import check_images
from ..dims import SCORE_RANGE
from ..errors import CogipError, exit_code
from ..models.blocks import autocast_vision_norms
from ..models.families import resolve_family
from ..parse import parse_answer
from .sft import DataArguments, ModelArguments, fp32_master_weights, require_transformers

UNPARSEABLE_REWARD = -0.5


def cogip_reward(completions, score, dimension, **kwargs) -> list[float]:
    rewards = []
    for completion, gt, dim in zip(completions, score, dimension):
        text = completion[-1]["content"] if isinstance(completion, list) else completion
        if isinstance(text, list):   # content parts
            text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
        parsed = parse_answer(text, dim)
        if not parsed.ok:
            rewards.append(UNPARSEABLE_REWARD)
        else:
            rewards.append(max(-1.0, min(1.0, 1.0 - abs(parsed.score - gt) / SCORE_RANGE[dim])))
    return rewards


def grpo_dataset(data_path: str, image_folder: str) -> datasets.Dataset:
    from pathlib import Path
    items = read_training_json(data_path, grpo=True)
    root = Path(image_folder)
    problems = check_images([(root / it.image, f"{it.image} (id {it.id})") for it in items])
    if problems:
        raise CogipError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
    ds = datasets.Dataset.from_list([{
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": it.prompt}]}],
        "image": str(root / it.image), "score": it.score, "dimension": it.dimension} for it in items])
    return ds.cast_column("image", datasets.Image())


def run(argv: list[str] | None = None):
    require_transformers()
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer
    margs, dargs, gargs = HfArgumentParser((ModelArguments, DataArguments, GRPOConfig)).parse_args_into_dataclasses(argv)
    family = resolve_family(margs.model_id, margs.family)
    dataset = grpo_dataset(dargs.data_path, dargs.image_folder)   # every item and image, before the model
    set_seed(gargs.seed)
    processor = family.load_processor(margs.model_id)
    model = family.load_model(margs.model_id)
    if margs.tune_mode == "full":   # LoRA: peft keeps its adapters in float32 itself
        fp32_master_weights(model, gargs)   # as in SFT: Adam's 1e-6 steps would vanish in bf16 weights
        if margs.cast_vision_norms:
            autocast_vision_norms(model, family)   # as in SFT: one bf16 copy of each vision norm's output
    peft_config = None if margs.tune_mode == "full" else LoraConfig(
        r=margs.lora_r, lora_alpha=margs.lora_alpha, lora_dropout=margs.lora_dropout,
        target_modules=family.lora_target_modules)
    gargs.remove_unused_columns = False
    trainer = GRPOTrainer(model=model, reward_funcs=[cogip_reward], args=gargs,
                          train_dataset=dataset,
                          processing_class=processor, peft_config=peft_config)
    trainer.train(resume_from_checkpoint=gargs.resume_from_checkpoint)
    trainer.save_model(gargs.output_dir)
    return trainer


def main(argv: list[str] | None = None) -> int:
    return exit_code("cogip grpo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
