"""The attention layer's fused CPU kernel gives PyTorch's bits, and the layer its gradients.

`field_contract.contract` runs a compiled C++ kernel where it can; these tests pin that it
computes exactly what the broadcast product and sum compute (same float operations, same
order), that the layer built on it has the gradients of the plain formulation, and that a
model trains to the same weights with the kernel and without it.
"""

from __future__ import annotations

import shutil

import pytest
import torch
from torch import Tensor

from deepfm.models.layers import field_contract
from deepfm.models.layers.attention import MultiHeadSelfAttention, SelfAttentionStack

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
def test_the_kernel_builds_here():
    assert field_contract.compiled_kernel() is not None


@pytest.mark.skipif(not HAS_KERNEL_TOOLS, reason="needs a C++ compiler and an AVX2 CPU")
@pytest.mark.parametrize(
    ("heads", "terms", "rows", "columns", "batch"),
    [(2, 8, 7, 7, 1024), (1, 3, 11, 13, 128), (2, 7, 8, 7, 37), (3, 5, 2, 9, 64 + 5)],
)
def test_the_kernel_adds_the_products_in_order(heads, terms, rows, columns, batch):
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(heads, terms, rows, batch, generator=generator)
    y = torch.randn(heads, terms, columns, batch, generator=generator)
    kernel = field_contract.compiled_kernel()
    assert torch.equal(kernel.contract(x, y), in_order(x, y))
    # strided inputs (a transposed view), as the layer's backward passes them
    xt = torch.randn(heads, rows, terms, batch, generator=generator).transpose(1, 2)
    assert torch.equal(kernel.contract(xt, y), in_order(xt, y))


@pytest.mark.parametrize("batch", [1024, 128, 64, 37, 1])
def test_contract_gives_the_broadcast_sums_bits(batch):
    generator = torch.Generator().manual_seed(batch)
    x = torch.randn(2, 8, 7, batch, generator=generator)
    y = torch.randn(2, 8, 7, batch, generator=generator)
    expected = (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)
    assert torch.equal(field_contract.contract(x, y), expected)


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
    monkeypatch.setattr(field_contract, "compiled_kernel", lambda: None)
    without = train_stack()
    assert all(torch.equal(a, b) for a, b in zip(with_kernel, without, strict=True))


def test_other_dtypes_take_the_pytorch_path():
    """The kernel takes float32 only; a float64 input must not reach it."""
    x, y = torch.randn(2, 8, 7, 64, dtype=torch.float64), torch.randn(2, 8, 7, 64)
    expected = (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)
    assert torch.equal(field_contract.contract(x, y), expected)
