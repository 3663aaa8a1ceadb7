"""CPU-sized runs of the benchmark scripts: that they run and report (speed is measured on GPUs,
see docs/performance.md)."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]


def _script(name: str):
    """A benchmark script as a module (a script, not a package module: loaded from its file)."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "benchmarks" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("script,report", [("loss_bench.py", "loss.json"), ("eval_bench.py", "eval_bench.json"),
                                           ("train_bench.py", "train_bench_qwen.json")])
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
    env["RUNS"] = "eval_0gpu@--prefetch=1@--no-pin-memory@--profile-batches=1@MODE=expected"
    run = subprocess.run(["bash", ROOT / "benchmarks" / "scaling.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "out" / "scaling.json").read_text())
    name = "eval_0gpu_--prefetch=1_--no-pin-memory_--profile-batches=1_MODE=expected"
    extra = data[name]
    assert extra["items"] == 32 and extra["loader"]["prefetch"] == 1 and extra["loader"]["pin_memory"] is False
    run_info = tmp_path / name / "Aesthetics" / "run.json"
    assert json.loads(run_info.read_text())["mode"] == "expected"   # the environment reached the launcher
    assert (tmp_path / "out" / f"{name}_profile.txt").read_text().startswith("the loop's first 1 batches")   # back with OUT
    # FAMILY=llama: Llama's launcher and model, in a work folder of its own
    env.update(FAMILY="llama", RUNS="sft_none_0gpu", WORK=str(tmp_path / "llama"))
    run = subprocess.run(["bash", ROOT / "benchmarks" / "scaling.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    data = json.loads((tmp_path / "llama" / "out" / "scaling.json").read_text())
    assert set(data) == {"sft_none_0gpu"} and data["sft_none_0gpu"]["samples_per_step"] == 4
    assert json.loads((tmp_path / "llama" / "out" / "sft_none_0gpu.json").read_text())["family"] == "llama"


def test_defaults_bench_smoke(tmp_path):
    """benchmarks/defaults_bench.sh on the CPU: the published-style loop, the launchers with their defaults (and
    one uncompiled), the SFT with its MFU line, one JSON line each."""
    import os
    env = dict(os.environ, SMOKE="1", WORK=str(tmp_path), PYTHON=sys.executable,
               RUNS="pub eval480_cold eval1720_cold eval480_eager sft")
    run = subprocess.run(["bash", ROOT / "benchmarks" / "defaults_bench.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    rows = {r["run"]: r for r in map(json.loads, (tmp_path / "out" / "results.jsonl").read_text().splitlines())}
    assert list(rows) == ["pub_qwen", "eval480_cold_qwen", "eval1720_cold_qwen", "eval480_eager_qwen", "sft_qwen"]
    assert rows["pub_qwen"]["result"]["items"] == 4 and rows["pub_qwen"]["result"]["loop_images_per_s"] > 0
    published, whole = rows["eval480_cold_qwen"], rows["eval1720_cold_qwen"]
    assert published["rc"] == whole["rc"] == 0 and published["timing"]["items"] == 8 and whole["timing"]["items"] == 12
    assert whole["process_s"] > whole["timing"]["seconds"]
    # the loop's matmuls: every item's image counted, at the run's pixel bounds
    assert published["mfu"]["items"] == 8 and whole["mfu"]["items"] == 12 and 0 < published["mfu"]["flop"] < whole["mfu"]["flop"]
    assert published["chosen"].startswith("cogip evaluate: batch 8 (on a CPU)")
    assert rows["eval480_eager_qwen"]["timing"]["chosen"]["why"]["compile"] == "given"
    sft = rows["sft_qwen"]
    assert sft["rc"] == 0 and sft["train"]["throughput"]["samples_per_step"] == 4
    # 6 x parameters x tokens: the tiny model's parameters, the language model's tokens of the run
    assert sft["mfu"]["params"] > 0 and sft["mfu"]["tokens_per_sample"] > 10 and sft["mfu"]["mfu"] is None   # no peak on a CPU
    # the matmul count reads the same rows as the run: their tokens, less the batches' padding
    assert 0.9 * sft["mfu"]["tokens_per_sample"] <= sft["mfu"]["text_tokens_per_row"] <= sft["mfu"]["tokens_per_sample"]


def test_loop_rate_recovers_a_known_rate_and_the_start_and_end(tmp_path):
    module = _script("loop_rate")
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


def test_device_run_smoke(tmp_path):
    """benchmarks/device_run.sh with SMOKE=1: each section runs its script at CPU size and its results come back
    in results.tgz; before_after.sh alternates the trees' order with each repeat."""
    import os
    import tarfile
    # a path given (a GPU machine's installed wheels) reaches the launchers' processes: a probe on it says so
    probe = tmp_path / "probe"
    probe.mkdir()
    (probe / "sitecustomize.py").write_text("import os\nif 'MODEL_ID' in os.environ:\n"
                                            "    open(os.environ['PROBE_LOG'], 'a').write(os.environ['OUT'] + '\\n')\n")
    env = dict(os.environ, SMOKE="1", PYTHON=sys.executable, OUT=str(tmp_path / "out"), RES=str(tmp_path / "res"),
               WORK=str(tmp_path / "work"), DEADLINE="3000", SECTIONS="loss defaults before_after nosuch",
               RUNS="eval480_cold", REPEATS="2", BEFORE=str(ROOT), PYTHONPATH=str(probe),
               PROBE_LOG=str(tmp_path / "probe.log"))
    run = subprocess.run(["bash", ROOT / "benchmarks" / "device_run.sh"], cwd=ROOT, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    sections = [line.split()[1] for line in run.stdout.splitlines() if line.startswith("=== ")]
    assert sections == ["loss", "defaults", "before_after", "nosuch:"]
    assert run.stdout.count("rc=0 (") == 3 and "nosuch: no such section" in run.stdout
    with tarfile.open(tmp_path / "out" / "results.tgz") as tar:
        names = set(tar.getnames())
        rows = {name: [json.loads(line) for line in tar.extractfile(f"./{name}/results.jsonl").read().splitlines()]
                for name in ("defaults", "before_after")}
    assert {"./loss_bench.json", "./defaults/runs/eval480_cold_qwen/timing.json"} <= names
    assert [r["run"] for r in rows["defaults"]] == ["eval480_cold_qwen"]
    runs = [r["run"] for r in rows["before_after"]]
    assert runs == ["eval480_cold_qwen_before1", "eval480_cold_qwen_after1",
                    "eval480_cold_qwen_after2", "eval480_cold_qwen_before2"]
    assert all(r["rc"] == 0 and r["timing"]["items"] == 8 for r in rows["before_after"])
    launched = set((tmp_path / "probe.log").read_text().split())
    assert {str(tmp_path / "work" / f"eval480_cold_qwen_{side}") for side in ("before1", "after2")} <= launched


def test_the_benchmark_files_the_scripts_and_docs_name_exist():
    """A script or doc that names benchmarks/<file> names one that is there (a removed script left behind in a
    section or a table would fail only on the GPU machine)."""
    import re
    texts = [*ROOT.glob("benchmarks/*.sh"), *ROOT.glob("benchmarks/*.py"), *ROOT.glob("docs/*.md"), ROOT / "README.md"]
    named = {(path.relative_to(ROOT).as_posix(), m) for path in texts
             for m in re.findall(r"benchmarks/([\w.-]+\.(?:sh|py))", path.read_text())}
    assert len({m for _, m in named}) >= 8   # the pattern finds them
    missing = sorted(f"{where}: benchmarks/{m}" for where, m in named if not (ROOT / "benchmarks" / m).is_file())
    assert missing == []


@pytest.mark.parametrize("family", ["qwen", "gemma", "llama"])
def test_mfu_counts_the_matmuls_generate_computes(tiny_models, family, tmp_path):
    """benchmarks/mfu.py's count of the benchmark loop's matmuls, from the batch's padded tokens and the images'
    sizes alone, against torch's FLOP counter over a real generate of the tiny model: images of three sizes,
    5 new tokens a row. Llama's only other matmul is a bmm outside the linear layers (<0.1%). Then the same for
    a training forward."""
    from PIL import Image
    from torch.utils.flop_counter import FlopCounterMode

    from cogip.accel.auto import meta_model
    from cogip.evaluate.scorer import Scorer
    from cogip.models.families import FAMILIES
    mfu = _script("mfu")
    scorer = Scorer.load(str(tiny_models[family]), family=family, dtype=torch.float32, device="cpu")
    sizes = [(84, 56), (56, 112), (70, 70)]
    batch = scorer.prepare([Image.new("RGB", s, (120, 30, 200)) for s in sizes], ["Aesthetics? label and score 0-10."] * 3)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        scorer.model.generate(**batch, max_new_tokens=5, min_new_tokens=5, do_sample=False)
    by_op = {str(op).split(".")[1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    counted = sum(n for op, n in by_op.items() if op in ("mm", "addmm", "convolution"))
    fam, config = FAMILIES[family], scorer.model.config
    per_token = mfu.flops_per_token(fam, meta_model(fam.model_cls(), config))
    images = [mfu.image_tokens(fam, config, scorer.processor, *s) for s in sizes]
    if family == "qwen":   # the three sizes really differ in visual tokens
        assert len({i["vision"] for i in images}) == 3
    estimate = mfu.loop_flops(per_token, batch["input_ids"].numel(), 3, images, 5)
    assert estimate == counted
    assert sum(by_op.values()) - counted <= 1e-3 * counted   # nothing else of size: attention ran as SDPA

    # a training forward: the lm_head only where the answer is supervised (as the trainer computes the logits)
    from cogip.train.data import SFTCollator
    from cogip.train.trainer import supervised_logits
    rows = [{"image": str(tmp_path / f"{i}.png"), "prompt": "Aesthetics? label and score 0-10.", "answer": f"high {i}.5{i}7"}
            for i in range(len(sizes))]
    for row, size in zip(rows, sizes):
        Image.new("RGB", size, (120, 30, 200)).save(row["image"])
    batch = SFTCollator(fam, scorer.processor)(rows)
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        supervised_logits(scorer.model, batch)
    by_op = {str(op).split(".")[1]: n for op, n in counter.get_flop_counts()["Global"].items()}
    supervised = int((batch["labels"][:, 1:] != -100).sum())
    assert mfu.forward_flops(per_token, batch["input_ids"].numel(), supervised, images) == \
        sum(n for op, n in by_op.items() if op in ("mm", "addmm", "convolution"))


def test_real_size_config_only_counts_as_the_docs_say(tmp_path):
    """real_model.py --config-only writes the published Qwen2.5-VL-7B architecture's config and processor and no
    weights; mfu.py counts it as docs/performance.md states: 6.52 B matmul parameters in the language layers,
    0.63 B in the vision encoder's blocks, and 4 patches a visual token."""
    out = tmp_path / "real-qwen"
    run = subprocess.run([sys.executable, ROOT / "benchmarks" / "real_model.py", "--family", "qwen", "--config-only",
                          str(out)], cwd=ROOT, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    assert (out / "config.json").is_file() and (out / "processor_config.json").is_file()
    assert not list(out.glob("*.safetensors"))
    from transformers import AutoConfig

    from cogip.accel.auto import meta_model
    from cogip.models.families import FAMILIES
    mfu = _script("mfu")
    fam, config = FAMILIES["qwen"], AutoConfig.from_pretrained(out)
    per_token = mfu.flops_per_token(fam, meta_model(fam.model_cls(), config))
    assert round(per_token["text"] / 2e9, 2) == 6.53 and round(per_token["vision"] / 2e9, 2) == 0.63
    processor = fam.load_processor(out, **fam.pixel_bounds(published=True))
    tokens = mfu.image_tokens(fam, config, processor, 896, 896)   # 64 x 64 patches of 14 px, merged 2 x 2
    assert tokens == {"patch": 64 * 64, "vision": 64 * 64, "projector": 32 * 32}
    tokens = mfu.image_tokens(fam, config, processor, 1008, 1008)   # over the published 1280 x 28^2 pixels: 980 px
    assert tokens == {"patch": 70 * 70, "vision": 70 * 70, "projector": 35 * 35}
