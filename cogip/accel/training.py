"""The SFT's speed work: `TrainingAccel`, which `cogip.train.sft` applies around making the model trainable
unless `--accel off`. The loss and every gradient stay those of the plain path (tested); only the time
and the memory differ.

- the vision towers' exact faster attention and matmuls (`attention`, `vision_matmuls`);
- Liger's fused kernels applied before PEFT wraps the model (`--use_liger_kernel`);
- gradient checkpointing by part (`--checkpoint-parts`), keeping some ops (`--checkpoint-keep`);
- host-bound blocks compiled and replayed as CUDA graphs (`--graph-parts`);
- one bf16 copy of each vision norm's output under autocast (`--cast-vision-norms`);
- ZeRO-3 and FSDP2 gathering block by block;
- the fused SDPA kernels allowed (`--sdpa-backends`);
- `--profile-step` and `--timeline-step`: where a step's time goes (cogip.accel.profiling).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

import torch
from transformers import TrainerCallback
from transformers.integrations import is_deepspeed_zero3_enabled

from ..errors import CogipError
from .attention import allow_sdpa_backends, use_fast_vision_attention
from .blocks import (GRAPH_PAD_MULTIPLE, apply_liger, autocast_vision_norms, fsdp_wrap_blocks, graph_blocks,
                     parse_keep, parse_part_blocks, parse_parts, repeated_blocks, set_checkpointing, zero3_leaf_blocks,
                     zero3_prefetch_blocks)
from .vision_matmuls import use_fast_vision_matmuls


@dataclass
class AccelArguments:
    accel: str = field(default="on", metadata={
        "help": "on | off: off trains on the plain transformers/PEFT path (every option below ignored)"})
    checkpoint_parts: str = field(default="all", metadata={
        "help": "with --activation_checkpointing: all | none | language | vision; part=N recomputes only that "
                "part's first N blocks (vision=24), part=N+M then only the MLP of the next M (vision=9+31)"})
    checkpoint_parts_needs_gib: float = field(default=0.0, metadata={
        "help": "the GPU memory (GiB) --checkpoint_parts was measured to need at 4 samples a device; a card with "
                "less recomputes every block instead, and says so (0: no check)"})
    checkpoint_keep: str = field(default="none", metadata={
        "help": "none | attention: checkpointed blocks keep their attention outputs instead of recomputing them"})
    graph_parts: str = field(default="none", metadata={
        "help": "none | language | vision | all: those blocks compiled and replayed as CUDA graphs (not with their "
                "checkpointing, ZeRO-3 or FSDP; sequences then padded to a multiple of 64)"})
    graph_parts_fallback: bool = field(default=False, metadata={
        "help": "where --graph_parts cannot run, train without CUDA graphs and say so instead of failing"})
    cast_vision_norms: bool = field(default=True, metadata={
        "help": "under autocast, one bf16 copy of a vision norm's float32 output, not one per layer it feeds"})
    sdpa_backends: str = field(default="auto", metadata={
        "help": "fused attention kernels allowed: auto, or a comma list of cudnn, flash, efficient (exact either way)"})
    profile_step: int | None = field(default=None, metadata={
        "help": "profile this optimizer step (1-based): profile_rank<R>.txt in the output folder"})
    timeline_step: int | None = field(default=None, metadata={
        "help": "time every repeated block in this optimizer step: timeline_rank<R>.json in the output folder"})

    def __post_init__(self):   # parsed before anything loads
        if self.accel not in ("on", "off"):
            raise ValueError(f"--accel must be on or off, not {self.accel!r}")
        parse_part_blocks(self.checkpoint_parts)
        parse_keep(self.checkpoint_keep)
        parse_parts(self.graph_parts, "graph parts")


class TrainingAccel:
    """Built from the options before the model loads (bad options fail there); `apply` then speeds up the
    model around the step that makes it trainable, `pad_multiple` is the collator's, `callbacks` the
    Trainer's."""

    def __init__(self, options: AccelArguments, family, targs):
        self.o, self.family, self.targs = options, family, targs
        self.on = options.accel == "on"
        self.recompute_why = self._fit_checkpointing() if self.on else None
        self.graphed = self._graph_parts() if self.on else set()
        if self.on:
            allow_sdpa_backends(options.sdpa_backends)
        self.pad_multiple = GRAPH_PAD_MULTIPLE if self.graphed else None

    def _fit_checkpointing(self) -> str | None:
        """Every block recomputed where the card has less memory than the recipe's parts were measured to need;
        returns why, for the speed line."""
        o, targs = self.o, self.targs
        if not (o.checkpoint_parts_needs_gib and targs.activation_checkpointing and o.checkpoint_parts != "all"):
            return None
        device = targs.device
        if device.type != "cuda":
            return None
        card = torch.cuda.get_device_properties(device).total_memory / 2 ** 30
        if card >= o.checkpoint_parts_needs_gib:
            return None
        why = (f"{o.checkpoint_parts} needs ~{o.checkpoint_parts_needs_gib:g} GiB, this card has {card:.1f}; "
               f"--checkpoint_parts_needs_gib 0 keeps {o.checkpoint_parts}")
        o.checkpoint_parts = "all"
        return why

    def _graph_parts(self) -> set[str]:
        """--graph_parts, unless they cannot run here: an error, or with --graph_parts_fallback a printed line.
        A graph replays fixed parameter addresses and one forward: no recomputation, no gathering."""
        o, targs = self.o, self.targs
        graphed = parse_parts(o.graph_parts, "graph parts")
        if not graphed:
            return graphed
        both = sorted(graphed & set(parse_part_blocks(o.checkpoint_parts))) if targs.activation_checkpointing else []
        problem = None
        if both:
            problem = (f"--graph_parts {o.graph_parts} overlaps the checkpointed parts ({', '.join(both)}); "
                       f"checkpoint other parts (--checkpoint_parts) or graph fewer")
        elif targs.fsdp or is_deepspeed_zero3_enabled():
            problem = "--graph_parts cannot run under ZeRO-3 or FSDP (their gathered parameters move); use ZeRO-2 or no sharding"
        if problem is None:
            return graphed
        if not o.graph_parts_fallback:
            raise CogipError(problem)
        print(f"cogip sft: training without CUDA graphs: {problem}", file=sys.stderr, flush=True)
        return set()

    def apply(self, model, make_trainable):
        """`make_trainable(model)` (freezing, PEFT, master weights) with the speed work around it."""
        if not self.on:
            return make_trainable(model)
        family, targs = self.family, self.targs
        if targs.process_index == 0:
            print(self.line(), file=sys.stderr, flush=True)
        use_fast_vision_attention(model)
        use_fast_vision_matmuls(model)
        if targs.use_liger_kernel:
            apply_liger(model, targs.liger_kernel_config)
            targs.use_liger_kernel = False   # applied here, before PEFT; the Trainer would patch the wrapped model
        model = make_trainable(model)
        if self.o.cast_vision_norms:
            autocast_vision_norms(model, family)
        if is_deepspeed_zero3_enabled():
            zero3_leaf_blocks(model, family)   # one gather per block, not per linear layer
            zero3_prefetch_blocks(targs.hf_deepspeed_config.config, model, family)
        if targs.fsdp_plugin_args is not None:
            fsdp_wrap_blocks(targs.fsdp_plugin_args, model, family)
        graph_blocks(model, family, self.graphed, accumulate=targs.gradient_accumulation_steps > 1)
        return model

    def line(self) -> str:
        """The speed settings of this run, in one line (from the recipe files and the options given)."""
        o, targs = self.o, self.targs
        recompute = o.checkpoint_parts if targs.activation_checkpointing else "none"
        ds = targs.deepspeed
        sharding = (f"DeepSpeed {Path(ds).stem}" if isinstance(ds, str) else "DeepSpeed" if ds else
                    "FSDP2" if targs.fsdp else "no DeepSpeed or FSDP")
        if self.recompute_why:
            recompute += f" ({self.recompute_why})"
        return (f"cogip sft: speed: recompute {recompute}; CUDA graphs {o.graph_parts if self.graphed else 'none'}; "
                f"{'Liger' if targs.use_liger_kernel else 'transformers'} kernels; {sharding}; "
                f"SDPA {o.sdpa_backends} (the recipe files and options; --accel off: none of these)")

    @property
    def callbacks(self) -> list:
        if not self.on:
            return []
        o, out = self.o, self.targs.output_dir
        found = [CheckpointParts(self.family, o.checkpoint_parts, o.checkpoint_keep)]
        if o.profile_step:
            found.append(RecordStep(o.profile_step, out, "profile_rank{rank}.txt", _begin_profile))
        if o.timeline_step:
            found.append(RecordStep(o.timeline_step, out, "timeline_rank{rank}.json", partial(_begin_timeline, self.family)))
        return found


class CheckpointParts(TrainerCallback):
    """Restricts gradient checkpointing to some parts once the Trainer has switched it on everywhere."""

    def __init__(self, family, parts: str, keep: str = "none"):
        self.family, self.parts, self.keep = family, parts, keep

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if args.activation_checkpointing and model is not None:
            set_checkpointing(model, self.family, self.parts, args.activation_checkpointing_kwargs, self.keep)


class RecordStep(TrainerCallback):
    """Records one optimizer step (1-based) and writes each rank's record beside the weights as `filename`
    ({rank} filled in). `begin(model)` starts recording and returns `end(head) -> text`."""

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
    from .profiling import start_profile
    stop = start_profile()
    return lambda head: f"step {head['step']}, rank {head['rank']}/{head['world_size']}\n\n" + stop()


def _begin_timeline(family, model):
    """Each repeated block's forward and backward on the device and the host, and sampled host stacks."""
    from .profiling import BlockTimeline, HostStacks
    timeline, host = BlockTimeline(repeated_blocks(model, family)), HostStacks(native_threads=True)
    timeline.start()
    host.start()

    def end(head: dict) -> str:
        stacks = host.stop()
        return json.dumps({**head, **timeline.stop(), "host_stacks": stacks}, indent=1)
    return end

