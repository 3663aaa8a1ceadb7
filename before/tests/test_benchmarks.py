"""CPU-sized runs of the benchmark scripts: that they run and report (speed is measured on GPUs,
see docs/benchmarks.md)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("script,report", [("loss_bench.py", "loss.json"), ("eval_bench.py", "eval_bench.json"),
                                           ("train_bench.py", "train_bench_qwen.json"),
                                           ("mlp_pad_probe.py", "mlp_pad_probe.json")])
def test_benchmark_smoke(tmp_path, script, report):
    args = ["--out", str(tmp_path / report)] if script == "loss_bench.py" else ["--out", str(tmp_path)]
    if script == "eval_bench.py":
        args += ["--variants", "base", "pipe2+workers2+prefetch1", "base"]
    if script == "train_bench.py":
        kept = "ours:ckpt=language:keep=attention:sdpa=flash"
        args += ["--variants", "published", "ours-loss", "ours", kept, "--profile", kept, "--diagnose", "ours"]
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / script, "--cpu-smoke", *args], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / report).read_text())
    if script == "loss_bench.py":
        row = data["rows"][0]
        assert row["ours"]["ms"] > 0 and row["published"]["ms"] > 0 and row["plain_ce"]["ms"] > 0
    elif script == "mlp_pad_probe.py":   # six variants; zero padding changes no value (float32 here)
        variants = {k: v for k, v in data.items() if isinstance(v, dict)}
        assert len(variants) == 6 and all(v["ms_per_call"] > 0 for v in variants.values())
        assert max(v["max_abs_diff"] for v in variants.values()) < 1e-5
    elif script == "eval_bench.py":
        assert data["published_img_s"] > 0 and data["generate_bs4_img_s"] > 0 and data["expected_bs4_img_s"] > 0
        variant = "pipe2+workers2+prefetch1"
        assert data[f"{variant}_generate_bs4_img_s"] > 0 and data[f"{variant}_expected_bs4_img_s"] > 0
        loop = data[f"{variant}_expected_bs4_loop"]
        assert loop["workers_started_s"] > 0   # forked two loader workers
        assert loop["loader"] == {"workers": 2, "prefetch": 1, "pin_memory": False, "host_register": False}
        assert data["base_run2_generate_bs4_img_s"] > 0 and data["generate_bs4_img_s"] > 0   # a repeat: rows of its own
    else:
        assert all(data[v]["samples_s"] > 0 for v in ("published", "ours-loss", "ours", kept))
        profile = (tmp_path / "profile_qwen_ours_ckpt-language_keep-attention_sdpa-flash.txt").read_text()
        assert profile.startswith("timeline: ") and "aten::mm" in profile
        diagnosis = json.loads((tmp_path / "diagnose_qwen_ours.json").read_text())
        assert diagnosis["timeline"]["language forward"]["calls"] > 1 and diagnosis["syncs"] == {}   # no CUDA here
        assert data["ours"]["first_loss"] == pytest.approx(data["ours-loss"]["first_loss"], rel=1e-5)


def test_eval_bench_mixed_sizes_smoke(tmp_path):
    """Images of varied sizes through compiled vision blocks with batches in flight: it runs, and the
    images really differ in visual tokens."""
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "eval_bench.py", "--cpu-smoke", "--out", str(tmp_path),
                          "--mixed-sizes", "--variants", "compile+pipe2"], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "eval_bench.json").read_text())
    tokens = data["visual_tokens_first64"]
    assert data["mixed_sizes"] and tokens["min"] < tokens["mean"] < tokens["max"]
    assert data["compile+pipe2_generate_bs4_img_s"] > 0 and data["compile+pipe2_expected_bs4_img_s"] > 0


@pytest.mark.parametrize("dynamic", [False, True])
def test_compiled_shapes_smoke(tmp_path, dynamic):
    """compiled_shapes.py on the CPU (tiny Qwen): a row per batch of a new shape, uncompiled and compiled, and
    the loop's stream both ways; the compiled parts trace while warming up and not for shapes already run.
    The vision blocks recompile for the second size, unless compiled dynamic from the first (--dynamic)."""
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "compiled_shapes.py", "--out", str(tmp_path),
                          "--batches", "4", "--warm", "2", *(["--dynamic"] if dynamic else [])], cwd=ROOT,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "compiled_shapes.json").read_text())
    assert len(data["eager_alone"]) == len(data["compiled_alone"]) == 2
    assert len({r["patches"] for r in data["compiled_warm"] + data["compiled_alone"]}) == 4   # four sizes
    first, second = data["compiled_warm"]
    assert first["vision_traced"] > 0 and (second["vision_traced"] == 0) == dynamic
    assert all(r["vision_traced"] == r["generate_traced"] == 0
               for r in data["eager_alone"] + data["compiled_alone_again_stance"])
    assert data["eager_stream"]["images_per_s"] > 0 and data["compiled_stream"]["images_per_s"] > 0


def test_scaling_smoke(tmp_path):
    """benchmarks/scaling.sh on the CPU: a tiny model through finetune_lora.sh and cog_test.sh, read back."""
    import os
    from PIL import Image
    env = dict(os.environ, SMOKE="1", WORK=str(tmp_path), PYTHON=sys.executable, PROFILE_STEP="2",
               TIMELINE_STEP="3", SIZE_RANGE="60 110")
    run = subprocess.run(["bash", ROOT / "benchmarks" / "scaling.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "scaling.json").read_text())
    assert data["sft_none_0gpu"]["samples_per_s"] > 0 and data["sft_none_0gpu"]["samples_per_step"] == 4
    assert data["eval_0gpu"]["items"] == 32 and data["eval_0gpu"]["images_per_s"] > 0
    assert data["eval_0gpu"]["process_s"] > data["eval_0gpu"]["seconds"] + data["eval_0gpu"]["model_load_s"]
    assert (tmp_path / "out" / "sft_none_0gpu_profile_rank0.txt").read_text().startswith("step 2, rank 0/1")
    timeline = json.loads((tmp_path / "out" / "sft_none_0gpu_timeline_rank0.json").read_text())
    assert timeline["step"] == 3 and timeline["summary"]["language forward"]["calls"] > 1
    assert set(data) == {"sft_none_0gpu", "eval_0gpu"}   # the timeline is no run of its own
    sizes = {Image.open(p).size for p in (tmp_path / "images").rglob("*.jpg")}   # SIZE_RANGE: images of varied sizes
    assert len(sizes) > 10 and all(60 <= w <= 110 and 60 <= h <= 110 for w, h in sizes)
    # a named run with extra cog_test.sh arguments and launcher environment: an output folder of its own
    env["RUNS"] = "eval_0gpu@--prefetch=1@--no-pin-memory@--profile-batches=1@SEED=7"
    run = subprocess.run(["bash", ROOT / "benchmarks" / "scaling.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "scaling.json").read_text())
    name = "eval_0gpu_--prefetch=1_--no-pin-memory_--profile-batches=1_SEED=7"
    extra = data[name]
    assert extra["items"] == 32 and extra["loader"]["prefetch"] == 1 and extra["loader"]["pin_memory"] is False
    run_info = tmp_path / name / "Aesthetics" / "run.json"
    assert json.loads(run_info.read_text())["seed"] == 7   # the environment reached the launcher
    assert (tmp_path / "out" / f"{name}_profile.txt").read_text().startswith("the loop's first 1 batches")   # back with OUT
    # FAMILY=llama: Llama's launcher and model, in a work folder of its own
    env.update(FAMILY="llama", RUNS="sft_none_0gpu", WORK=str(tmp_path / "llama"))
    run = subprocess.run(["bash", ROOT / "benchmarks" / "scaling.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "llama" / "out" / "scaling.json").read_text())
    assert set(data) == {"sft_none_0gpu"} and data["sft_none_0gpu"]["samples_per_step"] == 4
    assert json.loads((tmp_path / "llama" / "out" / "sft_none_0gpu.json").read_text())["family"] == "llama"


def test_graph_numerics_smoke(tmp_path):
    """benchmarks/graph_numerics.py on the CPU (compiled blocks, no CUDA graphs): in float32 the compiled
    language blocks train like eager ones, step by step."""
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "graph_numerics.py", "--cpu", "--layers", "2",
                          "--steps", "2", "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "graph_numerics.json").read_text())
    assert set(data["losses"]) == {"float32 eager", "float32 graphed", "bfloat16 eager", "bfloat16 graphed"}
    assert all(len(v) == 2 for v in data["losses"].values())
    assert data["losses"]["float32 eager"][1] < data["losses"]["float32 eager"][0]   # it trains
    assert data["losses"]["float32 graphed"] == pytest.approx(data["losses"]["float32 eager"], rel=1e-4)


def test_first_batch_probe_smoke(tmp_path):
    """benchmarks/first_batch_probe.py on the CPU: one new process per run, a cold and a warm pass each."""
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "first_batch_probe.py", "--cpu-smoke", "--side", "56",
                          "--ramp", "2,2,4", "--runs", "default", "expandable", "--out", str(tmp_path / "probe.json")],
                         cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads((tmp_path / "probe.json").read_text())["runs"]
    assert [r["run"] for r in runs] == ["default", "expandable"]
    for r in runs:   # every batch of the ramp answered, in order, in both passes
        for p in ("cold", "warm"):
            assert len(r[p]["answered_s"]) == 3 and r[p]["answered_s"] == sorted(r[p]["answered_s"])
        assert r["one_off_s"] == pytest.approx(r["cold"]["answered_s"][-1] - r["warm"]["answered_s"][-1], abs=2e-3)


def test_synth_draw_bench_smoke(tmp_path):
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "synth_draw_bench.py", "--size", "48", "--n", "64",
                          "--workers", "2", "--out", str(tmp_path / "synth.json")], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    rates = json.loads((tmp_path / "synth.json").read_text())["images_per_s"]
    assert set(rates) == {"1", "2"} and all(r > 0 for r in rates.values())


def test_compile_load_probe_smoke(tmp_path):
    """benchmarks/compile_load_probe.py on the CPU: a new process per load; compiling imports inductor there."""
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "compile_load_probe.py", "--runs", "none", "all",
                          "--out", str(tmp_path)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    runs = json.loads((tmp_path / "compile_load_probe.json").read_text())
    assert [r["mode"] for r in runs] == ["none", "all"]
    assert all(0 < r["load_s"] < r["process_s"] and "scorer.py" in r["profile"] for r in runs)
    plain, compiled = runs
    assert compiled["modules_imported_by_load"] > plain["modules_imported_by_load"] + 100   # inductor's
    assert "torch/_inductor/" in compiled["profile"] and "torch/_inductor/" not in plain["profile"]


def test_loop_rate_recovers_a_known_rate_and_the_start_and_end(tmp_path):
    spec = importlib.util.spec_from_file_location("loop_rate", ROOT / "benchmarks" / "loop_rate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)   # a script, not a package module: loaded from its file
    loop_rate, main = module.loop_rate, module.main
    rng = np.random.default_rng(0)
    tokens = [int(t) for t in 32 * np.sort(rng.integers(600, 1300, 40))[::-1]]   # longest first, as the loop takes them
    done = np.cumsum(tokens) / 1e6
    seconds = 6.0 + 40.0 * done + rng.normal(0, 0.05, len(done))   # 40 s per million tokens, 6 s lost at the start
    seconds[-1] += 1.5                                                # and the end's drain
    answered = [[round(float(s), 3), 32 * (k + 1)] for k, s in enumerate(seconds)]
    r = loop_rate({"answered": answered, "padded_tokens": tokens})
    assert abs(r["s_per_mtok"] - 40.0) < 0.3 and abs(r["start_lag_s"] - 6.0) < 0.3 and abs(r["end_lag_s"] - 1.5) < 0.2
    assert r["items"] == 1280 and abs(r["running_images_per_s"] - 1280 / (40.0 * done[-1])) < 0.3
    assert abs(r["loop_s"] - (r["work_at_rate_s"] + r["start_lag_s"] + r["end_lag_s"])) < 0.02
    with pytest.raises(ValueError, match="no padded_tokens"):   # a timing.json from before the field
        loop_rate({"answered": answered})
    with pytest.raises(ValueError, match="39 batches taken but 40 answered"):
        loop_rate({"answered": answered, "padded_tokens": tokens[:-1]})
    f = tmp_path / "scaling.json"   # several runs in one file, as benchmarks/scaling.sh writes them
    f.write_text(json.dumps({"run_a": {"answered": answered, "padded_tokens": tokens}, "old": {"answered": answered}}))
    assert main([str(f)]) == 0
