"""Wide & Deep, DCN-V2, FinalMLP and AutoInt against naive references written from the papers.

Each reference loops over layers, experts and heads with plain tensor operations, in float64;
the model's logits and the gradients of a scalar of them with respect to every parameter (the
embedding tables included) must match it.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest
import torch
from torch import Tensor, nn

from deepfm.config import ConfigError, ExperimentConfig
from deepfm.models.autoint import AutoInt
from deepfm.models.base import CTRModel
from deepfm.models.layers.attention import MultiHeadSelfAttention
from deepfm.models.layers.bilinear_fusion import MultiHeadBilinearFusion
from deepfm.models.layers.cross import CrossNetwork, CrossNetworkMix
from deepfm.models.layers.mlp import MLP
from deepfm.models.registry import build_model
from test_models import SCHEMA, covering_batch

Reference = Callable[[Any, Tensor], Tensor]


def naive_mlp(mlp: MLP, inputs: Tensor) -> Tensor:
    """Loop over the tower's linear layers: ReLU after each but a final logit layer."""
    linears = [module for module in mlp.layers if isinstance(module, nn.Linear)]
    hidden = inputs
    for index, linear in enumerate(linears):
        hidden = hidden @ linear.weight.t() + linear.bias
        is_logit = mlp.output_dim == 1 and index == len(linears) - 1
        if not is_logit:
            hidden = hidden.relu()
    return hidden


def naive_cross(cross: CrossNetwork, x0: Tensor) -> Tensor:
    """`x_{l+1}[i] = x_0[i] * (sum_j W_l[i, j] x_l[j] + b_l[i]) + x_l[i]`, entry by entry."""
    x = x0
    for layer in cross.layers:
        x = torch.stack(
            [
                x0[:, i] * ((layer.weight[i] * x).sum(dim=1) + layer.bias[i]) + x[:, i]
                for i in range(x0.shape[1])
            ],
            dim=1,
        )
    return x


def naive_cross_mix(cross: CrossNetworkMix, x0: Tensor) -> Tensor:
    """`x_{l+1} = sum_i G_i(x_l) E_i(x_l) + x_l`, `E_i(x) = x_0 * (U_i g(C_i g(V_i^T x)) + b_l)`."""
    num_layers, num_experts = cross.down.shape[:2]
    x = x0
    for layer in range(num_layers):
        scores = torch.stack([x @ cross.gates[layer, :, i] for i in range(num_experts)], dim=1)
        gates = scores.exp() / scores.exp().sum(dim=1, keepdim=True)
        mixture = torch.zeros_like(x)
        for i in range(num_experts):
            down, middle, up = (cross.down[layer, i], cross.middle[layer, i], cross.up[layer, i])
            expert = x0 * (torch.tanh(torch.tanh(x @ down) @ middle) @ up + cross.bias[layer])
            mixture = mixture + gates[:, i : i + 1] * expert
        x = mixture + x
    return x


def naive_fusion(fusion: MultiHeadBilinearFusion, x: Tensor, y: Tensor) -> Tensor:
    """Sum over heads of `w1_h . x_h + w2_h . y_h + x_h^T W3_h y_h`, plus the bias."""
    heads = fusion.num_heads
    x_heads, y_heads = x.chunk(heads, dim=1), y.chunk(heads, dim=1)
    w1 = fusion.x_linear.weight[0].chunk(heads)
    w2 = fusion.y_linear.weight[0].chunk(heads)
    logit = fusion.x_linear.bias.expand(x.shape[0])
    for h in range(heads):
        bilinear = torch.stack(
            [x_heads[h][b] @ fusion.bilinear[h] @ y_heads[h][b] for b in range(x.shape[0])]
        )
        logit = logit + x_heads[h] @ w1[h] + y_heads[h] @ w2[h] + bilinear
    return logit.unsqueeze(1)


def naive_attention(attention: MultiHeadSelfAttention, fields: Tensor) -> Tensor:
    """Per head: softmax(q k^T / sqrt(d_h)) v on each sample's fields; heads concatenated."""
    heads = attention.num_heads
    weight = attention.query_key_value.weight.view(3, heads, -1, fields.shape[2])
    outputs = []
    for h in range(heads):
        query, key, value = (fields @ weight[part, h].t() for part in range(3))  # (B, F, d_h)
        scores = query @ key.transpose(1, 2) / math.sqrt(query.shape[2])
        outputs.append(scores.softmax(dim=2) @ value)
    attended = torch.cat(outputs, dim=2)
    if attention.residual is not None:
        attended = attended + attention.residual(fields)
    return attended.relu()


def wide_deep_reference(model: Any, batch: dict[str, Tensor]) -> Tensor:
    views = model.embedding(batch)
    return model.bias + views.first_order + naive_mlp(model.mlp, views.flat_embeddings)


def dcnv2_reference(model: Any, batch: dict[str, Tensor]) -> Tensor:
    x0 = model.embedding(batch).flat_embeddings
    cross = naive_cross(model.cross, x0) if isinstance(model.cross, CrossNetwork) else None
    if cross is None:
        cross = naive_cross_mix(model.cross, x0)
    if model.output is None:  # stacked
        return naive_mlp(model.mlp, cross)
    combined = torch.cat([cross, naive_mlp(model.mlp, x0)], dim=1)
    return combined @ model.output.weight.t() + model.output.bias


def finalmlp_reference(model: Any, batch: dict[str, Tensor]) -> Tensor:
    flat = model.embedding(batch).flat_embeddings
    streams = []
    for gate, stream in ((model.gate1, model.stream1), (model.gate2, model.stream2)):
        gate_logits = naive_mlp(gate.hidden, flat) @ gate.output.weight.t() + gate.output.bias
        streams.append(naive_mlp(stream, flat * 2 / (1 + torch.exp(-gate_logits))))
    return naive_fusion(model.fusion, *streams)


def autoint_reference(model: Any, batch: dict[str, Tensor]) -> Tensor:
    views = model.embedding(batch)
    fields = views.field_embeddings
    for attention in model.attention:
        fields = naive_attention(attention, fields)
    logit = fields.reshape(fields.shape[0], -1) @ model.attention_output.weight.t()
    logit = logit + model.attention_output.bias
    if hasattr(model, "mlp"):
        logit = logit + naive_mlp(model.mlp, views.flat_embeddings)
    return logit


CASES = [
    ("wide_deep", {}, wide_deep_reference),
    ("dcnv2", {}, dcnv2_reference),
    ("dcnv2", {"structure": "stacked"}, dcnv2_reference),
    ("dcnv2", {"low_rank": 3, "num_experts": 3}, dcnv2_reference),
    ("dcnv2", {"low_rank": 3, "structure": "stacked"}, dcnv2_reference),
    ("finalmlp", {"stream2_hidden_units": (12, 8), "num_heads": 4}, finalmlp_reference),
    ("autoint", {}, autoint_reference),
    ("autoint", {"attention_dim": 8}, autoint_reference),  # projected residual
    ("autoint", {"attention_residual": False, "attention_heads": 4}, autoint_reference),
    ("autoint_plus", {}, autoint_reference),
]
SMALL_MLP = {"wide_deep", "dcnv2", "autoint_plus"}


def build_variant(name: str, options: dict[str, Any]) -> CTRModel:
    config = ExperimentConfig()
    section = getattr(config.model, name)
    if name in SMALL_MLP:  # the naive loops are slow on the default widths
        options = {"hidden_units": (12, 8), **options}
    if name == "finalmlp":
        options = {"stream1_hidden_units": (16, 8), "gate_hidden_units": (6,), **options}
    model_config = replace(config.model, **{name: replace(section, **options)})
    torch.manual_seed(0)
    return build_model(name, SCHEMA, replace(config, model=model_config))


@pytest.mark.parametrize(("name", "options", "reference"), CASES)
def test_model_equals_its_naive_reference(
    name: str, options: dict[str, Any], reference: Reference
) -> None:
    model = build_variant(name, options).double()
    for parameter in model.parameters():  # move every parameter off its (often zero) init
        parameter.data.add_(0.1 * torch.randn_like(parameter))
    batch = covering_batch(SCHEMA, torch.Generator().manual_seed(0))
    weights = torch.randn(len(batch["user_id"]), dtype=torch.float64)

    logits = model(batch)
    expected = reference(model, batch).squeeze(1)
    torch.testing.assert_close(logits, expected, rtol=1e-6, atol=1e-9)

    parameters = list(model.parameters())
    gradients = torch.autograd.grad((logits * weights).sum(), parameters)
    expected_gradients = torch.autograd.grad((expected * weights).sum(), parameters)
    for (parameter_name, _), got, want in zip(
        model.named_parameters(), gradients, expected_gradients, strict=True
    ):
        torch.testing.assert_close(got, want, rtol=1e-6, atol=1e-9, msg=parameter_name)


@pytest.mark.parametrize(("name", "options", "reference"), CASES)
def test_every_variant_trains_every_parameter(
    name: str, options: dict[str, Any], reference: Reference
) -> None:
    model = build_variant(name, options)
    batch = covering_batch(SCHEMA, torch.Generator().manual_seed(1))
    labels = torch.randint(0, 2, (len(batch["user_id"]),), generator=torch.Generator())
    nn.functional.binary_cross_entropy_with_logits(model(batch), labels.float()).backward()
    for parameter_name, parameter in model.named_parameters():
        assert parameter.grad is not None and torch.count_nonzero(parameter.grad) > 0, (
            parameter_name
        )


def test_dcnv2_keeps_no_first_order_term_and_autoint_no_mlp() -> None:
    config = ExperimentConfig()
    dcnv2, autoint = build_model("dcnv2", SCHEMA, config), build_model("autoint", SCHEMA, config)
    assert dcnv2.bias is None and not dcnv2.embedding.with_first_order
    assert not dcnv2.embedding.with_field_embeddings
    assert isinstance(autoint, AutoInt) and not hasattr(autoint, "mlp") and autoint.bias is None
    wide_deep = build_model("wide_deep", SCHEMA, config)
    assert wide_deep.bias is not None and not wide_deep.embedding.with_field_embeddings


def test_fusion_rejects_heads_that_do_not_divide_both_widths() -> None:
    with pytest.raises(ValueError, match="divisible by num_heads 3"):
        MultiHeadBilinearFusion(12, 8, num_heads=3)


def test_mlp_without_logit_returns_its_last_hidden_layer() -> None:
    assert MLP(10, (8, 4), output_logit=False)(torch.randn(3, 10)).shape == (3, 4)
    assert MLP(10, (), output_logit=False).output_dim == 10


@pytest.mark.parametrize(
    ("section", "message"),
    [
        ({"dcnv2": {"cross_layers": 0}}, r"model\.dcnv2\.cross_layers must be >= 1, got 0"),
        ({"dcnv2": {"low_rank": 0}}, r"model\.dcnv2\.low_rank must be >= 1, got 0"),
        ({"dcnv2": {"structure": "serial"}}, r"model\.dcnv2\.structure: 'serial' is not allowed"),
        (
            {"finalmlp": {"num_heads": 5}},
            r"model\.finalmlp\.num_heads must divide both streams' last widths \[128, 128\], got 5",
        ),
        (
            {"finalmlp": {"stream2_hidden_units": []}},
            r"model\.finalmlp\.stream2_hidden_units must have at least 1 entry, got \[\]",
        ),
        (
            {"autoint_plus": {"attention_heads": 3}},
            r"model\.autoint_plus\.attention_heads must divide model\.autoint_plus\.attention_dim "
            r"\(16\), got 3",
        ),
    ],
)
def test_bad_model_settings_are_refused_naming_the_key(
    section: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        ExperimentConfig.from_dict({"model": section})
