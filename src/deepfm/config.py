"""Experiment configuration: typed, validated sections of `params.yaml`.

`ExperimentConfig()` holds the same defaults as the committed `params.yaml`;
`ExperimentConfig.from_yaml(path)` reads a file, rejecting unknown keys, wrong
types and out-of-range values with a message that names the key.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml

from deepfm.errors import UserError


class ConfigError(UserError, ValueError):
    """A params file or mapping that does not describe a valid experiment."""


Dataset = Literal["ml-100k", "ml-1m", "ml-20m", "ml-25m", "ml-latest-small"]
DATASETS: tuple[str, ...] = typing.get_args(Dataset)
# Model fields prepare can build: ids, user demographics (ml-100k and ml-1m only), the
# movie's genres (a sequence field) and the decade of the year in its title.
FIELDS = (
    "user_id",
    "movie_id",
    "gender",
    "age",
    "occupation",
    "zip_prefix",
    "genres",
    "release_decade",
)
SEED_FIELDS = ("user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres")
CSV_RELEASE_FIELDS = ("user_id", "movie_id", "genres", "release_decade")


@dataclass(frozen=True)
class DataConfig:
    """Which MovieLens release, where its files live, the label and the split."""

    dataset: Dataset = "ml-100k"
    raw_dir: str = "data/raw"
    processed_dir: str = "data/processed"
    label_threshold: float = 4.0
    split: Literal["random", "temporal"] = "random"
    split_ratios: tuple[float, float, float] = (0.8, 0.1, 0.1)
    seed: int = 42

    def __post_init__(self) -> None:
        if any(r <= 0 for r in self.split_ratios) or abs(sum(self.split_ratios) - 1) > 1e-9:
            raise ConfigError(
                f"data.split_ratios must be three positive numbers (train, val, test) "
                f"summing to 1, got {list(self.split_ratios)}"
            )

    @property
    def raw_path(self) -> Path:
        """`data/raw/<dataset>`: the canonical tables written by `download`."""
        return Path(self.raw_dir) / self.dataset

    @property
    def processed_path(self) -> Path:
        """`data/processed/<dataset>`: splits, vocabularies and schema written by `prepare`."""
        return Path(self.processed_dir) / self.dataset


@dataclass(frozen=True)
class DimRule:
    """Fields whose vocabulary (OOV included) has at most `max_vocab` entries get `dim`."""

    max_vocab: int
    dim: int


@dataclass(frozen=True)
class FeatureConfig:
    """How raw columns become model fields, and how wide each field's embedding is.

    `fields` lists the model fields of each release; prepare uses the entry of
    `data.dataset`, so switching releases needs no other change.
    """

    fields: dict[str, tuple[str, ...]] = field(
        default_factory=lambda: {
            "ml-100k": SEED_FIELDS,
            "ml-1m": SEED_FIELDS,
            "ml-20m": CSV_RELEASE_FIELDS,
            "ml-25m": CSV_RELEASE_FIELDS,
            "ml-latest-small": CSV_RELEASE_FIELDS,
        }
    )
    zip_prefix_len: int = 3
    genres_max_len: int = 6
    min_count: int = 1
    fm_embed_dim: int = 16
    embedding_dim: int = 16
    small_vocab_dims: tuple[DimRule, ...] = (DimRule(10, 4), DimRule(500, 8))

    def __post_init__(self) -> None:
        for dataset, names in self.fields.items():
            if dataset not in DATASETS:
                raise ConfigError(
                    f"feature.fields: unknown dataset {dataset!r}; choose from {list(DATASETS)}"
                )
            unknown = [name for name in names if name not in FIELDS]
            if unknown:
                raise ConfigError(
                    f"feature.fields.{dataset}: unknown field(s) {unknown}; "
                    f"choose from {list(FIELDS)}"
                )
            if not names or len(set(names)) != len(names):
                raise ConfigError(
                    f"feature.fields.{dataset} must name each field once, got {list(names)}"
                )
        for key in ("zip_prefix_len", "genres_max_len", "min_count", "fm_embed_dim"):
            if getattr(self, key) < 1:
                raise ConfigError(f"feature.{key} must be >= 1, got {getattr(self, key)}")
        bounds = [rule.max_vocab for rule in self.small_vocab_dims]
        if bounds != sorted(bounds):
            raise ConfigError(f"feature.small_vocab_dims must be sorted by max_vocab, got {bounds}")

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


@dataclass(frozen=True)
class FMConfig:
    """Factorization machine: bias + first order + pairwise interactions; no extra knobs."""


@dataclass(frozen=True)
class DNNConfig:
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class DeepFMConfig:
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class XDeepFMConfig:
    cin_layer_sizes: tuple[int, ...] = (16, 16)
    cin_split_half: bool = True
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class AttentionDeepFMConfig:
    attention_layers: int = 3
    attention_heads: int = 2
    attention_residual: bool = True
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class WideDeepConfig:
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class DCNv2Config:
    """`low_rank: null` is full-rank DCN-V2; a rank r gives DCN-Mix with `num_experts` experts."""

    cross_layers: int = 3
    low_rank: int | None = None
    num_experts: int = 4
    structure: Literal["stacked", "parallel"] = "parallel"
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0

    def __post_init__(self) -> None:
        for key in ("cross_layers", "low_rank", "num_experts"):
            value = getattr(self, key)
            if value is not None and value < 1:
                raise ConfigError(f"model.dcnv2.{key} must be >= 1, got {value}")


@dataclass(frozen=True)
class FinalMLPConfig:
    stream1_hidden_units: tuple[int, ...] = (256, 128)
    stream2_hidden_units: tuple[int, ...] = (256, 128)
    gate_hidden_units: tuple[int, ...] = (64,)
    num_heads: int = 8
    dropout: float = 0.0

    def __post_init__(self) -> None:
        if not self.stream1_hidden_units or not self.stream2_hidden_units:
            raise ConfigError("model.finalmlp: each stream needs at least one hidden width")
        widths = (self.stream1_hidden_units[-1], self.stream2_hidden_units[-1])
        if self.num_heads < 1 or any(width % self.num_heads for width in widths):
            raise ConfigError(
                f"model.finalmlp.num_heads must be >= 1 and divide both streams' last widths "
                f"{list(widths)}, got {self.num_heads}"
            )


@dataclass(frozen=True)
class AutoIntConfig:
    section: ClassVar[str] = "autoint"
    attention_layers: int = 3
    attention_heads: int = 2
    attention_dim: int = 16
    attention_residual: bool = True

    def __post_init__(self) -> None:
        layers, heads, dim = self.attention_layers, self.attention_heads, self.attention_dim
        if layers < 1 or heads < 1 or dim % heads:
            raise ConfigError(
                f"model.{self.section} needs attention_layers >= 1 and attention_heads >= 1 "
                f"dividing attention_dim; got attention_layers={layers}, "
                f"attention_heads={heads}, attention_dim={dim}"
            )


@dataclass(frozen=True)
class AutoIntPlusConfig(AutoIntConfig):
    """AutoInt's section plus the MLP's."""

    section: ClassVar[str] = "autoint_plus"
    hidden_units: tuple[int, ...] = (256, 128)
    dropout: float = 0.0


@dataclass(frozen=True)
class ModelConfig:
    """One section per model; its field names are the model names `train.models` accepts."""

    fm: FMConfig = field(default_factory=FMConfig)
    dnn: DNNConfig = field(default_factory=DNNConfig)
    deepfm: DeepFMConfig = field(default_factory=DeepFMConfig)
    xdeepfm: XDeepFMConfig = field(default_factory=XDeepFMConfig)
    attention_deepfm: AttentionDeepFMConfig = field(default_factory=AttentionDeepFMConfig)
    wide_deep: WideDeepConfig = field(default_factory=WideDeepConfig)
    dcnv2: DCNv2Config = field(default_factory=DCNv2Config)
    finalmlp: FinalMLPConfig = field(default_factory=FinalMLPConfig)
    autoint: AutoIntConfig = field(default_factory=AutoIntConfig)
    autoint_plus: AutoIntPlusConfig = field(default_factory=AutoIntPlusConfig)

    @classmethod
    def names(cls) -> tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))


@dataclass(frozen=True)
class TrainConfig:
    models: tuple[str, ...] = ("fm", "dnn", "deepfm", "xdeepfm", "attention_deepfm")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    nproc: int = 1
    batch_size: int = 1024
    max_epochs: int = 20
    lr: float = 1e-3
    weight_decay: float = 0.0
    embedding_l2: float = 0.0
    patience: int = 3
    seed: int = 42

    def __post_init__(self) -> None:
        if not self.models:
            raise ConfigError(f"train.models is empty; choose from {list(ModelConfig.names())}")
        for name in self.models:
            if name not in ModelConfig.names():
                raise ConfigError(
                    f"train.models: unknown model {name!r}; choose from {list(ModelConfig.names())}"
                )
        if self.lr <= 0:
            raise ConfigError(f"train.lr must be > 0, got {self.lr}")
        for key in ("nproc", "batch_size", "max_epochs", "patience"):
            if getattr(self, key) < 1:
                raise ConfigError(f"train.{key} must be >= 1, got {getattr(self, key)}")
        for key in ("weight_decay", "embedding_l2"):
            if getattr(self, key) < 0:
                raise ConfigError(f"train.{key} must be >= 0, got {getattr(self, key)}")


@dataclass(frozen=True)
class TrackingConfig:
    experiment_name: str = "deepfm-movielens"


@dataclass(frozen=True)
class ExperimentConfig:
    """The whole of `params.yaml`."""

    data: DataConfig = field(default_factory=DataConfig)
    feature: FeatureConfig = field(default_factory=FeatureConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)

    @classmethod
    def from_yaml(cls, path: str | Path) -> ExperimentConfig:
        """Read and validate a params file; keys it leaves out keep their defaults."""
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"params file not found: {path}")
        try:
            values = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML: {err}") from err
        try:
            return cls.from_dict(values)
        except ConfigError as err:
            raise ConfigError(f"{path}: {err}") from None

    @classmethod
    def from_dict(cls, values: Mapping[str, Any]) -> ExperimentConfig:
        return _build(cls, values, "")

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists, as they would appear in `params.yaml`."""
        return _plain(self)

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


def _plain(value: Any) -> Any:
    if dataclasses.is_dataclass(value):
        return {f.name: _plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    if isinstance(value, dict):
        return {key: _plain(inner) for key, inner in value.items()}
    return value


def _build(cls: type, values: Any, where: str) -> Any:
    """Build dataclass `cls` from a mapping, checking every key and type."""
    label = where or "params"
    if not isinstance(values, Mapping):
        raise ConfigError(f"{label}: expected a mapping, got {type(values).__name__}")
    names = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in names:
            valid = ", ".join(names) if names else "(none)"
            raise ConfigError(f"unknown key {_join(where, str(key))!r}; valid keys here: {valid}")
    hints = typing.get_type_hints(cls)
    kwargs = {key: _coerce(hints[key], value, _join(where, key)) for key, value in values.items()}
    try:
        return cls(**kwargs)
    except TypeError as err:
        raise ConfigError(f"{label}: {err}") from None


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _coerce(hint: Any, value: Any, key: str) -> Any:
    """Check `value` against the type hint `hint`; return it in the dataclass's form."""
    origin = typing.get_origin(hint)
    args = typing.get_args(hint)
    if dataclasses.is_dataclass(hint):
        return _build(hint, value, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}: {value!r} is not allowed; choose from {list(args)}")
        return value
    if origin in (types.UnionType, typing.Union):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(inner, value, key)
    if origin is dict:
        if not isinstance(value, Mapping):
            raise ConfigError(f"{key}: expected a mapping, got {value!r}")
        key_hint, value_hint = args
        return {
            _coerce(key_hint, name, key): _coerce(value_hint, inner, _join(key, str(name)))
            for name, inner in value.items()
        }
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise ConfigError(f"{key}: expected a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value))
        if len(value) != len(args):
            raise ConfigError(f"{key}: expected a list of {len(args)} values, got {value!r}")
        return tuple(
            _coerce(a, v, f"{key}[{i}]") for i, (a, v) in enumerate(zip(args, value, strict=True))
        )
    if hint is float:
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}: expected a number, got {value!r}")
        return float(value)
    if hint is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}: expected an integer, got {value!r}")
        return value
    if hint in (bool, str):
        if not isinstance(value, hint):
            raise ConfigError(f"{key}: expected {hint.__name__}, got {value!r}")
        return value
    raise TypeError(f"config type {hint!r} of {key} is not supported")
