"""Compressed Interaction Network (xDeepFM): explicit vector-wise interactions of bounded degree."""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class CIN(nn.Module):
    """Stacked CIN layers, sum-pooled over the embedding dimension, then a Linear to one logit.

    Layer `k` forms every product `X^0_f * X^{k-1}_h` of an input field and a previous feature
    map (elementwise over the embedding dimension `D`) and mixes those `F * H_{k-1}` products
    into `H_k` new maps with a bias-free weight, as in the xDeepFM paper; the weight's columns
    are ordered field-major, `(f, h)`.

    Maps that are only pooled (the last layer's, and with `split_half` the pooled half of each
    other layer's) are never built: the sum over `D` of a weighted sum of products is the same
    weighted sum of the products' sums over `D`, so the weight is applied to a `(B, F * H)`
    matrix of summed products instead of `(B, D, F * H)` products, `D` times less work. Maps
    passed on to the next layer are built as one outer product and one matrix multiply over
    all `B * D` positions, kept channels-last.

    Args:
        num_fields: number of input fields `F`.
        layer_sizes: number of feature maps `H_k` each layer makes.
        split_half: every layer but the last passes the first half of its maps to the next layer
            and sum-pools the second half into the output (so those sizes must be even); if
            False, every layer passes all its maps on and pools all of them.

    Shapes:
        - input: `field_embeddings (B, F, D)`.
        - output: `(B, 1)`.

    Example::

        cin = CIN(num_fields=7, layer_sizes=(64, 64, 64), split_half=True)
        logit = cin(torch.randn(32, 7, 16))  # (32, 1); pools 32 + 32 + 64 maps
    """

    def __init__(
        self, num_fields: int, layer_sizes: Sequence[int], split_half: bool = True
    ) -> None:
        super().__init__()
        if not layer_sizes:
            raise ValueError("CIN needs at least one layer size")
        if split_half and any(size % 2 for size in layer_sizes[:-1]):
            raise ValueError(
                f"with split_half every CIN layer size but the last must be even, "
                f"got {list(layer_sizes)}"
            )
        self.layers = nn.ModuleList()
        # Per layer, its maps [0, passed_on) feed the next layer and [first_pooled, H_k) are
        # pooled; without split_half the two ranges are the same.
        self.passed_on: list[int] = []
        self.first_pooled: list[int] = []
        previous_size = num_fields
        for index, size in enumerate(layer_sizes):
            self.layers.append(nn.Linear(previous_size * num_fields, size, bias=False))
            is_last = index == len(layer_sizes) - 1
            split = split_half and not is_last
            self.passed_on.append(0 if is_last else size // 2 if split else size)
            self.first_pooled.append(size // 2 if split else 0)
            previous_size = self.passed_on[-1]
        pooled_size = sum(
            size - first for size, first in zip(layer_sizes, self.first_pooled, strict=True)
        )
        self.output = nn.Linear(pooled_size, 1)

    def forward(self, field_embeddings: Tensor) -> Tensor:
        base_maps = field_embeddings.transpose(1, 2).contiguous()  # X^0 channels-last: (B, D, F)
        hidden_maps = base_maps  # X^{k-1}: (B, D, H)
        pooled = []
        for layer, passed_on, first_pooled in zip(
            self.layers, self.passed_on, self.first_pooled, strict=True
        ):
            summed_products = torch.bmm(field_embeddings, hidden_maps)  # (B, F, H), summed over D
            pooled_weight = layer.weight[first_pooled:]  # (pooled H_k, F * H)
            pooled.append(F.linear(summed_products.flatten(start_dim=1), pooled_weight))
            if passed_on:
                products = base_maps.unsqueeze(-1) * hidden_maps.unsqueeze(-2)  # (B, D, F, H)
                hidden_maps = F.linear(products.flatten(start_dim=2), layer.weight[:passed_on])
        return self.output(torch.cat(pooled, dim=1))  # (B, sum of pooled H_k) -> (B, 1)
