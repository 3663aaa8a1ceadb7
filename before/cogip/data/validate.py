"""Check a bench folder: counts per dimension and split, images, lengths, scores, labels, ids.

Collects every problem as one line (`file: item N: what is wrong`) instead of stopping at the first.
"""

from __future__ import annotations

import os
from collections import Counter
from pathlib import Path

from ..dims import DIMENSION_NAMES
from ..errors import CogipError
from .bench import BenchPaths, read_score_list, read_test_messages, read_training_json, test_dimension_folders
from .images import check_images


def validate_bench(root: str | os.PathLike, image_root: str | os.PathLike | None = None,
                   decode_images: bool = True) -> tuple[dict, list[str]]:
    """Returns (counts {dim: {scores, train, grpo, test}}, problem lines)."""
    paths = BenchPaths(root)
    images = Path(image_root) if image_root else paths.images
    problems: list[str] = []
    counts = {d: Counter() for d in DIMENSION_NAMES}
    score_of: dict[str, float] = {}
    to_check: dict[str, tuple[Path, str]] = {}

    def attempt(fn, *args, **kw):
        try:
            return fn(*args, **kw)
        except CogipError as e:
            problems.append(str(e))
            return None

    for dim in DIMENSION_NAMES:
        rows = attempt(read_score_list, paths.scores(dim), dim)
        for file, score in rows or []:
            score_of[f"{dim}/{file}"] = score
        counts[dim]["scores"] = len(rows or [])

    def check_items(items, source, split):
        for item in items or []:
            counts[item.dimension][split] += 1
            ref = score_of.get(item.image)
            if ref is None:
                problems.append(f"{source}: item {item.id}: image {item.image} is not in its score list")
            elif abs(ref - item.score) > 5e-4:
                problems.append(f"{source}: item {item.id}: score {item.score:.3f} differs from the score list's "
                                f"{ref:.3f} for {item.image}")
            to_check.setdefault(item.image, (images / item.image, f"{item.image} ({source} item {item.id})"))

    if paths.test_dir.is_dir():   # an unknown folder there would stop the benchmark loop
        attempt(test_dimension_folders, paths.test_dir)
    check_items(attempt(read_training_json, paths.training), paths.training, "train")
    check_items(attempt(read_training_json, paths.grpo, grpo=True), paths.grpo, "grpo")
    for dim in DIMENSION_NAMES:
        check_items(attempt(read_test_messages, paths.messages(dim), paths.test_scores(dim), dim),
                    paths.messages(dim), "test")
    if decode_images:
        problems += check_images(sorted(to_check.values()))
    return {d: dict(c) for d, c in counts.items()}, problems
