"""Feed-forward tower: ReLU hidden layers, ending in one logit or in the last hidden layer."""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor, nn


class MLP(nn.Module):
    """`Linear -> ReLU (-> Dropout)` for each hidden width, then `Linear` to one logit.

    Args:
        input_dim: width of the input.
        hidden_units: width of each hidden layer, in order; empty gives a linear model.
        dropout: dropout probability after each hidden ReLU; 0 adds no dropout layers.
        output_logit: end in the `Linear` to one logit; without it the tower returns its last
            hidden layer (its input when `hidden_units` is empty), for a model that combines
            it with other vectors.

    Shapes:
        - input: `(B, input_dim)`.
        - output: `(B, output_dim)`: `(B, 1)` with `output_logit`, else `(B, hidden_units[-1])`.

    Example::

        mlp = MLP(64, hidden_units=(256, 128), dropout=0.1)
        logit = mlp(torch.randn(32, 64))  # (32, 1)
    """

    def __init__(
        self,
        input_dim: int,
        hidden_units: Sequence[int],
        dropout: float = 0.0,
        output_logit: bool = True,
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for width in hidden_units:
            layers += [nn.Linear(input_dim, width), nn.ReLU(inplace=True)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            input_dim = width
        if output_logit:
            layers.append(nn.Linear(input_dim, 1))
        self.output_dim = 1 if output_logit else input_dim
        self.layers = nn.Sequential(*layers)

    def forward(self, inputs: Tensor) -> Tensor:
        return self.layers(inputs)
