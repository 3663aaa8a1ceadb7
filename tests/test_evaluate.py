"""The benchmark loop through `evaluation/<family>/cog_test.sh`, both scoring modes, resume, bad input."""

import json
import os
import random
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr

from cogip.data.layout import read_test_messages
from cogip.data.images import open_image
from cogip.dims import get_dimension
from cogip.accel import private
from cogip.accel.scoring import FastEngine, ScoringOptions, speed_up
from cogip.evaluate import loop
from cogip.evaluate.loop import LoopOptions, plan_samples, read_records, read_sample_indices, sample_indices
from cogip.evaluate.scorer import Scorer, ScorerLoading
from cogip.train.sft import run as train

ROOT = Path(__file__).resolve().parents[1]


def run_benchmark(scorer, test_dir, image_root, out, dims=None, sample_n=None, seed=19, batch_size=8, mode="generate",
                  accelerator=None, sampling="published", indices_from=None, accel=True, run_info=None, **speed):
    """The loop with cogip.accel's engine (accel=True, its options as keywords) or the plain one."""
    options = LoopOptions(str(test_dir), str(image_root), str(out), dims, sample_n, seed, sampling, indices_from,
                          batch_size, mode, run_info or {})
    engine = FastEngine(ScoringOptions(**speed)) if accel else None
    return loop.run_benchmark(scorer, options, engine, accelerator)


def cog_test(family, model, bench, out, *args, **env):
    e = dict(os.environ, MODEL_ID=str(model), TEST_DIR=str(bench / "test_msg_file"),
             IMAGE_ROOT=str(bench / "cognition/cognition_images"), OUT=str(out), NUM_GPUS="0", SAMPLE_N="0",
             MIN_PIXELS="7056", MAX_PIXELS="7056", BATCH_SIZE="4")
    e.update({k: str(v) for k, v in env.items()})
    return subprocess.run(["bash", ROOT / "evaluation" / family / "cog_test.sh", *args], env=e, capture_output=True,
                          text=True)


@pytest.mark.parametrize("family", ["qwen", "llama", "gemma"])
def test_cog_test_both_modes(trained, synth_bench, tmp_path, family):
    scores = {}
    wall = {}
    for mode in ("generate", "expected"):
        t0 = time.perf_counter()
        run = cog_test(family, trained[family], synth_bench, tmp_path / mode, MODE=mode)
        wall[mode] = time.perf_counter() - t0
        assert run.returncode == 0, run.stderr[-3000:]
        assert "spearman" in run.stdout and "Memorability" in run.stdout          # printed summary table
        summary = json.loads((tmp_path / mode / "summary.json").read_text())
        assert set(summary) == {"Aesthetics", "Funniness", "Emotional_Valence", "Memorability"}
        for dim, m in summary.items():
            folder = tmp_path / mode / dim
            assert m["n"] == 8 and m["mode"] == mode
            assert (folder / "scatter.png").stat().st_size > 1000 and (folder / "log.txt").is_file()
            records = read_records(folder)
            assert len(records) == 8 and m["n_parsed"] == sum(r["ok"] for r in records.values())
            scores[mode, dim] = {i: r["score"] for i, r in records.items() if r["ok"]}
        assert (tmp_path / mode / "summary.png").is_file()
        timing = json.loads((tmp_path / mode / "timing.json").read_text())
        assert timing["items"] == 32 and timing["images_per_s"] > 0 and timing["mode"] == mode
        # the loader started before the clock, while the model loaded (cog_test.sh passes a ScorerLoading)
        assert timing["model_load_s"] > 0 and timing["loader_started_s"] <= timing["workers_started_s"] < 0
        assert -timing["workers_started_s"] >= timing["model_load_s"] and timing["workers_started_s"] <= timing["first_batch_s"]
        assert timing["first_batch_s"] <= timing["first_answers_s"] <= timing["seconds"]
        assert timing["loader_started_s"] < timing["check_done_s"] <= timing["seconds"]   # every image checked, in the run
        seconds, done = zip(*timing["answered"])   # progress after each batch: rising to every item
        assert done[-1] == 32 and list(done) == sorted(done) and seconds[0] == timing["first_answers_s"]
        came, prepared = zip(*timing["arrived"])   # when the loop took each prepared batch, before its answers
        assert prepared == done and came[0] == timing["first_batch_s"]
        assert all(c <= s for c, s in zip(came, seconds)) and list(came) == sorted(came)
        # each batch's padded tokens: its items times one padded length, at least its prompts' text
        sizes = [b - a for a, b in zip((0, *prepared), prepared)]
        assert len(timing["padded_tokens"]) == len(sizes)
        assert all(t % n == 0 and t // n > 20 for t, n in zip(timing["padded_tokens"], sizes)), timing["padded_tokens"]
        assert len(timing["gc"]["collections"]) == 3 and sum(timing["gc"]["collections"]) > 0   # a run allocates
        assert timing["loader"] == {"workers": 0, "prefetch": 2, "pin_memory": False, "host_register": False}   # the CPU's defaults
        # the whole call's start-up before the clock: the process, then main (imports done), then the loader
        assert timing["process_started_s"] < timing["main_started_s"] < timing["loader_started_s"], timing
        assert -timing["process_started_s"] < wall[mode] and 0 < timing["outputs_s"] < wall[mode] - timing["seconds"]
        call = timing["seconds"] - timing["process_started_s"] + timing["outputs_s"]   # all but the exit
        assert abs(timing["call_s"] - call) < 0.01 and call < wall[mode] and abs(timing["call_images_per_s"] - 32 / timing["call_s"]) < 0.01
    if family == "qwen":   # the longer-trained model: parses nearly everything, both modes agree
        for dim in ("Aesthetics", "Funniness", "Emotional_Valence", "Memorability"):
            g, e = scores["generate", dim], scores["expected", dim]
            assert g.keys() == e.keys() and len(g) >= 6      # one greedy decode serves both modes
            gap = sum(abs(g[i] - e[i]) for i in g) / len(g) / get_dimension(dim).span
            agreement = spearmanr([g[i] for i in g], [e[i] for i in g])[0]
            assert gap < 0.1 and agreement > 0.7, (dim, gap, agreement)


def test_compiled_blocks_give_the_same_answers(trained, synth_bench, tmp_path, monkeypatch):
    runs = {}
    # inductor's cache: in the user's cache folder (on a cluster usually shared by its nodes), not torch's /tmp,
    # unless the user names one
    monkeypatch.delenv("TORCHINDUCTOR_CACHE_DIR", raising=False)
    caches = {"compiled": tmp_path / "mine", "compiled_all": tmp_path / "cache" / "cogip" / "torchinductor"}
    for name, args in (("eager", ()), ("compiled", ("--compile",)), ("compiled_all", ("--compile", "all"))):
        mine = {"TORCHINDUCTOR_CACHE_DIR": caches[name]} if name == "compiled" else {}
        run = cog_test("qwen", trained["qwen"], synth_bench, tmp_path / name, "--dims", "Funniness", *args,
                       XDG_CACHE_HOME=tmp_path / "cache", **mine)
        assert run.returncode == 0, run.stderr[-3000:]
        runs[name] = read_records(tmp_path / name / "Funniness")
    assert len(runs["eager"]) == 8
    for name in ("compiled", "compiled_all"):
        assert [r["answer"] for r in runs[name].values()] == [r["answer"] for r in runs["eager"].values()]
    # timing.json says what compiling cost: frames traced and seconds (a new process each, so all of it)
    compiled = {name: json.loads((tmp_path / name / "timing.json").read_text())["compile"] for name in runs}
    assert compiled["eager"] is None
    for name in ("compiled", "compiled_all"):
        assert compiled[name]["frames"] > 0 and compiled[name]["seconds"] > 0, compiled[name]
        assert compiled[name]["phases"]["_compile.compile_inner"] == compiled[name]["seconds"]
        assert compiled[name]["cache_dir"] == str(caches[name])
        assert compiled[name]["compile_threads"] >= 1 and isinstance(compiled[name]["worker_pool_started"], bool)
        assert any(caches[name].rglob("*.py"))   # the compiled code, kept
    assert compiled["compiled_all"]["frames"] > compiled["compiled"]["frames"]   # the language blocks' parts too


def test_published_messages_with_synthetic_images(trained, published, published_images, tmp_path):
    bench_like = tmp_path / "b"
    (bench_like / "cognition").mkdir(parents=True)
    os.symlink(published / "test_msg_file", bench_like / "test_msg_file")
    os.symlink(published_images, bench_like / "cognition" / "cognition_images")
    run = cog_test("qwen", trained["qwen"], bench_like, tmp_path / "out", SAMPLE_N=5, MODE="expected")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {d: m["n"] for d, m in summary.items()} == dict.fromkeys(
        ["Aesthetics", "Emotional_Valence", "Funniness", "Memorability"], 5)
    # the published draw: one stream seeded 19, the dimensions in the order the folder lists them
    stream, expected = random.Random(19), {}
    for dim in [d for d in os.listdir(published / "test_msg_file") if (published / "test_msg_file" / d).is_dir()]:
        n = len(json.loads((published / "test_msg_file" / dim / f"{dim}_scores.json").read_text()))
        expected[dim] = sorted(stream.sample(range(n), 5)) if n > 5 else list(range(n))
    for dim, idx in expected.items():
        assert json.loads((tmp_path / "out" / f"sample_indices_{dim}.json").read_text()) == idx
    indices = json.loads((tmp_path / "out" / "Funniness" / "sample.json").read_text())
    assert indices == expected["Funniness"]
    rec = read_records(tmp_path / "out" / "Funniness")[indices[0]]
    assert rec["image"] == f"Funniness/{800 + indices[0]:06d}.jpg" and "Funniness" in rec["prompt"]


def test_lora_adapter_is_scored_with_its_base(tiny_models, synth_bench, tmp_path):
    adapter = tmp_path / "adapter"
    train(["--model_id", str(tiny_models["qwen"]), "--data_path", str(synth_bench / "cognition_training.json"),
           "--image_folder", str(synth_bench / "cognition/cognition_images"), "--output_dir", str(adapter),
           "--max_steps", "2", "--per_device_train_batch_size", "4", "--save_strategy", "no", "--report_to", "none",
           "--use_cpu", "True"])
    run = cog_test("qwen", adapter, synth_bench, tmp_path / "out", BASE_MODEL=tiny_models["qwen"], SAMPLE_N=3)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert all(m["n"] == 3 for m in summary.values())
    info = json.loads((tmp_path / "out" / "Aesthetics" / "run.json").read_text())
    assert info["model_id"] == str(adapter) and info["base_model"] == str(tiny_models["qwen"])


def test_sampling_is_reproducible_and_independent():
    a = sample_indices(700, 120, 19, "Memorability")
    assert a == sample_indices(700, 120, 19, "Memorability") and len(set(a)) == 120 and a == sorted(a)
    assert a != sample_indices(700, 120, 20, "Memorability")
    assert a != sample_indices(700, 120, 19, "Emotional_Valence")
    assert sample_indices(120, 120, 19, "Aesthetics") == list(range(120))
    assert sample_indices(50, None, 19, "Aesthetics") == list(range(50))


def test_published_sampler_draws_the_published_subsets(published):
    """The published loop: random.seed(19) once, then per dimension in order sorted(random.sample(range(N), 120)),
    no draw where N <= 120 (Aesthetics has 120 test items)."""
    order = ["Funniness", "Aesthetics", "Memorability", "Emotional_Valence"]
    counts = {d: len(json.loads((published / "test_msg_file" / d / f"{d}_scores.json").read_text())) for d in order}
    assert counts == {"Funniness": 199, "Aesthetics": 120, "Memorability": 700, "Emotional_Valence": 700}
    random.seed(19)
    expected = {d: sorted(random.sample(range(n), 120)) if 120 < n else list(range(n)) for d, n in counts.items()}
    plan = plan_samples(counts, 120, 19)
    assert plan == expected and all(len(v) == 120 for v in plan.values())
    # one stream: another order draws other items for the dimensions after the first
    other = plan_samples(dict(reversed(counts.items())), 120, 19)
    assert other["Funniness"] != plan["Funniness"] and other["Emotional_Valence"] != plan["Emotional_Valence"]
    assert plan_samples(counts, 120, 19, "per-dimension")["Memorability"] == sample_indices(700, 120, 19, "Memorability")


def test_indices_from_an_earlier_run(tmp_path, capsys):
    (tmp_path / "sample_indices_Funniness.json").write_text("[3, 1, 7]")
    given = read_sample_indices(tmp_path, ["Funniness", "Aesthetics"])
    assert "every Aesthetics item is scored" in capsys.readouterr().err   # published: no file where no draw
    plan = plan_samples({"Funniness": 10, "Aesthetics": 4}, 2, 19, given=given)
    assert plan == {"Funniness": [1, 3, 7], "Aesthetics": [0, 1, 2, 3]}
    from cogip.errors import CogipError
    with pytest.raises(CogipError, match="index 12 is not one of the 10 items of Funniness"):
        plan_samples({"Funniness": 10}, None, 19, given={"Funniness": [12]})


def test_cog_test_scores_the_items_of_an_earlier_run(trained, synth_bench, tmp_path):
    earlier = tmp_path / "earlier"
    earlier.mkdir()
    (earlier / "sample_indices_Funniness.json").write_text("[0, 2]")   # the published loop's file
    run = cog_test("qwen", trained["qwen"], synth_bench, tmp_path / "out", "--indices-from", earlier, SAMPLE_N=3)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert {d: m["n"] for d, m in summary.items()} == {"Aesthetics": 8, "Emotional_Valence": 8, "Funniness": 2,
                                                       "Memorability": 8}
    assert json.loads((tmp_path / "out" / "sample_indices_Funniness.json").read_text()) == [0, 2]


class Interrupting:
    """A scorer that is 'killed' after a number of batches."""

    def __init__(self, scorer, batches):
        self.scorer, self.left, self.prepare, self.model = scorer, batches, scorer.prepare, scorer.model
        self.family, self.pipeline = scorer.family, None

    def answer_prepared(self, *args):
        if self.left == 0:
            raise KeyboardInterrupt
        self.left -= 1
        return self.scorer.answer_prepared(*args)


def test_resume_after_interruption(trained, synth_bench, tmp_path):
    scorer = Scorer.load(str(trained["qwen"]))
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Aesthetics"], batch_size=3, mode="expected")
    straight = run_benchmark(scorer, out=tmp_path / "straight", num_workers=2, **kw)   # loader workers
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(Interrupting(scorer, 2), out=tmp_path / "killed", **kw)
    records = tmp_path / "killed" / "Aesthetics" / "records.jsonl"
    assert len(records.read_text().splitlines()) == 6 and not (tmp_path / "killed" / "summary.json").exists()
    with open(records, "a") as f:
        f.write('{"index": 6, "image": "Aesth')        # a line cut off mid-write by the kill
    counting = Interrupting(scorer, 99)
    resumed = run_benchmark(counting, out=tmp_path / "killed", **kw)
    assert counting.left == 99 - 1                      # only the unfinished batch (items 6, 7) ran again
    assert resumed == straight


def test_pipelined_run_resumes_after_interruption(trained, synth_bench, tmp_path):
    scorer = Scorer.load(str(trained["qwen"]))
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Funniness"], batch_size=2, mode="expected")
    straight = run_benchmark(scorer, out=tmp_path / "straight", **kw)
    with pytest.raises(KeyboardInterrupt):
        run_benchmark(Interrupting(scorer, 2), out=tmp_path / "killed", pipeline=2, **kw)
    lines = (tmp_path / "killed" / "Funniness" / "records.jsonl").read_text().splitlines()
    assert 2 <= len(lines) <= 4 and all(json.loads(line)["ok"] is not None for line in lines)
    assert run_benchmark(scorer, out=tmp_path / "killed", pipeline=3, **kw) == straight


class OneRankOfTwo:
    """What `run_benchmark` reads of accelerate's state, for one data-parallel rank run alone."""

    def __init__(self, rank):
        self.process_index, self.num_processes = rank, 2

    def wait_for_everyone(self):
        pass


def test_data_parallel_ranks_started_at_any_time(trained, synth_bench, tmp_path):
    """Rank 1 finishes before rank 0 starts (a rank that loads faster writes records early): rank 0 still
    answers exactly its own share, and the gathered metrics are the one-process run's."""
    scorer = Scorer.load(str(trained["qwen"]))
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Aesthetics"], batch_size=3, mode="expected")
    straight = run_benchmark(scorer, out=tmp_path / "one", **kw)
    assert run_benchmark(scorer, out=tmp_path / "two", accelerator=OneRankOfTwo(1), **kw) == {}
    gathered = run_benchmark(scorer, out=tmp_path / "two", accelerator=OneRankOfTwo(0), **kw)
    shards = [[json.loads(line)["index"] for line in (tmp_path / "two" / "Aesthetics" / f"records.rank{r}.jsonl")
               .read_text().splitlines()] for r in (0, 1)]
    n = len(read_records(tmp_path / "one" / "Aesthetics"))
    assert shards == [list(range(0, n, 2)), list(range(1, n, 2))]
    timing = json.loads((tmp_path / "two" / "timing.json").read_text())   # rank 0's, with rank 1's own
    assert timing["processes"] == 2 and timing["rank0"]["items"] == n - n // 2 and timing["ranks_ready_s"] >= 0
    assert [r["items"] for r in timing["other_ranks"]] == [n // 2]
    assert timing["other_ranks"][0]["answered"][-1][1] == n // 2
    assert gathered.keys() == straight.keys()
    for key, value in straight["Aesthetics"].items():   # other batch compositions: equal up to float rounding
        numbers = isinstance(value, float) or isinstance(value, list) and all(isinstance(v, float) for v in value)
        assert gathered["Aesthetics"][key] == (pytest.approx(value, rel=1e-5) if numbers else value), key


def test_data_parallel_evaluation_in_two_processes(trained, synth_bench, tmp_path):
    """Two gloo processes (torchrun on the CPU): each answers its share into its own records file, rank 0
    gathers them, and the metrics are the one-process run's; both processes exit cleanly."""
    args = ["-m", "cogip", "evaluate", "--model-id", str(trained["qwen"]), "--test-dir",
            str(synth_bench / "test_msg_file"), "--image-root", str(synth_bench / "cognition/cognition_images"),
            "--dims", "Aesthetics", "Funniness", "--batch-size", "3", "--mode", "expected", "--dtype", "float32",
            "--min-pixels", "7056", "--max-pixels", "7056"]
    one = subprocess.run([sys.executable, *args, "--out", str(tmp_path / "one")], capture_output=True, text=True)
    assert one.returncode == 0, one.stderr[-2000:]
    two = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2", "--master_port",
                          "29651", *args, "--out", str(tmp_path / "two")], capture_output=True, text=True)
    assert two.returncode == 0, two.stderr[-2000:]
    timing = json.loads((tmp_path / "two" / "timing.json").read_text())
    assert timing["processes"] == 2 and timing["items"] == 16 and timing["rank0"]["items"] == 8
    for dim in ("Aesthetics", "Funniness"):
        assert sorted(p.name for p in (tmp_path / "two" / dim).glob("records*")) == ["records.rank0.jsonl",
                                                                                     "records.rank1.jsonl"]
        a, b = (json.loads((tmp_path / run / dim / "metrics.json").read_text()) for run in ("one", "two"))
        assert a["n"] == b["n"] == 8 and b["spearman"] == pytest.approx(a["spearman"], rel=1e-5, abs=1e-9)
        assert b["mae"] == pytest.approx(a["mae"], rel=1e-5)


def test_processes_that_do_not_see_each_other_stop(tmp_path, monkeypatch, capsys):
    """A launch of two processes that accelerate runs as one each would answer every item into the same files."""
    import accelerate
    from cogip.evaluate import cli

    class Alone:
        num_processes, device = 1, "cpu"

        def __init__(self, cpu=False):
            pass

    monkeypatch.setattr(accelerate, "PartialState", Alone)
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert cli.main(["--model-id", "unused", "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "launched as one of 2 processes, but accelerate runs 1" in err, err
    assert not (tmp_path / "out").exists()


class Counting:
    """A scorer that records each batch it answers: (batch size, dimension names)."""

    def __init__(self, scorer):
        self.scorer, self.prepare, self.model, self.calls = scorer, scorer.prepare, scorer.model, []
        self.family, self.pipeline = scorer.family, None

    def answer_prepared(self, batch, dims, mode):
        answers = self.scorer.answer_prepared(batch, dims, mode)
        self.calls.append((len(answers), [d.name for d in dims]))
        return answers


def test_batches_run_across_dimensions(trained, synth_bench, tmp_path):
    """32 items of 4 dimensions, batches of 3: 11 batches, all full but the last, some of two dimensions;
    each dimension's metrics equal its run alone (other batch compositions: up to float rounding)."""
    scorer = Scorer.load(str(trained["qwen"]))
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              batch_size=3, mode="expected")
    counting = Counting(scorer)
    mixed = run_benchmark(counting, out=tmp_path / "mixed", **kw)
    assert [n for n, _ in counting.calls] == [3] * 10 + [2]
    assert sum(len(set(names)) == 2 for _, names in counting.calls) == 2   # across items 8 and 16
    for dim in mixed:
        alone = run_benchmark(scorer, out=tmp_path / dim, dims=[dim], **kw)[dim]
        for key, value in alone.items():
            numbers = isinstance(value, float) or isinstance(value, list) and all(isinstance(v, float) for v in value)
            assert mixed[dim][key] == (pytest.approx(value, rel=1e-5) if numbers else value), (dim, key)
        records = read_records(tmp_path / "mixed" / dim)
        assert sorted(records) == list(range(8)) and all(r["image"].startswith(dim) for r in records.values())


class Padding(Counting):
    """A scorer that records each batch's sequence lengths, padding left out (the attention mask's sums)."""

    def answer_prepared(self, batch, dims, mode):
        self.calls.append(batch["attention_mask"].sum(dim=1).tolist())
        return self.scorer.answer_prepared(batch, dims, mode)


def test_batches_hold_items_of_like_length(trained, synth_bench, tmp_path):
    """Real images differ in size, and a batch pads each item to its longest: items now run longest first,
    so like lengths share a batch. `Lengths` is each item's exact sequence length, and the records are
    the same items with the same answers as batches of one, which pad nothing."""
    from cogip.data.layout import read_test_messages
    bench = _broken(synth_bench, tmp_path)
    images = bench / "cognition/cognition_images"
    rng = np.random.default_rng(0)
    dims = ["Aesthetics", "Funniness"]
    items = {d: read_test_messages(bench / f"test_msg_file/{d}/{d}_messages.json",
                                   bench / f"test_msg_file/{d}/{d}_scores.json", d) for d in dims}
    for d in dims:   # sides of 28 to 200 pixels: 1 to 64 visual tokens in the tiny processor's bounds
        for item in items[d]:
            path = images / item.image
            Image.open(path).resize(tuple(int(x) for x in rng.integers(28, 200, 2))).save(path, quality=95)
    scorer = Scorer.load(str(trained["qwen"]), max_new_tokens=12)
    kw = dict(test_dir=bench / "test_msg_file", image_root=images, dims=dims, mode="expected")
    padding = Padding(scorer)
    batched = run_benchmark(padding, out=tmp_path / "batched", batch_size=4, **kw)
    lengths = [n for call in padding.calls for n in call]
    assert lengths == sorted(lengths, reverse=True) and len(set(lengths)) > 4   # longest first, sizes that vary
    from cogip.accel.scoring import Lengths
    length = Lengths(scorer.prepare)
    listed = [length(Image.open(images / item.image).size, item.prompt)[0] for d in dims for item in items[d]]
    assert sorted(listed, reverse=True) == lengths                              # exact, for every item
    pad = lambda ls: sum(max(ls[k:k + 4]) * len(ls[k:k + 4]) - sum(ls[k:k + 4]) for k in range(0, len(ls), 4))
    assert pad(lengths) < pad(listed) / 2                                       # in listed order: over twice the padding
    alone = run_benchmark(scorer, out=tmp_path / "alone", batch_size=1, **kw)
    for d in dims:
        a, b = read_records(tmp_path / "batched" / d), read_records(tmp_path / "alone" / d)
        assert sorted(a) == sorted(b) == list(range(8))
        assert [a[i]["answer"] for i in range(8)] == [b[i]["answer"] for i in range(8)]
        assert batched[d]["spearman"] == pytest.approx(alone[d]["spearman"], abs=1e-6)


class MarkingPreparer:
    """A BatchPreparer that leaves a file behind when it first runs (in a loader worker)."""

    def __init__(self, prepare, mark: Path):
        self.prepare, self.mark, self.dtype = prepare, mark, prepare.dtype
        self.family, self.processor = prepare.family, prepare.processor

    def __call__(self, images, prompts):
        self.mark.touch()
        return self.prepare(images, prompts)


class WaitingLoading(ScorerLoading):
    """Loads the weights only once a batch has been prepared (or after a minute): whether the loader worked
    while the model loaded. Its Scorer records the dtype of the pixels each batch brought."""

    def __init__(self, *args, mark: Path, misguess: bool = False, **kw):
        self.misguess = misguess
        super().__init__(*args, **kw)
        self.mark, self.prepare = mark, MarkingPreparer(self.prepare, mark)
        self.prepared_first, self.pixel_dtypes = None, []

    def _expected_dtype(self):   # misguess: as if the config named bfloat16 and float32 loaded
        return torch.bfloat16 if self.misguess else super()._expected_dtype()

    def load(self):
        deadline = time.monotonic() + 60
        while not self.mark.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        self.prepared_first = self.mark.exists()
        counting, dtypes = Counting(super().load()), self.pixel_dtypes
        self.counting = counting

        def answer_prepared(batch, dims, mode):
            dtypes.append(batch["pixel_values"].dtype)
            return Counting.answer_prepared(counting, batch, dims, mode)
        counting.answer_prepared = answer_prepared
        return counting


@pytest.mark.parametrize("misguess", [False, True])
def test_batches_are_prepared_while_the_model_loads(trained, synth_bench, tmp_path, misguess):
    """With a ScorerLoading the loader's workers prepare batches before the weights have loaded, and the run
    ends as one with a loaded Scorer. Where the weights load in another dtype than the config names, the
    batches are prepared again: the model gets its own dtype's pixels, and the same answers."""
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Aesthetics", "Funniness"], batch_size=4, mode="expected", num_workers=2)
    straight = run_benchmark(Scorer.load(str(trained["qwen"])), out=tmp_path / "straight", **kw)
    loading = WaitingLoading(str(trained["qwen"]), dtype="float32", mark=tmp_path / "prepared", misguess=misguess)
    assert loading.prepare.dtype == (torch.bfloat16 if misguess else torch.float32)
    overlapped = run_benchmark(loading, out=tmp_path / "overlapped", **kw)
    assert loading.prepared_first is True
    assert loading.pixel_dtypes == [torch.float32] * 4 and overlapped == straight
    timing = json.loads((tmp_path / "overlapped" / "timing.json").read_text())
    assert timing["loader_started_s"] <= timing["workers_started_s"] <= -timing["model_load_s"] < 0


def test_the_first_batch_is_split_only_when_the_model_is_already_loaded(trained, synth_bench, tmp_path):
    """A loaded Scorer: the first batch goes as a quarter, a quarter and a half (the device starts sooner).
    While the model loads, the workers prepare whole batches, which run faster than small ones."""
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Aesthetics", "Funniness"], batch_size=8, num_workers=2)
    loaded = Counting(Scorer.load(str(trained["qwen"])))
    ramped = run_benchmark(loaded, out=tmp_path / "loaded", **kw)
    loading = WaitingLoading(str(trained["qwen"]), mark=tmp_path / "prepared")
    whole = run_benchmark(loading, out=tmp_path / "loading", **kw)
    assert [n for n, _ in loaded.calls] == [2, 2, 4, 8] and [n for n, _ in loading.counting.calls] == [8, 8]
    for dim in ramped:   # the same answers in other batches: equal up to float rounding
        assert ramped[dim]["spearman"] == pytest.approx(whole[dim]["spearman"], abs=1e-6)
        assert ramped[dim]["mae"] == pytest.approx(whole[dim]["mae"], rel=1e-4)


def test_the_dtype_batches_are_prepared_in_is_the_one_the_weights_load_in(trained):
    for dtype in ("auto", "bfloat16"):
        loading = ScorerLoading(str(trained["qwen"]), dtype=dtype)
        assert loading.prepare.dtype == loading.load().model.dtype == (torch.float32 if dtype == "auto" else torch.bfloat16)


@pytest.mark.parametrize("mode", ["generate", "expected"])
def test_one_batch_of_several_dimensions(trained, synth_bench, mode):
    """Each item is parsed (and in expected mode read) on its own dimension: the same batch answered with
    one dimension for all gives, for each item, exactly what the mixed call gave it."""
    from cogip.errors import CogipError
    scorer = Scorer.load(str(trained["qwen"]))
    dims = ["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]
    items = [read_test_messages(synth_bench / f"test_msg_file/{d}/{d}_messages.json",
                                synth_bench / f"test_msg_file/{d}/{d}_scores.json", d)[1] for d in dims]
    batch = scorer.prepare([open_image(synth_bench / "cognition/cognition_images" / item.image) for item in items],
                           [item.prompt for item in items])
    mixed = scorer.answer_prepared(batch, dims, mode)
    for b, d in enumerate(dims):
        assert mixed[b] == scorer.answer_prepared(batch, d, mode)[b], d
    assert sum(a.ok for a in mixed) >= 3, mixed
    if mode == "expected":   # label probabilities over each item's own labels
        for a, d in zip(mixed, dims):
            labels = {lab for key in a.label_probs for lab in key.split("|")}
            assert a.ok <= (labels <= set(get_dimension(d).labels) and len(labels) > 0), (d, a.label_probs)
    with pytest.raises(CogipError, match="3 dimensions given for a batch of 4 items"):
        scorer.answer_prepared(batch, dims[:3], mode)


@pytest.mark.parametrize("family", ["qwen", "llama", "gemma"])
def test_expected_mode_reads_a_number_after_an_id_the_tokenizer_lacks(tiny_models, family):
    """Models pad their vocabulary past the tokenizer's (Qwen2.5-VL-7B: 152064 rows for 151665 tokens), and
    weights that are random or poorly trained do emit those ids, which have no token. A whole cog_test.sh
    call in expected mode stopped on one in front of the number; it is read, unsigned."""
    from cogip.evaluate.scorer import Answer
    from cogip.loss import NumberTokens
    scorer = Scorer.load(str(tiny_models[family]))
    tok = scorer.tokenizer
    unknown = len(tok) + 3
    scorer.numbers = NumberTokens.from_tokenizer(tok, len(tok) + 8)   # as a model whose vocabulary is padded
    assert tok.convert_ids_to_tokens([unknown]) == [None]
    dim = get_dimension("Emotional_Valence")
    columns, spans, at = scorer._score_columns([dim])
    column = {int(t): c for c, t in enumerate(columns)}

    def read(ids):   # the answer's every token certain: log-probability 0 on its own column
        logp = torch.full((len(ids), len(columns)), -30.0)
        for i, t in enumerate(ids):
            if t in column:
                logp[i, column[t]] = 0.0
        answer = Answer("", None, None, False)
        scorer._expect(answer, ids, logp, dim, spans, at)
        return answer.score

    def ids(text):
        return tok(text, add_special_tokens=False).input_ids
    assert read(ids("negative -2.500")) == pytest.approx(-2.5, abs=1e-3)   # the sign, where the tokenizer has it
    assert read(ids("positive") + [unknown] + ids("2.500")) == pytest.approx(2.5, abs=1e-3)


def test_pinned_pool_growth_in_timing():
    from cogip.accel.scoring import _pinned_growth
    before = {"num_host_alloc": 3, "host_alloc_time.total": 1_000_000, "allocated_bytes.current": 2 ** 29}
    after = {"num_host_alloc": 10, "host_alloc_time.total": 3_500_000, "allocated_bytes.current": 2 ** 31}
    assert _pinned_growth(before, after) == {"pinned_new_blocks": 7, "pinned_alloc_s": 2.5, "pinned_pool_gib": 2.0}
    assert _pinned_growth({}, {}) == {}   # no CUDA: nothing to say


def test_fast_pinning_joins_the_users_allocator_settings(monkeypatch):
    """On a GPU the loader's pinned blocks are page-locked by cudaHostRegister over 8 threads, added to
    whatever allocator settings the user has; settings that already say how to pin are left alone."""
    from cogip.accel.scoring import FAST_PINNING, _host_register, use_fast_pinning
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    env = {}
    assert use_fast_pinning(env) and env == {"PYTORCH_CUDA_ALLOC_CONF": FAST_PINNING}
    env = {"PYTORCH_ALLOC_CONF": "expandable_segments:True"}
    assert use_fast_pinning(env) and env == {"PYTORCH_ALLOC_CONF": "expandable_segments:True," + FAST_PINNING}
    mine = {"PYTORCH_CUDA_ALLOC_CONF": "pinned_use_background_threads:True"}
    assert not use_fast_pinning(mine) and mine == {"PYTORCH_CUDA_ALLOC_CONF": "pinned_use_background_threads:True"}
    monkeypatch.setenv("PYTORCH_CUDA_ALLOC_CONF", FAST_PINNING)
    assert _host_register()
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    env = {}
    assert not use_fast_pinning(env) and env == {}   # nothing to pin without CUDA


def test_profile_of_the_first_batches(trained, synth_bench, tmp_path):
    from cogip.errors import CogipError
    scorer = Scorer.load(str(trained["qwen"]))
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Funniness"], batch_size=2, mode="generate", pipeline=2)
    plain = run_benchmark(scorer, out=tmp_path / "plain", **kw)
    profiled = run_benchmark(scorer, out=tmp_path / "profiled", profile_batches=2, **kw)
    assert profiled == plain
    text = (tmp_path / "profiled" / "profile.txt").read_text()
    assert text.startswith("the loop's first 2 batches")
    timeline = json.loads(text.split("timeline: ", 1)[1].split("\n\n", 1)[0])
    assert timeline["wall_ms"] > 0
    assert "aten::mm" in text or "aten::addmm" in text   # the answering threads' operators are in it
    assert not (tmp_path / "plain" / "profile.txt").exists()
    # a window past the first batch (a compiled loop's tracing would fill the profile): batches 2-3 of 4
    windowed = run_benchmark(scorer, out=tmp_path / "windowed", profile_batches="1:3", **kw)
    assert windowed == plain
    text = (tmp_path / "windowed" / "profile.txt").read_text()
    assert text.startswith("the loop's batches 2 to 3, profiled from when 1 had been answered")
    part = json.loads(text.split("timeline: ", 1)[1].split("\n\n", 1)[0])
    assert 0 < part["wall_ms"] and ("aten::mm" in text or "aten::addmm" in text)
    for bad in ("3:3", "2:1", "x", "1:"):
        with pytest.raises(CogipError, match="--profile-batches"):
            run_benchmark(scorer, out=tmp_path / "bad", profile_batches=bad, **kw)
    assert not (tmp_path / "bad").exists()   # refused before anything is written


@pytest.mark.parametrize("mode", ["generate", "expected"])
def test_concurrent_batches_match_sequential(trained, synth_bench, mode):
    scorer = Scorer.load(str(trained["qwen"]), max_new_tokens=12)
    images = synth_bench / "cognition/cognition_images"
    dims = ["Aesthetics", "Funniness", "Emotional_Valence", "Memorability"]
    # one batch per dimension, then batches mixing two prompts of different lengths (left padding)
    jobs = [(d, [d, d]) for d in dims] + [(a, [a, b]) for a, b in zip(dims, dims[1:])]
    batches = [(scorer.prepare([open_image(images / f"{p}/{k:06d}.jpg") for k, p in enumerate(ps, start=n)],
                               [get_dimension(p).prompt for p in ps]), get_dimension(d))
               for n, (d, ps) in enumerate(jobs)]
    assert len({b["input_ids"].shape[1] for b, _ in batches}) >= 3
    stream = lambda: ((n, b, d, mode) for n, (b, d) in enumerate(batches))
    alone = list(speed_up(scorer).answer_stream(stream(), depth=1))
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)   # the threads interleave often
    try:
        together = list(speed_up(scorer).answer_stream(stream(), depth=3))
    finally:
        sys.setswitchinterval(interval)
    assert [n for n, _ in together] == list(range(len(batches)))
    assert together == alone
    threads = scorer.pipeline._pool
    assert list(speed_up(scorer).answer_stream(stream(), depth=3)) == alone and scorer.pipeline._pool is threads   # kept
    if mode == "expected":
        # real expected values compared, not only parse failures (the tiny model parses a few of its 12 answers;
        # which ones moves with any change in rounding during its training)
        assert sum(a.spread is not None for _, answers in alone for a in answers) >= 1


def test_bad_image_met_by_the_loader_first_is_the_checks_one_line(tiny_models, synth_bench, tmp_path):
    # the images are checked in the background while the first batches run: the loader's workers may meet
    # the missing or the corrupt image first
    from cogip.errors import CogipError
    bench = _broken(synth_bench, tmp_path)
    images = bench / "cognition/cognition_images/Aesthetics"
    (images / "000016.jpg").unlink()                         # test item 0
    (images / "000021.jpg").write_bytes(b"not a jpeg")       # test item 5
    scorer = Scorer.load(str(tiny_models["qwen"]), max_new_tokens=4)
    with pytest.raises(CogipError) as e:
        run_benchmark(scorer, bench / "test_msg_file", bench / "cognition/cognition_images", tmp_path / "out",
                      dims=["Aesthetics"], batch_size=8, num_workers=2)
    assert str(e.value).startswith(f"{images / '000016.jpg'}: item Aesthetics item 0: image not found (and 1 more)")
    assert "\n" not in str(e.value)
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]


def _stream_timed(scorer, batches, index_of, depth=3):
    """`scorer.answer_stream` over `batches`, each answer held 0.2 s (long enough that batches in flight together
    overlap) and timed: (answers in job order, {job: (start, end, frames traced meanwhile)})."""
    import time
    spans, real = {}, scorer.answer_prepared

    def timed(batch, dim, mode):
        j = index_of(batch)
        start, traced = time.perf_counter(), private.frames_traced()
        time.sleep(0.2)
        out = real(batch, dim, mode)
        spans[j] = (start, time.perf_counter(), private.frames_traced() - traced)
        return out

    scorer.answer_prepared = timed
    try:
        return list(speed_up(scorer).answer_stream(((j, b, "Aesthetics", "generate") for j, b in enumerate(batches)), depth)), spans
    finally:
        scorer.answer_prepared = real


def _overlap(spans, a, b) -> bool:
    return spans[a][0] < spans[b][1] and spans[b][0] < spans[a][1]


def _batches_of_new_sizes(scorer, n, seed):
    """n prepared batches of two random images each, every batch a shape of its own."""
    rng = np.random.default_rng(seed)
    sides = lambda: tuple(int(x) for x in rng.integers(56, 200, 2))
    batches = [scorer.prepare([Image.fromarray(rng.integers(0, 256, (*sides(), 3), dtype=np.uint8)) for _ in range(2)],
                              [get_dimension("Aesthetics").prompt] * 2) for _ in range(n)]
    assert len({b["pixel_values"].shape for b in batches}) == n
    return batches


def test_with_compiled_parts_new_shapes_run_alone_until_one_compiles_nothing(trained):
    """Compiling patches torch.nn.Module.__call__ process-wide while it traces: no other batch may run then.
    Real images differ in size, so nearly every batch has a shape of its own; running each new shape alone
    kept every batch alone. Now new shapes run alone only until one compiles nothing; after that batches
    overlap, and what would recompile runs uncompiled (stance eager_on_recompile): nothing is traced.
    A batch of a shape already run goes in flight before that, and a new shape after it still compiles."""
    import torch._dynamo
    torch._dynamo.reset()
    scorer = Scorer.load(str(trained["qwen"]), max_new_tokens=4, min_pixels=56 * 56, max_pixels=224 * 224)
    speed_up(scorer, "vision", compile_dynamic=None)   # torch's default: static graphs, then dynamic
    batches = _batches_of_new_sizes(scorer, 9, seed=0)
    batches.insert(1, batches[0])   # the first shape again: in flight while the compiled parts still compile
    job, seen = {id(b): j for j, b in reversed(list(enumerate(batches)))}, set()

    def index_of(batch):
        j = job[id(batch)] if id(batch) not in seen else 1   # batches[1] is batches[0]
        seen.add(id(batch))
        return j

    try:
        got, spans = _stream_timed(scorer, batches, index_of)
        assert [j for j, _ in got] == list(range(len(batches))) and all(len(a) == 2 for _, a in got)
        assert torch._dynamo.eval_frame._stance.stance == "default"   # the stance ends with the stream
        traced = [spans[j][2] for j in range(len(batches))]
        assert traced[0] > 0 and traced[1] == 0 and traced[2] > 0   # static graphs; the same shape; dynamic ones
        settled = next(j for j in range(2, len(batches)) if traced[j] == 0)   # the first new shape that traced nothing
        assert settled < len(batches) - 1
        for j in [0, *range(2, settled + 1)]:             # new shapes while compiling: alone
            assert not any(_overlap(spans, j, k) for k in spans if k != j)
        assert all(t == 0 for t in traced[settled:])      # in flight: nothing traced
        assert any(_overlap(spans, a, b) for a in range(settled + 1, len(batches)) for b in range(a + 1, len(batches)))
        compiled = private.frames_traced()
        sequential = list(speed_up(scorer).answer_stream(((j, b, "Aesthetics", "generate") for j, b in enumerate(batches)), depth=1))
        assert private.frames_traced() == compiled   # every batch found compiled code: none ran uncompiled for want of it
        assert [[x.text for x in a] for _, a in got] == [[x.text for x in a] for _, a in sequential]
    finally:
        torch._dynamo.reset()


def test_vision_blocks_compiled_dynamic_compile_once_for_images_of_varied_sizes(trained):
    """Compiled parts, by default with dynamic shapes from the first batch (cog_test.sh --compile-dynamic): the
    second new shape already traces nothing and the batches after it go in flight; the same answers as uncompiled."""
    import torch._dynamo
    torch._dynamo.reset()
    bounds = dict(max_new_tokens=4, min_pixels=56 * 56, max_pixels=224 * 224)
    scorer = Scorer.load(str(trained["qwen"]), **bounds)
    speed_up(scorer, "vision")
    batches = _batches_of_new_sizes(scorer, 6, seed=1)
    try:
        got, spans = _stream_timed(scorer, batches, lambda batch: next(i for i, b in enumerate(batches) if b is batch))
        traced = [spans[j][2] for j in range(len(batches))]
        assert traced[0] > 0 and all(t == 0 for t in traced[1:])   # one compile, for every size
        assert not any(_overlap(spans, j, k) for j in (0, 1) for k in spans if k != j)   # alone until one traced nothing
        assert any(_overlap(spans, a, b) for a in range(2, len(batches)) for b in range(a + 1, len(batches)))
    finally:
        torch._dynamo.reset()
    eager = Scorer.load(str(trained["qwen"]), **bounds)
    assert [[x.text for x in a] for _, a in got] == [[x.text for x in eager.answer_prepared(b, "Aesthetics", "generate")]
                                                    for b in batches]


def test_parse_failures_are_counted(tiny_models, synth_bench, tmp_path):
    run = cog_test("gemma", tiny_models["gemma"], synth_bench, tmp_path / "raw", MODE="generate")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "raw" / "summary.json").read_text())
    for dim, m in summary.items():
        records = read_records(tmp_path / "raw" / dim)
        failures = [r for r in records.values() if not r["ok"]]
        assert m["parse_rate"] == pytest.approx(1 - len(failures) / 8)
        assert all(r["score"] is None and r["error"] for r in failures)
    assert sum(m["parse_rate"] for m in summary.values()) < 4      # an untrained model fails to parse


def test_scorer_api(trained, synth_bench):
    scorer = Scorer.load(str(trained["qwen"]))
    images = [open_image(synth_bench / f"cognition/cognition_images/Emotional_Valence/{i:06d}.jpg") for i in range(3)]
    scores = scorer.score(images, "Emotional_Valence", batch_size=2)
    assert len(scores) == 3 and all(s is None or -3 <= s <= 3 for s in scores)


def _broken(synth_bench, tmp_path):
    bench = tmp_path / "bench"
    shutil.copytree(synth_bench, bench)
    return bench


@pytest.mark.parametrize("breakage,message", [
    ("missing_image", "Funniness/000020.jpg: item Funniness item 4: image not found"),
    ("lengths", "8 messages but 7 scores"),
    ("unknown_dim", "unknown dimension folder 'Beauty'"),
    ("adapter", "is an adapter of a llama model, not qwen"),
])
def test_bad_input_one_line_nothing_written(trained, tiny_models, synth_bench, tmp_path, breakage, message):
    bench, model, env = _broken(synth_bench, tmp_path), trained["qwen"], {}
    if breakage == "missing_image":
        (bench / "cognition/cognition_images/Funniness/000020.jpg").unlink()
    elif breakage == "lengths":
        f = bench / "test_msg_file/Memorability/Memorability_scores.json"
        f.write_text(json.dumps(json.loads(f.read_text())[:-1]))
    elif breakage == "unknown_dim":
        (bench / "test_msg_file/Beauty").mkdir()
    elif breakage == "adapter":
        adapter = tmp_path / "adapter"
        train(["--model_id", str(tiny_models["llama"]), "--data_path", str(bench / "cognition_training.json"),
               "--image_folder", str(bench / "cognition/cognition_images"), "--output_dir", str(adapter),
               "--max_steps", "1", "--per_device_train_batch_size", "2", "--report_to", "none", "--use_cpu", "True",
               "--save_strategy", "no"])
        model, env = adapter, {"BASE_MODEL": tiny_models["qwen"]}
    run = cog_test("qwen", model, bench, tmp_path / "out", **env)
    assert run.returncode == 2, run.stderr[-2000:]
    err = [line for line in run.stderr.splitlines() if "error" in line]
    assert len(err) == 1 and message in err[0] and "Traceback" not in run.stderr
    assert not [p for p in (tmp_path / "out").rglob("*") if p.is_file()]   # not a record, not a run file


def test_end_process_runs_exit_handlers_and_flushes_before_ending():
    # cog_test.sh's process ends through end_process (os._exit): what a normal exit does first must still happen,
    # the atexit handlers in order and the buffered output of a piped stdout, with the exit status kept
    code = ("import atexit, sys; from cogip.accel.private import end_process; "
            "atexit.register(lambda: print('second', flush=False)); atexit.register(lambda: print('first', end=' ')); "
            "print('answers', end=' '); sys.stderr.write('note'); end_process(3)")
    buffered = {k: v for k, v in os.environ.items() if k != "PYTHONUNBUFFERED"}   # as a plain shell runs it
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, env=buffered)
    assert (run.returncode, run.stdout, run.stderr) == (3, "answers first second\n", "note")


@pytest.mark.parametrize("family", ["qwen", "llama", "gemma"])
def test_accel_off_and_on_give_the_same_answers(trained, synth_bench, tmp_path, family):
    """cogip.accel's engine (faster kernels, loader workers, batches in flight, longest first) against the plain
    loop (`--accel off`): the same answers and scores, item by item (batches of other compositions: scores up
    to float rounding), and the same metrics."""
    kw = dict(test_dir=synth_bench / "test_msg_file", image_root=synth_bench / "cognition/cognition_images",
              dims=["Aesthetics", "Emotional_Valence"], batch_size=4, mode="expected")
    off = run_benchmark(Scorer.load(str(trained[family])), out=tmp_path / "off", accel=False, **kw)
    on = run_benchmark(Scorer.load(str(trained[family])), out=tmp_path / "on", num_workers=2, pipeline=2, **kw)
    assert json.loads((tmp_path / "off" / "timing.json").read_text())["accel"] == "off"
    for dim in kw["dims"]:
        plain, fast = read_records(tmp_path / "off" / dim), read_records(tmp_path / "on" / dim)
        assert sorted(plain) == sorted(fast) == list(range(8))
        assert [plain[i]["answer"] for i in plain] == [fast[i]["answer"] for i in plain]
        assert sum(plain[i]["ok"] for i in plain) >= 4   # a real comparison: most answers parse
        for i in plain:
            assert fast[i]["score"] == pytest.approx(plain[i]["score"], abs=1e-3), (dim, i)
        assert on[dim]["n"] == off[dim]["n"] and on[dim]["parse_rate"] == off[dim]["parse_rate"]
        if off[dim]["spearman"] is not None:
            assert on[dim]["spearman"] == pytest.approx(off[dim]["spearman"], abs=1e-3)
