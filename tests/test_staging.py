"""The staging of prepared batches: one pinned buffer per thread, reused, and copies to the GPU that a
later batch cannot overwrite before they have happened."""

import threading

import pytest
import torch

from cogip.evaluate.staging import ALIGN, PinnedStaging


def _batch(seed: int, patches: int = 7) -> dict:
    g = torch.Generator().manual_seed(seed)
    return {"input_ids": torch.randint(0, 1000, (2, 5), generator=g),
            "pixel_values": torch.randn(patches, 6, generator=g).to(torch.bfloat16),
            "image_grid_thw": torch.tensor([[1, 2, 2]]), "mask": torch.ones(2, 5, dtype=torch.bool),
            "empty": torch.zeros(0, 4), "name": "not a tensor"}


def _storage(t: torch.Tensor) -> int:
    return t.untyped_storage().data_ptr()


def test_a_batch_is_staged_into_one_buffer_reused_by_the_next_batches_of_its_thread():
    staging = PinnedStaging()
    batch = _batch(0)
    staged = staging.stage(batch)
    assert staged["name"] == "not a tensor" and staging.buffers_made == 1
    tensors = [k for k, v in batch.items() if torch.is_tensor(v)]
    for k in tensors:   # equal values, dtype and shape, each at a page-aligned place of the one buffer
        assert staged[k].dtype == batch[k].dtype and torch.equal(staged[k], batch[k]), k
        assert _storage(staged[k]) == _storage(staged["input_ids"])
        assert staged[k].numel() == 0 or (staged[k].data_ptr() - _storage(staged[k])) % ALIGN == 0
    assert staged["input_ids"].data_ptr() != batch["input_ids"].data_ptr()   # a copy, not the loader's tensor

    buffer = _storage(staged["input_ids"])
    smaller = _batch(1, patches=3)
    again = staging.stage(smaller)   # fits: the same buffer, overwritten
    assert staging.buffers_made == 1 and _storage(again["pixel_values"]) == buffer
    assert torch.equal(again["pixel_values"], smaller["pixel_values"])
    assert torch.equal(staged["input_ids"], smaller["input_ids"])   # the first batch's views now read the second's
    transposed = {"x": torch.arange(12.0).view(3, 4).t()}   # not contiguous: staged in its own order of values
    assert torch.equal(staging.stage(transposed)["x"], transposed["x"])

    larger = _batch(2, patches=4000)
    grown = staging.stage(larger)   # does not fit: a new buffer, with room for a slightly larger batch
    assert staging.buffers_made == 2 and torch.equal(grown["pixel_values"], larger["pixel_values"])
    assert grown["pixel_values"].untyped_storage().nbytes() >= 1.2 * larger["pixel_values"].nbytes

    other = {}
    thread = threading.Thread(target=lambda: other.update(staging.stage(_batch(3))))
    thread.start(), thread.join()
    assert staging.buffers_made == 3 and _storage(other["input_ids"]) != _storage(grown["input_ids"])   # its own


def test_off_the_gpu_batches_move_as_they_are():
    staging = PinnedStaging()
    batch = _batch(0)
    moved = staging.to_device(batch, "cpu")
    assert staging.buffers_made == 0 and moved["input_ids"] is batch["input_ids"] and moved["name"] == batch["name"]


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_copies_to_the_gpu_finish_before_the_buffer_is_overwritten():
    """The next batch of a thread waits for the last one's copies out of the buffer: here they queue behind
    a kernel that keeps the stream busy, so a next batch staged at once would be what the GPU receives."""
    staging = PinnedStaging()
    first, second = _batch(0, patches=1 << 16), _batch(1, patches=1 << 16)
    stream = torch.cuda.Stream()
    with torch.cuda.stream(stream):
        torch.cuda._sleep(int(2e9))   # ~1 s of the GPU's clock
        on_gpu = staging.to_device(first, "cuda")
        staging.to_device(second, "cuda")
    torch.cuda.synchronize()
    assert staging.buffers_made == 1
    assert staging._local.buffer.is_pinned()
    for k, v in first.items():
        if torch.is_tensor(v):
            assert on_gpu[k].device.type == "cuda" and torch.equal(on_gpu[k].cpu(), v), k
