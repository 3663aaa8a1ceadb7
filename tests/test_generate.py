"""Qwen-Image with a tiny offline pipeline: same encoder + seed → same image; aligned ≠ default;
batch = alone; resume; the swap check; scoring summary on known inputs; bad input."""

import json
import os
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from PIL import Image

from cogip.errors import CogipError
from cogip.generate import EncoderSwap, generate, load_encoder, read_prompts, summarise_scores, template_start
from cogip.models.tiny import build_tiny_qwen_image
from cogip.train.sft import run as train

ROOT = Path(__file__).resolve().parents[1]
SMALL = dict(height=32, width=32, steps=2)


@pytest.fixture(scope="module")
def setup(tiny_models, synth_bench, tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen_image")
    pipeline = build_tiny_qwen_image(root / "pipeline", tiny_models["qwen"])
    aligned = root / "aligned"
    train(["--model_id", str(tiny_models["qwen"]), "--data_path", str(synth_bench / "cognition_training.json"),
           "--image_folder", str(synth_bench / "cognition/cognition_images"), "--output_dir", str(aligned),
           "--tune_mode", "full", "--max_steps", "3", "--per_device_train_batch_size", "4", "--learning_rate", "1e-2",
           "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True"])
    return pipeline, aligned


def _pipe(pipeline, aligned):
    from diffusers import QwenImagePipeline
    pipe = QwenImagePipeline.from_pretrained(pipeline, torch_dtype=torch.float32)
    pipe.set_progress_bar_config(disable=True)
    encoder, tok = load_encoder(str(aligned), dtype=torch.float32)
    return pipe, EncoderSwap(pipe, encoder, tok)


def _pixels(path):
    return np.asarray(Image.open(path))


PROMPTS = [("a", "a red apple on a table"), ("b", "a funny cat wearing a tall hat, very long prompt here"),
           ("c", "sea")]


def test_same_seed_same_image_aligned_differs_batch_equals_alone(setup, tmp_path):
    pipe, swap = _pipe(*setup)
    assert swap.verify() > 1e-6
    rec = generate(pipe, swap, PROMPTS, tmp_path / "batch", **SMALL)
    assert len(rec) == 6 and {r["encoder"] for r in rec} == {"default", "aligned"}
    generate(pipe, swap, PROMPTS, tmp_path / "again", **SMALL)
    generate(pipe, swap, [PROMPTS[1]], tmp_path / "alone", **SMALL)
    for name in ("a", "b", "c"):
        d, a = _pixels(tmp_path / f"batch/default/{name}_0.png"), _pixels(tmp_path / f"batch/aligned/{name}_0.png")
        assert np.array_equal(d, _pixels(tmp_path / f"again/default/{name}_0.png"))      # same encoder + seed
        assert np.array_equal(a, _pixels(tmp_path / f"again/aligned/{name}_0.png"))
        assert not np.array_equal(d, a)                                                   # aligned ≠ default
    for enc in ("default", "aligned"):                                                    # batch == alone
        assert np.array_equal(_pixels(tmp_path / f"batch/{enc}/b_0.png"), _pixels(tmp_path / f"alone/{enc}/b_0.png"))
    combined = Image.open(tmp_path / "batch/combined/b_0.png")
    # the two 32-px images enlarged to 256 px side by side (8 px apart), labels above, the prompt below
    assert combined.width == 2 * 256 + 8 and combined.height > 256


def test_resume_regenerates_only_missing(setup, tmp_path):
    pipe, swap = _pipe(*setup)
    generate(pipe, swap, PROMPTS, tmp_path, **SMALL)
    keep = tmp_path / "aligned/a_0.png"
    before, stamp = _pixels(tmp_path / "aligned/c_0.png"), keep.stat().st_mtime_ns
    (tmp_path / "aligned/c_0.png").unlink()
    calls = []
    original = pipe.__class__.__call__
    pipe.__class__.__call__ = lambda self, *a, **k: calls.append(1) or original(self, *a, **k)
    try:
        rec = generate(pipe, swap, PROMPTS, tmp_path, **SMALL)
    finally:
        pipe.__class__.__call__ = original
    assert len(calls) == 1 and keep.stat().st_mtime_ns == stamp
    assert np.array_equal(before, _pixels(tmp_path / "aligned/c_0.png"))
    assert len({(r["encoder"], r["file"]) for r in rec}) == 6


def test_swap_that_changes_nothing_is_an_error(setup, tiny_models):
    pipe, _ = _pipe(*setup)
    encoder, tok = load_encoder(str(tiny_models["qwen"]), dtype=torch.float32)   # the default encoder again
    with pytest.raises(CogipError, match="same hidden states"):
        EncoderSwap(pipe, encoder, tok).verify()


def test_hidden_size_must_fit(setup):
    encoder, tok = load_encoder(str(setup[1]), dtype=torch.float32)
    fake = SimpleNamespace(transformer=SimpleNamespace(config=SimpleNamespace(joint_attention_dim=3584)),
                           text_encoder=None, tokenizer=None)
    with pytest.raises(CogipError, match="hidden size 64 does not fit the pipeline"):
        EncoderSwap(fake, encoder, tok)


def test_template_start_counts_prefix_tokens(tiny_models):
    from cogip.models.families import FAMILIES
    tok = FAMILIES["qwen"].load_processor(tiny_models["qwen"]).tokenizer
    template = "<|im_start|>system\nDescribe the image.<|im_end|>\n<|im_start|>user\n{}<|im_end|>\n"
    n = template_start(tok, template)
    ids = tok(template.format("hello world"))["input_ids"]
    assert tok.decode(ids[n:]).startswith("hello world")


def test_score_summary_on_known_inputs(tmp_path):
    rows = []
    for name, (d, a) in zip("wxyz", [(1.0, 2.0), (2.0, 2.0), (3.0, 5.0), (4.0, 3.0)]):
        rows += [{"name": name, "seed": 55, "encoder": "default", "file": f"default/{name}_0.png", "score": d},
                 {"name": name, "seed": 55, "encoder": "aligned", "file": f"aligned/{name}_0.png", "score": a}]
    s = summarise_scores(tmp_path, rows, "Aesthetics")
    assert s["pairs"] == 4 and s["mean_default"] == 2.5 and s["mean_aligned"] == 3.0
    assert s["mean_difference"] == pytest.approx(0.5) and s["win_rate_aligned"] == 0.5 and s["tie_rate"] == 0.25
    lo, hi = s["difference_ci95"]
    assert -1.0 <= lo <= 0.5 <= hi <= 2.0
    assert (tmp_path / "scores.csv").read_text().count("\n") == 9 and (tmp_path / "scores.png").is_file()


def test_prompt_files(tmp_path):
    (tmp_path / "d.json").write_text('{"sky": "blue sky", "sea": "green sea"}')
    assert read_prompts(tmp_path / "d.json") == [("sky", "blue sky"), ("sea", "green sea")]
    assert read_prompts(ROOT / "qwen-image/prompts/funniness.json")[0][0] == "0000"
    (tmp_path / "e.json").write_text("[]")
    with pytest.raises(CogipError, match="no prompts"):
        read_prompts(tmp_path / "e.json")
    (tmp_path / "bad.json").write_text('["ok", 3]')
    with pytest.raises(CogipError, match="item 0001: prompt must be a non-empty string"):
        read_prompts(tmp_path / "bad.json")


def test_run_batch_end_to_end_with_scoring(setup, tmp_path):
    pipeline, aligned = setup
    prompts = tmp_path / "prompts"
    prompts.mkdir()
    (prompts / "aesthetics.json").write_text(json.dumps(["a calm lake", "a messy room", "a red door"]))
    env = dict(os.environ, PIPELINE=str(pipeline), ALIGNED=str(aligned), OUT=str(tmp_path / "out"),
               TRAITS="aesthetics", PROMPT_DIR=str(prompts), SIZE="32", STEPS="2", DTYPE="float32",
               SCORE_WITH=str(aligned))
    run = subprocess.run(["bash", ROOT / "qwen-image/run_batch.sh", "--device", "cpu"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    out = tmp_path / "out/aesthetics"
    summary = json.loads((out / "score_summary.json").read_text())
    assert summary["dimension"] == "Aesthetics" and summary["pairs"] + summary["unscored"] // 2 == 3
    assert len((out / "manifest.jsonl").read_text().splitlines()) == 6
    (prompts / "aesthetics.json").write_text("[]")
    run = subprocess.run(["bash", ROOT / "qwen-image/run_batch.sh", "--device", "cpu"], env=env, capture_output=True,
                         text=True)
    assert run.returncode == 2 and "no prompts" in run.stderr and "Traceback" not in run.stderr


def test_adapter_as_aligned_encoder(tiny_models, synth_bench, tmp_path):
    from cogip.models.families import FAMILIES
    adapter = tmp_path / "adapter"
    train(["--model_id", str(tiny_models["qwen"]), "--data_path", str(synth_bench / "cognition_training.json"),
           "--image_folder", str(synth_bench / "cognition/cognition_images"), "--output_dir", str(adapter),
           "--max_steps", "2", "--per_device_train_batch_size", "4", "--learning_rate", "5e-2",
           "--save_strategy", "no", "--report_to", "none", "--use_cpu", "True"])
    (adapter / "tokenizer_config.json").unlink()            # the tokenizer then comes from the recorded base
    encoder, tok = load_encoder(str(adapter), dtype=torch.float32)
    assert not hasattr(encoder, "peft_config")              # merged into a plain model
    base = FAMILIES["qwen"].load_model(tiny_models["qwen"])
    assert any(not torch.equal(a, b) for a, b in zip(encoder.state_dict().values(), base.state_dict().values()))
    assert tok("a red apple")["input_ids"] == FAMILIES["qwen"].load_processor(tiny_models["qwen"]).tokenizer(
        "a red apple")["input_ids"]
