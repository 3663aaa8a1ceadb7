"""Published architecture configs, for benchmarks that build real-size models with random weights
(no hub needed). Token ids are filled in from whichever tokenizer the benchmark uses."""

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
