"""Published architecture configs, for benchmarks that build real-size models with random weights
(no hub needed). Token ids are filled in from whichever tokenizer the benchmark uses; `real_processor`
gives the published image processing to go with them."""

QWEN2_5_VL_7B = dict(
    text_config=dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28,
                     num_key_value_heads=4, vocab_size=152064, max_position_embeddings=128000, rms_norm_eps=1e-6,
                     hidden_act="silu", rope_parameters={"rope_type": "default", "rope_theta": 1000000.0,
                                                         "mrope_section": [16, 24, 24]}),
    vision_config=dict(depth=32, hidden_size=1280, intermediate_size=3420, num_heads=16, out_hidden_size=3584,
                       patch_size=14, spatial_merge_size=2, temporal_patch_size=2, window_size=112,
                       fullatt_block_indexes=[7, 15, 23, 31], tokens_per_second=2, hidden_act="silu"),
    tie_word_embeddings=False,
)


def qwen2_5_vl_7b(tokenizer):
    from transformers import Qwen2_5_VLConfig
    ids = tokenizer.convert_tokens_to_ids
    return Qwen2_5_VLConfig(**QWEN2_5_VL_7B, image_token_id=ids("<|image_pad|>"), video_token_id=ids("<|video_pad|>"),
                            vision_start_token_id=ids("<|vision_start|>"), vision_end_token_id=ids("<|vision_end|>"),
                            eos_token_id=ids("<|im_end|>"), pad_token_id=tokenizer.pad_token_id)


LLAMA_3_2_11B_VISION = dict(
    text_config=dict(hidden_size=4096, intermediate_size=14336, num_hidden_layers=40, num_attention_heads=32,
                     num_key_value_heads=8, vocab_size=128256, rms_norm_eps=1e-5, rope_theta=500000.0,
                     cross_attention_layers=[3, 8, 13, 18, 23, 28, 33, 38], max_position_embeddings=131072),
    vision_config=dict(hidden_size=1280, intermediate_size=5120, num_hidden_layers=32, num_global_layers=8,
                       attention_heads=16, image_size=560, patch_size=14, max_num_tiles=4,
                       intermediate_layers_indices=[3, 7, 15, 23, 30], vision_output_dim=7680),
    tie_word_embeddings=False,
)

GEMMA_3_12B = dict(
    text_config=dict(hidden_size=3840, intermediate_size=15360, num_hidden_layers=48, num_attention_heads=16,
                     num_key_value_heads=8, head_dim=256, vocab_size=262208, sliding_window=1024,
                     rms_norm_eps=1e-6, query_pre_attn_scalar=256),
    vision_config=dict(hidden_size=1152, intermediate_size=4304, num_hidden_layers=27, num_attention_heads=16,
                       image_size=896, patch_size=14, vision_use_head=False),
    mm_tokens_per_image=256,
)


def llama_3_2_11b_vision(tokenizer):
    from transformers import MllamaConfig
    ids = tokenizer.convert_tokens_to_ids
    cfg = dict(LLAMA_3_2_11B_VISION)
    cfg["text_config"] = {**cfg["text_config"], "bos_token_id": ids("<|begin_of_text|>"),
                          "eos_token_id": ids("<|eot_id|>"), "pad_token_id": tokenizer.pad_token_id}
    return MllamaConfig(**cfg, image_token_index=ids("<|image|>"))


def gemma_3_12b(tokenizer):
    from transformers import Gemma3Config
    ids = tokenizer.convert_tokens_to_ids
    cfg = dict(GEMMA_3_12B)
    cfg["text_config"] = {**cfg["text_config"], "bos_token_id": ids("<bos>"), "pad_token_id": ids("<pad>"),
                          "eos_token_id": [ids("<eos>"), ids("<end_of_turn>")]}
    return Gemma3Config(**cfg, boi_token_index=ids("<start_of_image>"), eoi_token_index=ids("<end_of_image>"),
                        image_token_index=ids("<image_soft_token>"), tie_word_embeddings=False)


REAL = {"qwen": qwen2_5_vl_7b, "llama": llama_3_2_11b_vision, "gemma": gemma_3_12b}


def real_processor(family: str, processor):
    """The published model's processor, built around a locally made one's tokenizer and chat template:
    Llama-3.2-Vision tiles of 560 px, at most 4; Gemma-3 images of 896 px as 256 tokens. Qwen2.5-VL's
    processor is the same at every size (its pixel bounds are set per run)."""
    if family == "llama":
        from transformers import MllamaImageProcessorPil, MllamaProcessor
        return MllamaProcessor(image_processor=MllamaImageProcessorPil(size={"height": 560, "width": 560},
                                                                       max_image_tiles=4),
                               tokenizer=processor.tokenizer, chat_template=processor.chat_template)
    if family == "gemma":
        from transformers import Gemma3Processor
        processor.image_processor.size = {"height": 896, "width": 896}
        return Gemma3Processor(image_processor=processor.image_processor, tokenizer=processor.tokenizer,
                               chat_template=processor.chat_template, image_seq_length=256)
    return processor
