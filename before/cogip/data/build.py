"""Write the bench's training, GRPO and test files from score lists and an image folder.

Split as published: per dimension, the first `n_train` items of the score list are for
training and the rest for test. Prompts are the project's own (`style="full"` or the short
ones for tiny models), or taken item by item, verbatim, from an existing bench folder
(`prompts_from`), which regenerates the published files exactly from the published score lists.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from ..dims import DIMENSION_NAMES, get_dimension
from ..errors import CogipError
from .bench import BenchPaths, load_json, read_score_list, strip_image_tag, write_json


def _verbatim_prompts(source: Path) -> tuple[dict, dict]:
    """(dim/file → raw training prompt, dim/file → raw test prompt) of an existing bench folder."""
    paths = BenchPaths(source)
    train = {}
    for i, entry in enumerate(load_json(paths.training)):
        image = entry["image"][0] if isinstance(entry["image"], list) else entry["image"]
        train[image] = entry["conversations"][0]["value"]
    test = {}
    for dim in DIMENSION_NAMES:
        if paths.messages(dim).is_file():
            for msg in load_json(paths.messages(dim)):
                parts = {p["type"]: p for p in msg[0]["content"]}
                test[parts["image"]["image"]] = parts["text"]["text"]
    return train, test


def build_bench(root: str | os.PathLike, n_train: int = 800, style: str = "full",
                prompts_from: str | os.PathLike | None = None, dims: Iterable[str] | None = None,
                check_images: bool = True) -> dict[str, dict[str, int]]:
    """Write training JSON, GRPO JSON and test message files into `root`; returns counts per split."""
    paths = BenchPaths(root)
    train_raw, test_raw = _verbatim_prompts(Path(prompts_from)) if prompts_from else ({}, {})
    training, grpo, counts = [], [], {}
    for name in dims or DIMENSION_NAMES:
        dim = get_dimension(name)
        rows = read_score_list(paths.scores(dim.name), dim)
        own = dim.short_prompt if style == "short" else dim.prompt
        messages, answers = [], []
        for i, (file, score) in enumerate(tqdm(rows, desc=f"build {dim.name}", leave=False)):
            image = f"{dim.name}/{file}"
            if check_images and not (paths.images / image).is_file():
                raise CogipError(f"image {image} not found under {paths.images}", file=str(paths.scores(dim.name)),
                                 item=f"line {i + 1}")
            answer = dim.format_answer(score)
            if i < n_train:
                raw = train_raw.get(image, f"<image>\n{own}") if prompts_from else f"<image>\n{own}"
                if prompts_from and image not in train_raw:
                    raise CogipError(f"no training prompt for {image}", file=str(BenchPaths(prompts_from).training))
                id_ = f"{i:05d}"
                training.append({"id": id_, "image": [image], "conversations": [
                    {"from": "human", "value": raw}, {"from": "gpt", "value": answer}]})
                grpo.append({"id": id_, "image": image, "conversations": [
                    {"from": "human", "value": strip_image_tag(raw)},
                    {"from": "gpt", "value": f"<answer>{answer}</answer>"}]})
            else:
                if prompts_from and image not in test_raw:
                    raise CogipError(f"no test prompt for {image}", file=str(BenchPaths(prompts_from).messages(dim.name)))
                text = test_raw[image] if prompts_from else own
                messages.append([{"role": "user", "content": [{"type": "image", "image": image},
                                                              {"type": "text", "text": text}]}])
                answers.append(answer)
        write_json(paths.messages(dim.name), messages)
        write_json(paths.test_scores(dim.name), answers)
        counts[dim.name] = {"train": min(n_train, len(rows)), "test": len(messages)}
    write_json(paths.training, training)
    write_json(paths.grpo, grpo)
    return counts
