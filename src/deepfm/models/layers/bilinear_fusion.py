"""FinalMLP's multi-head bilinear fusion of two stream outputs into one logit."""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn


class MultiHeadBilinearFusion(nn.Module):
    """Sum over heads `h` of `w1_h . x_h + w2_h . y_h + x_h^T W3_h y_h + b_h` (FinalMLP, Eq. 7).

    `x` and `y` are split into `num_heads` equal chunks `x_h`, `y_h`. Summed over heads, the
    linear terms are one `Linear` over all of `x` (its bias is the sum of the `b_h`) and one
    over all of `y`; the bilinear terms of all heads are one batched matrix multiply with the
    heads as the batch, `(H, B, x_dim/H) @ (H, x_dim/H, y_dim/H)`, then a product with `y` summed
    per row: no loop over heads or samples.

    Args:
        x_dim: width of the first stream's output; `num_heads` must divide it.
        y_dim: width of the second stream's output; `num_heads` must divide it.
        num_heads: heads.

    Shapes:
        - input: `x (B, x_dim)`, `y (B, y_dim)`.
        - output: `(B, 1)`.

    Example::

        fusion = MultiHeadBilinearFusion(128, 64, num_heads=8)
        logit = fusion(torch.randn(32, 128), torch.randn(32, 64))  # (32, 1)
    """

    def __init__(self, x_dim: int, y_dim: int, num_heads: int) -> None:
        super().__init__()
        if x_dim % num_heads or y_dim % num_heads:
            raise ValueError(
                f"fusion widths {x_dim} and {y_dim} are not both divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.x_linear = nn.Linear(x_dim, 1)
        self.y_linear = nn.Linear(y_dim, 1, bias=False)
        head_x, head_y = x_dim // num_heads, y_dim // num_heads
        # The bilinear terms are a linear map of all heads' x_h y_h^T entries: Linear's scale.
        bound = 1 / math.sqrt(num_heads * head_x * head_y)
        self.bilinear = nn.Parameter(torch.empty(num_heads, head_x, head_y).uniform_(-bound, bound))

    def forward(self, x: Tensor, y: Tensor) -> Tensor:
        x_heads = x.reshape(x.shape[0], self.num_heads, -1).transpose(0, 1)  # (H, B, x_dim/H)
        projected = torch.bmm(x_heads, self.bilinear)  # (H, B, y_dim/H): x_h^T W3_h
        y_heads = y.reshape(y.shape[0], self.num_heads, -1).transpose(0, 1)  # (H, B, y_dim/H)
        bilinear = (projected * y_heads).sum(dim=(0, 2)).unsqueeze(1)  # (B, 1)
        return self.x_linear(x) + self.y_linear(y) + bilinear
