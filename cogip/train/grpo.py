"""`cogip grpo` — the RL ablation: trl's GRPOTrainer on the bench's training items.

Rewards (`--reward`):
- `published` (default): the published reward as the published code computes it: the last number of the
  completion's `<answer>…</answer>` body (or of the whole text) against the target's, `1 − |pred − gt| / 10`
  clipped to [−1, 1], −0.5 where either has no number. The published code looks the range up per dimension
  (10, 10, 6, 1) from sample metadata its trainer never passes, so it falls back to 10 for every dimension.
- `per-dimension-range`: the answer parsed as the benchmark loop parses it (label, then score) and the
  dimension's own range (10, 10, 6, 1); −0.5 where it does not parse.

The published recipe (sft/qwen/grpo.yaml, which sft/qwen/finetune_grpo.sh reads): the language model frozen and not adapted,
the vision tower and merger trained (`--tune_mode frozen-llm`), lr 1e-6, vision 2e-7, 2 generations per
prompt, one completion per device a micro-step, completions up to 256 tokens, images of 128·28² to
256·28² pixels, β 0.04, temperature 0.9, top-k 50, trl 0.17's loss (`bnpo`). Either training file
(`cognition_training.json`, which the published script names, or `training_grpo.json`) is read.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

import datasets
from transformers import HfArgumentParser, set_seed

from ..data.layout import read_training_json
from ..data.images import check_images, raise_first
from ..dims import SCORE_RANGE
from ..errors import CogipError, exit_code
from ..accel.training import AccelArguments, TrainingAccel
from ..models.families import resolve_family
from ..parse import parse_answer
from .sft import (DataArguments, ModelArguments, fill_model_id, fp32_master_weights, prepare_trainable, read_recipes,
                  require_transformers)

UNPARSEABLE_REWARD = -0.5
PUBLISHED_RANGE = 10.0
_ANSWER = re.compile(r"<answer>\s*([^<]+?)\s*</answer>", re.I | re.S)
_LAST_NUMBER = re.compile(r"[-+]?\d*\.?\d+(?:[eE][-+]?\d+)?")


def _text(completion) -> str:
    text = completion[-1]["content"] if isinstance(completion, list) else completion
    if isinstance(text, list):   # content parts
        text = " ".join(p.get("text", "") for p in text if isinstance(p, dict))
    return text if isinstance(text, str) else str(text)


def _last_number(text: str) -> float | None:
    tagged = _ANSWER.search(text)
    numbers = _LAST_NUMBER.findall(tagged.group(1) if tagged else text)
    return float(numbers[-1]) if numbers else None


def published_reward(completions, answer, **kwargs) -> list[float]:
    rewards = []
    for completion, target in zip(completions, answer):
        pred, gt = _last_number(_text(completion)), _last_number(target)
        if pred is None or gt is None:
            rewards.append(UNPARSEABLE_REWARD)
        else:
            rewards.append(max(-1.0, min(1.0, 1.0 - abs(pred - gt) / PUBLISHED_RANGE)))
    return rewards


def range_reward(completions, score, dimension, **kwargs) -> list[float]:
    rewards = []
    for completion, gt, dim in zip(completions, score, dimension):
        parsed = parse_answer(_text(completion), dim)
        if not parsed.ok:
            rewards.append(UNPARSEABLE_REWARD)
        else:
            rewards.append(max(-1.0, min(1.0, 1.0 - abs(parsed.score - gt) / SCORE_RANGE[dim])))
    return rewards


REWARDS = {"published": published_reward, "per-dimension-range": range_reward}


@dataclass
class RewardArguments:
    reward: str = field(default="published", metadata={"help": " | ".join(REWARDS)})


def grpo_dataset(data_path: str, image_folder: str) -> datasets.Dataset:
    from pathlib import Path
    items = read_training_json(data_path, grpo=None)   # either training file
    root = Path(image_folder)
    raise_first(check_images([(root / it.image, f"{it.image} (id {it.id})") for it in items]))
    ds = datasets.Dataset.from_list([{
        "prompt": [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": it.prompt}]}],
        "image": str(root / it.image), "answer": it.answer, "score": it.score, "dimension": it.dimension}
        for it in items])
    return ds.cast_column("image", datasets.Image())


def run(argv: list[str] | None = None):
    require_transformers()
    from peft import LoraConfig
    from trl import GRPOConfig, GRPOTrainer
    from .trainer import PartLearningRates

    class CogipGRPOTrainer(PartLearningRates, GRPOTrainer):
        def __init__(self, *args, family, vision_lr, merger_lr, **kwargs):
            self.family, self.vision_lr, self.merger_lr = family, vision_lr, merger_lr
            super().__init__(*args, **kwargs)

    from ..published import translate_sft
    argv = translate_sft(argv, "cogip grpo")   # the published train_grpo.py's flags too
    parser = HfArgumentParser((ModelArguments, DataArguments, RewardArguments, AccelArguments, GRPOConfig),
                              prog="cogip grpo")
    argv = read_recipes(parser, argv, "cogip grpo")
    try:
        margs, dargs, rargs, aargs, gargs = parser.parse_args_into_dataclasses(argv)
    except ValueError as e:   # an unknown flag, or values TrainingArguments rejects
        raise CogipError(" ".join(str(e).split())[:400]) from None
    fill_model_id(margs)
    if rargs.reward not in REWARDS:
        raise CogipError(f"--reward {rargs.reward!r}: expected one of {', '.join(REWARDS)}")
    family = resolve_family(margs.model_id, margs.family)
    dataset = grpo_dataset(dargs.data_path, dargs.image_folder)   # every item and image, before the model
    speed = TrainingAccel(aargs, family, gargs)
    set_seed(gargs.seed)
    processor = family.load_processor(margs.model_id, **family.pixel_bounds(margs.min_pixels, margs.max_pixels,
                                                                             published=True))
    model = family.load_model(margs.model_id)
    peft_config = None
    if margs.tune_mode == "lora":   # LoRA on the language model through trl; peft keeps adapters in float32
        peft_config = LoraConfig(r=margs.lora_r, lora_alpha=margs.lora_alpha, lora_dropout=margs.lora_dropout,
                                 target_modules=family.lora_target_modules, use_dora=margs.use_dora)
        model = speed.apply(model, lambda m: m)
    else:   # full, or frozen-llm (published): the parts trained in place
        def make_trainable(model):
            model = prepare_trainable(model, family, margs)
            fp32_master_weights(model, gargs)   # as in SFT: Adam's 1e-6 steps would vanish in bf16 weights
            return model
        model = speed.apply(model, make_trainable)
    gargs.remove_unused_columns = False
    trainer = CogipGRPOTrainer(model=model, reward_funcs=[REWARDS[rargs.reward]], args=gargs, train_dataset=dataset,
                               processing_class=processor, peft_config=peft_config, family=family,
                               vision_lr=margs.vision_lr, merger_lr=margs.merger_lr, callbacks=speed.callbacks)
    trainer.train(resume_from_checkpoint=gargs.resume_from_checkpoint)
    trainer.save_model(gargs.output_dir)
    return trainer


def main(argv: list[str] | None = None) -> int:
    return exit_code("cogip grpo", run, argv)


if __name__ == "__main__":
    sys.exit(main())
