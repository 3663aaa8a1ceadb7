import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cogip.train.grpo import UNPARSEABLE_REWARD, published_reward, range_reward

ROOT = Path(__file__).resolve().parents[1]


def test_per_dimension_range_reward_values():
    completions = [[{"role": "assistant", "content": "medium 5.000"}], "high 7.0", "<answer>negative -3.000</answer>",
                   "very high 0.9", "no idea", "very high 99"]
    rewards = range_reward(completions, score=[6.0, 2.0, 3.0, 0.1, 5.0, 5.0],
                           dimension=["Aesthetics", "Funniness", "Emotional_Valence", "Memorability", "Aesthetics",
                                      "Aesthetics"])
    assert rewards == pytest.approx([0.9, 0.5, 0.0, 0.2, UNPARSEABLE_REWARD, UNPARSEABLE_REWARD])


def test_published_reward_values():
    """As the published code computes it: the last number (of the <answer> body where there is one), range 10
    for every dimension (its per-dimension lookup never gets the metadata it needs), -0.5 without a number."""
    completions = ["<answer>medium 5.000</answer>", "high 7 or 8.5", "<answer>negative -3.000</answer> 2.0",
                   "very high 0.9", "no idea", "very high 99"]
    targets = ["medium 6.000", "<answer>low 2.000</answer>", "positive 3.000", "low 0.100", "low 4.000", "low 5.0"]
    rewards = published_reward(completions, answer=targets)
    assert rewards == pytest.approx([0.9, 0.35, 0.4, 0.92, UNPARSEABLE_REWARD, -1.0])


def grpo_env(tiny_models, synth_bench, out, **extra):
    return dict(os.environ, MODEL_ID=str(tiny_models["qwen"]), DATA_PATH=str(synth_bench / "cognition_training.json"),
                IMAGE_FOLDER=str(synth_bench / "cognition/cognition_images"), OUTPUT_DIR=str(out), NUM_GPUS="0",
                MIN_PIXELS="7056", MAX_PIXELS="7056", **extra)


def test_grpo_launcher_runs_the_published_recipe(tiny_models, synth_bench, tmp_path):
    import torch
    from safetensors.torch import load_file

    from cogip.models.families import FAMILIES
    run = subprocess.run(["bash", ROOT / "sft/qwen/finetune_grpo.sh", "--max_steps", "2", "--max_completion_length",
                          "8", "--learning_rate", "1e-3", "--vision_lr", "1e-3", "--merger_lr", "1e-3"],
                         env=grpo_env(tiny_models, synth_bench, tmp_path / "grpo"), capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((tmp_path / "grpo/checkpoint-2/trainer_state.json").read_text())
    rewards = [h["reward"] for h in state["log_history"] if "reward" in h]
    assert len(rewards) == 2 and all(-1.0 <= float(r) <= 1.0 for r in rewards)
    args = json.loads(subprocess.run([sys.executable, "-c", "import torch, json; a = torch.load('"
                                      f"{tmp_path}/grpo/checkpoint-2/training_args.bin', weights_only=False); "
                                      "print(json.dumps({k: getattr(a, k) for k in ('num_generations', "
                                      "'per_device_train_batch_size', 'gradient_accumulation_steps', 'beta', "
                                      "'temperature', 'top_k', 'loss_type')}))"],
                                     capture_output=True, text=True).stdout)
    assert args == {"num_generations": 2, "per_device_train_batch_size": 1, "gradient_accumulation_steps": 4,
                    "beta": 0.04, "temperature": 0.9, "top_k": 50, "loss_type": "bnpo"}
    fam = FAMILIES["qwen"]
    before, after = load_file(tiny_models["qwen"] / "model.safetensors"), load_file(tmp_path / "grpo/model.safetensors")
    changed = {fam.param_group(k) for k in before if not torch.equal(before[k], after[k].to(before[k].dtype))}
    assert changed == {"vision", "projector"}   # the language model frozen, not adapted
    assert not (tmp_path / "grpo/adapter_model.safetensors").exists()


def test_grpo_lora_variant(tiny_models, synth_bench, tmp_path):
    env = grpo_env(tiny_models, synth_bench, tmp_path / "grpo", PER_DEVICE_BATCH="4")
    run = subprocess.run(["bash", ROOT / "sft/qwen/finetune_grpo.sh", "--max_steps", "1", "--max_completion_length", "8",
                          "--tune_mode", "lora", "--num_generations", "4", "--reward", "per-dimension-range"],
                         env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (tmp_path / "grpo/adapter_model.safetensors").is_file()


def test_grpo_full_tune_trains_fp32_master_weights(tiny_models, synth_bench, tmp_path):
    """--tune_mode full without DeepSpeed on a bf16 checkpoint: the trained weights are float32 (as in SFT),
    else Adam's 1e-6 steps would vanish in bf16 weights."""
    import shutil

    import torch

    from cogip.models.families import FAMILIES
    from cogip.train.grpo import run as grpo
    fam = FAMILIES["qwen"]
    bf16 = tmp_path / "bf16"
    shutil.copytree(tiny_models["qwen"], bf16)
    fam.load_model(tiny_models["qwen"], dtype=torch.bfloat16).save_pretrained(bf16)
    assert {p.dtype for p in fam.load_model(bf16).parameters()} == {torch.bfloat16}   # what "auto" loads
    trainer = grpo(["--model_id", str(bf16), "--family", "qwen", "--tune_mode", "full",
                    "--data_path", str(synth_bench / "training_grpo.json"),
                    "--image_folder", str(synth_bench / "cognition/cognition_images"),
                    "--output_dir", str(tmp_path / "out"), "--learning_rate", "1e-6", "--num_generations", "4",
                    "--max_completion_length", "8", "--per_device_train_batch_size", "4", "--max_steps", "1",
                    "--report_to", "none", "--use_cpu", "True", "--save_strategy", "no"])
    trained = [p for p in trainer.model.parameters() if p.requires_grad]
    assert trained and {p.dtype for p in trained} == {torch.float32}
    assert trainer.state.global_step == 1
