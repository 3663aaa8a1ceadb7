"""Each tiny offline family model: loads like a hub checkpoint, tokenizes numbers like the real family,
does a forward pass with labels and a `generate` through its processor."""

import pytest
import torch

from cogip.data.images import open_image
from cogip.models.families import FAMILIES, detect_family, get_family

EXPECTED_TOKENS = {  # the real families' number splitting
    "qwen": {"medium 5.577": ["medium", "Ġ", "5", ".", "5", "7", "7"],
             "negative -2.000": ["negative", "Ġ-", "2", ".", "0", "0", "0"]},
    "gemma": {"medium 5.577": ["medium", "Ġ", "5", ".", "5", "7", "7"],
              "very low 0.042": ["very", "Ġlow", "Ġ", "0", ".", "0", "4", "2"]},
    "llama": {"medium 5.577": ["medium", "Ġ", "5", ".", "577"],
              "very low 0.042": ["very", "Ġlow", "Ġ", "0", ".", "042"],
              "negative -2.000": ["negative", "Ġ-", "2", ".", "000"],
              "1234567": ["123", "456", "7"]},
}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_number_tokenization(tiny_models, family):
    tok = FAMILIES[family].load_processor(tiny_models[family]).tokenizer
    for text, tokens in EXPECTED_TOKENS[family].items():
        ids = tok(text, add_special_tokens=False).input_ids
        assert tok.convert_ids_to_tokens(ids) == tokens
        assert tok.decode(ids) == text


@pytest.mark.parametrize("family", list(FAMILIES))
def test_forward_with_labels_and_generate(tiny_models, synth_bench, family):
    fam = FAMILIES[family]
    assert detect_family(tiny_models[family]) is fam
    model, proc = fam.load_model(tiny_models[family]), fam.load_processor(tiny_models[family])
    images = [open_image(synth_bench / "cognition/cognition_images/Aesthetics/000000.jpg"),
              open_image(synth_bench / "cognition/cognition_images/Funniness/000001.jpg")]
    prompts = [fam.chat_prompt(proc, "Aesthetics? label and score 0-10."),
               fam.chat_prompt(proc, "Funniness? label and score 0-10, please.")]
    proc.tokenizer.padding_side = "left"
    batch = fam.encode(proc, prompts, images, return_tensors="pt", padding=True)
    labels = batch["input_ids"].masked_fill(batch["attention_mask"] == 0, -100)
    out = model(**batch, labels=labels)
    vocab = model.config.get_text_config().vocab_size
    assert out.logits.shape[:2] == batch["input_ids"].shape and out.logits.shape[-1] == vocab
    assert torch.isfinite(out.loss) and 3.0 < out.loss.item() < 12.0   # ~log(vocab) for random weights
    out.loss.backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for n, p in model.named_parameters()
               if fam.param_group(n) != "language" or "cross_attn" in n)
    # the image reaches the loss; zero-initialised gates (Gemma's projection, Mllama's tanh gates)
    # stop it at the projector or the cross-attention gate on step 0, as in the real models
    gen = model.generate(**batch, max_new_tokens=6, do_sample=False)
    new = gen[:, batch["input_ids"].shape[1]:]
    assert new.shape[0] == 2 and 1 <= new.shape[1] <= 6
    assert all(isinstance(t, str) for t in proc.batch_decode(new, skip_special_tokens=True))


@pytest.mark.parametrize("family", list(FAMILIES))
def test_lora_targets_only_language_model(tiny_models, family):
    import re
    fam = FAMILIES[family]
    model = fam.load_model(tiny_models[family])
    targets = [n for n, m in model.named_modules() if re.match(fam.lora_target_modules, n)]
    assert targets and all(fam.param_group(n) == "language" for n in targets)
    assert not any("lm_head" in n or "embed" in n for n in targets)
    vision_linear = [n for n, m in model.named_modules()
                     if fam.param_group(n) == "vision" and isinstance(m, torch.nn.Linear)]
    assert vision_linear and not set(vision_linear) & set(targets)


def test_family_lookup():
    assert get_family("Qwen/Qwen2.5-VL-7B-Instruct").name == "qwen"
    assert get_family("mllama").name == "llama"
    with pytest.raises(Exception, match="unknown model family"):
        get_family("llava")


def test_profile_timeline_unions_overlapping_intervals():
    from cogip.profiling import _union_ns, timeline
    assert _union_ns([(0, 10), (5, 20), (30, 40), (35, 38)]) == 30   # 0-20 and 30-40
    assert _union_ns([]) == 0
    from torch.profiler import ProfilerActivity, profile
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        x = torch.randn(64, 64)
        (x @ x).sum()
    tl = timeline(prof)
    assert tl["wall_ms"] > 0 and tl["gpu_busy_ms"] == 0 and tl["gpu_idle_ms"] is None


def test_sdpa_backends_are_switched_process_wide_and_bad_names_fail():
    from cogip.errors import CogipError
    from cogip.models.attention import allow_sdpa_backends
    flags = torch.backends.cuda
    try:
        assert allow_sdpa_backends("flash, efficient") == ["flash", "efficient"]
        assert (flags.cudnn_sdp_enabled(), flags.flash_sdp_enabled(), flags.mem_efficient_sdp_enabled(),
                flags.math_sdp_enabled()) == (False, True, True, True)
        with pytest.raises(CogipError, match="not 'flash,fast'"):
            allow_sdpa_backends("flash,fast")
    finally:
        assert allow_sdpa_backends("auto") == ["cudnn", "flash", "efficient"]
    assert flags.cudnn_sdp_enabled() and flags.flash_sdp_enabled() and flags.mem_efficient_sdp_enabled()


def test_gc_pauses_count_collections_only_while_active():
    import gc
    from cogip.profiling import GCPauses
    with GCPauses() as pauses:
        gc.collect(2)
        gc.collect(0)
    gc.collect(2)   # after the context: not counted
    assert pauses.collections[2] == 1 and pauses.collections[0] >= 1 and pauses.seconds[2] > 0
    assert pauses.summary()["collections"] == pauses.collections


def test_host_stacks_charge_time_to_the_frames_that_spend_it():
    import _thread
    import sys
    import threading
    import time
    from cogip.profiling import HostStacks

    def waiting(seconds):   # blocked in C (the interpreter lock released), as in a device synchronisation
        time.sleep(seconds)

    def spinning(seconds):   # busy in Python, holding the lock
        end = time.perf_counter() + seconds
        while time.perf_counter() < end:
            pass
    switch = sys.getswitchinterval()
    stacks = HostStacks(interval=0.002)
    stacks.start()
    waiting(0.4)
    spinning(0.4)
    out = stacks.stop()
    assert sys.getswitchinterval() == switch   # restored
    own = {name.split(" ")[0]: seconds for name, seconds, _ in out["self"]}
    assert own["waiting"] == pytest.approx(0.4, abs=0.15) and own["spinning"] == pytest.approx(0.4, abs=0.15)
    assert out["within"][0].startswith(test_host_stacks_charge_time_to_the_frames_that_spend_it.__name__)
    inclusive = {name.split(" ")[0]: share for name, _, share in out["inclusive"]}
    assert inclusive["waiting"] == pytest.approx(0.5, abs=0.2) and inclusive["spinning"] == pytest.approx(0.5, abs=0.2)
    assert out["seconds"] == pytest.approx(0.8, abs=0.2) and out["samples"] > 50
    assert "test_models.py:" in out["self"][0][0]   # named by file and line
    assert not any(name.startswith("[") for name, _, _ in out["self"])   # this thread only

    # native threads too (as autograd's): one spins while this one waits; Python's own threads are left out
    stacks = HostStacks(interval=0.002, native_threads=True)
    stacks.start()
    idle = threading.Thread(target=waiting, args=(0.5,))
    idle.start()
    _thread.start_new_thread(spinning, (0.4,))
    waiting(0.5)
    idle.join()
    out = stacks.stop()
    own = {name.rsplit(" (", 1)[0]: seconds for name, seconds, _ in out["self"]}
    assert own["waiting"] == pytest.approx(0.5, abs=0.15)   # this thread's; the idle thread's not added
    assert own["[native thread] spinning"] == pytest.approx(0.4, abs=0.15)


def test_qwen_pixel_bounds_resize_without_deprecated_call_kwargs(tiny_models):
    import warnings
    import numpy as np
    from PIL import Image
    fam = FAMILIES["qwen"]
    processor = fam.load_processor(tiny_models["qwen"], min_pixels=112 * 112, max_pixels=112 * 112)
    image = Image.fromarray(np.zeros((84, 84, 3), np.uint8))
    with warnings.catch_warnings():
        warnings.simplefilter("error", FutureWarning)   # the per-call deprecation of min/max_pixels kwargs
        batch = processor(text=[fam.chat_prompt(processor, "Rate it.")], images=[image], return_tensors="pt")
    assert batch["image_grid_thw"].tolist() == [[1, 8, 8]]   # 84 px brought up to 112 px = 8x8 patches of 14
    fam.set_pixel_bounds(processor, max_pixels=56 * 56, min_pixels=56 * 56)
    assert processor(text=[fam.chat_prompt(processor, "Rate it.")], images=[image],
                     return_tensors="pt")["image_grid_thw"].tolist() == [[1, 4, 4]]
