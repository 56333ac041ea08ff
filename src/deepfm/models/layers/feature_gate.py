"""FinalMLP's stream-specific feature selection: a learned soft gate on every input entry."""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor, nn

from deepfm.models.layers.mlp import MLP


class FeatureGate(nn.Module):
    """`inputs * 2 * sigmoid(MLP(context))`: re-weights each entry by a gate in (0, 2).

    The gate MLP (ReLU hidden layers, then a linear layer to `input_dim` gates) reads a
    context vector; a gate of 1 leaves an entry as it is, so training starts near the identity
    when the gate logits are small.

    Args:
        context_dim: width of the context the gate reads.
        input_dim: width of the gated inputs (one gate per entry).
        hidden_units: the gate MLP's hidden widths.

    Shapes:
        - input: `inputs (B, input_dim)`, `context (B, context_dim)`.
        - output: `(B, input_dim)`.

    Example::

        gate = FeatureGate(context_dim=64, input_dim=64, hidden_units=(64,))
        flat = torch.randn(32, 64)
        selected = gate(flat, context=flat)  # (32, 64)
    """

    def __init__(self, context_dim: int, input_dim: int, hidden_units: Sequence[int]) -> None:
        super().__init__()
        self.hidden = MLP(context_dim, hidden_units, output_logit=False)
        self.output = nn.Linear(self.hidden.output_dim, input_dim)

    def forward(self, inputs: Tensor, context: Tensor) -> Tensor:
        return inputs * (2 * torch.sigmoid(self.output(self.hidden(context))))
