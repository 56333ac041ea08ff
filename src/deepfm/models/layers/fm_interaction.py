"""Factorization-machine second-order term: every pair of fields, in O(F * D)."""

from __future__ import annotations

from torch import Tensor, nn


class FMInteraction(nn.Module):
    """Sum over field pairs `i < j` of `<v_i, v_j>`, as `0.5 * (square_of_sum - sum_of_squares)`.

    No parameters: the field vectors are the factors.

    Shapes:
        - input: `field_embeddings (B, F, D)`.
        - output: `(B, 1)`.

    Example::

        fm = FMInteraction()
        logit = fm(torch.randn(32, 7, 16))  # (32, 1)
    """

    def forward(self, field_embeddings: Tensor) -> Tensor:
        square_of_sum = field_embeddings.sum(dim=1).square()  # (B, D)
        sum_of_squares = field_embeddings.square().sum(dim=1)  # (B, D)
        return 0.5 * (square_of_sum - sum_of_squares).sum(dim=1, keepdim=True)  # (B, 1)
