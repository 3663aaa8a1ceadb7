"""The one model-adapter interface (lmms-eval style): what differs between the model families.

Everything else (data, loss, trainer, benchmark loop, generation swap) is family-agnostic and talks to a
model only through a `Family`. A family is one entry of `FAMILIES` below; to add one, add its entry (and
its launch defaults: sft/<family>/recipe.yaml, and the two launchers that name it).

Any other vision-language model transformers knows (`AutoModelForImageTextToText`: Idefics3/SmolVLM,
LLaVA-OneVision, InternVL, PaliGemma, Qwen3-VL, ...) is scored through `GENERIC`: its own processor and chat
template with an image content part. It has no training recipe, so it is for `cogip evaluate` only.
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
    end_of_turn: str | None             # token that closes an answer (the training target ends with it);
                                        # None: the model's generation config's end tokens
    vision_prefixes: tuple[str, ...]    # parameter-name prefixes of the vision tower
    projector_prefixes: tuple[str, ...] # … of the vision→language projector / merger
    language_prefix: str                # … of the language model (LoRA goes only here)
    images_nested: bool                 # processor wants one list of images per sample
    model_types: tuple[str, ...]        # config.json model_type values of this family (prefixes)
    default_pixels: tuple[int, int] | None = None   # (min, max) image pixels of the published runs, where
                                                    # the processor resizes within bounds (Qwen); else fixed tiles

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

    def pixel_bounds(self, min_pixels: int | None = None, max_pixels: int | None = None,
                     published: bool = False) -> dict:
        """Image-size bounds as processor kwargs, for a family whose processor takes them; {} for fixed tiles.
        `published`: a bound not given is the published runs' (`default_pixels`), not the processor's own.
        The generic adapter takes the bounds given, for a Qwen-VL-kind processor (`set_pixel_bounds` checks)."""
        if self.default_pixels is None and self.name != "generic":
            return {}
        if published and self.default_pixels:
            min_pixels, max_pixels = min_pixels or self.default_pixels[0], max_pixels or self.default_pixels[1]
        return {k: v for k, v in (("min_pixels", min_pixels), ("max_pixels", max_pixels)) if v}

    def load_processor(self, path: str | os.PathLike, **overrides):
        from transformers import AutoProcessor
        bounds = {k: overrides.pop(k) for k in ("min_pixels", "max_pixels") if k in overrides}
        try:
            processor = AutoProcessor.from_pretrained(str(path), **overrides)
        except OSError as e:
            raise CogipError(f"cannot load a {self.name} processor from {path}: {str(e).splitlines()[0]}") from None
        if self.name == "generic":   # what the generic adapter asks through: the model's own processor and template
            if not hasattr(processor, "image_processor"):
                raise CogipError("no image processor (preprocessor_config.json): the model cannot take an image",
                                 file=str(path))
            if not getattr(processor, "chat_template", None):
                raise CogipError("no chat template (chat_template.jinja): the generic adapter asks through the "
                                 "model's own", file=str(path))
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
        if not hasattr(image_processor, "merge_size"):   # Qwen2-VL's kind (Qwen2.5-VL, Qwen3-VL): pixel-count bounds
            raise CogipError(f"--min-pixels/--max-pixels bound Qwen-VL processors' image sizes; this model's "
                             f"{type(image_processor).__name__} sizes images its own way")
        size = image_processor.size
        fields = dataclasses.asdict(size) if dataclasses.is_dataclass(size) else dict(size)
        if min_pixels:
            fields["shortest_edge"] = min_pixels
        if max_pixels:
            fields["longest_edge"] = max_pixels
        image_processor.size = type(size)(**fields)

    def chat_prompt(self, processor, prompt: str) -> str:
        """The family's chat text for one image + one user prompt, ending where the answer starts."""
        messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}]
        return processor.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)

    def encode(self, processor, texts: list[str], images: list, **kwargs):
        """Chat texts and their images -> model inputs. A chat text already holds every special token its
        template renders, BOS included, so the tokenizer adds none of its own: Llama's and Gemma's would
        put a second BOS before the template's (transformers' apply_chat_template tokenizes the same way)."""
        return processor(text=texts, images=self.images_arg(images), add_special_tokens=False, **kwargs)

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
                   language_prefix="language_model", images_nested=False, model_types=("qwen2_5_vl", "qwen2_vl"),
                   default_pixels=(256 * 28 * 28, 1280 * 28 * 28)),
    "llama": Family("llama", "meta-llama/Llama-3.2-11B-Vision-Instruct", "MllamaForConditionalGeneration",
                    "<|eot_id|>", vision_prefixes=("vision_model",), projector_prefixes=("multi_modal_projector",),
                    language_prefix="language_model", images_nested=True, model_types=("mllama",)),
    "gemma": Family("gemma", "google/gemma-3-12b-it", "Gemma3ForConditionalGeneration", "<end_of_turn>",
                    vision_prefixes=("vision_tower",), projector_prefixes=("multi_modal_projector",),
                    language_prefix="language_model", images_nested=True, model_types=("gemma3",)),
}


# any other image-text-to-text model of transformers; the prefixes are the usual transformers 5 module names
GENERIC = Family("generic", "", "AutoModelForImageTextToText", None,
                 vision_prefixes=("model.vision_tower", "model.visual", "model.vision_model", "vision_tower"),
                 projector_prefixes=("model.multi_modal_projector", "model.connector", "multi_modal_projector"),
                 language_prefix="language_model", images_nested=True, model_types=())
FAMILY_CHOICES = ("auto", *FAMILIES, GENERIC.name)   # for --family: auto reads the model's config.json


def get_family(name: str) -> Family:
    key = name.lower()
    if key == GENERIC.name:
        return GENERIC
    for fam in FAMILIES.values():
        if key == fam.name or key in fam.hub_id.lower() or key in fam.model_class.lower():
            return fam
    raise CogipError(f"unknown model family {name!r}; expected one of {', '.join(FAMILIES)}")


def resolve_family(model_id: str | os.PathLike, family: str | None = None, any_model: bool = False,
                   trust_remote_code: bool = False) -> Family:
    """The family of a model source — a hub id, a checkpoint folder or a LoRA adapter folder — from its files
    where it has them (config.json's model_type; an adapter's recorded family or base), checked against
    `family` when given (None or "auto": read from the files). Called before anything loads, so a wrong source
    fails in one line, not after the weights. `any_model`: a vision-language model of no family (scoring only)
    is `GENERIC`; otherwise it is an error naming the families that can be trained."""
    check_source(model_id)
    family = None if family in (None, "auto") else family
    found, what = _family_of(str(model_id), trust_remote_code)
    if found is None and family in (None, GENERIC.name):   # a hub id naming no family: its config.json
        found, what = _hub_family(str(model_id), trust_remote_code)
    if family:
        fam = get_family(family)
        if fam is GENERIC and any_model:
            return GENERIC   # any vision-language model, a named family's too, through the generic adapter
        if found is not None and found is not fam:
            hint = ("evaluation/cog_test.sh scores any vision-language model" if found is GENERIC else
                    f"use the {found.name} scripts (sft/{found.name}/, evaluation/{found.name}/)")
            raise CogipError(f"{what}, not {fam.name}: {hint}, or a {fam.name} model", file=str(model_id))
        found = fam
    if found is GENERIC and not any_model:
        raise CogipError(f"{what}: cogip can score it (evaluation/cog_test.sh) but fine-tunes only "
                         f"{', '.join(FAMILIES)} models", file=str(model_id))
    if found is None:
        raise CogipError(f"cannot tell the model family of {model_id}: pass --family ({', '.join(FAMILIES)})")
    return found


def family_of_config(cfg: dict, where: str, trust_remote_code: bool = False) -> Family:
    """The family of a config.json: a named family by model_type; any other image-text-to-text model of
    transformers (or of the checkpoint's own code, with trust_remote_code) GENERIC; else one line saying why
    it cannot be scored."""
    from transformers.models.auto.configuration_auto import CONFIG_MAPPING_NAMES
    from transformers.models.auto.modeling_auto import MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES
    model_type = cfg.get("model_type", "")
    for fam in FAMILIES.values():
        if model_type and model_type.startswith(fam.model_types):
            return fam
    if model_type in MODEL_FOR_IMAGE_TEXT_TO_TEXT_MAPPING_NAMES:
        return GENERIC
    auto_map = cfg.get("auto_map") or {}
    if auto_map and model_type not in CONFIG_MAPPING_NAMES:
        if not trust_remote_code:
            raise CogipError(f"model_type {model_type!r} runs code shipped with the checkpoint (auto_map), which "
                             f"cogip does not run unless told: pass --trust-remote-code if you trust it", file=where)
        if "AutoModelForImageTextToText" not in auto_map:
            raise CogipError(f"model_type {model_type!r}: its code defines no AutoModelForImageTextToText "
                             f"(auto_map has {', '.join(sorted(auto_map))}), the interface cogip scores through",
                             file=where)
        return GENERIC
    if model_type in CONFIG_MAPPING_NAMES:
        raise CogipError(f"model_type {model_type!r} takes no images (transformers has no image-text-to-text "
                         f"model for it): CogIP-Bench needs a vision-language model", file=where)
    import transformers
    raise CogipError(f"model_type {model_type!r} is unknown to transformers {transformers.__version__} "
                     f"(a newer one may know it)", file=where)


def detect_family(path: str | os.PathLike, trust_remote_code: bool = False) -> Family:
    """The family of a checkpoint folder, from its config's model_type."""
    import json
    cfg = os.path.join(str(path), "config.json")
    if not os.path.isfile(cfg):
        raise CogipError("no config.json: pass --family", file=cfg)
    return family_of_config(json.load(open(cfg)), cfg, trust_remote_code)


def _family_of(source: str, trust_remote_code: bool = False) -> tuple[Family | None, str]:
    """(family, how it was found) of a source, or (None, "") where its files or name do not say."""
    import json
    config = os.path.join(source, "config.json")
    if os.path.isfile(config):
        cfg = json.load(open(config))
        fam, model_type = family_of_config(cfg, config, trust_remote_code), cfg.get("model_type")
        return fam, f"{source} is a {fam.name if fam is not GENERIC else model_type} checkpoint (model_type {model_type!r})"
    adapter = os.path.join(source, "adapter_config.json")
    if os.path.isfile(adapter):
        info = os.path.join(source, "cogip_train.json")   # written beside a cogip SFT run's weights
        recorded = json.load(open(info)).get("family") if os.path.isfile(info) else None
        if recorded in FAMILIES:
            return FAMILIES[recorded], f"{source} is an adapter of a {recorded} model"
        base = json.load(open(adapter)).get("base_model_name_or_path")
        if base and (os.path.isdir(base) or not _looks_like_path(base)):
            fam, _ = _family_of(base, trust_remote_code)
            if fam is not None:
                return fam, f"{source} is an adapter of {base}, a {fam.name} model"
        return None, ""
    if os.path.isdir(source):
        raise CogipError("neither a checkpoint (config.json) nor a LoRA adapter (adapter_config.json)", file=source)
    name = source.lower()   # a hub id: its name, where it names a family
    named = [f for f in FAMILIES.values() if name == f.hub_id.lower() or f.name in name]
    return (named[0], f"{source} is a {named[0].name} model") if len(named) == 1 else (None, "")


def _hub_family(source: str, trust_remote_code: bool = False) -> tuple[Family | None, str]:
    """A hub id whose name names no family: its config.json (cached, or fetched: a few KB)."""
    import json
    if os.path.isdir(source) or _looks_like_path(source):
        return None, ""
    from huggingface_hub import hf_hub_download
    try:
        path = hf_hub_download(source, "config.json")
    except Exception:   # an adapter repository, no network: loading says the rest
        return None, ""
    cfg = json.load(open(path))
    fam = family_of_config(cfg, source, trust_remote_code)
    return fam, f"{source} is a {cfg.get('model_type')!r} model"


def _looks_like_path(source: str) -> bool:
    """A hub id is `name` or `owner/name`; anything else the user meant as a folder."""
    return source.startswith(("/", ".", "~")) or source.count("/") > 1 or "\\" in source


def check_source(source: str | os.PathLike) -> None:
    """A model source that can be loaded, or one line saying why not, in seconds: a folder that is not
    there; a hub id that is neither cached nor reachable (transformers would retry for minutes)."""
    source = str(source)
    if os.path.isdir(source):
        return
    if os.path.exists(source):
        raise CogipError("not a folder (a model is a checkpoint or adapter folder, or a hub id)", file=source)
    if _looks_like_path(source):
        raise CogipError("no such folder", file=source)
    import huggingface_hub as hub
    from huggingface_hub.errors import EntryNotFoundError, GatedRepoError, RepositoryNotFoundError
    if any(isinstance(hub.try_to_load_from_cache(source, f), str) for f in ("config.json", "adapter_config.json")):
        return
    if hub.constants.HF_HUB_OFFLINE:
        raise CogipError(f"{source} is not a local folder nor in the Hugging Face cache, and HF_HUB_OFFLINE is set: "
                         f"download it first (hf download {source}) or pass its folder")
    try:
        hub.get_hf_file_metadata(hub.hf_hub_url(source, "config.json"), timeout=5)
    except EntryNotFoundError:   # e.g. an adapter repository: loading it says the rest
        return
    except GatedRepoError:
        raise CogipError(f"{source} is gated on the Hugging Face hub: accept its licence there and log in "
                         f"(hf auth login)") from None
    except RepositoryNotFoundError:
        raise CogipError(f"{source}: no such model on the Hugging Face hub (or a private one: log in), and no "
                         f"such local folder") from None
    except Exception as e:   # no network, a proxy, the hub down: the transport's own error types vary
        raise CogipError(f"cannot reach the Hugging Face hub for {source} ({type(e).__name__}): pass a local "
                         f"folder, or download it where there is network; HF_HUB_OFFLINE=1 uses the cache "
                         f"only") from None
