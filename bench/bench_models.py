"""Training throughput of every model through the real training loop, on synthetic data.

Each model trains with `Trainer` (index-sliced batches from on-device column tensors,
fused Adam, bf16 autocast on CUDA) on random indices shaped like a schema: the seed's
ml-100k table, or ml-25m-like cardinalities (162,541 users, 59,047 movies). After a
short warm-up epoch, `--epochs` full epochs are timed; the median epoch gives samples/s.

    python bench/bench_models.py                                   # CPU, ml-100k shape
    python bench/bench_models.py --device cuda --schema ml-25m --rows 10000000 \
        --batch-sizes 1024 65536 --epochs 1                        # what bench/gpu_check.sh runs
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from dataclasses import replace

import torch

from deepfm.config import ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.registry import MODELS, build_model
from deepfm.training.trainer import Trainer

WIDE_CIN = "xdeepfm_cin_256_128"  # xDeepFM at DeepCTR-Torch's CIN sizes, split half
WARMUP_ROWS = 50 * 1024


def schema_like(name: str) -> Schema:
    """The seed's ml-100k table, or the same fields with ml-25m's id cardinalities."""
    users, movies = (944, 1679) if name == "ml-100k" else (162_542, 59_048)
    sparse = FeatureType.SPARSE
    return Schema.of(
        [
            FieldSpec("user_id", sparse, users, 16),
            FieldSpec("movie_id", sparse, movies, 16),
            FieldSpec("gender", sparse, 3, 4),
            FieldSpec("age", sparse, 8, 4),
            FieldSpec("occupation", sparse, 22, 8),
            FieldSpec("zip_prefix", sparse, 383, 8),
            FieldSpec("genres", FeatureType.SEQUENCE, 21, 8, max_len=6),
        ]
    )


def synthetic_dataset(schema: Schema, rows: int, seed: int = 0) -> CTRDataset:
    """Uniform random int32 indices and labels (speed does not depend on the values)."""
    generator = torch.Generator().manual_seed(seed)
    columns = {}
    for name, spec in schema.fields.items():
        shape = (rows, spec.max_len) if spec.feature_type is FeatureType.SEQUENCE else (rows,)
        columns[name] = torch.randint(
            0, spec.vocabulary_size, shape, generator=generator, dtype=torch.int32
        )
    labels = torch.randint(0, 2, (rows,), generator=generator).float()
    return CTRDataset(columns, labels)


def build(name: str, schema: Schema, config: ExperimentConfig) -> torch.nn.Module:
    if name == WIDE_CIN:
        wide = replace(config.model.xdeepfm, cin_layer_sizes=(256, 128), cin_split_half=True)
        config = replace(config, model=replace(config.model, xdeepfm=wide))
        name = "xdeepfm"
    return build_model(name, schema, config)


def epoch_rates(
    name: str,
    schema: Schema,
    data: tuple[CTRDataset, CTRDataset],
    config: ExperimentConfig,
    device: torch.device,
    epochs: int,
) -> list[float]:
    """Samples/s of each timed epoch of `Trainer`'s own training loop, after a warm-up."""
    dataset, warmup = data
    torch.manual_seed(0)
    trainer = Trainer(
        build(name, schema, config).to(device), config.train, device, config.train.seeds[0]
    )
    trainer._train_epoch(warmup.to(device), epoch=0)
    data = dataset.to(device)
    rates = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        trainer._train_epoch(data, epoch)  # returns a Python float: the device is synced
        rates.append(len(data) / (time.perf_counter() - start))
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--schema", choices=["ml-100k", "ml-25m"], default="ml-100k")
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[1024])
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=[*MODELS, WIDE_CIN])
    args = parser.parse_args()

    device = torch.device(args.device)
    schema = schema_like(args.schema)
    data = (
        synthetic_dataset(schema, args.rows),
        synthetic_dataset(schema, min(WARMUP_ROWS, args.rows), seed=1),
    )
    hardware = torch.cuda.get_device_name(device) if device.type == "cuda" else platform.machine()
    print(
        f"torch {torch.__version__}, {device} ({hardware}), {torch.get_num_threads()} threads, "
        f"schema {args.schema}, {args.rows:,} rows, median of {args.epochs} epoch(s)"
    )
    print("| model | batch | samples/s |\n|---|---|---|")
    for batch_size in args.batch_sizes:
        config = ExperimentConfig()
        config = replace(config, train=replace(config.train, batch_size=batch_size))
        for name in args.models:
            rates = epoch_rates(name, schema, data, config, device, args.epochs)
            print(f"| {name} | {batch_size:,} | {statistics.median(rates):,.0f} |", flush=True)


if __name__ == "__main__":
    main()
