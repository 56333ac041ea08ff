"""Sparse gradients and row-wise Adam against naive references (values, gradients, updates)."""

from __future__ import annotations

import copy
import io
import math
import mmap
from dataclasses import replace

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from deepfm.config import ExperimentConfig, TrainConfig
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.layers import kernels
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.registry import build_model
from deepfm.training.optimizers import (
    ROW_WISE_MIN_VALUES,
    CTROptimizer,
    FusedAdam,
    RowWiseAdam,
)

FIELDS = ("user_id", "genres", "tags")
SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 30, 8),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("genres", FeatureType.SEQUENCE, 12, 4, max_len=5),
    ]
)


def batch_with_oov_and_empty_sequences() -> dict[str, Tensor]:
    generator = torch.Generator().manual_seed(3)
    users = torch.randint(0, 30, (16,), generator=generator)
    users[:3] = torch.tensor([0, 7, 7])  # an OOV row and a duplicate
    genres = torch.randint(0, 12, (16, 5), generator=generator)
    genres[0] = 0  # all padding
    genres[1] = torch.tensor([4, 0, 4, 0, 0])  # a value twice, padding between
    gender = torch.randint(0, 3, (16,), generator=generator)
    return {"user_id": users, "gender": gender, "genres": genres}


def naive_lookup(table: torch.nn.Module, indices: Tensor) -> Tensor:
    """The module itself for a sparse field (padding_idx=0: OOV rows are zero, no gradient);
    for a sequence field, a Python loop: the mean of each row's non-padding entries."""
    if indices.dim() == 1:
        return table(indices)
    rows = []
    for values in indices:
        kept = values[values != 0]
        rows.append(table.weight[kept].mean(0) if len(kept) else torch.zeros(table.weight.shape[1]))
    return torch.stack(rows)


def naive_views(embedding: FeatureEmbedding, batch: dict[str, Tensor]) -> list[Tensor]:
    raw = [naive_lookup(t, batch[name]) for name, t in embedding.second_order_embeddings.items()]
    first_order = sum(
        naive_lookup(t, batch[name]) for name, t in embedding.first_order_embeddings.items()
    )
    fields = [
        embedding.projections[name](vector) if name in embedding.projections else vector
        for name, vector in zip(embedding.second_order_embeddings, raw, strict=True)
    ]
    return [first_order, torch.stack(fields, dim=1), torch.cat(raw, dim=1)]


@pytest.mark.parametrize("compiled", [True, False])
@pytest.mark.parametrize("sparse", [False, True])
def test_values_and_gradients_match_the_modules(sparse: bool, compiled: bool, monkeypatch) -> None:
    """Both paths: the compiled lookups (where they build) and the PyTorch ops."""
    if not compiled:
        monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
    torch.manual_seed(0)
    embedding = FeatureEmbedding(SCHEMA, fm_embed_dim=8)
    reference = copy.deepcopy(embedding)
    embedding.use_sparse_gradients(
        [table.weight for _, table in embedding.named_tables()] if sparse else []
    )
    batch = batch_with_oov_and_empty_sequences()
    weights = [torch.randn(16, 1), torch.randn(16, 3, 8), torch.randn(16, 16)]
    outputs, expected = embedding(batch), naive_views(reference, batch)
    for output, target in zip(outputs, expected, strict=True):
        torch.testing.assert_close(output, target)
    sum((o * w).sum() for o, w in zip(outputs, weights, strict=True)).backward()
    sum((o * w).sum() for o, w in zip(expected, weights, strict=True)).backward()
    for (name, param), reference_param in zip(
        embedding.named_parameters(), reference.parameters(), strict=True
    ):
        grad = param.grad.to_dense() if param.grad.is_sparse else param.grad
        assert param.grad.is_sparse == (sparse and "projections" not in name), name
        if param.grad.is_sparse:  # one row per distinct index, sorted: what RowWiseAdam reads
            index, values = param.grad._indices()[0], batch[name.split(".")[1]]
            if values.dim() == 2:  # a sequence field's padding entries (0) are not looked up
                values = values[values != 0]
            assert torch.equal(index, values.unique()), name
        torch.testing.assert_close(grad, reference_param.grad, msg=name)
        if "projections" not in name:
            assert torch.count_nonzero(grad[0]) == 0, f"{name}: the OOV/padding row got a gradient"


def test_sparse_gradient_size_does_not_depend_on_the_vocabulary() -> None:
    """A 100,000-value sequence field: the gradient holds one row per distinct looked-up
    value."""
    schema = Schema.of(
        [
            FieldSpec("user_id", FeatureType.SPARSE, 50, 8),
            FieldSpec("tags", FeatureType.SEQUENCE, 100_000, 8, max_len=10),
        ]
    )
    embedding = FeatureEmbedding(schema, fm_embed_dim=8)
    embedding.use_sparse_gradients([embedding.second_order_embeddings["tags"].weight])
    batch = {
        "user_id": torch.randint(0, 50, (32,)),
        "tags": torch.randint(0, 100_000, (32, 10)),
    }
    embedding(batch).flat_embeddings.sum().backward()
    grad = embedding.second_order_embeddings["tags"].weight.grad
    assert grad.is_sparse and grad._values().shape == (len(batch["tags"].unique()), 8)
    assert not embedding.second_order_embeddings["user_id"].weight.grad.is_sparse


def reference_lazy_adam(
    weight: Tensor,
    state: dict[str, Tensor],
    index: Tensor,
    grad_rows: Tensor,
    step: int,
    lr: float,
    weight_decay: float,
) -> None:
    """Adam's formula applied row by row in float64, to the distinct rows of `index` only."""
    beta1, beta2, eps = 0.9, 0.999, 1e-8
    summed: dict[int, Tensor] = {}
    for row, grad in zip(index.tolist(), grad_rows, strict=True):
        summed[row] = summed.get(row, 0) + grad.double()
    for row, grad in summed.items():
        grad = grad + weight_decay * weight[row]
        state["m"][row] = beta1 * state["m"][row] + (1 - beta1) * grad
        state["v"][row] = beta2 * state["v"][row] + (1 - beta2) * grad * grad
        m_hat = state["m"][row] / (1 - beta1**step)
        v_hat = state["v"][row] / (1 - beta2**step)
        weight[row] -= lr * m_hat / (v_hat.sqrt() + eps)


@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
def test_row_wise_adam_matches_a_row_by_row_reference(weight_decay: float) -> None:
    torch.manual_seed(0)
    table = torch.nn.Parameter(torch.randn(20, 3))
    optimizer = RowWiseAdam([table], lr=0.01, weight_decay=weight_decay)
    expected = table.detach().double().clone()
    state = {"m": torch.zeros(20, 3, dtype=torch.float64), "v": torch.zeros_like(expected)}
    never_seen = 19
    for step in range(1, 6):
        index = torch.randint(0, never_seen, (12,))
        index[:2] = 5  # a duplicate every step
        grad_rows = torch.randn(12, 3)
        table.grad = torch.sparse_coo_tensor(index.unsqueeze(0), grad_rows, table.shape)
        optimizer.step()
        reference_lazy_adam(expected, state, index, grad_rows, step, 0.01, weight_decay)
        torch.testing.assert_close(table.detach().double(), expected, rtol=1e-5, atol=1e-6)
    exp_avg, exp_avg_sq = optimizer.state[table]["exp_avg"], optimizer.state[table]["exp_avg_sq"]
    torch.testing.assert_close(exp_avg.double(), state["m"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(exp_avg_sq.double(), state["v"], rtol=1e-5, atol=1e-9)
    assert (
        torch.count_nonzero(exp_avg[never_seen]) == torch.count_nonzero(exp_avg_sq[never_seen]) == 0
    )


def test_row_wise_adam_takes_coalesced_and_uncoalesced_gradients_alike() -> None:
    """Sorted distinct indices (FeatureEmbedding's gradients) skip coalescing; duplicates in
    any order are summed first: both give the same update."""
    torch.manual_seed(0)
    tables = [torch.nn.Parameter(torch.randn(10, 3)) for _ in range(2)]
    tables[1].data.copy_(tables[0].data)
    optimizers = [RowWiseAdam([table], lr=0.01) for table in tables]
    for _ in range(3):
        index = torch.tensor([7, 2, 7, 5, 2])
        values = torch.randn(5, 3)
        uncoalesced = torch.sparse_coo_tensor(index[None], values, (10, 3))
        coalesced = uncoalesced.coalesce()  # a new tensor from it is not flagged coalesced
        tables[0].grad = uncoalesced
        tables[1].grad = torch.sparse_coo_tensor(coalesced._indices(), coalesced._values(), (10, 3))
        for optimizer in optimizers:
            optimizer.step()
    assert torch.equal(tables[0], tables[1])


def test_row_wise_adam_leaves_rows_it_did_not_see_alone() -> None:
    """Lazy semantics: an unseen row keeps its weights and its moments (they do not decay)."""
    table = torch.nn.Parameter(torch.randn(6, 2))
    optimizer = RowWiseAdam([table], lr=0.1)
    table.grad = torch.sparse_coo_tensor(torch.tensor([[1, 2]]), torch.ones(2, 2), table.shape)
    optimizer.step()
    state = optimizer.state[table]
    before = torch.stack([state["exp_avg"], state["exp_avg_sq"]], dim=1)
    row_1 = table.detach()[1].clone()
    table.grad = torch.sparse_coo_tensor(torch.tensor([[2]]), torch.ones(1, 2), table.shape)
    optimizer.step()
    after = torch.stack([state["exp_avg"], state["exp_avg_sq"]], dim=1)
    assert torch.equal(table.detach()[1], row_1)
    assert torch.equal(after[1], before[1])  # moments of an unseen row do not decay
    assert not torch.equal(after[2], before[2])


def test_row_wise_adam_equals_dense_adam_when_every_row_is_seen() -> None:
    """Bit for bit: a looked-up row gets fused Adam's update."""
    torch.manual_seed(0)
    lazy_table = torch.nn.Parameter(torch.randn(8, 4))
    dense_table = torch.nn.Parameter(lazy_table.detach().clone())
    lazy = RowWiseAdam([lazy_table], lr=0.01, weight_decay=1e-3)
    dense = torch.optim.Adam([dense_table], lr=0.01, weight_decay=1e-3, fused=True)
    for _ in range(10):
        index = torch.cat([torch.randperm(8), torch.randint(0, 8, (5,))])
        for table in (lazy_table, dense_table):
            F.embedding(index, table, sparse=table is lazy_table).pow(2).sum().backward()
        lazy.step()
        dense.step()
        lazy_table.grad = dense_table.grad = None
    assert torch.equal(lazy_table, dense_table)


@pytest.mark.parametrize(
    ("policy", "row_wise"),
    [
        ("adam", set()),
        ("lazy_adam", {f"{order}.{name}" for order in ("second", "first") for name in FIELDS}),
        ("auto", {"second.tags"}),  # tags' first-order table: ROW_WISE_MIN_VALUES / 4 values
    ],
)
def test_embedding_optimizer_picks_the_row_wise_tables(policy: str, row_wise: set[str]) -> None:
    """`auto`: row-wise exactly for the tables of at least ROW_WISE_MIN_VALUES values."""
    schema = Schema.of(
        [
            FieldSpec("user_id", FeatureType.SPARSE, ROW_WISE_MIN_VALUES // 8 - 1, 8),
            FieldSpec("genres", FeatureType.SEQUENCE, 20, 4, max_len=3),
            FieldSpec("tags", FeatureType.SEQUENCE, ROW_WISE_MIN_VALUES // 4, 4, max_len=3),
        ]
    )
    model = build_model("deepfm", schema, ExperimentConfig())
    optimizer = CTROptimizer(model, replace(TrainConfig(), embedding_optimizer=policy))
    tables = {
        id(param): f"{name.split('.')[1].split('_')[0]}.{name.split('.')[2]}"
        for name, param in model.named_parameters()
        if "_order_embeddings" in name
    }  # "second.tags", "first.user_id", ...
    chosen = (
        {tables[id(p)] for p in optimizer.row_wise_adam.param_groups[0]["params"]}
        if optimizer.row_wise_adam
        else set()
    )
    assert chosen == row_wise
    dense_tables = {tables[id(p)] for p in optimizer.adam.param_groups[0]["params"]}
    assert dense_tables == set(tables.values()) - row_wise
    assert {id(p) for p in optimizer.sparse_tables} == {
        key for key, name in tables.items() if name in row_wise
    }
    assert math.isclose(optimizer.adam.param_groups[0]["lr"], 1e-3)


def test_fused_adam_steps_exactly_as_torch_adam() -> None:
    """FusedAdam calls fused Adam's kernel itself: bitwise what `torch.optim.Adam(fused=True)`
    does, with two groups, through a state reload and a step where a parameter has no
    gradient; its state_dict is Adam's."""
    torch.manual_seed(0)
    model = build_model("deepfm", SCHEMA, ExperimentConfig())
    reference = copy.deepcopy(model)

    def groups(net: torch.nn.Module) -> list[dict]:
        tables = [table.weight for _, table in net.embedding.named_tables()]
        others = [p for p in net.parameters() if all(p is not t for t in tables)]
        return [{"params": tables, "weight_decay": 1e-4}, {"params": others, "weight_decay": 1e-3}]

    optimizer = FusedAdam(groups(model), lr=0.01)
    reference_optimizer = torch.optim.Adam(groups(reference), lr=0.01, fused=True)
    batch = batch_with_oov_and_empty_sequences()
    labels = torch.arange(16).remainder(2).float()
    for step in range(5):
        for net in (model, reference):
            F.binary_cross_entropy_with_logits(net(batch), labels).backward()
            if step == 3:
                net.bias.grad = None
        optimizer.step()
        reference_optimizer.step()
        optimizer.zero_grad()
        reference_optimizer.zero_grad()
        if step == 1:
            optimizer.load_state_dict(copy.deepcopy(reference_optimizer.state_dict()))
    for (name, param), reference_param in zip(
        model.named_parameters(), reference.parameters(), strict=True
    ):
        assert torch.equal(param, reference_param), name


@pytest.mark.parametrize("compiled", [True, False])
def test_row_wise_tables_stepped_in_backward_get_the_bits_of_stepping_them_after(
    compiled: bool, monkeypatch
) -> None:
    """In one process the lookups' backward steps the row-wise tables itself and leaves their
    `.grad` None; after four steps (OOV rows, duplicates, all-padding sequences) the weights
    and Adam state are bit for bit those of the sparse-gradient path that DDP ranks take
    (`update_rows_in_backward(None)`, stepped in `CTROptimizer.step`). Both lookup paths."""
    if not compiled:
        monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
    train = replace(TrainConfig(), embedding_optimizer="lazy_adam", embedding_l2=1e-3)
    runs = []
    for in_backward in (True, False):
        torch.manual_seed(0)
        model = build_model("deepfm", SCHEMA, ExperimentConfig())
        optimizer = CTROptimizer(model, train)
        assert optimizer.rows_in_backward  # one process
        if not in_backward:
            optimizer.rows_in_backward = False
            model.embedding.update_rows_in_backward(None)
        batch = batch_with_oov_and_empty_sequences()
        for step in range(4):
            order = torch.randperm(16, generator=torch.Generator().manual_seed(step))
            logits = model({name: values[order] for name, values in batch.items()})
            loss = (logits * torch.linspace(-1, 1, 16)).sum()
            optimizer.zero_grad()
            loss.backward()
            grads = [table.grad for table in optimizer.sparse_tables]
            assert all(grad is None if in_backward else grad.is_sparse for grad in grads), (
                in_backward
            )
            optimizer.step()
        state = optimizer.row_wise_adam.state
        runs.append(
            [
                *model.state_dict().values(),
                *(state[table][key] for table in optimizer.sparse_tables for key in state[table]),
            ]
        )
    assert len(runs[0]) == len(runs[1])
    for got, expected in zip(*runs, strict=True):
        assert torch.equal(got, expected)


@pytest.mark.skipif(not hasattr(mmap, "MADV_HUGEPAGE"), reason="no MADV_HUGEPAGE here")
def test_row_wise_tables_and_paired_moments_start_on_huge_pages_also_after_a_resume() -> None:
    train = replace(TrainConfig(), embedding_optimizer="lazy_adam")
    models, optimizers = [], []
    for _ in range(2):
        torch.manual_seed(0)
        models.append(build_model("deepfm", SCHEMA, ExperimentConfig()))
        optimizers.append(CTROptimizer(models[-1], train))
    models[0](batch_with_oov_and_empty_sequences()).sum().backward()
    optimizers[0].step()
    checkpoint = io.BytesIO()  # a resume loads the state from a file: new tensors
    torch.save(optimizers[0].state_dict(), checkpoint)
    checkpoint.seek(0)
    optimizers[1].load_state_dict(torch.load(checkpoint))
    for optimizer in optimizers:
        for table in optimizer.sparse_tables:
            state = optimizer.row_wise_adam.state[table]
            exp_avg, exp_avg_sq = state["exp_avg"], state["exp_avg_sq"]
            assert table.data_ptr() % (2 << 20) == 0 and exp_avg.data_ptr() % (2 << 20) == 0
            # The halves of one (V, 2, dim) block: a row's two moments side by side.
            dim = table.shape[1]
            assert exp_avg.stride() == exp_avg_sq.stride() == (2 * dim, 1)
            assert exp_avg_sq.data_ptr() == exp_avg.data_ptr() + dim * exp_avg.element_size()
    loaded = optimizers[1].row_wise_adam.state
    for table, twin in zip(optimizers[0].sparse_tables, optimizers[1].sparse_tables, strict=True):
        for key, value in optimizers[0].row_wise_adam.state[table].items():
            assert torch.equal(loaded[twin][key], value)
