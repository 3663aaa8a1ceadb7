"""SFT data: bench training JSON → `datasets.Dataset`, and the family-agnostic collator."""

from __future__ import annotations

import os
from pathlib import Path

import torch
from datasets import Dataset

from ..data.layout import read_training_json
from ..data.images import check_images, open_image, raise_first
from ..errors import CogipError
from ..models.families import Family


def load_sft_dataset(data_path: str | os.PathLike, image_folder: str | os.PathLike, grpo: bool = False,
                     check: bool = True) -> Dataset:
    """Every item of a `cognition_training.json`-style file; every image is decoded once up front,
    so a missing or corrupt one stops the run before the first step, named."""
    items = read_training_json(data_path, grpo=grpo)
    if not items:
        raise CogipError("no training items", file=str(data_path))
    root = Path(image_folder)
    if check:
        raise_first(check_images([(root / it.image, f"{it.image} ({Path(data_path).name} id {it.id})")
                                  for it in items]))
    return Dataset.from_list([{"image": str(root / it.image), "prompt": it.prompt, "answer": it.answer,
                               "dimension": it.dimension, "score": it.score} for it in items])


class SFTCollator:
    """Batch = family chat prompt + answer + end-of-turn, right-padded (to a multiple of
    `pad_to_multiple_of` if given); labels only on the answer.

    The answer is tokenized on its own and must be the tail of each row: the chat prompt ends with a
    special token or a newline, so nothing merges across the boundary (checked, not assumed).
    """

    def __init__(self, family: Family, processor, pad_to_multiple_of: int | None = None):
        self.family, self.processor, self.pad_to_multiple_of = family, processor, pad_to_multiple_of
        self.tokenizer = processor.tokenizer

    def __call__(self, rows: list[dict]) -> dict:
        images = [open_image(r["image"]) for r in rows]
        answers = [r["answer"] + self.family.end_of_turn for r in rows]
        texts = [self.family.chat_prompt(self.processor, r["prompt"]) + a for r, a in zip(rows, answers)]
        self.tokenizer.padding_side = "right"
        batch = self.family.encode(self.processor, texts, images, return_tensors="pt", padding=True,
                                   pad_to_multiple_of=self.pad_to_multiple_of)
        ids, mask = batch["input_ids"], batch["attention_mask"]
        labels = torch.full_like(ids, -100)
        lengths = mask.sum(1).tolist()
        for i, answer in enumerate(answers):
            target = self.tokenizer(answer, add_special_tokens=False)["input_ids"]
            end = lengths[i]
            if ids[i, end - len(target):end].tolist() != target:
                raise CogipError(f"answer {rows[i]['answer']!r} does not tokenize the same inside the chat text",
                                 item=rows[i]["image"])
            labels[i, end - len(target):end] = torch.tensor(target)
        batch["labels"] = labels
        return dict(batch)
