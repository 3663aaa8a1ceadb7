"""The one model-adapter interface (lmms-eval style): what differs between the three families.

Everything else (data, loss, trainer, benchmark loop, generation swap) is family-agnostic and
talks to a model only through a `Family`.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from ..errors import CogipError


@dataclass(frozen=True)
class Family:
    name: str
    hub_id: str                         # the real checkpoint users fine-tune by default
    model_class: str                    # transformers class, loaded by name
    end_of_turn: str                    # token that closes an answer (the training target ends with it)
    vision_prefixes: tuple[str, ...]    # parameter-name prefixes of the vision tower
    projector_prefixes: tuple[str, ...] # … of the vision→language projector / merger
    language_prefix: str                # … of the language model (LoRA goes only here)
    images_nested: bool                 # processor wants one list of images per sample

    # LoRA on the language model's linear layers only: the vision blocks of Qwen also have
    # gate/up/down_proj, and lm_head / embed_tokens stay out as in the published recipe.
    @property
    def lora_target_modules(self) -> str:
        return (rf"^(?:.*\.)?{self.language_prefix}\..*\."
                r"(q_proj|k_proj|v_proj|o_proj|gate_proj|up_proj|down_proj)$")

    def model_cls(self):
        import transformers
        return getattr(transformers, self.model_class)

    def load_model(self, path: str | os.PathLike, dtype: Any = "auto", device: str | None = None, **kwargs):
        """`from_pretrained` of a hub id or a local checkpoint folder; with `device`, the weights loaded straight
        onto it (device_map), not into host memory first and then moved."""
        if device:
            kwargs["device_map"] = {"": device}
        try:
            return self.model_cls().from_pretrained(str(path), dtype=dtype, **kwargs)
        except OSError as e:
            raise CogipError(f"cannot load a {self.name} model from {path}: {str(e).splitlines()[0]}") from None

    def pixel_bounds(self, min_pixels: int | None = None, max_pixels: int | None = None) -> dict:
        """Qwen's image-size bounds as processor kwargs; the other families use fixed tiles: {}."""
        if self.name != "qwen":
            return {}
        return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}

    def load_processor(self, path: str | os.PathLike, **overrides):
        from transformers import AutoProcessor
        bounds = {k: overrides.pop(k) for k in ("min_pixels", "max_pixels") if k in overrides}
        try:
            processor = AutoProcessor.from_pretrained(str(path), **overrides)
        except OSError as e:
            raise CogipError(f"cannot load a {self.name} processor from {path}: {str(e).splitlines()[0]}") from None
        if bounds:
            self.set_pixel_bounds(processor, **bounds)
        return processor

    @staticmethod
    def set_pixel_bounds(processor, min_pixels: int | None = None, max_pixels: int | None = None) -> None:
        """Qwen's image-size bounds, set where transformers 5 keeps them (the image processor's `size`).
        Given to `from_pretrained` or set as attributes, they reach every processor call as deprecated
        keyword arguments, with a FutureWarning per call."""
        import dataclasses
        image_processor = processor.image_processor
        size = image_processor.size
        fields = dataclasses.asdict(size) if dataclasses.is_dataclass(size) else dict(size)
        if min_pixels:
            fields["shortest_edge"] = min_pixels
        if max_pixels:
            fields["longest_edge"] = max_pixels
        image_processor.size = type(size)(**fields)

    def visual_tokens_added(self, processor, width: int, height: int) -> int:
        """How many tokens an image of this size adds to its chat text's: Qwen's one image placeholder
        becomes its grid within the processor's pixel bounds (its own smart_resize), merged 2x2. 0 for the
        others, whose images add no length that varies (Gemma: 256 tokens each; Mllama: cross-attention)."""
        ip = processor.image_processor
        if self.name != "qwen" or not hasattr(ip, "merge_size"):   # not Qwen's processor: loading the model says so
            return 0
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
        factor = ip.patch_size * ip.merge_size
        try:
            h, w = smart_resize(height, width, factor, ip.size.shortest_edge, ip.size.longest_edge)
        except ValueError:   # an extreme aspect ratio, which the processor rejects when it meets the image
            return 0
        return (h // factor) * (w // factor) - 1

    def chat_prompt(self, processor, prompt: str) -> str:
        """The family's chat text for one image + one user prompt, ending where the answer starts."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def images_arg(self, images: list) -> list:
        return [[im] for im in images] if self.images_nested else list(images)

    def param_group(self, name: str) -> str:
        """'vision', 'projector' or 'language' for a parameter name (PEFT prefixes tolerated)."""
        name = name.replace("modules_to_save.default.", "").replace("original_module.", "")
        for group, prefixes in (("projector", self.projector_prefixes), ("vision", self.vision_prefixes)):
            if any(f"{p}." in name or name.startswith(p) for p in prefixes):
                return group
        return "language"


FAMILIES: dict[str, Family] = {
    "qwen": Family("qwen", "Qwen/Qwen2.5-VL-7B-Instruct", "Qwen2_5_VLForConditionalGeneration", "<|im_end|>",
                   vision_prefixes=("visual",), projector_prefixes=("visual.merger",),
                   language_prefix="language_model", images_nested=False),
    "llama": Family("llama", "meta-llama/Llama-3.2-11B-Vision-Instruct", "MllamaForConditionalGeneration",
                    "<|eot_id|>", vision_prefixes=("vision_model",), projector_prefixes=("multi_modal_projector",),
                    language_prefix="language_model", images_nested=True),
    "gemma": Family("gemma", "google/gemma-3-12b-it", "Gemma3ForConditionalGeneration", "<end_of_turn>",
                    vision_prefixes=("vision_tower",), projector_prefixes=("multi_modal_projector",),
                    language_prefix="language_model", images_nested=True),
}


def get_family(name: str) -> Family:
    key = name.lower()
    for fam in FAMILIES.values():
        if key == fam.name or key in fam.hub_id.lower() or key in fam.model_class.lower():
            return fam
    raise CogipError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")


def resolve_family(model_id: str | os.PathLike, family: str | None = None) -> Family:
    """`family` by name when given; else a checkpoint folder's, from its config; else a hub id's."""
    if family:
        return get_family(family)
    return detect_family(model_id) if os.path.isdir(str(model_id)) else get_family(str(model_id))


def detect_family(path: str | os.PathLike) -> Family:
    """The family of a checkpoint folder, from its config's model_type."""
    import json
    cfg = os.path.join(str(path), "config.json")
    if not os.path.isfile(cfg):
        raise CogipError("no config.json: pass --family", file=cfg)
    model_type = json.load(open(cfg)).get("model_type", "")
    for key, fam in (("qwen2_5_vl", "qwen"), ("qwen2_vl", "qwen"), ("mllama", "llama"), ("gemma3", "gemma")):
        if model_type.startswith(key):
            return FAMILIES[fam]
    raise CogipError(f"model_type {model_type!r} is not a supported family", file=cfg)
