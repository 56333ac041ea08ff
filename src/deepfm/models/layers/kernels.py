"""Fused CPU kernels for the training step's small operations, with the same bits as PyTorch.

- `attention_forward` / `attention_backward` (through `attention_kernels`): the attention
  layer's products over fields with the batch innermost, its softmax and their gradients,
  up to 256 samples at a time, in cache. PyTorch computes each product as a broadcast of shape
  `(H, K, A, C, B)` summed over `k`: two passes over megabytes for a few thousand FLOPs per
  sample, and one more pass for each softmax and scaling step.
- `lookup_forward` / `lookup_backward` (through `lookup_kernels`): every embedding lookup
  of a batch in one call (sparse fields' rows, sequence fields' weighted sums in `slot_sum`'s
  order, the first-order sum, written straight into the concatenated `(B, total_dim)`
  vectors), and every table's gradient in one call: a dense table's (the looked-up rows'
  gradients added in entry order, as `index_add_` adds them, row 0 left zero) and a
  row-wise table's sparse one (each field's distinct rows, found with a bitmap over the
  table instead of `torch.unique`'s sort, and their gradients summed in entry order), each
  table or field on whichever thread is free. In PyTorch that is about 40 small operators
  per step, each with its own dispatch and allocation.
- `row_wise_adam` (through `lookup_kernels`): `RowWiseAdam`'s step in one call, each
  looked-up row stepped where it lies (prefetching ahead) with the float operations of
  PyTorch's fused Adam kernel, where PyTorch gathers the rows of weights and moments, steps
  them and writes them back, a dozen operators per table.

`kernels.cpp` computes each with the same float operations in the same order as the PyTorch
ops it replaces (a float32 product, then a float32 sum, in the ops' order; no fused
multiply-add but the three that PyTorch's fused Adam kernel makes), so a model trains to
the same weights with or without it (`tests/test_kernels.py`). It is compiled by
`torch.utils.cpp_extension` the first time a process needs it (a C++ compiler, `ninja` from
requirements.txt and an x86-64 CPU with AVX2; about 50 s once, then loaded from PyTorch's
extension cache). Where any of that is missing, on other devices and for other dtypes, each
function is its PyTorch expression.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import subprocess
from pathlib import Path
from types import ModuleType

import torch
from torch import Tensor

logger = logging.getLogger(__name__)

_SOURCE = Path(__file__).with_suffix(".cpp")
# -ffp-contract=off keeps every product and sum rounded on its own (what PyTorch does).
_CFLAGS = ["-O3", "-mavx2", "-ffp-contract=off", "-fopenmp"]


def attention_kernels(query_key_value: Tensor) -> ModuleType | None:
    """The compiled kernels for `_FieldAttention` on `query_key_value (3, H, D, F, B)`, or
    None (the caller runs its PyTorch ops): a contiguous CPU float32 tensor whose batch is a
    multiple of 64. PyTorch's sums over a leading dim add in order only when the batch fills
    their vector loops (other batches take a scalar tail loop that adds in another order);
    the kernels add in order."""
    if (
        query_key_value.is_cpu
        and query_key_value.dtype == torch.float32
        and query_key_value.is_contiguous()
        and query_key_value.shape[-1] % 64 == 0
    ):
        return compiled_kernels()
    return None


def slot_sum(products: Tensor) -> Tensor:
    """`(B, d)`: the sum over `L` of `products (B, L, d)`, in the order PyTorch's CPU `sum`
    over a short middle dim adds (AVX2 kernels; `tests/test_kernels.py` pins it for up to
    10 slots of 8- or 16-wide rows and up to 7 slots of 1-wide ones, the pipeline's): four
    partial sums from 0 (entry `l` of the first `L - L % 4` to partial `l % 4`), the last
    `L % 4` entries added to partial 0, then partials 1, 2, 3. Written out, so that the
    pooled sequence vectors have these bits on every machine, with or without the kernels
    (`lookup_forward` adds in the same order)."""
    slots, full = products.shape[1], products.shape[1] // 4 * 4
    partials = [products.new_zeros(products.shape[0], products.shape[2]) for _ in range(4)]
    for slot in range(full):
        partials[slot % 4] = partials[slot % 4] + products[:, slot]
    for slot in range(full, slots):
        partials[0] = partials[0] + products[:, slot]
    return 0.0 + (partials[0] + partials[1] + partials[2] + partials[3])


def lookup_kernels(tensors: list[Tensor]) -> ModuleType | None:
    """The compiled kernels when every one of `tensors` (embedding tables) is a CPU float32
    tensor and they are built; else None (the caller runs its PyTorch ops). Their
    `lookup_forward` and `lookup_backward` look up every field of a batch and compute the
    tables' dense and sparse gradients, `row_wise_adam` steps the row-wise tables
    (kernels.cpp)."""
    if all(t.is_cpu and t.dtype == torch.float32 for t in tensors):
        return compiled_kernels()
    return None


def _source_digest() -> str:
    """12 hex digits of the source, the flags and the PyTorch install (its version and folder,
    so each virtual environment compiles against its own headers): each version of the kernels
    gets its own name, so processes running different versions each load theirs from PyTorch's
    extension cache."""
    install = f"{torch.__version__} {Path(torch.__file__).parent}"
    digest = hashlib.sha256(_SOURCE.read_bytes() + " ".join([*_CFLAGS, install]).encode())
    return digest.hexdigest()[:12]


def _build_directory(name: str) -> Path:
    """This build's folder in PyTorch's extension cache, holding a copy of the source.

    The build is compiled from that copy, not from the package: ninja rebuilds whenever the
    source's path changes, so a second checkout (or a DVC test's copy of `src/`) would
    otherwise recompile the same source (~50 s) and then make the first checkout recompile it.
    """
    from torch.utils.cpp_extension import get_default_build_root

    root = os.environ.get("TORCH_EXTENSIONS_DIR") or get_default_build_root()
    directory = Path(root) / name
    directory.mkdir(parents=True, exist_ok=True)
    source = directory / _SOURCE.name
    if not source.is_file() or source.read_bytes() != _SOURCE.read_bytes():
        partial = directory / f".{_SOURCE.name}.{os.getpid()}"
        partial.write_bytes(_SOURCE.read_bytes())
        partial.replace(source)
    return directory


@functools.cache
def compiled_kernels() -> ModuleType | None:
    """The compiled kernels, or None (logged once) where they cannot be built."""
    if torch.backends.cpu.get_cpu_capability() not in ("AVX2", "AVX512"):
        logger.info("CPU kernels not used: this CPU has no AVX2; PyTorch ops instead")
        return None
    from torch.utils.cpp_extension import load

    name = f"deepfm_kernels_{_source_digest()}"
    try:
        build = _build_directory(name)
        if (build / f"{name}.so").is_file():
            logger.info("CPU kernels: loading the build in %s", build)
        else:
            logger.info(
                "CPU kernels: compiling into %s (once per virtual environment, ~50 s)", build
            )
        return load(
            name=name,
            sources=[str(build / _SOURCE.name)],
            build_directory=str(build),
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
