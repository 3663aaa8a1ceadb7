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
from ..models.families import FAMILIES, FAMILY_CHOICES
from .loop import PUBLISHED_SEED, SAMPLINGS, LoopOptions, run_benchmark


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="cogip evaluate", description="Score a model on CogIP-Bench: per dimension "
                                "Spearman, MAE and MSE against the human scores (docs/evaluate.md).")
    p.add_argument("--model-id", help="a checkpoint (hub id or folder) or a LoRA adapter folder (default: the base model "
                                       "of --family)")
    p.add_argument("--base-model", help="an adapter's base model (default: the one recorded in the adapter)")
    p.add_argument("--lora-path", help="a LoRA adapter to apply to --model-id (the published Gemma script's flag)")
    p.add_argument("--family", choices=FAMILY_CHOICES, default="auto",
                   help="auto: from the model's config.json (qwen, llama, gemma, or any other vision-language model "
                        "through its own processor and chat template: generic)")
    p.add_argument("--trust-remote-code", action="store_true",
                   help="run code shipped with the checkpoint (models transformers does not know); off unless given")
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
    p.add_argument("--batch-size", type=int, help="images a batch (default: on a GPU, from the memory free beside the "
                   "weights and the longest item's length, at most 32; else 8)")
    p.add_argument("--max-new-tokens", type=int, default=24)
    p.add_argument("--dtype", default="auto", help="auto | bfloat16 | float16 | float32")
    p.add_argument("--min-pixels", type=int, help="Qwen: image pixels lower bound")
    p.add_argument("--max-pixels", type=int, help="Qwen: image pixels upper bound")
    g = p.add_argument_group("a model behind an OpenAI-compatible server (vLLM, SGLang, transformers serve, an API)")
    g.add_argument("--backend", choices=("local", "openai"), default="local",
                   help="local: the model in this process; openai: chat requests to --base-url")
    g.add_argument("--base-url", help="the server's API root, e.g. http://localhost:8000/v1")
    g.add_argument("--model", help="the served model's name (as its /v1/models lists it)")
    g.add_argument("--api-key-env", default="OPENAI_API_KEY", metavar="VAR",
                   help="the environment variable holding the key (OPENAI_API_KEY; never written anywhere)")
    g.add_argument("--in-flight", type=int, default=8, help="requests sent at a time (8)")
    g.add_argument("--max-retries", type=int, default=8,
                   help="retries of a request on a connection error, time-out, 429 or 5xx, backing off 0.5 s to 8 s (8)")
    g.add_argument("--request-timeout", type=float, default=120.0, help="seconds one request may take (120)")
    g.add_argument("--top-logprobs", type=int, default=20, help="--mode expected: top log-probabilities asked per token (20)")
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
    if a.backend == "openai":
        return _serve_check(a) or exit_code("cogip evaluate", _evaluate_server, a)
    if a.model_id is None:
        if a.family not in FAMILIES:
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


def _serve_check(a) -> int:
    missing = [f for f, v in (("--base-url", a.base_url), ("--model", a.model)) if not v]
    bad = [f"{f} {v}" for f, v, low in (("--in-flight", a.in_flight, 1), ("--max-retries", a.max_retries, 0),
                                         ("--top-logprobs", a.top_logprobs, 1)) if v < low]
    if missing or bad:
        why = f"--backend openai needs {' and '.join(missing)}" if missing else f"{bad[0]} is too small"
        print(f"cogip evaluate: error: {why}", file=sys.stderr)
        return 2
    return 0


def _evaluate_server(a) -> None:
    from .remote import ServerEngine, ServerModel, ServerOptions
    model = ServerModel(ServerOptions(a.base_url, a.model, a.api_key_env, a.in_flight, a.max_retries,
                                      a.request_timeout, a.max_new_tokens, a.top_logprobs))
    options = LoopOptions(a.test_dir, a.image_root, a.out, a.dims, a.sample_n, a.seed, a.sampling, a.indices_from,
                          a.batch_size, a.mode, model.run_info())
    run_benchmark(model, options, ServerEngine())


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
                               max_pixels=a.max_pixels, published_pixels=True,   # bounds not given: the published runs'
                               trust_remote_code=a.trust_remote_code)
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
