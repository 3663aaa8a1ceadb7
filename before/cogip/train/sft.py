"""`python -m cogip.train.sft` — soft-label SFT of any family (LoRA or full), over transformers.Trainer.

The launchers in `sft/<family>/finetune_lora.sh` hold the published per-family defaults; every flag
of `TrainingArguments` (DeepSpeed config, bf16, checkpointing, logging…) is accepted as well.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from functools import partial
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint

from .. import TRANSFORMERS_FLOOR
from ..errors import CogipError, exit_code, require
from ..loss import KERNELS, NumberTokens, SoftLabelLoss, kernel_name
from ..models.attention import allow_sdpa_backends, use_fast_vision_attention
from ..models.vision_matmuls import use_fast_vision_matmuls
from ..models.blocks import (GRAPH_PAD_MULTIPLE, apply_liger, autocast_vision_norms, fsdp_wrap_blocks, graph_blocks,
                             parse_keep, parse_part_blocks, parse_parts, repeated_blocks, set_checkpointing,
                             zero3_leaf_blocks, zero3_prefetch_blocks)
from ..models.families import Family, resolve_family
from ..data.bench import BenchItem
from .data import SFTCollator, load_sft_dataset
from .trainer import CogipTrainer

TRAIN_INFO = "cogip_train.json"   # written beside the weights: family, base model, tuning mode
TUNE_MODES = ("lora", "full", "frozen-llm")


@dataclass
class ModelArguments:
    model_id: str = field(default="Qwen/Qwen2.5-VL-7B-Instruct", metadata={"help": "hub id or local checkpoint"})
    family: str | None = field(default=None, metadata={"help": "qwen | llama | gemma (default: from the model)"})
    tune_mode: str = field(default="lora", metadata={
        "help": "lora (LoRA on the language model, its base frozen) | full | frozen-llm (the language model not "
                "trained: the vision tower and merger only, as the published GRPO recipe)"})
    use_dora: bool = field(default=False, metadata={"help": "with lora: DoRA (peft's weight-decomposed LoRA)"})
    lora_r: int = 64
    lora_alpha: int = 64
    lora_dropout: float = 0.05
    train_vision: bool = field(default=True, metadata={"help": "train the vision tower (at vision_lr)"})
    train_merger: bool = field(default=True, metadata={"help": "train the vision-language merger/projector (at "
                                                                "merger_lr)"})
    vision_lr: float = 2e-6
    merger_lr: float = 1e-5
    min_pixels: int | None = field(default=None, metadata={"help": "Qwen: image pixels lower bound"})
    max_pixels: int | None = field(default=None, metadata={"help": "Qwen: image pixels upper bound"})
    checkpoint_parts: str = field(default="all", metadata={
        "help": "with --activation_checkpointing: all | none | language | vision (where recomputation is worth the "
                "memory it saves; 'all' includes Mllama's vision encoder, which transformers never checkpoints); "
                "part=N recomputes only that part's first N blocks, e.g. vision=24 (the rest keep their activations); "
                "part=N+M then recomputes only the MLP of the next M blocks, e.g. vision=9+31"})
    checkpoint_keep: str = field(default="none", metadata={
        "help": "what a checkpointed block keeps from its forward instead of recomputing: none | attention (the "
                "attention kernels' outputs: no attention recomputation, one hidden state more per block)"})
    graph_parts: str = field(default="none", metadata={
        "help": "none | language | vision | all: compile these parts' blocks whole and replay them as CUDA graphs "
                "(for host-bound parts, e.g. Llama's language model; not with their checkpointing, ZeRO-3 or FSDP; "
                "sequences are then padded to a multiple of 64)"})
    graph_parts_fallback: bool = field(default=False, metadata={
        "help": "where --graph_parts cannot run (its parts checkpointed, ZeRO-3, FSDP), train without CUDA graphs and "
                "say so instead of failing (the launchers' family defaults; an explicit GRAPH_PARTS fails)"})
    cast_vision_norms: bool = field(default=True, metadata={
        "help": "under autocast, cast the vision blocks' float32 norm outputs to bf16 once, not once per linear layer "
                "they feed (the same forward, less memory; False: the layers' input gradients summed in float32)"})
    sdpa_backends: str = field(default="auto", metadata={
        "help": "fused attention kernels allowed: auto (torch's choice) or a comma list of cudnn, flash, efficient "
                "(exact either way; docs/benchmarks.md has where cuDNN's host-side plans cost time)"})

    def __post_init__(self):   # parsed before anything loads: a bad value is one line (ValueError -> CogipError)
        if self.tune_mode not in TUNE_MODES:
            raise ValueError(f"--tune_mode must be one of {', '.join(TUNE_MODES)}, not {self.tune_mode!r}")
        if self.tune_mode == "frozen-llm" and not (self.train_vision or self.train_merger):
            raise ValueError("--tune_mode frozen-llm with neither the vision tower nor the merger trained trains nothing")


@dataclass
class DataArguments:
    data_path: str = "data/cognition_training.json"
    image_folder: str = "data/cognition/cognition_images"


@dataclass
class LossArguments:
    soft_labels: bool = field(default=True, metadata={"help": "off: plain cross-entropy (ablation)"})
    soft_eta: float = 0.15
    soft_lambda: float = 2.0
    soft_kernel: str = field(default="published", metadata={
        "help": f"ψ over the digit values: {' | '.join(KERNELS)} (published: ∝ max_j|j-c| - |k-c|, the published "
                f"loss; 'triangular', the published code's name for it, is accepted; cogip.loss)"})
    soft_width: float = field(default=2.0, metadata={"help": "narrow-triangle's half-width, gaussian's sigma"})
    soft_multidigit: bool = field(default=False, metadata={
        "help": "soft labels on multi-digit tokens too (Llama 3's '577'); off as published: plain cross-entropy"})

    def __post_init__(self):
        kernel_name(self.soft_kernel)   # an unknown kernel: a ValueError naming the known ones


@dataclass
class ProfileArguments:
    profile_step: int | None = field(default=None, metadata={
        "help": "profile this optimizer step (1-based): each rank writes profile_rank<R>.txt to the output folder "
                "(GPU busy/idle time, collectives, host waits on the device, top operators; cogip.profiling)"})
    timeline_step: int | None = field(default=None, metadata={
        "help": "time every repeated block in this optimizer step (1-based), without the profiler: each rank writes "
                "timeline_rank<R>.json (device and host start of each block's forward and backward, and sampled "
                "host stacks; cogip.profiling.BlockTimeline, HostStacks)"})


def prepare_trainable(model, family: Family, margs: ModelArguments, fp32_adapters: bool = True):
    """Freeze what the recipe freezes; wrap with LoRA in lora mode. Returns the model to train.

    lora: LoRA (or DoRA) on the language model's linear layers, its base frozen; full: the language model
    itself; frozen-llm: the language model not at all (the published GRPO recipe). In each, the vision
    tower trains with --train_vision and the merger/projector with --train_merger.

    fp32_adapters: PEFT's default (LoRA weights in float32 under a bf16 model, for autocast). Off under
    DeepSpeed, which keeps float32 master copies of every trained parameter itself and whose ZeRO-3
    needs them all in one dtype; bf16 LoRA also keeps float32 matmuls and casts out of every layer."""
    wanted = {"vision": margs.train_vision, "projector": margs.train_merger, "language": margs.tune_mode == "full"}
    if margs.tune_mode != "lora":
        for name, p in model.named_parameters():
            p.requires_grad = wanted[family.param_group(name)]
        return model
    from peft import LoraConfig, get_peft_model
    trained = [*(family.vision_prefixes if margs.train_vision else ()),
               *(family.projector_prefixes if margs.train_merger else ())]
    outermost = [p for p in trained if not any(p.startswith(q + ".") for q in trained)]   # Qwen's merger is in visual
    config = LoraConfig(r=margs.lora_r, lora_alpha=margs.lora_alpha, lora_dropout=margs.lora_dropout,
                        target_modules=family.lora_target_modules, bias="none", use_dora=margs.use_dora,
                        # non-LoRA trained parts live in the adapter too, so it saves, resumes and merges whole
                        modules_to_save=sorted({p.split(".")[-1] for p in outermost}) or None)
    model = get_peft_model(model, config, autocast_adapter_dtype=fp32_adapters)
    for name, p in model.named_parameters():   # a part inside a saved module that stays frozen (Qwen's merger)
        if "modules_to_save" in name and not wanted[family.param_group(name)]:
            p.requires_grad = False
    return model


def graph_parts_that_run(margs: ModelArguments, targs: TrainingArguments) -> set[str]:
    """The parts to replay as CUDA graphs: --graph_parts, unless they cannot run here, which is an error, or with
    --graph_parts_fallback a printed line and no graphs. A graph replays fixed parameter addresses and one
    forward: no recomputation, no gathering."""
    graphed = parse_parts(margs.graph_parts, "graph parts")
    if not graphed:
        return graphed
    both = sorted(graphed & set(parse_part_blocks(margs.checkpoint_parts))) if targs.activation_checkpointing else []
    problem = None
    if both:
        problem = (f"--graph_parts {margs.graph_parts} overlaps the checkpointed parts ({', '.join(both)}); "
                   f"checkpoint other parts (--checkpoint_parts) or graph fewer")
    elif targs.fsdp or is_deepspeed_zero3_enabled():
        problem = "--graph_parts cannot run under ZeRO-3 or FSDP (their gathered parameters move); use ZeRO-2 or no sharding"
    if problem is None:
        return graphed
    if not margs.graph_parts_fallback:
        raise CogipError(problem)
    print(f"cogip sft: training without CUDA graphs: {problem}", file=sys.stderr, flush=True)
    return set()


def one_gpu_per_process(targs: TrainingArguments) -> None:
    """Keep a single process that sees several GPUs (e.g. NUM_GPUS=1 on a larger node) to one of them.

    There Trainer would take torch's DataParallel: micro-batches of per-device batch x GPUs, split over the GPUs
    by the wrapper's forward, which supervised_logits runs past, so all of it would run on one GPU: twice (or
    n times) the samples per step the run asked for, and a throughput computed for the asked ones."""
    if targs.n_gpu > 1:
        print(f"cogip sft: one process sees {targs.n_gpu} GPUs and trains on {targs.device} alone; for data "
              f"parallelism launch one process per GPU (NUM_GPUS={targs.n_gpu})", file=sys.stderr, flush=True)
        targs._n_gpu = 1


def fp32_master_weights(model, args: TrainingArguments) -> None:
    """Upcasts the trained parameters of a bf16/fp16 model to float32, in place, unless `args` (the
    Trainer's, or trl's subclass of them) train under DeepSpeed or FSDP, which keep float32 master copies
    themselves (accelerate upcasts for FSDP2).

    Without master copies Adam would update the half-precision weights directly, and at the vision tower's
    learning rate (2e-6) every step is far below bf16's resolution: the tower would not train at all.
    Autocast still runs the matmuls in bf16."""
    if args.deepspeed or args.fsdp:
        return
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()


class CheckpointParts(TrainerCallback):
    """Restricts gradient checkpointing to some parts once the Trainer has switched it on everywhere."""

    def __init__(self, family: Family, parts: str, keep: str = "none"):
        self.family, self.parts, self.keep = family, parts, keep

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.activation_checkpointing and model is not None:
            set_checkpointing(model, self.family, self.parts, args.activation_checkpointing_kwargs, self.keep)


class StepTimes(TrainerCallback):
    """Wall time of every optimizer step (device synchronised), for throughput in cogip_train.json."""

    def __init__(self):
        self.seconds: list[float] = []
        self._t = None

    def _now(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._t is None:
            self._t = self._now()

    def on_step_end(self, args, state, control, **kwargs):
        t = self._now()
        self.seconds.append(t - self._t)
        self._t = t

    def summary(self, samples_per_step: int, warmup: int = 2) -> dict:
        steady = self.seconds[warmup:] or self.seconds
        if not steady:
            return {}
        med = statistics.median(steady)
        out = {"median_step_s": round(med, 4), "samples_per_s": round(samples_per_step / med, 3),
               "steps_timed": len(steady), "samples_per_step": samples_per_step}
        if torch.cuda.is_available():   # this rank's peak: what decides the checkpointing parts that fit
            out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
            out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 2)   # the card must hold this
        return out


def ranks_agree(model, args: TrainingArguments) -> bool | None:
    """Whether every rank holds the same trained weights (a float64 sum and sum of squares of them), where
    each rank holds them all: one process, DDP, ZeRO-1/2. None where they are sharded (ZeRO-3, FSDP)."""
    if args.world_size <= 1:
        return True
    if args.fsdp or is_deepspeed_zero3_enabled():
        return None
    trained = [p.detach() for p in model.parameters() if p.requires_grad]
    if not trained:
        return True
    # summed in float64 without a float64 copy of each weight (a trained embedding would be gigabytes)
    local = torch.stack([torch.stack([torch.sum(p, dtype=torch.float64) for p in trained]).sum(),
                         torch.stack([torch.sum(p * p, dtype=torch.float64) for p in trained]).sum()])
    low, high = local.clone(), local.clone()
    torch.distributed.all_reduce(low, op=torch.distributed.ReduceOp.MIN)
    torch.distributed.all_reduce(high, op=torch.distributed.ReduceOp.MAX)
    return bool(torch.equal(low, high))


class RecordStep(TrainerCallback):
    """Records one optimizer step (1-based) and writes the record of each rank beside the weights, as
    `filename` with {rank} filled in. `begin(model)` starts recording and returns `end(head) -> text`,
    called when the step ends with head = {"step", "rank", "world_size"}."""

    def __init__(self, step: int, out_dir: str, filename: str, begin):
        self.step, self.out_dir, self.filename, self.begin, self._end = step, out_dir, filename, begin, None

    def on_step_begin(self, args, state, control, model=None, **kwargs):
        if state.global_step + 1 == self.step:
            self._end = self.begin(model)

    def on_step_end(self, args, state, control, **kwargs):
        if self._end is None:
            return
        text = self._end({"step": state.global_step, "rank": args.process_index, "world_size": args.world_size})
        self._end = None
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        Path(self.out_dir, self.filename.format(rank=args.process_index)).write_text(text)


def _begin_profile(model):
    """torch.profiler over the step; its report (cogip.profiling.report)."""
    from ..profiling import start_profile
    stop = start_profile()
    return lambda head: f"step {head['step']}, rank {head['rank']}/{head['world_size']}\n\n" + stop()


def _begin_timeline(family: Family, model):
    """cogip.profiling.BlockTimeline over the step's repeated blocks, and where the host's time went
    (cogip.profiling.HostStacks of the training thread and of autograd's, which run backward hooks), as
    JSON."""
    from ..profiling import BlockTimeline, HostStacks
    timeline, host = BlockTimeline(repeated_blocks(model, family)), HostStacks(native_threads=True)
    timeline.start()
    host.start()

    def end(head: dict) -> str:
        stacks = host.stop()
        return json.dumps({**head, **timeline.stop(), "host_stacks": stacks}, indent=1)
    return end


def build_trainer(margs: ModelArguments, dargs: DataArguments, largs: LossArguments, targs: TrainingArguments,
                  callbacks=None) -> CogipTrainer:
    family = resolve_family(margs.model_id, margs.family)
    if os.path.isfile(os.path.join(margs.model_id, "adapter_config.json")):
        raise CogipError("a LoRA adapter, not a model to fine-tune: merge it first (sft/<family>/merge_lora.sh)",
                         file=margs.model_id)
    dataset = load_sft_dataset(dargs.data_path, dargs.image_folder)   # every item and image, before the model
    one_gpu_per_process(targs)
    parse_part_blocks(margs.checkpoint_parts)   # a bad value fails here, before the model loads
    parse_keep(margs.checkpoint_keep)
    graphed = graph_parts_that_run(margs, targs)
    if targs.fsdp and (targs.use_cpu or not torch.cuda.is_available()):
        raise CogipError("FSDP needs GPUs: on CPUs accelerate would silently train unsharded (DDP); "
                         "drop --fsdp / FSDP_CONFIG")
    allow_sdpa_backends(margs.sdpa_backends)
    processor = family.load_processor(margs.model_id, **family.pixel_bounds(margs.min_pixels, margs.max_pixels))
    set_seed(targs.seed)   # LoRA's random A matrices are drawn here, before Trainer seeds anything
    dtype = torch.bfloat16 if targs.bf16 else torch.float16 if targs.fp16 else torch.float32
    model = family.load_model(margs.model_id, dtype=dtype)
    use_fast_vision_attention(model)   # exact; 2.8x faster Qwen-7B steps (docs/benchmarks.md)
    use_fast_vision_matmuls(model)   # exact; Qwen's vision matmuls in shapes cuBLAS runs fast
    if targs.use_liger_kernel:
        apply_liger(model, targs.liger_kernel_config)
        targs.use_liger_kernel = False   # applied here, before PEFT; the Trainer would patch the wrapped model
    model.config.use_cache = False
    model = prepare_trainable(model, family, margs, fp32_adapters=not targs.deepspeed)
    fp32_master_weights(model, targs)   # else Adam's small vision steps vanish in bf16 weights
    if margs.cast_vision_norms:
        autocast_vision_norms(model, family)   # one bf16 copy of a norm's output, not one per layer it feeds
    if is_deepspeed_zero3_enabled():
        zero3_leaf_blocks(model, family)   # one gather per block, not per linear layer (docs/benchmarks.md)
        zero3_prefetch_blocks(targs.hf_deepspeed_config.config, model, family)   # the next block gathered whole
    if targs.fsdp_plugin_args is not None:
        fsdp_wrap_blocks(targs.fsdp_plugin_args, model, family)   # FSDP2 too gathers block by block
    graph_blocks(model, family, graphed,   # host-bound blocks as CUDA graphs (docs/benchmarks.md)
                 accumulate=targs.gradient_accumulation_steps > 1)
    vocab = model.config.get_text_config().vocab_size
    loss_fn = SoftLabelLoss(NumberTokens.from_tokenizer(processor.tokenizer, vocab), eta=largs.soft_eta,
                            lam=largs.soft_lambda, kernel=largs.soft_kernel, width=largs.soft_width,
                            soft=largs.soft_labels, multidigit=largs.soft_multidigit)
    targs.remove_unused_columns = False   # the collator needs the raw columns
    collator = SFTCollator(family, processor, pad_to_multiple_of=GRAPH_PAD_MULTIPLE if graphed else None)
    if targs.process_index == 0:   # what the model will see, before any compute is spent on it
        from ..inspect import training_row
        first = dataset[0]
        item = BenchItem("0", first["dimension"], first["image"], first["prompt"], first["answer"], first["score"], "")
        print("cogip sft: first " + training_row(family, processor, item, ""), file=sys.stderr, flush=True)
    return CogipTrainer(model=model, args=targs, train_dataset=dataset, data_collator=collator,
                        processing_class=processor, family=family, loss_fn=loss_fn, vision_lr=margs.vision_lr,
                        merger_lr=margs.merger_lr,
                        callbacks=[CheckpointParts(family, margs.checkpoint_parts, margs.checkpoint_keep), *(callbacks or [])])


def run_loss(log_history: list[dict]) -> float:
    """The mean training loss over every step of the run, a resumed one included (its log history comes
    back with the checkpoint): each logged loss, the mean since the previous log, weighted by its steps.
    Trainer's own `training_loss` covers only the steps since the resume."""
    total = steps = 0.0
    last = 0
    for entry in log_history:
        if "loss" in entry and "step" in entry:
            n = entry["step"] - last
            total, steps, last = total + entry["loss"] * n, steps + n, entry["step"]
    return total / steps if steps else float("nan")


def require_transformers() -> None:
    """The trainers' (SFT, GRPO) one check of the installed transformers, before their arguments are parsed."""
    require(TRANSFORMERS_FLOOR, "TrainingArguments.activation_checkpointing")


def run(argv: list[str] | None = None, callbacks=None) -> CogipTrainer:
    require_transformers()
    from ..published import translate_sft
    argv = translate_sft(argv)   # the published train_sft.py's flags too
    parser = HfArgumentParser((ModelArguments, DataArguments, LossArguments, ProfileArguments, TrainingArguments))
    try:
        margs, dargs, largs, pargs, targs = parser.parse_args_into_dataclasses(argv)
    except ValueError as e:   # an unknown flag, or values TrainingArguments rejects
        raise CogipError(" ".join(str(e).split())[:400]) from None
    resume = targs.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "auto"):
        resume = get_last_checkpoint(targs.output_dir) if os.path.isdir(targs.output_dir) else None
    kernels = "liger" if targs.use_liger_kernel else "transformers"   # build_trainer consumes the flag
    timer = StepTimes()
    trainer = build_trainer(margs, dargs, largs, targs, [timer, *(callbacks or [])])
    if pargs.profile_step:
        trainer.add_callback(RecordStep(pargs.profile_step, targs.output_dir, "profile_rank{rank}.txt", _begin_profile))
    if pargs.timeline_step:
        trainer.add_callback(RecordStep(pargs.timeline_step, targs.output_dir, "timeline_rank{rank}.json",
                                        partial(_begin_timeline, trainer.family)))
    trainer.train(resume_from_checkpoint=resume)
    args = trainer.args
    loss = run_loss(trainer.state.log_history)
    speed = timer.summary(args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)
    print(f"cogip sft: rank {args.process_index}/{args.world_size} on {args.device}: "
          f"{trainer.state.global_step} steps, train loss {loss:.4f} (whole run)"
          + (f", median step {speed['median_step_s']:.3f} s = {speed['samples_per_s']:.2f} samples/s" if speed else ""),
          flush=True)
    if trainer.control.should_training_stop and trainer.state.global_step < trainer.state.max_steps:
        return trainer   # stopped early by a callback: keep the checkpoints, write no final result
    agree = ranks_agree(trainer.model, args)   # replicas that drifted apart trained on unaveraged gradients
    if agree is False:
        raise CogipError(f"the {args.world_size} ranks ended with different trained weights: their gradients "
                         f"were not averaged; the final model is not saved", file=targs.output_dir)
    trainer.save_model(targs.output_dir)
    if trainer.is_world_process_zero():
        info = {"family": trainer.family.name, "base_model": margs.model_id, "tune_mode": margs.tune_mode,
                "model": asdict(margs), "loss": asdict(largs), "global_step": trainer.state.global_step,
                "world_size": args.world_size, "ranks_agree": agree, "kernels": kernels, "throughput": speed,
                "train_loss": loss}
        Path(targs.output_dir, TRAIN_INFO).write_text(json.dumps(info, indent=2))
        Path(targs.output_dir, "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=2))
    return trainer


def main(argv: list[str] | None = None) -> int:
    code = exit_code("cogip sft", run, argv)
    if torch.distributed.is_initialized():   # else gloo's threads abort the process at exit (torchrun on CPUs)
        if code == 0:   # rank 0 may still be writing results: closing first would abort it too
            torch.distributed.barrier()
        torch.distributed.destroy_process_group()
    return code


if __name__ == "__main__":
    sys.exit(main())
