"""Every model: built by the registry, trains every parameter, keeps OOV rows at zero."""

from __future__ import annotations

import inspect
import typing

import pytest
import torch
from torch import Tensor, nn

from deepfm.config import ExperimentConfig, FeatureConfig, ModelConfig
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.registry import MODELS, build_model

SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 13, 16),
        FieldSpec("movie_id", FeatureType.SPARSE, 17, 16),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("occupation", FeatureType.SPARSE, 9, 8),
        FieldSpec("genres", FeatureType.SEQUENCE, 7, 8, max_len=4),
    ]
)
BATCH_SIZE = 40
# Models without the first-order term own no first-order tables: one table per field.
TABLES_PER_FIELD = {"dnn": 1, "dcnv2": 1, "finalmlp": 1, "autoint": 1, "autoint_plus": 1}


def covering_batch(schema: Schema, generator: torch.Generator) -> dict[str, Tensor]:
    """Every index of every field occurs at least once (0 included), in shuffled rows."""
    batch = {}
    for name, spec in schema.fields.items():
        indices = torch.arange(BATCH_SIZE * spec.max_len) % spec.vocabulary_size
        indices = indices[torch.randperm(len(indices), generator=generator)]
        if spec.feature_type is FeatureType.SEQUENCE:
            indices = indices.view(BATCH_SIZE, spec.max_len)
            indices[0] = 0  # one all-padding row
        batch[name] = indices
    return batch


def build(name: str) -> nn.Module:
    torch.manual_seed(0)
    return build_model(name, SCHEMA, ExperimentConfig())


def embedding_tables(model: nn.Module) -> dict[str, nn.Parameter]:
    return {
        name: parameter
        for name, parameter in model.named_parameters()
        if name.startswith(
            ("embedding.second_order_embeddings.", "embedding.first_order_embeddings.")
        )
    }


def test_registry_names_match_the_config_sections() -> None:
    assert tuple(MODELS) == ModelConfig.names()


def test_unknown_model_name_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match=r"unknown model 'widedeep'.*'fm'.*'attention_deepfm'"):
        build_model("widedeep", SCHEMA, ExperimentConfig())


@pytest.mark.parametrize("name", ModelConfig.names())
def test_model_outputs_one_logit_per_row(name: str) -> None:
    model = build(name)
    assert isinstance(model, MODELS[name])
    logits = model(covering_batch(SCHEMA, torch.Generator().manual_seed(0)))
    assert logits.shape == (BATCH_SIZE,)
    assert logits.dtype == torch.float32


@pytest.mark.parametrize("name", ModelConfig.names())
def test_constructor_takes_its_config_section(name: str) -> None:
    """A model's knobs and their defaults live once, in its `model.<name>` section."""
    signature = inspect.signature(MODELS[name])
    assert list(signature.parameters) == ["schema", "config", "fm_embed_dim"]
    section_type = typing.get_type_hints(MODELS[name].__init__)["config"]
    assert isinstance(getattr(ModelConfig(), name), section_type)
    assert signature.parameters["fm_embed_dim"].default == FeatureConfig().fm_embed_dim


def test_registry_passes_the_config_section() -> None:
    config = ExperimentConfig.from_dict(
        {"feature": {"fm_embed_dim": 8}, "model": {"xdeepfm": {"cin_layer_sizes": [10, 6]}}}
    )
    model = build_model("xdeepfm", SCHEMA, config)
    assert model.embedding.projections["user_id"].out_features == 8
    assert [layer.out_features for layer in model.cin.layers] == [10, 6]


@pytest.mark.parametrize("name", ModelConfig.names())
def test_gradients_reach_every_parameter_but_padding_rows(name: str) -> None:
    model = build(name)
    batch = covering_batch(SCHEMA, torch.Generator().manual_seed(1))
    labels = torch.randint(0, 2, (BATCH_SIZE,), generator=torch.Generator().manual_seed(2))
    nn.functional.binary_cross_entropy_with_logits(model(batch), labels.float()).backward()

    tables = embedding_tables(model)
    assert len(tables) == TABLES_PER_FIELD.get(name, 2) * len(SCHEMA.fields)
    for parameter_name, parameter in model.named_parameters():  # a model owns only what it uses
        assert parameter.grad is not None, parameter_name
        if parameter_name in tables:
            assert torch.count_nonzero(parameter.grad[0]) == 0, parameter_name
            assert torch.all(parameter.grad[1:].abs().sum(dim=1) > 0), parameter_name
        else:
            assert torch.count_nonzero(parameter.grad) > 0, parameter_name


@pytest.mark.parametrize("name", ModelConfig.names())
def test_oov_rows_stay_zero_while_training(name: str) -> None:
    model = build(name)
    optimizer = torch.optim.Adam(model.parameters(), lr=0.05)
    generator = torch.Generator().manual_seed(3)
    before = {key: value.clone() for key, value in embedding_tables(model).items()}
    for _ in range(3):
        batch = covering_batch(SCHEMA, generator)
        labels = torch.randint(0, 2, (BATCH_SIZE,), generator=generator).float()
        optimizer.zero_grad()
        nn.functional.binary_cross_entropy_with_logits(model(batch), labels).backward()
        optimizer.step()
    for table_name, table in embedding_tables(model).items():
        assert torch.count_nonzero(table[0]) == 0, table_name
        assert not torch.equal(table[1:], before[table_name][1:]), table_name
