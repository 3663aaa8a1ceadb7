"""Adapter folders in the published layout (LoRA weights under transformers 4.51's names, the trained vision
tower and merger in non_lora_state_dict.bin) load, score and merge with every trained weight applied."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from cogip.data.images import open_image
from cogip.errors import CogipError
from cogip.models.adapters import load_adapted
from cogip.models.families import FAMILIES

LEGACY = (("model.language_model.", "model."), ("model.visual.", "visual."))   # Qwen2.5-VL under transformers 4.51


def legacy(name: str) -> str:
    for new, old in LEGACY:
        if name.startswith(new):
            return old + name[len(new):]
    return name


def published_folder(tiny: Path, out: Path, seed: int = 0):
    """Write what the published train_sft.py writes for a LoRA run (lora_enable, vision and merger trained),
    and return the model it stands for: the base with the same weights applied, built with current names."""
    from peft import LoraConfig, get_peft_model
    from peft.utils import get_peft_model_state_dict
    fam = FAMILIES["qwen"]
    model = fam.load_model(tiny)
    targets = [n for n, m in model.named_modules() if isinstance(m, torch.nn.Linear) and "visual" not in n
               and "lm_head" not in n]
    g = torch.Generator().manual_seed(seed)
    extra = {}
    for name, p in model.named_parameters():   # the trained vision tower and merger
        if fam.param_group(name) in ("vision", "projector"):
            p.data += 0.05 * torch.randn(p.shape, generator=g)
            extra["base_model.model." + legacy(name)] = p.detach().clone()
    config = LoraConfig(r=4, lora_alpha=8, target_modules=targets)
    peft_model = get_peft_model(model, config)
    for name, p in peft_model.named_parameters():
        if "lora_" in name:
            p.data = 0.1 * torch.randn(p.shape, generator=g)
    state = get_peft_model_state_dict(peft_model)
    out.mkdir(parents=True)
    save_file({"base_model.model." + legacy(k.removeprefix("base_model.model.")): v.contiguous()
               for k, v in state.items()}, str(out / "adapter_model.safetensors"))
    cfg = config.to_dict()
    cfg.update(target_modules=[legacy(t) for t in targets], base_model_name_or_path=str(tiny), peft_type="LORA",
               task_type=None)
    (out / "adapter_config.json").write_text(json.dumps(cfg, default=list))
    torch.save(extra, out / "non_lora_state_dict.bin")
    shutil.copy(tiny / "config.json", out / "config.json")   # the published code saves the model config too
    return peft_model.eval()


def _logits(model, tiny, synth_bench):
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(tiny)
    image = open_image(synth_bench / "cognition/cognition_images/Aesthetics/000001.jpg")
    batch = fam.encode(proc, [fam.chat_prompt(proc, "How beautiful?")], [image], return_tensors="pt")
    with torch.no_grad():
        return model(**batch).logits


def test_published_layout_loads_scores_and_merges(tiny_models, synth_bench, tmp_path):
    tiny = tiny_models["qwen"]
    expected = published_folder(tiny, tmp_path / "published")
    reference = _logits(expected, tiny, synth_bench)
    base = _logits(FAMILIES["qwen"].load_model(tiny), tiny, synth_bench)
    adapted, fam = load_adapted(tmp_path / "published")
    assert fam.name == "qwen"
    got = _logits(adapted, tiny, synth_bench)
    assert torch.allclose(got, reference, atol=1e-5)
    assert (got - base).abs().max() > 0.05   # the LoRA and the vision weights both changed it
    from cogip.train.merge import merge
    merged = FAMILIES["qwen"].load_model(merge(tmp_path / "published", tmp_path / "merged"))
    assert torch.allclose(_logits(merged, tiny, synth_bench), reference, atol=1e-4)
    from cogip.evaluate.scorer import Scorer   # and the scorer takes the folder as it is (its exact, faster
    scorer = Scorer.load(str(tmp_path / "published"))   # vision attention rounds differently: float32 noise)
    assert torch.allclose(_logits(scorer.model, tiny, synth_bench), reference, atol=1e-3)


def test_published_layout_weight_that_cannot_be_applied(tiny_models, tmp_path):
    tiny = tiny_models["qwen"]
    published_folder(tiny, tmp_path / "published")
    extra = torch.load(tmp_path / "published/non_lora_state_dict.bin", weights_only=True)
    extra["base_model.model.visual.extra_head.weight"] = torch.zeros(2, 2)
    torch.save(extra, tmp_path / "published/non_lora_state_dict.bin")
    with pytest.raises(CogipError, match="'base_model.model.visual.extra_head.weight' cannot be applied"):
        load_adapted(tmp_path / "published")


class Crafted:
    def __reduce__(self):
        import os
        return (os.system, (f"touch {Crafted.marker}",))


def test_a_crafted_non_lora_file_runs_no_code(tiny_models, tmp_path):
    import pickle
    published_folder(tiny_models["qwen"], tmp_path / "published")
    Crafted.marker = tmp_path / "ran"
    (tmp_path / "published/non_lora_state_dict.bin").write_bytes(pickle.dumps({"w": Crafted()}))
    with pytest.raises(CogipError, match="non_lora_state_dict.bin: not a plain file of tensors"):
        load_adapted(tmp_path / "published")
    assert not (tmp_path / "ran").exists()
