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
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_bench import batch_rows  # noqa: E402

from cogip.loss import NumberTokens, SoftLabelLoss  # noqa: E402
from cogip.models.blocks import graph_blocks  # noqa: E402
from cogip.models.families import FAMILIES  # noqa: E402
from cogip.models.tiny import build_tiny  # noqa: E402
from cogip.train.data import SFTCollator  # noqa: E402
from cogip.train.sft import ModelArguments, prepare_trainable  # noqa: E402
from cogip.train.trainer import supervised_logits  # noqa: E402


def train(config, tiny, batch, numbers, dtype, graphed: bool, steps: int, device: str) -> list[float]:
    fam = FAMILIES["llama"]
    torch.manual_seed(0)   # the same weights for every run (drawn in float32, then cast)
    model = fam.model_cls()._from_config(config, dtype=torch.float32).to(device=device, dtype=dtype)
    model.config.use_cache = False
    model = prepare_trainable(model, fam, ModelArguments(model_id=str(tiny), lora_dropout=0.0), fp32_adapters=False)
    if graphed:
        graph_blocks(model, fam, "language")   # on a CPU: compiled, no graphs
    model.train()
    loss_fn = SoftLabelLoss(numbers).to(device)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=9e-5)
    losses = []
    for _ in range(steps):
        logits, targets = supervised_logits(model, batch)
        loss = loss_fn(logits, targets)[0]
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(round(float(loss.detach()), 4))
    torch.compiler.reset()
    return losses


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--out", required=True)
    p.add_argument("--layers", type=int, default=16)
    p.add_argument("--steps", type=int, default=6)
    p.add_argument("--cpu", action="store_true")
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
    batch = SFTCollator(fam, processor)(batch_rows(out, 4, 56, 56))
    batch = {k: v.to(device) for k, v in batch.items()}
    numbers = NumberTokens.from_tokenizer(processor.tokenizer, text.vocab_size)
    runs = {}
    for dtype in (torch.float32, torch.bfloat16):
        for graphed in (False, True):
            name = f"{str(dtype).removeprefix('torch.')} {'graphed' if graphed else 'eager'}"
            runs[name] = train(config, tiny, batch, numbers, dtype, graphed, a.steps, device)
            print(name, runs[name], flush=True)
    reference = runs["float32 eager"]
    result = {"device": torch.cuda.get_device_name() if device == "cuda" else "cpu", "torch": torch.__version__,
              "layers": a.layers, "losses": runs,
              "max_abs_from_float32_eager": {k: max(abs(x - y) for x, y in zip(v, reference)) for k, v in runs.items()}}
    print(json.dumps(result["max_abs_from_float32_eager"], indent=1))
    (out / "graph_numerics.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
