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


def check_images(paths: Iterable[tuple[str | os.PathLike, str | int | None]], desc: str = "check images") -> list[str]:
    """Decode every (path, item) pair; returns one error line per bad image (empty when all are fine)."""
    problems = []
    for path, item in tqdm(list(paths), desc=desc, leave=False):
        try:
            open_image(path, item)
        except CogipError as e:
            problems.append(str(e))
    return problems
