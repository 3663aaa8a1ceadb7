"""What the launchers' shared shell part (scripts/lib.sh) decides before any Python starts."""

import os
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
FOUR_GPUS = "\n".join(f"GPU {i}: NVIDIA H200 (UUID: GPU-{i}aaa)" for i in range(4))
MIG = FOUR_GPUS + "\n  MIG 1g.18gb     Device  0: (UUID: MIG-1bbb)"


def num_gpus(tmp_path, listing: str | None, **env) -> str:
    """NUM_GPUS as lib.sh sets it, with a stand-in nvidia-smi (None: one that fails, as without a driver)
    and a stand-in Python that answers torch's count with 9, so an answer of 9 means torch was asked."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    smi = bin_dir / "nvidia-smi"
    smi.write_text("#!/bin/sh\n" + (f"cat <<'END'\n{listing}\nEND\n" if listing is not None else "exit 9\n"))
    python = bin_dir / "python"
    python.write_text("#!/bin/sh\necho 9\n")
    for f in (smi, python):
        f.chmod(0o755)
    e = {k: v for k, v in os.environ.items() if k not in ("NUM_GPUS", "CUDA_VISIBLE_DEVICES")}
    e.update(PATH=f"{bin_dir}:{os.environ['PATH']}", PYTHON=str(python), **env)
    run = subprocess.run(["bash", "-c", f"set -euo pipefail; source {ROOT}/scripts/lib.sh; echo $NUM_GPUS"],
                         env=e, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr
    return run.stdout.strip()


@pytest.mark.parametrize("visible, expected", [
    (None, "4"), ("2,3", "2"), ("3", "1"), ("", "0"), ("-1", "0"),
    ("1,7,2", "1"), ("0,0,1", "1"), ("1,,2", "1"),   # CUDA stops at the first index it cannot use
])
def test_gpus_counted_from_nvidia_smi_as_cuda_visible_devices_narrows_them(tmp_path, visible, expected):
    env = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    assert num_gpus(tmp_path, FOUR_GPUS, **env) == expected


@pytest.mark.parametrize("listing, env", [
    (None, {}),                                        # no working nvidia-smi
    (MIG, {}),                                         # MIG instances: CUDA's own count
    (FOUR_GPUS, {"CUDA_VISIBLE_DEVICES": "GPU-1aaa"}),   # devices named by UUID
])
def test_torch_is_asked_where_nvidia_smi_cannot_tell(tmp_path, listing, env):
    assert num_gpus(tmp_path, listing, **env) == "9"


def test_a_given_num_gpus_is_kept(tmp_path):
    assert num_gpus(tmp_path, FOUR_GPUS, NUM_GPUS="2") == "2"


@pytest.mark.parametrize("script, names", [
    ("evaluation/qwen/cog_test.sh", ["MODEL_ID", "TEST_DIR", "IMAGE_ROOT", "SAMPLE_N", "MODE", "docs/evaluate.md"]),
    ("evaluation/llama/cog_test.sh", ["MODEL_ID", "--accel off", "docs/evaluate.md"]),
    ("evaluation/cog_test.sh", ["any vision-language model", "MODEL_ID", "--backend openai --base-url URL --model NAME",
                                "--trust-remote-code", "docs/serving.md", "docs/evaluate.md"]),
    ("sft/gemma/finetune_lora.sh", ["MODEL_ID", "DATA_PATH", "IMAGE_ROOT", "OUT", "NUM_GPUS", "--soft-kernel",
                                    "docs/train.md"]),
    ("qwen-image/run_batch.sh", ["ALIGNED", "PIPELINE", "TRAITS", "docs/generate.md"]),
])
def test_launcher_help_is_short_and_names_its_variables(script, names):
    """--help: the launcher's variables, its main options and a link to the reference, in one screen, and
    nothing needed first (run_batch.sh's ALIGNED included)."""
    env = {k: v for k, v in os.environ.items() if k not in ("ALIGNED", "MODEL_ID")}
    run = subprocess.run(["bash", ROOT / script, "--help"], capture_output=True, text=True, env=env, cwd=ROOT)
    assert run.returncode == 0 and run.stderr == "", run.stderr
    lines = run.stdout.splitlines()
    assert lines[0].startswith("usage:") and len(lines) < 40
    for name in names:
        assert name in run.stdout, name


def test_cogip_subcommands_exist():
    """The entry points the launchers call are real `cogip` subcommands, each with its own usage line."""
    import sys
    for command in ("evaluate", "train", "generate", "inspect"):
        run = subprocess.run([sys.executable, "-m", "cogip", command, "--help"], capture_output=True, text=True,
                             cwd=ROOT)
        assert run.returncode == 0, run.stderr[-500:]
        assert f"usage: cogip {command}" in run.stdout
    listing = subprocess.run([sys.executable, "-m", "cogip", "--help"], capture_output=True, text=True, cwd=ROOT)
    assert all(c in listing.stdout for c in ("evaluate", "train", "generate", "inspect", "data", "models"))
