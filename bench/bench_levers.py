"""What each speed lever gives DeepFM and AttentionDeepFM on ml-100k-shaped data.

Levers, each in its own fresh process (allocator settings are process-wide), measured
through `Trainer`'s loop (`--rows` synthetic ml-100k-shaped rows, or with `--data` the
first `--rows` rows of a prepared folder's training split; batch 1024; median of
`--epochs` epochs after a warm-up epoch of 20,480 rows):

- `default`: what the pipeline runs (glibc allocator thresholds raised by
  `deepfm.training.allocator`, eager PyTorch);
- `glibc defaults`: the same without the allocator thresholds;
- `torch.compile`: the whole model compiled by inductor; not used by the pipeline. The
  warm-up epoch's seconds show what compiling costs;
- `no CPU kernels`: PyTorch ops instead of the compiled kernels of
  `deepfm.models.layers.kernels` (the attention layers' products, the embedding tables'
  dense gradients; same bits);
- `at REV` (with `--base REV`): the default of an earlier commit, checked out in a
  temporary git worktree and imported from there (`PYTHONPATH`): before and after a change,
  measured side by side.

Variants run one after another, in an order that reverses every round.

    python bench/bench_levers.py [--rounds 3] [--models deepfm attention_deepfm] [--base REV]
        [--levers default ...] [--data data/processed/ml-100k] [--rows 80000]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

LEVERS = ("default", "glibc defaults", "torch.compile", "no CPU kernels")

CHILD = """
import json, statistics, sys, time
import torch
sys.path.insert(0, "bench")
from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import Schema
from deepfm.models.registry import build_model
from deepfm.training import allocator
from deepfm.training.trainer import Trainer

name, lever, folder = sys.argv[1], sys.argv[2], sys.argv[4]
epochs, rows = int(sys.argv[3]), int(sys.argv[5])
if lever == "glibc defaults":
    allocator.keep_freed_memory = lambda: False
if lever == "no CPU kernels":
    from deepfm.models.layers import kernels
    kernels.compiled_kernels = lambda: None
config = ExperimentConfig()
if folder:
    schema = Schema.load(f"{folder}/schema.json")
    data = CTRDataset.from_parquet(f"{folder}/train.parquet", schema)
    data = CTRDataset({n: c[:rows] for n, c in data.columns.items()}, data.labels[:rows])
    first = CTRDataset({n: c[:20_480] for n, c in data.columns.items()}, data.labels[:20_480])
else:
    schema = schema_like("ml-100k")
    data, first = synthetic_dataset(schema, rows), synthetic_dataset(schema, 20_480, seed=1)
torch.manual_seed(0)
model = build_model(name, schema, config)
trainer = Trainer(model, config.train, torch.device("cpu"), 42)
if lever == "torch.compile":
    trainer.train_model = torch.compile(model)
start = time.perf_counter()
trainer._train_epoch(first, epoch=0)
warmup = time.perf_counter() - start
rates = []
for epoch in range(1, epochs + 1):
    start = time.perf_counter()
    trainer._train_epoch(data, epoch)
    rates.append(len(data) / (time.perf_counter() - start))
print(json.dumps({"rate": statistics.median(rates), "warmup": warmup}))
"""


def run(
    name: str, lever: str, args: argparse.Namespace, source: Path | None = None
) -> dict[str, float]:
    """One fresh process; `source`: import `deepfm` from that `src` folder (an old commit)."""
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, name, lever, str(args.epochs), args.data, str(args.rows)],
        capture_output=True,
        text=True,
        env=env,
    )
    if child.returncode != 0:
        sys.exit(f"{name} ({lever}) failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


@contextlib.contextmanager
def worktree(revision: str) -> Iterator[Path]:
    """`revision` checked out in a temporary detached git worktree: its `src` folder,
    removed again on exit."""
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch) / "tree"
        subprocess.run(
            ["git", "worktree", "add", "--detach", str(folder), revision],
            check=True,
            capture_output=True,
        )
        try:
            yield folder / "src"
        finally:
            subprocess.run(["git", "worktree", "remove", "--force", str(folder)], check=False)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=["deepfm", "attention_deepfm"])
    parser.add_argument("--base", help="also measure this git revision's default")
    parser.add_argument("--levers", nargs="+", choices=LEVERS, default=list(LEVERS))
    parser.add_argument("--data", default="", help="a prepared folder; default: synthetic rows")
    parser.add_argument("--rows", type=int, default=80_000, help="the first N training rows")
    args = parser.parse_args()
    if "default" not in args.levers:
        parser.error("--levers must include default (the ratios are to it)")
    if args.rows < 1:
        parser.error(f"--rows must be at least 1, not {args.rows}")
    for name in ("schema.json", "train.parquet"):
        if args.data and not (Path(args.data) / name).is_file():
            parser.error(f"--data {args.data}: no {name} there (run `dvc repro prepare`)")
    sources: dict[str, Path | None] = {lever: None for lever in args.levers}
    if not args.base:
        measure(args, sources)
        return
    with worktree(args.base) as source:
        measure(args, {**sources, f"at {args.base}": source})


def measure(args: argparse.Namespace, sources: dict[str, Path | None]) -> None:
    """The table: every lever (with its source folder) per model, rounds interleaved."""
    levers = list(sources)
    rows = f"the first {args.rows:,} rows of " + (
        f"{args.data}/train.parquet" if args.data else "synthetic rows"
    )
    print(f"{args.rounds} rounds, median of {args.epochs} epochs of {rows} per run\n")
    print("| model | lever | samples/s per round | median | vs default | warm-up epoch s |")
    print("|---|---|---|---|---|---|")
    for name in args.models:
        results: dict[str, list[dict[str, float]]] = {lever: [] for lever in levers}
        for round_index in range(args.rounds):
            for lever in levers if round_index % 2 == 0 else levers[::-1]:
                child_lever = "default" if lever.startswith("at ") else lever
                results[lever].append(run(name, child_lever, args, sources[lever]))
        default = [r["rate"] for r in results["default"]]
        for lever in levers:
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
