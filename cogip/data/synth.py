"""The embedded default: a synthetic mini-bench whose scores follow visual cues a tiny model can learn.

Each dimension reads one continuous cue, so a model must use the prompt to know which:
- Aesthetics: background brightness
- Funniness: size of the central disc
- Emotional_Valence: colour temperature of the background (cool blue = -3 … warm orange = +3)
- Memorability: saturation of the central disc (grey = 0 … vivid red = 1)
Everything else (disc colour and position, a small distractor square, pixel noise) is random and
carries no signal; the disc always stands out from the background. (Disc position was tried for
Memorability: a 0.2 M-parameter model did not learn it in minutes, ρ ≈ 0.1.) Human-like noise is added to each score, so even a perfect cue reader stays below ρ = 1.
Deterministic for a seed. `draw` also renders an image for any given score, which is how the
published score lists get images here (`cogip data synth DIR --from-bench BENCH`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

import numpy as np
from PIL import Image, ImageDraw
from tqdm import tqdm
from tqdm.contrib.concurrent import process_map

from ..dims import DIMENSION_NAMES, Dimension, get_dimension
from ..errors import CogipError
from .layout import BenchPaths, read_score_list, read_training_json, write_atomic
from .build import build_bench


def _unit(dim: Dimension, score: float) -> float:
    return float(np.clip((score - dim.low) / dim.span, 0.0, 1.0))


def draw(dimension: str | Dimension, score: float, rng: np.random.Generator, size: int = 84) -> Image.Image:
    """An image whose cue for `dimension` encodes `score`."""
    dim = dimension if isinstance(dimension, Dimension) else get_dimension(dimension)
    u = _unit(dim, score)
    base = rng.uniform(70, 150)                                # neutral grey for the cue-free dimensions
    bg = np.array([base, base, base])
    radius, cx = rng.uniform(0.14, 0.30) * size, rng.uniform(0.35, 0.65) * size
    if dim.name == "Aesthetics":
        bg = np.full(3, 25 + 205 * u)
    elif dim.name == "Emotional_Valence":
        bg = np.array([60 + 170 * u, 110, 230 - 170 * u])
    elif dim.name == "Funniness":
        radius = (0.06 + 0.34 * u) * size
    disc = rng.integers(0, 256, 3).astype(float)
    if dim.name == "Memorability":
        grey = rng.uniform(90, 170)
        disc = (1 - u) * np.full(3, grey) + u * np.array([235.0, 25.0, 20.0])
    else:   # keep the disc visible: bright on a dark background, dark on a bright one
        disc = 255 - (255 - disc) * 0.35 if bg.mean() < 128 else disc * 0.35
    img = Image.new("RGB", (size, size), tuple(int(c) for c in bg))
    d = ImageDraw.Draw(img)
    cy = rng.uniform(0.4, 0.6) * size
    disc = tuple(int(c) for c in disc)
    d.ellipse([cx - radius, cy - radius, cx + radius, cy + radius], fill=disc)
    s = rng.uniform(0.06, 0.12) * size                         # distractor square in a corner
    x0, y0 = rng.choice([0.03, 0.80]) * size, rng.choice([0.03, 0.80]) * size
    d.rectangle([x0, y0, x0 + s, y0 + s], fill=tuple(int(c) for c in rng.integers(0, 256, 3)))
    pixels = np.asarray(img, dtype=np.float32) + rng.normal(0, 6, (size, size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def sample_scores(dim: Dimension, n: int, rng: np.random.Generator, noise: float = 0.04) -> np.ndarray:
    """Human-like score distributions; `noise` (fraction of the range) is added to what the cue shows."""
    if dim.integer:
        return rng.integers(int(dim.low), int(dim.high) + 1, n).astype(float)
    u = rng.beta(2.2, 2.2, n)
    scores = dim.low + dim.span * u
    return np.round(np.clip(scores, dim.low, dim.high), 3)


def _draw_one(job: tuple) -> None:
    """Draw and write one image; `job` = (dimension, score, rng key, size, path), size a side or (width,
    height): drawn square at the larger, then resized. Written under a temporary name and renamed, so an
    interrupted run leaves no half-written image for the next run to keep."""
    dim_name, score, key, size, out = job
    rng = np.random.default_rng(key)
    width, height = (size, size) if isinstance(size, int) else size
    image = draw(dim_name, score, rng, max(width, height))
    if width != height:
        image = image.resize((width, height), Image.BILINEAR)
    tmp = Path(f"{out}.tmp")
    image.save(tmp, format="JPEG", quality=95)
    os.replace(tmp, out)


def _draw_all(jobs: list[tuple], desc: str, workers: int | None) -> None:
    """Draw `jobs` in `workers` processes (default: every core, at most 16). Each image has its own
    random stream, so the files are the same whatever the number of workers."""
    workers = min(os.cpu_count() or 1, 16) if workers is None else workers
    if workers <= 1 or len(jobs) < 64:     # a pool's start costs more than a few small images
        for job in tqdm(jobs, desc=desc, leave=False):
            _draw_one(job)
    else:
        process_map(_draw_one, jobs, max_workers=workers, chunksize=8, desc=desc, leave=False)


def synth_bench(root: str | os.PathLike, n_per_dim: int = 400, n_train: int = 300, seed: int = 0,
                size: int = 84, noise: float = 0.04, dims: Iterable[str] | None = None) -> dict:
    """Write a complete synthetic bench folder; returns counts per dimension and split. One random stream
    draws it all, in order (the embedded default's images, so the demo's and tests' numbers, are these);
    for many large images, draw them for its score lists instead (`synth_images_for`, in parallel)."""
    paths = BenchPaths(root)
    rng = np.random.default_rng(seed)
    for name in dims or DIMENSION_NAMES:
        dim = get_dimension(name)
        scores = sample_scores(dim, n_per_dim, rng)
        folder = paths.images / dim.name
        folder.mkdir(parents=True, exist_ok=True)
        lines = []
        for i, score in enumerate(tqdm(scores, desc=f"synth {dim.name}", leave=False)):
            # the image shows the score plus perception noise, as a human mean would
            seen = score + rng.normal(0, noise * dim.span)
            draw(dim, seen, rng, size).save(folder / f"{i:06d}.jpg", quality=95)
            lines.append(f"{i:06d}.jpg\t{score:.3f}")
        write_atomic(paths.scores(dim.name), "\n".join(lines) + "\n")
    return build_bench(root, n_train=n_train, style="short", dims=dims)


def synth_images_for(bench: str | os.PathLike, image_root: str | os.PathLike, seed: int = 0, size: int = 84,
                     dims: Iterable[str] | None = None, workers: int | None = None,
                     size_range: tuple[int, int] | None = None, training_only: bool = False) -> int:
    """Draw a synthetic image for every item of `bench`'s score lists (the published images are not
    available); returns the number of images under `image_root/<Dim>/<file>`. Images already there are
    kept, so an interrupted run resumes. `size_range` = (low, high): each image's width and height drawn
    from it instead of `size` square, as real benches' images differ in size (what batches pad to).
    `training_only`: only the items `bench`'s training file names (each image the same as a full draw's)."""
    if size_range is not None and not 1 <= size_range[0] <= size_range[1]:
        raise CogipError(f"--size-range {size_range[0]} {size_range[1]}: needs 1 <= LOW <= HIGH")

    def sides(key):
        if size_range is None:
            return size
        low, high = size_range
        return tuple(int(x) for x in np.random.default_rng([*key, 1]).integers(low, high + 1, 2))   # not the drawing's stream

    src, root, jobs, count = BenchPaths(bench), Path(image_root), [], 0
    wanted = {item.image for item in read_training_json(src.training)} if training_only else None
    for name in dims or DIMENSION_NAMES:
        dim = get_dimension(name)
        rows = read_score_list(src.scores(dim.name), dim)
        (root / dim.name).mkdir(parents=True, exist_ok=True)
        d = DIMENSION_NAMES.index(dim.name)
        rows = [(i, file, score) for i, (file, score) in enumerate(rows)
                if wanted is None or f"{dim.name}/{file}" in wanted]   # i: the item's place, which keys its drawing
        jobs += [(dim.name, score, [seed, i, d], sides([seed, i, d]), root / dim.name / file)
                 for i, file, score in rows if not (root / dim.name / file).is_file()]
        count += len(rows)
    _draw_all(jobs, "synth images", workers)
    return count
