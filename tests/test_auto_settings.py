"""The benchmark loop's own choice of batch size, batches in flight and compiled blocks (cogip.accel.auto), on the
published models' real architectures (their configs; nothing allocated)."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from cogip.accel.auto import COMPILE_FROM, HEADROOM, MAX_BATCH, choose, item_bytes, weights_bytes
from cogip.models.families import FAMILIES

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
from real_configs import REAL  # noqa: E402

GIB = 2 ** 30
H100_FREE = 79 * GIB
QWEN_LONGEST = (1350, 1279)   # an image at the published max_pixels (1280 visual tokens, one placeholder) + the prompt


@pytest.fixture(scope="module")
def configs(tiny_models):
    return {f: REAL[f](FAMILIES[f].load_processor(tiny_models[f]).tokenizer) for f in REAL}


def test_weights_counted_as_published(configs):
    # Qwen2.5-VL-7B-Instruct and Llama-3.2-11B-Vision-Instruct: their model cards' parameter counts
    assert weights_bytes(FAMILIES["qwen"].model_cls(), configs["qwen"], 1) == 8_292_166_656
    assert weights_bytes(FAMILIES["llama"].model_cls(), configs["llama"], 1) == 10_670_220_835
    assert weights_bytes(FAMILIES["qwen"].model_cls(), configs["qwen"]) == 2 * 8_292_166_656   # bf16


# Measured on an H100 (docs/performance-data/2026-12-07_h100_defaults.json): cog_test.sh, eager, batch 32, 2 in
# flight, the device memory reserved by the end (GiB), the random-weight model's weights (GiB), and the longest
# item of the run (tokens, visual tokens) as the run's own line reported it
MEASURED = {"qwen": (45.95, 15.45, (1312, 1279)), "llama": (60.46, 19.87, (24, 0)), "gemma": (35.72, 24.58, (21, 0))}


@pytest.mark.parametrize("family", list(MEASURED))
def test_item_estimate_covers_the_measured_memory(configs, family):
    reserved, weights, longest = MEASURED[family]
    measured = (reserved - weights) / 64
    estimate = item_bytes(configs[family], *longest) / GIB
    assert measured <= HEADROOM * estimate
    if family != "gemma":   # and not wasteful where it binds: within 1.6x of what was used
        assert HEADROOM * estimate <= 1.6 * measured


def test_item_estimate_grows_with_the_item(configs):
    assert item_bytes(configs["qwen"], 700, 640) < item_bytes(configs["qwen"], *QWEN_LONGEST)
    # Gemma's 256 image tokens counted although its prompt holds one placeholder
    assert item_bytes(configs["gemma"], 80, 0) == item_bytes(configs["gemma"], 80 + 256, 1)


def _choose(configs, family="qwen", n=1720, free=H100_FREE, longest=QWEN_LONGEST, **given):
    cfg = configs[family]
    weights = weights_bytes(FAMILIES[family].model_cls(), cfg, 2)
    args = {"batch_size": None, "pipeline": None, "compile": "auto", **given}
    return choose(n, longest, family, cfg, torch.bfloat16, weights, args["batch_size"], args["pipeline"],
                  args["compile"], cuda=True, free_bytes=free)


def test_gpu_choice_by_run_length_and_cache(configs, tmp_path, monkeypatch):
    monkeypatch.setenv("TORCHINDUCTOR_CACHE_DIR", str(tmp_path / "inductor"))
    # what the H100 runs chose: the whole test set compiled, the published 480 items eager, both at batch 32
    long_run = _choose(configs, n=1720)
    assert (long_run.batch_size, long_run.pipeline, long_run.compile) == (MAX_BATCH, 3, "all")
    assert "empty" in long_run.why["compile"] and str(tmp_path / "inductor") in long_run.why["compile"]
    published = _choose(configs, n=480)
    assert (published.batch_size, published.pipeline, published.compile) == (MAX_BATCH, 2, "none")
    middle = COMPILE_FROM["qwen"]["filled"]
    assert _choose(configs, n=middle).compile == "none"   # an empty cache: compiling costs more
    (tmp_path / "inductor" / "fxgraph" / "ab").mkdir(parents=True)   # what a compiled run leaves
    again = _choose(configs, n=middle)
    assert (again.pipeline, again.compile) == (3, "all") and "filled" in again.why["compile"]
    assert _choose(configs, n=middle - 1).compile == "none"
    line = again.line()
    assert line.startswith("cogip evaluate: batch 32 (") and "3 batches in flight" in line and "\n" not in line
    for family, longest in (("gemma", (80, 0)), ("llama", (30, 0))):   # measured no faster compiled
        c = _choose(configs, family, n=5000, longest=longest)
        assert (c.batch_size, c.pipeline, c.compile) == (MAX_BATCH, 2, "none") and "measured" in c.why["compile"]


def test_gpu_batch_from_free_memory(configs):
    per_item = int(HEADROOM * item_bytes(configs["qwen"], *QWEN_LONGEST))
    room = 40 * GIB - 2 * 8_292_166_656 - 2 * GIB   # 40 GiB free, less the weights and the reserve
    small = _choose(configs, n=100, free=40 * GIB)
    assert small.batch_size == room // (2 * per_item) // 8 * 8 == 16
    tiny_room = _choose(configs, n=100, free=18 * GIB)   # barely more than the weights: a few at a time
    assert 1 <= tiny_room.batch_size < 8
    shorter = _choose(configs, n=100, free=40 * GIB, longest=(400, 330))
    assert shorter.batch_size == MAX_BATCH   # small images: the cap


def test_given_settings_stay(configs):
    c = _choose(configs, n=1720, batch_size=12, pipeline=1, compile="vision")
    assert (c.batch_size, c.pipeline, c.compile) == (12, 1, "vision")
    assert set(c.why.values()) == {"given"}
    cpu = choose(5000, QWEN_LONGEST, "qwen", configs["qwen"], torch.float32, 0, None, None, "auto", cuda=False)
    assert (cpu.batch_size, cpu.pipeline, cpu.compile) == (8, 1, "none")


def test_launcher_reports_its_choice(tiny_models, synth_bench, tmp_path):
    out = tmp_path / "eval"
    env = {**os.environ, "MODEL_ID": str(tiny_models["qwen"]), "TEST_DIR": str(synth_bench / "test_msg_file"),
           "IMAGE_ROOT": str(synth_bench / "cognition" / "cognition_images"), "OUT": str(out), "NUM_GPUS": "0",
           "SAMPLE_N": "3", "PYTHON": sys.executable}
    run = subprocess.run(["bash", "evaluation/qwen/cog_test.sh", "--dims", "Aesthetics"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    lines = [x for x in run.stderr.splitlines() if "cogip evaluate: batch" in x]
    assert len(lines) == 1 and "batch 8 (on a CPU)" in lines[0] and "compiled blocks: none (on a CPU)" in lines[0]
    timing = json.loads((out / "timing.json").read_text())
    assert (timing["batch_size"], timing["pipeline"], timing["chosen"]["compile"]) == (8, 1, "none")
    bad = subprocess.run(["bash", "evaluation/qwen/cog_test.sh", "--compile", "everything"], cwd=ROOT, env=env,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "everything" in bad.stderr and "Traceback" not in bad.stderr


def test_out_of_memory_is_one_line_and_keeps_the_answers(tiny_models, synth_bench, tmp_path):
    """A batch that does not fit (here: the third) stops the run with one line saying what to give instead;
    the batches answered before it stay recorded, and the rerun with a smaller batch answers only the rest."""
    from cogip.accel.scoring import FastEngine, ScoringOptions
    from cogip.errors import CogipError
    from cogip.evaluate.loop import LoopOptions, read_records, run_benchmark
    from cogip.evaluate.scorer import Scorer
    scorer = Scorer.load(str(tiny_models["qwen"]))
    answer, calls = scorer.answer_prepared, []

    def crowded(*args, **kwargs):
        calls.append(1)
        if len(calls) == 3:
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.96 GiB.")
        return answer(*args, **kwargs)
    scorer.answer_prepared = crowded
    options = LoopOptions(str(synth_bench / "test_msg_file"), str(synth_bench / "cognition" / "cognition_images"),
                          str(tmp_path / "out"), ["Aesthetics", "Funniness"], batch_size=2)
    with pytest.raises(CogipError) as e:
        run_benchmark(scorer, options, FastEngine(ScoringOptions(num_workers=0)))
    assert "out of GPU memory answering batches of 2 with 1 in flight (batch given); 4 items" in str(e.value)
    assert "--batch-size" in str(e.value) and "\n" not in str(e.value)
    kept = {d: read_records(tmp_path / "out" / d) for d in ("Aesthetics", "Funniness")}
    assert sum(len(r) for r in kept.values()) == 4
    calls.clear()
    counted = []
    scorer.answer_prepared = lambda *a, **k: counted.append(1) or answer(*a, **k)
    summary = run_benchmark(scorer, LoopOptions(**{**vars(options), "batch_size": 1}), FastEngine(ScoringOptions(num_workers=0)))
    assert set(summary) == {"Aesthetics", "Funniness"}
    assert sum(len(read_records(tmp_path / "out" / d)) for d in summary) == 16 and len(counted) == 12   # the rest
