"""A training run's model FLOPs utilisation, from its output folder (cogip_train.json and log_history.json of a run
with `--include_num_input_tokens_seen True`) and its model: 6 x parameters x tokens a second (a forward and a
backward; the recompute of checkpointed blocks not counted), against the card's dense bf16 peak. The tokens are
the language model's input tokens (images as their visual tokens). Prints one JSON object.

    python benchmarks/mfu.py OUTPUT_DIR MODEL_DIR
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

PEAK_TFLOPS = {"H100": 989.0, "H200": 989.0}   # SXM, dense bf16


def main():
    out, model_dir = Path(sys.argv[1]), sys.argv[2]
    info = json.loads((out / "cogip_train.json").read_text())
    seen = [e["num_input_tokens_seen"] for e in json.loads((out / "log_history.json").read_text())
            if "num_input_tokens_seen" in e]
    t = info["throughput"]
    tokens_per_sample = seen[-1] / (info["global_step"] * t["samples_per_step"])
    from transformers import AutoConfig

    from cogip.accel.auto import weights_bytes
    from cogip.models.families import FAMILIES
    params = weights_bytes(FAMILIES[info["family"]].model_cls(), AutoConfig.from_pretrained(model_dir), 1)
    import torch
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in name), None)
    flops = 6 * params * tokens_per_sample * t["median_step_samples_per_s"]
    print(json.dumps({"params": params, "tokens_per_sample": round(tokens_per_sample, 1),
                      "tflops": round(flops / 1e12, 1), "mfu": round(flops / (peak * 1e12), 3) if peak else None,
                      "device": name}))


if __name__ == "__main__":
    main()
