"""All-gather time and bus bandwidth between the GPUs of one host, for one Qwen2.5-VL-7B decoder block
(233M bf16 parameters): what ZeRO-3 moves per block and pass (docs/benchmarks.md).

    torchrun --nproc_per_node 2 benchmarks/allgather_bw.py
"""

import time

import torch
import torch.distributed as dist

BLOCK = 233_000_000

dist.init_process_group("nccl")
rank, world = dist.get_rank(), dist.get_world_size()
torch.cuda.set_device(rank)
out = torch.empty(BLOCK, dtype=torch.bfloat16, device="cuda")
part = torch.ones(BLOCK // world, dtype=torch.bfloat16, device="cuda")
for _ in range(3):
    dist.all_gather_into_tensor(out, part)
torch.cuda.synchronize()
t = time.perf_counter()
for _ in range(20):
    dist.all_gather_into_tensor(out, part)
torch.cuda.synchronize()
seconds = (time.perf_counter() - t) / 20
if rank == 0:
    print(f"all_gather of {BLOCK * 2 / 1e6:.0f} MB on {world} GPUs: {seconds * 1e3:.2f} ms, "
          f"bus {BLOCK * 2 * (world - 1) / world / seconds / 1e9:.1f} GB/s", flush=True)
dist.destroy_process_group()
