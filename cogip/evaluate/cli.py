"""`cogip evaluate`: score a model on CogIP-Bench (the benchmark loop, `cogip.evaluate.loop`).
Reference: docs/evaluate.md."""

from __future__ import annotations

import argparse
import os
import sys
import time

from ..dims import DIMENSION_NAMES
from ..errors import CogipError, exit_code
from ..flags import dashed
from ..models.families import FAMILIES
from .loop import PUBLISHED_SEED, SAMPLINGS, LoopOptions, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cogip evaluate", description="Score a model on CogIP-Bench: per dimension "
                                "Spearman, MAE and MSE against the human scores (docs/evaluate.md).")
    p.add_argument("--model-id", help="a checkpoint (hub id or folder) or a LoRA adapter folder (default: the base model "
                                       "of --family)")
    p.add_argument("--base-model", help="an adapter's base model (default: the one recorded in the adapter)")
    p.add_argument("--lora-path", help="a LoRA adapter to apply to --model-id (the published Gemma script's flag)")
    p.add_argument("--family", choices=tuple(FAMILIES), help="default: read from the model's files")
    p.add_argument("--test-dir", default="data/test_msg_file", help="folder of <Dim>/<Dim>_messages.json")
    p.add_argument("--image-root", default="data/cognition/cognition_images")
    p.add_argument("--out", required=True, help="output folder; rerunning into it resumes")
    p.add_argument("--dims", nargs="+", choices=DIMENSION_NAMES, help="a subset of the dimensions (default: all found)")
    p.add_argument("--sample-n", type=int, help="items per dimension (the published protocol: 120); default all")
    p.add_argument("--seed", type=int, default=PUBLISHED_SEED, help=f"sampling seed ({PUBLISHED_SEED}, as published)")
    p.add_argument("--sampling", choices=SAMPLINGS, default="published",
                   help="published: the published loop's one random stream (the same items as a published run); "
                        "per-dimension: a stream per dimension")
    p.add_argument("--indices-from", metavar="DIR", help="score exactly the items of an earlier run "
                   "(DIR/sample_indices_<Dim>.json, published or ours)")
    p.add_argument("--mode", choices=("generate", "expected"), default="generate",
                   help="generate: the answer's number; expected: the score read from the digit probabilities")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    p.add_argument("--min-pixels", type=int, help="Qwen: image pixels lower bound")
    p.add_argument("--max-pixels", type=int, help="Qwen: image pixels upper bound")
    from ..accel.scoring import add_arguments
    add_arguments(p)
    return p


def main(argv: list[str] | None = None, end_process: bool = False) -> int:
    """`end_process`: the process ends here once the outputs are written (cogip.accel; `python -m cogip`)."""
    from ..accel.scoring import MAIN_STARTED, engine_for
    MAIN_STARTED.append(time.perf_counter())
    from ..published import EVALUATE, translate
    try:
        argv = dashed(translate(argv, EVALUATE, "cogip evaluate"))   # the published cog_test.py's flags too
    except CogipError as e:
        print(f"cogip evaluate: error: {e}", file=sys.stderr)
        return 2
    a = build_parser().parse_args(argv)
    if a.model_id is None:
        if not a.family:
            print("cogip evaluate: error: give --model-id (or --family, to score its base model)", file=sys.stderr)
            return 2
        a.model_id = FAMILIES[a.family].hub_id
    if a.lora_path:
        a.base_model, a.model_id = a.base_model or a.model_id, a.lora_path
    try:
        engine = engine_for(a)   # before anything starts CUDA
    except CogipError as e:
        print(f"cogip evaluate: error: {e}", file=sys.stderr)
        return 2
    code = exit_code("cogip evaluate", _evaluate, a, engine)
    if engine is not None and end_process:
        engine.end_process(code)
    return code


def _evaluate(a, engine) -> None:
    import torch
    from accelerate import PartialState
    state = PartialState(cpu=not torch.cuda.is_available())   # on CPUs, processes join only when asked (gloo)
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:   # else each would answer every item into the same files
        raise CogipError(f"launched as one of {launched} processes, but accelerate runs {state.num_processes}; "
                         f"launch with `accelerate launch --num_processes N` (NUM_GPUS=N in cog_test.sh)", file=a.out)
    from .scorer import ScorerLoading
    finished = False
    try:
        # the processor now; the weights inside the loop, while its first batches are prepared
        scorer = ScorerLoading(a.model_id, a.base_model, a.family, dtype=a.dtype if a.dtype == "auto" else getattr(torch, a.dtype),
                               device=str(state.device), max_new_tokens=a.max_new_tokens, min_pixels=a.min_pixels,
                               max_pixels=a.max_pixels, published_pixels=True)   # bounds not given: the published runs'
        options = LoopOptions(a.test_dir, a.image_root, a.out, a.dims, a.sample_n, a.seed, a.sampling, a.indices_from,
                              a.batch_size, a.mode, {"model_id": a.model_id, "base_model": a.base_model})
        run_benchmark(scorer, options, engine, accelerator=state if state.num_processes > 1 else None)
        finished = True
    finally:
        if state.num_processes > 1:
            if finished:   # rank 0 may still be writing the metrics: a rank closing first would abort it (gloo)
                state.wait_for_everyone()
            state.destroy_process_group()


if __name__ == "__main__":
    sys.exit(main(end_process=True))
