"""Keep freed memory in the process: glibc's defaults cost the CPU training step page faults.

A training step allocates and frees many tensors of about a megabyte. By default glibc
serves such blocks with `mmap` and returns them (and the freed top of the heap) to the OS
at once, so every step faults the same pages in again. Raising both thresholds keeps them
in the heap for reuse; on the 2-core development CPU this halves the time of a
3-layer attention block's forward and backward (docs/benchmarks.md). Memory that a run
has used stays with the process until it exits: its RSS is its peak, not its current use.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import logging
import sys

logger = logging.getLogger(__name__)

_M_TRIM_THRESHOLD = -1  # mallopt parameters, from glibc's malloc.h
_M_MMAP_THRESHOLD = -3
_THRESHOLD = 1 << 30  # bytes: blocks up to 1 GiB come from the heap and stay there


def keep_freed_memory() -> bool:
    """Set glibc's mmap and trim thresholds to 1 GiB; False (and nothing done) off glibc."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):  # musl and other libcs without mallopt
        return False
    done = (
        mallopt(_M_MMAP_THRESHOLD, _THRESHOLD) == 1 and mallopt(_M_TRIM_THRESHOLD, _THRESHOLD) == 1
    )
    if not done:
        logger.debug("mallopt refused the allocator thresholds")
    return done
