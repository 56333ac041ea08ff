"""Fused CPU kernels for the training step's small operations, with the same bits as PyTorch.

- `contract(x, y)`: `out[h, a, c, :] = sum over k of x[h, k, a, :] * y[h, k, c, :]`, the
  attention layer's products over fields with the batch innermost. PyTorch computes it as a
  broadcast product of shape `(H, K, A, C, B)` summed over `k`: two passes over megabytes
  for a few thousand FLOPs per sample.
- `table_gradient(...)`: one embedding table's dense gradient, the looked-up rows'
  gradients added into a zeroed `(V, dim)` tensor (`index_add_`), row 0 left zero; in
  PyTorch four operators per table, some with a slow path for narrow rows.

`kernels.cpp` computes each with the same float operations in the same order as the PyTorch
ops it replaces (a float32 product, then a float32 sum, in the ops' order; no fused
multiply-add), so a model trains to the same weights with or without it
(`tests/test_kernels.py`). It is compiled by `torch.utils.cpp_extension` the first time a
process needs it (a C++ compiler, `ninja` from requirements.txt and an x86-64 CPU with
AVX2; about 30 s once, then loaded from PyTorch's extension cache). Where any of that is
missing, on other devices and for other dtypes, each function is its PyTorch expression.
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
    if _fits_contract(x) and _fits_contract(y):
        kernels = compiled_kernels()
        if kernels is not None:
            return kernels.contract(x, y)
    return (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)


def _fits_contract(tensor: Tensor) -> bool:
    """A CPU float32 tensor, contiguous along a batch that is a multiple of 64: PyTorch's
    sums over a leading dim add in order only when the batch fills their vector loops (other
    batches take a scalar tail loop that adds in another order)."""
    return (
        tensor.device.type == "cpu"
        and tensor.dtype == torch.float32
        and tensor.stride(3) == 1
        and tensor.shape[3] % 64 == 0
    )


def table_gradient(
    num_rows: int,
    index: Tensor,
    upstream: Tensor,
    batch_rows: Tensor | None = None,
    weights: Tensor | None = None,
) -> Tensor:
    """`(num_rows, dim)`: entry `i` adds `upstream[i]` (or, with `batch_rows` and `weights`,
    `upstream[batch_rows[i]] * weights[i]`) to row `index[i]`, in order of `i`; row 0 stays
    zero. `index`, `batch_rows`: int64 `(N,)`; `upstream`: `(B, dim)`."""
    if upstream.device.type == "cpu" and upstream.dtype == torch.float32:
        kernels = compiled_kernels()
        if kernels is not None:
            return kernels.table_gradient(
                num_rows, index.contiguous(), upstream.contiguous(), batch_rows, weights
            )
    rows = upstream if batch_rows is None else upstream.index_select(0, batch_rows)
    if weights is not None:
        rows = rows * weights.unsqueeze(1)
    gradient = rows.new_zeros(num_rows, rows.shape[1]).index_add_(0, index, rows)
    gradient.narrow(0, 0, 1).zero_()
    return gradient


@functools.cache
def compiled_kernels() -> ModuleType | None:
    """The compiled kernels, or None (logged once) where they cannot be built."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        logger.info("CPU kernels not used: this CPU has no AVX2; PyTorch ops instead")
        return None
    from torch.utils.cpp_extension import load

    logger.info("CPU kernels: loading (compiled on first use on this machine, ~30 s)")
    try:
        return load(
            name="deepfm_kernels",
            sources=[str(_SOURCE)],
            extra_cflags=_CFLAGS,
            extra_ldflags=["-fopenmp"],
        )
    except (OSError, RuntimeError, ImportError, subprocess.CalledProcessError) as error:
        message = str(error).strip()
        logger.warning(
            "CPU kernels not built (%s); PyTorch ops instead: same results, slower",
            message.splitlines()[-1] if message else type(error).__name__,
        )
        return None
