"""Used by multigpu_check.sh: a trained Qwen checkpoint (full model or LoRA adapter) loads, its logits
differ from the base model's, and it generates.

    python3 benchmarks/check_trained.py WORK_DIR CHECKPOINT LABEL   (base: WORK_DIR/models/qwen)
"""

import sys
from pathlib import Path

import torch

from cogip.data.images import open_image
from cogip.models.families import FAMILIES
from cogip.models.adapters import load_adapted


def main(work: str, trained: str, label: str) -> None:
    fam = FAMILIES["qwen"]
    adapter = (Path(trained) / "adapter_config.json").is_file()
    model = load_adapted(trained)[0] if adapter else fam.load_model(trained)
    proc, base = fam.load_processor(trained), fam.load_model(f"{work}/models/qwen")
    img = open_image(f"{work}/bench/cognition/cognition_images/Aesthetics/000050.jpg")
    b = proc(text=[fam.chat_prompt(proc, "Aesthetics? label and score 0-10.")], images=[img], return_tensors="pt")
    with torch.no_grad():
        d = (model(**b).logits - base(**b).logits).abs().max().item()
    print(f"{label} {'adapter' if adapter else 'checkpoint'} loads; max |logit change| after training: {d}")
    assert d > 1e-3
    print("generates:", proc.batch_decode(model.generate(**b, max_new_tokens=8)[:, b["input_ids"].shape[1]:]))


if __name__ == "__main__":
    main(*sys.argv[1:4])
