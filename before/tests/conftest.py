"""Shared fixtures: the published bench (skipped where absent), a synthetic bench, tiny models."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PUBLISHED = Path(os.environ.get("COGIP_PUBLISHED_BENCH", ROOT.parent / "shared" / "cogip-bench")) / "data"


@pytest.fixture(scope="session")
def published() -> Path:
    if not (PUBLISHED / "cognition_training.json").is_file():
        pytest.skip(f"published CogIP-Bench files not found at {PUBLISHED}")
    return PUBLISHED


@pytest.fixture(scope="session")
def published_images(published, tmp_path_factory) -> Path:
    """Synthetic images for every item of the published score lists."""
    from cogip.data.synth import synth_images_for
    root = tmp_path_factory.mktemp("published_images")
    synth_images_for(published, root)
    return root


@pytest.fixture(scope="session")
def synth_bench(tmp_path_factory) -> Path:
    from cogip.data.synth import synth_bench
    root = tmp_path_factory.mktemp("synth_bench")
    synth_bench(root, n_per_dim=24, n_train=16, seed=0)
    return root


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory) -> dict[str, Path]:
    from cogip.models.tiny import build_tiny
    root = tmp_path_factory.mktemp("tiny_models")
    return {f: build_tiny(f, root / f) for f in ("qwen", "llama", "gemma")}
