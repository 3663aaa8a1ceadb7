"""The published evaluation loop, re-implemented faithfully as a whole process for timing beside `cog_test.sh`:
load the model (`from_pretrained`, dtype auto, device_map auto), then one test item at a time: chat prompt,
processor, greedy `generate`, decode. The published protocol's items (120 a dimension, seed 19); `--limit N`
answers the first N of them (the rate is the loop's; the start-up is reported apart). Prints one JSON line.

    python benchmarks/published_eval.py --model-id DIR --family qwen --test-dir T --image-root I --limit 96
"""

from __future__ import annotations

import argparse
import json
import time

STARTED = time.perf_counter()

import torch  # noqa: E402

from cogip.data.images import open_image  # noqa: E402
from cogip.data.layout import read_test_messages, test_dimension_folders  # noqa: E402
from cogip.evaluate.loop import PUBLISHED_SEED, plan_samples  # noqa: E402
from cogip.models.families import FAMILIES  # noqa: E402


def answer_one(model, processor, fam, image, prompt: str, max_new_tokens: int) -> str:
    """One item as the published loop answers it: its chat prompt, the processor, greedy `generate`, decode."""
    inputs = fam.encode(processor, [fam.chat_prompt(processor, prompt)], [image], return_tensors="pt").to(model.device)
    with torch.no_grad():
        out = model.generate(**inputs, max_new_tokens=max_new_tokens, do_sample=False)
    return processor.batch_decode(out[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)[0]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--model-id", required=True)
    p.add_argument("--family", choices=tuple(FAMILIES), required=True)
    p.add_argument("--test-dir", required=True)
    p.add_argument("--image-root", required=True)
    p.add_argument("--sample-n", type=int, default=120)
    p.add_argument("--limit", type=int, help="answer only the first N sampled items")
    p.add_argument("--max-new-tokens", type=int, default=10)
    a = p.parse_args()
    fam = FAMILIES[a.family]
    names = test_dimension_folders(a.test_dir, listed_order=True)
    items = {n: read_test_messages(f"{a.test_dir}/{n}/{n}_messages.json", f"{a.test_dir}/{n}/{n}_scores.json", n)
             for n in names}
    plan = plan_samples({n: len(v) for n, v in items.items()}, a.sample_n, PUBLISHED_SEED)
    todo = [items[n][i] for n, idx in plan.items() for i in idx][:a.limit]
    processor = fam.load_processor(a.model_id, **fam.pixel_bounds(published=True))
    model = fam.model_cls().from_pretrained(a.model_id, dtype="auto", device_map="auto").eval()
    loaded = time.perf_counter()
    for item in todo:
        answer_one(model, processor, fam, open_image(f"{a.image_root}/{item.image}"), item.prompt, a.max_new_tokens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    done = time.perf_counter()
    loop = done - loaded
    print(json.dumps({"family": a.family, "items": len(todo), "startup_s": round(loaded - STARTED, 2),
                      "loop_s": round(loop, 2), "loop_images_per_s": round(len(todo) / loop, 3),
                      "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"}))


if __name__ == "__main__":
    main()
