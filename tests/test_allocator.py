"""Jobs keep freed memory in the heap (glibc mallopt); elsewhere the call says it changed nothing."""

import ctypes

import torch

from eoslab.allocator import keep_freed_memory


def test_keep_freed_memory_takes_on_glibc_and_changes_no_number():
    a = torch.randn(64, 64, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    before = (a @ a.T).sum().item()
    took = keep_freed_memory()
    assert took == (getattr(ctypes.CDLL(None), "mallopt", None) is not None)
    big = [torch.ones(5_000_000) for _ in range(3)]  # 20 MB each: served from the heap now, freed into it
    assert all(t.sum().item() == 5_000_000 for t in big)
    del big
    assert (a @ a.T).sum().item() == before
