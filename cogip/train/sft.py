"""`cogip train` — soft-label SFT of any family (LoRA or full) over transformers.Trainer. Reference: docs/train.md.

`build_trainer` is the recipe: data, model (family adapter + LoRA), loss, Trainer. The published
hyperparameters are recipe files (`sft/recipe.yaml`, and per family `sft/<family>/recipe.yaml` with only
what differs), read with `--recipe`; every flag of `TrainingArguments` is accepted as well.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from transformers import HfArgumentParser, TrainerCallback, TrainingArguments, set_seed
from transformers.integrations import is_deepspeed_zero3_enabled
from transformers.trainer_utils import get_last_checkpoint

from .. import TRANSFORMERS_FLOOR
from ..accel import private
from ..errors import CogipError, exit_code, require
from ..loss import KERNELS, PUBLISHED_ETA, PUBLISHED_LAMBDA, NumberTokens, SoftLabelLoss, kernel_name
from ..accel.training import AccelArguments, TrainingAccel
from ..models.families import Family, get_family, resolve_family
from ..data.layout import BenchItem
from .data import SFTCollator, load_sft_dataset
from .trainer import CogipTrainer

TRAIN_INFO = "cogip_train.json"   # written beside the weights: family, base model, tuning mode
TUNE_MODES = ("lora", "full", "frozen-llm")


@dataclass
class ModelArguments:
    model_id: str | None = field(default=None, metadata={"help": "hub id or local checkpoint (default: the base model "
                                                                 "of --family)"})
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
    soft_eta: float = PUBLISHED_ETA
    soft_lambda: float = PUBLISHED_LAMBDA
    soft_kernel: str = field(default="published", metadata={
        "help": f"ψ over the digit values: {' | '.join(KERNELS)} (published: ∝ max_j|j-c| - |k-c|, the published "
                f"loss; 'triangular', the published code's name for it, is accepted; cogip.loss)"})
    soft_width: float = field(default=2.0, metadata={"help": "narrow-triangle's half-width, gaussian's sigma"})
    soft_multidigit: bool = field(default=False, metadata={
        "help": "soft labels on multi-digit tokens too (Llama 3's '577'); off as published: plain cross-entropy"})

    def __post_init__(self):
        kernel_name(self.soft_kernel)   # an unknown kernel: a ValueError naming the known ones


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


def one_gpu_per_process(targs: TrainingArguments) -> None:
    """Keep a single process that sees several GPUs (e.g. NUM_GPUS=1 on a larger node) to one of them.

    There Trainer would take torch's DataParallel: micro-batches of per-device batch x GPUs, split over the GPUs
    by the wrapper's forward, which supervised_logits runs past, so all of it would run on one GPU: twice (or
    n times) the samples per step the run asked for, and a throughput computed for the asked ones."""
    if targs.n_gpu > 1:
        print(f"cogip sft: one process sees {targs.n_gpu} GPUs and trains on {targs.device} alone; for data "
              f"parallelism launch one process per GPU (NUM_GPUS={targs.n_gpu})", file=sys.stderr, flush=True)
        private.train_on_one_gpu(targs)


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


class StepTimes(TrainerCallback):
    """Throughput for cogip_train.json: over the run (training's wall time, from its start to its end:
    first steps, logging and checkpoints included) and the median optimizer step (device synchronised)."""

    warmup = 2   # steps before the median's

    def __init__(self):
        self.seconds: list[float] = []
        self._t = self._began = self._ended = None
        self._steps = 0
        self._static = None

    def on_train_begin(self, args, state, control, **kwargs):
        self._began, self._first_step = self._now(), state.global_step

    def on_train_end(self, args, state, control, **kwargs):
        self._ended, self._steps = self._now(), state.global_step - self._first_step

    def _now(self):
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        return time.perf_counter()

    def on_step_begin(self, args, state, control, **kwargs):
        if self._t is None:
            self._t = self._now()
        if len(self.seconds) == self.warmup and torch.cuda.is_available():   # weights and optimizer state, between steps
            self._static = torch.cuda.memory_allocated()

    def on_step_end(self, args, state, control, **kwargs):
        t = self._now()
        self.seconds.append(t - self._t)
        self._t = t

    def summary(self, samples_per_step: int) -> dict:
        steady = self.seconds[self.warmup:] or self.seconds
        if not steady:
            return {}
        med = statistics.median(steady)
        train_s = (self._ended or self._now()) - self._began
        steps = self._steps or len(self.seconds)
        out = {"samples_per_s": round(samples_per_step * steps / train_s, 3), "train_s": round(train_s, 3),
               "steps": steps, "median_step_s": round(med, 4),
               "median_step_samples_per_s": round(samples_per_step / med, 3), "steps_timed": len(steady),
               "samples_per_step": samples_per_step}
        if torch.cuda.is_available():   # this rank's peak: what decides the checkpointing parts that fit
            out["peak_gib"] = round(torch.cuda.max_memory_allocated() / 2 ** 30, 2)
            out["peak_reserved_gib"] = round(torch.cuda.max_memory_reserved() / 2 ** 30, 2)   # the card must hold this
            if self._static is not None:   # what the steps add beside the weights and optimizer state
                out["activations_gib"] = round((torch.cuda.max_memory_allocated() - self._static) / 2 ** 30, 2)
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


def build_trainer(margs: ModelArguments, dargs: DataArguments, largs: LossArguments, targs: TrainingArguments,
                  aargs: AccelArguments | None = None, callbacks=None) -> CogipTrainer:
    """The recipe: data, model (family adapter + LoRA), loss, Trainer. Everything that can be checked from
    files and flags is checked before the weights load."""
    family = resolve_family(margs.model_id, margs.family)
    if os.path.isfile(os.path.join(margs.model_id, "adapter_config.json")):
        raise CogipError("a LoRA adapter, not a model to fine-tune: merge it first (sft/<family>/merge_lora.sh)",
                         file=margs.model_id)
    dataset = load_sft_dataset(dargs.data_path, dargs.image_folder)   # every item and image, before the model
    one_gpu_per_process(targs)
    if targs.fsdp and (targs.use_cpu or not torch.cuda.is_available()):
        raise CogipError("FSDP needs GPUs: on CPUs accelerate would silently train unsharded (DDP); "
                         "drop --fsdp / FSDP_CONFIG")
    speed = TrainingAccel(aargs or AccelArguments(), family, targs)   # bad speed options fail here too

    # the model: the family's processor and weights, frozen or wrapped in LoRA as the tuning mode says
    bounds = family.pixel_bounds(margs.min_pixels, margs.max_pixels, published=True)
    if bounds:   # recorded in cogip_train.json as used
        margs.min_pixels, margs.max_pixels = bounds["min_pixels"], bounds["max_pixels"]
    processor = family.load_processor(margs.model_id, **bounds)
    set_seed(targs.seed)   # LoRA's random A matrices are drawn here, before Trainer seeds anything
    dtype = torch.bfloat16 if targs.bf16 else torch.float16 if targs.fp16 else torch.float32
    model = family.load_model(margs.model_id, dtype=dtype)
    model.config.use_cache = False

    def make_trainable(model):
        model = prepare_trainable(model, family, margs, fp32_adapters=not targs.deepspeed)
        fp32_master_weights(model, targs)   # else Adam's small vision steps vanish in bf16 weights
        return model
    model = speed.apply(model, make_trainable)

    # the loss, over the tokenizer's number tokens
    vocab = model.config.get_text_config().vocab_size
    loss_fn = SoftLabelLoss(NumberTokens.from_tokenizer(processor.tokenizer, vocab), eta=largs.soft_eta,
                            lam=largs.soft_lambda, kernel=largs.soft_kernel, width=largs.soft_width,
                            soft=largs.soft_labels, multidigit=largs.soft_multidigit)
    targs.remove_unused_columns = False   # the collator needs the raw columns
    collator = SFTCollator(family, processor, pad_to_multiple_of=speed.pad_multiple)
    if targs.process_index == 0:   # what the model will see, before any compute is spent on it
        from ..inspect import training_row
        first = dataset[0]
        item = BenchItem("0", first["dimension"], first["image"], first["prompt"], first["answer"], first["score"], "")
        print("cogip sft: first " + training_row(family, processor, item, ""), file=sys.stderr, flush=True)
    return CogipTrainer(model=model, args=targs, train_dataset=dataset, data_collator=collator,
                        processing_class=processor, family=family, loss_fn=loss_fn, vision_lr=margs.vision_lr,
                        merger_lr=margs.merger_lr, callbacks=[*speed.callbacks, *(callbacks or [])])


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


def fill_model_id(margs: ModelArguments) -> None:
    """--model_id, where not given: the base model of --family (the recipe names it)."""
    if margs.model_id is None:
        if not margs.family:
            raise CogipError("give --model_id (or --family, to fine-tune its base model)")
        margs.model_id = get_family(margs.family).hub_id


def read_recipes(parser: HfArgumentParser, argv: list[str], prog: str = "cogip train") -> list[str]:
    """`--recipe FILE [FILE ...]` (YAML or JSON, later files win, flags on the command line win over all):
    each file's keys become the parser's defaults. Returns argv without the option."""
    files, rest, i = [], [], 0
    while i < len(argv):
        if argv[i] in ("--recipe", "--recipes"):
            i += 1
            while i < len(argv) and not argv[i].startswith("--"):
                files.append(argv[i])
                i += 1
            continue
        rest.append(argv[i])
        i += 1
    import yaml
    known = {a.dest for a in parser._actions}
    for f in files:
        try:
            values = yaml.safe_load(Path(f).read_text()) or {}
        except (OSError, yaml.YAMLError) as e:
            raise CogipError(f"cannot read the recipe: {str(e).splitlines()[0]}", file=f) from None
        if not isinstance(values, dict):
            raise CogipError("a recipe is a mapping of option names to values", file=f)
        unknown = sorted(set(values) - known)
        if unknown:
            raise CogipError(f"{unknown[0]!r} is not an option of {prog} (docs/train.md)", file=f)
        parser.set_defaults(**values)
    return rest


def require_transformers() -> None:
    """The trainers' (SFT, GRPO) one check of the installed transformers, before their arguments are parsed."""
    require(TRANSFORMERS_FLOOR, "TrainingArguments.activation_checkpointing")


def run(argv: list[str] | None = None, callbacks=None) -> CogipTrainer:
    require_transformers()
    from ..published import translate_sft
    argv = translate_sft(argv)   # the published train_sft.py's flags too
    parser = HfArgumentParser((ModelArguments, DataArguments, LossArguments, AccelArguments, TrainingArguments),
                              prog="cogip train", description="Soft-label SFT (docs/train.md).")
    argv = read_recipes(parser, argv)
    try:
        margs, dargs, largs, aargs, targs = parser.parse_args_into_dataclasses(argv)
    except ValueError as e:   # an unknown flag, or values TrainingArguments rejects
        raise CogipError(" ".join(str(e).split())[:400]) from None
    fill_model_id(margs)
    resume = targs.resume_from_checkpoint
    if isinstance(resume, str) and resume.lower() in ("true", "last", "auto"):
        resume = get_last_checkpoint(targs.output_dir) if os.path.isdir(targs.output_dir) else None
    kernels = "liger" if targs.use_liger_kernel else "transformers"   # build_trainer consumes the flag
    timer = StepTimes()
    trainer = build_trainer(margs, dargs, largs, targs, aargs, [timer, *(callbacks or [])])
    try:
        trainer.train(resume_from_checkpoint=resume)
    except torch.OutOfMemoryError:
        parts = aargs.checkpoint_parts if targs.activation_checkpointing else "nothing"
        give = "a smaller --per_device_train_batch_size"
        if parts != "all":
            switch = "" if targs.activation_checkpointing else "--activation_checkpointing True "
            give = f"{switch}--checkpoint_parts all (the least memory) or {give}"
        raise CogipError(f"out of GPU memory in step {trainer.state.global_step + 1} at "
                         f"{targs.per_device_train_batch_size} samples a device, recomputing {parts}: give {give}; "
                         f"--resume_from_checkpoint last goes on from the newest checkpoint", file=targs.output_dir) from None
    args = trainer.args
    loss = run_loss(trainer.state.log_history)
    speed = timer.summary(args.per_device_train_batch_size * args.gradient_accumulation_steps * args.world_size)
    print(f"cogip sft: rank {args.process_index}/{args.world_size} on {args.device}: "
          f"{trainer.state.global_step} steps, train loss {loss:.4f} (whole run)"
          + (f", {speed['samples_per_s']:.2f} samples/s over the run ({speed['train_s']:.1f} s), median step "
             f"{speed['median_step_s']:.3f} s = {speed['median_step_samples_per_s']:.2f} samples/s" if speed else ""),
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
                "model": asdict(margs), "loss": asdict(largs), "accel": asdict(aargs), "global_step": trainer.state.global_step,
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
