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


@pytest.fixture(scope="session")
def trained(tiny_models, synth_bench, tmp_path_factory):
    """Each tiny family model after a short full fine-tune on the synthetic bench. With the narrow-triangle kernel:
    expected mode reads the digit distributions, which the published kernel widens on purpose (it puts η of the
    mass over all ten digits: a Memorability units digit of 0 reads as 0.4), so generate and expected mode agree
    closely only for a model trained with a narrow one."""
    from cogip.train.sft import run as train
    out = {}
    for family, steps in (("qwen", 400), ("llama", 150), ("gemma", 150)):
        folder = tmp_path_factory.mktemp(f"trained_{family}")
        train(["--model_id", str(tiny_models[family]), "--data_path", str(synth_bench / "cognition_training.json"),
               "--image_folder", str(synth_bench / "cognition/cognition_images"), "--output_dir", str(folder),
               "--tune_mode", "full", "--max_steps", str(steps), "--per_device_train_batch_size", "8",
               "--learning_rate", "3e-3", "--vision_lr", "3e-3", "--merger_lr", "3e-3", "--warmup_steps", "0.05",
               "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True", "--seed", "1",
               "--soft_kernel", "narrow-triangle", "--min_pixels", "7056", "--max_pixels", "7056"])
        out[family] = folder
    return out
