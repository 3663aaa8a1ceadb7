"""Every use of a private torch, transformers or CPython API, each behind one function.

A release may move or drop any of them. Each function then falls back to the plain library path (or to
doing nothing, where the private call only made things faster or reported on them), so the speed work
can lose its edge but never break a run.
"""

from __future__ import annotations

import os

import torch


# ---------------------------------------------------------------- torch.compile (dynamo, inductor)
def frames_traced() -> int:
    """Frames torch.compile has traced in this process so far (each compilation or recompilation)."""
    try:
        from torch._dynamo.utils import counters
        return counters["frames"]["total"]
    except (ImportError, AttributeError, KeyError):
        return 0


def compile_costs() -> dict:
    """What torch.compile has cost this process so far: frames traced, seconds compiling, seconds by phase
    (nested phases included, so they do not add up), inductor's cache folder and compile workers."""
    try:
        from torch._dynamo.utils import compilation_time_metrics
        phases = {name: round(sum(t), 3) for name, t in compilation_time_metrics.items() if sum(t) >= 0.01}
    except (ImportError, AttributeError):
        phases = {}
    folder = inductor_cache_dir()
    try:
        from torch._inductor import async_compile, config
        workers = {"compile_threads": config.compile_threads, "worker_pool_started": bool(async_compile._pool_set)}
    except (ImportError, AttributeError):
        workers = {}
    return {"frames": frames_traced(), "seconds": phases.get("_compile.compile_inner", 0.0), "cache_dir": folder,
            **workers, "phases": dict(sorted(phases.items(), key=lambda kv: -kv[1]))}


def inductor_cache_dir() -> str:
    """Inductor's cache folder ($TORCHINDUCTOR_CACHE_DIR, else torch's default under the temporary folder)."""
    try:
        from torch._inductor.runtime.cache_dir_utils import cache_dir
        return cache_dir()
    except (ImportError, AttributeError):
        import getpass
        import tempfile
        return os.environ.get("TORCHINDUCTOR_CACHE_DIR") or os.path.join(tempfile.gettempdir(),
                                                                          f"torchinductor_{getpass.getuser()}")


def specialize_floats() -> None:
    """Trace float attributes (norms' eps, attention scales) as constants: as symbolic floats, a LayerNorm's
    eps made dynamo restart its analysis of a frame and trace it again. Process-wide."""
    try:
        import torch._dynamo
        torch._dynamo.config.specialize_float = True
    except (ImportError, AttributeError):
        pass


def wrap_compiled_call(module: torch.nn.Module, wrapper) -> bool:
    """After `module.compile()`, call its compiled function through `wrapper(compiled)`; False (and the
    compiled module as torch made it) where torch keeps it elsewhere."""
    compiled = getattr(module, "_compiled_call_impl", None)
    if not callable(compiled):
        return False
    module._compiled_call_impl = wrapper(compiled)
    return True


# ---------------------------------------------------------------- attention
def attn_implementation(config) -> str | None:
    """The attention implementation a (sub)config asks for."""
    return getattr(config, "_attn_implementation", None)


def set_attn_implementation(config, name: str) -> bool:
    """Point a (sub)config at a registered attention function; False where transformers keeps the choice
    elsewhere (the model then runs its own attention)."""
    if not hasattr(config, "_attn_implementation"):
        return False
    config._attn_implementation = name
    return True


def has_flash_forward() -> bool:
    return hasattr(torch.ops.aten, "_flash_attention_forward")


def flash_attention_forward(q, k, v, cu_seqlens, longest: int, scaling, is_causal: bool) -> torch.Tensor:
    """Flash's variable-length kernel (the one SDPA runs for unmasked attention), one launch for all segments.
    Callers check `has_flash_forward()` first and take SDPA's path where it is missing."""
    return torch.ops.aten._flash_attention_forward(q, k, v, cu_seqlens, cu_seqlens, longest, longest, 0.0,
                                                   is_causal, False, scale=scaling)[0]


# ---------------------------------------------------------------- checkpointing
def checkpoint_function(block):
    """A transformers GradientCheckpointingLayer's checkpoint function (None before checkpointing is on)."""
    return getattr(block, "_gradient_checkpointing_func", None)


def set_checkpoint_function(block, fn) -> bool:
    if not hasattr(block, "_gradient_checkpointing_func"):
        return False
    block._gradient_checkpointing_func = fn
    return True


# ---------------------------------------------------------------- profiler
def profiler_events(prof) -> list:
    """The device and host events of a finished torch.profiler run ([] where torch keeps them elsewhere)."""
    try:
        return list(prof.profiler.kineto_results.events())
    except AttributeError:
        return []


# ---------------------------------------------------------------- processors
def qwen_resized(height: int, width: int, factor: int, min_pixels: int, max_pixels: int) -> tuple[int, int] | None:
    """Qwen's image processor's own resizing (height, width), or None where it moved or rejects the size."""
    try:
        from transformers.models.qwen2_vl.image_processing_qwen2_vl import smart_resize
        return smart_resize(height, width, factor, min_pixels, max_pixels)
    except (ImportError, ValueError):
        return None


# ---------------------------------------------------------------- Trainer, process
def train_on_one_gpu(targs) -> bool:
    """Keep a process that sees several GPUs to one (no DataParallel); False where Trainer keeps the count
    elsewhere (it then takes its own path)."""
    if not hasattr(targs, "_n_gpu"):
        return False
    targs._n_gpu = 1
    return True


def run_exit_handlers() -> None:
    """What a normal interpreter exit runs first (atexit's handlers), for a process ended with os._exit."""
    import atexit
    run = getattr(atexit, "_run_exitfuncs", None)
    if run is not None:
        run()


def end_process(code: int):
    """End a finished entry point's process now: atexit handlers run and streams flushed, then `os._exit`,
    skipping the interpreter's teardown of every module and object (a model, CUDA's pools, pinned memory:
    what the OS frees anyway), which took seconds."""
    import sys
    run_exit_handlers()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
