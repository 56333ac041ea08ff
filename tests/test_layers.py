"""Interaction layers against plain reference implementations written out in the tests."""

from __future__ import annotations

import math

import pytest
import torch
from torch import Tensor, nn

from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.cin import CIN
from deepfm.models.layers.fm_interaction import FMInteraction
from deepfm.models.layers.mlp import MLP


def test_fm_equals_the_sum_of_pairwise_dot_products() -> None:
    field_embeddings = torch.randn(5, 6, 4, generator=torch.Generator().manual_seed(0))
    expected = torch.zeros(5, 1)
    for i in range(6):
        for j in range(i + 1, 6):
            expected[:, 0] += (field_embeddings[:, i] * field_embeddings[:, j]).sum(dim=1)
    torch.testing.assert_close(FMInteraction()(field_embeddings), expected)


def naive_cin(cin: CIN, field_embeddings: Tensor, split_half: bool) -> Tensor:
    """CIN written element by element from the xDeepFM paper's equation."""
    batch_size, num_fields, dim = field_embeddings.shape
    base = field_embeddings  # X^0: (B, F, D)
    hidden = field_embeddings  # X^{k-1}: (B, H, D)
    pooled = []
    for index, layer in enumerate(cin.layers):
        size = layer.weight.shape[0]
        weight = layer.weight.view(size, num_fields, hidden.shape[1])  # W^k: (H_k, F, H)
        feature_maps = torch.zeros(batch_size, size, dim)
        for h in range(size):
            for i in range(hidden.shape[1]):
                for j in range(num_fields):
                    feature_maps[:, h] += weight[h, j, i] * hidden[:, i] * base[:, j]
        if split_half and index < len(cin.layers) - 1:
            hidden, kept = feature_maps[:, : size // 2], feature_maps[:, size // 2 :]
        else:
            hidden, kept = feature_maps, feature_maps
        pooled.append(kept.sum(dim=2))
    return cin.output(torch.cat(pooled, dim=1))


@pytest.mark.parametrize("split_half", [True, False])
def test_cin_equals_the_naive_loop(split_half: bool) -> None:
    torch.manual_seed(0)
    cin = CIN(num_fields=4, layer_sizes=(6, 4, 3), split_half=split_half)
    field_embeddings = torch.randn(3, 4, 5)
    expected = naive_cin(cin, field_embeddings, split_half)
    torch.testing.assert_close(cin(field_embeddings), expected)


def test_cin_pools_half_of_each_layer_but_the_last_when_split() -> None:
    assert CIN(7, (64, 64, 64), split_half=True).output.in_features == 32 + 32 + 64
    assert CIN(7, (64, 64, 64), split_half=False).output.in_features == 64 * 3
    assert CIN(7, (256, 128), split_half=True).layers[1].in_features == 128 * 7


def test_cin_rejects_odd_sizes_to_split() -> None:
    with pytest.raises(ValueError, match="even"):
        CIN(7, (63, 64), split_half=True)
    CIN(7, (64, 63), split_half=True)  # the last layer is not split


@pytest.mark.parametrize(
    ("input_dim", "output_dim", "residual"), [(8, 8, True), (8, 12, True), (8, 12, False)]
)
def test_self_attention_is_permutation_equivariant_over_fields(
    input_dim: int, output_dim: int, residual: bool
) -> None:
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(input_dim, output_dim, num_heads=2, residual=residual)
    fields = torch.randn(4, 6, input_dim)
    permutation = torch.randperm(6)
    outputs = attention(fields)
    assert outputs.shape == (4, 6, output_dim)
    torch.testing.assert_close(attention(fields[:, permutation]), outputs[:, permutation])


def plain_self_attention(attention: MultiHeadSelfAttention, fields: Tensor) -> Tensor:
    """The same layer written sample-major, with one matrix multiply per step."""
    batch_size, num_fields, _ = fields.shape
    query, key, value = (fields @ attention.query_key_value.weight.t()).chunk(3, dim=-1)

    def by_head(projected: Tensor) -> Tensor:  # (B, F, D') -> (B, heads, F, D' / heads)
        return projected.view(batch_size, num_fields, attention.num_heads, -1).transpose(1, 2)

    query, key, value = by_head(query), by_head(key), by_head(value)
    scores = query @ key.transpose(-1, -2) / math.sqrt(query.shape[-1])  # (B, heads, F, F)
    attended = (scores.softmax(dim=-1) @ value).transpose(1, 2).reshape(batch_size, num_fields, -1)
    if attention.residual is not None:
        attended = attended + attention.residual(fields)
    return attended.relu()


@pytest.mark.parametrize(
    ("input_dim", "output_dim", "residual"), [(8, 8, True), (8, 12, True), (8, 12, False)]
)
def test_self_attention_equals_a_plain_implementation(
    input_dim: int, output_dim: int, residual: bool
) -> None:
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(input_dim, output_dim, num_heads=2, residual=residual)
    fields = torch.randn(4, 6, input_dim)
    torch.testing.assert_close(attention(fields), plain_self_attention(attention, fields))


def test_self_attention_rejects_heads_that_do_not_divide_the_width() -> None:
    with pytest.raises(ValueError, match="divisible"):
        MultiHeadSelfAttention(16, 16, num_heads=3)


def test_mlp_layers_and_output_shape() -> None:
    mlp = MLP(10, hidden_units=(8, 4), dropout=0.0)
    linears = [m for m in mlp.modules() if isinstance(m, nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(10, 8), (8, 4), (4, 1)]
    assert not any(isinstance(m, nn.Dropout) for m in mlp.modules())
    assert sum(isinstance(m, nn.Dropout) for m in MLP(10, (8, 4), dropout=0.5).modules()) == 2
    assert mlp(torch.randn(3, 10)).shape == (3, 1)
