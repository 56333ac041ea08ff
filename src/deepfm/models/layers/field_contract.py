"""`contract(x, y)`: the attention layer's small products over fields, fused on the CPU.

`out[h, a, c, :] = sum over k of x[h, k, a, :] * y[h, k, c, :]`, the batch innermost.

PyTorch computes it as a broadcast product of shape `(H, K, A, C, B)` summed over `k`:
two passes over a tensor of megabytes for products of a few thousand FLOPs per sample.
`field_contract.cpp` computes each output in cache with the same float operations in the
same order (a float32 product per `k`, added in order of `k` to a sum that starts at 0,
no fused multiply-add), so both give the same bits, and a model trains to the same weights
with or without the kernel (`tests/test_field_contract.py`).

The kernel is compiled by `torch.utils.cpp_extension` the first time a process needs it
(a C++ compiler, `ninja` from requirements.txt and an x86-64 CPU with AVX2; about 30 s
once, then loaded from PyTorch's extension cache). Where any of that is missing, on other
devices, for other dtypes and for batches that are not a multiple of 64, `contract` is the
PyTorch expression.
"""

from __future__ import annotations

import functools
import logging
import subprocess
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_suffix(".cpp")
# -ffp-contract=off keeps every product and sum rounded on its own (what PyTorch does).
_CFLAGS = ["-O3", "-mavx2", "-ffp-contract=off", "-fopenmp"]


def contract(x: Tensor, y: Tensor) -> Tensor:
    """`(H, A, C, B)` from `x (H, K, A, B)` and `y (H, K, C, B)`: the sum over `k`, in
    order, of `x[:, k, a] * y[:, k, c]`."""
    if _fits_kernel(x) and _fits_kernel(y):
        kernel = compiled_kernel()
        if kernel is not None:
            return kernel.contract(x, y)
    return (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)


def _fits_kernel(tensor: Tensor) -> bool:
    """A CPU float32 tensor, contiguous along a batch that is a multiple of 64: PyTorch's
    sums over a leading dim add in order only when the batch fills its vector loops (other
    batches take a scalar tail loop that adds in another order)."""
    return (
        tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and tensor.stride(3) == 1
        and tensor.shape[3] % 64 == 0
    )


@functools.cache
def compiled_kernel() -> ModuleType | None:
    """The compiled kernel module, or None (logged once) where it cannot be built."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        logger.info("attention kernel not used: this CPU has no AVX2; PyTorch ops instead")
        return None
    from torch.utils.cpp_extension import load

    logger.info("attention kernel: loading (compiled on first use on this machine, ~30 s)")
    try:
        return load(
            name="deepfm_field_contract",
            sources=[str(_SOURCE)],
            extra_cflags=_CFLAGS,
            extra_ldflags=["-fopenmp"],
        )
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        logger.warning(
            "attention kernel not built (%s); PyTorch ops instead: same results, slower",
            str(error).strip().splitlines()[-1] if str(error).strip() else type(error).__name__,
        )
        return None
