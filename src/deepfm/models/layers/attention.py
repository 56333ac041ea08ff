"""AutoInt-style multi-head self-attention across fields."""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from deepfm.models.layers.kernels import attention_kernels


class MultiHeadSelfAttention(nn.Module):
    """One self-attention layer over fields: every field attends to every field, then ReLU.

    Queries, keys and values come from one bias-free projection and heads are a reshape, so all
    heads are computed at once; scores are scaled by `1 / sqrt(head_dim)`. Each sample's
    attention is only `F x F`, far too small for a matrix multiply per sample, so the layer
    works with the batch as the innermost dimension, `(D, F, B)`, where every step is one
    vectorised elementwise product or sum over all samples; on the CPU compiled kernels
    (`kernels.attention_kernels`, same bits) run the attention 256 samples at a time. The
    layer has no notion of field order: permuting the input fields permutes the output rows
    the same way.

    Args:
        input_dim: width `D` of each input field vector.
        output_dim: width `D'` of each output field vector; `num_heads` must divide it.
        num_heads: attention heads, each of width `output_dim // num_heads`.
        residual: add the input to the attended values before the ReLU, through a bias-free
            projection when `input_dim != output_dim`.

    Shapes:
        - input: `fields (B, F, D)`.
        - output: `(B, F, D')`, a permuted view of a `(D', F, B)` tensor (what the next layer
          wants); call `.contiguous()` if you need row-major memory.

    Example::

        attention = MultiHeadSelfAttention(16, 32, num_heads=2)
        outputs = attention(torch.randn(32, 7, 16))  # (32, 7, 32)
    """

    def __init__(
        self, input_dim: int, output_dim: int, num_heads: int, residual: bool = True
    ) -> None:
        super().__init__()
        if output_dim % num_heads:
            raise ValueError(
                f"attention output_dim {output_dim} is not divisible by num_heads {num_heads}"
            )
        self.num_heads = num_heads
        self.scale = 1 / math.sqrt(output_dim // num_heads)
        self.query_key_value = nn.Linear(input_dim, 3 * output_dim, bias=False)
        self.residual: nn.Module | None = None
        if residual:
            self.residual = (
                nn.Identity()
                if input_dim == output_dim
                else nn.Linear(input_dim, output_dim, bias=False)
            )

    def forward(self, fields: Tensor) -> Tensor:
        batch_size, num_fields, input_dim = fields.shape
        features = fields.permute(2, 1, 0).reshape(input_dim, num_fields * batch_size)  # (D, F*B)
        query_key_value = (self.query_key_value.weight @ features).view(
            3, self.num_heads, -1, num_fields, batch_size
        )  # (3, heads, head_dim, F, B)
        attended = _FieldAttention.apply(query_key_value, self.scale)  # (heads, head_dim, F, B)
        outputs = attended.reshape(-1, num_fields * batch_size)  # (D', F*B)
        if self.residual is not None:
            outputs = outputs + self.residual(features.t()).t()
        return F.relu(outputs).view(-1, num_fields, batch_size).permute(2, 1, 0)  # (B, F, D')


class _FieldAttention(torch.autograd.Function):
    """`softmax_j(scale * q_i . k_j)`-weighted sum of `v_j`, per head and sample: input the
    stacked queries, keys and values `(3, heads, head_dim, F, B)`, output `(heads, head_dim,
    F, B)`. Forward and backward are `_contract` products plus PyTorch's softmax and its
    backward, each term computed as autograd computes it for the broadcast-product
    formulation (same operations, same order, same bits); on the CPU the compiled
    `attention_forward` and `attention_backward` compute the same terms up to 256 samples
    at a time, without materialising `(heads, head_dim, F, F, B)` products."""

    @staticmethod
    def forward(ctx: Any, query_key_value: Tensor, scale: float) -> Tensor:
        ctx.kernels, ctx.scale = attention_kernels(query_key_value), scale
        if ctx.kernels is not None:
            attended, weights = ctx.kernels.attention_forward(query_key_value, scale)
        else:
            query, key, value = query_key_value
            weights = (_contract(query, key) * scale).softmax(dim=2)  # (heads, F, F_key, B)
            attended = _contract(value.transpose(1, 2), weights.transpose(1, 2))
        ctx.save_for_backward(query_key_value, weights)
        return attended

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor, None]:
        query_key_value, weights = ctx.saved_tensors
        if ctx.kernels is not None:
            grads = ctx.kernels.attention_backward(
                query_key_value, weights, grad.contiguous(), ctx.scale
            )
            return grads, None
        query, key, value = query_key_value
        grad_weights = _contract(grad, value)  # (heads, F, F_key, B)
        grad_value = _contract(grad.transpose(1, 2), weights)
        grad_scores = (
            torch._softmax_backward_data(grad_weights, weights, 2, weights.dtype) * ctx.scale
        )
        grad_query = _contract(key.transpose(1, 2), grad_scores.transpose(1, 2))
        grad_key = _contract(query.transpose(1, 2), grad_scores)
        grads = torch.stack([grad_query, grad_key, grad_value])
        return grads.to(query_key_value.dtype), None


def _contract(x: Tensor, y: Tensor) -> Tensor:
    """`(H, A, C, B)` from `x (H, K, A, B)` and `y (H, K, C, B)`: the sum over `k` of
    `x[:, k, a] * y[:, k, c]`, as a broadcast product and sum."""
    return (x.unsqueeze(3) * y.unsqueeze(2)).sum(dim=1)


class SelfAttentionStack(nn.Sequential):
    """`num_layers` `MultiHeadSelfAttention` layers in a row, as AutoInt stacks them.

    The first layer maps each field vector from `input_dim` to `output_dim`, the later ones
    keep `output_dim`. The layers are the stack's children `0 .. num_layers - 1`.

    Args:
        input_dim: width `D` of each input field vector.
        output_dim: width `D'` of each output field vector; `num_heads` must divide it.
        num_layers: attention layers.
        num_heads: heads per layer.
        residual: each layer adds its (projected) input to its output.

    Shapes:
        - input: `fields (B, F, D)`.
        - output: `(B, F, D')`, as the last `MultiHeadSelfAttention` returns it.

    Example::

        stack = SelfAttentionStack(16, 32, num_layers=3, num_heads=2)
        outputs = stack(torch.randn(32, 7, 16))  # (32, 7, 32)
    """

    def __init__(
        self,
        input_dim: int,
        output_dim: int,
        num_layers: int,
        num_heads: int,
        residual: bool = True,
    ) -> None:
        widths = [input_dim] + [output_dim] * num_layers
        super().__init__(
            *(
                MultiHeadSelfAttention(width, output_dim, num_heads, residual)
                for width in widths[:-1]
            )
        )
