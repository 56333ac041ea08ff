"""DCN-V2 cross network: explicit bounded-degree crosses, full-rank or a low-rank mixture."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class CrossNetwork(nn.Module):
    """Stacked full-rank cross layers `x_{l+1} = x_0 * (W_l x_l + b_l) + x_l` (DCN-V2, Eq. 1).

    Layer `l` makes crosses of degree `l + 2` of the input's entries; the residual keeps the
    lower degrees, so the output holds every degree from 1 to `num_layers + 1`.

    Args:
        input_dim: width `d` of `x_0`.
        num_layers: cross layers, each with a `d x d` weight and a bias.

    Shapes:
        - input: `x_0 (B, d)`.
        - output: `x_L (B, d)`.

    Example::

        cross = CrossNetwork(64, num_layers=3)
        crossed = cross(torch.randn(32, 64))  # (32, 64)
    """

    def __init__(self, input_dim: int, num_layers: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(input_dim, input_dim) for _ in range(num_layers))

    def forward(self, inputs: Tensor) -> Tensor:
        crossed = inputs
        for layer in self.layers:
            crossed = inputs * layer(crossed) + crossed
        return crossed


class CrossNetworkMix(nn.Module):
    """DCN-Mix: each cross layer is a gated mixture of `K` low-rank experts (DCN-V2, Eq. 3).

    `x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l` with experts
    `E_i(x) = x_0 * (U_i tanh(C_i tanh(V_i^T x)) + b_l)`: `V_i` projects to rank `r`, `C_i`
    mixes in that space, `U_i` projects back; the nonlinearity `g` is tanh, as in the paper's
    experiments. The gates `G(x_l) = softmax(x_l W_g)` (one bias-free linear score per expert,
    softmax over experts) sum to one, so the shared bias comes out of the sum:
    `sum_i G_i E_i = x_0 * (sum_i G_i U_i h_i + b_l)`. The layer computes it that way: all
    experts' `V` as one matrix multiply, the `C_i` as one batched multiply over experts, and
    the gated `U_i h_i` as one matrix multiply over the `(expert, rank)` columns; no expert
    output `(B, K, d)` is ever built.

    Args:
        input_dim: width `d` of `x_0`.
        num_layers: cross layers.
        low_rank: rank `r` of each expert.
        num_experts: experts `K` per layer.

    Shapes:
        - input: `x_0 (B, d)`.
        - output: `x_L (B, d)`.

    Example::

        cross = CrossNetworkMix(64, num_layers=3, low_rank=32, num_experts=4)
        crossed = cross(torch.randn(32, 64))  # (32, 64)
    """

    def __init__(self, input_dim: int, num_layers: int, low_rank: int, num_experts: int) -> None:
        super().__init__()
        shape = (num_layers, num_experts)
        self.down = nn.Parameter(_uniform((*shape, input_dim, low_rank), input_dim))  # V_i
        self.middle = nn.Parameter(_uniform((*shape, low_rank, low_rank), low_rank))  # C_i
        self.up = nn.Parameter(_uniform((*shape, low_rank, input_dim), low_rank))  # U_i
        self.bias = nn.Parameter(torch.zeros(num_layers, input_dim))  # b_l
        self.gates = nn.Parameter(_uniform((num_layers, input_dim, num_experts), input_dim))

    def forward(self, inputs: Tensor) -> Tensor:
        num_layers, num_experts, _, low_rank = self.down.shape
        crossed = inputs
        for layer in range(num_layers):
            gates = (crossed @ self.gates[layer]).softmax(dim=1)  # (B, K)
            down = torch.tanh(crossed @ self.down[layer].permute(1, 0, 2).flatten(1))  # (B, K*r)
            down = down.view(-1, num_experts, low_rank).transpose(0, 1)  # (K, B, r)
            hidden = torch.tanh(torch.bmm(down, self.middle[layer]))  # (K, B, r)
            gated = (hidden * gates.t().unsqueeze(2)).transpose(0, 1).flatten(1)  # (B, K*r)
            mixed = gated @ self.up[layer].flatten(0, 1)  # (B, d): sum_i G_i U_i h_i
            crossed = inputs * (mixed + self.bias[layer]) + crossed
        return crossed


def _uniform(shape: tuple[int, ...], fan_in: int) -> Tensor:
    """`U(-1/sqrt(fan_in), 1/sqrt(fan_in))`, the scale `nn.Linear` gives its weights."""
    bound = 1 / math.sqrt(fan_in)
    return torch.empty(shape).uniform_(-bound, bound)
