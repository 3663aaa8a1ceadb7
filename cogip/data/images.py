"""Opening bench images, with one clear error for a missing or undecodable file."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Iterable

from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from ..errors import CogipError


def open_image(path: str | os.PathLike, item: str | int | None = None) -> Image.Image:
    """The image as RGB, fully decoded; CogipError naming the file if it is missing or corrupt."""
    path = Path(path)
    if not path.is_file():
        raise CogipError("image not found", file=str(path), item=item)
    try:
        with Image.open(path) as im:
            im.load()
            return im.convert("RGB")
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
        raise CogipError(f"image cannot be decoded ({type(e).__name__}: {e})", file=str(path), item=item) from None


def _problem(pair) -> str | None:
    try:
        open_image(*pair)
    except CogipError as e:
        return str(e)
    return None


def raise_first(problems: list[str]) -> None:
    """`check_images`' error lines as one CogipError: the first, and how many more (nothing where none)."""
    if problems:
        raise CogipError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))


def check_images(paths: Iterable[tuple[str | os.PathLike, str | int | None]], desc: str = "check images",
                 workers: int | None = None, progress: bool = True) -> list[str]:
    """Decode every (path, item) pair, on a thread pool (decoding releases the GIL); returns one error
    line per bad image, in input order (empty when all are fine)."""
    from concurrent.futures import ThreadPoolExecutor
    pairs = list(paths)
    workers = workers or min(16, os.cpu_count() or 1)
    with ThreadPoolExecutor(workers) as pool:
        found = list(tqdm(pool.map(_problem, pairs, chunksize=8), total=len(pairs), desc=desc, leave=False,
                               disable=not progress))
    return [p for p in found if p]
