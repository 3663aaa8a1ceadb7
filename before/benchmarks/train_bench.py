"""One SFT training step at real size: Qwen2.5-VL-7B architecture, random bf16 weights, batch 4,
1280 visual tokens per image, LoRA r64 on the language model, vision tower trained, gradient
checkpointing. Variants:
  published  full logits + the published loss (full-vocab log-softmax, per-token loop), per-window vision attention
  ours-loss  answer-only logits + this project's soft-label loss, per-window vision attention
  ours       ours-loss + grouped varlen vision attention (cogip.models.attention)
Options after a colon: `ours:liger` (Liger's fused kernels, as `--use_liger_kernel True`),
`ours:ckpt=language` (checkpoint only those parts, as `--checkpoint_parts`; all | none | language | vision,
or `ckpt=vision=24`: only the first 24 vision blocks, `ckpt=vision=9+31`: 9 whole, then 31 only their MLP;
without it, transformers' default: every layer it can checkpoint), `ours:ckpt=vision:keep=attention`
(the checkpointed blocks keep their attention outputs, as `--checkpoint_keep`), `ours:sdpa=flash` (the
fused attention kernels allowed, as `--sdpa_backends`), `ours:compile` (the vision blocks compiled,
`torch.compile`; `compile=language` or `compile=all` as `compile_blocks`; `graphs=language`: the
language blocks compiled whole and replayed as CUDA graphs, as `--graph_parts` (`graph_blocks`);
`wholecompile=language`: compiled whole, no graphs), `ours:liger=nolayernorm` (Liger without its LayerNorm),
`ours:dropout=0` (LoRA dropout off: equal variants then give equal losses at every step, each step an
update on the same batch; `lr=9e-5` sets AdamW's rate, 1e-5 by default).
Prints samples/s, peak memory, activation memory (peak minus weights, gradients and optimizer
state between steps), approximate MFU and the loss of each on the same batch; `--profile VARIANT`
adds a profile of one step (`cogip.profiling.report`: GPU busy and idle time, host waits, top operators);
`--diagnose VARIANT` two more steps without the profiler: one under `cogip.profiling.BlockTimeline` (when
each block ran on the device and how far the host was ahead), one under CUDA's sync debug mode (every
host-device synchronisation, counted by the source line that caused it).

    python benchmarks/train_bench.py --out DIR           # GPU
    python benchmarks/train_bench.py --cpu-smoke --out DIR
"""

from __future__ import annotations

import argparse
import gc
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parent))
from loss_bench import published_from_logits  # noqa: E402

from cogip.dims import DIMENSIONS  # noqa: E402
from cogip.loss import NumberTokens, SoftLabelLoss  # noqa: E402
from cogip.models.attention import allow_sdpa_backends, use_fast_vision_attention  # noqa: E402
from cogip.models.vision_matmuls import use_fast_vision_matmuls  # noqa: E402
from cogip.models.blocks import apply_liger, compile_blocks, graph_blocks, repeated_blocks, set_checkpointing  # noqa: E402
from cogip.models.configs import real_processor  # noqa: E402
from cogip.models.families import FAMILIES  # noqa: E402
from cogip.models.tiny import build_tiny  # noqa: E402
from cogip.profiling import BlockTimeline, start_profile  # noqa: E402
from cogip.train.data import SFTCollator  # noqa: E402
from cogip.train.sft import ModelArguments, prepare_trainable  # noqa: E402
from cogip.train.trainer import supervised_logits  # noqa: E402

PEAK_TFLOPS = 989.0   # H100/H200 SXM dense bf16


def batch_rows(root: Path, n: int, h: int, w: int) -> list[dict]:
    rng = np.random.default_rng(0)
    rows = []
    for i, dim in zip(range(n), list(DIMENSIONS.values()) * n):
        path = root / f"img{i}.jpg"
        Image.fromarray(rng.integers(0, 256, (h, w, 3), dtype=np.uint8)).save(path, quality=90)
        rows.append({"image": str(path), "prompt": dim.prompt, "answer": dim.format_answer(dim.low + 0.577 * dim.span)})
    return rows


def diagnose(model, fam, step, cuda: bool) -> dict:
    """One step's block timeline (summary) and the host-device synchronisations of another, by source line."""
    import warnings
    from collections import Counter
    timeline = BlockTimeline(repeated_blocks(model, fam))
    timeline.start()
    step()
    result = {"timeline": timeline.stop()["summary"], "syncs": {}}
    if cuda:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            torch.cuda.set_sync_debug_mode("warn")
            try:
                step()
            finally:
                torch.cuda.set_sync_debug_mode("default")
        where = Counter(f"{Path(w.filename).parent.name}/{Path(w.filename).name}:{w.lineno}" for w in caught
                        if "synchroniz" in str(w.message))
        result["syncs"] = dict(where.most_common())
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--cpu-smoke", action="store_true")
    p.add_argument("--out", required=True)
    p.add_argument("--steps", type=int, default=10)
    p.add_argument("--variants", nargs="+", default=["published", "ours-loss", "ours"])
    p.add_argument("--family", default="qwen", choices=("qwen", "llama", "gemma"))
    p.add_argument("--profile", nargs="*", default=[], help="variants to profile one step of")
    p.add_argument("--diagnose", nargs="*", default=[], help="variants to time by block and check for syncs")
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    cuda = torch.cuda.is_available() and not a.cpu_smoke
    fam = FAMILIES[a.family]
    tiny = build_tiny(a.family, out / f"tiny_{a.family}")
    processor = fam.load_processor(tiny)
    if a.family == "qwen":
        h, w = (896, 1120) if cuda else (84, 84)              # 64x80 patches = 1280 merged visual tokens
        fam.set_pixel_bounds(processor, h * w, h * w)
    elif cuda:   # Llama: 4 tiles of 560 px, as the issue measured; Gemma 3: 896 px, 256 image tokens
        processor = real_processor(a.family, processor)
        h, w = (1120, 1120) if a.family == "llama" else (896, 896)
    else:
        h, w = 56, 56
    batch = SFTCollator(fam, processor)(batch_rows(out, 4, h, w))
    device = "cuda" if cuda else "cpu"
    batch = {k: v.to(device) for k, v in batch.items()}
    results = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__,
               "batch": 4, "tokens_per_sample": int(batch["input_ids"].shape[1]),
               "family": a.family}
    def run_variant(variant):
        base, *opts = variant.split(":")
        opts = dict(o.split("=", 1) if "=" in o else (o, "1") for o in opts)
        torch.manual_seed(0)
        allow_sdpa_backends(opts.get("sdpa", "auto"))
        if cuda:
            from cogip.models.configs import REAL
            with torch.device("cuda"):
                model = fam.model_cls()._from_config(REAL[a.family](processor.tokenizer), dtype=torch.bfloat16)
            torch.cuda.reset_peak_memory_stats()
        else:
            model = fam.load_model(tiny)
        if base == "ours" and not use_fast_vision_attention(model) and a.family == "qwen":
            raise RuntimeError("varlen vision attention did not switch on")
        if base == "ours":
            use_fast_vision_matmuls(model)
        if "liger" in opts:   # liger, or liger=nolayernorm (the vision tower's LayerNorm left native)
            apply_liger(model, {"layer_norm": False} if opts["liger"] == "nolayernorm" else None)
        model.config.use_cache = False
        if opts.get("ckpt") != "none":
            model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
            model.enable_input_require_grads()
        # bf16 LoRA weights, as under DeepSpeed (what finetune_lora.sh runs on GPUs)
        model = prepare_trainable(model, fam, ModelArguments(model_id=str(tiny), lora_dropout=float(opts.get("dropout", 0.05))),
                                  fp32_adapters=not cuda)
        if opts.get("ckpt") not in (None, "none"):
            print(variant, "checkpointed blocks:", set_checkpointing(model, fam, opts["ckpt"], keep=opts.get("keep", "none")),
                  flush=True)
        if "compile" in opts:   # compile (the vision blocks) or compile=PARTS
            print(variant, "compiled modules:", compile_blocks(model, fam, "vision" if opts["compile"] == "1" else opts["compile"]))
        if "graphs" in opts:   # graphs=PARTS: as `--graph_parts`
            print(variant, "graphed blocks:", graph_blocks(model, fam, opts["graphs"]))
        if "wholecompile" in opts:   # wholecompile=PARTS: whole blocks, no graphs (no KV cache in training)
            print(variant, "compiled modules:", graph_blocks(model, fam, opts["wholecompile"], mode=None))
        model.train()
        numbers = NumberTokens.from_tokenizer(processor.tokenizer, model.config.get_text_config().vocab_size)
        loss_fn = SoftLabelLoss(numbers).to(device)
        params = [q for q in model.parameters() if q.requires_grad]
        opt = torch.optim.AdamW(params, lr=float(opts.get("lr", 1e-5)))   # lr=9e-5: the Llama recipe's
        n_params = sum(q.numel() for q in model.parameters())

        def step():
            if base == "published":   # full logits from the model, then the published loss
                logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
                loss = published_from_logits(logits, batch["labels"], loss_fn)
            else:
                lg, tg = supervised_logits(model, batch)
                loss = loss_fn(lg, tg)[0]
            loss.backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
            return float(loss.detach())

        losses = [step() for _ in range(1 if not cuda else 2)]
        sync = torch.cuda.synchronize if cuda else (lambda: None)
        sync()
        static = torch.cuda.memory_allocated() if cuda else 0     # weights, optimizer state (grads freed)
        if cuda:
            torch.cuda.reset_peak_memory_stats()
        times = []
        for _ in range(a.steps if cuda else 1):   # each step ends in the loss's read: timed on the host
            t = time.perf_counter()
            losses.append(step())
            times.append(time.perf_counter() - t)
        sync()
        sec = float(np.median(times))   # one slow step (a collection, a late graph recording) does not move it
        tokens = 4 * results["tokens_per_sample"]
        results[variant] = {"step_s": sec, "samples_s": 4 / sec, "step_times_s": [round(x, 4) for x in times],
                            "first_loss": losses[0], "losses": [round(x, 4) for x in losses],
                            "peak_gib": torch.cuda.max_memory_allocated() / 2 ** 30 if cuda else None,
                            "activations_gib": (torch.cuda.max_memory_allocated() - static) / 2 ** 30 if cuda else None,
                            "mfu_approx": 6 * n_params * tokens / sec / (PEAK_TFLOPS * 1e12) if cuda else None}
        print(variant, json.dumps(results[variant]), flush=True)
        tag = f"{a.family}_{variant.replace(':', '_').replace('=', '-')}"   # in output file names
        if variant in a.diagnose:
            try:
                (out / f"diagnose_{tag}.json").write_text(
                    json.dumps(diagnose(model, fam, step, cuda), indent=1))
            except Exception as e:   # e.g. hooks inside compiled blocks: the variant's timing above still stands
                results[variant]["diagnose_error"] = f"{type(e).__name__}: {e}"
        if variant in a.profile:
            stop = start_profile()
            step()
            text = stop()
            (out / f"profile_{tag}.txt").write_text(text)
            print(text, flush=True)

    for variant in a.variants:
        try:
            run_variant(variant)
        except Exception as e:   # out of memory or broken: one variant must not cost the others' numbers
            results[variant] = {"error": f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"}
            print(variant, "failed:", results[variant]["error"], flush=True)
        torch.compiler.reset()   # compiled blocks and their CUDA graphs' memory pools hold the model
        gc.collect()   # free this variant's model before the next one
        if cuda:
            torch.cuda.empty_cache()
    print(json.dumps(results, indent=2))
    (out / f"train_bench_{a.family}.json").write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
