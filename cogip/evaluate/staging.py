"""Prepared batches to the GPU through one page-locked buffer per thread, reused for every batch.

Pinning each batch as the loader hands it over (`DataLoader(pin_memory=True)`) takes a block of the host's
pinned pool per tensor, and images of varied sizes give every batch tensors of a size of their own: at the
published test set's size the pool grew block by block over the loop's first seconds, to 14-16 GiB in 188
blocks, each page-locked while the first batches ran (docs/benchmarks.md). Here a thread's first batch sizes
its buffer, and the benchmark loop runs its longest batches first, so the later ones fit: a few blocks in all.
The copy into the buffer is the one the loader's pinning thread made; the copy to the GPU stays asynchronous.
"""

from __future__ import annotations

import threading

import torch

ALIGN = 4096          # each tensor's place in the buffer: page-aligned, so any dtype may view it
HEADROOM = 1.25       # a new buffer's size over the batch that needed it: a slightly larger batch still fits


def _aligned(nbytes: int) -> int:
    return -(-nbytes // ALIGN) * ALIGN


class PinnedStaging:
    """`to_device(batch, device)`: a batch dict's tensors copied to `device`; on a GPU through this thread's
    pinned buffer (grown when a batch does not fit), elsewhere as `.to` does."""

    def __init__(self):
        self._local = threading.local()
        self.buffers_made = 0   # how many buffers the threads have allocated (timing.json, tests)

    def _buffer(self, nbytes: int) -> torch.Tensor:
        """This thread's buffer, at least `nbytes`; free to overwrite (its last copies out have finished)."""
        local = self._local
        buf = getattr(local, "buffer", None)
        if buf is not None and buf.numel() >= nbytes:
            if local.copied is not None:
                local.copied.synchronize()
            return buf
        # the old buffer goes back to torch's pinned pool, which waits for the copies it recorded
        local.buffer = torch.empty(_aligned(int(nbytes * HEADROOM)), dtype=torch.uint8,
                                   pin_memory=torch.cuda.is_available())
        local.copied = None
        self.buffers_made += 1
        return local.buffer

    def stage(self, batch: dict) -> dict:
        """The batch with each tensor not already pinned replaced by an equal view of this thread's buffer.
        The views are overwritten by the thread's next batch: copy them out first (`to_device` does)."""
        places, total = {}, 0
        for k, v in batch.items():
            if torch.is_tensor(v) and v.device.type == "cpu" and not (torch.cuda.is_available() and v.is_pinned()):
                places[k] = total
                total += _aligned(v.numel() * v.element_size())
        if not places:
            return dict(batch)
        buf = self._buffer(total)
        out = dict(batch)
        for k, start in places.items():
            v = batch[k]
            view = buf[start:start + v.numel() * v.element_size()].view(v.dtype).view(v.shape)
            view.copy_(v)
            out[k] = view
        return out

    def to_device(self, batch: dict, device: torch.device) -> dict:
        device = torch.device(device)
        if device.type != "cuda":
            return {k: v.to(device) if torch.is_tensor(v) else v for k, v in batch.items()}
        staged = self.stage(batch)
        out = {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in staged.items()}
        self._local.copied = torch.cuda.Event()
        self._local.copied.record()   # on this thread's stream, after its copies: the buffer is free once it has passed
        return out
