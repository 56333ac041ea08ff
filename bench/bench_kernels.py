"""What the compiled CPU kernels give each model: epochs alternating in one process.

Two trainers of the same model on the same synthetic ml-100k-shaped rows (batch 1024), one
with `deepfm.models.layers.kernels`' compiled kernels and one with their PyTorch
expressions (same bits), train epochs in turn, in an order that reverses every round. One
process sees one machine state, so this resolves differences that separate processes
(`bench_levers.py`'s `no CPU kernels` lever) cannot on a machine that drifts.

    python bench/bench_kernels.py [--models deepfm attention_deepfm] [--rounds 9]

It first prints how long loading the kernels took: compiling them, the first time on a
machine (`TORCH_EXTENSIONS_DIR=$(mktemp -d) python bench/bench_kernels.py` measures that),
or loading them from PyTorch's extension cache.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from bench_models import build, schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.models.layers import kernels
from deepfm.training.trainer import Trainer

COMPILED = kernels.compiled_kernels


def use_kernels(on: bool) -> None:
    kernels.compiled_kernels = COMPILED if on else (lambda: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deepfm", "attention_deepfm"])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--rows", type=int, default=40_960)
    args = parser.parse_args()
    if args.rounds < 1 or args.rows < 1024:
        parser.error("--rounds must be at least 1 and --rows at least 1024")
    start = time.perf_counter()
    if COMPILED() is None:
        raise SystemExit("the CPU kernels cannot be built here (see the log): nothing to compare")
    print(f"kernels loaded in {time.perf_counter() - start:.1f} s")
    schema, config = schema_like("ml-100k"), ExperimentConfig()
    data = synthetic_dataset(schema, args.rows)
    print(f"{args.rounds} rounds of one epoch of {args.rows:,} synthetic rows per side\n")
    print(
        "| model | kernels samples/s | PyTorch ops samples/s | PyTorch / kernels per round "
        "| median |"
    )
    print("|---|---|---|---|---|")
    for name in args.models:
        trainers = {}
        for on in (True, False):
            use_kernels(on)
            torch.manual_seed(0)
            trainers[on] = Trainer(
                build(name, schema, config), config.train, torch.device("cpu"), 42
            )
            trainers[on]._train_epoch(data, epoch=0)  # warm-up
        rates: dict[bool, list[float]] = {True: [], False: []}
        for round_index in range(args.rounds):
            for on in (True, False) if round_index % 2 == 0 else (False, True):
                use_kernels(on)
                start = time.perf_counter()
                trainers[on]._train_epoch(data, round_index + 1)
                rates[on].append(args.rows / (time.perf_counter() - start))
        ratios = [off / on for on, off in zip(rates[True], rates[False], strict=True)]
        print(
            f"| {name} | {statistics.median(rates[True]) / 1e3:.1f}k "
            f"| {statistics.median(rates[False]) / 1e3:.1f}k "
            f"| {', '.join(f'{r:.2f}' for r in ratios)} | **{statistics.median(ratios):.2f}** |",
            flush=True,
        )
    use_kernels(True)


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
