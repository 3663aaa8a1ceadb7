"""The scorer's speed paths are exact: per-call model state kept per thread (batches answered
concurrently, `Scorer.answer_stream`), pixels prepared in the model's dtype."""

import threading

import numpy as np
import pytest
import torch
from PIL import Image

from cogip.dims import get_dimension

from cogip.evaluate.scorer import Scorer, _per_thread_state
from cogip.models.families import FAMILIES


def test_per_thread_state_is_per_thread(tiny_models):
    scorer = Scorer.load(str(tiny_models["qwen"]))
    holders = [m for m in scorer.model.modules() if "rope_deltas" in vars(m)]
    assert len(holders) == 1
    inner = holders[0]
    inner.rope_deltas = "main"
    _per_thread_state(scorer.model)
    _per_thread_state(scorer.model)                      # idempotent
    assert inner.rope_deltas == "main" and "rope_deltas" not in vars(inner)
    seen = []
    thread = threading.Thread(target=lambda: (seen.append(inner.rope_deltas), setattr(inner, "rope_deltas", 7)))
    thread.start(), thread.join()
    assert seen == [None] and inner.rope_deltas == "main"
    assert type(inner).__name__ == type(inner).__mro__[1].__name__    # same class name for what inspects it


@pytest.mark.parametrize("family", ["qwen", "llama", "gemma"])
def test_pixels_prepared_in_the_model_dtype_are_exact(family, tiny_models):
    """`prepare` casts pixels to a bf16 model's dtype in the loader (half the bytes to move): the logits
    are those of the model casting float32 pixels itself."""
    fam = FAMILIES[family]
    path = str(tiny_models[family])
    scorer = Scorer(fam.load_model(path, dtype=torch.bfloat16), fam.load_processor(path), fam)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (80 + 16 * i, 96, 3), dtype=np.uint8)) for i in range(3)]
    prompt = get_dimension("Aesthetics").prompt
    prepared = scorer.prepare(images, [prompt] * 3)
    raw = dict(fam.encode(scorer.processor, [fam.chat_prompt(scorer.processor, prompt)] * 3, images,
                          return_tensors="pt", padding=True))
    assert prepared["pixel_values"].dtype == torch.bfloat16 and raw["pixel_values"].dtype == torch.float32
    with torch.no_grad():
        assert torch.equal(scorer.model(**prepared).logits, scorer.model(**raw).logits)
