"""Run by torchrun (two CPU processes, gloo) from tests/test_sft.py: `cogip.train.sft.run` as the
launchers run it on several GPUs without DeepSpeed (the Trainer wraps the model in DDP). Writes, per
rank, every logged record, the gradients before the first optimizer step,
and what `ranks_agree` says before and after one rank's weights are nudged.

    torchrun --nproc_per_node 2 tests/ddp_worker.py OUT_PREFIX SFT_ARGS..."""

import sys

import torch
from recorders import StepRecord

from cogip.train.sft import ranks_agree, run

prefix, argv = sys.argv[1], sys.argv[2:]
record = StepRecord()
trainer = run(argv, callbacks=[record])
rank = trainer.args.process_index
agree_after_training = ranks_agree(trainer.model, trainer.args)
if rank == 1:   # one replica drifts: the check must see it
    with torch.no_grad():
        next(p for p in trainer.model.parameters() if p.requires_grad).add_(1e-3)
torch.save({"logs": record.logs, "grads": record.grads, "agree": agree_after_training,
            "agree_after_nudge": ranks_agree(trainer.model, trainer.args)}, f"{prefix}.rank{rank}.pt")
torch.distributed.barrier()   # as cogip.train.sft.main does: else gloo's threads may abort the process at exit
torch.distributed.destroy_process_group()
