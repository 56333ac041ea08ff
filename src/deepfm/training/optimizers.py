"""Adam for CTR models: fused dense Adam, and row-wise (lazy) Adam for large embedding tables.

Every embedding table returns a sparse gradient: one row per looked-up index, so the
backward pass never builds a `(V, dim)` tensor. A table is then updated in one of two ways:

- **dense Adam** (`adam`): the gradient is summed into a dense tensor and the table joins the
  fused Adam step of the other parameters. Every row's moments decay at every step, as in
  `torch.optim.Adam`; the step costs O(V) per table.
- **row-wise Adam** (`lazy_adam`, `RowWiseAdam`): only the rows the batch looked up change,
  in O(batch) per table, as TensorFlow's LazyAdam and TorchRec's fused row-wise optimizers
  do. A looked-up row gets exactly dense Adam's update; a row that was not looked up keeps
  its weights *and* its moments (they do not decay until the row is seen again), and
  `embedding_l2` acts on looked-up rows only.

`train.embedding_optimizer: auto` (the default) updates tables of at least
`ROW_WISE_MIN_ROWS` rows row-wise and smaller ones densely: on small tables dense Adam is as
cheap and keeps the exact `torch.optim.Adam` semantics; on large ones it would dominate the
step (docs/benchmarks.md measures both).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, nn

from deepfm.config import TrainConfig
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.training import distributed

# Tables with at least this many rows are updated row-wise under `embedding_optimizer: auto`.
ROW_WISE_MIN_ROWS = 50_000


class RowWiseAdam(torch.optim.Optimizer):
    """Adam on the rows of sparse (COO) gradients only: lazy Adam for embedding tables.

    A row's update, its moments and its bias correction are those of `torch.optim.Adam`
    (L2 `weight_decay` added to the gradient); rows not in the gradient are left untouched.
    Duplicate indices in an uncoalesced gradient are summed first (with
    `index_add_`, deterministic on the CPU; `index_put_(accumulate=True)` is faster but its
    float sums change from run to run). The
    state of a table is one `(V, 3, ...)` tensor: per row the gradient sum (zero between
    steps), `exp_avg` and `exp_avg_sq`, side by side, so that a step reads and writes each
    looked-up row of state in one gather and one scatter.

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
        self._sums: dict[Tensor, Tensor] = {}  # per table: zeros between steps

    @torch.no_grad()
    def step(self, closure: None = None) -> None:
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            indices, weights, rows = [], [], []
            for param in params:
                index, values = _sparse_rows(param)
                state = self.state[param]
                if not state:
                    state["step"] = 0
                    # Per table row: [summed gradient (zero between steps), exp_avg,
                    # exp_avg_sq], side by side so that one gather reads all three.
                    state["rows"] = param.new_zeros(len(param), 3, *param.shape[1:])
                state["step"] += 1
                # Sum the gradients of duplicate indices, then read each index's row.
                state["rows"][:, 0].index_add_(0, index, values)
                indices.append(index)
                rows.append(state["rows"].index_select(0, index))
                weights.append(param.index_select(0, index))
            self._adam(group, params, weights, rows)
            for param, index, weight, row in zip(params, indices, weights, rows, strict=True):
                row[:, 0] = 0
                # Duplicate indices carry identical values, so the writes agree.
                param.index_put_((index,), weight)
                self.state[param]["rows"].index_put_((index,), row)

    def _adam(
        self,
        group: dict[str, Any],
        params: list[Tensor],
        weights: list[Tensor],
        rows: list[Tensor],
    ) -> None:
        """torch.optim.Adam's update of the gathered rows, in place, all tables at once."""
        beta1, beta2 = group["betas"]
        steps = [self.state[param]["step"] for param in params]
        grads = [row[:, 0] for row in rows]
        exp_avgs = [row[:, 1] for row in rows]
        exp_avg_sqs = [row[:, 2] for row in rows]
        if group["weight_decay"]:
            grads = torch._foreach_add(grads, weights, alpha=group["weight_decay"])
        torch._foreach_lerp_(exp_avgs, grads, 1 - beta1)
        torch._foreach_mul_(exp_avg_sqs, beta2)
        torch._foreach_addcmul_(exp_avg_sqs, grads, grads, value=1 - beta2)
        denominators = torch._foreach_sqrt(exp_avg_sqs)
        torch._foreach_div_(denominators, [math.sqrt(1 - beta2**step) for step in steps])
        torch._foreach_add_(denominators, group["eps"])
        step_sizes = [-group["lr"] / (1 - beta1**step) for step in steps]
        torch._foreach_addcdiv_(weights, exp_avgs, denominators, step_sizes)


def _sparse_rows(param: Tensor) -> tuple[Tensor, Tensor]:
    """A sparse gradient's indices (duplicates kept) and its rows."""
    grad = param.grad
    if grad is None or not grad.is_sparse:
        raise ValueError("RowWiseAdam needs sparse gradients (F.embedding(..., sparse=True))")
    return grad._indices()[0], grad._values()


class CTROptimizer:
    """The optimizer `Trainer` steps: fused Adam over the dense parameters and the densely
    updated tables (whose sparse gradients it sums into dense ones first), and `RowWiseAdam`
    over the row-wise tables. Two L2 settings: `embedding_l2` for tables, `weight_decay` for
    the rest.

    Args:
        model: a model with a `FeatureEmbedding`; its tables are switched to sparse gradients.
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
        # In a process group, sparse gradients only where a row-wise table needs them
        # (they are averaged over ranks by `distributed.average_sparse_gradients`, not by
        # DDP); dense ones are what DDP always did.
        sparse = distributed.world_size() == 1 or bool(row_wise)
        for module in model.modules():
            if isinstance(module, FeatureEmbedding):
                module.use_sparse_gradients(sparse)
        # The tables whose gradients are sparse COO tensors.
        self.sparse_tables = [t.weight for t in tables] if sparse else []
        self.dense_tables = [t.weight for t in tables if t.weight not in set(row_wise)]
        table_ids = {id(table.weight) for table in tables}
        others = [p for p in model.parameters() if id(p) not in table_ids]
        # fused: one kernel for all parameters instead of a loop over them (~0.3 ms a step).
        self.adam = torch.optim.Adam(
            [
                {"params": self.dense_tables, "weight_decay": config.embedding_l2},
                {"params": others, "weight_decay": config.weight_decay},
            ],
            lr=config.lr,
            fused=True,
        )
        self.row_wise_adam = (
            RowWiseAdam(row_wise, lr=config.lr, weight_decay=config.embedding_l2)
            if row_wise
            else None
        )

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.adam.zero_grad(set_to_none)
        if self.row_wise_adam is not None:
            self.row_wise_adam.zero_grad(set_to_none)

    @torch.no_grad()
    def step(self) -> None:
        for table in self.dense_tables:
            if table.grad is not None and table.grad.is_sparse:
                grad = table.grad
                table.grad = torch.zeros_like(table).index_add_(
                    0, grad._indices()[0], grad._values()
                )
        self.adam.step()
        if self.row_wise_adam is not None:
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
    return policy == "lazy_adam" or (policy == "auto" and len(table) >= ROW_WISE_MIN_ROWS)
