"""Gradient checkpointing by part: the same gradients as no checkpointing, recomputation exactly where
asked (Mllama's vision encoder included, which transformers itself never checkpoints)."""

import numpy as np
import pytest
import torch
from PIL import Image

from cogip.errors import CogipError
from cogip.models import blocks as checkpointing
from cogip.models.families import FAMILIES
from cogip.train.data import SFTCollator
from cogip.train.sft import ModelArguments, prepare_trainable
from cogip.train.trainer import supervised_logits


def _batch(fam, proc, root):
    rng = np.random.default_rng(0)
    rows = []
    for i, s in enumerate((4.25, 6.5)):
        Image.fromarray(rng.integers(0, 256, (84, 84, 3), dtype=np.uint8)).save(root / f"{i}.png")
        rows.append({"image": str(root / f"{i}.png"), "prompt": "How funny?", "answer": f"medium {s:.3f}"})
    return SFTCollator(fam, proc)(rows)


def _trainable(tiny, fam, dtype, checkpointed: bool):
    """The tiny model as the recipe trains it (LoRA dropout off), checkpointing enabled where asked."""
    torch.manual_seed(0)
    model = fam.load_model(tiny, dtype=dtype)
    if checkpointed:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
        model.enable_input_require_grads()
    return prepare_trainable(model, fam, ModelArguments(model_id=str(tiny), lora_dropout=0.0))


def _grads(tiny, fam, parts, calls, root):
    model = _trainable(tiny, fam, torch.float32, parts is not None)
    counts = checkpointing.set_checkpointing(model, fam, parts) if parts is not None else None
    model.train()
    batch = _batch(fam, fam.load_processor(tiny), root)
    calls.clear()
    logits, targets = supervised_logits(model, batch)
    torch.nn.functional.cross_entropy(logits, targets).backward()
    return counts, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}


@pytest.mark.parametrize("family", list(FAMILIES))
def test_parts_recompute_where_asked_and_keep_gradients(tiny_models, family, monkeypatch, tmp_path):
    fam = FAMILIES[family]
    calls = []
    import torch.utils.checkpoint as tuc
    real = tuc.checkpoint

    def counting(fn, *args, **kwargs):
        calls.append(getattr(fn, "__self__", None) or fn)
        return real(fn, *args, **kwargs)

    import transformers.modeling_utils as mu
    monkeypatch.setattr(tuc, "checkpoint", counting)
    monkeypatch.setattr(mu, "checkpoint", counting)   # the function transformers' layers recompute through
    monkeypatch.setattr(checkpointing, "checkpoint", counting)
    _, reference = _grads(tiny_models[family], fam, None, calls, tmp_path)
    assert not calls
    totals = None
    for parts in ("all", "language", "vision", "none", "vision=1", "language=1,vision=0", "vision=1+1", "language=0+2"):
        counts, grads = _grads(tiny_models[family], fam, parts, calls, tmp_path)
        totals = totals or counts   # "all" first: every block of each part
        wanted = checkpointing.parse_part_blocks(parts)
        expected = {p: totals[p] if p in wanted and wanted[p] is None else sum(wanted.get(p, (0, 0))) for p in totals}
        assert counts == expected, (parts, counts)
        assert len(calls) == sum(expected.values()), (parts, calls)   # one recomputation per checkpointed block
        assert grads.keys() == reference.keys()
        for name in reference:
            torch.testing.assert_close(grads[name], reference[name], rtol=1e-4, atol=1e-6, msg=name)


def test_mllama_vision_blocks_are_wrapped(tiny_models):
    fam = FAMILIES["llama"]
    model = fam.load_model(tiny_models["llama"], dtype=torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    counts = checkpointing.set_checkpointing(model, fam, "vision")
    blocks = [m for m in model.modules() if type(m).__name__ == "MllamaVisionEncoderLayer"]
    assert counts == {"language": 0, "vision": len(blocks)} and blocks
    assert all(m._cogip_checkpoint for m in blocks)
    # part=N: the first N blocks in forward order recompute, the later ones keep their activations
    counts = checkpointing.set_checkpointing(model, fam, f"vision={len(blocks) - 1}")
    assert counts["vision"] == len(blocks) - 1
    assert [m._cogip_checkpoint for m in blocks] == [True] * (len(blocks) - 1) + [False]
    with pytest.raises(CogipError, match=f"asks for {len(blocks) + 1} blocks, but the model has {len(blocks)} vision"):
        checkpointing.set_checkpointing(model, fam, f"vision={len(blocks)}+1")


def test_mlp_only_blocks_recompute_the_up_projection_alone(tiny_models, tmp_path):
    """vision=1+1 on Mllama's vision layers: the first recomputes whole, the second only its MLP's up
    projection (its attention runs once), the third keeps everything."""
    fam = FAMILIES["llama"]
    torch.manual_seed(0)
    model = fam.load_model(tiny_models["llama"], dtype=torch.float32)
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = prepare_trainable(model, fam, ModelArguments(model_id=str(tiny_models["llama"]), lora_dropout=0.0))
    assert checkpointing.set_checkpointing(model, fam, "vision=1+1") == {"language": 0, "vision": 2}
    blocks = [b for _, b, part in checkpointing.repeated_blocks(model, fam) if part == "vision"]   # PEFT's trained copies
    assert len(blocks) == 3
    runs = {}
    for i, block in enumerate(blocks):
        for name in ("self_attn", "mlp.fc1", "mlp.fc2"):
            block.get_submodule(name).register_forward_hook(
                lambda *_, key=(i, name): runs.__setitem__(key, runs.get(key, 0) + 1))
    model.train()
    logits, targets = supervised_logits(model, _batch(fam, fam.load_processor(tiny_models["llama"]), tmp_path))
    torch.nn.functional.cross_entropy(logits, targets).backward()
    # (a recomputation stops once the last saved input is rebuilt: no block reruns its down projection)
    assert runs == {(0, "self_attn"): 2, (0, "mlp.fc1"): 2, (0, "mlp.fc2"): 1,
                    (1, "self_attn"): 1, (1, "mlp.fc1"): 2, (1, "mlp.fc2"): 1,
                    (2, "self_attn"): 1, (2, "mlp.fc1"): 1, (2, "mlp.fc2"): 1}
    # switching back to whole blocks turns the MLP's own recomputation off
    checkpointing.set_checkpointing(model, fam, "vision")
    assert [getattr(b.mlp, "_cogip_checkpoint", False) for b in blocks] == [False, False, False]
    assert all(b._cogip_checkpoint for b in blocks)


def test_bad_parts_and_missing_enable():
    assert checkpointing.parse_parts("language, vision") == {"language", "vision"}
    assert checkpointing.parse_parts("none") == set() and checkpointing.parse_parts("all") == {"language", "vision"}
    with pytest.raises(CogipError, match="projector"):
        checkpointing.parse_parts("projector")
    assert checkpointing.parse_part_blocks("language, vision=24") == {"language": None, "vision": (24, 0)}
    assert checkpointing.parse_part_blocks("vision=9+31") == {"vision": (9, 31)}
    assert checkpointing.parse_part_blocks("all") == {"language": None, "vision": None}
    for bad, says in (("vision=x", "vision=N"), ("vision=-1", "vision=N"), ("vision=1+", "vision=N\\+M"),
                      ("all=3", "goes with a part name")):
        with pytest.raises(CogipError, match=says):
            checkpointing.parse_part_blocks(bad)


def test_enable_first(tiny_models):
    fam = FAMILIES["gemma"]
    model = fam.load_model(tiny_models["gemma"], dtype=torch.float32)
    with pytest.raises(CogipError, match="enable gradient checkpointing"):
        checkpointing.set_checkpointing(model, fam, "language")


@pytest.mark.parametrize("family,expected", [
    ("qwen", {"Qwen2_5_VLDecoderLayer", "Qwen2_5_VLVisionBlock"}),
    ("llama", {"MllamaSelfAttentionDecoderLayer", "MllamaCrossAttentionDecoderLayer", "MllamaVisionEncoderLayer"}),
    ("gemma", {"Gemma3DecoderLayer", "SiglipEncoderLayer"})])
def test_zero3_gathers_by_block(tiny_models, family, expected, monkeypatch):
    """Under ZeRO-3 every repeated block (LoRA inside) is marked for DeepSpeed as one gathering unit."""
    import sys
    import types
    marked = []
    fake = types.ModuleType("deepspeed.utils")
    fake.set_z3_leaf_modules = lambda model, classes: marked.append((model, classes))
    monkeypatch.setitem(sys.modules, "deepspeed", types.ModuleType("deepspeed"))
    monkeypatch.setitem(sys.modules, "deepspeed.utils", fake)
    fam = FAMILIES[family]
    model = prepare_trainable(fam.load_model(str(tiny_models[family])), fam, ModelArguments(model_id="x"))
    classes = checkpointing.zero3_leaf_blocks(model, fam)
    assert {c.__name__ for c in classes} == expected and marked == [(model, classes)]
    lora_inside = [n for n, m in model.named_modules() if isinstance(m, tuple(classes))
                   and any("lora_A" in k for k, _ in m.named_modules())]
    assert lora_inside   # the LoRA layers are gathered with their block


def test_zero3_prefetch_bucket_is_the_largest_block(tiny_models):
    """An "auto" prefetch bucket becomes the largest block's parameter count (LoRA included); a number
    the user set is kept."""
    fam = FAMILIES["qwen"]
    model = prepare_trainable(fam.load_model(str(tiny_models["qwen"])), fam, ModelArguments(model_id="x"))
    layer = model.base_model.model.model.language_model.layers[0]
    vision = model.base_model.model.model.visual.blocks[0]
    want = max(sum(p.numel() for p in b.parameters()) for b in (layer, vision))
    assert want > sum(p.numel() for p in layer.mlp.parameters())
    config = {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": "auto"}}
    assert checkpointing.zero3_prefetch_blocks(config, model, fam) == want
    assert config["zero_optimization"]["stage3_prefetch_bucket_size"] == want
    mine = {"zero_optimization": {"stage": 3, "stage3_prefetch_bucket_size": 12345}}
    assert checkpointing.zero3_prefetch_blocks(mine, model, fam) is None
    assert mine["zero_optimization"]["stage3_prefetch_bucket_size"] == 12345


class _OpCounts(torch.utils._python_dispatch.TorchDispatchMode):
    """Counts the attention kernels that run (forward, recomputation and backward all reach here)."""

    def __init__(self):
        super().__init__()
        self.attention = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if func.__name__.split(".")[0] in checkpointing.KEEPABLE["attention"]:
            self.attention += 1
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("family,part", [("llama", "vision"), ("qwen", "language"), ("gemma", "vision")])
def test_kept_attention_is_not_recomputed(tiny_models, family, part, tmp_path):
    """Selective checkpointing (`keep="attention"`): each checkpointed block's attention runs once, in the
    forward, instead of again in the recomputation; the gradients stay those of plain checkpointing."""
    from cogip.models.attention import use_fast_vision_attention
    fam = FAMILIES[family]
    batch = _batch(fam, fam.load_processor(tiny_models[family]), tmp_path)
    runs = {}
    for keep in ("no checkpointing", "none", "attention"):
        torch.manual_seed(0)
        model = fam.load_model(tiny_models[family], dtype=torch.float32)
        use_fast_vision_attention(model)
        if keep != "no checkpointing":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        model = prepare_trainable(model, fam, ModelArguments(model_id="x", lora_dropout=0.0))
        if keep != "no checkpointing":
            counts = checkpointing.set_checkpointing(model, fam, part, keep=keep)
        model.train()
        with _OpCounts() as ops:
            logits, targets = supervised_logits(model, batch)
            torch.nn.functional.cross_entropy(logits, targets).backward()
        runs[keep] = ops.attention, {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    assert counts[part] > 0
    (unchecked, _), (plain, plain_grads), (kept, kept_grads) = runs.values()
    assert kept == unchecked < plain, (unchecked, plain, kept)   # attention as often as without recomputation
    for name in plain_grads:
        torch.testing.assert_close(kept_grads[name], plain_grads[name], rtol=1e-5, atol=1e-7, msg=name)


def test_bad_keep():
    assert checkpointing.parse_keep("none") == set() and checkpointing.parse_keep("attention") == {"attention"}
    assert checkpointing.keep_context("none") is None
    with pytest.raises(CogipError, match="mlp"):
        checkpointing.parse_keep("attention,mlp")


def _autocast_step(tiny, fam, batch, cast_norms: bool, parts: str | None = None):
    """One bf16-autocast forward and backward of a bf16 model whose trained parameters are float32 masters
    (the one-GPU launchers' setting): the loss, the gradients, and the bytes each vision block saved for
    the backward (distinct storages), besides each block's first norm's output size."""
    model = _trainable(tiny, fam, torch.bfloat16, parts is not None)
    for p in model.parameters():
        if p.requires_grad:
            p.data = p.data.float()
    if parts is not None:
        checkpointing.set_checkpointing(model, fam, parts)
    blocks = [b for _, b, part in checkpointing.repeated_blocks(model, fam) if part == "vision"]
    assert checkpointing.autocast_vision_norms(model, fam) if cast_norms else True
    current, saved, norm_numel = [None], {}, {}
    for i, block in enumerate(blocks):
        block.register_forward_pre_hook(lambda *_, i=i: current.__setitem__(0, i))
        block.register_forward_hook(lambda *_: current.__setitem__(0, None))
        norm = next(c for c in block.children() if "Norm" in type(c).__name__)
        norm.register_forward_hook(lambda m, a, out, i=i: norm_numel.__setitem__(i, out.numel()))

    def pack(t):
        if current[0] is not None and t.is_floating_point():
            saved.setdefault(current[0], {})[t.untyped_storage().data_ptr()] = t.untyped_storage().nbytes()
        return t

    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits, targets = supervised_logits(model, batch)
        loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.requires_grad}
    return loss.item(), grads, [sum(saved.get(i, {}).values()) for i in range(len(blocks))], norm_numel


@pytest.mark.parametrize("family,copies", [("llama", 2), ("gemma", 2), ("qwen", 1)])
def test_vision_norm_outputs_cast_once_under_autocast(tiny_models, family, copies, tmp_path):
    """With float32 masters under autocast, the vision blocks' norms give float32, and each linear layer
    they feed saved a bf16 copy of its own: one cast instead saves `copies` per block (query, key and value
    share one for Mllama and SigLIP; Qwen's gate and up projections do). The loss is the same bit for bit,
    recomputed blocks included; the gradients differ at most by the rounding of summing the layers' input
    gradients in bf16."""
    fam = FAMILIES[family]
    batch = _batch(fam, fam.load_processor(tiny_models[family]), tmp_path)
    loss, grads, before, norm_numel = _autocast_step(tiny_models[family], fam, batch, cast_norms=False)
    cast_loss, cast_grads, after, _ = _autocast_step(tiny_models[family], fam, batch, cast_norms=True)
    assert cast_loss == loss
    assert cast_grads.keys() == grads.keys()
    for name in grads:   # within 2**-8 of each tensor's largest gradient: bf16's rounding
        assert (cast_grads[name] - grads[name]).abs().max() <= grads[name].abs().max() * 2 ** -8, name
    assert len(before) == len(norm_numel) >= 2
    assert [b - a for b, a in zip(before, after)] == [copies * norm_numel[i] * 2 for i in range(len(before))]
    if family == "llama":   # also where blocks recompute, whole (the first) or their MLP alone (the second)
        ckpt_loss, ckpt_grads, _, _ = _autocast_step(tiny_models[family], fam, batch, True, parts="vision=1+1")
        assert ckpt_loss == loss
        for name in grads:
            assert torch.equal(ckpt_grads[name], cast_grads[name]), name   # recomputation changes nothing
