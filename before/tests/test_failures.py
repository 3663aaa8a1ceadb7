"""The failures a user hits first, through the launchers: one line naming the culprit, exit 2, no
traceback, nothing written, and before any weights load where the files say what is wrong."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def launch(script: str, *args, **env) -> subprocess.CompletedProcess:
    e = {k: v for k, v in os.environ.items() if k not in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE")}
    e.update(NUM_GPUS="0", REPORT_TO="none", **{k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", str(ROOT / script), *map(str, args)], env=e, capture_output=True, text=True,
                          timeout=300)


def one_error_line(run: subprocess.CompletedProcess, *expected: str) -> str:
    assert run.returncode == 2, run.stderr[-3000:]
    assert "Traceback" not in run.stderr
    errors = [line for line in run.stderr.splitlines() if "error:" in line]
    assert len(errors) == 1, run.stderr[-3000:]
    for text in expected:
        assert text in errors[0], errors[0]
    return errors[0]


def nothing_in(folder: Path) -> bool:
    return not folder.exists() or not [p for p in folder.rglob("*") if p.is_file()]


def eval_env(bench: Path, model, out: Path, **extra) -> dict:
    return {**dict(MODEL_ID=model, TEST_DIR=bench / "test_msg_file", IMAGE_ROOT=bench / "cognition/cognition_images",
                   OUT=out, SAMPLE_N=0, MIN_PIXELS=7056, MAX_PIXELS=7056), **extra}


def sft_env(bench: Path, model, out: Path, **extra) -> dict:
    return dict(MODEL_ID=model, DATA_PATH=bench / "cognition_training.json", OUTPUT_DIR=out,
                IMAGE_FOLDER=bench / "cognition/cognition_images", GLOBAL_BATCH=2, PER_DEVICE_BATCH=2,
                MIN_PIXELS=7056, MAX_PIXELS=7056, **extra)


@pytest.fixture(scope="module")
def unloadable(tiny_models, tmp_path_factory) -> dict[str, Path]:
    """Each tiny family's checkpoint with its weights replaced by garbage: any load of them fails, so a
    clean error from these proves the cause was found before the weights load."""
    out = {}
    for family, src in tiny_models.items():
        dst = tmp_path_factory.mktemp(f"unloadable_{family}")
        shutil.copytree(src, dst, dirs_exist_ok=True)
        (dst / "model.safetensors").write_bytes(b"not weights")
        out[family] = dst
    return out


def fake_adapter(folder: Path, base: Path) -> Path:
    folder.mkdir(parents=True)
    (folder / "adapter_config.json").write_text(json.dumps({"base_model_name_or_path": str(base),
                                                            "peft_type": "LORA"}))
    return folder


@pytest.mark.parametrize("script, model, family", [
    ("evaluation/llama/cog_test.sh", "qwen", "llama"),
    ("evaluation/qwen/cog_test.sh", "gemma", "qwen"),
    ("sft/qwen/finetune_lora.sh", "gemma", "qwen"),
    ("sft/gemma/finetune_lora.sh", "llama", "gemma"),
])
def test_a_checkpoint_of_another_family(unloadable, synth_bench, tmp_path, script, model, family):
    out = tmp_path / "out"
    env = (eval_env if script.startswith("eval") else sft_env)(synth_bench, unloadable[model], out)
    one_error_line(launch(script, **env), str(unloadable[model]), f"is a {model} checkpoint", f"not {family}",
                   f"use the {model} scripts")
    assert nothing_in(out)


def test_an_adapter_of_another_family(unloadable, synth_bench, tmp_path):
    adapter = fake_adapter(tmp_path / "adapter", unloadable["qwen"])
    out = tmp_path / "out"
    one_error_line(launch("evaluation/llama/cog_test.sh", **eval_env(synth_bench, adapter, out)),
                   "an adapter of", "a qwen model, not llama")
    assert nothing_in(out)
    # and a base of another family than the adapter's
    recorded = fake_adapter(tmp_path / "recorded", unloadable["llama"])
    one_error_line(launch("evaluation/llama/cog_test.sh", **eval_env(synth_bench, recorded, out,
                                                                      BASE_MODEL=unloadable["gemma"])),
                   "is a gemma checkpoint", "not llama")
    assert nothing_in(out)


def test_merge_of_another_family(unloadable, tmp_path):
    adapter = fake_adapter(tmp_path / "adapter", unloadable["gemma"])
    one_error_line(launch("sft/qwen/merge_lora.sh", adapter, tmp_path / "merged"), "a gemma model, not qwen")
    assert not (tmp_path / "merged").exists()
    one_error_line(launch("sft/qwen/merge_lora.sh", unloadable["qwen"], tmp_path / "merged"),
                   "not a LoRA adapter folder")


@pytest.mark.parametrize("script", ["evaluation/gemma/cog_test.sh", "sft/gemma/finetune_lora.sh"])
def test_a_local_model_folder_that_does_not_exist(synth_bench, tmp_path, script):
    missing = tmp_path / "checkpoints" / "gemma-sft"
    env = (eval_env if script.startswith("eval") else sft_env)(synth_bench, missing, tmp_path / "out")
    one_error_line(launch(script, **env), f"{missing}: no such folder")
    assert nothing_in(tmp_path / "out")


@pytest.mark.parametrize("offline", [False, True])
def test_a_hub_id_without_network_fails_in_seconds(synth_bench, tmp_path, offline):
    # the hub endpoint on a closed local port stands for no network; an empty cache holds nothing
    env = eval_env(synth_bench, "Qwen/Qwen2.5-VL-7B-Instruct", tmp_path / "out", HF_HOME=tmp_path / "hf",
                   HF_ENDPOINT="http://127.0.0.1:9")
    if offline:
        env["HF_HUB_OFFLINE"] = "1"
    started = time.monotonic()
    line = one_error_line(launch("evaluation/qwen/cog_test.sh", **env), "Qwen/Qwen2.5-VL-7B-Instruct")
    assert time.monotonic() - started < 60   # transformers alone retried for ~150 s
    assert ("HF_HUB_OFFLINE is set" if offline else "cannot reach the Hugging Face hub") in line
    assert nothing_in(tmp_path / "out")


def test_an_empty_test_folder(tiny_models, synth_bench, tmp_path):
    empty = tmp_path / "bench"
    (empty / "test_msg_file").mkdir(parents=True)
    env = eval_env(synth_bench, tiny_models["qwen"], tmp_path / "out", TEST_DIR=empty / "test_msg_file")
    one_error_line(launch("evaluation/qwen/cog_test.sh", **env), "test_msg_file: no dimension folders")
    assert nothing_in(tmp_path / "out")


def test_validate_names_an_unknown_dimension_folder(synth_bench, tmp_path):
    from cogip.cli import main
    bench = tmp_path / "bench"
    shutil.copytree(synth_bench, bench)
    assert main(["data", "validate", str(bench), "--no-decode"]) == 0
    (bench / "test_msg_file" / "Beauty").mkdir()
    run = subprocess.run([str(ROOT / ".venv/bin/cogip") if (ROOT / ".venv/bin/cogip").exists() else "cogip",
                          "data", "validate", str(bench), "--no-decode"], capture_output=True, text=True)
    assert run.returncode == 1
    assert f"{bench / 'test_msg_file' / 'Beauty'}: unknown dimension folder 'Beauty'" in run.stderr


@pytest.mark.parametrize("breakage, message", [
    ("missing", "cognition_training.json: file not found"),
    ("malformed", "cognition_training.json: malformed JSON"),
])
def test_bad_training_data_before_the_model_loads(unloadable, synth_bench, tmp_path, breakage, message):
    bench = tmp_path / "bench"
    shutil.copytree(synth_bench, bench)
    data = bench / "cognition_training.json"
    if breakage == "missing":
        data.unlink()
    else:
        data.write_text(data.read_text()[:-20])
    out = tmp_path / "out"
    one_error_line(launch("sft/llama/finetune_lora.sh", **sft_env(bench, unloadable["llama"], out)), message)
    assert nothing_in(out)


@pytest.mark.parametrize("flags, message", [
    (["--tune_mode", "partial"], "--tune_mode must be one of lora, full, frozen-llm, not 'partial'"),
    (["--tune_mode", "frozen-llm", "--train_vision", "False", "--train_merger", "False"], "trains nothing"),
    (["--soft_kernel", "wide"], "unknown soft-label kernel 'wide'"),
])
def test_bad_training_options_before_the_model_loads(unloadable, synth_bench, tmp_path, flags, message):
    out = tmp_path / "out"
    one_error_line(launch("sft/qwen/finetune_lora.sh", *flags, **sft_env(synth_bench, unloadable["qwen"], out)),
                   message)
    assert nothing_in(out)
