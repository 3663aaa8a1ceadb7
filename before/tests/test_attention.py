"""Grouped varlen SDPA for Qwen's windowed vision attention gives the logits of transformers' own
per-window loop, on equal windows (plain views) and on mixed window lengths (grouped gather)."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from PIL import Image

from cogip.models import attention
from cogip.models.families import FAMILIES


def test_plan_views_for_equal_windows_groups_otherwise():
    assert attention._plan(torch.tensor([0, 16, 32, 48])) == 16
    plan = attention._plan(torch.tensor([0, 16, 20, 36]))
    assert sorted(n for _, n in plan) == [4, 16]
    idx16 = next(idx for idx, n in plan if n == 16)
    assert idx16.tolist() == [list(range(0, 16)), list(range(20, 36))]


def test_plan_read_once_per_cu_seqlens_tensor(monkeypatch):
    cu = torch.tensor([0, 8, 16, 24])
    assert attention._plan(cu) == 8
    reads = []
    real = torch.Tensor.tolist
    monkeypatch.setattr(torch.Tensor, "tolist", lambda self: reads.append(1) or real(self))
    assert attention._plan(cu) == 8 and not reads             # later layers: no host sync
    assert attention._plan(torch.tensor([0, 8, 16, 24])) == 8 and reads   # a new forward's tensor is read


@pytest.mark.parametrize("sizes", [[(112, 112), (112, 112)],      # 4 windows of 16 patches per image: views
                                   [(112, 112), (84, 140)]])      # edge windows of other lengths: grouped
def test_varlen_matches_per_window_loop(tiny_models, sizes):
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(tiny_models["qwen"], min_pixels=56 * 56, max_pixels=140 * 140)
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in sizes]
    proc.tokenizer.padding_side = "left"
    batch = proc(text=[fam.chat_prompt(proc, "How beautiful?")] * 2, images=images, return_tensors="pt", padding=True)
    reference = fam.load_model(tiny_models["qwen"], dtype=torch.float32).eval()
    reference.config.vision_config._attn_implementation = "sdpa"     # transformers' loop, one call per window
    model = fam.load_model(tiny_models["qwen"], dtype=torch.float32).eval()
    assert attention.use_fast_vision_attention(model)
    lengths = []
    original = attention._plan
    attention._plan = lambda cu: lengths.append((cu[1:] - cu[:-1]).tolist()) or original(cu)
    try:
        with torch.no_grad():
            want, got = reference(**batch).logits, model(**batch).logits
    finally:
        attention._plan = original
    mixed = [len(set(call)) > 1 for call in lengths]             # per layer: one length -> views
    assert lengths and any(mixed) == (sizes[0] != sizes[1])
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)


def test_mllama_padding_pairs_match_the_masked_attention(tiny_models, tmp_path):
    """Same logits and same vision-tower gradients as transformers' masked SDPA, with images whose
    aspect ratios leave different tiles (and the per-tile padding patches) to mask."""
    fam = FAMILIES["llama"]
    proc = fam.load_processor(tiny_models["llama"])
    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in ((60, 130), (90, 90), (130, 50))]
    proc.tokenizer.padding_side = "left"
    batch = fam.encode(proc, [fam.chat_prompt(proc, "How memorable?")] * 3, images, return_tensors="pt",
                       padding=True)
    results = []
    for fast in (False, True):
        torch.manual_seed(0)
        model = fam.load_model(tiny_models["llama"], dtype=torch.float32)
        assert model.config.vision_config._attn_implementation == "sdpa"
        if fast:
            assert attention.use_fast_vision_attention(model)
        logits = model(**batch).logits
        logits.float().pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if "vision_model" in n and p.grad is not None}
        results.append((logits.detach(), grads))
    (want, want_grads), (got, got_grads) = results
    mask = batch["aspect_ratio_mask"]
    assert mask.sum() < mask.numel()          # some tiles are padding, besides the per-tile padding patches
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert want_grads.keys() == got_grads.keys() and len(want_grads) > 10
    for n in want_grads:
        torch.testing.assert_close(got_grads[n], want_grads[n], rtol=1e-4, atol=1e-6, msg=n)


@pytest.mark.parametrize("tiles", [[[1, 1], [1, 0], [1, 1]],      # padding rows recomputed over real keys
                                   [[1, 1], [1, 1], [1, 1]],      # the same padding in every image
                                   [[1, 1], [0, 0], [1, 0]]])     # an empty media slot: the dense bias is kept
def test_padpair_sdpa_equals_masked_sdpa(tiles):
    from transformers.models.mllama.modeling_mllama import _prepare_aspect_ratio_attention_mask
    torch.manual_seed(0)
    mask = _prepare_aspect_ratio_attention_mask(torch.tensor(tiles), num_patches=5, target_length=8,
                                                dtype=torch.float32)         # [B, 1, 16, 16]
    q, k, v = (torch.randn(3, 2, 16, 8, requires_grad=True) for _ in range(3))
    want = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask).transpose(1, 2)
    got, _ = attention.padpair_sdpa(None, q, k, v, mask)
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-6)
    w = torch.randn_like(want)
    for a, b in zip(torch.autograd.grad((got * w).sum(), (q, k, v)), torch.autograd.grad((want * w).sum(), (q, k, v))):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def _causal_padded_mask(real) -> torch.Tensor:
    """SDPA's boolean mask as transformers builds it for a causal language model with this [B, L] padding."""
    from transformers.masking_utils import sdpa_mask
    real = torch.tensor(real, dtype=torch.bool)
    return sdpa_mask(batch_size=real.shape[0], q_length=real.shape[1], kv_length=real.shape[1], attention_mask=real,
                     allow_is_causal_skip=False)


def test_token_runs_pack_padded_causal_batches_and_nothing_else():
    cu, longest = attention._token_runs(_causal_padded_mask([[1] * 6, [0, 0, 1, 1, 1, 1], [0, 0, 0, 0, 0, 1]]))
    assert cu.dtype == torch.int32 and cu.tolist() == [0, 6, 8, 12, 17, 18] and longest == 6   # left padding
    cu, longest = attention._token_runs(_causal_padded_mask([[1, 1, 1, 1, 0, 0], [1] * 6]))
    assert cu.tolist() == [0, 4, 6, 12] and longest == 6                                          # right padding
    cu, longest = attention._token_runs(_causal_padded_mask([[0, 1, 1, 1, 0, 0]]))
    assert cu.tolist() == [0, 1, 4, 6] and longest == 3                                           # both ends
    assert attention._token_runs(_causal_padded_mask([[1, 0, 1, 1, 1, 1]])) is None              # a hole
    assert attention._token_runs(_causal_padded_mask([[0] * 6, [1] * 6])) is None                # an empty row
    real = torch.tensor([[0, 0, 1, 1, 1, 1]], dtype=torch.bool)
    assert attention._token_runs(real[:, None, None, :].expand(1, 1, 6, 6).clone()) is None      # both ways
    assert attention._token_runs(_causal_padded_mask([[0, 0, 1, 1, 1, 1]]).float()) is None      # an additive bias


def _segment_sdpa(q, k, v, cu_seqlens, longest, scaling, is_causal):
    """`attention.flash_varlen` as plain SDPA, one call per segment (its reference; on the CPU, its stand-in)."""
    bounds = cu_seqlens.tolist()
    assert longest >= max(b - a for a, b in zip(bounds, bounds[1:]))
    out, rep = torch.empty_like(q), q.shape[1] // k.shape[1]
    for a, b in zip(bounds, bounds[1:]):
        qs, ks, vs = (t[a:b].transpose(0, 1) for t in (q, k, v))
        o = F.scaled_dot_product_attention(qs, ks.repeat_interleave(rep, 0), vs.repeat_interleave(rep, 0),
                                           scale=scaling, is_causal=is_causal)
        out[a:b] = o.transpose(0, 1)
    return out


def _padded_qwen_batch(tiny_models):
    """A left-padded batch of images of three sizes and three prompts: rows of different lengths, mixed windows."""
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(tiny_models["qwen"], min_pixels=56 * 56, max_pixels=140 * 140)
    rng = np.random.default_rng(2)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
              for h, w in ((112, 112), (84, 140), (56, 56))]
    proc.tokenizer.padding_side = "left"
    prompts = ["How beautiful?", "How funny is this image, from 0 to 10?", "How memorable?"]
    batch = proc(text=[fam.chat_prompt(proc, p) for p in prompts], images=images, return_tensors="pt", padding=True)
    real = batch["attention_mask"].bool()
    assert len(set(real.sum(1).tolist())) == 3
    return fam, batch, real


def test_packed_prefill_and_varlen_windows_match_sdpa(tiny_models, monkeypatch):
    """The scorer's GPU paths, packing checked on the CPU with flash's kernel replaced by its per-segment
    reference: the logits of transformers' own SDPA paths at every real token."""
    fam, batch, real = _padded_qwen_batch(tiny_models)
    reference = fam.load_model(tiny_models["qwen"], dtype=torch.float32).eval()
    reference.config.vision_config._attn_implementation = "sdpa"     # transformers' loop, one call per window
    model = fam.load_model(tiny_models["qwen"], dtype=torch.float32).eval()
    assert attention.use_fast_vision_attention(model) and attention.use_packed_prefill(model)
    calls = []
    monkeypatch.setattr(attention, "flash_varlen_usable", lambda query: True)
    monkeypatch.setattr(attention, "flash_varlen", lambda *a: calls.append(a[3].tolist()) or _segment_sdpa(*a))
    with torch.no_grad():
        want, got = reference(**batch).logits, model(**batch).logits
    torch.testing.assert_close(got[real], want[real], rtol=1e-5, atol=1e-5)
    rows, length = real.shape
    pads = (length - real.sum(1)).tolist()
    packed = [0] + [end for i, p in enumerate(pads) for end in ([i * length + p] if p else []) + [(i + 1) * length]]
    text = [cu for cu in calls if cu[-1] == rows * length]
    assert text == [packed] * model.config.get_text_config().num_hidden_layers   # every layer's prefill, packed
    vision = [cu for cu in calls if cu[-1] != rows * length]
    assert len(vision) == model.config.vision_config.depth                    # every vision layer's windows
    calls.clear()
    with torch.no_grad():
        want = reference.generate(**batch, max_new_tokens=3, do_sample=False)
        got = model.generate(**batch, max_new_tokens=3, do_sample=False)
    assert torch.equal(got, want) and len(calls) == len(text) + len(vision)   # decoding: SDPA over the cache


needs_gpu = pytest.mark.skipif(not torch.cuda.is_available(), reason="flash's variable-length kernel runs on a GPU")


@needs_gpu
@pytest.mark.parametrize("heads, kv_heads, dim, causal", [(4, 2, 16, True), (16, 16, 80, False), (28, 4, 128, True)])
def test_flash_varlen_matches_sdpa_per_segment(heads, kv_heads, dim, causal):
    torch.manual_seed(0)
    cu = torch.tensor([0, 5, 64, 70, 199, 200], dtype=torch.int32, device="cuda")
    q = torch.randn(200, heads, dim, device="cuda", dtype=torch.bfloat16)
    k, v = (torch.randn(200, kv_heads, dim, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    got = attention.flash_varlen(q, k, v, cu, 129, None, causal)
    torch.testing.assert_close(got, _segment_sdpa(q, k, v, cu, 129, None, causal), rtol=1.6e-2, atol=1e-2)   # bf16 SDPA
    exact = _segment_sdpa(q.float(), k.float(), v.float(), cu, 129, None, causal)
    torch.testing.assert_close(got.float(), exact, rtol=0, atol=2e-2)


@needs_gpu
def test_packed_prefill_and_varlen_windows_on_a_gpu(tiny_models, monkeypatch):
    """In bf16 on a GPU, flash's own kernel: logits at every real token as close to float32's as SDPA's paths."""
    fam, batch, real = _padded_qwen_batch(tiny_models)
    batch, real = {k: v.cuda() for k, v in batch.items()}, real.cuda()
    logits, real_varlen = {}, attention.flash_varlen
    for name in ("float32", "sdpa", "packed"):
        model = fam.load_model(tiny_models["qwen"], dtype=torch.float32 if name == "float32" else torch.bfloat16,
                               device="cuda").eval()
        model.config.vision_config._attn_implementation = "sdpa"
        if name == "packed":
            assert attention.use_fast_vision_attention(model) and attention.use_packed_prefill(model)
        calls = []
        monkeypatch.setattr(attention, "flash_varlen", lambda *a: calls.append(a) or real_varlen(*a))
        with torch.no_grad():
            logits[name] = model(**batch).logits.float()[real]
        assert len(calls) == (model.config.get_text_config().num_hidden_layers + model.config.vision_config.depth
                              if name == "packed" else 0)
    err = {name: (logits[name] - logits["float32"]).abs().max().item() for name in ("sdpa", "packed")}
    assert err["packed"] <= 1.5 * err["sdpa"] + 1e-3 * logits["float32"].abs().max().item()


@pytest.mark.parametrize("family", ["qwen", "llama"])   # the window plan; Mllama's padding groups
def test_compiled_vision_blocks_do_not_recompile_per_forward(tiny_models, family):
    """The plan caches change with every forward; traced by torch.compile, their contents became guards,
    so every forward recompiled the vision blocks until dynamo's limit, and then ran them uncompiled."""
    import torch._dynamo
    from cogip.evaluate.scorer import Scorer
    fam = FAMILIES[family]
    processor = fam.load_processor(tiny_models[family], **fam.pixel_bounds(112 * 112, 112 * 112))
    model = fam.load_model(tiny_models[family])
    torch._dynamo.reset()
    scorer = Scorer(model, processor, fam, max_new_tokens=2, compile="vision")
    rng = np.random.default_rng(0)
    images = lambda: [Image.fromarray(rng.integers(0, 256, (84, 112, 3), dtype=np.uint8)) for _ in range(2)]
    for _ in range(2):   # the first call compiles; a second settles what still would (static graphs: dynamic ones)
        scorer.answer(images(), ["Rate it."] * 2, "Aesthetics")
    expected = scorer.answer(first := images(), ["Rate it."] * 2, "Aesthetics")
    try:
        torch._dynamo.config.error_on_recompile = True   # new tensors, same shapes: must reuse the graphs
        for _ in range(3):
            again = scorer.answer(first, ["Rate it."] * 2, "Aesthetics")
            assert [a.text for a in again] == [a.text for a in expected]
    finally:
        torch._dynamo.config.error_on_recompile = False
        torch._dynamo.reset()


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_compiled_vision_blocks_trace_nothing_for_new_image_sizes(tiny_models, family):
    """Real images differ in size, so every batch brings other window lengths (Qwen) or padding (Mllama's
    tiles). Compiled blocks resumed after the attention's plan guarded on the plan, so each new mix
    recompiled them, to dynamo's recompile limit. The attention is now opaque whole: once two sizes have
    made the blocks' shapes dynamic, new sizes trace nothing."""
    import torch._dynamo
    from cogip.evaluate.scorer import Scorer, _frames_traced
    fam = FAMILIES[family]
    processor = fam.load_processor(tiny_models[family], **fam.pixel_bounds(56 * 56, 224 * 224))
    torch._dynamo.reset()
    scorer = Scorer(fam.load_model(tiny_models[family]), processor, fam, max_new_tokens=2, compile="vision",
                    compile_dynamic=None)   # torch's default; dynamic from the first batch: the test below
    rng = np.random.default_rng(0)
    answer = lambda sizes: scorer.answer([Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                                          for h, w in sizes], ["Rate it."] * len(sizes), "Aesthetics")
    try:
        for sizes in ([(84, 112), (84, 112)], [(112, 140), (112, 140)]):   # static shapes, then dynamic
            answer(sizes)
        traced = _frames_traced()
        assert traced > 0
        for sizes in ([(56, 84), (140, 112)], [(112, 56), (70, 98)], [(98, 126), (126, 84)], [(60, 200), (100, 150)]):
            answer(sizes)
            assert _frames_traced() == traced, sizes
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_vision_blocks_compiled_dynamic_compile_once_whatever_the_first_batch(tiny_models, family):
    """Compiled with dynamic shapes from the first batch (the Scorer's default): one compilation serves every
    block and every later mix of sizes. A first batch of same-size images (equal windows) then batches of
    mixed sizes recompile nothing. Before: the equal-window branch, traced into the blocks, was traced again
    at the first mixed batch (on an H200, seconds of a whole call), and Qwen's first block, whose input is a
    view, compiled graphs of its own."""
    import torch._dynamo
    from torch._dynamo.utils import guard_failures
    from cogip.evaluate.scorer import Scorer, _frames_traced
    fam = FAMILIES[family]
    processor = fam.load_processor(tiny_models[family], **fam.pixel_bounds(56 * 56, 224 * 224))
    torch._dynamo.reset()
    scorer = Scorer(fam.load_model(tiny_models[family]), processor, fam, max_new_tokens=2, compile="vision")
    rng = np.random.default_rng(0)
    answer = lambda sizes: scorer.answer([Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8))
                                          for h, w in sizes], ["Rate it."] * len(sizes), "Aesthetics")
    try:
        answer([(224, 224)] * 3)
        traced = _frames_traced()
        assert traced > 0
        for sizes in ([(112, 140), (200, 84), (150, 150)], [(84, 84), (196, 112), (140, 168)]):
            answer(sizes)
            assert _frames_traced() == traced, sizes
        # nothing compiled twice, but for a second kind of block: Mllama's gated global encoder layers
        reasons = [r for failures in guard_failures.values() for r in failures]
        assert all(family == "llama" and "is_gated" in r for r in reasons), reasons
    finally:
        torch._dynamo.reset()


def test_matmul_patch_embed_matches_the_conv_in_values_and_gradients(tiny_models, monkeypatch):
    """Qwen's Conv3d patch embedding run as one matrix product: the same vision output and weight
    gradient as the convolution; other input shapes still go through the convolution itself."""
    from cogip.models.vision_matmuls import use_matmul_patch_embed
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(tiny_models["qwen"], min_pixels=56 * 56, max_pixels=112 * 112)
    image = Image.fromarray(np.random.default_rng(2).integers(0, 256, (112, 84, 3), dtype=np.uint8))
    pixels = proc.image_processor(images=[image], return_tensors="pt")
    convolutions = []
    real = torch.nn.Conv3d._conv_forward
    monkeypatch.setattr(torch.nn.Conv3d, "_conv_forward", lambda *a: convolutions.append(1) or real(*a))
    results = []
    for matmul in (False, True):
        model = fam.load_model(tiny_models["qwen"], dtype=torch.float32)
        embed = model.model.visual.patch_embed
        if matmul:
            assert use_matmul_patch_embed(model) == 1
        hooks, convolutions[:] = [], []
        embed.proj.register_forward_pre_hook(lambda m, a: hooks.append(1))   # hooks (ZeRO-3's) still run
        out = model.model.visual(pixels["pixel_values"], grid_thw=pixels["image_grid_thw"])
        out = out.pooler_output if hasattr(out, "pooler_output") else out
        out.float().pow(2).mean().backward()
        assert hooks == [1] and len(convolutions) == (0 if matmul else 1)
        results.append((out.detach(), embed.proj.weight.grad.clone()))
    (want, want_grad), (got, got_grad) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(got_grad, want_grad, rtol=1e-5, atol=1e-6)
    conv = embed.proj   # switched; a larger input (more than one patch) takes the convolution itself
    x = torch.randn(1, conv.in_channels, conv.kernel_size[0], 2 * conv.kernel_size[1], conv.kernel_size[2])
    torch.testing.assert_close(conv(x), torch.nn.Conv3d.forward(conv, x))
    assert conv(x).shape[-2] == 2


def test_padded_vision_mlp_matches_the_unpadded_in_values_and_gradients(tiny_models, monkeypatch):
    """Qwen's vision MLP (width 60 here, no multiple of 8, as the real 3420) run with zero-padded
    weights: the same logits and vision gradients as transformers' own MLP, and the padded products
    (width 64) are what runs."""
    from cogip.models import vision_matmuls
    fam = FAMILIES["qwen"]
    proc = fam.load_processor(tiny_models["qwen"], min_pixels=56 * 56, max_pixels=112 * 112)
    proc.tokenizer.padding_side = "left"
    images = [Image.fromarray(np.random.default_rng(s).integers(0, 256, (112, 84, 3), dtype=np.uint8)) for s in (3, 4)]
    batch = proc(text=[fam.chat_prompt(proc, "How beautiful?")] * 2, images=images, return_tensors="pt", padding=True)
    widths = []
    real_linear = F.linear
    monkeypatch.setattr(F, "linear", lambda x, w, b=None: widths.append(tuple(w.shape)) or real_linear(x, w, b))
    results = []
    for padded in (False, True):
        torch.manual_seed(0)
        model = fam.load_model(tiny_models["qwen"], dtype=torch.float32)
        width = model.config.vision_config.intermediate_size
        assert width % 8   # the case this is for
        if padded:
            assert vision_matmuls.pad_vision_mlps(model) == model.config.vision_config.depth
            assert vision_matmuls.pad_vision_mlps(model.model.language_model) == 0   # aligned, and no vision tower
        widths.clear()
        logits = model(**batch).logits
        logits.float().pow(2).mean().backward()
        grads = {n: p.grad.clone() for n, p in model.named_parameters() if ".visual." in f".{n}" and p.grad is not None}
        hidden = model.config.vision_config.hidden_size
        assert ((width + -width % 8, hidden) in widths) == padded and ((width, hidden) in widths) != padded
        results.append((logits.detach(), grads))
    (want, want_grads), (got, got_grads) = results
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert got_grads.keys() == want_grads.keys() and any("mlp.gate_proj" in n for n in got_grads)
    for name in want_grads:
        torch.testing.assert_close(got_grads[name], want_grads[name], rtol=1e-4, atol=1e-6, msg=name)


@pytest.mark.parametrize("family", ["qwen", "llama"])
def test_compiled_vision_block_is_one_graph_when_scoring(tiny_models, monkeypatch, tmp_path, family):
    """Scoring (no gradients): the vision attention (Qwen's windows, Mllama's padding pairs) and Qwen's padded
    MLP linears are opaque custom ops, so a compiled vision block is one graph, traced once: no graph break (a
    break splits the block into pieces, each traced again from the start; on an H200 tracing was most of a warm
    compiled loop's first batch). Answers as uncompiled, and the attention's plan still read once per forward
    (a host sync), not once per layer."""
    import torch._dynamo
    from torch._dynamo.utils import compilation_time_metrics, counters
    from transformers import AutoConfig
    from cogip.evaluate.scorer import Scorer
    fam = FAMILIES[family]
    config = AutoConfig.from_pretrained(tiny_models[family])
    if family == "qwen":   # two layers per plan: windowed, full, windowed, full
        config.vision_config.depth, config.vision_config.fullatt_block_indexes = 4, [1, 3]
        reader, forward_reads = "_read_plan", 2   # a window plan and a full-attention one
    else:                  # 3 local layers and 2 gated global ones share one mask
        config.vision_config.num_hidden_layers, config.vision_config.num_global_layers = 3, 2
        reader, forward_reads = "_read_padding_rows", 1
    torch.manual_seed(0)
    fam.model_cls()(config).save_pretrained(tmp_path)
    processor = fam.load_processor(tiny_models[family], **fam.pixel_bounds(56 * 56, 224 * 224))
    reads = []
    read = getattr(attention, reader)
    monkeypatch.setattr(attention, reader, lambda x: reads.append(1) or read(x))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(224, 224), (112, 140)]]
    answers, plan_reads = {}, {}
    try:
        for compile in ("none", "vision"):
            torch._dynamo.reset()
            counters.clear()
            compilation_time_metrics.clear()
            scorer = Scorer(fam.load_model(tmp_path), processor, fam, max_new_tokens=2, compile=compile)
            reads.clear()
            answers[compile] = [(a.text, a.score) for a in scorer.answer(images, ["Rate it."] * 2, "Aesthetics")]
            plan_reads[compile] = len(reads)
        assert answers["vision"] == answers["none"]
        assert plan_reads == {"none": forward_reads, "vision": forward_reads}
        assert not counters["graph_break"], dict(counters["graph_break"])
        block_kinds = 1 if family == "qwen" else 2   # Mllama's gated global layers compile a graph of their own
        assert counters["stats"]["unique_graphs"] == counters["frames"]["total"] == block_kinds
        # each frame traced once: no restart of its analysis (a float attribute traced as a symbol, e.g. Mllama's
        # LayerNorm eps, which the kernel takes as a number, restarted it)
        assert "compile_attempt_1" not in compilation_time_metrics, compilation_time_metrics.keys()
    finally:
        torch._dynamo.reset()


@pytest.mark.parametrize("family", ["qwen", "llama", "gemma"])
def test_compiled_language_parts_share_one_graph_for_prefill_and_decoding(tiny_models, family):
    """`--compile all` also compiles the language blocks' MLP and norms. Dynamo specializes a dimension of
    size 1, so decoding ([B, 1, H]) recompiled each of them after prefill ([B, L, H]); fed as rows
    ([B*L, H]) they trace once. Answers as uncompiled; one frame per kind of vision block, MLP and norm."""
    import torch._dynamo
    from torch._dynamo.utils import counters, guard_failures
    from cogip.evaluate.scorer import Scorer
    fam = FAMILIES[family]
    processor = fam.load_processor(tiny_models[family], **fam.pixel_bounds(56 * 56, 224 * 224))
    rng = np.random.default_rng(0)
    images = [Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)) for h, w in [(224, 224), (112, 140)]]
    answers = {}
    try:
        for compile in ("none", "all"):
            torch._dynamo.reset()
            counters.clear()
            guard_failures.clear()
            scorer = Scorer(fam.load_model(tiny_models[family]), processor, fam, max_new_tokens=3, compile=compile)
            answers[compile] = [(a.text, a.score) for a in scorer.answer(images, ["Rate it."] * 2, "Aesthetics")]
        assert answers["all"] == answers["none"]
        vision_kinds = 2 if family == "llama" else 1   # Mllama's gated global layers: a second kind of block
        assert counters["frames"]["total"] == vision_kinds + 2, dict(guard_failures)   # + the MLP and the norm
        reasons = [r for failures in guard_failures.values() for r in failures]
        assert all(family == "llama" and "is_gated" in r for r in reasons), reasons
    finally:
        torch._dynamo.reset()
