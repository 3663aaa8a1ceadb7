"""Tiny random-weight checkpoints of each family, built entirely offline from configs.

Each is saved as a normal checkpoint folder (config, safetensors, processor with tokenizer and
chat template), so every script points `--model-id` at it exactly as at a hub id. The chat
templates render what the real ones render for an image + text user turn, BOS included.

Besides the three families, two other architectures scored through the generic adapter
(`cogip.models.families.GENERIC`): Idefics3 (SmolVLM) and LLaVA-OneVision, each with its real chat
template's shape and a tiny tokenizer (`OTHER_ARCHITECTURES`).

Two kinds of tokenizer:
- the default: a small BPE learned from the project's prompts (fast), matching the real family on
  what the code depends on: special tokens, BOS added by the post-processor (Llama, Gemma) or
  none (Qwen), end-of-turn tokens, and number splitting (see tokenizers.py);
- `real_tokenizers=DIR`: the family's real vocabulary (`cogip.models.real_tokenizers`), so the model
  differs from the real one only in weights and sizes.
"""

from __future__ import annotations

import os
from pathlib import Path

from ..dims import DIMENSIONS
from .families import get_family
from .tokenizers import train_bpe

QWEN_TEMPLATE = (
    "{% if messages[0].role != 'system' %}<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n{% endif %}"
    "{% for m in messages %}<|im_start|>{{ m.role }}\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|vision_start|><|image_pad|><|vision_end|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}"
    "{% endfor %}{% endif %}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}")
LLAMA_TEMPLATE = (
    "{{ bos_token }}{% for m in messages %}<|start_header_id|>{{ m.role }}<|end_header_id|>\n\n"
    "{% if m.content is string %}{{ m.content }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<|image|>{% elif c.type == 'text' %}{{ c.text }}{% endif %}{% endfor %}{% endif %}"
    "<|eot_id|>{% endfor %}{% if add_generation_prompt %}<|start_header_id|>assistant<|end_header_id|>\n\n{% endif %}")
GEMMA_TEMPLATE = (   # Gemma 3's trims each text part
    "{{ bos_token }}{% for m in messages %}<start_of_turn>{{ 'model' if m.role == 'assistant' else m.role }}\n"
    "{% if m.content is string %}{{ m.content | trim }}{% else %}{% for c in m.content %}"
    "{% if c.type == 'image' %}<start_of_image>{% elif c.type == 'text' %}{{ c.text | trim }}{% endif %}{% endfor %}{% endif %}"
    "<end_of_turn>\n{% endfor %}{% if add_generation_prompt %}<start_of_turn>model\n{% endif %}")

SMOLVLM_TEMPLATE = (   # SmolVLM's: "User:<image>text<end_of_utterance>\nAssistant:"
    "<|im_start|>{% for m in messages %}{{ m.role | capitalize }}{% if m.content is string %}: {{ m.content }}"
    "{% else %}{% if m.content[0].type == 'image' %}:{% else %}: {% endif %}{% for c in m.content %}"
    "{% if c.type == 'text' %}{{ c.text }}{% elif c.type == 'image' %}<image>{% endif %}{% endfor %}{% endif %}"
    "<end_of_utterance>\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}")
ONEVISION_TEMPLATE = QWEN_TEMPLATE.replace("<|vision_start|><|image_pad|><|vision_end|>", "<image>\n")

SPECIAL = {
    "qwen": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|vision_start|>", "<|vision_end|>", "<|image_pad|>",
             "<|video_pad|>"],
    "llama": ["<|begin_of_text|>", "<|end_of_text|>", "<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>",
              "<|image|>", "<|finetune_right_pad_id|>"],
    "gemma": ["<pad>", "<eos>", "<bos>", "<unk>", "<start_of_turn>", "<end_of_turn>", "<start_of_image>",
              "<end_of_image>", "<image_soft_token>"],
    "idefics3": ["<|endoftext|>", "<|im_start|>", "<end_of_utterance>", "<image>", "<fake_token_around_image>",
                 "<global-img>"],
    "llava_onevision": ["<|endoftext|>", "<|im_start|>", "<|im_end|>", "<image>", "<video>"],
}
# each tokenizer's special-token roles, as the real checkpoint's tokenizer has them
ROLES = {
    "qwen": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",   # Qwen2.5-VL has no BOS token
                 extra_special_tokens={"image_token": "<|image_pad|>", "video_token": "<|video_pad|>",
                                       "vision_bos_token": "<|vision_start|>", "vision_eos_token": "<|vision_end|>"}),
    "llama": dict(bos_token="<|begin_of_text|>", eos_token="<|eot_id|>", pad_token="<|finetune_right_pad_id|>",
                  extra_special_tokens={"image_token": "<|image|>"}),
    "gemma": dict(bos_token="<bos>", eos_token="<eos>", pad_token="<pad>", unk_token="<unk>",
                  extra_special_tokens={"boi_token": "<start_of_image>", "eoi_token": "<end_of_image>",
                                        "image_token": "<image_soft_token>"}),
    "idefics3": dict(bos_token="<|im_start|>", eos_token="<end_of_utterance>", pad_token="<|endoftext|>",
                     extra_special_tokens={"image_token": "<image>", "fake_image_token": "<fake_token_around_image>",
                                           "global_image_token": "<global-img>",
                                           "end_of_utterance_token": "<end_of_utterance>"}),
    "llava_onevision": dict(eos_token="<|im_end|>", pad_token="<|endoftext|>",
                            extra_special_tokens={"image_token": "<image>", "video_token": "<video>"}),
}

# initializer_range: with hidden 64 the usual 0.02 gives a frozen random lm_head whose logits can't
# exceed ~1.3, so LoRA (which never touches lm_head) could not fit anything; 0.2 lets it.
TINY_TEXT = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048, initializer_range=0.2)


def _corpus() -> list[str]:
    """Text the tiny tokenizers learn their merges from: the project's prompts and answers."""
    lines = ["You are a helpful assistant.", "user", "assistant", "system", "model"]
    for dim in DIMENSIONS.values():
        lines += [dim.prompt, dim.short_prompt] * 20 + [" ".join(dim.labels)] * 50
        lines += [dim.format_answer(dim.low + dim.span * i / 97) for i in range(98)]
    return lines


def _tokenizer(family: str, real_tokenizers: str | os.PathLike | None = None):
    """The family's tokenizer with its real special-token roles; the vocabulary tiny or real."""
    from transformers import PreTrainedTokenizerFast
    if real_tokenizers is not None and family in OTHER_ARCHITECTURES:
        raise ValueError(f"real tokenizers are fetched for the families only, not {family}")
    if real_tokenizers is not None:
        from .real_tokenizers import load
        tok = load(family, real_tokenizers)
    else:
        tok = train_bpe(_corpus(), SPECIAL[family], digit_group=3 if family == "llama" else 1,
                        bos={"llama": "<|begin_of_text|>", "gemma": "<bos>"}.get(family))
    return PreTrainedTokenizerFast(tokenizer_object=tok, clean_up_tokenization_spaces=False, **ROLES[family])


def _qwen(tok, image_size: int):
    from transformers import Qwen2_5_VLConfig, Qwen2_5_VLProcessor, Qwen2VLImageProcessorPil, Qwen2VLVideoProcessor
    pixels = dict(min_pixels=image_size * image_size, max_pixels=image_size * image_size, patch_size=14,
                  merge_size=2, temporal_patch_size=2)
    # the processor insists on a video processor (it needs torchvision); images are all we feed it
    proc = Qwen2_5_VLProcessor(image_processor=Qwen2VLImageProcessorPil(**pixels), tokenizer=tok,
                               video_processor=Qwen2VLVideoProcessor(**pixels), chat_template=QWEN_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    head_dim = TINY_TEXT["hidden_size"] // TINY_TEXT["num_attention_heads"]
    cfg = Qwen2_5_VLConfig(
        text_config=dict(**TINY_TEXT, vocab_size=len(tok), bos_token_id=ids("<|endoftext|>"),
                         eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), rope_parameters={
            "rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3]}),
        # an MLP width that is no multiple of 8, as the real 3420 (cogip.accel.vision_matmuls pads it)
        vision_config=dict(depth=2, hidden_size=32, intermediate_size=60, num_heads=2, patch_size=14,
                           spatial_merge_size=2, temporal_patch_size=2, out_hidden_size=TINY_TEXT["hidden_size"],
                           window_size=56, fullatt_block_indexes=[1]),
        image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
        vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
        eos_token_id=ids("<|im_end|>"), pad_token_id=ids("<|endoftext|>"), tie_word_embeddings=False)
    assert head_dim == 16
    return cfg, proc


def _llama(tok, image_size: int):
    from transformers import MllamaConfig, MllamaImageProcessorPil, MllamaProcessor
    ip = MllamaImageProcessorPil(size={"height": image_size, "width": image_size}, max_image_tiles=2)
    proc = MllamaProcessor(image_processor=ip, tokenizer=tok, chat_template=LLAMA_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = MllamaConfig(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_global_layers=1,
                           attention_heads=2, image_size=image_size, patch_size=14, max_num_tiles=2,
                           intermediate_layers_indices=[0], vision_output_dim=64,
                           supported_aspect_ratios=[[1, 1], [1, 2], [2, 1]]),
        text_config=dict(**TINY_TEXT, vocab_size=len(tok), cross_attention_layers=[1],
                         bos_token_id=ids("<|begin_of_text|>"), eos_token_id=ids("<|eot_id|>"),
                         pad_token_id=ids("<|finetune_right_pad_id|>")),
        image_token_index=ids("<|image|>"), tie_word_embeddings=False)
    return cfg, proc


def _gemma(tok, image_size: int):
    from transformers import Gemma3Config, Gemma3ImageProcessorPil, Gemma3Processor
    ip = Gemma3ImageProcessorPil(size={"height": image_size, "width": image_size})
    tokens_per_image = 16
    proc = Gemma3Processor(image_processor=ip, tokenizer=tok, chat_template=GEMMA_TEMPLATE,
                           image_seq_length=tokens_per_image)
    ids = tok.convert_tokens_to_ids
    cfg = Gemma3Config(
        text_config=dict(**TINY_TEXT, vocab_size=len(tok), head_dim=16, sliding_window=64,
                         bos_token_id=ids("<bos>"), eos_token_id=[ids("<eos>"), ids("<end_of_turn>")],
                         pad_token_id=ids("<pad>")),
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=7, vision_use_head=False),
        mm_tokens_per_image=tokens_per_image, boi_token_index=ids("<start_of_image>"),
        eoi_token_index=ids("<end_of_image>"), image_token_index=ids("<image_soft_token>"),
        initializer_range=TINY_TEXT["initializer_range"], tie_word_embeddings=False)
    return cfg, proc


def _idefics3(tok, image_size: int):
    from transformers import Idefics3Config, Idefics3ImageProcessorPil, Idefics3Processor
    ip = Idefics3ImageProcessorPil(size={"longest_edge": image_size}, max_image_size={"longest_edge": image_size},
                                   do_image_splitting=False)
    proc = Idefics3Processor(image_processor=ip, tokenizer=tok, image_seq_len=4, chat_template=SMOLVLM_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = Idefics3Config(
        vision_config=dict(hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=2,
                           image_size=image_size, patch_size=16),
        text_config=dict(model_type="llama", **TINY_TEXT, vocab_size=len(tok), bos_token_id=ids("<|im_start|>"),
                         eos_token_id=ids("<end_of_utterance>"), pad_token_id=ids("<|endoftext|>")),
        image_token_id=ids("<image>"), scale_factor=2, tie_word_embeddings=False)
    return cfg, proc


def _onevision(tok, image_size: int):
    from transformers import (LlavaOnevisionConfig, LlavaOnevisionImageProcessorPil, LlavaOnevisionProcessor,
                              LlavaOnevisionVideoProcessor)
    grid = [[image_size, image_size], [image_size, 2 * image_size], [2 * image_size, image_size],
            [2 * image_size, 2 * image_size]]
    ip = LlavaOnevisionImageProcessorPil(size={"height": image_size, "width": image_size}, image_grid_pinpoints=grid)
    proc = LlavaOnevisionProcessor(image_processor=ip, video_processor=LlavaOnevisionVideoProcessor(), tokenizer=tok,
                                   num_image_tokens=4, vision_feature_select_strategy="full",
                                   chat_template=ONEVISION_TEMPLATE)
    ids = tok.convert_tokens_to_ids
    cfg = LlavaOnevisionConfig(
        vision_config=dict(model_type="siglip_vision_model", hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=2, image_size=image_size, patch_size=14),
        text_config=dict(model_type="qwen2", **TINY_TEXT, vocab_size=len(tok), eos_token_id=ids("<|im_end|>"),
                         pad_token_id=ids("<|endoftext|>")),
        image_token_index=ids("<image>"), video_token_index=ids("<video>"), vision_feature_select_strategy="full",
        vision_feature_layer=-1, image_grid_pinpoints=grid, tie_word_embeddings=False)
    return cfg, proc


BUILDERS = {"qwen": (_qwen, 84), "llama": (_llama, 56), "gemma": (_gemma, 56)}
OTHER_ARCHITECTURES = {"idefics3": (_idefics3, 64), "llava_onevision": (_onevision, 28)}


def build_tiny(family: str, out: str | os.PathLike, seed: int = 0,
               real_tokenizers: str | os.PathLike | None = None):
    """Write a tiny random-weight checkpoint + processor of `family` (or of one of `OTHER_ARCHITECTURES`) to
    `out`; returns the path. With `real_tokenizers` (a folder `cogip.models.real_tokenizers.fetch` wrote), the
    family's real tokenizer."""
    import torch
    from transformers import GenerationConfig
    fam = None if family in OTHER_ARCHITECTURES else get_family(family)
    builder, image_size = OTHER_ARCHITECTURES[family] if fam is None else BUILDERS[fam.name]
    tok = _tokenizer(fam.name if fam else family, real_tokenizers)
    cfg, proc = builder(tok, image_size)
    torch.manual_seed(seed)
    if fam is None:
        from transformers import AutoModelForImageTextToText
        model = AutoModelForImageTextToText.from_config(cfg)
    else:
        model = fam.model_cls()(cfg)
    eot = tok.convert_tokens_to_ids(fam.end_of_turn) if fam else tok.eos_token_id
    model.generation_config = GenerationConfig(eos_token_id=sorted({eot, tok.eos_token_id}),
                                               pad_token_id=tok.pad_token_id, do_sample=False)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    proc.save_pretrained(out)
    return out


def build_tiny_qwen_image(out: str | os.PathLike, text_encoder: str | os.PathLike, seed: int = 0):
    """A tiny Qwen-Image pipeline (transformer, VAE, scheduler) around a tiny Qwen2.5-VL text encoder,
    saved as a normal diffusers folder; the transformer's joint_attention_dim matches the encoder."""
    import torch
    from diffusers import (AutoencoderKLQwenImage, FlowMatchEulerDiscreteScheduler, QwenImagePipeline,
                           QwenImageTransformer2DModel)
    fam = get_family("qwen")
    encoder = fam.load_model(text_encoder)
    hidden = encoder.config.get_text_config().hidden_size
    torch.manual_seed(seed)
    transformer = QwenImageTransformer2DModel(patch_size=2, in_channels=16, out_channels=4, num_layers=2,
                                              attention_head_dim=16, num_attention_heads=3,
                                              joint_attention_dim=hidden, guidance_embeds=False,
                                              axes_dims_rope=(8, 4, 4))
    vae = AutoencoderKLQwenImage(base_dim=24, z_dim=4, dim_mult=[1, 2, 4], num_res_blocks=1,
                                 temperal_downsample=[False, True], latents_mean=[0.0] * 4, latents_std=[1.0] * 4)
    pipe = QwenImagePipeline(scheduler=FlowMatchEulerDiscreteScheduler(), vae=vae, text_encoder=encoder,
                             tokenizer=fam.load_processor(text_encoder).tokenizer, transformer=transformer)
    out = Path(out)
    pipe.save_pretrained(out)
    return out
