"""Run by torchrun (two CPU processes, gloo) from tests/test_sft.py: the trainer's loss path on a model
that accelerate's own FSDP2 preparation has sharded, against the same model unsharded.

The Trainer runs FSDP only on accelerators (accelerate falls back to DDP on CPUs), so this calls
`fsdp2_prepare_model` itself, as the Trainer does on GPUs. Both ranks take the same batch, so the
reduced gradients must equal one process's.

    torchrun --nproc_per_node 2 tests/fsdp2_worker.py MODEL_DIR BENCH FSDP_CONFIG OUT.json [FAMILY [TUNE_MODE]]"""

import json
import os
import sys
from types import SimpleNamespace

import torch
import torch.distributed as dist
from accelerate.utils import FullyShardedDataParallelPlugin
from accelerate.utils.fsdp_utils import fsdp2_prepare_model
from torch.distributed.fsdp import FSDPModule
from torch.distributed.tensor import DTensor

from transformers import TrainingArguments

from cogip.models.blocks import fsdp_wrap_blocks
from cogip.models.families import get_family
from cogip.train.data import SFTCollator, load_sft_dataset
from cogip.train.sft import ModelArguments, prepare_trainable
from cogip.train.trainer import as_fsdp_forward, supervised_logits

model_dir, bench, config, out = sys.argv[1:5]
dist.init_process_group("gloo")
family = get_family(sys.argv[5] if len(sys.argv) > 5 else "qwen")
tune_mode = sys.argv[6] if len(sys.argv) > 6 else "lora"
processor = family.load_processor(model_dir, **family.pixel_bounds(7056, 7056))
dataset = load_sft_dataset(f"{bench}/cognition_training.json", f"{bench}/cognition/cognition_images")
batch = SFTCollator(family, processor)([dataset[i] for i in range(4)])


def build():
    torch.manual_seed(0)   # the same LoRA initialisation in both copies
    model = family.load_model(model_dir, dtype=torch.float32)
    return prepare_trainable(model, family, ModelArguments(tune_mode=tune_mode, lora_dropout=0.0)).train()


def loss_of(model):
    logits, targets = supervised_logits(model, batch)
    loss = torch.nn.functional.cross_entropy(logits.float(), targets)
    loss.backward()
    return loss.item()


reference = build()
ref_loss = loss_of(reference)
ref_grads = {n: p.grad for n, p in reference.named_parameters() if p.requires_grad}

# the plugin as the Trainer builds it from the launcher's config file, with the blocks named as sft does
sharded = build()
args = TrainingArguments(output_dir=out + ".d", fsdp=True, fsdp_config=config, use_cpu=True, report_to="none")
blocks = fsdp_wrap_blocks(args.fsdp_plugin_args, sharded, family)
plugin = FullyShardedDataParallelPlugin(**args.fsdp_plugin_args)
# what fsdp2_prepare_model reads of an Accelerator (accelerate 1.16 added its device, where ignored modules go)
accelerator = SimpleNamespace(state=SimpleNamespace(fsdp_plugin=plugin), mixed_precision="no",
                              is_main_process=dist.get_rank() == 0, torch_device_mesh=None, device=torch.device("cpu"))
sharded = fsdp2_prepare_model(accelerator, sharded)
registered = as_fsdp_forward(sharded)
losses = [loss_of(sharded)]
grads = {n: p.grad.full_tensor() for n, p in sharded.named_parameters() if p.requires_grad and p.grad is not None}
root_params = [fp._param_fqn for fp in sharded._get_fsdp_state()._fsdp_param_group.fsdp_params]
for p in sharded.parameters():   # a second step's forward and backward still gather and reduce
    p.grad = None
losses.append(loss_of(sharded))

if dist.get_rank() == 0:
    results = {
        "blocks": blocks, "registered": registered, "registered_again": as_fsdp_forward(sharded),
        "units": sorted({type(m).__name__ for m in sharded.modules() if isinstance(m, FSDPModule)}),
        "n_units": sum(isinstance(m, FSDPModule) for m in sharded.modules()),
        "sharded_params": sum(isinstance(p, DTensor) for p in sharded.parameters()),
        "params": sum(1 for _ in sharded.parameters()),
        "root_trained": sorted({n.split(".")[-2] for n in root_params
                                if dict(sharded.named_parameters())[n].requires_grad}),
        "ref_loss": ref_loss, "losses": losses,
        "grad_names_equal": sorted(grads) == sorted(ref_grads),
        "max_grad_diff": max((grads[n] - ref_grads[n]).abs().max().item() for n in ref_grads if n in grads),
        "max_grad": max(g.abs().max().item() for g in ref_grads.values()),
    }
    with open(out, "w") as f:
        json.dump(results, f, indent=1)
dist.barrier()   # both ranks done: a rank that closed its connections while the other still wrote aborted it (gloo)
# Leave without tearing gloo down: its connection threads, closed from both ends at once, still aborted a
# rank now and then ("terminate called without an active exception"; CI, 1 run in 3 here). Nothing is left
# to write: the results file is closed above.
sys.stdout.flush(), sys.stderr.flush()
os._exit(0)
