"""The row-wise Adam step alone: compiled `row_wise_adam` against `RowWiseAdam`'s PyTorch ops.

Steps shaped like a training step's: the distinct rows of a batch of 1,024 uniform random
lookups, with random gradients, for a 100,000-value sequence field (6 slots; its 100,000 x 8
table and 100,000 x 1 first-order table) and for ml-25m-sized user and movie tables (162,542
and 59,048 rows of 16, and their first-order tables). Each path steps its own copy of the
tables (Adam moments side by side on huge pages, as `RowWiseAdam` makes them); the two take
turns, `--steps` steps each per round, in an order that reverses every round. Prints the
median microseconds per step and whether both paths ended with the same weights, bit for
bit.

    python bench/bench_row_wise_adam.py [--rounds 9] [--steps 200]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deepfm.models.layers import kernels
from deepfm.training.optimizers import RowWiseAdam

COMPILED = kernels.compiled_kernels
BATCH = 1024
# Setting -> (rows, width, slots) of each table; a field's first-order table is its own row.
SETTINGS = {
    "100,000-value sequence field": [(100_000, 8, 6), (100_000, 1, 6)],
    "ml-25m user and movie tables": [
        (162_542, 16, 1),
        (59_048, 16, 1),
        (162_542, 1, 1),
        (59_048, 1, 1),
    ],
}


def use_kernels(on: bool) -> None:
    kernels.compiled_kernels = COMPILED if on else (lambda: None)


def batches(tables: list[tuple[int, int, int]], count: int) -> list[tuple[list, list]]:
    """`count` steps' (distinct rows, gradient rows) per table, from uniform lookups."""
    generator = torch.Generator().manual_seed(0)
    steps = []
    for _ in range(count):
        indices, grads = [], []
        for rows, width, slots in tables:
            index = torch.randint(1, rows, (BATCH * slots,), generator=generator).unique()
            indices.append(index)
            grads.append(torch.randn(len(index), width, generator=generator))
        steps.append((indices, grads))
    return steps


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--steps", type=int, default=200)
    args = parser.parse_args()
    if args.rounds < 1 or args.steps < 1:
        parser.error("--rounds and --steps must be at least 1")
    if COMPILED() is None:
        raise SystemExit("the CPU kernels cannot be built here (see the log): nothing to compare")
    print(
        f"torch {torch.__version__}, {torch.get_num_threads()} threads, "
        f"{args.rounds} rounds of {args.steps} steps per path\n"
    )
    print(
        "| tables | rows stepped per step | compiled µs per step | PyTorch ops µs per step "
        "| PyTorch / compiled | same bits |"
    )
    print("|---|---|---|---|---|---|")
    for label, shapes in SETTINGS.items():
        steps = batches(shapes, args.steps)
        tables, optimizers = {}, {}
        for on in (True, False):
            torch.manual_seed(0)
            tables[on] = [torch.nn.Parameter(torch.randn(rows, width)) for rows, width, _ in shapes]
            optimizers[on] = RowWiseAdam(tables[on], lr=1e-3)
        micros: dict[bool, list[float]] = {True: [], False: []}
        for round_index in range(args.rounds):
            for on in (True, False) if round_index % 2 == 0 else (False, True):
                use_kernels(on)
                start = time.perf_counter()
                for indices, grads in steps:
                    optimizers[on].step_rows(tables[on], indices, grads)
                micros[on].append((time.perf_counter() - start) / args.steps * 1e6)
        same = all(torch.equal(a, b) for a, b in zip(tables[True], tables[False], strict=True))
        compiled, pytorch = statistics.median(micros[True]), statistics.median(micros[False])
        rows = statistics.mean(sum(len(index) for index in indices) for indices, _ in steps)
        print(
            f"| {label} | {rows:,.0f} | {compiled:.0f} | {pytorch:.0f} "
            f"| **{pytorch / compiled:.2f}** | {same} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
