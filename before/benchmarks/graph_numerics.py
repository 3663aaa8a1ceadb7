"""Do compiled (or CUDA-graphed) language blocks train like eager ones? Separates the compiler from
rounding: a mid-size Llama-3.2-Vision (the tiny vision tower and vocabulary, a language model of
--layers layers, hidden 1024, GQA 8/2 heads) trains --steps AdamW steps (lr 9e-5, LoRA dropout off) on
one batch, in float32 and in bf16, each eager and with `graph_blocks(model, family, "language")`
(`--graph_parts language`: CUDA graphs on a GPU, compiled without graphs on a CPU). Prints every
step's loss and each run's distance from float32 eager.

Random weights in bf16 make a deep model's losses sensitive to any change of rounding: if float32
compiled equals float32 eager while the two bf16 runs leave float32 in different directions, the
difference between graphed and eager training is rounding, not the compiler.

    python benchmarks/graph_numerics.py --out DIR                 # GPU if there is one
    python benchmarks/graph_numerics.py --out DIR --cpu --layers 2 --steps 2   # the CPU smoke
    python benchmarks/graph_numerics.py --out DIR --accumulate 2 --variants "float32 eager" \
        "float32 graphed" "autocast eager" "autocast graphed" "autocast graphed nocopy"

`--accumulate N`: each step accumulates N micro-batches of 4 (other images), as the launcher's
gradient accumulation does; the first step's per-micro-batch losses and every step's gradient norm
are recorded too. Variants: `<float32|bfloat16|autocast> <eager|graphed>[ nocopy]` (or with
hyphens for spaces, as in `float32-graphed`, which survive a shell variable);
autocast = float32 weights under bf16 autocast (the one-GPU launcher's setting), nocopy = graphed
without the gradient copies that accumulation needs (`graph_blocks(accumulate=False)`).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import batch_rows  # noqa: E402

from cogip.dims import DIMENSIONS  # noqa: E402
from cogip.loss import NumberTokens, SoftLabelLoss  # noqa: E402
from cogip.models.blocks import graph_blocks  # noqa: E402
from cogip.models.families import FAMILIES  # noqa: E402
from cogip.models.tiny import build_tiny  # noqa: E402
from cogip.train.data import SFTCollator  # noqa: E402
from cogip.train.sft import ModelArguments, prepare_trainable  # noqa: E402
from cogip.train.trainer import supervised_logits  # noqa: E402


def train(config, tiny, batches, numbers, variant: str, steps: int, device: str) -> dict:
    """Train `steps` steps of len(batches) accumulated micro-batches; {losses, grad_norms, first_micro_losses}."""
    fam = FAMILIES["llama"]
    words = variant.split()
    autocast = words[0] == "autocast"
    dtype = torch.float32 if autocast else getattr(torch, words[0])
    torch.manual_seed(0)   # the same weights for every run (drawn in float32, then cast)
    model = fam.model_cls()._from_config(config, dtype=torch.float32).to(device=device, dtype=dtype)
    model.config.use_cache = False
    model = prepare_trainable(model, fam, ModelArguments(model_id=str(tiny), lora_dropout=0.0), fp32_adapters=False)
    if words[1] == "graphed":   # on a CPU: compiled, no graphs
        graph_blocks(model, fam, "language", accumulate=len(batches) > 1 and "nocopy" not in words)
    model.train()
    loss_fn = SoftLabelLoss(numbers).to(device)
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=9e-5)
    run = {"losses": [], "grad_norms": [], "first_micro_losses": []}
    for step in range(steps):
        total = 0.0
        for batch in batches:
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                logits, targets = supervised_logits(model, batch)
                loss = loss_fn(logits, targets)[0] / len(batches)
            loss.backward()
            micro = float(loss.detach())
            total += micro
            if step == 0:
                run["first_micro_losses"].append(round(micro * len(batches), 4))
        run["grad_norms"].append(round(float(torch.nn.utils.clip_grad_norm_(params, float("inf"))), 4))
        opt.step()
        opt.zero_grad(set_to_none=True)
        run["losses"].append(round(total, 4))
    torch.compiler.reset()
    return run


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cpu", action="store_true")
    p.add_argument("--accumulate", type=int, default=1, help="micro-batches of 4 per step")
    p.add_argument("--variants", nargs="+", default=["float32 eager", "float32 graphed", "bfloat16 eager",
                                                     "bfloat16 graphed"])
    a = p.parse_args()
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    device = "cuda" if torch.cuda.is_available() and not a.cpu else "cpu"
    fam = FAMILIES["llama"]
    tiny = build_tiny("llama", out / "tiny_llama")
    processor = fam.load_processor(tiny)
    from transformers import AutoConfig
    config = AutoConfig.from_pretrained(tiny)
    text = config.text_config
    text.num_hidden_layers, text.cross_attention_layers = a.layers, [min(1, a.layers - 1)]
    text.hidden_size, text.intermediate_size, text.head_dim = 1024, 4096, 128
    text.num_attention_heads, text.num_key_value_heads = 8, 2
    rows = batch_rows(out, 4 * a.accumulate, 56, 56)
    for i, (row, dim) in enumerate(zip(rows, list(DIMENSIONS.values()) * a.accumulate)):
        row["answer"] = dim.format_answer(dim.low + (0.577 + 0.1 * (i // 4)) % 1 * dim.span)   # micro-batches differ
    collate = SFTCollator(fam, processor)
    batches = [{k: v.to(device) for k, v in collate(rows[i:i + 4]).items()} for i in range(0, len(rows), 4)]
    numbers = NumberTokens.from_tokenizer(processor.tokenizer, text.vocab_size)
    runs = {}
    a.variants = [v.replace("-", " ") for v in a.variants]
    failed = {}   # a variant that fails (e.g. nocopy: graphs overwrite accumulated gradients) is recorded
    for variant in a.variants:
        try:
            runs[variant] = train(config, tiny, batches, numbers, variant, a.steps, device)
        except RuntimeError as e:
            failed[variant] = str(e).splitlines()[0][:300]
            torch.compiler.reset()
            print(variant, "failed:", failed[variant], flush=True)
            continue
        print(variant, runs[variant], flush=True)
    reference = runs[a.variants[0]]["losses"]
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "layers": a.layers, "accumulate": a.accumulate, "failed": failed, "losses": {k: v["losses"] for k, v in runs.items()},
              "grad_norms": {k: v["grad_norms"] for k, v in runs.items()},
              "first_micro_losses": {k: v["first_micro_losses"] for k, v in runs.items()},
              f"max_abs_from_{a.variants[0].replace(' ', '_')}":
                  {k: max(abs(x - y) for x, y in zip(v["losses"], reference)) for k, v in runs.items()}}
    print(json.dumps({k: v for k, v in result.items() if k.startswith("max_abs")}, indent=1))
    (out / "graph_numerics.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
