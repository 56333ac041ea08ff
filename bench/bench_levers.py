"""What each speed lever gives DeepFM and AttentionDeepFM on ml-100k-shaped data.

Levers, each in its own fresh process (allocator settings are process-wide), measured
through `Trainer`'s loop (synthetic ml-100k-shaped rows, batch 1024, median of `--epochs`
epochs after a warm-up epoch):

- `default`: what the pipeline runs (glibc allocator thresholds raised by
  `deepfm.training.allocator`, eager PyTorch);
- `glibc defaults`: the same without the allocator thresholds;
- `dense gradients`: the same with dense embedding gradients (`F.embedding`'s own backward)
  in place of the sparse ones that `CTROptimizer` sums;
- `torch.compile`: the whole model compiled by inductor, with dense embedding gradients
  (inductor does not trace sparse ones); not used by the pipeline. The warm-up epoch's
  seconds show what compiling costs.

Variants run one after another, in an order that reverses every round.

    python bench/bench_levers.py [--rounds 3] [--models deepfm attention_deepfm]
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time

LEVERS = ("default", "glibc defaults", "dense gradients", "torch.compile")

CHILD = """
import json, statistics, sys, time
import torch
sys.path.insert(0, "bench")
from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.models.registry import build_model
from deepfm.training import allocator
from deepfm.training.trainer import Trainer

name, lever, epochs = sys.argv[1], sys.argv[2], int(sys.argv[3])
if lever == "glibc defaults":
    allocator.keep_freed_memory = lambda: False
config = ExperimentConfig()
schema = schema_like("ml-100k")
torch.manual_seed(0)
model = build_model(name, schema, config)
trainer = Trainer(model, config.train, torch.device("cpu"), 42)
if lever == "dense gradients":
    model.embedding.use_sparse_gradients(False)
if lever == "torch.compile":  # inductor does not trace sparse embedding gradients
    model.embedding.use_sparse_gradients(False)
    trainer.train_model = torch.compile(model)
data = synthetic_dataset(schema, 80_000)
start = time.perf_counter()
trainer._train_epoch(synthetic_dataset(schema, 20_480, seed=1), epoch=0)
warmup = time.perf_counter() - start
rates = []
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    trainer._train_epoch(data, epoch)
    rates.append(len(data) / (time.perf_counter() - start))
print(json.dumps({"rate": statistics.median(rates), "warmup": warmup}))
"""


def run(name: str, lever: str, epochs: int) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", CHILD, name, lever, str(epochs)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["deepfm", "attention_deepfm"])
    args = parser.parse_args()
    print(f"{args.rounds} rounds, median of {args.epochs} epochs of 80,000 rows per run\n")
    print("| model | lever | samples/s per round | median | vs default | warm-up epoch s |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        results: dict[str, list[dict[str, float]]] = {lever: [] for lever in LEVERS}
        for round_index in range(args.rounds):
            for lever in LEVERS if round_index % 2 == 0 else LEVERS[::-1]:
                results[lever].append(run(name, lever, args.epochs))
        default = [r["rate"] for r in results["default"]]
        for lever in LEVERS:
            rates = [r["rate"] for r in results[lever]]
            ratios = [rate / base for rate, base in zip(rates, default, strict=True)]
            warmups = [r["warmup"] for r in results[lever]]
            print(
                f"| {name} | {lever} | {', '.join(f'{r / 1e3:.1f}k' for r in rates)} "
                f"| {statistics.median(rates) / 1e3:.1f}k | {statistics.median(ratios):.2f} "
                f"| {', '.join(f'{w:.1f}' for w in warmups)} |",
                flush=True,
            )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
