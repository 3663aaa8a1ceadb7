"""The published command lines (Follen-cry/MLLM_Cognition_Alignment's scripts), run unchanged against this
project's entry points on tiny models: only paths are replaced. On this CPU the training command's GPU
settings (--deepspeed, --tf32, --use_liger) are dropped with a note."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def sh(args, **env) -> subprocess.CompletedProcess:
    e = dict(os.environ, NUM_GPUS="0", **{k: str(v) for k, v in env.items()})
    run = subprocess.run([str(a) for a in args], env=e, capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    return run


def published_finetune(model, data, images, out):
    """sft/qwen/scripts/finetune_lora.sh's train_sft.py flags, as published."""
    return ["--deepspeed", "scripts/zero3_offload.json", "--use_liger", "True", "--lora_enable", "True", "--use_dora", "False",
            "--lora_namespan_exclude", "['lm_head', 'embed_tokens']", "--lora_rank", "64", "--lora_alpha", "64",
            "--lora_dropout", "0.05", "--num_lora_modules", "-1", "--model_id", model, "--data_path", data,
            "--image_folder", images, "--remove_unused_columns", "False", "--freeze_vision_tower", "False",
            "--freeze_llm", "True", "--freeze_merger", "False", "--bf16", "True", "--fp16", "False",
            "--disable_flash_attn2", "False", "--output_dir", out, "--num_train_epochs", "1",
            "--per_device_train_batch_size", "4", "--gradient_accumulation_steps", "8",
            "--image_min_pixels", str(256 * 28 * 28), "--image_max_pixels", str(1280 * 28 * 28),
            "--learning_rate", "3e-5", "--merger_lr", "1e-5", "--vision_lr", "2e-6", "--weight_decay", "0.1",
            "--warmup_ratio", "0.03", "--lr_scheduler_type", "cosine", "--logging_steps", "1", "--tf32", "True",
            "--gradient_checkpointing", "True", "--report_to", "tensorboard", "--lazy_preprocess", "True",
            "--save_strategy", "no", "--save_only_model", "False", "--dataloader_num_workers", "4",
            "--soft_label_enable", "True", "--soft_label_dist", "triangular", "--soft_label_eta", "0.15",
            "--soft_label_lambda", "2.0"]


def test_published_qwen_commands_end_to_end(tiny_models, synth_bench, tmp_path):
    from cogip.models.tiny import build_tiny_qwen_image
    images = synth_bench / "cognition/cognition_images"
    adapter, merged = tmp_path / "lora", tmp_path / "merged"
    run = sh(["bash", "sft/qwen/finetune_lora.sh", *published_finetune(tiny_models["qwen"],
                                                                      synth_bench / "cognition_training.json",
                                                                      images, adapter)])
    info = json.loads((adapter / "cogip_train.json").read_text())
    assert info["tune_mode"] == "lora" and info["loss"]["soft_kernel"] == "triangular"
    assert info["model"]["lora_r"] == 64 and info["model"]["train_vision"] and info["model"]["train_merger"]
    assert info["model"]["min_pixels"] == 256 * 28 * 28 and info["global_step"] == 2   # 64 items, 32 a step
    assert "published flag --lazy_preprocess dropped" in run.stderr
    assert "published flag --deepspeed" in run.stderr and "dropped: no GPU here" in run.stderr
    # sft/qwen/scripts/merge_lora.sh
    sh(["bash", "sft/qwen/merge_lora.sh", "--model-path", adapter, "--model-base", tiny_models["qwen"],
        "--save-model-path", merged, "--safe-serialization"])
    assert (merged / "model.safetensors").is_file()
    # evaluation/qwen/cog_test.sh
    out = tmp_path / "eval"
    sh(["bash", "evaluation/qwen/cog_test.sh", "--model-id", merged, "--base-dir", synth_bench / "test_msg_file",
        "--img-base", images, "--out-dir", out, "--sample-n", "120", "--seed", "19"], MIN_PIXELS=7056, MAX_PIXELS=7056)
    summary = json.loads((out / "summary.json").read_text())
    assert {d: m["n"] for d, m in summary.items()} == dict.fromkeys(summary, 8) and len(summary) == 4
    assert json.loads((out / "sample_indices_Funniness.json").read_text()) == list(range(8))
    # qwen-image/run_batch.sh's batch_gene_image.py call (the published script hard-codes the pipeline and the
    # aligned encoder: here they come from PIPELINE and ALIGNED)
    pipeline = build_tiny_qwen_image(tmp_path / "pipeline", tiny_models["qwen"])
    prompts = tmp_path / "funniness.json"
    prompts.write_text(json.dumps(["a cat in a hat", "a serious meeting"]))
    sh([sys.executable, "qwen-image/batch_gene_image.py", "--prompts_json", prompts, "--out_dir",
        tmp_path / "img/funniness", "--num_images", "1", "--height", "32", "--width", "32", "--steps", "2",
        "--dtype", "float32"], PIPELINE=pipeline, ALIGNED=merged)
    records = (tmp_path / "img/funniness/manifest.jsonl").read_text().splitlines()
    assert len(records) == 4   # two prompts, default and aligned encoder


def test_published_gemma_lora_path(tiny_models, synth_bench, tmp_path):
    images = synth_bench / "cognition/cognition_images"
    adapter = tmp_path / "lora"
    sh(["bash", "sft/gemma/finetune_lora.sh", "--max_steps", "1", "--lora_r", "8"], MODEL_ID=tiny_models["gemma"],
       DATA_PATH=synth_bench / "cognition_training.json", IMAGE_FOLDER=images, OUTPUT_DIR=adapter, GLOBAL_BATCH=4,
       PER_DEVICE_BATCH=4, REPORT_TO="none")
    out = tmp_path / "sft"   # evaluation/gemma/cog_test.sh's second call; its --model-id is the default base
    sh(["bash", "evaluation/gemma/cog_test.sh", "--lora-path", adapter, "--base-dir", synth_bench / "test_msg_file",
        "--img-base", images, "--out-dir", out, "--sample-n", "120"], MODEL_ID=tiny_models["gemma"])
    run = json.loads((out / "Aesthetics/run.json").read_text())
    assert run["model_id"] == str(adapter) and run["base_model"] == str(tiny_models["gemma"])


def test_published_flags_without_an_equivalent_say_what_to_use(tiny_models, synth_bench, tmp_path):
    e = dict(os.environ, NUM_GPUS="0", MODEL_ID=str(tiny_models["qwen"]), OUTPUT_DIR=str(tmp_path / "o"),
             DATA_PATH=str(synth_bench / "cognition_training.json"),
             IMAGE_FOLDER=str(synth_bench / "cognition/cognition_images"))
    for flags, message in ((["--bits", "4"], "--bits 4: quantized training has no equivalent here; use --bf16"),
                           (["--lora_enable", "True", "--freeze_llm", "False"], "needs --freeze_llm True"),
                           (["--lora_namespan_exclude", "['mlp']"], "other exclusions have no equivalent")):
        run = subprocess.run(["bash", ROOT / "sft/qwen/finetune_lora.sh", *flags], env=e, capture_output=True,
                             text=True)
        assert run.returncode == 2 and message in run.stderr and "Traceback" not in run.stderr, run.stderr[-2000:]
        assert not (tmp_path / "o").exists()
