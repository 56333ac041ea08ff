"""Experiment configuration: typed, validated sections of `params.yaml`.

`ExperimentConfig()` holds the same defaults as the committed `params.yaml`;
`ExperimentConfig.from_yaml(path)` reads a file, refusing repeated keys, unknown keys,
wrong types and out-of-range values in one line that names the key.

Each section is a frozen pydantic dataclass: its fields declare their types and ranges,
`dataclasses.replace` builds a validated copy, and building one directly with a bad
value raises pydantic's `ValidationError` (`from_dict` and `from_yaml` raise `ConfigError`).
The `model` sections live in `deepfm.model_config`, the value types all sections share in
`deepfm.config_values`.
"""

from __future__ import annotations

import dataclasses
import typing
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import (
    AfterValidator,
    BeforeValidator,
    Field,
    StrictFloat,
    StrictInt,
    StrictStr,
    TypeAdapter,
    ValidationError,
    model_validator,
)
from pydantic.dataclasses import dataclass
from pydantic_core import PydanticCustomError

from deepfm.config_values import (
    MAX_BATCH_SIZE,
    MAX_RATING,
    MIN_RATING,
    SECTION,
    Count,
    Distinct,
    EmbeddingDim,
    NonEmptyText,
    NonNegative,
    Seed,
    distinct,
)
from deepfm.data.fields import FIELD_DEFS
from deepfm.model_config import ModelConfig
from deepfm.params_file import ConfigError, describe_error, read_params_file
from deepfm.tune_config import (
    TuneConfig,
    check_key,
    endpoints,
    read_tuned_params,
    tuned_params_path,
)

Dataset = Literal["ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small"]
DATASETS: tuple[str, ...] = typing.get_args(Dataset)
# Each release's default model fields; `deepfm.data.fields.FIELD_DEFS` defines every field.
SEED_FIELDS = ("user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres")
CSV_RELEASE_FIELDS = ("user_id", "movie_id", "genres", "release_decade")


def _check_split_ratios(ratios: tuple[float, ...]) -> tuple[float, ...]:
    if len(ratios) != 3 or any(r <= 0 for r in ratios) or abs(sum(ratios) - 1) > 1e-9:
        raise ValueError(
            f"must be three positive numbers (train, val, test) summing to 1, got {list(ratios)}"
        )
    return ratios


SplitRatios = Annotated[tuple[StrictFloat, ...], AfterValidator(_check_split_ratios)]


@dataclass(frozen=True, config=SECTION)
class DataConfig:
    """Which MovieLens release, where its files live, the label and the split.

    Args:
        dataset: the MovieLens release.
        raw_dir: where `download` writes each release's canonical tables.
        processed_dir: where `prepare` writes each release's splits, vocabularies and schema.
        label_threshold: a rating at or above it is a positive (label 1).
        split: `random` rows, or `temporal` (train on the oldest ratings).
        split_ratios: train, validation and test shares, summing to 1.
        seed: the random split's seed.

    Example::

        DataConfig(dataset="ml-1m", split="temporal").processed_path  # data/processed/ml-1m
    """

    dataset: Dataset = "ml-100k"
    raw_dir: NonEmptyText = "data/raw"
    processed_dir: NonEmptyText = "data/processed"
    label_threshold: Annotated[StrictFloat, Field(ge=MIN_RATING, le=MAX_RATING)] = 4.0
    split: Literal["random", "temporal"] = "random"
    split_ratios: SplitRatios = (0.8, 0.1, 0.1)
    seed: Seed = 42

    @property
    def raw_path(self) -> Path:
        """`data/raw/<dataset>`: the canonical tables written by `download`."""
        return Path(self.raw_dir) / self.dataset

    @property
    def processed_path(self) -> Path:
        """`data/processed/<dataset>`: splits, vocabularies and schema written by `prepare`."""
        return Path(self.processed_dir) / self.dataset


@dataclass(frozen=True, config=SECTION)
class DimRule:
    """Fields whose vocabulary (OOV included) has at most `max_vocab` entries get `dim`.

    Args:
        max_vocab: the largest vocabulary (OOV included) the rule covers.
        dim: the embedding width it gives.

    Example::

        DimRule(max_vocab=10, dim=4)  # gender, age: 4-wide embeddings
    """

    max_vocab: Count
    dim: EmbeddingDim


def _sorted_by_max_vocab(rules: tuple[DimRule, ...]) -> tuple[DimRule, ...]:
    bounds = [rule.max_vocab for rule in rules]
    if bounds != sorted(bounds):
        raise ValueError(f"must be sorted by max_vocab, got {bounds}")
    return rules


DimRules = Annotated[tuple[DimRule, ...], AfterValidator(_sorted_by_max_vocab)]


def _defined_field(name: Any) -> str:
    """A name in `FIELD_DEFS` (read at validation time, so a field added there is accepted)."""
    if not isinstance(name, str) or name not in FIELD_DEFS:
        names = [repr(known) for known in FIELD_DEFS]
        expected = f"{', '.join(names[:-1])} or {names[-1]}" if len(names) > 1 else names[0]
        raise PydanticCustomError(
            "literal_error", "Input should be {expected}", {"expected": expected}
        )
    return name


FieldName = Annotated[str, BeforeValidator(_defined_field)]
FieldList = Annotated[tuple[FieldName, ...], Field(min_length=1), Distinct]


@dataclass(frozen=True, config=SECTION)
class FeatureConfig:
    """How raw columns become model fields, and how wide each field's embedding is.

    `fields` lists the model fields of each release; prepare uses the entry of
    `data.dataset`, so switching releases needs no other change.

    Args:
        fields: each release's model fields, in schema order (names from `FIELD_DEFS`).
        zip_prefix_len: leading zip-code characters kept by `zip_prefix`.
        genres_max_len: genres kept per movie (the sequence's max length).
        min_count: a value seen fewer times in training maps to OOV.
        fm_embed_dim: the common width of the field vectors the interactions read.
        embedding_dim: the width of a field no `small_vocab_dims` rule covers.
        small_vocab_dims: narrower widths for small vocabularies, sorted by `max_vocab`.

    Example::

        FeatureConfig(min_count=2).embedding_dim_for(3)  # 4 (gender: DimRule(10, 4))
    """

    fields: dict[Dataset, FieldList] = dataclasses.field(
        default_factory=lambda: {
            "ml-100k": SEED_FIELDS,
            "ml-1m": SEED_FIELDS,
            "ml-20m": CSV_RELEASE_FIELDS,
            "ml-25m": CSV_RELEASE_FIELDS,
            "ml-latest-small": CSV_RELEASE_FIELDS,
        }
    )
    zip_prefix_len: Count = 3
    genres_max_len: Count = 6
    min_count: Count = 1
    fm_embed_dim: EmbeddingDim = 16
    embedding_dim: EmbeddingDim = 16
    small_vocab_dims: DimRules = (DimRule(10, 4), DimRule(500, 8))

    def fields_for(self, dataset: str) -> tuple[str, ...]:
        """The model fields of `dataset`, in schema order."""
        if dataset not in self.fields:
            raise ConfigError(
                f"feature.fields has no entry for {dataset}; it has {list(self.fields)}"
            )
        return self.fields[dataset]

    def embedding_dim_for(self, vocabulary_size: int) -> int:
        """The embedding width for a field with this many entries (OOV included)."""
        for rule in self.small_vocab_dims:
            if vocabulary_size <= rule.max_vocab:
                return rule.dim
        return self.embedding_dim


def _registered_models(names: tuple[str, ...]) -> tuple[str, ...]:
    valid = list(ModelConfig.names())
    if not names:
        raise ValueError(f"is empty; choose from {valid}")
    for name in names:
        if name not in valid:
            raise ValueError(f"has unknown model {name!r}; choose from {valid}")
    return distinct(names)


@dataclass(frozen=True, config=SECTION)
class TrainConfig:
    """Which models to train, on what, and how; each model is trained once per seed.

    Args:
        models: the model names to train (each a section of `model`).
        device: `auto` (CUDA when present), `cpu` or `cuda`.
        nproc: data-parallel processes (DDP) per training run.
        batch_size: rows per optimizer step.
        max_epochs: the most epochs a run trains.
        lr: Adam's learning rate.
        weight_decay: Adam's weight decay on every parameter.
        embedding_l2: L2 penalty on the embedding tables (row-wise tables: on the rows a
            batch looks up).
        embedding_optimizer: how embedding tables are updated: `adam` (dense Adam, every
            row every step), `lazy_adam` (row-wise: only the rows a batch looked up) or `auto`
            (row-wise for tables of at least 100,000 values, e.g. 6,250 rows of 16); see
            `training/optimizers.py`.
        patience: epochs without a better validation AUC before stopping early.
        seeds: one training run per seed (and model).

    Example::

        TrainConfig(models=("fm", "deepfm"), seeds=(42,), max_epochs=5)
    """

    # The leaderboard's default models; every name in ModelConfig can be trained.
    models: Annotated[tuple[StrictStr, ...], AfterValidator(_registered_models)] = (
        "fm",
        "dnn",
        "deepfm",
        "xdeepfm",
        "attention_deepfm",
        "wide_deep",
        "dcnv2",
        "finalmlp",
        "autoint",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc: Count = 1
    batch_size: Annotated[StrictInt, Field(ge=1, le=MAX_BATCH_SIZE)] = 1024
    max_epochs: Count = 20
    lr: Annotated[StrictFloat, Field(gt=0)] = 1e-3
    weight_decay: NonNegative = 0.0
    embedding_l2: NonNegative = 0.0
    embedding_optimizer: Literal["auto", "adam", "lazy_adam"] = "auto"
    patience: Count = 3
    seeds: Annotated[tuple[Seed, ...], Field(min_length=1), Distinct] = (42, 43, 44)


@dataclass(frozen=True, config=SECTION)
class TrackingConfig:
    """Where MLflow records the runs (the store itself is `MLFLOW_TRACKING_URI`).

    Args:
        experiment_name: the MLflow experiment every run is recorded under.

    Example::

        TrackingConfig(experiment_name="deepfm-ml-1m")
    """

    experiment_name: NonEmptyText = "deepfm-movielens"


@dataclass(frozen=True, config=SECTION)
class ExperimentConfig:
    """The whole of `params.yaml`.

    Args:
        data: the `data` section (`DataConfig`).
        feature: the `feature` section (`FeatureConfig`).
        model: the `model` section, one subsection per model (`ModelConfig`).
        train: the `train` section (`TrainConfig`).
        tracking: the `tracking` section (`TrackingConfig`).
        tune: the `tune` section (`TuneConfig`): hyperparameter search.

    Example::

        config = ExperimentConfig.from_yaml("params.yaml")
        config.flat()["train.lr"]  # 0.001
    """

    data: DataConfig = dataclasses.field(default_factory=DataConfig)
    feature: FeatureConfig = dataclasses.field(default_factory=FeatureConfig)
    model: ModelConfig = dataclasses.field(default_factory=ModelConfig)
    train: TrainConfig = dataclasses.field(default_factory=TrainConfig)
    tracking: TrackingConfig = dataclasses.field(default_factory=TrackingConfig)
    tune: TuneConfig = dataclasses.field(default_factory=TuneConfig)

    @model_validator(mode="after")
    def _check_across_keys(self) -> ExperimentConfig:
        """Ranges that depend on two keys; the messages name both in full."""
        width, heads = self.feature.fm_embed_dim, self.model.attention_deepfm.attention_heads
        if width % heads:
            raise ValueError(
                f"model.attention_deepfm.attention_heads must divide feature.fm_embed_dim "
                f"({width}), got {heads}"
            )
        for name in ("autoint", "autoint_plus"):
            section = getattr(self.model, name)
            if section.attention_dim % section.attention_heads:
                raise ValueError(
                    f"model.{name}.attention_heads must divide model.{name}.attention_dim "
                    f"({section.attention_dim}), got {section.attention_heads}"
                )
        finalmlp = self.model.finalmlp
        widths = [finalmlp.stream1_hidden_units[-1], finalmlp.stream2_hidden_units[-1]]
        if any(width % finalmlp.num_heads for width in widths):
            raise ValueError(
                f"model.finalmlp.num_heads must divide both streams' last widths {widths}, "
                f"got {finalmlp.num_heads}"
            )
        xdeepfm = self.model.xdeepfm
        if xdeepfm.cin_split_half and any(size % 2 for size in xdeepfm.cin_layer_sizes[:-1]):
            raise ValueError(
                f"model.xdeepfm.cin_layer_sizes must be even but the last while "
                f"model.xdeepfm.cin_split_half is true, got {list(xdeepfm.cin_layer_sizes)}"
            )
        _check_tune_names(self.tune)
        return self

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate a params file; keys it leaves out keep their defaults."""
        values = read_params_file(Path(path))
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        """Validate nested plain values; the first problem becomes a one-line `ConfigError`."""
        config = _validate(values)
        config.check_tune_space()
        return config

    def with_overrides(self, overrides: Mapping[str, Any]) -> ExperimentConfig:
        """A validated copy with dotted keys replaced: `{"train.lr": 3e-3}`."""
        values = self.to_dict()
        for key, value in overrides.items():
            *sections, last = key.split(".")
            section = values
            for name in sections:
                section = section.get(name) if isinstance(section, dict) else None
            if not isinstance(section, dict) or last not in section:
                raise ConfigError(f"unknown key {key!r}")
            section[last] = value
        return _validate(values)

    def tuned(self, model: str) -> ExperimentConfig:
        """This config with `model`'s tuned settings (`reports/tuning/<model>.yaml`) applied."""
        path = tuned_params_path(model)
        if not path.is_file():
            raise ConfigError(
                f"{path} not found: tune.models lists {model!r}; run `deepfm tune --model "
                f"{model}` first, or remove it from tune.models"
            )
        overrides = read_tuned_params(path)
        try:
            for key in overrides:
                check_key(model, key)
            return self.with_overrides(overrides)
        except ValueError as err:  # ConfigError included
            raise ConfigError(f"{path}: {err}") from None

    def check_tune_space(self) -> None:
        """A `ConfigError` unless both ends of every range and every choice in
        `tune.space` make a valid configuration."""
        base = self.to_dict()
        del base["tune"]  # checked here; the other sections are what a trial changes
        plain = _validate(base)
        for model, space in self.tune.space.items():
            for key, distribution in space.items():
                for value in endpoints(distribution):
                    try:
                        plain.with_overrides({key: value})
                    except ConfigError as err:
                        raise ConfigError(
                            f"tune.space.{model}.{key}: {value!r} is not a valid value: {err}"
                        ) from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists, as they would appear in `params.yaml`."""
        return _ADAPTER.dump_python(self, mode="json")

    def flat(self) -> dict[str, Any]:
        """`{"train.lr": 0.001, ...}`: the flattened form MLflow logs as params."""
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, dict) and value:
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else key, inner)
            elif not isinstance(value, dict):
                flat[prefix] = value

        walk("", self.to_dict())
        return flat


_ADAPTER = TypeAdapter(ExperimentConfig)


def _validate(values: Mapping[str, Any]) -> ExperimentConfig:
    """Validate nested plain values; the first problem becomes a one-line `ConfigError`."""
    try:
        return _ADAPTER.validate_python(values)
    except ValidationError as err:
        raise ConfigError(describe_error(err.errors()[0], ExperimentConfig)) from None


def _check_tune_names(tune: TuneConfig) -> None:
    """A `ValueError` unless `tune` names real models, each listed one with a space."""
    valid = list(ModelConfig.names())
    for model in (*tune.models, *tune.space):
        if model not in valid:
            raise ValueError(f"tune names unknown model {model!r}; choose from {valid}")
    for model in tune.models:
        if not tune.space.get(model):
            raise ValueError(f"tune.models lists {model!r} but tune.space.{model} is empty")
    for model, space in tune.space.items():
        for key in space:
            check_key(model, key)
