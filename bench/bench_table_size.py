"""Does training cost grow with the embedding tables? Same rows, table sizes alternating.

Three measurements through `Trainer`'s own loop (synthetic uniform indices, batch 1024,
one epoch of `--rows` rows per variant per round, variants interleaved; median of the
per-round ratios, as the CPU's speed drifts):

1. DeepFM with the seed's ml-100k tables against ml-25m-sized ones (162,542 users, 59,048
   movies), under each `train.embedding_optimizer`;
2. DeepFM with a 100,000-value sequence field in place of genres (20 values);
3. where row-wise Adam starts to pay (what sets `ROW_WISE_MIN_VALUES`): DeepFM with user
   and movie tables of N rows each (16 wide), updated densely or row-wise (the other
   tables, their one-wide first-order tables included, dense);
4. what two levers of the row-wise path give DeepFM with ml-25m-sized tables: stepping the
   row-wise tables inside the backward pass (off: sparse gradients stepped by
   `CTROptimizer.step`, as DDP ranks do) and huge pages for them and their moments (off:
   ordinary pages), each turned off on its own and both together.

    python bench/bench_table_size.py [--rows 80000] [--rounds 3] [--device cuda]
"""

from __future__ import annotations

import argparse
import statistics
import time
from dataclasses import replace

import torch

from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.data.schema import Schema
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.registry import build_model
from deepfm.training import allocator, optimizers
from deepfm.training.trainer import Trainer


def with_vocabularies(schema: Schema, sizes: dict[str, int]) -> Schema:
    """`schema` with the vocabulary sizes of the fields in `sizes` replaced."""
    return Schema.of(
        [
            replace(spec, vocabulary_size=sizes.get(name, spec.vocabulary_size))
            for name, spec in schema.fields.items()
        ]
    )


class Variant:
    """One DeepFM + data set + trainer; `epoch()` trains one epoch and returns samples/s."""

    def __init__(
        self,
        label: str,
        schema: Schema,
        optimizer: str,
        rows: int,
        device: torch.device,
        in_backward: bool = True,
        huge_pages: bool = True,
    ) -> None:
        config = ExperimentConfig()
        config = replace(config, train=replace(config.train, embedding_optimizer=optimizer))
        torch.manual_seed(0)
        self.label = label
        model = build_model("deepfm", schema, config).to(device)
        zeros_on_huge_pages = allocator.zeros_on_huge_pages
        if not huge_pages:  # read when the trainer builds its optimizer and at its first step
            allocator.zeros_on_huge_pages = lambda shape, like: like.new_zeros(shape)
        self.trainer = Trainer(model, config.train, device, 42)
        if not in_backward:  # sparse gradients, stepped after the backward pass
            self.trainer.optimizer.rows_in_backward = False
            for module in model.modules():
                if isinstance(module, FeatureEmbedding):
                    module.update_rows_in_backward(None)
        self.data = synthetic_dataset(schema, rows).to(device)
        self.trainer._train_epoch(synthetic_dataset(schema, 20 * 1024, seed=1).to(device), 0)
        allocator.zeros_on_huge_pages = zeros_on_huge_pages
        self.epochs = 0

    def epoch(self) -> float:
        self.epochs += 1
        start = time.perf_counter()
        self.trainer._train_epoch(self.data, self.epochs)  # returns a float: synchronised
        return len(self.data) / (time.perf_counter() - start)


def compare(variants: list[Variant], rounds: int) -> dict[str, list[float]]:
    """Samples/s of each variant per round, the order reversing from round to round."""
    rates: dict[str, list[float]] = {v.label: [] for v in variants}
    for round_index in range(rounds):
        for variant in variants if round_index % 2 == 0 else variants[::-1]:
            rates[variant.label].append(variant.epoch())
    return rates


def ratio_row(label: str, small: list[float], large: list[float]) -> str:
    ratios = [b / a for a, b in zip(small, large, strict=True)]
    return (
        f"| {label} | {', '.join(f'{r / 1e3:.1f}k' for r in small)} "
        f"| {', '.join(f'{r / 1e3:.1f}k' for r in large)} "
        f"| {', '.join(f'{r:.2f}' for r in ratios)} | **{statistics.median(ratios):.2f}** |"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=80_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--device", default="cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, {args.rows:,} rows, "
        f"{args.rounds} rounds\n"
    )
    small, large = schema_like("ml-100k"), schema_like("ml-25m")
    genres_100k = with_vocabularies(small, {"genres": 100_000})
    header = (
        "| {} | {} samples/s | {} samples/s | ratio per round | median ratio |\n"
        "|---|---|---|---|---|"
    )

    print("DeepFM, ml-100k tables against ml-25m-sized tables (ratio = ml-25m / ml-100k):\n")
    print(header.format("embedding_optimizer", "ml-100k tables", "ml-25m tables"))
    for optimizer in ("auto", "adam", "lazy_adam"):
        pair = [
            Variant("small", small, optimizer, args.rows, device),
            Variant("large", large, optimizer, args.rows, device),
        ]
        rates = compare(pair, args.rounds)
        print(ratio_row(optimizer, rates["small"], rates["large"]), flush=True)

    print("\nDeepFM, genres (20 values) against a 100,000-value sequence field (max_len 6):\n")
    print(header.format("embedding_optimizer", "20 values", "100,000 values"))
    pair = [
        Variant("small", small, "auto", args.rows, device),
        Variant("large", genres_100k, "auto", args.rows, device),
    ]
    rates = compare(pair, args.rounds)
    print(ratio_row("auto", rates["small"], rates["large"]), flush=True)

    print("\nUser and movie tables of N rows each, dense against row-wise (the rest dense):\n")
    row_wise_min_values = optimizers.ROW_WISE_MIN_VALUES
    print(header.format("rows per table", "dense Adam", "row-wise Adam"))
    for rows in (5_000, 20_000, 60_000, 160_000):
        schema = with_vocabularies(small, {"user_id": rows, "movie_id": rows})
        optimizers.ROW_WISE_MIN_VALUES = 10**12  # read when the trainer builds its optimizer
        dense = Variant("dense", schema, "auto", args.rows, device)
        optimizers.ROW_WISE_MIN_VALUES = rows * 16
        row_wise = Variant("row-wise", schema, "auto", args.rows, device)
        rates = compare([dense, row_wise], args.rounds)
        print(ratio_row(f"{rows:,}", rates["dense"], rates["row-wise"]), flush=True)
    optimizers.ROW_WISE_MIN_VALUES = row_wise_min_values

    print("\nDeepFM with ml-25m-sized tables, levers of the row-wise path turned off:\n")
    print(header.format("turned off", "default", "lever off"))
    levers = {
        "stepped in backward": {"in_backward": False},
        "huge pages": {"huge_pages": False},
        "both": {"in_backward": False, "huge_pages": False},
    }
    variants = [Variant("default", large, "auto", args.rows, device)]
    for name, off in levers.items():
        variants.append(Variant(name, large, "auto", args.rows, device, **off))
    rates = compare(variants, args.rounds)
    for name in levers:
        print(ratio_row(name, rates["default"], rates[name]), flush=True)


if __name__ == "__main__":
    main()
