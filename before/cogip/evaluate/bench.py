"""The benchmark loop behind `evaluation/<family>/cog_test.sh` (`python -m cogip.evaluate.bench`).

Per dimension, into OUT/<Dim>/:
  sample.json      the chosen item indices (reproducible: one random stream per dimension, seeded by
                   (seed, dimension name), so neither listing order nor the other dimensions matter)
  records.jsonl    one line per finished item, appended and flushed batch by batch (resume reads it)
  log.txt          prompt and answer of every item, readable
  metrics.json     Spearman (p, bootstrap CI), Pearson, MAE, MSE, label accuracy, parse rate, N
  scatter.png      predicted vs human
and OUT/summary.json, OUT/timing.json (items answered by this run, its wall time and images/s,
all ranks together; when the loader's workers had started (before the clock: they start while the
model loads, `model_load_s`) and the first batch and answers came,
when the loop took each prepared batch and the items done after each batch, Python's
garbage-collection pauses, and the loader's settings with what growing the pinned host-memory pool
cost; the whole call: when the process and `main` started, the seconds writing outputs, and `call_s` /
`call_images_per_s` from the process's start to its outputs written), OUT/summary.png, plus a printed table; with
--profile-batches N, OUT/profile[.rank<R>].txt: the profiler over the loop's start until N batches
are answered (cogip.profiling.report); with A:B, from when A batches are answered until B are.
Rerunning into OUT skips finished items; a killed run loses no finished item and ends with the same
metrics as an uninterrupted one.
Batches run across dimensions, so all but the last are full. With several processes (`accelerate
launch`), the items are dealt out to the ranks in turn, each appends to its own records file, and rank
0 gathers them in item order; the loop's clock starts when every rank has loaded its model, and
timing.json adds the other ranks' own timelines (timing.rank<R>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.bench import (append_jsonl, load_json, read_test_messages, test_dimension_folders, write_atomic,
                          write_json)
from ..data.images import check_images, open_image
from ..dims import DIMENSION_NAMES, get_dimension
from ..errors import CogipError, end_process, exit_code
from ..metrics import compute_metrics
from ..profiling import GCPauses, process_age

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


def scatter_plot(path: Path, dim_name: str, records: list[dict], metrics: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dim = get_dimension(dim_name)
    ok = [r for r in records if r["ok"]]
    fig, ax = plt.subplots(figsize=(4.2, 4.2))
    ax.scatter([r["reference"] for r in ok], [r["score"] for r in ok], s=10, alpha=0.6)
    ax.plot([dim.low, dim.high], [dim.low, dim.high], "k--", lw=0.8)
    ax.set_xlim(dim.low, dim.high), ax.set_ylim(dim.low, dim.high)
    rho = metrics["spearman"]
    ax.set_title(f"{dim_name}: ρ={rho:.3f}" if rho is not None else f"{dim_name}: ρ undefined", fontsize=10)
    ax.set_xlabel("human score"), ax.set_ylabel("model score")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def summary_plot(path: Path, summary: dict) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    dims = list(summary)
    rho = [summary[d]["spearman"] or 0.0 for d in dims]
    ci = [summary[d]["spearman_ci95"] for d in dims]
    err = [[max(r - (c[0] if c[0] is not None else r), 0) for r, c in zip(rho, ci)],
           [max((c[1] if c[1] is not None else r) - r, 0) for r, c in zip(rho, ci)]]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    ax.bar(range(len(dims)), rho, yerr=err, capsize=4, color="#4c72b0")
    ax.set_xticks(range(len(dims)), [d.replace("_", "\n") for d in dims])
    ax.axhline(0, color="k", lw=0.6)
    ax.set_ylim(-1, 1), ax.set_ylabel("Spearman ρ (95% CI)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def _longest_first(share: list[tuple[str, int]], plan: dict, image_root: Path, prepare) -> list[tuple[str, int]]:
    """The items ordered by the length of their sequences, longest first (ties in their order). A batch pads
    each item to its longest, and real images differ in size (Qwen: 256 to 1280 visual tokens by default), so
    batches of items in their listed order padded much; like lengths together pad little. The records and
    metrics do not depend on the order. Sizes come from the image headers; an image that cannot be read
    counts as its prompt alone here, and the image check reports it."""
    def size(pair):
        name, i = pair
        try:
            with Image.open(image_root / plan[name][0][i].image) as image:   # the header only
                return image.size
        except Exception:
            return None
    with ThreadPoolExecutor(8, thread_name_prefix="cogip-sizes") as pool:
        sizes = list(pool.map(size, share))
    lengths = [prepare.length(wh, plan[name][0][i].prompt) for wh, (name, i) in zip(sizes, share)]
    return [share[k] for k in sorted(range(len(share)), key=lambda k: -lengths[k])]


class _Batches(torch.utils.data.Dataset):
    """One element = one prepared batch (images decoded, processed, padded) of (dimension, item) pairs:
    what loader workers do while the GPU answers the previous batch."""

    def __init__(self, prepare, chunks: list[list[tuple[str, int]]], plan: dict, image_root: Path):
        self.prepare, self.chunks, self.plan, self.root = prepare, chunks, plan, image_root

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, j):
        chunk = self.chunks[j]
        items = [self.plan[name][0][i] for name, i in chunk]
        images = [open_image(self.root / item.image, f"{name} item {i}") for (name, i), item in zip(chunk, items)]
        return chunk, self.prepare(images, [item.prompt for item in items])


def _pinned_stats() -> dict:
    """The pinned host-memory pool's growth counters (torch.cuda.host_memory_stats; empty without CUDA)."""
    try:
        stats = torch.cuda.host_memory_stats() if torch.cuda.is_available() else {}
    except (AttributeError, RuntimeError):   # an older torch
        stats = {}
    return {k: stats[k] for k in ("num_host_alloc", "host_alloc_time.total", "allocated_bytes.current") if k in stats}


# How the loader's pinned blocks (~390 MB for a batch of 32 Qwen images) are page-locked: malloc and
# cudaHostRegister with the pages touched by 8 threads, instead of one cudaHostAlloc per block. With
# cudaHostAlloc the pool's growth held up the first answers by 2-3 s (docs/benchmarks.md, ninth round).
# Only for a process that runs one loop (`python -m cogip.evaluate.bench`, cog_test.sh): a later loop in
# the same process, whose workers fork after the pool has grown, waited 16-26 s for its first batch
# (8 workers, 7.5 GiB), most likely because Linux copies registered (DMA-pinned) pages into a forked child.
FAST_PINNING = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"
_ALLOC_CONF_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")


def use_fast_pinning(environ=os.environ) -> bool:
    """Add FAST_PINNING to the allocator settings (read when CUDA starts, so call it first, and only in a
    process that runs one loop: see FAST_PINNING), unless they already say how to pin; True if added.
    No-op without CUDA."""
    if not torch.cuda.is_available():
        return False
    name = next((v for v in _ALLOC_CONF_VARS if environ.get(v)), "PYTORCH_CUDA_ALLOC_CONF")
    current = environ.get(name, "")
    if "pinned_" in current:
        return False
    environ[name] = f"{current},{FAST_PINNING}" if current else FAST_PINNING
    return True


def _host_register() -> bool:
    return any("pinned_use_cuda_host_register:true" in os.environ.get(v, "").lower() for v in _ALLOC_CONF_VARS)


def _pinned_growth(before: dict, after: dict) -> dict:
    """What growing the pinned pool cost during the run: its new blocks, the seconds spent creating them
    (page-locking is slow: tens of ms per batch-sized block), and its size after the run."""
    out = {}
    if "num_host_alloc" in after:
        out["pinned_new_blocks"] = after["num_host_alloc"] - before.get("num_host_alloc", 0)
    if "host_alloc_time.total" in after:   # microseconds
        out["pinned_alloc_s"] = round((after["host_alloc_time.total"] - before.get("host_alloc_time.total", 0)) / 1e6, 3)
    if "allocated_bytes.current" in after:
        out["pinned_pool_gib"] = round(after["allocated_bytes.current"] / 2 ** 30, 2)
    return out


def _device_pool_stats() -> dict:
    """The device caching allocator's cudaMalloc count and reserved bytes (empty without CUDA)."""
    if not torch.cuda.is_available():
        return {}
    stats = torch.cuda.memory_stats()
    return {"mallocs": stats.get("num_device_alloc", 0), "reserved": stats.get("reserved_bytes.all.current", 0)}


def _device_pool_growth(before: dict, after: dict) -> dict:
    """cudaMallocs during the run (each may wait for the device) and the pool's size after it; a pool that
    still grows in the first batches is one suspect for their slowness (docs/benchmarks.md, fifteenth round)."""
    if not after:
        return {}
    return {"device_mallocs": after["mallocs"] - before.get("mallocs", 0),
            "device_reserved_gib": round(after["reserved"] / 2 ** 30, 2)}


_main_started: float | None = None   # perf_counter when main() began, its imports done: timing.json's start-up


def _startup(started: float) -> dict:
    """Before the loop's clock (negative seconds): when the process started and when `main` began (with
    cog_test.sh; None where not known), so timing.json shows the start-up beside the loop."""
    age = process_age()
    now = time.perf_counter()
    return {"process_started_s": round(now - age - started, 3) if age is not None else None,
            "main_started_s": round(_main_started - started, 3) if _main_started is not None else None}


def profile_window(spec: str | int) -> tuple[int, int]:
    """--profile-batches: N (the loop's first N batches) or A:B (from when A batches are answered until B
    are: e.g. past a compiled loop's first batch, whose tracing would fill the profile) -> (A, B)."""
    text = str(spec)
    try:
        first, last = (int(x) for x in text.split(":")) if ":" in text else (0, int(text))
    except ValueError:
        raise CogipError(f"--profile-batches takes N or A:B (batches answered), not {text!r}") from None
    if not 0 <= first < last and (first, last) != (0, 0):
        raise CogipError(f"--profile-batches {first}:{last}: needs 0 <= A < B")
    return first, last


def _profiler(path: Path, window: tuple[int, int]):
    """(start, stop) for torch.profiler over `window` (profile_window's; (0, 0): none). stop() writes the report
    (host operators, the CUDA runtime's calls, kernels) to path once. For where a run's start-up goes."""
    first, last = window
    state = {"stop": None}

    def start() -> None:
        from ..profiling import start_profile
        if last and state["stop"] is None:
            state["stop"] = start_profile(all_threads=True)   # the batches are answered on threads of their own

    def stop() -> None:
        if state["stop"] in (None, "done"):
            return
        text, state["stop"] = state["stop"](), "done"
        path.parent.mkdir(parents=True, exist_ok=True)
        span = f"batch {last}" if last == first + 1 else f"batches {first + 1} to {last}"
        what = (f"the loop's first {last} batches, profiled from its start" if first == 0 else
                f"the loop's {span}, profiled from when {first} had been answered")
        write_atomic(path, what + "\n\n" + text)
    return start, stop


def run_benchmark(scorer, test_dir: str | os.PathLike, image_root: str | os.PathLike, out: str | os.PathLike,
                  dims: list[str] | None = None, sample_n: int | None = None, seed: int = PUBLISHED_SEED,
                  batch_size: int = 8, mode: str = "generate", accelerator=None, run_info: dict | None = None,
                  num_workers: int = 0, pipeline: int = 1, profile_batches: int | str = 0, prefetch: int = 2,
                  pin_memory: bool | None = None, sampling: str = "published", indices_from: str | None = None) -> dict:
    """`scorer`: a Scorer, or a ScorerLoading, whose model then loads while the loader prepares the first
    batches (the clock starts once it has loaded, on every rank)."""
    test_dir, image_root, out = Path(test_dir), Path(image_root), Path(out)
    rank = accelerator.process_index if accelerator else 0
    world = accelerator.num_processes if accelerator else 1
    is_main = rank == 0
    window = profile_window(profile_batches)
    # the published loop runs the dimensions in the order the folder lists them: its draw depends on it
    names = list(dims) if dims else test_dimension_folders(test_dir, listed_order=sampling == "published")
    read = {name: read_test_messages(test_dir / name / f"{name}_messages.json",
                                     test_dir / name / f"{name}_scores.json", name) for name in names}
    given = read_sample_indices(indices_from, names) if indices_from else None
    chosen = plan_samples({name: len(items) for name, items in read.items()}, sample_n, seed, sampling, given)
    plan = {name: (read[name], chosen[name]) for name in names}
    pairs = [(image_root / items[i].image, f"{name} item {i}") for name, (items, idx) in plan.items() for i in idx]

    info = {"mode": mode, "seed": seed, "sample_n": sample_n, "sampling": "given" if given else sampling,
            **(run_info or {})}
    todo = {}
    for name, (items, indices) in plan.items():
        run_file = out / name / "run.json"
        if run_file.is_file() and json.loads(run_file.read_text()) != {**info, "indices": indices}:
            raise CogipError("this output folder holds a different run (model, mode or sample); use a new --out",
                             file=str(run_file))
        finished = read_records(out / name)
        todo[name] = [i for i in indices if i not in finished]
    # This rank's share is fixed by position in the whole sample (every dimension's items, one after the
    # other), then thinned by what is finished. A share of what is left would shift as soon as another rank,
    # started earlier, has written records.
    left = {(name, i) for name, indices in todo.items() for i in indices}
    share = [pair for pair in [(name, i) for name, (_, indices) in plan.items() for i in indices][rank::world]
             if pair in left]
    share = _longest_first(share, plan, image_root, scorer.prepare)
    # Batches run across dimensions (each answer is parsed on its own item's), so every batch but the last
    # is full: per dimension, a rank's share would end in a part-batch, which runs nearly as long as a full one.
    chunks = [share[s:s + batch_size] for s in range(0, len(share), batch_size)]
    from .scorer import LOW_PRECISION, ScorerLoading, compile_report
    loading = isinstance(scorer, ScorerLoading)
    if num_workers and chunks and batch_size >= 8 and not loading:
        # ramp up: the first batch split into a quarter, a quarter and a half, each prepared by its own
        # worker, so the device starts after a quarter of a batch's preparation instead of a whole one.
        # Not while the model loads: the workers prepare whole batches meanwhile, and small ones run at
        # ~2/3 of a full batch's rate (docs/benchmarks.md, sixteenth round).
        first, q = chunks[0], batch_size // 4
        chunks[:1] = [part for part in (first[:q], first[q:2 * q], first[2 * q:]) if part]
    bar = tqdm(total=len(share), desc=f"answering ({mode})", disable=not is_main)
    shard = f"records.rank{rank}.jsonl" if world > 1 else "records.jsonl"
    ranks_ready = None
    start_profiling, profiling = _profiler(out / (f"profile.rank{rank}.txt" if world > 1 else "profile.txt"), window)

    def start_clock() -> float:   # once every rank has its model loaded (timing.json: ranks_ready_s)
        nonlocal ranks_ready
        if window[0] == 0:
            start_profiling()
        if accelerator:
            waiting = time.perf_counter()
            accelerator.wait_for_everyone()
            ranks_ready = time.perf_counter() - waiting
        return time.perf_counter()

    def start_loader(prepare):
        # each worker keeps `prefetch` batches ready; pinned, each is a block of the host's pinned-memory pool
        loader = torch.utils.data.DataLoader(_Batches(prepare, chunks, plan, image_root), batch_size=None,
                                             num_workers=num_workers, pin_memory=pin_memory,
                                             prefetch_factor=prefetch if num_workers else None)
        return iter(loader) if chunks else iter(())

    started = None if loading else start_clock()
    pin_memory = torch.cuda.is_available() if pin_memory is None else pin_memory
    pinned_before = _pinned_stats()
    # The loader's workers start (fork) now, before any thread of this run; with a ScorerLoading, before the
    # model loads too, so that the first batches are prepared while the weights load.
    loader_started = time.perf_counter()
    prepared = start_loader(scorer.prepare)
    workers_started = time.perf_counter()
    # Every image is checked (decoded) on a background thread while the first batches run, and nothing is
    # written until the check has passed: a bad image still stops the run before any output, in one line.
    check = ThreadPoolExecutor(1, thread_name_prefix="cogip-check")
    checked_at = []   # when the check ended (timing.json: check_done_s): its threads share the cores with the start

    def check_all() -> list[str]:   # a few threads: the loader's workers need the cores more at the start
        problems = check_images(pairs, workers=min(4, os.cpu_count() or 1), progress=False)
        checked_at.append(time.perf_counter())
        return problems
    checking = check.submit(check_all)
    check.shutdown(wait=False)   # the thread ends with the check
    checked = False
    model_load = None
    if loading:
        expected_dtype = scorer.prepare.dtype
        scorer = scorer.load()
        model_load = time.perf_counter() - workers_started
        if scorer.prepare.dtype != expected_dtype and expected_dtype in LOW_PRECISION:
            # the weights loaded in another dtype than their config said: prepare again, as the model needs
            prepared = start_loader(scorer.prepare)
        started = start_clock()
    device_before = _device_pool_stats()

    def passed_check() -> None:
        nonlocal checked
        if checked:
            return
        problems = checking.result()
        if problems:
            raise CogipError(problems[0] + (f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""))
        checked = True
        for name, (_, indices) in plan.items():
            (out / name).mkdir(parents=True, exist_ok=True)
            if is_main:
                write_json(out / name / "run.json", {**info, "indices": indices})
                write_json(out / name / "sample.json", indices)
                write_json(out / f"sample_indices_{name}.json", indices)   # the published loop's file

    # (seconds, items taken) as the loop takes each prepared batch: it takes one as soon as an answering
    # thread is free, so a batch taken later than that means the loader was behind
    arrived = []

    def mark(log: list, chunk) -> None:   # (seconds since the start, items so far) for timing.json
        log.append((round(time.perf_counter() - started, 3), len(chunk) + (log[-1][1] if log else 0)))

    # each batch's padded tokens (items x padded length), in the order taken: a batch's device time goes with
    # them, so the loop's rate once running and its start-up's lag against that rate can be read off
    # (benchmarks/loop_rate.py); with images of varied sizes, batches of the longest come first
    padded_tokens = []

    def jobs():
        for chunk, batch in prepared:
            mark(arrived, chunk)
            padded_tokens.append(batch["input_ids"].numel())   # a BatchPreparer's batch: every family's has them
            yield chunk, batch, [get_dimension(name) for name, _ in chunk], mode

    answered = []   # (seconds, items done) after each batch, for timing.json
    with GCPauses() as gc_pauses:   # a full collection stalls every batch in flight: timing.json says how long
        try:
            for chunk, answers in scorer.answer_stream(jobs(), depth=pipeline):
                mark(answered, chunk)
                passed_check()
                by_dimension = {}
                for (name, i), a in zip(chunk, answers):
                    item = plan[name][0][i]
                    by_dimension.setdefault(name, []).append({
                        "index": i, "image": item.image, "prompt": item.prompt, "answer": a.text, "label": a.label,
                        "score": a.score, "ok": a.ok, "error": a.error, "spread": a.spread,
                        "label_probs": a.label_probs, "reference": item.score, "reference_label": item.label})
                for name, records in by_dimension.items():
                    append_jsonl(out / name / shard, records)
                bar.update(len(chunk))
                if len(answered) == window[0]:
                    start_profiling()
                if len(answered) == window[1]:
                    profiling()
        except Exception:
            passed_check()   # a bad image met by the loader first: the check's one line, not a worker's traceback
            raise
    passed_check()   # also when nothing was left to answer
    profiling()   # a run of fewer batches than asked for
    bar.close()
    # this rank's own timeline; rank 0's timing.json adds the other ranks' (written as timing.rank<R>.json)
    own = {"items": len(share), "seconds": round(time.perf_counter() - started, 3),
           "ranks_ready_s": round(ranks_ready, 3) if accelerator else None,
           # before the clock (negative) when the loader started while the model loaded
           "loader_started_s": round(loader_started - started, 3), "workers_started_s": round(workers_started - started, 3),
           "model_load_s": round(model_load, 3) if loading else None,
           "first_batch_s": arrived[0][0] if arrived else None,
           "first_answers_s": answered[0][0] if answered else None,
           "check_done_s": round(checked_at[0] - started, 3) if checked_at else None, "arrived": arrived,
           "answered": answered, "padded_tokens": padded_tokens}
    if accelerator:
        if not is_main:
            write_json(out / f"timing.rank{rank}.json", own)
        accelerator.wait_for_everyone()
    if not is_main:
        return {}
    loop_end = time.perf_counter()
    seconds, n_run = loop_end - started, sum(len(t) for t in todo.values())
    ranks = [json.loads((out / f"timing.rank{r}.json").read_text()) for r in range(1, world)]
    timing = {"items": n_run, "seconds": round(seconds, 3), "processes": world,
              "batch_size": batch_size, "mode": mode, "pipeline": pipeline,
              "images_per_s": round(n_run / seconds, 3) if n_run else None,
              **{k: v for k, v in own.items() if k not in ("items", "seconds")},
              "gc": gc_pauses.summary(),
              "loader": {"workers": num_workers, "prefetch": prefetch, "pin_memory": pin_memory,
                         "host_register": pin_memory and _host_register(),
                         **_pinned_growth(pinned_before, _pinned_stats())},
              "device_pool": _device_pool_growth(device_before, _device_pool_stats()),
              "compile": compile_report() if scorer.compiled else None,
              **({"rank0": {"items": own["items"], "seconds": own["seconds"]},
                  "other_ranks": ranks} if world > 1 else {}),
              **_startup(started)}
    write_json(out / "timing.json", timing)
    summary = {}
    for name, (items, indices) in plan.items():
        folder, dim = out / name, get_dimension(name)
        done = read_records(folder)
        records = [done[i] for i in indices]
        metrics = compute_metrics([r["score"] for r in records], [r["reference"] for r in records], dim,
                                  pred_labels=[r["label"] for r in records], seed=seed)
        metrics["mode"] = mode
        write_json(folder / "metrics.json", metrics)
        write_atomic(folder / "log.txt", "".join(
            f"[{r['index']}] {r['image']}\nPROMPT: {r['prompt']}\nANSWER: {r['answer']}\n"
            f"PARSED: {r['label']} {r['score']}  REFERENCE: {r['reference_label']} {r['reference']}"
            f"{'  PARSE FAILURE: ' + r['error'] if not r['ok'] else ''}\n\n" for r in records))
        scatter_plot(folder / "scatter.png", name, records, metrics)
        summary[name] = metrics
    if is_main and summary:
        write_json(out / "summary.json", summary)
        summary_plot(out / "summary.png", summary)
        print(format_summary(summary))
    timing["outputs_s"] = round(time.perf_counter() - loop_end, 3)   # metrics, logs and plots
    if timing["process_started_s"] is not None:   # the whole call as a user waits for it, but its exit
        call = time.perf_counter() - started - timing["process_started_s"]
        timing["call_s"], timing["call_images_per_s"] = round(call, 3), round(n_run / call, 3) if n_run else None
    write_json(out / "timing.json", timing)
    return summary


def format_summary(summary: dict) -> str:
    head = f"{'dimension':<18}{'N':>6}{'parsed':>8}{'spearman':>10}{'95% CI':>17}{'pearson':>9}{'MAE':>8}{'MSE':>8}{'label acc':>10}"
    fmt = lambda x, w, p=3: f"{x:>{w}.{p}f}" if isinstance(x, (int, float)) else f"{'—':>{w}}"
    rows = [head]
    for d, m in summary.items():
        lo, hi = m["spearman_ci95"]
        ci = f"[{lo:.3f}, {hi:.3f}]" if lo is not None else "—"
        rows.append(f"{d:<18}{m['n']:>6}{m['parse_rate']:>8.1%}{fmt(m['spearman'], 10)}{ci:>17}"
                    f"{fmt(m['pearson'], 9)}{fmt(m['mae'], 8)}{fmt(m['mse'], 8)}{fmt(m.get('label_accuracy'), 10)}")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="cogip evaluate", description=__doc__.split("\n")[0])
    p.add_argument("--model-id", required=True, help="full checkpoint (hub id or folder) or LoRA adapter folder")
    p.add_argument("--base-model", help="base model of an adapter (default: recorded in the adapter)")
    p.add_argument("--family", choices=("qwen", "llama", "gemma"))
    p.add_argument("--test-dir", default="data/test_msg_file", help="folder of <Dim>/<Dim>_messages.json")
    p.add_argument("--image-root", default="data/cognition/cognition_images")
    p.add_argument("--out", required=True)
    p.add_argument("--dims", nargs="+", choices=DIMENSION_NAMES, help="subset of dimensions (default: all found)")
    p.add_argument("--sample-n", type=int, help="items per dimension (published: 120); default all")
    p.add_argument("--seed", type=int, default=PUBLISHED_SEED)
    p.add_argument("--sampling", choices=SAMPLINGS, default="published",
                   help="how --sample-n items are drawn: published (default: the published loop's one stream, "
                        "dimensions in the folder's order or --dims's, the same items as a published run) or "
                        "per-dimension (a stream per dimension: its items independent of the others)")
    p.add_argument("--indices-from", metavar="DIR", help="score exactly the items of an earlier run (published or "
                   "ours): DIR/sample_indices_<Dim>.json")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--mode", choices=("generate", "expected"), default="generate")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    p.add_argument("--min-pixels", type=int), p.add_argument("--max-pixels", type=int)
    p.add_argument("--compile", nargs="?", const="vision", default="none", metavar="PARTS",
                   help="torch.compile the blocks of PARTS: vision (the default when given without a value), "
                        "language, all (GPU; for long runs: compiling delays the first answers by ~6 s, or ~2.5 s "
                        "where an earlier run left its inductor cache, and loading takes ~2 s longer; with "
                        "--pipeline 3 on one H200, the loop over the published test set's size ~12%% faster than "
                        "the default cold, ~18%% warm; over 480 images ~14%% warm, the whole call about even; "
                        "docs/benchmarks.md)")
    p.add_argument("--compile-dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="with --compile: the vision blocks compiled with dynamic shapes from the first batch, one "
                        "compile for images of every size (default); --no-compile-dynamic: torch's default, static "
                        "graphs first and dynamic ones at the first new size")
    p.add_argument("--num-workers", type=int, help="batch-preparing loader workers (default: 8 on GPU, 0 on CPU)")
    p.add_argument("--pipeline", type=int, help="batches in flight on the device at once (default: 2 on GPU, 1 on CPU; "
                                                "each holds its own activations)")
    p.add_argument("--prefetch", type=int, default=2, help="prepared batches each loader worker keeps ready (2)")
    p.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="pin prepared batches for asynchronous copies (default: on a GPU)")
    p.add_argument("--profile-batches", default="0", metavar="N|A:B",
                   help="profile the loop from its start until N batches are answered, or from when A are until B "
                        "are: OUT/profile.txt (slows them)")
    p.add_argument("--lora-path", help="a LoRA adapter folder to score on --model-id as its base (the published "
                                        "Gemma script's flag; --model-id ADAPTER --base-model BASE does the same)")
    from ..published import EVALUATE, translate
    try:
        a = p.parse_args(translate(argv, EVALUATE, "cogip evaluate"))   # the published cog_test.py's flags too
    except CogipError as e:
        print(f"cogip evaluate: error: {e}", file=sys.stderr)
        return 2
    if a.lora_path:
        a.base_model, a.model_id = a.base_model or a.model_id, a.lora_path
    global _main_started
    _main_started = time.perf_counter()
    use_fast_pinning()   # before anything starts CUDA
    return exit_code("cogip evaluate", _evaluate, a)


def _evaluate(a) -> None:
    import torch
    from accelerate import PartialState
    # on CPUs accelerate runs the processes of a launch (torchrun) together only when asked (gloo)
    state = PartialState(cpu=not torch.cuda.is_available())
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:   # else each would answer every item into the same files
        raise CogipError(f"launched as one of {launched} processes, but accelerate runs {state.num_processes}; "
                         f"launch with `accelerate launch --num_processes N` (NUM_GPUS=N in cog_test.sh)", file=a.out)
    dtype = a.dtype if a.dtype == "auto" else getattr(torch, a.dtype)
    from .scorer import ScorerLoading
    finished = False
    try:
        # the processor now, the weights inside the loop's start-up, while its loader prepares the first batches
        scorer = ScorerLoading(a.model_id, a.base_model, a.family, dtype=dtype, device=str(state.device),
                               max_new_tokens=a.max_new_tokens, min_pixels=a.min_pixels, max_pixels=a.max_pixels,
                               compile=a.compile, compile_dynamic=a.compile_dynamic)
        run_benchmark(scorer, a.test_dir, a.image_root, a.out, a.dims, a.sample_n, a.seed, a.batch_size, a.mode,
                      accelerator=state if state.num_processes > 1 else None,
                      run_info={"model_id": a.model_id, "base_model": a.base_model},
                      num_workers=a.num_workers if a.num_workers is not None else (8 if torch.cuda.is_available() else 0),
                      pipeline=a.pipeline if a.pipeline is not None else (2 if torch.cuda.is_available() else 1),
                      profile_batches=a.profile_batches, prefetch=a.prefetch, pin_memory=a.pin_memory,
                      sampling=a.sampling, indices_from=a.indices_from)
        finished = True
    finally:
        if state.num_processes > 1:
            if finished:   # rank 0 may still be writing the metrics: a rank closing first would abort it (gloo)
                state.wait_for_everyone()
            state.destroy_process_group()   # NCCL warns of leaked resources otherwise


if __name__ == "__main__":
    end_process(main())
