"""Huge-page memory for the row-wise tables and their Adam moments."""

from __future__ import annotations

import gc
import mmap
from pathlib import Path

import pytest
import torch

from deepfm.training.allocator import on_huge_pages, zeros_on_huge_pages

HUGE_PAGE = 2 << 20
THP_SETTING = Path("/sys/kernel/mm/transparent_hugepage/enabled")


def anon_huge_kib() -> int:
    """This process's memory on transparent huge pages (KiB)."""
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        if line.startswith("AnonHugePages:"):
            return int(line.split()[1])
    raise AssertionError("no AnonHugePages line")


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE here")
def test_huge_page_tensors_hold_the_values_start_on_a_huge_page_and_outlive_their_maker():
    table = torch.randn(3000, 16)
    copy = on_huge_pages(table)
    zeros = zeros_on_huge_pages((3000, 2, 16), table)
    gc.collect()  # nothing but the tensors keeps their mappings alive
    assert torch.equal(copy, table) and copy.data_ptr() != table.data_ptr()
    assert zeros.shape == (3000, 2, 16) and zeros.dtype == table.dtype
    assert torch.count_nonzero(zeros) == 0
    assert copy.data_ptr() % HUGE_PAGE == 0 and zeros.data_ptr() % HUGE_PAGE == 0
    for tensor in (copy, zeros):  # torch.save writes the storage: its own bytes, no more
        assert tensor.untyped_storage().nbytes() == tensor.numel() * tensor.element_size()
    copy[2999] = 1.0  # still writable memory
    assert torch.equal(copy[2999], torch.ones(16))


@pytest.mark.skipif(
    not THP_SETTING.is_file() or "[never]" in THP_SETTING.read_text(),
    reason="transparent huge pages are off on this machine",
)
def test_a_huge_page_tensor_is_backed_by_huge_pages_once_written():
    before = anon_huge_kib()
    table = zeros_on_huge_pages((4 * HUGE_PAGE // 4,), torch.empty(0))  # 8 MiB of float32
    table.fill_(1.0)
    assert anon_huge_kib() - before >= HUGE_PAGE // 1024


def test_off_the_cpu_or_linux_it_is_plain_zeros(monkeypatch):
    monkeypatch.delattr(mmap, "MADV_HUGEPAGE", raising=False)
    table = torch.randn(10, 4)
    assert on_huge_pages(table) is table
    zeros = zeros_on_huge_pages((20, 4), table)
    assert zeros.shape == (20, 4) and torch.count_nonzero(zeros) == 0


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE here")
def test_where_the_kernel_refuses_the_advice_the_memory_is_ordinary(monkeypatch):
    monkeypatch.setattr(mmap, "MADV_HUGEPAGE", 0x7FFF)  # no such advice: madvise fails
    with pytest.raises(OSError):
        mmap.mmap(-1, 4096, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS).madvise(0x7FFF)
    table = torch.randn(100, 8)
    assert torch.equal(on_huge_pages(table), table)
