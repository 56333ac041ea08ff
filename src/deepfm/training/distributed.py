"""Data-parallel training over the processes torchrun starts: gloo on the CPU, NCCL on CUDA.

A stage run under `torchrun` joins the process group in `process_group`, and the trainer
wraps its model with `wrap` (DistributedDataParallel, which averages gradients over ranks).
`launch` runs a command under torchrun for `train.nproc` > 1. Outside a process group every
helper is the identity of a single rank 0, so one process runs the code it always ran.

Example::

    with process_group(torch.device("cpu")) as device:  # cuda:LOCAL_RANK on CUDA
        trainer = Trainer(model.to(device), config.train, device, seed=42)
"""

from __future__ import annotations

import logging
import math
import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import TypeVar

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

T = TypeVar("T")


def under_torchrun() -> bool:
    """Whether torchrun started this process (it sets LOCAL_RANK, RANK, WORLD_SIZE, ...)."""
    return "LOCAL_RANK" in os.environ


def launch(nproc: int, argv: list[str]) -> int:
    """Run `python argv...` as `nproc` processes of `torchrun --standalone`; its exit status."""
    env = dict(os.environ)
    # torchrun gives every process one thread unless told; share this process's instead.
    env.setdefault("OMP_NUM_THREADS", str(max(1, torch.get_num_threads() // nproc)))
    command = [
        *(sys.executable, "-m", "torch.distributed.run"),
        *("--standalone", f"--nproc_per_node={nproc}"),
        *argv,
    ]
    return subprocess.run(command, env=env, check=False).returncode


@contextmanager
def process_group(device: torch.device) -> Iterator[torch.device]:
    """Under torchrun, join its process group for the block; yield this rank's device.

    A CUDA `device` becomes `cuda:LOCAL_RANK` with NCCL; otherwise the ranks use gloo on the
    CPU. Ranks other than 0 log warnings and errors only. Outside torchrun `device` is yielded
    as it is and no group is made.
    """
    if not under_torchrun():
        yield device
        return
    if device.type == "cuda":
        device = torch.device("cuda", int(os.environ["LOCAL_RANK"]))
        torch.cuda.set_device(device)
        dist.init_process_group("nccl", device_id=device)
    else:
        dist.init_process_group("gloo")
    if dist.get_rank() != 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield device
    finally:
        dist.destroy_process_group()


def rank() -> int:
    """This process's rank; 0 outside a process group."""
    return dist.get_rank() if dist.is_initialized() else 0


def world_size() -> int:
    """The number of ranks; 1 outside a process group."""
    return dist.get_world_size() if dist.is_initialized() else 1


def wrap(
    model: nn.Module, device: torch.device, sparse_tables: Sequence[nn.Parameter] = ()
) -> nn.Module:
    """`model` in DistributedDataParallel inside a process group, else `model` itself.

    DDP starts every rank from rank 0's weights and averages gradients over ranks in
    `backward`. `static_graph`: every step uses the same parameters; one a model never
    uses keeps no gradient, as in one process. `sparse_tables`
    (parameters with sparse gradients) stay out of DDP's reducer, whose sparse all-reduce
    over gloo aborted ranks now and then; `average_sparse_gradients` averages them.
    """
    if not dist.is_initialized():
        return model
    ignored = [name for name, param in model.named_parameters() if _member(param, sparse_tables)]
    DistributedDataParallel._set_params_and_buffers_to_ignore_for_model(model, ignored)
    for table in sparse_tables:  # DDP broadcasts rank 0's weights, but not these
        dist.broadcast(table.data, src=0)
    device_ids = [device.index] if device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=device_ids, static_graph=True)


def average_sparse_gradients(tables: Sequence[nn.Parameter]) -> None:
    """Replace each table's sparse gradient by the mean over ranks, as DDP would: every
    rank's rows, concatenated in rank order, divided by the number of ranks. Uses dense
    all-gathers only (padded to the longest rank), never gloo's sparse all-reduce; NCCL has
    them too, but this path has not run on a GPU. A no-op in one process."""
    world = world_size()
    if world == 1 or not tables:
        return
    grads = [table.grad for table in tables]
    device = tables[0].device
    counts = torch.tensor([0 if g is None else g._nnz() for g in grads], device=device)
    all_counts = [torch.empty_like(counts) for _ in range(world)]
    dist.all_gather(all_counts, counts)
    for position, (table, grad) in enumerate(zip(tables, grads, strict=True)):
        rank_counts = [int(c[position]) for c in all_counts]
        longest = max(rank_counts)
        indices = table.new_zeros(longest, dtype=torch.long)
        values = table.new_zeros(longest, *table.shape[1:])
        if grad is not None:
            indices[: grad._nnz()] = grad._indices()[0]
            values[: grad._nnz()] = grad._values()
        gathered_indices = [torch.empty_like(indices) for _ in range(world)]
        gathered_values = [torch.empty_like(values) for _ in range(world)]
        dist.all_gather(gathered_indices, indices)
        dist.all_gather(gathered_values, values)
        table.grad = torch.sparse_coo_tensor(
            torch.cat([i[:n] for i, n in zip(gathered_indices, rank_counts, strict=True)])[None],
            torch.cat([v[:n] for v, n in zip(gathered_values, rank_counts, strict=True)]) / world,
            table.shape,
        )


def _member(param: nn.Parameter, params: Sequence[nn.Parameter]) -> bool:
    return any(param is other for other in params)


def shard(batch: torch.Tensor, rank: int, world: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Rank `rank`'s rows of a global batch (row indices, (B,)) and their loss weights.

    Every rank gets ceil(B / world) consecutive rows of the batch; where the batch runs out
    (a batch size not divisible by `world`, the short last batch) the row is the batch's
    first, with weight 0. A real row weighs `world / B`, so the ranks' weighted loss sums,
    their gradients averaged by DDP, give the gradient of the mean loss over the batch.
    Equal shapes on every rank also keep their random streams (dropout) in step.

    Example::

        shard(torch.tensor([7, 8, 9]), rank=1, world=2)  # (tensor([9, 7]), tensor([2/3, 0.]))
    """
    size = len(batch)
    per_rank = math.ceil(size / world)
    positions = torch.arange(rank * per_rank, (rank + 1) * per_rank, device=batch.device)
    real = positions < size
    rows = batch[torch.where(real, positions, 0)]
    return rows, real.float() * (world / size)


def broadcast(value: T) -> T:
    """Rank 0's `value` (any picklable object) on every rank; `value` itself in one process."""
    if not dist.is_initialized():
        return value
    values = [value]
    dist.broadcast_object_list(values, src=0)
    return values[0]


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """`tensor` summed over ranks, in place; unchanged in one process."""
    if dist.is_initialized():
        dist.all_reduce(tensor)
    return tensor
