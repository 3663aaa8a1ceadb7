"""The one trainer: transformers.Trainer with the soft-label loss, per-part learning rates and
logits computed only where the answer is supervised."""

from __future__ import annotations

import contextlib
from functools import partial

import torch
from transformers import Trainer

from ..loss import SoftLabelLoss
from ..models.families import Family

MODEL_INPUTS_DROP = ("labels",)


def unwrap(model):
    """The `…ForConditionalGeneration` under PEFT / DeepSpeed / DDP wrappers."""
    while hasattr(model, "module"):
        model = model.module
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def supervised_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """(logits [N, V], targets [N]) at the N positions that predict a supervised token.

    Runs the backbone without its lm_head and projects only those positions, so the vocabulary
    projection never touches image and prompt tokens. Under FSDP2 it runs as a forward method of the
    sharded root (`as_fsdp_forward`), under DDP as the forward of the wrapped module (`_through_ddp`)."""
    fsdp_forward = getattr(model, FSDP_FORWARD, None)
    if fsdp_forward is not None:
        return fsdp_forward(inputs)
    if isinstance(model, torch.nn.parallel.DistributedDataParallel):
        return _through_ddp(model, inputs)
    return _supervised_logits(model, inputs)


def _through_ddp(ddp, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    """DDP arms its gradient all-reduce in its own forward, around a call of the wrapped module; called
    past it, the backward would leave every rank with its own gradients. So for this call the supervised
    path is the wrapped module's forward. (DeepSpeed's ZeRO-1/2 reduce from gradient hooks, ZeRO-3 gathers
    from module hooks: they need no such call.)"""
    module = ddp.module
    own = module.__dict__.get("forward")   # accelerate may have set one (mixed precision): restored after
    module.forward = partial(_supervised_logits, module)
    try:
        return ddp(inputs)
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


FSDP_FORWARD = "cogip_supervised_logits"


def as_fsdp_forward(model) -> bool:
    """Make `supervised_logits(model, …)` run inside the FSDP2 root's forward hooks; True if it did.

    FSDP2 gathers a unit's own parameters (for the root: all outside the wrapped blocks, e.g. Qwen's
    patch embedding and merger) and arms its backward only around `forward()`. `supervised_logits`
    calls the backbone and lm_head directly, so it is registered as a forward method of the root."""
    from torch.distributed.fsdp import FSDPModule, register_fsdp_forward_method
    if not isinstance(model, FSDPModule) or hasattr(model, FSDP_FORWARD):
        return False
    setattr(model, FSDP_FORWARD, _supervised_logits.__get__(model))
    register_fsdp_forward_method(model, FSDP_FORWARD)
    return True


def _supervised_logits(model, inputs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    core = unwrap(model)
    labels = inputs["labels"]
    kwargs = {k: v for k, v in inputs.items() if k not in MODEL_INPUTS_DROP}
    hidden = core.model(**kwargs, use_cache=False).last_hidden_state      # [B, T, H]
    shifted = labels[:, 1:]
    keep = shifted != -100
    h = hidden[:, :-1][keep]                                              # [N, H]
    logits = core.lm_head(h)
    cap = getattr(core.config.get_text_config(), "final_logit_softcapping", None)
    if cap:
        logits = torch.tanh(logits / cap) * cap
    return logits, shifted[keep]


class PartLearningRates:
    """A Trainer mixin (for transformers' Trainer and trl's): one optimizer group per part and decay, the
    language model at lr, the vision tower at `vision_lr`, the merger/projector at `merger_lr`. Needs
    `self.family`, `self.vision_lr`, `self.merger_lr`."""

    def create_optimizer(self):
        if self.optimizer is not None:
            return self.optimizer
        lrs = {"language": self.args.learning_rate, "vision": self.vision_lr or self.args.learning_rate,
               "projector": self.merger_lr or self.args.learning_rate}
        groups: dict[tuple[str, bool], list] = {}
        for name, p in self.model.named_parameters():
            if p.requires_grad:
                decay = p.ndim >= 2 and "norm" not in name.lower()
                groups.setdefault((self.family.param_group(name), decay), []).append(p)
        order = {"language": 0, "projector": 1, "vision": 2}   # first group's lr is the one logged
        params = [{"params": ps, "lr": lrs[g], "weight_decay": self.args.weight_decay if decay else 0.0}
                  for (g, decay), ps in sorted(groups.items(), key=lambda kv: (order[kv[0][0]], not kv[0][1]))]
        optim_cls, optim_kwargs = Trainer.get_optimizer_cls_and_kwargs(self.args, self.model)
        optim_kwargs.pop("lr", None)
        self.optimizer = optim_cls(params, **optim_kwargs)
        return self.optimizer


class CogipTrainer(PartLearningRates, Trainer):
    def __init__(self, *args, family: Family, loss_fn: SoftLabelLoss, vision_lr: float | None = None,
                 merger_lr: float | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        # Qwen2.5-VL and Gemma 3 declare they take no loss kwargs, and Mllama's signature says it does: either
        # way compute_loss below normalises by the step's supervised tokens, so have Trainer count them for
        # every family. The loss is then the same per-token mean over any accumulation and any rank count.
        self.model_accepts_loss_kwargs = True
        self.family, self.loss_fn = family, loss_fn
        self.vision_lr, self.merger_lr = vision_lr, merger_lr
        self._parts, self._tokens = None, 0   # (regular, numeric) sums on the device, tokens, since the last log

    def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
        as_fsdp_forward(model)   # once, under FSDP2
        # accelerate autocasts model.forward, which supervised_logits bypasses: autocast here, so float32 master
        # weights (fp32_master_weights) compute in bf16. A no-op under DeepSpeed; FSDP2 casts the weights itself.
        autocast = contextlib.nullcontext() if self.is_fsdp_enabled else self.accelerator.autocast()
        with autocast:
            logits, targets = supervised_logits(model, inputs)
        self.loss_fn.to(logits.device)
        total, regular, numeric = self.loss_fn(logits, targets)
        if num_items_in_batch is not None:
            # Trainer passes the supervised-token count of the whole optimizer step (all micro-batches and,
            # with average_tokens_across_devices, all ranks): normalising by it makes the step's loss exactly
            # (Σ regular + λ Σ numeric) / N over the global batch. The ranks' gradients are then averaged, so
            # each rank's part is scaled back by the rank count, as Trainer.compute_loss (overridden here) does.
            total = (regular + self.loss_fn.lam * numeric if self.loss_fn.soft else regular) / num_items_in_batch
            if self.args.average_tokens_across_devices:
                total = total * self.accelerator.num_processes
        # kept on the device: reading them here would stall the host between forward and backward
        parts = torch.stack([regular.detach().float(), numeric.detach().float()])
        self._parts = parts if self._parts is None else self._parts + parts
        self._tokens += targets.numel()
        return (total, {"logits": logits}) if return_outputs else total

    def log(self, logs: dict, *args, **kwargs) -> None:
        many = self.accelerator.num_processes > 1
        if "loss" in logs and (self._tokens or many):   # per-token means since the last log, over every rank's tokens
            parts = self._parts if self._parts is not None else torch.zeros(2, device=self.args.device)
            sums = torch.cat([parts, parts.new_tensor([self._tokens])])
            if many:   # every rank logs at the same steps, so every rank joins, even one that saw no tokens
                sums = self.accelerator.reduce(sums, reduction="sum")
            regular, numeric, tokens = sums.tolist()
            if tokens:
                logs["loss_regular"] = round(regular / tokens, 5)
                logs["loss_numeric"] = round(numeric / tokens, 5)
            self._parts, self._tokens = None, 0
        super().log(logs, *args, **kwargs)
