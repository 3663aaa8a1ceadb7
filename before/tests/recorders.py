"""Trainer callbacks the tests and their torchrun workers record a run with."""

from transformers import TrainerCallback


class StepRecord(TrainerCallback):
    """Every logged record, and the gradients before the first optimizer step."""

    def __init__(self):
        self.logs, self.grads = [], None

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if self.grads is None:
            self.grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}

    def on_log(self, args, state, control, logs=None, **kwargs):
        self.logs.append(dict(logs or {}))
