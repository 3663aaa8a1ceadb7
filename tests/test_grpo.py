import json
import os
import subprocess
from pathlib import Path

import pytest

from cogip.train.grpo import UNPARSEABLE_REWARD, cogip_reward

ROOT = Path(__file__).resolve().parents[1]


def test_reward_values():
    completions = [[{"role": "assistant", "content": "medium 5.000"}], "high 7.0", "<answer>negative -3.000</answer>",
                   "very high 0.9", "no idea", "very high 99"]
    rewards = cogip_reward(completions, score=[6.0, 2.0, 3.0, 0.1, 5.0, 5.0],
                           dimension=["Aesthetics", "Funniness", "Emotional_Valence", "Memorability", "Aesthetics",
                                      "Aesthetics"])
    assert rewards == pytest.approx([0.9, 0.5, 0.0, 0.2, UNPARSEABLE_REWARD, UNPARSEABLE_REWARD])


def test_grpo_runs_on_tiny_qwen(tiny_models, synth_bench, tmp_path):
    env = dict(os.environ, MODEL_ID=str(tiny_models["qwen"]), DATA_PATH=str(synth_bench / "training_grpo.json"),
               IMAGE_FOLDER=str(synth_bench / "cognition/cognition_images"), OUTPUT_DIR=str(tmp_path / "grpo"),
               NUM_GPUS="0", REPORT_TO="none", NUM_GENERATIONS="4", PER_DEVICE_BATCH="4")
    run = subprocess.run(["bash", ROOT / "sft/qwen/finetune_grpo.sh", "--max_steps", "2", "--max_completion_length", "8",
                          "--learning_rate", "1e-4"], env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    state = json.loads((tmp_path / "grpo/checkpoint-2/trainer_state.json").read_text())
    rewards = [h["reward"] for h in state["log_history"] if "reward" in h]
    assert len(rewards) == 2 and all(-1.0 <= float(r) <= 1.0 for r in rewards)
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
