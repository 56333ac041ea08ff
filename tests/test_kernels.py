"""The fused CPU kernels give PyTorch's bits, and the layers built on them their gradients.

`kernels.contract` and `kernels.table_gradient` run compiled C++ where they can; these tests
pin that they compute exactly what the PyTorch ops they replace compute (same float
operations, same order), that the attention layer built on `contract` has the gradients of
the plain formulation, and that models train to the same weights with the kernels and
without them.
"""

from __future__ import annotations

import shutil

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor

from deepfm.config import ExperimentConfig
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.layers import kernels
from deepfm.models.layers.attention import MultiHeadSelfAttention, SelfAttentionStack
from deepfm.models.registry import build_model

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


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize(
    ("heads", "terms", "rows", "columns", "batch"),
    [(2, 8, 7, 7, 1024), (1, 3, 11, 13, 128), (2, 7, 8, 7, 37), (3, 5, 2, 9, 64 + 5)],
)
def test_the_kernel_adds_the_products_in_order(heads, terms, rows, columns, batch):
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(heads, terms, rows, batch, generator=generator)
    y = torch.randn(heads, terms, columns, batch, generator=generator)
    compiled = kernels.compiled_kernels()
    assert torch.equal(compiled.contract(x, y), in_order(x, y))
    # strided inputs (a transposed view), as the layer's backward passes them
    xt = torch.randn(heads, rows, terms, batch, generator=generator).transpose(1, 2)
    assert torch.equal(compiled.contract(xt, y), in_order(xt, y))


@pytest.mark.parametrize("batch", [1024, 128, 64, 37, 1])
def test_contract_gives_the_broadcast_sums_bits(batch):
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(2, 8, 7, batch, generator=generator)
    y = torch.randn(2, 8, 7, batch, generator=generator)
    expected = (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)
    assert torch.equal(kernels.contract(x, y), expected)


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


def test_other_dtypes_take_the_pytorch_path():
    """The kernel takes float32 only; a float64 input must not reach it."""
    x, y = torch.randn(2, 8, 7, 64, dtype=torch.float64), torch.randn(2, 8, 7, 64)
    expected = (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)
    assert torch.equal(kernels.contract(x, y), expected)


def index_add_gradient(num_rows, index, upstream, batch_rows=None, weights=None) -> Tensor:
    """What `_TableLookup` computed before the kernel: four PyTorch operators."""
    rows = upstream if batch_rows is None else upstream.index_select(0, batch_rows)
    if weights is not None:
        rows = rows * weights.unsqueeze(1)
    gradient = rows.new_zeros(num_rows, rows.shape[1]).index_add_(0, index, rows)
    gradient.narrow(0, 0, 1).zero_()
    return gradient


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize(("num_rows", "dim"), [(944, 16), (3, 4), (383, 8), (1679, 1)])
def test_table_gradient_kernel_gives_index_adds_bits(num_rows, dim):
    generator = torch.Generator().manual_seed(num_rows)
    index = torch.randint(0, num_rows, (1024,), generator=generator)  # duplicates, row 0
    upstream = torch.randn(1024, dim, generator=generator)
    compiled = kernels.compiled_kernels()
    got = compiled.table_gradient(num_rows, index, upstream, None, None)
    assert torch.equal(got, index_add_gradient(num_rows, index, upstream))
    assert not got[0].any()
    # a sequence field: 6 slots per row, the non-padding ones weighted by 1 / count
    entries = torch.randint(0, 1024 * 6, (3000,), generator=generator).sort().values
    batch_rows, weights = entries // 6, torch.rand(3000, generator=generator)
    index = torch.randint(1, num_rows, (3000,), generator=generator)
    got = compiled.table_gradient(num_rows, index, upstream, batch_rows, weights)
    assert torch.equal(got, index_add_gradient(num_rows, index, upstream, batch_rows, weights))


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
def test_table_gradient_kernel_rejects_an_index_out_of_range():
    with pytest.raises(RuntimeError, match="index 5 out of range for 5 rows"):
        kernels.compiled_kernels().table_gradient(
            5, torch.tensor([1, 5]), torch.ones(2, 4), None, None
        )


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
