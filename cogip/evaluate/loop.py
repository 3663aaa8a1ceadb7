"""The CogIP-Bench loop: a model answers every sampled test item; its answers are compared with the human
scores (`cogip evaluate`, `evaluation/<family>/cog_test.sh`).

Into OUT/<Dim>/: run.json (what was asked), sample.json (the items), records.jsonl (one line per answered
item, appended batch by batch: a rerun into OUT resumes from it and ends with the same metrics), log.txt,
metrics.json (Spearman with its bootstrap CI, Pearson, MAE, MSE, label accuracy, parse rate), scatter.png;
into OUT: summary.json, summary.png, timing.json, sample_indices_<Dim>.json (the published loop's file).

The steps, in order: plan the items (sampling, resume), batches and answers (an engine: the plain one here,
or `cogip.accel`'s, which only changes the time), records, metrics and plots. With several processes
(`accelerate launch`), the items are dealt out to the ranks in turn and rank 0 writes the metrics.
"""

from __future__ import annotations

import json
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from tqdm import tqdm

from ..data.images import check_images, open_image, raise_first
from ..data.layout import append_jsonl, load_json, read_test_messages, test_dimension_folders, write_json
from ..dims import get_dimension
from ..errors import CogipError
from .report import write_dimension, write_summary

PLAIN_BATCH = 8   # the plain loop's batch when none is given

PUBLISHED_SEED = 19


SAMPLINGS = ("published", "per-dimension")


def sample_indices(n_items: int, sample_n: int | None, seed: int, dimension: str) -> list[int]:
    """`per-dimension` sampling: each dimension's own stream, seeded by (seed, dimension), so a dimension's
    items do not depend on which other dimensions run or in what order."""
    if not sample_n or sample_n >= n_items:
        return list(range(n_items))
    return sorted(random.Random(f"{seed}/{dimension}").sample(range(n_items), sample_n))


def plan_samples(counts: dict[str, int], sample_n: int | None, seed: int, sampling: str = "published",
                 given: dict[str, list[int]] | None = None) -> dict[str, list[int]]:
    """The items to score per dimension (`counts`: items per dimension, in the order they run).

    published: the published loop's draw, exactly: Python's `random` seeded once, then dimension by
    dimension `sorted(random.sample(range(N), n))` from that one stream, and all items (no draw) where
    N <= n. per-dimension: `sample_indices`. `given` (from --indices-from) overrides both."""
    if sampling not in SAMPLINGS:
        raise CogipError(f"--sampling {sampling!r}: expected one of {', '.join(SAMPLINGS)}")
    stream = random.Random(seed)
    plan = {}
    for name, n in counts.items():
        if given is not None:   # an earlier run's items; a dimension it drew none for, whole
            bad = [i for i in given.get(name, []) if not (isinstance(i, int) and 0 <= i < n)]
            if bad:
                raise CogipError(f"index {bad[0]!r} is not one of the {n} items of {name}")
            plan[name] = sorted(set(given[name])) if name in given else list(range(n))
        elif sampling == "per-dimension":
            plan[name] = sample_indices(n, sample_n, seed, name)
        elif sample_n and sample_n < n:
            plan[name] = sorted(stream.sample(range(n), sample_n))
        else:
            plan[name] = list(range(n))
    return plan


def read_sample_indices(folder: str | os.PathLike, dims: list[str]) -> dict[str, list[int]]:
    """`sample_indices_<Dim>.json` of an earlier run (the published loop's or ours): the items to score again.
    A dimension without one is scored whole, as the published loop wrote none where it drew none."""
    folder = Path(folder)
    if not folder.is_dir():
        raise CogipError("no such folder (--indices-from)", file=str(folder))
    found = {}
    for name in dims:
        f = folder / f"sample_indices_{name}.json"
        if f.is_file():
            found[name] = load_json(f)
            if not isinstance(found[name], list):
                raise CogipError("expected a JSON list of item indices", file=str(f))
        else:
            print(f"cogip evaluate: {folder} has no sample_indices_{name}.json: every {name} item is scored",
                  file=sys.stderr)
    if not found:
        raise CogipError("no sample_indices_<Dim>.json here (--indices-from)", file=str(folder))
    return found


def read_records(folder: Path) -> dict[int, dict]:
    """Finished items from every records file; a line cut off by a kill is ignored (redone)."""
    done = {}
    for path in sorted(folder.glob("records*.jsonl")):
        for line in path.read_text(encoding="utf-8").splitlines():
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            done[rec["index"]] = rec
    return done


@dataclass
class LoopOptions:
    test_dir: str = "data/test_msg_file"                    # <Dim>/<Dim>_messages.json and _scores.json
    image_root: str = "data/cognition/cognition_images"
    out: str = "outputs/eval"
    dims: list[str] | None = None                          # default: every dimension folder found
    sample_n: int | None = None                             # items per dimension (published: 120); None: all
    seed: int = PUBLISHED_SEED
    sampling: str = "published"                             # or per-dimension (see plan_samples)
    indices_from: str | None = None                         # score exactly an earlier run's items
    batch_size: int | None = None                           # None: the engine's choice
    mode: str = "generate"                                  # or expected
    run_info: dict = field(default_factory=dict)            # recorded in run.json (model, base model)


def run_benchmark(scorer, options: LoopOptions, engine=None, accelerator=None) -> dict:
    """Score `scorer` (a Scorer, or a ScorerLoading whose weights the engine loads) on the bench; returns the
    per-dimension metrics (rank 0; {} elsewhere). `engine`: None for the plain loop, or cogip.accel's."""
    o, out, image_root = options, Path(options.out), Path(options.image_root)
    engine = engine or PlainEngine()
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1

    # 1. the plan: each dimension's items and the sample of them to score, minus those already answered
    test_dir = Path(o.test_dir)
    names = list(o.dims) if o.dims else test_dimension_folders(test_dir, listed_order=o.sampling == "published")
    items = {name: read_test_messages(test_dir / name / f"{name}_messages.json",
                                      test_dir / name / f"{name}_scores.json", name) for name in names}
    given = read_sample_indices(o.indices_from, names) if o.indices_from else None
    chosen = plan_samples({name: len(its) for name, its in items.items()}, o.sample_n, o.seed, o.sampling, given)
    info = {"mode": o.mode, "seed": o.seed, "sample_n": o.sample_n, "sampling": "given" if given else o.sampling,
            **o.run_info}
    left = set()
    for name, indices in chosen.items():
        run_file = out / name / "run.json"
        if run_file.is_file() and json.loads(run_file.read_text()) != {**info, "indices": indices}:
            raise CogipError("this output folder holds a different run (model, mode or sample); use a new --out",
                             file=str(run_file))
        finished = read_records(out / name)
        left |= {(name, i) for i in indices if i not in finished}
    # a rank's share is fixed by position in the whole sample, then thinned by what is finished
    share = [pair for pair in [(n, i) for n, indices in chosen.items() for i in indices][rank::world] if pair in left]
    every_image = [(image_root / items[n][i].image, f"{n} item {i}") for n, indices in chosen.items() for i in indices]

    # 2. batches and answers; 3. records, appended as each batch is answered
    records_file = f"records.rank{rank}.jsonl" if world > 1 else "records.jsonl"
    planned = False
    bar = tqdm(total=len(share), desc=f"answering ({o.mode})", disable=rank != 0, unit="image")
    for chunk, answers in engine.answers(scorer, share, items, image_root, o.batch_size, o.mode, out,
                                         accelerator=accelerator, check=every_image):
        if not planned:   # the images have passed their check: the run's files, then its records
            planned = _write_plan(out, chosen, info, rank == 0)
        by_dimension = {}
        for (name, i), a in zip(chunk, answers):
            item = items[name][i]
            by_dimension.setdefault(name, []).append({
                "index": i, "image": item.image, "prompt": item.prompt, "answer": a.text, "label": a.label,
                "score": a.score, "ok": a.ok, "error": a.error, "spread": a.spread, "label_probs": a.label_probs,
                "reference": item.score, "reference_label": item.label})
        for name, records in by_dimension.items():
            append_jsonl(out / name / records_file, records)
        bar.update(len(chunk))
    bar.close()
    if not planned:
        _write_plan(out, chosen, info, rank == 0)
    engine.loop_done(len(left))   # timing.json: the items this run answered, every rank's
    if rank != 0:
        return {}

    # 4. metrics and plots, from every rank's records
    summary = {}
    for name, indices in chosen.items():
        done = read_records(out / name)
        summary[name] = write_dimension(out / name, name, [done[i] for i in indices], o.mode, o.seed)
    if summary:
        write_summary(out, summary)
    engine.outputs_done()
    return summary


def _write_plan(out: Path, chosen: dict, info: dict, is_main: bool) -> bool:
    for name, indices in chosen.items():
        (out / name).mkdir(parents=True, exist_ok=True)
        if is_main:
            write_json(out / name / "run.json", {**info, "indices": indices})
            write_json(out / name / "sample.json", indices)
            write_json(out / f"sample_indices_{name}.json", indices)
    return True


class PlainEngine:
    """The plain loop (`--accel off`): every image checked, then one batch at a time in plan order."""

    def answers(self, scorer, share, items, image_root, batch_size, mode, out, accelerator=None, check=None):
        from .scorer import ScorerLoading
        raise_first(check_images(check or [], progress=False))
        scorer = scorer.load() if isinstance(scorer, ScorerLoading) else scorer
        batch_size = batch_size or PLAIN_BATCH
        self.out, self.accelerator, self.started = out, accelerator, time.perf_counter()
        self.info = {"processes": accelerator.num_processes if accelerator else 1, "batch_size": batch_size,
                     "mode": mode, "accel": "off"}
        for s in range(0, len(share), batch_size):
            chunk = share[s:s + batch_size]
            its = [items[name][i] for name, i in chunk]
            images = [open_image(image_root / it.image, f"{name} item {i}") for (name, i), it in zip(chunk, its)]
            yield chunk, scorer.answer(images, [it.prompt for it in its], [get_dimension(n) for n, _ in chunk], mode)

    def loop_done(self, n_run: int) -> None:
        seconds = time.perf_counter() - self.started
        if self.accelerator:
            self.accelerator.wait_for_everyone()
        if not self.accelerator or self.accelerator.is_main_process:
            write_json(self.out / "timing.json", {"items": n_run, "seconds": round(seconds, 3),
                                                  "images_per_s": round(n_run / seconds, 3) if n_run else None,
                                                  **self.info})

    def outputs_done(self) -> None:
        pass
