"""The benchmark loop's speed work: `FastEngine`, which `cogip.evaluate.loop` runs its batches through
unless `--accel off`. Every answer is the same as the plain engine's (tested); only the time differs.

What it does, from the outside in:
- batches prepared (decoded, processed, padded, pinned) by loader workers, started while the model
  loads; items ordered longest first so that a batch pads little; the first batch split to start sooner;
- every image checked on a background thread instead of before the run (nothing is written until the
  check has passed, so a bad image still stops the run before any output);
- several batches in flight on the device (threads, one CUDA stream each), so one batch's host-side work
  overlaps another's kernels; cuDNN's SDPA kept out (it builds a plan per shape and thread);
- the model's exact faster kernels (`attention`, `vision_matmuls`) and, with --compile, compiled blocks;
- timing.json's timeline, --profile-batches, the pinned-memory settings, and the process ended without
  the interpreter's teardown once the outputs are written.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import threading
import time
from collections import deque
from collections.abc import Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm

from ..data.images import check_images, open_image, raise_first
from ..data.layout import write_atomic, write_json
from ..dims import get_dimension
from ..errors import CogipError
from . import private
from .attention import use_fast_vision_attention, use_packed_prefill
from .auto import PLAIN_BATCH, Choice, choose, weights_bytes
from .blocks import compile_blocks, parse_parts
from .profiling import GCPauses, process_age
from .vision_matmuls import use_fast_vision_matmuls


@dataclass
class ScoringOptions:
    num_workers: int | None = None      # loader workers (None: 8 on a GPU, 0 on a CPU)
    pipeline: int | None = None         # batches in flight (None: chosen, cogip.accel.auto)
    prefetch: int = 2                   # prepared batches each worker keeps ready
    pin_memory: bool | None = None      # None: on a GPU
    compile: str = "auto"               # auto | none | vision | language | all (cogip.accel.auto)
    compile_dynamic: bool = True        # vision blocks compiled with dynamic shapes from the first batch
    profile_batches: str = "0"          # N or A:B


def add_arguments(p: argparse.ArgumentParser) -> None:
    """The loop's speed options (docs/performance.md); none changes an answer."""
    g = p.add_argument_group("speed (cogip.accel; none of these changes an answer)")
    g.add_argument("--accel", choices=("on", "off"), default="on",
                   help="off: the plain loop (one batch at a time, the model as transformers builds it)")
    g.add_argument("--compile", nargs="?", const="vision", default="auto", metavar="PARTS",
                   help="torch.compile the blocks of PARTS: vision (when given without a value), language, all, none; "
                        "auto (default): all on a GPU when the run is long enough to repay compiling, else none")
    g.add_argument("--compile-dynamic", action=argparse.BooleanOptionalAction, default=True,
                   help="with --compile: vision blocks compiled for every image size at once (default)")
    g.add_argument("--num-workers", type=int, help="loader workers preparing batches (default: 8 on a GPU, 0 on a CPU)")
    g.add_argument("--pipeline", type=int, help="batches in flight on the device (default: 3 with compiled blocks, "
                                                "else 2 on a GPU; 1 on a CPU)")
    g.add_argument("--prefetch", type=int, default=2, help="prepared batches each loader worker keeps ready (2)")
    g.add_argument("--pin-memory", action=argparse.BooleanOptionalAction, default=None,
                   help="pin prepared batches for asynchronous copies (default: on a GPU)")
    g.add_argument("--profile-batches", default="0", metavar="N|A:B",
                   help="profile the loop until N batches are answered, or from A to B: OUT/profile.txt")


def engine_for(args) -> "FastEngine | None":
    """The engine of parsed `add_arguments` options: a FastEngine, or None (the plain loop) with --accel off.
    Call before anything starts CUDA: it sets the pinned-memory allocator's options."""
    if args.accel == "off":
        return None
    if args.compile != "auto":
        parse_parts(args.compile, "--compile parts")   # a bad value: one line, before anything loads
    use_fast_pinning()
    return FastEngine(ScoringOptions(args.num_workers, args.pipeline, args.prefetch, args.pin_memory, args.compile,
                                     args.compile_dynamic, args.profile_batches))


# ---------------------------------------------------------------- the model
def speed_up(scorer, compile: str = "none", compile_dynamic: bool | None = True) -> "Pipeline":
    """The exact faster kernels on a Scorer's model, and its compiled blocks; returns the Pipeline that
    answers its batches in flight. Applied once per scorer."""
    if getattr(scorer, "pipeline", None) is None:
        model = scorer.model
        use_fast_vision_attention(model)
        use_packed_prefill(model)
        use_fast_vision_matmuls(model)
        compiled = compile_blocks(model, scorer.family, compile, dynamic=compile_dynamic) > 0
        scorer.pipeline = Pipeline(scorer, compiled)
    return scorer.pipeline


class Pipeline:
    """`answer_stream` keeps several batches in flight, each in its own thread and CUDA stream: HF `generate`
    leaves the GPU idle whenever the host syncs (a stop check per decoding step, the answer parsing), and
    another batch's kernels fill those gaps. Exact: every batch runs the same computation as alone.

    With compiled parts, a batch of a shape they have not run yet runs alone while they may still compile
    (tracing patches `nn.Module.__call__` process-wide, which another thread's calls would run into). Once a
    batch of a new shape has compiled nothing, every batch runs in flight under the stance
    `eager_on_recompile`: what would recompile runs uncompiled instead."""

    def __init__(self, scorer, compiled: bool = False, cudnn_attention: bool = False):
        self.scorer, self.compiled, self.cudnn_attention = scorer, compiled, cudnn_attention
        self._compiled_shapes: set[tuple] = set()
        self._compiling = compiled
        self._pool = self._pool_local = self._pool_depth = None

    def attention_backends(self):
        """SDPA without cuDNN's backend: it builds (and compiles) a plan for every new shape in every thread,
        which made the first batches seconds slower and, with batches in flight, failed intermittently
        (pytorch#190321). Process-wide in torch, so held for the whole stream."""
        if self.cudnn_attention or self.scorer.model.device.type != "cuda":
            return contextlib.nullcontext()
        from torch.nn.attention import SDPBackend, sdpa_kernel
        return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH])

    def answer_stream(self, jobs: Iterable[tuple], depth: int = 1) -> Iterator[tuple]:
        """(key, prepared batch, dimension(s), mode) jobs -> (key, answers), in job order."""
        with self.attention_backends():
            yield from self._stream(jobs, depth)

    def _stream(self, jobs: Iterable[tuple], depth: int) -> Iterator[tuple]:
        answer = self.scorer.answer_prepared
        if depth <= 1:
            for key, batch, dim, mode in jobs:
                yield key, answer(batch, dim, mode)
            return
        model = self.scorer.model
        per_thread_state(model)
        cuda = model.device.type == "cuda"
        if cuda:   # the other streams read weights written on the default one
            torch.cuda.synchronize(model.device)
        pool, local = self._threads(depth)

        def run(batch, dim, mode):
            if cuda and not hasattr(local, "stream"):
                local.stream = torch.cuda.Stream(model.device)
            with torch.cuda.stream(local.stream) if cuda else contextlib.nullcontext():
                return answer(batch, dim, mode)

        pending: deque = deque()
        stance = None
        try:
            for key, batch, dim, mode in jobs:
                shape = self._compiling and tuple((k, tuple(v.shape)) for k, v in batch.items() if torch.is_tensor(v))
                if shape and shape not in self._compiled_shapes:
                    while pending:   # may compile: alone
                        done_key, done = pending.popleft()
                        yield done_key, done.result()
                    traced = private.frames_traced()
                    answers = pool.submit(run, batch, dim, mode).result()
                    self._compiled_shapes.add(shape)
                    self._compiling = private.frames_traced() > traced
                    yield key, answers
                    continue
                if self.compiled and not self._compiling and stance is None:
                    stance = torch.compiler.set_stance("eager_on_recompile")
                pending.append((key, pool.submit(run, batch, dim, mode)))
                while len(pending) > depth:   # one more than the threads, queued: none waits for this loop
                    key, done = pending.popleft()
                    yield key, done.result()
            while pending:
                key, done = pending.popleft()
                yield key, done.result()
        finally:
            for _, left in pending:   # interrupted: let what runs finish, so the next call starts clean
                left.cancel() or left.exception()
            if stance is not None:
                stance.__exit__(None, None, None)

    def _threads(self, depth: int):
        """The answering threads (and their CUDA streams), kept across calls: the allocator caches memory
        per stream, so new ones would allocate again for every run."""
        if self._pool_depth != depth:
            if self._pool is not None:
                self._pool.shutdown(wait=True)
            self._pool = ThreadPoolExecutor(depth, thread_name_prefix="cogip-answer")
            self._pool_local, self._pool_depth = threading.local(), depth
        return self._pool, self._pool_local


class _PerThread:
    """A module attribute that each thread sees on its own."""

    def __init__(self, name: str):
        self.name = name

    def __get__(self, obj, owner=None):
        if obj is None:
            return self
        return getattr(obj.__dict__.setdefault("_cogip_threads", threading.local()), self.name, None)

    def __set__(self, obj, value):
        setattr(obj.__dict__.setdefault("_cogip_threads", threading.local()), self.name, value)


# Qwen2.5-VL writes its position offsets on the module at prefill; some transformers versions read them
# back while decoding
PER_CALL_STATE = ("rope_deltas",)


def per_thread_state(model) -> None:
    """Give every module that keeps per-call state on itself a per-thread copy of it, so that concurrent
    `generate` calls do not read each other's."""
    for module in model.modules():
        names = [n for n in PER_CALL_STATE if n in vars(module)]
        if names and not isinstance(vars(type(module)).get(names[0]), _PerThread):
            cls = type(module)
            module.__class__ = type(cls.__name__, (cls,), {n: _PerThread(n) for n in names})
            for n in names:
                setattr(module, n, vars(module).pop(n))


# ---------------------------------------------------------------- the order of the items
class Lengths:
    """The tokens an item's sequence will have: its chat text's, plus its image's visual tokens where they
    vary with its size (Qwen's processor: its grid within the pixel bounds, merged 2x2)."""

    def __init__(self, prepare):
        self.prepare, self._prompt_tokens = prepare, {}

    def __call__(self, image_size: tuple[int, int] | None, prompt: str) -> tuple[int, int]:
        """(tokens, of which visual tokens)."""
        p = self.prepare
        if prompt not in self._prompt_tokens:
            text = p.family.chat_prompt(p.processor, prompt)
            self._prompt_tokens[prompt] = len(p.processor.tokenizer(text, add_special_tokens=False)["input_ids"])
        visual = visual_tokens(p.processor, *image_size) if image_size else 0
        return self._prompt_tokens[prompt] + visual, visual


def visual_tokens(processor, width: int, height: int) -> int:
    """Tokens an image of this size adds beyond its one placeholder; 0 for processors whose images add a
    fixed length (Gemma: 256 each; Mllama: cross-attention)."""
    ip = processor.image_processor
    if not hasattr(ip, "merge_size"):
        return 0
    factor = ip.patch_size * ip.merge_size
    resized = private.qwen_resized(height, width, factor, ip.size.shortest_edge, ip.size.longest_edge)
    return 0 if resized is None else (resized[0] // factor) * (resized[1] // factor) - 1


def longest_first(share: list[tuple[str, int]], items: dict, image_root: Path, prepare
                  ) -> tuple[list[tuple[str, int]], tuple[int, int]]:
    """The items ordered by the length of their sequences, longest first (ties in their order): a batch pads
    each item to its longest, so like lengths together pad little. Sizes come from the image headers. Also
    the longest item's (tokens, visual tokens)."""
    def size(pair):
        name, i = pair
        try:
            with Image.open(image_root / items[name][i].image) as image:   # the header only
                return image.size
        except Exception:   # counts as its prompt alone; the image check reports it
            return None
    with ThreadPoolExecutor(8, thread_name_prefix="cogip-sizes") as pool:
        sizes = list(pool.map(size, share))
    length = Lengths(prepare)
    lengths = [length(wh, items[name][i].prompt) for wh, (name, i) in zip(sizes, share)]
    order = sorted(range(len(share)), key=lambda k: -lengths[k][0])
    return [share[k] for k in order], (lengths[order[0]] if order else (0, 0))


class _Batches(torch.utils.data.Dataset):
    """One element = one prepared batch of (dimension, item) pairs: what loader workers do while the GPU
    answers the previous batch."""

    def __init__(self, prepare, chunks: list[list[tuple[str, int]]], items: dict, image_root: Path):
        self.prepare, self.chunks, self.items, self.root = prepare, chunks, items, image_root

    def __len__(self):
        return len(self.chunks)

    def __getitem__(self, j):
        chunk = self.chunks[j]
        items = [self.items[name][i] for name, i in chunk]
        images = [open_image(self.root / item.image, f"{name} item {i}") for (name, i), item in zip(chunk, items)]
        return chunk, self.prepare(images, [item.prompt for item in items])


# ---------------------------------------------------------------- host memory
# The loader's pinned blocks (~390 MB for a batch of 32 Qwen images) page-locked by malloc and cudaHostRegister
# with 8 threads touching the pages, instead of one slow cudaHostAlloc per block. Only for a process that runs
# one loop (cog_test.sh): a later loop's workers, forked after the pool had grown, waited many seconds for
# their first batch (Linux copies registered pages into a forked child).
FAST_PINNING = "pinned_use_cuda_host_register:True,pinned_num_register_threads:8"
_ALLOC_CONF_VARS = ("PYTORCH_ALLOC_CONF", "PYTORCH_CUDA_ALLOC_CONF")


def use_fast_pinning(environ=os.environ) -> bool:
    """Add FAST_PINNING to the allocator settings (read when CUDA starts), unless they already say how to
    pin; True if added. No-op without CUDA."""
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


def _pinned_stats() -> dict:
    try:
        stats = torch.cuda.host_memory_stats() if torch.cuda.is_available() else {}
    except (AttributeError, RuntimeError):
        stats = {}
    return {k: stats[k] for k in ("num_host_alloc", "host_alloc_time.total", "allocated_bytes.current") if k in stats}


def _pinned_growth(before: dict, after: dict) -> dict:
    """The pinned pool's new blocks during the run, the seconds creating them, and its size after it."""
    out = {}
    if "num_host_alloc" in after:
        out["pinned_new_blocks"] = after["num_host_alloc"] - before.get("num_host_alloc", 0)
    if "host_alloc_time.total" in after:   # microseconds
        out["pinned_alloc_s"] = round((after["host_alloc_time.total"] - before.get("host_alloc_time.total", 0)) / 1e6, 3)
    if "allocated_bytes.current" in after:
        out["pinned_pool_gib"] = round(after["allocated_bytes.current"] / 2 ** 30, 2)
    return out


def _device_pool_stats() -> dict:
    if not torch.cuda.is_available():
        return {}
    stats = torch.cuda.memory_stats()
    return {"mallocs": stats.get("num_device_alloc", 0), "reserved": stats.get("reserved_bytes.all.current", 0)}


def _device_pool_growth(before: dict, after: dict) -> dict:
    if not after:
        return {}
    return {"device_mallocs": after["mallocs"] - before.get("mallocs", 0),
            "device_reserved_gib": round(after["reserved"] / 2 ** 30, 2)}


# ---------------------------------------------------------------- profiling
def profile_window(spec: str | int) -> tuple[int, int]:
    """--profile-batches: N (the first N batches) or A:B (from when A batches are answered until B are)."""
    text = str(spec)
    try:
        first, last = (int(x) for x in text.split(":")) if ":" in text else (0, int(text))
    except ValueError:
        raise CogipError(f"--profile-batches takes N or A:B (batches answered), not {text!r}") from None
    if not 0 <= first < last and (first, last) != (0, 0):
        raise CogipError(f"--profile-batches {first}:{last}: needs 0 <= A < B")
    return first, last


class _Profile:
    """torch.profiler over a window of batches; stop() writes the report (host operators, the CUDA runtime's
    calls, kernels) once."""

    def __init__(self, path: Path, window: tuple[int, int]):
        self.path, (self.first, self.last), self._stop = path, window, None

    def start(self) -> None:
        from .profiling import start_profile
        if self.last and self._stop is None:
            self._stop = start_profile(all_threads=True)   # the batches are answered on threads of their own

    def stop(self) -> None:
        if self._stop in (None, "done"):
            return
        text, self._stop = self._stop(), "done"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        span = f"batch {self.last}" if self.last == self.first + 1 else f"batches {self.first + 1} to {self.last}"
        what = (f"the loop's first {self.last} batches, profiled from its start" if self.first == 0 else
                f"the loop's {span}, profiled from when {self.first} had been answered")
        write_atomic(self.path, what + "\n\n" + text)


# ---------------------------------------------------------------- the engine
MAIN_STARTED: list[float] = []   # perf_counter when the entry point's main began: timing.json's start-up


class FastEngine:
    """Runs the loop's batches fast. `answers` yields (chunk, answers) in the order it answers them, with
    every image checked before the first; `loop_done` and `outputs_done` write timing.json."""

    def __init__(self, options: ScoringOptions | None = None):
        self.o = options or ScoringOptions()
        self.window = profile_window(self.o.profile_batches)   # a bad window: one line, before anything loads
        self.scorer = None

    def answers(self, scorer, share: list[tuple[str, int]], items: dict, image_root: Path, batch_size: int | None,
                mode: str, out: Path, accelerator=None, check: list | None = None) -> Iterator[tuple]:
        from ..evaluate.scorer import LOW_PRECISION, ScorerLoading
        o, cuda = self.o, torch.cuda.is_available()
        loading = isinstance(scorer, ScorerLoading)
        workers = o.num_workers if o.num_workers is not None else (8 if cuda else 0)
        pin = cuda if o.pin_memory is None else o.pin_memory
        self.rank = accelerator.process_index if accelerator else 0
        self.world = accelerator.num_processes if accelerator else 1
        share, longest = longest_first(share, items, image_root, scorer.prepare)
        self.share = share
        self.choice = choice = self._choose(scorer, loading, len(share), longest, batch_size, cuda)
        if self.rank == 0 and share:
            tqdm.write(choice.line(), file=sys.stderr)   # above the loop's progress bar
        batch_size, depth, compile_parts = choice.batch_size, choice.pipeline, choice.compile
        self.depth = depth
        self.accelerator, self.mode, self.batch_size, self.out = accelerator, mode, batch_size, out
        self.loader_info = {"workers": workers, "prefetch": o.prefetch, "pin_memory": pin,
                            "host_register": pin and _host_register()}
        chunks = [share[s:s + batch_size] for s in range(0, len(share), batch_size)]
        if workers and chunks and batch_size >= 8 and not loading:
            # ramp-up: the first batch as a quarter, a quarter and a half, each prepared by its own worker, so
            # the device starts after a quarter of a batch's preparation (not while the model loads: then the
            # workers have whole batches ready)
            first, q = chunks[0], batch_size // 4
            chunks[:1] = [part for part in (first[:q], first[q:2 * q], first[2 * q:]) if part]
        profile = _Profile(out / (f"profile.rank{self.rank}.txt" if self.world > 1 else "profile.txt"), self.window)
        self.ranks_ready = None

        def start_clock() -> float:   # once every rank has its model loaded
            if self.window[0] == 0:
                profile.start()
            if accelerator:
                waiting = time.perf_counter()
                accelerator.wait_for_everyone()
                self.ranks_ready = time.perf_counter() - waiting
            return time.perf_counter()

        def start_loader(prepare):
            loader = torch.utils.data.DataLoader(_Batches(prepare, chunks, items, image_root), batch_size=None,
                                                 num_workers=workers, pin_memory=pin,
                                                 prefetch_factor=o.prefetch if workers else None)
            return iter(loader) if chunks else iter(())

        self.started = None if loading else start_clock()
        self.pinned_before = _pinned_stats()
        # the workers fork now, before any thread of this run and, with a ScorerLoading, before the model loads
        self.loader_started = time.perf_counter()
        prepared = start_loader(scorer.prepare)
        self.workers_started = time.perf_counter()
        # every image decoded on a background thread while the first batches run; nothing yielded before it passed
        checker = ThreadPoolExecutor(1, thread_name_prefix="cogip-check")
        self.checked_at = []

        def check_all() -> list[str]:   # a few threads: the loader's workers need the cores more at the start
            problems = check_images(check or [], workers=min(4, os.cpu_count() or 1), progress=False)
            self.checked_at.append(time.perf_counter())
            return problems
        checking = checker.submit(check_all)
        checker.shutdown(wait=False)
        checked = False
        self.model_load = None
        if loading:
            expected_dtype = scorer.prepare.dtype
            scorer = scorer.load()
            self.model_load = time.perf_counter() - self.workers_started
            if scorer.prepare.dtype != expected_dtype and expected_dtype in LOW_PRECISION:
                prepared = start_loader(scorer.prepare)   # the weights loaded in another dtype: prepare again
        self.scorer = scorer
        pipeline = speed_up(scorer, compile_parts, o.compile_dynamic)
        if loading:
            self.started = start_clock()
        self.device_before = _device_pool_stats()

        def passed_check() -> None:
            nonlocal checked
            if not checked:
                raise_first(checking.result())
                checked = True

        self.arrived, self.answered, self.padded_tokens = [], [], []   # timing.json's timeline

        def mark(log: list, chunk) -> None:   # (seconds since the start, items so far)
            log.append((round(time.perf_counter() - self.started, 3), len(chunk) + (log[-1][1] if log else 0)))

        def jobs():
            for chunk, batch in prepared:
                mark(self.arrived, chunk)
                self.padded_tokens.append(batch["input_ids"].numel())
                yield chunk, batch, [get_dimension(name) for name, _ in chunk], mode

        with GCPauses() as self.gc_pauses:   # a full collection stalls every batch in flight
            try:
                for chunk, answers in pipeline.answer_stream(jobs(), depth=depth):
                    mark(self.answered, chunk)
                    passed_check()
                    yield chunk, answers
                    if len(self.answered) == self.window[0]:
                        profile.start()
                    if len(self.answered) == self.window[1]:
                        profile.stop()
            except torch.OutOfMemoryError:
                passed_check()
                done = self.answered[-1][1] if self.answered else 0
                raise CogipError(f"out of GPU memory answering batches of {batch_size} with {depth} in flight "
                                 f"(batch {choice.why['batch_size']}); {done} items were answered and kept: rerun "
                                 f"with a smaller --batch-size or --pipeline 1 to go on", file=str(out)) from None
            except Exception:
                passed_check()   # a bad image met by the loader first: the check's one line, not a worker's traceback
                raise
        passed_check()   # also when nothing was left to answer
        profile.stop()

    def _choose(self, scorer, loading: bool, n_items: int, longest: tuple[int, int], batch_size: int | None,
                cuda: bool) -> Choice:
        """The settings not given (cogip.accel.auto), from the model's config before its weights load."""
        o, fam = self.o, scorer.family
        config = scorer.config if loading else scorer.model.config
        dtype = scorer.prepare.dtype
        weights = 0
        free = None
        if config is None:   # loading the weights will say why, in one line
            batch_size = batch_size or PLAIN_BATCH
        if cuda and not batch_size:
            weights = weights_bytes(fam.model_cls(), config, dtype.itemsize) if loading else 0
            device = torch.device(scorer.device if loading else scorer.model.device)
            free = torch.cuda.mem_get_info(device if device.type == "cuda" else None)[0]
        return choose(n_items, longest, fam.name, config, dtype, weights, batch_size, o.pipeline, o.compile, cuda,
                      free_bytes=free)

    def loop_done(self, n_run: int) -> None:
        """timing.json of the loop (every rank's timeline; rank 0 writes it once all ranks are done)."""
        out, rank, world = self.out, self.rank, self.world
        own = {"items": len(self.share), "seconds": round(time.perf_counter() - self.started, 3),
               "ranks_ready_s": round(self.ranks_ready, 3) if self.accelerator else None,
               "loader_started_s": round(self.loader_started - self.started, 3),
               "workers_started_s": round(self.workers_started - self.started, 3),
               "model_load_s": round(self.model_load, 3) if self.model_load is not None else None,
               "first_batch_s": self.arrived[0][0] if self.arrived else None,
               "first_answers_s": self.answered[0][0] if self.answered else None,
               "check_done_s": round(self.checked_at[0] - self.started, 3) if self.checked_at else None,
               "arrived": self.arrived, "answered": self.answered, "padded_tokens": self.padded_tokens}
        if self.accelerator:
            if rank:
                write_json(out / f"timing.rank{rank}.json", own)
            self.accelerator.wait_for_everyone()
        if rank:
            return
        self.loop_end = time.perf_counter()
        seconds = self.loop_end - self.started
        ranks = [json.loads((out / f"timing.rank{r}.json").read_text()) for r in range(1, world)]
        self.timing = {"items": n_run, "seconds": round(seconds, 3), "processes": world,
                       "batch_size": self.batch_size, "mode": self.mode, "pipeline": self.depth,
                       "chosen": {"compile": self.choice.compile, "why": self.choice.why},
                       "images_per_s": round(n_run / seconds, 3) if n_run else None,
                       **{k: v for k, v in own.items() if k not in ("items", "seconds")},
                       "gc": self.gc_pauses.summary(),
                       "loader": {**self.loader_info, **_pinned_growth(self.pinned_before, _pinned_stats())},
                       "device_pool": _device_pool_growth(self.device_before, _device_pool_stats()),
                       "compile": private.compile_costs() if self.scorer.pipeline.compiled else None,
                       **({"rank0": {"items": own["items"], "seconds": own["seconds"]}, "other_ranks": ranks}
                          if world > 1 else {}),
                       **self._startup()}
        write_json(out / "timing.json", self.timing)

    def outputs_done(self) -> None:
        """timing.json with the outputs' seconds and the whole call's rate (the process's start to here)."""
        timing, n_run = self.timing, self.timing["items"]
        timing["outputs_s"] = round(time.perf_counter() - self.loop_end, 3)
        if timing["process_started_s"] is not None:
            call = time.perf_counter() - self.started - timing["process_started_s"]
            timing["call_s"], timing["call_images_per_s"] = round(call, 3), round(n_run / call, 3) if n_run else None
        write_json(self.out / "timing.json", timing)

    def _startup(self) -> dict:
        """Before the loop's clock (negative seconds): when the process and `main` started."""
        age, now = process_age(), time.perf_counter()
        return {"process_started_s": round(now - age - self.started, 3) if age is not None else None,
                "main_started_s": round(MAIN_STARTED[-1] - self.started, 3) if MAIN_STARTED else None}

    @staticmethod
    def end_process(code: int):
        """The finished process ends without the interpreter's teardown (seconds of freeing what the OS frees)."""
        private.end_process(code)
