"""Train our models and DeepCTR-Torch's side by side on the same prepared Parquet, in one run.

Both sides read the index columns that `dvc repro prepare` wrote
(`<processed_dir>/<dataset>/{train,val,test}.parquet` and `schema.json`): the same rows, the same
random 80/10/10 split, the same indices. DeepCTR-Torch gets one `SparseFeat` per sparse field and
a `VarLenSparseFeat` (mean, padding 0 masked out) for each sequence field, all 16 wide. Both use
the MLP widths, cross layers, attention layers and heads, batch size and Adam learning rate of
`params.yaml`.

Pairs (`--pairs`; the default is the first three, which the issue-3 and issue-13 runs measured):

- `deepfm`: ours `deepfm` against `DeepFM`.
- `autoint`: ours `attention_deepfm` (DeepFM plus attention) against `AutoInt` with its DNN.
- `xdeepfm`: ours `xdeepfm` at CIN (256, 128) split half and at params.yaml's CIN against
  `xDeepFM` at (256, 128) split half.
- `wide_deep`: `wide_deep` against `WDL`: bias, first order, MLP over the flat embeddings.
- `dcnv2`: `dcnv2` full rank (`low_rank` None; params.yaml's cross layers, structure and MLP)
  against `DCN(cross_parameterization="matrix")`: both cross layers are
  `x_0 * (W x_l + b) + x_l`.
- `dcnmix`: `dcnv2` with `low_rank` 32 (`DCNMix`'s default; params.yaml's is null) and
  params.yaml's `num_experts` (4, also `DCNMix`'s default) against `DCNMix` at the same r and K.
- `autoint_paper`: `autoint` (attention only) against `AutoInt(dnn_hidden_units=())`.
- `autoint_plus`: `autoint_plus` against `AutoInt` with the MLP.

Every DeepCTR-Torch model adds a first-order term (`BaseModel.linear_model`). It gets the
feature columns for it only where our model has one (`CTRModel.linear`: deepfm, autoint,
xdeepfm, wide_deep), otherwise `[]`, which makes the term zeros: DCN-V2 and AutoInt have none
in their papers nor in ours. What still differs, by the library's design rather than the
protocol (the layers' formulas were checked equal with copied weights where noted):

- Widths: ours embeds each field at its schema.json width (ml-100k: 16, 16, 4, 4, 8, 8, 8, so
  64 flat), theirs every field at 16 (112 flat). Our MLPs and cross networks read 64 inputs,
  theirs 112 (a full-rank cross weight is 64x64 against 112x112); our attention reads the
  narrower fields through a bias-free projection to `fm_embed_dim` (16).
- Initialisation: DeepCTR-Torch draws embeddings and DNN weights from N(0, 1e-4), cross weights
  Xavier-normal, attention weights N(0, 0.05); ours embeddings N(0, 0.01), layers torch's default.
- L2: DeepCTR-Torch's defaults (1e-5 on the embeddings and the linear part; in DCN and DCNMix
  `l2_reg_linear` is its output layer, and `l2_reg_cross` 1e-5 on the cross weights) unless
  `--deepctr-l2` sets them all; ours none (params.yaml's `embedding_l2`, `weight_decay`).
- A sparse field's index 0 (OOV): a zero row without gradient in ours, a trained row in theirs.
- DCN, DCNMix: only the parallel structure (cross network and DNN side by side, one bias-free
  linear layer over both plus a bias). params.yaml's `structure: parallel` is the same; with
  `stacked` the labels show that the structures differ.
- DCNMix: its gates (one bias-free linear score per expert, softmax over experts) are shared by
  all cross layers; ours has gates per layer (`G(x_l)` of each layer). The experts are the same
  (`x_0 * (U tanh(C tanh(V^T x_l)) + b)`; one layer with copied weights gives the same output).
- AutoInt: DeepCTR-Torch's `InteractingLayer` does not scale the scores (`scaling=False`, which
  `AutoInt` keeps); ours scales by 1/sqrt(head width). Its residual is a learned projection
  `W_Res` (16x16); ours is the identity when the widths are equal (16 to 16 here). With scaling
  on and `W_Res` the identity, one layer with copied weights gives our output. Its attention
  width is the embedding width (16); ours `attention_dim` (16 in params.yaml).

Speed (the default): for each pair, `--rounds` rounds; in each round every model of the pair
trains one epoch on the training split, in an order that reverses from round to round. Each side
runs in its own process (ours sets process-wide allocator thresholds when it trains, see
`deepfm/training/allocator.py`; DeepCTR-Torch keeps the defaults a user of it gets), one
process at a time, so the two never compete for the cores. Ours is
timed around `Trainer._train_epoch` (the loop `Trainer.fit` runs), DeepCTR-Torch's around
`model.fit(x, y, batch_size, epochs=1, verbose=0)` (its per-row DataLoader included); neither
includes validation. The CPU's speed drifts from minute to minute, so the number to read is the
median over rounds of each round's ratio ours / DeepCTR-Torch.

Quality (`--auc`): each model trains for each of `--seeds` until `--patience` epochs pass without
a better val AUC (at most `--max-epochs`), keeps its best epoch's weights and is scored on the
test split with the same AUC function; the tables hold the mean ± sample std over seeds and,
per pair, our test AUC minus theirs seed by seed.

Needs `pip install -r bench/requirements.txt` (DeepCTR-Torch, kept out of the main
requirements). From the repository root:

    python bench/compare_deepctr.py [--rounds 5] [--pairs deepfm autoint xdeepfm]
    python bench/compare_deepctr.py --auc [--seeds 42 43 44] [--pairs wide_deep dcnv2 ...]
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import inspect
import io
import multiprocessing
import os
import platform
import shlex
import statistics
import sys
import time
import types
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from deepfm.config import ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import FeatureType, Schema
from deepfm.metrics import roc_auc
from deepfm.models.registry import MODELS, build_model
from deepfm.predict import dataset_logits
from deepfm.training.trainer import Trainer

DEEPCTR_EMBEDDING_DIM = 16
WIDE_CIN = (256, 128)  # the CIN that DeepCTR-Torch's xDeepFM is compared at (split half)
DCNMIX_LOW_RANK = 32  # DeepCTR-Torch's DCNMix default; params.yaml's dcnv2.low_rank is null
DEEPCTR_L2_ARGUMENTS = ("l2_reg_embedding", "l2_reg_linear", "l2_reg_cross")  # --deepctr-l2
DEFAULT_PAIRS = ("deepfm", "autoint", "xdeepfm")  # the pairs of issues 3 and 13
WARMUP_ROWS = 8 * 1024  # a short untimed epoch per model before the first round
PREDICT_BATCH_SIZE = 4096
PEAK_MATMUL_SIZE = 2048
PEAK_MATMUL_REPS = 5
TRAIN_TO_FORWARD_FLOPS = 3  # forward + backward ~ 3 x forward


def import_deepctr() -> types.ModuleType:
    """Import `deepctr_torch` without its import-time version check.

    `deepctr_torch/__init__.py` calls `utils.check_version`, which starts a non-daemon thread
    that fetches the package's release list over the network (hence its undeclared `requests`
    dependency). A benchmark should make no network calls, so a stand-in `deepctr_torch.utils`
    (the module holds nothing else) is registered first.
    """
    stub = types.ModuleType("deepctr_torch.utils")
    stub.check_version = lambda version: None  # type: ignore[attr-defined]
    sys.modules.setdefault("deepctr_torch.utils", stub)
    try:
        import deepctr_torch
    except ImportError as err:
        sys.exit(f"{err}: run `pip install -r bench/requirements.txt` first")
    return deepctr_torch


# --------------------------------------------------------------------------- data


@dataclass(frozen=True)
class Split:
    """One prepared split in both libraries' input forms."""

    ours: CTRDataset
    theirs_x: dict[str, np.ndarray]  # field name -> (N,) or (N, max_len) int32
    theirs_y: np.ndarray  # (N,) float32

    def __len__(self) -> int:
        return len(self.ours)

    def head(self, rows: int) -> Split:
        columns = {name: column[:rows] for name, column in self.ours.columns.items()}
        return Split(
            CTRDataset(columns, self.ours.labels[:rows]),
            {name: values[:rows] for name, values in self.theirs_x.items()},
            self.theirs_y[:rows],
        )


def load_split(path: Path, schema: Schema, device: torch.device) -> Split:
    dataset = CTRDataset.from_parquet(path, schema)
    theirs_x = {name: column.numpy() for name, column in dataset.columns.items()}
    return Split(dataset.to(device), theirs_x, dataset.labels.numpy())


# --------------------------------------------------------------------------- models


@dataclass(frozen=True)
class OurVariant:
    label: str
    name: str  # registry name
    overrides: dict[str, Any]  # replaced fields of the model's params section


@dataclass(frozen=True)
class Pair:
    """Our model(s) and the DeepCTR-Torch model they are compared with.

    `theirs` names a class of `deepctr_torch.models`; `their_arguments` are its keyword
    arguments beyond the feature columns, seed, device, task and L2 terms. It gets a linear
    (first-order) part exactly when our first variant's model class has one (`linear`).
    """

    key: str
    theirs_label: str
    ours: tuple[OurVariant, ...]
    theirs: str
    their_arguments: dict[str, Any]
    cin: tuple[tuple[int, ...], bool] | None = None  # DeepCTR-Torch's CIN, for the FLOP notes


def our_section(variant: OurVariant, config: ExperimentConfig) -> Any:
    """The `model.<name>` section `variant` is built from: params.yaml's, with its overrides."""
    return dataclasses.replace(getattr(config.model, variant.name), **variant.overrides)


def mlp_arguments(section: Any) -> dict[str, Any]:
    """DeepCTR-Torch's DNN arguments for a section's MLP; no DNN for a section without one."""
    return {
        "dnn_hidden_units": tuple(getattr(section, "hidden_units", ())),
        "dnn_dropout": getattr(section, "dropout", 0.0),
    }


def attention_arguments(section: Any) -> dict[str, Any]:
    """DeepCTR-Torch's AutoInt arguments for a section's attention layers."""
    return {
        "att_layer_num": section.attention_layers,
        "att_head_num": section.attention_heads,
        "att_res": section.attention_residual,
    }


def make_pairs(config: ExperimentConfig) -> dict[str, Pair]:
    xdeepfm = config.model.xdeepfm
    attention = config.model.attention_deepfm
    default_cin = tuple(xdeepfm.cin_layer_sizes)
    return {
        "deepfm": Pair(
            "deepfm",
            "DeepFM",
            (OurVariant("deepfm", "deepfm", {}),),
            "DeepFM",
            mlp_arguments(config.model.deepfm),
        ),
        "autoint": Pair(
            "autoint",
            f"AutoInt ({attention.attention_layers} layers, {attention.attention_heads} heads)",
            (OurVariant("attention_deepfm", "attention_deepfm", {}),),
            "AutoInt",
            {**attention_arguments(attention), **mlp_arguments(attention)},
        ),
        "xdeepfm": Pair(
            "xdeepfm",
            f"xDeepFM, CIN {WIDE_CIN} split half",
            (
                OurVariant(
                    f"xdeepfm, CIN {WIDE_CIN}",
                    "xdeepfm",
                    {"cin_layer_sizes": WIDE_CIN, "cin_split_half": True},
                ),
                OurVariant(f"xdeepfm, CIN {default_cin} (params.yaml)", "xdeepfm", {}),
            ),
            "xDeepFM",
            {**mlp_arguments(xdeepfm), "cin_layer_size": WIDE_CIN, "cin_split_half": True},
            cin=(WIDE_CIN, True),
        ),
        **new_model_pairs(config),
    }


def new_model_pairs(config: ExperimentConfig) -> dict[str, Pair]:
    """The pairs of issue 14: Wide & Deep, DCN-V2, DCN-Mix, AutoInt and AutoInt+."""
    wide_deep = OurVariant("wide_deep", "wide_deep", {})
    return {
        "wide_deep": Pair(
            "wide_deep", "WDL", (wide_deep,), "WDL", mlp_arguments(our_section(wide_deep, config))
        ),
        "dcnv2": cross_pair("dcnv2", None, config),
        "dcnmix": cross_pair("dcnmix", DCNMIX_LOW_RANK, config),
        "autoint_paper": attention_pair("autoint_paper", "autoint", config),
        "autoint_plus": attention_pair("autoint_plus", "autoint_plus", config),
    }


def cross_pair(key: str, low_rank: int | None, config: ExperimentConfig) -> Pair:
    """Our `dcnv2` (full-rank, or DCN-Mix at `low_rank`) against `DCN` matrix or `DCNMix`."""
    variant = OurVariant("", "dcnv2", {"low_rank": low_rank})
    section = our_section(variant, config)
    shape = f"{section.cross_layers} cross layers"
    arguments = {**mlp_arguments(section), "cross_num": section.cross_layers}
    if low_rank is None:
        ours, theirs = f"dcnv2, {shape}", f"DCN matrix, {shape}"
        arguments["cross_parameterization"] = "matrix"
    else:
        mix = f"r={low_rank}, {section.num_experts} experts, {shape}"
        ours, theirs = f"dcnv2 DCN-Mix {mix}", f"DCNMix {mix}"
        arguments |= {"low_rank": low_rank, "num_experts": section.num_experts}
    ours_variant = dataclasses.replace(variant, label=f"{ours}, {section.structure}")
    model = "DCN" if low_rank is None else "DCNMix"
    return Pair(key, f"{theirs}, parallel", (ours_variant,), model, arguments)


def attention_pair(key: str, name: str, config: ExperimentConfig) -> Pair:
    """Our `autoint` or `autoint_plus` against DeepCTR-Torch's `AutoInt` with the same DNN."""
    section = getattr(config.model, name)
    heads = f"{section.attention_layers} layers, {section.attention_heads} heads"
    arguments = {**attention_arguments(section), **mlp_arguments(section)}
    deep = arguments["dnn_hidden_units"]
    return Pair(
        key,
        f"AutoInt ({heads}), {f'DNN {deep}' if deep else 'no DNN'}",
        (OurVariant(f"{name} ({heads}, width {section.attention_dim})", name, {}),),
        "AutoInt",
        arguments,
    )


def build_ours(
    variant: OurVariant, schema: Schema, config: ExperimentConfig, seed: int, device: torch.device
) -> nn.Module:
    config = dataclasses.replace(
        config,
        model=dataclasses.replace(config.model, **{variant.name: our_section(variant, config)}),
    )
    torch.manual_seed(seed)
    return build_model(variant.name, schema, config).to(device)


def deepctr_columns(schema: Schema) -> list[Any]:
    """DeepCTR-Torch feature columns for the schema's fields, in schema order."""
    from deepctr_torch.inputs import SparseFeat, VarLenSparseFeat

    columns = []
    for spec in schema.fields.values():
        sparse = SparseFeat(spec.name, spec.vocabulary_size, embedding_dim=DEEPCTR_EMBEDDING_DIM)
        if spec.feature_type is FeatureType.SEQUENCE:
            # No length_name: DeepCTR-Torch then pools with the mask `index != 0`, so the
            # padding is left out of the mean as in ours.
            columns.append(VarLenSparseFeat(sparse, maxlen=spec.max_len, combiner="mean"))
        else:
            columns.append(sparse)
    return columns


def build_theirs(
    pair: Pair,
    columns: list[Any],
    config: ExperimentConfig,
    seed: int,
    device: str,
    l2: float | None,
) -> nn.Module:
    """DeepCTR-Torch's model of `pair`, compiled with Adam at our learning rate.

    Its L2 terms keep the library's defaults unless `l2` is given; then every one of
    `DEEPCTR_L2_ARGUMENTS` the class takes is set to `l2`.
    """
    from deepctr_torch import models

    model_class = getattr(models, pair.theirs)
    accepted = inspect.signature(model_class).parameters
    regularization = {} if l2 is None else {k: l2 for k in DEEPCTR_L2_ARGUMENTS if k in accepted}
    linear_columns = columns if MODELS[pair.ours[0].name].linear else []
    model = model_class(
        linear_columns,
        columns,
        **pair.their_arguments,
        **regularization,
        seed=seed,
        device=device,
        task="binary",
    )
    model.compile(torch.optim.Adam(model.parameters(), lr=config.train.lr), "binary_crossentropy")
    return model


# --------------------------------------------------------------------------- one epoch each


class OurRunner:
    def __init__(self, label: str, model: nn.Module, trainer: Trainer) -> None:
        self.label, self.model, self.trainer = label, model, trainer
        self.epoch = 0

    def train_epoch(self, split: Split) -> float:
        """One epoch of `Trainer`'s own loop; returns its seconds."""
        self.epoch += 1
        started = time.perf_counter()
        self.trainer._train_epoch(split.ours, self.epoch)  # returns a float: synchronised
        return time.perf_counter() - started

    def train_to_best(self, splits: dict[str, Split]) -> dict[str, float]:
        """`Trainer.fit` (early stopping on val AUC, best epoch's weights kept); test AUC."""
        result = self.trainer.fit(
            splits["train"].ours,
            splits["val"].ours,
            on_epoch=lambda r: log(f"  {self.label}: epoch {r.epoch} val AUC {r.val_auc:.4f}"),
        )
        test = splits["test"].ours
        return {
            "test_auc": roc_auc(test.labels, dataset_logits(self.model, test, self.trainer.device)),
            "best_epoch": result.best_epoch,
            "epochs": result.epochs_run,
        }


class TheirRunner:
    def __init__(self, label: str, model: nn.Module, batch_size: int) -> None:
        self.label, self.model, self.batch_size = label, model, batch_size

    def train_epoch(self, split: Split) -> float:
        """One `model.fit(..., epochs=1)`; returns its seconds. fit prints; that is dropped."""
        with contextlib.redirect_stdout(io.StringIO()):
            started = time.perf_counter()
            self.model.fit(
                split.theirs_x, split.theirs_y, batch_size=self.batch_size, epochs=1, verbose=0
            )
            if str(self.model.device).startswith("cuda"):
                torch.cuda.synchronize()
            return time.perf_counter() - started

    def scores(self, split: Split) -> torch.Tensor:
        return torch.from_numpy(self.model.predict(split.theirs_x, PREDICT_BATCH_SIZE)).flatten()

    def train_to_best(
        self, splits: dict[str, Split], max_epochs: int, patience: int
    ) -> dict[str, float]:
        """The rule `Trainer.fit` follows, around one `fit(epochs=1)` per epoch; test AUC."""
        best_auc, best_epoch, without_gain, epochs = -float("inf"), 0, 0, 0
        best_state = None
        for epoch in range(1, max_epochs + 1):
            if without_gain >= patience:
                break
            self.train_epoch(splits["train"])
            epochs = epoch
            val_auc = roc_auc(splits["val"].ours.labels.cpu(), self.scores(splits["val"]))
            log(f"  {self.label}: epoch {epoch} val AUC {val_auc:.4f}")
            if val_auc > best_auc:
                best_auc, best_epoch, without_gain = val_auc, epoch, 0
                best_state = {k: v.detach().clone() for k, v in self.model.state_dict().items()}
            else:
                without_gain += 1
        assert best_state is not None
        self.model.load_state_dict(best_state)
        test = splits["test"]
        return {
            "test_auc": roc_auc(test.ours.labels.cpu(), self.scores(test)),
            "best_epoch": best_epoch,
            "epochs": epochs,
        }


Runner = OurRunner | TheirRunner


def make_runners(
    pair: Pair,
    schema: Schema,
    columns: list[Any],
    config: ExperimentConfig,
    seed: int,
    args: argparse.Namespace,
) -> tuple[list[OurRunner], TheirRunner]:
    device = torch.device(args.device)
    train_config = dataclasses.replace(
        config.train,
        device=args.device,
        max_epochs=args.max_epochs,
        patience=args.patience,
    )
    ours = []
    for variant in pair.ours:
        model = build_ours(variant, schema, config, seed, device)
        ours.append(OurRunner(variant.label, model, Trainer(model, train_config, device, seed)))
    their_device = "cuda:0" if device.type == "cuda" else "cpu"
    theirs = build_theirs(pair, columns, config, seed, their_device, args.deepctr_l2)
    return ours, TheirRunner(pair.theirs_label, theirs, config.train.batch_size)


class SideProcess:
    """One side of a pair (`ours` or `theirs`) in a process of its own, trained on request.

    `call("warmup")` trains each of its models one short untimed epoch; `call("epoch")` one
    timed epoch over the training split, returning seconds per model label.
    """

    def __init__(self, argv: list[str], pair_key: str, side: str) -> None:
        context = multiprocessing.get_context("spawn")
        self.connection, child = context.Pipe()
        self.process = context.Process(target=_serve_side, args=(child, argv, pair_key, side))
        self.process.start()
        self.labels: list[str] = self.connection.recv()

    def call(self, request: str) -> dict[str, float]:
        self.connection.send(request)
        return self.connection.recv()

    def close(self) -> None:
        self.connection.send("stop")
        self.process.join()


def _serve_side(connection: Any, argv: list[str], pair_key: str, side: str) -> None:
    config, args, schema, splits, columns, all_pairs = setup(argv)
    ours, theirs = make_runners(
        all_pairs[pair_key], schema, columns, config, config.train.seeds[0], args
    )
    runners: list[Runner] = ours if side == "ours" else [theirs]
    connection.send([runner.label for runner in runners])
    train = splits["train"]
    for request in iter(connection.recv, "stop"):
        split = train.head(WARMUP_ROWS) if request == "warmup" else train
        connection.send({runner.label: runner.train_epoch(split) for runner in runners})


# --------------------------------------------------------------------------- FLOPs


def cin_forward_flops(
    num_fields: int, dim: int, layer_sizes: Sequence[int], split_half: bool
) -> tuple[int, int]:
    """Forward FLOPs per sample of a CIN (a multiply-add counts 2): (as written, ours).

    As written (the xDeepFM paper, DeepCTR-Torch): layer k forms all `F * H_{k-1}` outer
    products over the `D` positions, mixes them into `H_k` maps at every position (a 1x1
    convolution) and sum-pools its pooled maps over `D`. Ours sums the products over `D` first
    for the maps that are only pooled (`bmm` + a `(F*H_{k-1}) -> pooled` weight) and builds only
    the maps that are passed on (see `deepfm.models.layers.cin.CIN`).
    """
    written = ours = 0
    hidden, pooled_total = num_fields, 0
    for index, size in enumerate(layer_sizes):
        last = index == len(layer_sizes) - 1
        passed = 0 if last else size // 2 if split_half else size
        pooled = size - passed if split_half else size
        pairs = num_fields * hidden
        written += dim * pairs + 2 * dim * pairs * size + dim * pooled
        ours += 2 * dim * pairs + 2 * pairs * pooled
        if passed:
            ours += dim * pairs + 2 * dim * pairs * passed
        pooled_total += pooled
        hidden = passed
    return written + 2 * pooled_total, ours + 2 * pooled_total


def counted_forward_flops(runner: Runner, split: Split, rows: int = 1024) -> float:
    """Matmul-class FLOPs per sample of one forward pass, as torch's FlopCounterMode counts."""
    runner.model.eval()
    head = split.head(rows)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        if isinstance(runner, OurRunner):
            features, _ = head.ours.batch(torch.arange(rows, device=head.ours.labels.device))
            runner.model(features)
        else:
            x = [head.theirs_x[name] for name in runner.model.feature_index]
            x = np.concatenate([v.reshape(rows, -1) for v in x], axis=1)
            runner.model(torch.from_numpy(x).float().to(runner.model.device))
    return counter.get_total_flops() / rows


def matmul_peak_gflops() -> float:
    """Best float32 GFLOP/s of a square `torch.matmul` over a few reps, default threads."""
    size = PEAK_MATMUL_SIZE
    a, b = torch.randn(size, size), torch.randn(size, size)
    torch.matmul(a, b)  # warm-up
    best = float("inf")
    for _ in range(PEAK_MATMUL_REPS):
        started = time.perf_counter()
        torch.matmul(a, b)
        best = min(best, time.perf_counter() - started)
    return 2 * size**3 / best / 1e9


# --------------------------------------------------------------------------- modes


def log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def thousands(rate: float) -> str:
    return f"{rate / 1000:.1f}k"


def speed(
    pairs: list[Pair],
    schema: Schema,
    columns: list[Any],
    config: ExperimentConfig,
    splits: dict[str, Split],
    args: argparse.Namespace,
) -> list[str]:
    train = splits["train"]
    rows, notes = [], []
    peak = matmul_peak_gflops() if any(pair.cin for pair in pairs) else None
    for pair in pairs:
        sides = [SideProcess(args.argv, pair.key, side) for side in ("ours", "theirs")]
        for side in sides:
            side.call("warmup")
        labels = [label for side in sides for label in side.labels]
        rates: dict[str, list[float]] = {label: [] for label in labels}
        for round_index in range(args.rounds):
            for side in sides if round_index % 2 == 0 else sides[::-1]:
                for label, seconds in side.call("epoch").items():
                    rates[label].append(len(train) / seconds)
            log(
                f"{pair.key} round {round_index + 1}/{args.rounds}: "
                + ", ".join(f"{label} {thousands(r[-1])}/s" for label, r in rates.items())
            )
        for side in sides:
            side.close()
        ours, theirs = make_runners(pair, schema, columns, config, config.train.seeds[0], args)
        their_rates = rates[theirs.label]
        for runner in ours:
            our_rates = rates[runner.label]
            ratios = [o / t for o, t in zip(our_rates, their_rates, strict=True)]
            rows.append(
                f"| {runner.label} | {theirs.label} "
                f"| {', '.join(thousands(r) for r in our_rates)} "
                f"| {', '.join(thousands(r) for r in their_rates)} "
                f"| {', '.join(f'{r:.2f}' for r in ratios)} "
                f"| **{statistics.median(ratios):.2f}** |"
            )
        if pair.cin is not None and peak is not None:
            notes += flop_notes(pair, ours, theirs, rates, schema, config, train, peak)

    header = [
        f"Training samples/s per round ({args.rounds} round(s), one epoch of {len(train):,} rows "
        "per model per round, validation excluded); ratio = ours / DeepCTR-Torch in the same "
        "round.",
        "",
        "| Ours | DeepCTR-Torch | ours samples/s | DeepCTR-Torch samples/s | ratio per round "
        "| median ratio |",
        "|---|---|---|---|---|---|",
    ]
    return [*header, *rows, "", *notes]


def flop_notes(
    pair: Pair,  # one with a CIN
    ours: list[OurRunner],
    theirs: TheirRunner,
    rates: dict[str, list[float]],
    schema: Schema,
    config: ExperimentConfig,
    train: Split,
    peak: float,
) -> list[str]:
    notes = [
        f"xDeepFM compute (float32 matmul peak of this CPU: {peak:.0f} GFLOP/s, "
        f"{PEAK_MATMUL_SIZE}x{PEAK_MATMUL_SIZE} `torch.matmul`, best of {PEAK_MATMUL_REPS}; "
        f"training counted as {TRAIN_TO_FORWARD_FLOPS} x forward):",
        "",
    ]
    runners: list[Runner] = [*ours, theirs]
    for runner in runners:
        if isinstance(runner, OurRunner):
            cin = runner.model.cin
            sizes = [layer.out_features for layer in cin.layers]
            split_half = any(cin.first_pooled)
            _, cin_flops = cin_forward_flops(
                schema.num_fields, config.feature.fm_embed_dim, sizes, split_half
            )
        else:
            cin_flops, _ = cin_forward_flops(schema.num_fields, DEEPCTR_EMBEDDING_DIM, *pair.cin)
        model_flops = counted_forward_flops(runner, train)
        rate = statistics.median(rates[runner.label])
        achieved = rate * TRAIN_TO_FORWARD_FLOPS * model_flops / 1e9
        notes.append(
            f"- {runner.label} ({'ours' if isinstance(runner, OurRunner) else 'DeepCTR-Torch'}): "
            f"CIN forward ≈ {cin_flops / 1e6:.2f} MFLOP/sample; whole model forward "
            f"{model_flops / 1e6:.2f} MFLOP/sample (FlopCounterMode); at the median "
            f"{thousands(rate)} samples/s ≈ {achieved:.1f} GFLOP/s = {achieved / peak:.0%} "
            "of peak"
        )
    written, reduced = cin_forward_flops(schema.num_fields, DEEPCTR_EMBEDDING_DIM, *pair.cin)
    notes += [
        f"- the same CIN {pair.cin[0]} ({schema.num_fields} fields x {DEEPCTR_EMBEDDING_DIM}) "
        f"is {written / 1e6:.2f} MFLOP/sample as the paper writes it and "
        f"{reduced / 1e6:.2f} as ours computes it ({written / reduced:.1f}x fewer)",
        "",
    ]
    return notes


def quality(
    pairs: list[Pair],
    schema: Schema,
    columns: list[Any],
    config: ExperimentConfig,
    splits: dict[str, Split],
    args: argparse.Namespace,
) -> list[str]:
    results: dict[tuple[str, str], list[dict[str, float]]] = {}
    for seed in args.seeds:
        for pair in pairs:
            ours, theirs = make_runners(pair, schema, columns, config, seed, args)
            for runner in [*ours, theirs]:
                library = "ours" if isinstance(runner, OurRunner) else "DeepCTR-Torch"
                log(f"seed {seed}: {library} {runner.label}")
                started = time.perf_counter()
                if isinstance(runner, OurRunner):
                    run = runner.train_to_best(splits)
                else:
                    run = runner.train_to_best(splits, args.max_epochs, args.patience)
                run["seconds"] = time.perf_counter() - started
                log(f"  -> test AUC {run['test_auc']:.4f} ({run['seconds']:.0f} s)")
                results.setdefault((library, runner.label), []).append(run)
    return [*auc_table(results, args), "", *difference_table(pairs, results)]


def auc_table(
    results: dict[tuple[str, str], list[dict[str, float]]], args: argparse.Namespace
) -> list[str]:
    """Per model: mean ± sample std of test AUC over the seeds, and each seed's run."""
    lines = [
        f"Test AUC at the best val-AUC epoch (patience {args.patience}, at most "
        f"{args.max_epochs} epochs), mean ± sample std over seeds "
        f"{', '.join(map(str, args.seeds))}.",
        "",
        "| Library | Model | test AUC (mean ± std) | test AUC per seed | best epoch per seed "
        "| epochs run per seed | training s per seed |",
        "|---|---|---|---|---|---|---|",
    ]
    for (library, label), runs in results.items():
        aucs = [run["test_auc"] for run in runs]
        spread = statistics.stdev(aucs) if len(aucs) > 1 else 0.0
        lines.append(
            f"| {library} | {label} | **{statistics.fmean(aucs):.4f}** ± {spread:.4f} "
            f"| {', '.join(format(auc, '.4f') for auc in aucs)} "
            f"| {', '.join(str(run['best_epoch']) for run in runs)} "
            f"| {', '.join(str(run['epochs']) for run in runs)} "
            f"| {', '.join(format(run['seconds'], '.0f') for run in runs)} |"
        )
    return lines


def difference_table(
    pairs: list[Pair], results: dict[tuple[str, str], list[dict[str, float]]]
) -> list[str]:
    """Per pair, seed by seed: our test AUC minus DeepCTR-Torch's, and how to read it."""
    lines = [
        "Ours − DeepCTR-Torch, test AUC, seed by seed (the same seed on both sides); a "
        "difference whose sign changes across seeds is within seed noise.",
        "",
        "| Ours | DeepCTR-Torch | difference per seed | mean difference | reading |",
        "|---|---|---|---|---|",
    ]
    for pair in pairs:
        theirs = [run["test_auc"] for run in results[("DeepCTR-Torch", pair.theirs_label)]]
        for variant in pair.ours:
            ours = [run["test_auc"] for run in results[("ours", variant.label)]]
            differences = [o - t for o, t in zip(ours, theirs, strict=True)]
            lines.append(
                f"| {variant.label} | {pair.theirs_label} "
                f"| {', '.join(format(d, '+.4f') for d in differences)} "
                f"| **{statistics.fmean(differences):+.4f}** | {difference_reading(differences)} |"
            )
    return lines


def difference_reading(differences: list[float]) -> str:
    """How to read paired differences: within seed noise when their sign changes."""
    if len(differences) < 2:
        return "one seed: spread unknown"
    if min(differences) < 0 < max(differences):
        return "within seed noise (sign changes across seeds)"
    if not any(differences):
        return "equal in every seed"
    higher = "ours" if max(differences) > 0 else "DeepCTR-Torch"
    return f"{higher} higher{'' if all(differences) else ' or equal'} in every seed"


# --------------------------------------------------------------------------- main


def machine_facts() -> list[str]:
    cpu = platform.processor() or "unknown CPU"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.is_file():
        for line in cpuinfo.read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return [
        f"- command: `python {shlex.join(sys.argv)}`",
        f"- machine: {cpu}, nproc {usable} (of {os.cpu_count()}), Python "
        f"{platform.python_version()}, {platform.system()} {platform.release()}",
        f"- torch {torch.__version__}, {torch.get_num_threads()} intra-op threads; "
        f"deepctr-torch {metadata.version('deepctr-torch')}",
    ]


def protocol_facts(
    config: ExperimentConfig,
    schema: Schema,
    splits: dict[str, Split],
    pairs: list[Pair],
    args: argparse.Namespace,
) -> list[str]:
    widths = ", ".join(str(spec.embedding_dim) for spec in schema.fields.values())
    l2 = "library defaults" if args.deepctr_l2 is None else str(args.deepctr_l2)
    return [
        f"- data: {args.data_dir} ({', '.join(f'{k} {len(v):,}' for k, v in splits.items())} "
        f"rows), fields {', '.join(schema.fields)}",
        f"- both: batch {config.train.batch_size}, Adam lr {config.train.lr}, "
        f"MLP {tuple(config.model.deepfm.hidden_units)}, device {args.device}",
        f"- ours: field widths ({widths}) from schema.json, interactions at "
        f"{config.feature.fm_embed_dim}; weight decay {config.train.weight_decay}, embedding L2 "
        f"{config.train.embedding_l2}",
        f"- DeepCTR-Torch: every field {DEEPCTR_EMBEDDING_DIM} wide; L2 on embeddings and "
        f"linear part: {l2}; fit(verbose=0), no training metrics",
        "- DeepCTR-Torch gets a linear (first-order) part only where ours has one: "
        + ", ".join(
            f"{pair.key} {'yes' if MODELS[pair.ours[0].name].linear else 'no'}" for pair in pairs
        ),
    ]


def parse_args(argv: Sequence[str] | None, pairs: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument(
        "--data-dir", type=Path, help="prepared dataset (default: from --params data section)"
    )
    parser.add_argument(
        "--pairs",
        nargs="+",
        choices=pairs,
        default=list(DEFAULT_PAIRS),
        help=f"default: {' '.join(DEFAULT_PAIRS)} (what the recorded issue-3/13 commands ran)",
    )
    parser.add_argument("--rounds", type=int, default=5, help="speed rounds per pair")
    parser.add_argument("--auc", action="store_true", help="train to early stopping; test AUC")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42, 43, 44])
    parser.add_argument("--max-epochs", type=int, default=20)
    parser.add_argument("--patience", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--threads", type=int, help="torch.set_num_threads (default: torch's)")
    parser.add_argument(
        "--deepctr-l2",
        type=float,
        help="DeepCTR-Torch's l2_reg_embedding, l2_reg_linear and l2_reg_cross, where its model "
        "takes them (default: its own, 1e-5 each)",
    )
    return parser.parse_args(argv)


def setup(
    argv: Sequence[str] | None,
) -> tuple[
    ExperimentConfig, argparse.Namespace, Schema, dict[str, Split], list[Any], dict[str, Pair]
]:
    """Params, arguments, schema, the three splits and both libraries' feature columns."""
    import_deepctr()
    argv = list(sys.argv[1:] if argv is None else argv)
    preliminary = argparse.ArgumentParser(add_help=False)
    preliminary.add_argument("--params", type=Path, default=Path("params.yaml"))
    config = ExperimentConfig.from_yaml(preliminary.parse_known_args(argv)[0].params)
    all_pairs = make_pairs(config)
    args = parse_args(argv, list(all_pairs))
    args.argv = argv
    if args.threads:
        torch.set_num_threads(args.threads)
    args.data_dir = args.data_dir or config.data.processed_path
    schema = Schema.load(args.data_dir / "schema.json")
    device = torch.device(args.device)
    splits = {
        name: load_split(args.data_dir / f"{name}.parquet", schema, device)
        for name in ("train", "val", "test")
    }
    return config, args, schema, splits, deepctr_columns(schema), all_pairs


def main(argv: Sequence[str] | None = None) -> None:
    config, args, schema, splits, columns, all_pairs = setup(argv)
    pairs = [all_pairs[key] for key in args.pairs]

    mode: Callable[..., list[str]] = quality if args.auc else speed
    started = time.perf_counter()
    body = mode(pairs, schema, columns, config, splits, args)
    title = "Test AUC" if args.auc else "Training speed"
    print(f"### {title}: ours vs DeepCTR-Torch\n")
    print("\n".join([*machine_facts(), *protocol_facts(config, schema, splits, pairs, args)]))
    print(f"- wall time: {time.perf_counter() - started:.0f} s\n")
    print("\n".join(body).rstrip())


if __name__ == "__main__":
    main()
