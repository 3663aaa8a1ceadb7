"""Qwen-Image generation with the default vs the aligned (SFT'd Qwen2.5-VL) text encoder.

The pipeline (transformer, VAE, scheduler) loads once; only the tokenizer and text encoder are
swapped, and the swap is verified (the aligned encoder's hidden states must differ from the
default's on a fixed prompt). Each prompt is encoded on its own and each image generated with its
own seeded generator: the pipeline pads a batch to its longest prompt, so encoding prompts together
would make an image depend on its neighbours. Outputs under OUT: `default/`, `aligned/`, optional
`combined/` side-by-side images, and `manifest.jsonl`; reruns skip finished images.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch
from tqdm import tqdm

from .data.bench import append_jsonl, load_json, write_json
from .errors import CogipError, exit_code
from .models.families import resolve_family

SWAP_CHECK_PROMPT = "A quiet lake at dawn, mist over the water."
ENCODERS = ("default", "aligned")


def read_prompts(path: str | os.PathLike) -> list[tuple[str, str]]:
    """(name, prompt) pairs from a JSON list of strings or a name → prompt object."""
    data = load_json(path)
    if isinstance(data, dict):
        pairs = [(str(k), v) for k, v in data.items()]
    elif isinstance(data, list):
        pairs = [(f"{i:04d}", v) for i, v in enumerate(data)]
    else:
        raise CogipError("expected a JSON list of prompts or an object of name: prompt", file=str(path))
    if not pairs:
        raise CogipError("no prompts", file=str(path))
    for name, p in pairs:
        if not isinstance(p, str) or not p.strip():
            raise CogipError("prompt must be a non-empty string", file=str(path), item=name)
    return pairs


def template_start(tokenizer, template: str) -> int:
    """Tokens of the encode template before the prompt: what the pipeline drops from the hidden states."""
    return len(tokenizer(template.split("{}")[0])["input_ids"])


def load_encoder(encoder: str, base: str | None = None, dtype=torch.bfloat16):
    """(text encoder, tokenizer) from a full SFT checkpoint or an adapter folder (+ base)."""
    fam = resolve_family(encoder, "qwen")   # a Qwen2.5-VL, there, before anything loads
    if os.path.isfile(os.path.join(encoder, "adapter_config.json")):
        from .models.adapters import load_adapted, processor_source
        model, _ = load_adapted(encoder, base, fam, dtype=dtype)
        model = model.merge_and_unload()
        tok_src = processor_source(encoder, base)
    else:
        model, tok_src = fam.load_model(encoder, dtype=dtype), encoder
    return model.eval(), fam.load_processor(tok_src).tokenizer


class EncoderSwap:
    """Holds the pipeline and both encoders; `use(name)` swaps tokenizer + text encoder in place."""

    def __init__(self, pipe, aligned_encoder, aligned_tokenizer):
        self.pipe = pipe
        self.encoders = {"default": (pipe.text_encoder, pipe.tokenizer), "aligned": (aligned_encoder, aligned_tokenizer)}
        want = pipe.transformer.config.joint_attention_dim
        got = aligned_encoder.config.get_text_config().hidden_size
        if got != want:
            raise CogipError(f"aligned encoder hidden size {got} does not fit the pipeline "
                             f"(transformer joint_attention_dim {want})")

    def use(self, name: str):
        encoder, tokenizer = self.encoders[name]
        device = self.pipe.transformer.device
        for other, (enc, _) in self.encoders.items():   # one encoder on the device at a time
            if other != name:
                enc.to("cpu")
        self.pipe.text_encoder, self.pipe.tokenizer = encoder.to(device), tokenizer
        self.pipe.prompt_template_encode_start_idx = template_start(tokenizer, self.pipe.prompt_template_encode)

    @torch.no_grad()
    def encode(self, prompt: str):
        embeds, mask = self.pipe.encode_prompt(prompt, device=self.pipe.transformer.device)
        return embeds, mask

    def verify(self) -> float:
        """Max |difference| of the two encoders' prompt embeddings; an error when there is none."""
        self.use("default")
        a = self.encode(SWAP_CHECK_PROMPT)[0].float().cpu()
        self.use("aligned")
        b = self.encode(SWAP_CHECK_PROMPT)[0].float().cpu()
        diff = float((a - b).abs().max()) if a.shape == b.shape else float("inf")
        if diff < 1e-6:
            raise CogipError("the aligned encoder gives the same hidden states as the default one: "
                             "the swap or the adapter did not take effect")
        return diff


def side_by_side(a, b, prompt: str, labels=ENCODERS):
    from PIL import Image, ImageDraw
    w, h = a.width, a.height
    bar = max(14, h // 12)
    canvas = Image.new("RGB", (2 * w, h + 2 * bar), "white")
    canvas.paste(a, (0, bar)), canvas.paste(b, (w, bar))
    d = ImageDraw.Draw(canvas)
    d.text((4, 2), labels[0], fill="black"), d.text((w + 4, 2), labels[1], fill="black")
    d.text((4, h + bar + 2), prompt[: max(20, 2 * w // 7)], fill="black")
    return canvas


def _save_atomic(image, path: Path):
    tmp = path.with_name(f".{path.name}.tmp.png")
    image.save(tmp)
    os.replace(tmp, path)


def generate(pipe, swap: EncoderSwap, prompts: list[tuple[str, str]], out: Path, seed: int = 55,
             images_per_prompt: int = 1, height: int = 768, width: int = 768, steps: int = 14,
             true_cfg_scale: float = 2.0, negative_prompt: str = " ", combined: bool = True,
             generator_device: str = "cpu") -> list[dict]:
    out.mkdir(parents=True, exist_ok=True)
    manifest_path = out / "manifest.jsonl"
    done = set()
    if manifest_path.is_file():
        for line in manifest_path.read_text().splitlines():
            try:
                r = json.loads(line)
                done.add((r["encoder"], r["file"]))
            except (json.JSONDecodeError, KeyError):
                continue
    jobs = [(name, prompt, k) for name, prompt in prompts for k in range(images_per_prompt)]
    for encoder in ENCODERS:
        (out / encoder).mkdir(exist_ok=True)
        todo = [j for j in jobs if (encoder, f"{encoder}/{j[0]}_{j[2]}.png") not in done
                or not (out / encoder / f"{j[0]}_{j[2]}.png").is_file()]
        if not todo:
            continue
        swap.use(encoder)
        negative = swap.encode(negative_prompt) if true_cfg_scale > 1 else (None, None)
        for name, prompt, k in tqdm(todo, desc=f"generate ({encoder})"):
            embeds, mask = swap.encode(prompt)
            generator = torch.Generator(generator_device).manual_seed(seed + k)
            image = pipe(prompt_embeds=embeds, prompt_embeds_mask=mask, negative_prompt_embeds=negative[0],
                         negative_prompt_embeds_mask=negative[1], true_cfg_scale=true_cfg_scale, height=height,
                         width=width, num_inference_steps=steps, generator=generator).images[0]
            file = f"{encoder}/{name}_{k}.png"
            _save_atomic(image, out / file)
            append_jsonl(manifest_path, [{"name": name, "prompt": prompt, "seed": seed + k, "encoder": encoder,
                                          "file": file}])
    if combined:
        from PIL import Image
        (out / "combined").mkdir(exist_ok=True)
        for name, prompt, k in jobs:
            target = out / "combined" / f"{name}_{k}.png"
            if not target.is_file():
                _save_atomic(side_by_side(Image.open(out / "default" / f"{name}_{k}.png").convert("RGB"),
                                          Image.open(out / "aligned" / f"{name}_{k}.png").convert("RGB"), prompt), target)
    return [json.loads(line) for line in manifest_path.read_text().splitlines() if line.strip()]


def score_outputs(out: Path, records: list[dict], scorer_id: str, dimension: str, seed: int = 0,
                  mode: str = "expected", prompt_style: str = "full") -> dict:
    """Score every generated image on `dimension`; CSV + summary (paired difference, bootstrap CI, win rate) + plot."""
    from .evaluate.scorer import Scorer
    from .data.images import open_image
    from .dims import get_dimension
    scorer = Scorer.load(scorer_id)
    dim = get_dimension(dimension)
    prompt = dim.short_prompt if prompt_style == "short" else dim.prompt   # ask as the scorer was trained
    rows = []
    for r in tqdm(records, desc=f"score {dimension}"):
        s = scorer.score([open_image(out / r["file"])], dim, mode=mode, prompt=prompt)[0]
        rows.append({**r, "score": s})
    return summarise_scores(out, rows, dimension, seed)


def summarise_scores(out: Path, rows: list[dict], dimension: str, seed: int = 0) -> dict:
    import csv

    import numpy as np
    from scipy import stats
    with open(out / "scores.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=["name", "seed", "encoder", "file", "score", "prompt"])
        w.writeheader()
        for r in rows:
            w.writerow({k: r.get(k) for k in w.fieldnames})
    by = {(r["name"], r["seed"], r["encoder"]): r["score"] for r in rows}
    pairs = [(by[(n, s, "default")], by[(n, s, "aligned")]) for (n, s, e) in by
             if e == "default" and (n, s, "aligned") in by and by[(n, s, "default")] is not None
             and by[(n, s, "aligned")] is not None]
    d = np.array([b - a for a, b in pairs])
    summary = {"dimension": dimension, "pairs": len(pairs),
               "unscored": sum(r["score"] is None for r in rows),
               "mean_default": float(np.mean([a for a, _ in pairs])) if pairs else None,
               "mean_aligned": float(np.mean([b for _, b in pairs])) if pairs else None,
               "mean_difference": float(d.mean()) if len(d) else None,
               "difference_ci95": [None, None],
               "win_rate_aligned": float(np.mean(d > 0)) if len(d) else None,
               "tie_rate": float(np.mean(d == 0)) if len(d) else None}
    if len(d) >= 3 and np.ptp(d) > 0:
        ci = stats.bootstrap((d,), np.mean, n_resamples=2000, method="percentile",
                             random_state=np.random.default_rng(seed)).confidence_interval
        summary["difference_ci95"] = [float(ci.low), float(ci.high)]
    write_json(out / "score_summary.json", summary)
    _score_plot(out / "scores.png", pairs, summary)
    return summary


def _score_plot(path: Path, pairs, summary):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    if pairs:
        a, b = zip(*pairs)
        ax.scatter(a, b, s=14, alpha=0.7)
        lo, hi = min(a + b), max(a + b)
        ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    md = summary["mean_difference"]
    ax.set_title(f"{summary['dimension']}: aligned − default = {md:+.3f}, win {summary['win_rate_aligned']:.0%}"
                 if md is not None else summary["dimension"], fontsize=9)
    ax.set_xlabel("default encoder score"), ax.set_ylabel("aligned encoder score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cogip generate", description=__doc__.split("\n")[0])
    p.add_argument("--pipeline", default=os.environ.get("PIPELINE", "Qwen/Qwen-Image"),
                   help="Qwen-Image pipeline path or hub id (default: $PIPELINE or Qwen/Qwen-Image)")
    p.add_argument("--aligned-encoder", default=os.environ.get("ALIGNED"),
                   help="SFT'd Qwen2.5-VL checkpoint, or LoRA adapter folder (default: $ALIGNED)")
    p.add_argument("--aligned-base", help="base model of an adapter (default: recorded in the adapter)")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--prompts", help="JSON list of prompts or name → prompt object")
    src.add_argument("--prompt", help="a single prompt")
    p.add_argument("--out", required=True)
    p.add_argument("--images-per-prompt", type=int, default=1)
    p.add_argument("--seed", type=int, default=55)
    p.add_argument("--height", type=int, default=768), p.add_argument("--width", type=int, default=768)
    p.add_argument("--steps", type=int, default=14)
    p.add_argument("--true-cfg-scale", type=float, default=2.0)
    p.add_argument("--negative-prompt", default=" ", help="default ' ' (diffusers' own default for Qwen-Image)")
    p.add_argument("--dtype", default="bfloat16")
    p.add_argument("--generator-device", default="cpu",
                   help="where the seeded noise is drawn (cpu: the same images from a seed on any device)")
    p.add_argument("--published-settings", action="store_true",
                   help="the published script's: --dtype float16, --negative-prompt '', the noise drawn on the GPU")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--device-map", help="passed to the pipeline's from_pretrained (e.g. balanced)")
    p.add_argument("--no-combined", action="store_true", help="skip the side-by-side images")
    p.add_argument("--score-with", metavar="MODEL", help="score every image with this benchmark model")
    p.add_argument("--trait", help="dimension to score (Aesthetics, Funniness, Emotional_Valence, Memorability)")
    p.add_argument("--score-prompt", choices=("full", "short"), default="full",
                   help="prompt wording the scorer was trained on (short: the synthetic bench's)")
    from .published import GENERATE, translate
    a = p.parse_args(translate(argv, GENERATE, "cogip generate"))   # the published batch_gene_image.py's flags too
    if a.published_settings:
        a.dtype, a.negative_prompt = "float16", ""
        a.generator_device = "cuda" if torch.cuda.is_available() else "cpu"
    if not a.aligned_encoder:
        p.error("needs the aligned encoder: --aligned-encoder or $ALIGNED (the published script hard-codes it)")
    return exit_code("cogip generate", _generate_cli, a)


def _generate_cli(a) -> None:
    from diffusers import QwenImagePipeline
    from diffusers.utils import logging as diffusers_logging
    diffusers_logging.set_verbosity_error()   # single-prompt embeddings have no padding mask, by design
    prompts = read_prompts(a.prompts) if a.prompts else [("0000", a.prompt)]
    if a.score_with and not a.trait:
        raise CogipError("--score-with needs --trait")
    dtype = getattr(torch, a.dtype)
    kwargs = {"device_map": a.device_map} if a.device_map else {}
    try:
        pipe = QwenImagePipeline.from_pretrained(a.pipeline, torch_dtype=dtype, **kwargs)
    except (OSError, ValueError) as e:
        raise CogipError(f"cannot load the Qwen-Image pipeline {a.pipeline}: {str(e).splitlines()[0]}") from None
    if not a.device_map:
        pipe.to(a.device)
    pipe.set_progress_bar_config(disable=True)
    encoder, tokenizer = load_encoder(a.aligned_encoder, a.aligned_base, dtype)
    swap = EncoderSwap(pipe, encoder, tokenizer)
    print(f"encoder swap verified: max |Δ prompt embedding| = {swap.verify():.4g}")
    records = generate(pipe, swap, prompts, Path(a.out), a.seed, a.images_per_prompt, a.height, a.width, a.steps,
                       a.true_cfg_scale, a.negative_prompt, combined=not a.no_combined,
                       generator_device=a.generator_device)
    print(f"{len(records)} images in {a.out}")
    if a.score_with:
        del pipe, swap
        summary = score_outputs(Path(a.out), records, a.score_with, a.trait, prompt_style=a.score_prompt)
        print(json.dumps(summary, indent=2))


if __name__ == "__main__":
    sys.exit(main())
