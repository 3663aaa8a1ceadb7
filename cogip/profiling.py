"""What one profiled stretch of work did with its time: the GPU's busy and idle time, collectives,
the host's waits on the device, and the top operators. Shared by `--profile_step` of the SFT entry
point and the benchmark scripts, so every profile in docs/benchmarks.md reads the same way."""

from __future__ import annotations

import gc
import json
import threading
import time
from collections import defaultdict

import torch

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
