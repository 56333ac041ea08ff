"""Where the CPU training step's memory comes from: kept freed memory, and huge pages.

`keep_freed_memory`: glibc's defaults cost the CPU training step page faults.

A training step allocates and frees many tensors of about a megabyte. By default glibc
serves such blocks with `mmap` and returns them (and the freed top of the heap) to the OS
at once, so every step faults the same pages in again. Raising both thresholds keeps them
in the heap for reuse; on the 2-core development CPU AttentionDeepFM trains about 1.5x
faster with them (`python bench/bench_levers.py`, docs/benchmarks.md). Freed memory up to
the trim threshold stays with the process, so its RSS stays near its peak.

The mmap threshold stays within glibc's documented maximum (32 MiB on 64-bit systems):
with 1 GiB, which glibc accepted, two-process DDP training aborted now and then with
"malloc(): unaligned tcache chunk detected" (2 of 7 runs of the gloo test under load;
0 of 12 with 32 MiB), and once more with 32 MiB in a full test run under load. So the
trainer leaves glibc's defaults alone inside a process group (DDP ranks); a single
process, where nothing else allocates while the thresholds change, keeps the speed-up.

`zeros_on_huge_pages` / `on_huge_pages`: memory for the row-wise tables and their Adam
moments, which every step reads and writes at random rows, on transparent huge pages.
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import logging
import math
import mmap
import sys
from collections.abc import Sequence

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
# Blocks up to 32 MiB (glibc's documented maximum for the mmap threshold on 64-bit
# systems) come from the heap; up to 256 MiB of free heap top is kept.
_MMAP_THRESHOLD = 32 << 20
_TRIM_THRESHOLD = 256 << 20


def keep_freed_memory() -> bool:
    """Raise glibc's mmap and trim thresholds; False (and nothing done) off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    done = (
        mallopt(_M_MMAP_THRESHOLD, _MMAP_THRESHOLD) == 1
        and mallopt(_M_TRIM_THRESHOLD, _TRIM_THRESHOLD) == 1
    )
    if not done:
        logger.debug("mallopt refused the allocator thresholds")
    return done


_HUGE_PAGE = 2 << 20  # x86-64's transparent huge page


def zeros_on_huge_pages(shape: Sequence[int], like: Tensor) -> Tensor:
    """Zeros of `shape` with the dtype and device of `like`, in memory the kernel may back with
    2 MiB pages where `like` is on the CPU.

    A large embedding table and its Adam moments are read and written at random rows; with
    4 KiB pages nearly every such row also misses the TLB, and huge pages cut that
    (docs/benchmarks.md). The memory is a private anonymous mapping (zeros), advised
    `MADV_HUGEPAGE` before it is first touched: it gets huge pages where transparent huge
    pages are `always` or `madvise`, ordinary pages where the kernel refuses the advice. The
    tensor keeps the mapping alive; its storage is its own bytes only (`torch.save` writes no
    more). Off the CPU, without `MADV_HUGEPAGE` (not Linux), or empty, it is
    `like.new_zeros(shape)`.
    """
    nbytes = math.prod(shape) * like.element_size()
    if not _huge_pages_apply(like) or nbytes == 0:
        return like.new_zeros(shape)
    mapping = mmap.mmap(-1, nbytes + _HUGE_PAGE, flags=mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS)
    with contextlib.suppress(OSError):  # a kernel without huge pages refuses: ordinary ones
        mapping.madvise(mmap.MADV_HUGEPAGE)
    address = torch.frombuffer(mapping, dtype=torch.uint8, count=1).data_ptr()
    start = -address % _HUGE_PAGE  # whole huge pages from the start of the tensor
    region = memoryview(mapping)[start : start + nbytes]
    return torch.frombuffer(region, dtype=like.dtype).view(tuple(shape))


def on_huge_pages(tensor: Tensor) -> Tensor:
    """A copy of `tensor` in memory from `zeros_on_huge_pages`; `tensor` itself where that
    memory would be ordinary (off the CPU, not Linux)."""
    if not _huge_pages_apply(tensor):
        return tensor
    return zeros_on_huge_pages(tensor.shape, tensor).copy_(tensor)


def _huge_pages_apply(tensor: Tensor) -> bool:
    """Whether `zeros_on_huge_pages` maps memory for `tensor` (else it is `zeros_like`)."""
    return tensor.device.type == "cpu" and hasattr(mmap, "MADV_HUGEPAGE")
