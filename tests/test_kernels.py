"""The fused CPU kernels give PyTorch's bits, and the layers built on them their gradients.

The attention kernels (`attention_forward`, `attention_backward`) and the embedding lookups
(`lookup_forward`, `lookup_backward`) and the row-wise Adam step
(`row_wise_adam`) run compiled C++ where they can; these tests pin that
they compute exactly what the PyTorch ops they replace compute (same float operations, same
order), that the attention layer has the gradients of the plain formulation, and that
models train to the same weights with the kernels and without them.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from deepfm.config import ExperimentConfig
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.layers import kernels
from deepfm.models.layers.attention import MultiHeadSelfAttention, SelfAttentionStack
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.registry import build_model
from deepfm.training.optimizers import RowWiseAdam

HAS_KERNEL_TOOLS = shutil.which("c++") is not None and torch.backends.cpu.get_cpu_capability() in (
    "AVX2",
    "AVX512",
)


def in_order(x: Tensor, y: Tensor) -> Tensor:
    """The definition, one k at a time: 0 + x_0 y_0 + x_1 y_1 + ... in float32."""
    total = torch.zeros(x.shape[0], x.shape[2], y.shape[2], x.shape[3])
    for k in range(x.shape[1]):
        total = total + x[:, k].unsqueeze(2) * y[:, k].unsqueeze(1)
    return total


def broadcast_attention(layer: MultiHeadSelfAttention, fields: Tensor) -> Tensor:
    """The layer as broadcast products and sums (what it computed before the kernel)."""
    batch_size, num_fields, input_dim = fields.shape
    features = fields.permute(2, 1, 0).reshape(input_dim, num_fields * batch_size)
    query, key, value = (layer.query_key_value.weight @ features).view(
        3, layer.num_heads, -1, num_fields, batch_size
    )
    scores = (query.unsqueeze(3) * key.unsqueeze(2)).sum(dim=1) * layer.scale
    weights = scores.softmax(dim=2)
    attended = (weights.unsqueeze(1) * value.unsqueeze(2)).sum(dim=3)
    outputs = attended.reshape(-1, num_fields * batch_size)
    if layer.residual is not None:
        outputs = outputs + layer.residual(features.t()).t()
    return torch.relu(outputs).view(-1, num_fields, batch_size).permute(2, 1, 0)


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
def test_the_kernels_build_here():
    assert kernels.compiled_kernels() is not None


@pytest.mark.slow
@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
def test_a_copy_of_the_package_loads_the_same_build_without_compiling(tmp_path):
    """DVC's stages and the pipeline tests run copies of `src/`: the same source at another
    path loads the build already made (ninja recompiles, ~50 s, for a new source path)."""
    build = Path(kernels.compiled_kernels().__file__)
    ninja_log = (build.parent / ".ninja_log").read_text()
    copy = tmp_path / "src"
    package = Path(kernels.__file__).parents[3]
    shutil.copytree(package, copy, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    script = (
        "import logging\nlogging.basicConfig(level=logging.INFO)\n"
        "from deepfm.models.layers import kernels\n"
        "print(kernels.__file__, kernels.compiled_kernels().__file__)"
    )
    child = subprocess.run(
        [sys.executable, "-c", script],
        env={**os.environ, "PYTHONPATH": str(copy)},
        capture_output=True,
        text=True,
        check=True,
    )
    assert child.stdout.split() == [
        str(copy / Path(kernels.__file__).relative_to(package)),
        str(build),
    ]
    assert (build.parent / ".ninja_log").read_text() == ninja_log
    # The log says what happened: a load, not a ~50 s compile.
    assert f"CPU kernels: loading the build in {build.parent}" in child.stderr
    assert "compiling" not in child.stderr


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize(
    ("heads", "head_dim", "fields", "batch"),
    [(2, 8, 7, 1024), (1, 3, 11, 128), (3, 5, 2, 64), (2, 4, 13, 192)],
)
def test_attention_kernels_give_the_pytorch_ops_bits(heads, head_dim, fields, batch):
    """Weights, attended values and the three gradients, against `_FieldAttention`'s PyTorch
    path (broadcast products, softmax, softmax backward), for several shapes."""
    generator = torch.Generator().manual_seed(batch + fields)
    qkv = torch.randn(3, heads, head_dim, fields, batch, generator=generator)
    grad = torch.randn(heads, head_dim, fields, batch, generator=generator)
    scale = 1 / head_dim**0.5
    compiled = kernels.compiled_kernels()
    attended, weights = compiled.attention_forward(qkv, scale)
    query, key, value = qkv
    expected_weights = (in_order(query, key) * scale).softmax(dim=2)
    assert torch.equal(weights, expected_weights)
    assert torch.equal(attended, in_order(value.transpose(1, 2), weights.transpose(1, 2)))
    grads = compiled.attention_backward(qkv, weights, grad, scale)
    grad_scores = (
        torch._softmax_backward_data(in_order(grad, value), weights, 2, torch.float32) * scale
    )
    assert torch.equal(grads[0], in_order(key.transpose(1, 2), grad_scores.transpose(1, 2)))
    assert torch.equal(grads[1], in_order(query.transpose(1, 2), grad_scores))
    assert torch.equal(grads[2], in_order(grad.transpose(1, 2), weights))


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
def test_attention_kernels_take_only_whole_chunks():
    """A batch that is not a multiple of 64 runs the PyTorch ops (whose sums then add in
    another order); the kernel itself refuses it."""
    assert kernels.attention_kernels(torch.zeros(3, 2, 8, 7, 37)) is None
    assert kernels.attention_kernels(torch.zeros(3, 2, 8, 7, 64, dtype=torch.float64)) is None
    assert kernels.attention_kernels(torch.zeros(3, 2, 8, 7, 128)) is not None
    with pytest.raises(RuntimeError, match="multiple of 64"):
        kernels.compiled_kernels().attention_forward(torch.zeros(3, 2, 8, 7, 37), 1.0)


@pytest.mark.parametrize("batch", [1024, 128, 37])
@pytest.mark.parametrize("residual", [True, False])
def test_layer_values_and_gradients_are_the_broadcast_formulations(batch, residual):
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(16, 16, num_heads=2, residual=residual)
    fields = torch.randn(batch, 7, 16)
    upstream = torch.randn(batch, 7, 16)
    results = []
    for forward in (layer, lambda inputs: broadcast_attention(layer, inputs)):
        inputs = fields.clone().requires_grad_()
        layer.zero_grad()
        outputs = forward(inputs)
        outputs.backward(upstream)
        results.append((outputs.detach(), inputs.grad, layer.query_key_value.weight.grad))
    for got, expected in zip(*results, strict=True):
        assert torch.equal(got, expected)


def test_layer_gradients_match_float64_numerical_ones():
    torch.manual_seed(0)
    layer = MultiHeadSelfAttention(4, 6, num_heads=2).double()
    fields = torch.randn(5, 3, 4, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(layer, (fields,))


def train_stack(steps: int = 3) -> list[Tensor]:
    torch.manual_seed(0)
    stack = SelfAttentionStack(16, 16, num_layers=2, num_heads=2)
    optimizer = torch.optim.Adam(stack.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(1)
    for _ in range(steps):
        fields = torch.randn(128, 7, 16, generator=generator)
        optimizer.zero_grad()
        stack(fields).square().mean().backward()
        optimizer.step()
    return [parameter.detach().clone() for parameter in stack.parameters()]


def test_training_ends_at_the_same_weights_without_the_kernel(monkeypatch):
    with_kernel = train_stack()
    monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
    without = train_stack()
    assert all(torch.equal(a, b) for a, b in zip(with_kernel, without, strict=True))


@pytest.mark.skipif(
    torch.backends.cpu.get_cpu_capability() != "AVX2", reason="PyTorch's AVX2 sum kernels"
)
@pytest.mark.parametrize("batch", [1024, 37, 1])
@pytest.mark.parametrize(
    ("slots", "dim"), [(6, 8), (6, 16), (6, 1), (10, 8), (10, 16), (3, 16), (7, 1)]
)
def test_slot_sum_adds_as_pytorchs_sum_did(batch, slots, dim):
    """For the shapes the pipeline pools (genres: 6 slots, 8 wide, and the first order), the
    written-out order is the one PyTorch's `sum(dim=1)` used: the sequence vectors, so every
    committed result, keep their bits."""
    generator = torch.Generator().manual_seed(slots * dim)
    products = torch.randn(batch, slots, dim, generator=generator)
    products *= torch.rand(batch, slots, 1, generator=generator) > 0.3  # padding: zeros
    assert torch.equal(kernels.slot_sum(products), products.sum(dim=1))


LOOKUP_SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 944, 16),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("zip_prefix", FeatureType.SPARSE, 383, 8),
        FieldSpec("genres", FeatureType.SEQUENCE, 21, 8, max_len=6),
        FieldSpec("tags", FeatureType.SEQUENCE, 1000, 16, max_len=10),
        FieldSpec("short", FeatureType.SEQUENCE, 9, 4, max_len=3),
        FieldSpec("single", FeatureType.SEQUENCE, 50, 1, max_len=1),
    ]
)


def lookup_batch(batch: int, dtype: torch.dtype) -> dict[str, Tensor]:
    """Indices with OOV rows (0), duplicates, padding, all-padding rows."""
    generator = torch.Generator().manual_seed(batch)
    values = {}
    for name, spec in LOOKUP_SCHEMA.fields.items():
        if spec.feature_type is FeatureType.SPARSE:
            indices = torch.randint(0, spec.vocabulary_size, (batch,), generator=generator)
        else:  # padding at the end, some rows all padding
            indices = torch.randint(
                1, spec.vocabulary_size, (batch, spec.max_len), generator=generator
            )
            length = torch.randint(0, spec.max_len + 1, (batch, 1), generator=generator)
            indices *= torch.arange(spec.max_len) < length
        values[name] = indices.to(dtype)
    return values


def lookup_views_and_gradients(
    embedding: FeatureEmbedding, batch: dict[str, Tensor]
) -> list[Tensor]:
    """The three views and every parameter's gradient (a sparse one as its indices and its
    values)."""
    embedding.zero_grad(set_to_none=True)
    views = embedding(batch)
    generator = torch.Generator().manual_seed(7)
    loss = sum((view * torch.randn(view.shape, generator=generator)).sum() for view in views)
    loss.backward()
    grads = []
    for param in embedding.parameters():
        grad = param.grad
        grads += [grad._indices(), grad._values()] if grad.is_sparse else [grad]
    return [view.detach() for view in views] + grads


def same_bits(got: Tensor, expected: Tensor) -> bool:
    """Equal dtype, shape and bits (0.0 and -0.0 differ)."""
    if got.dtype != expected.dtype or got.shape != expected.shape:
        return False
    if got.dtype.is_floating_point:
        return torch.equal(got.view(torch.int32), expected.view(torch.int32))
    return torch.equal(got, expected)


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize("batch", [1024, 37, 1])
@pytest.mark.parametrize("dtype", [torch.int32, torch.int64])
# Positions in `named_tables()` (7 second-order tables, then 7 first-order ones).
@pytest.mark.parametrize("row_wise", [(), (0, 1, 4, 7, 8, 11), (0, 3, 4, 6, 13)])
def test_lookup_kernels_give_the_pytorch_paths_bits(batch, dtype, row_wise, monkeypatch):
    """Views and gradients with the compiled lookups (`lookup_forward`, `lookup_backward`)
    and with the PyTorch ops: sparse fields 16, 4 and 8 wide, sequence
    fields of 6, 10, 3 and 1 slots, OOV rows, padding, all-padding rows, and tables with
    sparse gradients (both of a field's tables, or one of them) next to dense ones."""
    torch.manual_seed(0)
    embedding = FeatureEmbedding(LOOKUP_SCHEMA, fm_embed_dim=16)
    tables = embedding.named_tables()
    embedding.use_sparse_gradients([tables[position][1].weight for position in row_wise])
    values = lookup_batch(batch, dtype)
    with_kernels = lookup_views_and_gradients(embedding, values)
    monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
    without = lookup_views_and_gradients(embedding, values)
    assert len(with_kernels) == 3 + len(list(embedding.parameters())) + len(row_wise)
    for got, expected in zip(with_kernels, without, strict=True):
        assert same_bits(got, expected)


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize("weight_decay", [0.0, 0.01])
@pytest.mark.parametrize("beta1", [0.9, 0.3])  # exp_avg's lerp from exp_avg, from the gradient
def test_row_wise_adam_kernel_gives_the_pytorch_paths_bits(weight_decay, beta1, monkeypatch):
    """`row_wise_adam` steps the weights, moments and step counts to the bits of
    `RowWiseAdam`'s PyTorch ops (which step the gathered rows with the fused Adam kernel):
    tables 16, 12, 8, 3 and 1 wide, so that the rows it steps in place and the last rows it
    leaves to that kernel's scalar tail both occur; paired moments; gradients from 0.001 to
    10; a gradient without one of the tables; coalesced gradients and an unsorted one with
    duplicates."""
    shapes = [(500, 16), (400, 12), (600, 8), (200, 3), (300, 1)]
    runs = []
    for compiled in (True, False):
        if not compiled:
            monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
        torch.manual_seed(0)
        tables = [torch.nn.Parameter(torch.randn(shape)) for shape in shapes]
        assert (kernels.lookup_kernels(tables) is not None) == compiled  # the path under test
        optimizer = RowWiseAdam(tables, lr=0.01, betas=(beta1, 0.999), weight_decay=weight_decay)
        generator = torch.Generator().manual_seed(1)
        for step in range(6):
            for table, (rows, dim) in zip(tables, shapes, strict=True):
                entries = int(torch.randint(1, 200, (), generator=generator))
                index = torch.randint(0, rows, (entries,), generator=generator)
                scale = 10.0 ** torch.randint(-3, 2, (entries, 1), generator=generator)
                values = torch.randn(entries, dim, generator=generator) * scale
                grad = torch.sparse_coo_tensor(index[None], values, (rows, dim))
                if step != 3:  # step 3: duplicates, unsorted
                    grad = grad.coalesce()
                table.grad = None if step == 4 and dim == 1 else grad
            optimizer.step()
        state = [optimizer.state[table] for table in tables]
        runs.append(
            [*tables, *(s[key] for s in state for key in ("step", "exp_avg", "exp_avg_sq"))]
        )
    for got, expected in zip(*runs, strict=True):
        assert same_bits(got.detach(), expected.detach())


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
def test_lookup_kernels_reject_an_index_out_of_range():
    compiled = kernels.compiled_kernels()
    tables = [torch.zeros(5, 4), torch.zeros(3, 8)]
    indices = [torch.tensor([1, 4]), torch.tensor([[1, 3], [0, 0]])]
    with pytest.raises(RuntimeError, match="index 3 out of range for 3 rows"):
        compiled.lookup_forward(indices, tables, [], None)
    grads = [torch.ones(2, 4), torch.ones(2, 8)]
    for row_wise in ([False] * 4, [True, True, False, False]):  # dense, then sparse gradients
        with pytest.raises(RuntimeError, match="index 3 out of range for 3 rows"):
            compiled.lookup_backward(indices, grads, torch.ones(2, 1), [5, 3, -1, -1], row_wise)
    indices[1] = torch.tensor([[1, 2], [0, -1]])
    with pytest.raises(RuntimeError, match="index -1 out of range for 3 rows"):
        compiled.lookup_forward(indices, tables, [], None)
    table, moments = torch.zeros(5, 4), [torch.zeros(5, 4), torch.zeros(5, 4)]
    with pytest.raises(RuntimeError, match="index 7 out of range for 5 rows"):
        compiled.row_wise_adam(
            [table],
            [torch.tensor([1, 7])],
            [torch.ones(2, 4)],
            *[[m] for m in moments],
            [torch.ones(())],
            0.1,
            0.9,
            0.999,
            0.0,
            1e-8,
        )
    assert torch.count_nonzero(table) == 0  # checked before any row changed


SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 50, 16),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("genres", FeatureType.SEQUENCE, 12, 8, max_len=5),
    ]
)


def train_model(name: str, steps: int = 3) -> list[Tensor]:
    """A few Adam steps of a registered model on batches of 128 (OOV rows, padding)."""
    torch.manual_seed(0)
    model = build_model(name, SCHEMA, ExperimentConfig())
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    generator = torch.Generator().manual_seed(2)
    for _ in range(steps):
        batch = {
            "user_id": torch.randint(0, 50, (128,), generator=generator),
            "gender": torch.randint(0, 3, (128,), generator=generator),
            "genres": torch.randint(0, 12, (128, 5), generator=generator),
        }
        labels = torch.randint(0, 2, (128,), generator=generator).float()
        optimizer.zero_grad()
        F.binary_cross_entropy_with_logits(model(batch), labels).backward()
        optimizer.step()
    return [parameter.detach().clone() for parameter in model.parameters()]


@pytest.mark.parametrize("name", ["deepfm", "attention_deepfm"])
def test_models_train_to_the_same_weights_without_the_kernels(name, monkeypatch):
    with_kernels = train_model(name)
    monkeypatch.setattr(kernels, "compiled_kernels", lambda: None)
    without = train_model(name)
    assert all(torch.equal(a, b) for a, b in zip(with_kernels, without, strict=True))


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs an AVX2 CPU (else no build is tried)")
def test_without_a_working_compiler_the_pytorch_ops_run(monkeypatch, tmp_path, caplog):
    """A build that fails (here: the compiler does not exist) is a warning, not an error."""
    monkeypatch.setenv("CXX", str(tmp_path / "no-such-compiler"))
    monkeypatch.setenv("TORCH_EXTENSIONS_DIR", str(tmp_path / "extensions"))
    with caplog.at_level("WARNING", logger=kernels.__name__):
        assert kernels.compiled_kernels.__wrapped__() is None
    assert "CPU kernels not built" in caplog.text
    assert "PyTorch ops instead: same results, slower" in caplog.text
