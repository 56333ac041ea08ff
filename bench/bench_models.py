"""Training throughput of every model on random data with the seed's ml-100k schema.

A step is forward, BCEWithLogits, backward and a `torch.optim.Adam` step at one batch size,
with torch's default thread count. Each model warms up, then steps for `--seconds`; the rate
reported is batch size / median step time, which a neighbour's burst of CPU barely moves
(the mean-based rate is printed beside it). Run:

    python bench/bench_models.py [--batch-size 1024] [--seconds 3] [--models deepfm xdeepfm]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
from torch import Tensor, nn

from deepfm.config import ExperimentConfig
from deepfm.data.schema import FeatureType, FieldSpec, Schema
from deepfm.models.registry import MODELS, build_model
from deepfm.models.xdeepfm import XDeepFM

SEED_SCHEMA = Schema.of(
    [
        FieldSpec("user_id", FeatureType.SPARSE, 944, 16),
        FieldSpec("movie_id", FeatureType.SPARSE, 1679, 16),
        FieldSpec("gender", FeatureType.SPARSE, 3, 4),
        FieldSpec("age", FeatureType.SPARSE, 8, 4),
        FieldSpec("occupation", FeatureType.SPARSE, 22, 8),
        FieldSpec("zip_prefix", FeatureType.SPARSE, 383, 8),
        FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6),
    ]
)
WIDE_CIN = "xdeepfm_cin_256_128"  # xDeepFM with CIN (256, 128), split half
WARMUP_STEPS = 10
BATCHES_IN_POOL = 8


def random_batches(batch_size: int) -> list[tuple[dict[str, Tensor], Tensor]]:
    """A few random batches, cycled, so that timing excludes data generation."""
    batches = []
    for _ in range(BATCHES_IN_POOL):
        features = {}
        for name, spec in SEED_SCHEMA.fields.items():
            sequence = spec.feature_type is FeatureType.SEQUENCE
            shape = (batch_size, spec.max_len) if sequence else (batch_size,)
            features[name] = torch.randint(0, spec.vocabulary_size, shape)
        batches.append((features, torch.randint(0, 2, (batch_size,)).float()))
    return batches


def build(name: str, config: ExperimentConfig) -> nn.Module:
    if name == WIDE_CIN:
        return XDeepFM(
            SEED_SCHEMA,
            config.feature.fm_embed_dim,
            cin_layer_sizes=(256, 128),
            cin_split_half=True,
        )
    return build_model(name, SEED_SCHEMA, config)


def step_times(model: nn.Module, batch_size: int, seconds: float, fused_adam: bool) -> list[float]:
    batches = random_batches(batch_size)
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3, fused=fused_adam or None)
    loss_fn = nn.BCEWithLogitsLoss()
    model.train()
    times: list[float] = []
    end = None
    for index in range(WARMUP_STEPS + 1_000_000):
        if index == WARMUP_STEPS:
            end = time.perf_counter() + seconds
        features, labels = batches[index % len(batches)]
        start = time.perf_counter()
        optimizer.zero_grad()
        loss_fn(model(features), labels).backward()
        optimizer.step()
        if end is not None:
            times.append(time.perf_counter() - start)
            if time.perf_counter() > end:
                break
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-size", type=int, default=1024)
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--models", nargs="+", default=[*MODELS, WIDE_CIN])
    parser.add_argument("--fused-adam", action="store_true", help="Adam(fused=True)")
    args = parser.parse_args()

    config = ExperimentConfig()
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"batch {args.batch_size}, {'fused' if args.fused_adam else 'default'} Adam"
    )
    for name in args.models:
        torch.manual_seed(0)
        times = step_times(build(name, config), args.batch_size, args.seconds, args.fused_adam)
        median_rate = args.batch_size / statistics.median(times)
        mean_rate = args.batch_size / statistics.fmean(times)
        print(
            f"{name:20s} {median_rate:>9,.0f} samples/s (mean {mean_rate:,.0f}; {len(times)} steps)"
        )


if __name__ == "__main__":
    main()
