"""Per-field embedding tables and the three views of them that every model reads."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any, NamedTuple

import torch
from torch import Tensor, nn

from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.layers.kernels import lookup_kernels, slot_sum

EMBEDDING_INIT_STD = 1e-2

# Steps tables at their looked-up rows: (tables, each one's distinct rows ascending, the
# gradient at those rows). `RowWiseAdam.step_rows` is one.
RowStep = Callable[[list[Tensor], list[Tensor], list[Tensor]], None]


class EmbeddingViews(NamedTuple):
    """What `FeatureEmbedding` returns; a view it was built without is None.

    Args:
        first_order: `(B, 1)`, the sum of the fields' first-order weights.
        field_embeddings: `(B, F, fm_embed_dim)`, one projected vector per field.
        flat_embeddings: `(B, total_embedding_dim)`, the raw vectors concatenated.

    Example::

        views = FeatureEmbedding(schema)(batch)
        views.flat_embeddings.shape  # (B, schema.total_embedding_dim)
    """

    first_order: Tensor | None  # (B, 1)
    field_embeddings: Tensor | None  # (B, F, fm_embed_dim)
    flat_embeddings: Tensor  # (B, total_embedding_dim)


class FeatureEmbedding(nn.Module):
    """Looks up every schema field and returns its first-order, field and flat views.

    Index 0 of every table is the OOV / padding row: it starts at zero and gets no gradient,
    so unknown values contribute nothing. A sequence field is mean-pooled over its non-padding
    entries, as its `EmbeddingBag(mode="mean", padding_idx=0)` would; an all-padding row pools
    to zeros.

    The lookups read the tables' weights directly rather than calling the modules, in work
    proportional to the rows a batch looks up, never to a table's size: a sparse field is
    one row gather (an OOV row reads the zero row 0, whose gradient is dropped), a sequence
    field a gather of its `batch x max_len` rows and a masked mean. All lookups are one autograd
    node whose backward writes each table's gradient directly: dense (the looked-up rows'
    gradients summed into a `(V, dim)` tensor), or sparse, one row per looked-up index, for
    the tables given to `use_sparse_gradients` (the trainer's row-wise tables). With a
    `RowStep` given to `update_rows_in_backward`, the backward steps those tables itself
    instead, at their looked-up rows, and leaves their `.grad` None.

    Args:
        schema: the ordered fields, at least one of them sparse; every output follows their
            order.
        fm_embed_dim: the common width of `field_embeddings`; a field of another width is
            mapped to it by a bias-free linear projection.
        first_order: build the first-order tables (one scalar weight per value); without
            them the `first_order` view is None.
        field_embeddings: build the projections to `fm_embed_dim`; without them the
            `field_embeddings` view is None. A model owns only the parts it trains.

    Shapes:
        - input: `batch[name]` is an int32 or int64 index tensor, `(B,)` for a sparse field and
          `(B, max_len)` (0-padded) for a sequence field.
        - output: `first_order (B, 1)`, the sum over fields of each value's scalar weight;
          `field_embeddings (B, F, fm_embed_dim)`, one projected vector per field;
          `flat_embeddings (B, schema.total_embedding_dim)`, raw vectors concatenated.

    Example::

        schema = Schema.of([
            FieldSpec("user_id", FeatureType.SPARSE, 944, 16),
            FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6),
        ])
        embedding = FeatureEmbedding(schema, fm_embed_dim=16)
        batch = {"user_id": torch.tensor([3, 0]), "genres": torch.tensor([[1, 4, 0, 0, 0, 0]] * 2)}
        first_order, field_embeddings, flat_embeddings = embedding(batch)
        # shapes (2, 1), (2, 2, 16), (2, 24)
    """

    def __init__(
        self,
        schema: Schema,
        fm_embed_dim: int = 16,
        first_order: bool = True,
        field_embeddings: bool = True,
    ) -> None:
        super().__init__()
        self.with_first_order = first_order
        self.with_field_embeddings = field_embeddings
        self.fm_embed_dim = fm_embed_dim
        fields = list(schema.fields.values())
        self.sparse_fields = [s.name for s in fields if s.feature_type is FeatureType.SPARSE]
        self.sequence_fields = [s.name for s in fields if s.feature_type is FeatureType.SEQUENCE]
        self.row_step: RowStep | None = None
        if not self.sparse_fields:
            raise ValueError("FeatureEmbedding needs at least one sparse field")
        self.second_order_embeddings = nn.ModuleDict(
            {spec.name: _embedding_table(spec, spec.embedding_dim) for spec in fields}
        )
        if first_order:
            self.first_order_embeddings = nn.ModuleDict(
                {spec.name: _embedding_table(spec, 1) for spec in fields}
            )
        if field_embeddings:
            self.projections = nn.ModuleDict(
                {
                    spec.name: nn.Linear(spec.embedding_dim, fm_embed_dim, bias=False)
                    for spec in fields
                    if spec.embedding_dim != fm_embed_dim
                }
            )

    def use_sparse_gradients(self, tables: Iterable[Tensor]) -> None:
        """Give the tables whose weights are in `tables` sparse COO gradients (one row per
        distinct looked-up index, never a `(V, dim)` tensor: what `RowWiseAdam` reads) and
        every other table a dense one, summed from the looked-up rows (what fused Adam and
        DDP read)."""
        chosen = {id(weight) for weight in tables}
        for _, table in self.named_tables():
            table.sparse = id(table.weight) in chosen  # what DDP reads to expect a sparse grad

    def update_rows_in_backward(self, step: RowStep | None) -> None:
        """Have each backward pass call `step` with the sparse-gradient tables, their
        looked-up rows and the gradient at those rows (what their sparse gradients hold),
        instead of giving them gradients; None: sparse gradients again. One call per backward
        for all of them, while their gradient rows are fresh: the trainer's row-wise Adam step
        without a second pass over `.grad` (in one process; DDP averages gradients first)."""
        self.row_step = step

    def named_tables(self) -> list[tuple[str, nn.Embedding | nn.EmbeddingBag]]:
        """Every table with the field it belongs to, second-order tables first."""
        tables = list(self.second_order_embeddings.items())
        if self.with_first_order:
            tables += list(self.first_order_embeddings.items())
        return tables

    def forward(self, batch: dict[str, Tensor]) -> EmbeddingViews:
        names = list(self.second_order_embeddings)
        tables = [table for _, table in self.named_tables()]
        projected = [self.with_field_embeddings and name in self.projections for name in names]
        plan = _LookupPlan(
            self.with_first_order,
            self.fm_embed_dim if self.with_field_embeddings else None,
            [table.sparse for table in tables],
            projected,
            self.row_step,
        )
        first_order, field_embeddings, flat_embeddings = _TableLookup.apply(
            [batch[name] for name in names],
            plan,
            *(table.weight for table in tables),
            *(self.projections[n].weight for n, on in zip(names, projected, strict=True) if on),
        )
        return EmbeddingViews(first_order, field_embeddings, flat_embeddings)


class _LookupPlan(NamedTuple):
    """What `_TableLookup` computes: the first-order sum (its tables follow the second-order
    ones), the field vectors' width (None: no field vectors), which tables take sparse
    gradients, which fields are projected (their projection weights follow the tables, in
    field order), and what steps the sparse tables in backward (None: sparse gradients)."""

    first_order: bool
    field_dim: int | None
    sparse: list[bool]
    projected: list[bool]
    row_step: RowStep | None


class _Lookup(NamedTuple):
    """One field's looked-up rows: `index` `(B * L,)` int64 (L = 1 for a sparse field) and,
    for a sequence field, each row's weight `(B, L)`: 1/count over the row's non-padding
    entries, 0 for padding (all 0 for an all-padding row). A sparse field needs no weights:
    its OOV row 0 is zero and its gradient is dropped (`_TableLookup.backward`)."""

    index: Tensor
    weights: Tensor | None

    @classmethod
    def of(cls, indices: Tensor) -> _Lookup:
        if indices.dim() == 1:
            return cls(indices.long(), None)
        present = (indices != 0).float()
        weights = present / present.sum(dim=1, keepdim=True).clamp(min=1)
        return cls(indices.reshape(-1).long(), weights)

    def pool(self, table: Tensor) -> Tensor:
        """`(B, dim)`: the weighted sum of each batch row's looked-up rows of `table`."""
        rows = table.index_select(0, self.index)
        if self.weights is None:
            return rows
        return slot_sum(rows.view(*self.weights.shape, -1) * self.weights.unsqueeze(2))

    def entries(self) -> _Entries:
        """The looked-up entries whose gradients reach a row other than 0: every row of a
        sparse field; for a sequence field its non-padding entries only (a padding entry's
        gradient would go to row 0, which gets none)."""
        if self.weights is None:
            return _Entries(self.index, None, None)
        position = self.index.nonzero().squeeze(1)
        max_len = self.weights.shape[1]
        return _Entries(
            self.index.index_select(0, position),
            torch.div(position, max_len, rounding_mode="floor"),
            self.weights.reshape(-1).index_select(0, position),
        )


class _Entries(NamedTuple):
    """Looked-up entries of one field: `index` `(N,)`, and for a sequence field the batch
    row of each entry and its pooling weight (None for a sparse field: entry i is row i)."""

    index: Tensor
    batch_rows: Tensor | None
    weights: Tensor | None

    def row_gradients(self, grad: Tensor) -> Tensor:
        """`(N, dim)`: each entry's gradient, given the pooled vectors' `grad` `(B, dim)`."""
        if self.batch_rows is None:
            return grad
        return grad.index_select(0, self.batch_rows) * self.weights.unsqueeze(1)

    def dense_gradient(self, num_rows: int, grad: Tensor) -> Tensor:
        """`(num_rows, dim)`: the entries' gradients added to their rows in entry order
        (`index_add_`), row 0 left zero: what the compiled `lookup_backward` computes."""
        gradient = grad.new_zeros(num_rows, grad.shape[1])
        gradient.index_add_(0, self.index, self.row_gradients(grad))
        gradient.narrow(0, 0, 1).zero_()
        return gradient


class _TableLookup(torch.autograd.Function):
    """Every lookup and projection of a batch in one autograd node: the first-order sum, the
    field vectors `(B, F, field_dim)` (a projected field's vector times its projection's
    transpose) and the concatenated raw vectors `(B, total_dim)`. Backward computes what
    autograd computed for the separate ops (the same matrix products, each field's two
    gradients added), then each table's gradient straight from its rows' gradients, with
    no per-lookup graph nodes: summed into a dense `(V, dim)` tensor, or a coalesced sparse
    COO tensor, one row per distinct index (found once per field for both its tables). Sums
    add in entry order. On the CPU the compiled `lookup_forward` and `lookup_backward` do the
    lookups and the dense and sparse gradients (same bits as the PyTorch ops here);
    deterministic on the CPU."""

    @staticmethod
    def forward(ctx: Any, indices: list[Tensor], plan: _LookupPlan, *weights: Tensor) -> Any:
        ctx.set_materialize_grads(False)
        fields, count = len(indices), len(plan.sparse)
        tables, projections = weights[:count], iter(weights[count:])
        ctx.indices, ctx.plan = indices, plan
        ctx.shapes = [table.shape for table in tables]
        ctx.tables = tables if plan.row_step is not None else None
        ctx.kernels = lookup_kernels(list(tables))
        field_embeddings = None
        if plan.field_dim is not None:
            field_embeddings = tables[0].new_empty(len(indices[0]), fields, plan.field_dim)
        if ctx.kernels is not None:  # also writes the unprojected fields' field vectors
            flat, first_order = ctx.kernels.lookup_forward(
                [index.contiguous() for index in indices],
                list(tables[:fields]),
                list(tables[fields:]),
                field_embeddings,
            )
        else:
            lookups = [_Lookup.of(index) for index in indices]
            pooled = [lookup.pool(t) for lookup, t in zip(lookups * 2, tables, strict=False)]
            flat = torch.cat(pooled[:fields], dim=1)
            first_order = sum(pooled[fields:]) if plan.first_order else None
            if field_embeddings is not None:
                for field, projected in enumerate(plan.projected):
                    if not projected:
                        field_embeddings[:, field] = pooled[field]
        ctx.save_for_backward(flat, *weights[count:])
        if field_embeddings is not None:
            raw = flat.split([shape[1] for shape in ctx.shapes[:fields]], dim=1)
            for field, (vector, projected) in enumerate(zip(raw, plan.projected, strict=True)):
                if projected:  # written in place: the product's bits, no copy
                    torch.mm(vector, next(projections).t(), out=field_embeddings[:, field])
        return (first_order if plan.first_order else None), field_embeddings, flat

    @staticmethod
    def backward(
        ctx: Any,
        first_order_grad: Tensor | None,
        field_grad: Tensor | None,
        flat_grad: Tensor | None,
    ) -> tuple[Tensor | None, ...]:
        plan, fields = ctx.plan, len(ctx.indices)
        flat, *projections = ctx.saved_tensors
        widths = [shape[1] for shape in ctx.shapes[:fields]]
        raw = flat.split(widths, dim=1)
        # Each raw vector's gradient: its columns of flat's plus its field vector's.
        raw_grads = (
            list(flat_grad.split(widths, dim=1)) if flat_grad is not None else [None] * fields
        )
        projection_grads: list[Tensor | None] = []
        weights = iter(projections)
        for field in range(fields):
            if field_grad is None:
                continue
            grad = field_grad[:, field]
            if plan.projected[field]:
                weight = next(weights)
                needed = ctx.needs_input_grad[2 + len(ctx.shapes) + len(projection_grads)]
                projection_grads.append(grad.t().mm(raw[field]) if needed else None)
                grad = grad.mm(weight)
            raw_grads[field] = grad if raw_grads[field] is None else raw_grads[field] + grad
        upstream = [*raw_grads, *[first_order_grad] * (len(ctx.shapes) - fields)]
        wanted = [
            ctx.needs_input_grad[2 + position] and upstream[position] is not None
            for position in range(len(ctx.shapes))
        ]
        table_grads: list[Tensor | None] = [None] * len(ctx.shapes)
        # Per sparse table: its distinct looked-up rows (ascending) and the gradient at them.
        sparse_rows: dict[int, tuple[Tensor, Tensor]] = {}
        if ctx.kernels is not None and any(wanted):
            # The kernel skips the tables given -1 rows (and first-order ones, if there are none).
            missing = 2 * fields - len(ctx.shapes)
            dense, distinct_rows, sums = ctx.kernels.lookup_backward(
                [index.contiguous() for index in ctx.indices],
                [grad if grad is not None else flat.new_empty(0, 1) for grad in raw_grads],
                first_order_grad if first_order_grad is not None else flat.new_empty(0, 1),
                [shape[0] if want else -1 for shape, want in zip(ctx.shapes, wanted, strict=True)]
                + [-1] * missing,
                list(plan.sparse) + [False] * missing,
            )
            for position, want in enumerate(wanted):
                if want and plan.sparse[position]:
                    sparse_rows[position] = (distinct_rows[position % fields], sums[position])
                elif want:
                    table_grads[position] = dense[position]
        entries: dict[int, _Entries] = {}  # per field (shared by its two tables)
        distinct: dict[int, tuple[Tensor, Tensor]] = {}  # per field: its distinct indices
        for position, (grad, shape) in enumerate(zip(upstream, ctx.shapes, strict=True)):
            field = position % fields
            if not wanted[position] or table_grads[position] is not None or position in sparse_rows:
                continue
            if field not in entries:
                entries[field] = _Lookup.of(ctx.indices[field]).entries()
            looked_up = entries[field]
            if not plan.sparse[position]:
                table_grads[position] = looked_up.dense_gradient(shape[0], grad)
                continue
            rows = looked_up.row_gradients(grad)
            # Coalesced: one row per distinct index (sorted), duplicates summed in order.
            if field not in distinct:
                distinct[field] = torch.unique(looked_up.index, return_inverse=True)
            index, inverse = distinct[field]
            summed = rows.new_zeros(len(index), *shape[1:]).index_add_(0, inverse, rows)
            summed *= (index != 0).unsqueeze(1)  # the OOV row stays zero
            sparse_rows[position] = (index, summed)
        if plan.row_step is not None and sparse_rows:
            positions = list(sparse_rows)
            plan.row_step(
                [ctx.tables[position] for position in positions],
                [sparse_rows[position][0] for position in positions],
                [sparse_rows[position][1] for position in positions],
            )
        else:
            for position, (index, summed) in sparse_rows.items():
                table_grads[position] = torch.sparse_coo_tensor(
                    index.unsqueeze(0),
                    summed,
                    ctx.shapes[position],
                    is_coalesced=True,
                    check_invariants=False,
                )
        if field_grad is None:
            projection_grads = [None] * sum(plan.projected)
        return (None, None, *table_grads, *projection_grads)


def _embedding_table(spec: FieldSpec, dim: int) -> nn.Embedding | nn.EmbeddingBag:
    if spec.feature_type is FeatureType.SEQUENCE:
        table = nn.EmbeddingBag(spec.vocabulary_size, dim, mode="mean", padding_idx=0)
    else:
        table = nn.Embedding(spec.vocabulary_size, dim, padding_idx=0)
    nn.init.normal_(table.weight, std=EMBEDDING_INIT_STD)
    with torch.no_grad():
        table.weight[0].zero_()
    return table
