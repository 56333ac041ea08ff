"""Adam for CTR models: fused dense Adam, and row-wise (lazy) Adam for large embedding tables.

A table is updated in one of two ways (`FeatureEmbedding` gives each table the gradient its
update reads):

- **dense Adam** (`adam`): the table's gradient is a dense tensor, its looked-up rows'
  gradients summed, and the table joins the fused Adam step of the other parameters. Every
  row's moments decay at every step, as in `torch.optim.Adam`; the step costs O(V) per
  table.
- **row-wise Adam** (`lazy_adam`, `RowWiseAdam`): only the rows the batch looked up change,
  in O(batch) per table, from a sparse gradient with one row per distinct looked-up
  index (never a `(V, dim)` tensor), as TensorFlow's LazyAdam and TorchRec's fused row-wise
  optimizers do. A looked-up row gets exactly dense Adam's update; a row that was not
  looked up keeps its weights *and* its moments (they do not decay until the row is seen
  again), and `embedding_l2` acts on looked-up rows only.

`train.embedding_optimizer: auto` (the default) updates tables of at least
`ROW_WISE_MIN_VALUES` values (rows x width) row-wise and smaller ones densely: on small
tables dense Adam is as cheap and keeps the exact `torch.optim.Adam` semantics; on large
ones it would dominate the step. The bound counts values, because a dense step costs per
value; with the compiled row-wise step (`lookup_backward`'s sparse gradients and
`row_wise_adam` in kernels.cpp) row-wise Adam costs about what dense Adam costs at 80,000
values (5,000 rows of 16) and less beyond (docs/benchmarks.md measures both), so the bound
sits near there and a one-wide first-order table of 100,000 rows or more is updated
row-wise too.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor, nn

from deepfm.config import TrainConfig
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.layers.kernels import lookup_kernels
from deepfm.training import allocator, distributed

# Tables of at least this many values (rows x width: 6,250 rows of 16, or 100,000 rows of a
# first-order table) are updated row-wise under `embedding_optimizer: auto`.
ROW_WISE_MIN_VALUES = 100_000


class FusedAdam(torch.optim.Adam):
    """`torch.optim.Adam(fused=True)` whose `step` calls the fused kernel straight away.

    The same kernel, state (`state_dict` is Adam's) and hooks; what it drops is the general
    `Adam.step`'s per-step regrouping of parameters and state by device, dtype and options,
    which on the CPU costs about as much as the kernel itself. It takes only plain Adam: no
    amsgrad, maximize, capturable, differentiable or decoupled weight decay.

    Args:
        params: parameters, or param groups (each may set its own `weight_decay`).
        lr: Adam's learning rate.

    Example::

        optimizer = FusedAdam(model.parameters(), lr=1e-3)
        loss.backward()
        optimizer.step()  # bitwise what torch.optim.Adam(..., fused=True).step() does
    """

    def __init__(
        self, params: Iterable[Tensor] | Iterable[dict[str, Any]], lr: float = 1e-3
    ) -> None:
        super().__init__(params, lr=lr, fused=True)

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [param for param in group["params"] if param.grad is not None]
            if not params:
                continue
            states = [_adam_state(self, param) for param in params]
            _fused_adam_step(
                group,
                params,
                [param.grad for param in params],
                [state["exp_avg"] for state in states],
                [state["exp_avg_sq"] for state in states],
                [state["step"] for state in states],
            )


class RowWiseAdam(torch.optim.Optimizer):
    """Adam on the rows of sparse (COO) gradients only: lazy Adam for embedding tables.

    The looked-up rows of every table (weights, `exp_avg`, `exp_avg_sq`) are gathered,
    stepped by `torch.optim.Adam(fused=True)`'s kernel, all tables in one call, and written
    back (the compiled `row_wise_adam` steps them where they lie, to the same bits): a
    looked-up row's update, its moments and its bias correction are exactly fused
    Adam's (L2 `weight_decay` added to the gradient); rows not in the gradient are left
    untouched. A table's step count is the number of steps that looked any of its rows up. A
    gradient with duplicate indices is coalesced first (`FeatureEmbedding` hands over
    coalesced ones, their duplicates summed with the deterministic `index_add_`).
    `step_rows` takes the rows and their gradients directly (what `FeatureEmbedding`'s
    backward calls). A table's two moments are the halves `[:, 0]` and `[:, 1]` of one
    `(V, 2, dim)` block on huge pages (`_moment_pair`): they are read and written at random
    rows, and side by side a row's two moments are one memory access instead of two.

    Args:
        params: tables whose gradients are sparse COO tensors.
        lr, betas, eps, weight_decay: as in `torch.optim.Adam`.

    Example::

        optimizer = RowWiseAdam([table.weight], lr=1e-3)
        F.embedding(indices, table.weight, sparse=True).sum().backward()
        optimizer.step()  # only rows in `indices` change
    """

    def __init__(
        self,
        params: Iterable[Tensor] | Iterable[dict[str, Any]],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(
            params, {"lr": lr, "betas": betas, "eps": eps, "weight_decay": weight_decay}
        )

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Adam's state per table (`step`, `exp_avg`, `exp_avg_sq`; the moments copied side by
        side onto huge pages, as the first step creates them); a `ValueError` for the
        `moments` entry that deepfm wrote before."""
        if any("moments" in saved for saved in state_dict["state"].values()):
            raise ValueError(
                "row-wise Adam state in an older layout ('moments'): saved by an earlier "
                "deepfm; delete this checkpoint to train from the start"
            )
        super().load_state_dict(state_dict)
        for state in self.state.values():
            exp_avg, exp_avg_sq = _moment_pair(state["exp_avg"])
            state["exp_avg"] = exp_avg.copy_(state["exp_avg"])
            state["exp_avg_sq"] = exp_avg_sq.copy_(state["exp_avg_sq"])

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            kernels = lookup_kernels(params)
            ascending = kernels.strictly_ascending if kernels is not None else _ascending
            indices, grads = zip(*(_sparse_rows(p, ascending) for p in params), strict=True)
            self._step_rows(group, params, list(indices), list(grads))

    def step_rows(self, params: list[Tensor], indices: list[Tensor], grads: list[Tensor]) -> None:
        """One step of the tables `params` (of a one-group optimizer) at their rows
        `indices[t]` (int64, distinct, ascending) with gradient rows `grads[t]`: `step` with
        these as the sparse gradients. What `FeatureEmbedding`'s backward calls when it
        updates its row-wise tables itself (`update_rows_in_backward`)."""
        (group,) = self.param_groups
        self._step_rows(group, params, indices, grads)

    def _step_rows(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        indices: list[Tensor],
        grads: list[Tensor],
    ) -> None:
        states = [_adam_state(self, param, _moment_pair) for param in params]
        steps = [state["step"] for state in states]
        exp_avgs = [state["exp_avg"] for state in states]
        exp_avg_sqs = [state["exp_avg_sq"] for state in states]
        kernels = lookup_kernels(params)
        if kernels is not None:  # the same step, each row stepped in place, in one call
            kernels.row_wise_adam(
                params,
                indices,
                grads,
                exp_avgs,
                exp_avg_sqs,
                steps,
                group["lr"],
                *group["betas"],
                group["weight_decay"],
                group["eps"],
            )
            return
        # The looked-up rows of each table's weights and moments, gathered (the fused kernel
        # needs contiguous tensors), stepped, written back. (The kernel above writes through
        # raw pointers; these in-place ops on the tables need autograd off.)
        with torch.no_grad():
            tensors = [params, exp_avgs, exp_avg_sqs]
            gathered = [
                [t.index_select(0, i) for t, i in zip(ts, indices, strict=True)] for ts in tensors
            ]
            _fused_adam_step(group, gathered[0], grads, *gathered[1:], steps)
            for targets, rows in zip(tensors, gathered, strict=True):
                for target, index, row in zip(targets, indices, rows, strict=True):
                    target.index_copy_(0, index, row)


def _adam_state(
    optimizer: torch.optim.Optimizer,
    param: Tensor,
    moments: Callable[[Tensor], tuple[Tensor, Tensor]] | None = None,
) -> dict[str, Tensor]:
    """`param`'s state in `optimizer`, created on its first step as `torch.optim.Adam`
    creates it: a float32 step count and two zero moments shaped like `param` (from
    `moments`, else `torch.zeros_like`)."""
    state = optimizer.state[param]
    if not state:
        state["step"] = torch.zeros((), dtype=torch.float32, device=param.device)
        if moments is None:
            state["exp_avg"], state["exp_avg_sq"] = torch.zeros_like(param), torch.zeros_like(param)
        else:
            state["exp_avg"], state["exp_avg_sq"] = moments(param)
    return state


def _moment_pair(table: Tensor) -> tuple[Tensor, Tensor]:
    """Two zero tensors shaped like the `(V, dim)` `table`, the halves `[:, 0]` and `[:, 1]`
    of one `(V, 2, dim)` block on huge pages: a row-wise table's Adam moments, which every
    step reads and writes at the same random rows; side by side, a row's two moments are one
    memory access instead of two (with `dim` 8, one cache line)."""
    block = allocator.zeros_on_huge_pages((table.shape[0], 2, *table.shape[1:]), table)
    return block[:, 0], block[:, 1]


def _fused_adam_step(
    group: dict[str, Any],
    params: list[Tensor],
    grads: list[Tensor],
    exp_avgs: list[Tensor],
    exp_avg_sqs: list[Tensor],
    steps: list[Tensor],
) -> None:
    """One `torch.optim.Adam(fused=True)` step of `params` in place, with `group`'s options."""
    _increment(steps)
    beta1, beta2 = group["betas"]
    torch._fused_adam_(
        params,
        grads,
        exp_avgs,
        exp_avg_sqs,
        [],
        steps,
        amsgrad=False,
        lr=group["lr"],
        beta1=beta1,
        beta2=beta2,
        weight_decay=group["weight_decay"],
        eps=group["eps"],
        maximize=False,
        grad_scale=None,
        found_inf=None,
    )


def _increment(steps: list[Tensor]) -> None:
    """Add 1 to each step count, with a list of one-tensors: `_foreach_add_` with a number
    takes a per-tensor path that costs about 4x as much on the CPU."""
    torch._foreach_add_(steps, [steps[0].new_ones(())] * len(steps))


def _sparse_rows(param: Tensor, ascending: Callable[[Tensor], bool]) -> tuple[Tensor, Tensor]:
    """A sparse gradient's distinct indices and their summed rows."""
    grad = param.grad
    if grad is None or not grad.is_sparse:
        raise ValueError("RowWiseAdam needs sparse gradients (F.embedding(..., sparse=True))")
    index = grad._indices()[0]
    # Coalesced gradients lose their flag on their way to `.grad`; sorted, distinct indices
    # (what `FeatureEmbedding` hands over) need no coalescing.
    if grad.is_coalesced() or ascending(index):
        return index, grad._values()
    grad = grad.coalesce()
    return grad._indices()[0], grad._values()


def _ascending(index: Tensor) -> bool:
    """Whether `index` is strictly ascending (the compiled kernels' `strictly_ascending`)."""
    return bool((index[1:] > index[:-1]).all())


class CTROptimizer:
    """The optimizer `Trainer` steps: fused Adam over the dense parameters and the densely
    updated tables, and `RowWiseAdam` over the row-wise tables (whose gradients it makes
    sparse). Two L2 settings: `embedding_l2` for tables, `weight_decay` for the rest.

    In one process the row-wise tables are stepped inside the backward pass, at the rows it
    has just summed (`FeatureEmbedding.update_rows_in_backward`), with no `.grad` and no second
    pass: the same update, bit for bit, as stepping them in `step`, which DDP ranks do after
    averaging their sparse gradients.

    Args:
        model: a model with a `FeatureEmbedding`; its row-wise tables get sparse gradients.
        config: the `train` section (`lr`, `weight_decay`, `embedding_l2`,
            `embedding_optimizer`).

    Example::

        optimizer = CTROptimizer(model, config.train)
        loss.backward()
        optimizer.step()
        optimizer.zero_grad()
    """

    def __init__(self, model: nn.Module, config: TrainConfig) -> None:
        tables = [
            table
            for module in model.modules()
            if isinstance(module, FeatureEmbedding)
            for _, table in module.named_tables()
        ]
        row_wise = [t.weight for t in tables if _row_wise(t.weight, config.embedding_optimizer)]
        for module in model.modules():
            if isinstance(module, FeatureEmbedding):
                module.use_sparse_gradients(row_wise)
        # The tables whose gradients are sparse COO tensors: kept out of DDP's reducer and
        # averaged over ranks by `distributed.average_sparse_gradients`.
        self.sparse_tables = row_wise
        self.parameters = list(model.parameters())
        row_wise_ids = {id(weight) for weight in row_wise}
        self.dense_tables = [t.weight for t in tables if id(t.weight) not in row_wise_ids]
        table_ids = {id(table.weight) for table in tables}
        others = [p for p in model.parameters() if id(p) not in table_ids]
        self.adam = FusedAdam(
            [
                {"params": self.dense_tables, "weight_decay": config.embedding_l2},
                {"params": others, "weight_decay": config.weight_decay},
            ],
            lr=config.lr,
        )
        self.row_wise_adam = (
            RowWiseAdam(row_wise, lr=config.lr, weight_decay=config.embedding_l2)
            if row_wise
            else None
        )
        for weight in row_wise:  # read and written at random rows: on huge pages
            weight.data = allocator.on_huge_pages(weight.data)
        # Whether the backward pass steps the row-wise tables (then `step` leaves them alone).
        self.rows_in_backward = self.row_wise_adam is not None and distributed.world_size() == 1
        if self.rows_in_backward:
            for module in model.modules():
                if isinstance(module, FeatureEmbedding):
                    module.update_rows_in_backward(self.row_wise_adam.step_rows)

    def zero_grad(self) -> None:
        """Drop every gradient, as `zero_grad(set_to_none=True)` does, in a plain loop
        (without `Optimizer.zero_grad`'s per-call profiling and bookkeeping)."""
        for param in self.parameters:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        self.adam.step()
        if self.row_wise_adam is not None and not self.rows_in_backward:
            self.row_wise_adam.step()

    def state_dict(self) -> dict[str, Any]:
        state = {"adam": self.adam.state_dict()}
        if self.row_wise_adam is not None:
            state["row_wise_adam"] = self.row_wise_adam.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.adam.load_state_dict(state["adam"])
        if self.row_wise_adam is not None:
            self.row_wise_adam.load_state_dict(state["row_wise_adam"])


def _row_wise(table: Tensor, policy: str) -> bool:
    return policy == "lazy_adam" or (policy == "auto" and table.numel() >= ROW_WISE_MIN_VALUES)
