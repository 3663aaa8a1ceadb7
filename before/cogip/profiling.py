"""Where a stretch of work spends its time, shared by the SFT entry point (`--profile_step`,
`--timeline_step`), the benchmark loop's timing.json and the benchmark scripts, so every figure in
docs/benchmarks.md reads the same way:

- `start_profile`, `timeline` / `report`: a torch.profiler run's GPU busy and idle time, collectives,
  the host's waits on the device, and the top operators;
- `GCPauses`: Python's garbage collections while active;
- `process_age`: how long ago the process started (a whole call's start-up, before any of its code);
- `HostStacks`: sampled Python stacks, where the host's time goes;
- `BlockTimeline`: when each repeated block began on the device and on the host, without the profiler."""

from __future__ import annotations

import gc
import json
import os
import sys
import threading
import time
from collections import defaultdict
from functools import partial

import torch


def process_age() -> float | None:
    """Seconds since this process started (from Linux's /proc, to 10 ms), so a run's timing can say what
    its start-up took before any of its own code ran (Python, imports); None where /proc has no answer."""
    try:
        with open("/proc/self/stat") as f:
            start_ticks = int(f.read().rsplit(")", 1)[1].split()[19])   # field 22, the start in clock ticks
        with open("/proc/uptime") as f:
            uptime = float(f.read().split()[0])
        return max(0.0, uptime - start_ticks / os.sysconf("SC_CLK_TCK"))
    except (OSError, ValueError, IndexError):
        return None


HOST_WAITS = ("cudaStreamSynchronize", "cudaEventSynchronize", "cudaDeviceSynchronize", "cudaStreamWaitEvent")


def _union_ns(intervals: list[tuple[int, int]]) -> int:
    total, end = 0, None
    for s, e in sorted(intervals):
        if end is None or s > end:
            total, end = total + (e - s), e
        elif e > end:
            total, end = total + (e - end), e
    return total


def timeline(prof) -> dict:
    """Milliseconds: the profiled wall time, GPU busy time (union over streams), its idle rest, kernel
    time per stream, collective (NCCL) kernel time, and the host's calls that wait on the device."""
    events = prof.profiler.kineto_results.events()
    if not events:
        return {"wall_ms": 0.0}
    start = min(e.start_ns() for e in events)
    stop = max(e.end_ns() for e in events)
    gpu, per_stream, nccl = [], defaultdict(int), 0
    waits: dict[str, list] = defaultdict(lambda: [0, 0])
    for e in events:
        if e.device_type() == torch.autograd.DeviceType.CUDA:
            gpu.append((e.start_ns(), e.end_ns()))
            per_stream[e.device_resource_id()] += e.duration_ns()
            if "nccl" in e.name().lower():
                nccl += e.duration_ns()
        elif e.name() in HOST_WAITS:
            waits[e.name()][0] += 1
            waits[e.name()][1] += e.duration_ns()
    busy = _union_ns(gpu)
    ms = 1e-6
    return {"wall_ms": round((stop - start) * ms, 2), "gpu_busy_ms": round(busy * ms, 2),
            "gpu_idle_ms": round((stop - start - busy) * ms, 2) if gpu else None,
            "kernel_ms_per_stream": {str(k): round(v * ms, 2) for k, v in sorted(per_stream.items())},
            "nccl_kernel_ms": round(nccl * ms, 2),
            "host_waits": {k: {"calls": n, "ms": round(t * ms, 2)} for k, (n, t) in sorted(waits.items())}}


def report(prof, rows: int = 30) -> str:
    """The timeline, then the operators by device time and by host (self) time."""
    tl = timeline(prof)
    cuda = tl.get("gpu_busy_ms", 0) > 0
    avg = prof.key_averages()
    parts = ["timeline: " + json.dumps(tl, indent=1)]
    if cuda:
        parts.append(avg.table(sort_by="self_cuda_time_total", row_limit=rows, max_name_column_width=70))
    parts.append(avg.table(sort_by="self_cpu_time_total", row_limit=rows, max_name_column_width=70))
    return "\n\n".join(parts)


def start_profile(all_threads: bool = False):
    """torch.profiler from now on, over the CPU and the GPU where there is one, the device synchronised
    at both ends; returns `stop() -> report text`. all_threads: every thread's operators, not only the
    caller's (for work done on threads of its own, like the benchmark loop's batches)."""
    from torch.profiler import ProfilerActivity, profile
    cuda = torch.cuda.is_available()
    options = {}
    if all_threads:
        from torch._C._profiler import _ExperimentalConfig
        options["experimental_config"] = _ExperimentalConfig(profile_all_threads=True)
    if cuda:
        torch.cuda.synchronize()
    prof = profile(activities=[ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else []), **options)
    prof.start()

    def stop() -> str:
        if cuda:
            torch.cuda.synchronize()
        prof.stop()
        return report(prof)
    return stop


class GCPauses:
    """Python's garbage collections while active: how many, and their seconds, per generation. A full
    (generation 2) collection holds the interpreter lock, so it stalls every thread of the process: all
    batches in flight wait for it at once."""

    def __init__(self):
        self.collections, self.seconds = [0, 0, 0], [0.0, 0.0, 0.0]
        self._started: dict[int, float] = {}

    def _callback(self, phase: str, info: dict) -> None:
        if phase == "start":
            self._started[threading.get_ident()] = time.perf_counter()
            return
        began = self._started.pop(threading.get_ident(), None)
        if began is not None:
            self.collections[info["generation"]] += 1
            self.seconds[info["generation"]] += time.perf_counter() - began

    def __enter__(self) -> "GCPauses":
        gc.callbacks.append(self._callback)
        return self

    def __exit__(self, *exc) -> None:
        gc.callbacks.remove(self._callback)

    def summary(self) -> dict:
        return {"collections": list(self.collections), "seconds": [round(s, 4) for s in self.seconds]}


class HostStacks:
    """Where a thread's host time goes, sampled: a background thread reads that thread's Python stack
    every `interval` seconds and charges the time since its last sample to the stack it sees. It shows
    where a host-bound step's host stands, e.g. waiting in a synchronisation or busy in bookkeeping,
    without the profiler's overhead. The sampler needs the interpreter lock, so the switch interval is
    set to `interval` while sampling; a frame that holds the lock longer is seen late, not missed.

        hs = HostStacks(); hs.start(); <work>; hs.stop() -> {"samples", "seconds", "within", "self", "inclusive"}

    "within": the innermost function that every sample was in; "self": the innermost frames, as
    "function (file:line)"; "inclusive": the functions on the stack below "within", as "function
    (file)"; each [frame, seconds, share], most seconds first, files shortened to their package path.
    With native_threads, also the frames of threads that `threading` did not start, while they run
    Python, as "[native thread] ...": on a GPU, autograd runs the backward (and its hooks) in threads of
    its own. Python's own threads (loader, progress bar) wait most of the time and are left out."""

    def __init__(self, thread_id: int | None = None, interval: float = 0.001, top: int = 25,
                 native_threads: bool = False):
        self.thread_id = thread_id or threading.get_ident()
        self.interval, self.top, self.native_threads = interval, top, native_threads
        self.own: dict[str, float] = defaultdict(float)
        self.inclusive: dict[str, float] = defaultdict(float)
        self.samples, self.seconds = 0, 0.0
        self._trunk: list[str] | None = None   # the outer frames every sample shares
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @staticmethod
    def _where(code) -> str:
        path = code.co_filename
        for root in ("site-packages/", "dist-packages/", "/site/", "/cogip/"):
            if root in path:
                return ("cogip/" if root == "/cogip/" else "") + path.rsplit(root, 1)[1]
        return path

    def _charge(self, frame, spent: float, thread: str = "", main: bool = True) -> None:
        self.own[f"{thread}{frame.f_code.co_name} ({self._where(frame.f_code)}:{frame.f_lineno})"] += spent
        stack = []
        while frame is not None:
            stack.append(f"{thread}{frame.f_code.co_name} ({self._where(frame.f_code)})")
            frame = frame.f_back
        if main:
            stack.reverse()   # outermost first
            trunk = self._trunk if self._trunk is not None else stack
            n = next((i for i, (a, b) in enumerate(zip(trunk, stack)) if a != b), min(len(trunk), len(stack)))
            self._trunk = trunk[:n]
        for name in set(stack):   # a recursive function, or two methods of one name in a file, once
            self.inclusive[name] += spent

    def _sample(self) -> None:
        last, me = time.perf_counter(), threading.get_ident()
        while not self._stop.wait(self.interval):
            frames = sys._current_frames()
            now = time.perf_counter()
            if self.thread_id not in frames:
                break
            spent, last = now - last, now
            self._charge(frames[self.thread_id], spent)
            if self.native_threads:   # autograd's device threads, which run backward hooks
                started_here = {t.ident for t in threading.enumerate()}
                for ident, frame in frames.items():
                    if ident not in started_here and ident != me:
                        self._charge(frame, spent, "[native thread] ", main=False)
            self.samples += 1
            self.seconds += spent

    def start(self) -> None:
        self._switch = sys.getswitchinterval()
        sys.setswitchinterval(self.interval)
        self._thread = threading.Thread(target=self._sample, name="cogip-host-stacks", daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        sys.setswitchinterval(self._switch)

        trunk = self._trunk or []

        def ranked(times: dict[str, float], leave_out=()) -> list:
            rows = sorted(((n, t) for n, t in times.items() if n not in leave_out), key=lambda kv: -kv[1])
            return [[name, round(t, 4), round(t / self.seconds, 3) if self.seconds else 0.0]
                    for name, t in rows[:self.top]]
        return {"samples": self.samples, "seconds": round(self.seconds, 4), "within": trunk[-1:],
                "self": ranked(self.own), "inclusive": ranked(self.inclusive, leave_out=set(trunk))}


class BlockTimeline:
    """When each repeated block's forward (and its end) and backward began over one stretch of work, on
    the device (CUDA events; the wall clock on a CPU) and on the host, without the profiler's overhead,
    which hides what multi-GPU steps lose.

    - host lead: how long after the host called a block the device began it. Near 0, the device waited
      for the host (host-bound); large, the host ran ahead (device-bound).
    - gap: device time from one forward block's end to the next one's start, where ZeRO-3 waits for
      the next block's gathered parameters (its hooks run before these).
    - busy: device time from a forward block's start to its end.
    - backward: from one block's backward start to the next one's, its recomputation included: both
      transformers and cogip checkpoint a block's `forward` inside its module hooks, so a recomputation
      is not seen apart.

        tl = BlockTimeline(repeated_blocks(model, family)); tl.start(); <work>; result = tl.stop()"""

    def __init__(self, blocks):
        self.blocks = [(name, block, part) for name, block, part in blocks]
        self.cuda = torch.cuda.is_available()
        self.marks: list[tuple] = []   # (block, part, kind, host seconds, device mark)
        self.spans: list[tuple[int, int]] = []   # (start mark, end mark) of each forward
        self._handles: list = []

    def _mark(self, name: str, part: str, kind: str) -> int:
        if self.cuda:
            device = torch.cuda.Event(enable_timing=True)
            device.record()
        else:
            device = time.perf_counter()
        self.marks.append((name, part, kind, time.perf_counter(), device))
        return len(self.marks) - 1

    def _backward_began(self, name: str, part: str, grad) -> None:
        """The gradient reaching a block's output: its backward begins (returns None: grad unchanged)."""
        self._mark(name, part, "backward")

    def start(self) -> None:
        if self.cuda:
            torch.cuda.synchronize()
        self._mark("", "", "start")
        self._host0, self._device0 = self.marks.pop()[3:]
        started: dict[str, int] = {}   # block -> its forward's start mark
        for name, block, part in self.blocks:
            def before(module, args, name=name, part=part):
                started[name] = self._mark(name, part, "forward")

            def after(module, args, output, name=name, part=part):
                self.spans.append((started.pop(name), self._mark(name, part, "end")))
                out = output[0] if isinstance(output, (tuple, list)) else getattr(output, "last_hidden_state", output)
                if torch.is_tensor(out) and out.requires_grad:
                    out.register_hook(partial(self._backward_began, name, part))
            self._handles += [block.register_forward_pre_hook(before), block.register_forward_hook(after)]

    def stop(self) -> dict:
        """{"summary": per "<part> <kind>": calls, device seconds of the first and last start, median host
        lead, and for forward blocks the summed busy and gap seconds; "rows": every mark in device order}."""
        if self.cuda:
            torch.cuda.synchronize()
        for h in self._handles:
            h.remove()
        self._handles = []
        device_s = (lambda m: self._device0.elapsed_time(m) / 1e3) if self.cuda else (lambda m: m - self._device0)
        rows = [{"block": n, "part": p, "kind": k, "host_s": h - self._host0, "device_s": device_s(m)}
                for n, p, k, h, m in self.marks]
        summary: dict[str, dict] = {}
        for r in rows:
            r["lead_s"] = r["device_s"] - r["host_s"]
            if r["kind"] != "end":
                s = summary.setdefault(f"{r['part']} {r['kind']}",
                                       {"calls": 0, "first_s": r["device_s"], "leads": []})
                s["calls"] += 1
                s["last_s"] = r["device_s"]
                s["leads"].append(r["lead_s"])
        previous_end = {}   # part -> device end of its last forward block
        for start, end in sorted(self.spans, key=lambda se: rows[se[0]]["device_s"]):
            r = rows[start]
            s = summary[f"{r['part']} forward"]
            s["busy_s"] = s.get("busy_s", 0.0) + rows[end]["device_s"] - r["device_s"]
            s["gap_s"] = s.get("gap_s", 0.0) + r["device_s"] - previous_end.get(r["part"], r["device_s"])
            previous_end[r["part"]] = rows[end]["device_s"]
        for s in summary.values():
            leads = sorted(s.pop("leads"))
            s["median_lead_s"] = leads[len(leads) // 2]
            for k in ("first_s", "last_s", "busy_s", "gap_s", "median_lead_s"):
                if k in s:
                    s[k] = round(s[k], 4)
        rows.sort(key=lambda r: r["device_s"])
        for r in rows:
            for k in ("host_s", "device_s", "lead_s"):
                r[k] = round(r[k], 6)
        return {"device": "cuda" if self.cuda else "cpu", "summary": summary, "rows": rows}
