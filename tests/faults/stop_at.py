"""Run a script (a stage command) and stop it at one exact point, for the fault tests.

    python tests/faults/stop_at.py POINT MARKER SCRIPT [ARGS...]

When the script reaches POINT, this process creates the file MARKER and waits until
`MARKER.go` exists. The test then either SIGKILLs it there (a crash at that exact
point) or creates `MARKER.go` to let it go on (a barrier between processes).

POINT is one of:
    optimizer-step:N  after the N-th optimizer step (any torch optimizer)
    parquet-write:N   in the N-th `pyarrow.parquet.write_table` call, when half of
                      the file's bytes are on disk
    folder-swap:NAME  when `atomic.replace_dir` has moved the old folder NAME aside
                      and not yet moved the new one in
    store-open        just before the MLflow store is first opened (`tracking.open_experiment`,
                      which `train` calls before training)

The script itself runs unchanged; only the named call is wrapped.
"""

from __future__ import annotations

import faulthandler
import itertools
import os
import runpy
import signal
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torch.optim.optimizer import register_optimizer_step_post_hook

from deepfm import atomic, tracking

PARENT = os.getppid()


def wait_here(marker: Path) -> None:
    """Say where we are, then wait to be killed or let go (or for the test to end)."""
    marker.touch()
    go = marker.with_name(marker.name + ".go")
    while not go.exists():
        if os.getppid() != PARENT:
            sys.exit("the test that started this process has ended")
        time.sleep(0.01)


def stop_after_optimizer_step(n: int, marker: Path) -> None:
    steps = itertools.count(1)

    def after_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        if next(steps) == n:
            wait_here(marker)

    register_optimizer_step_post_hook(after_step)


def stop_in_parquet_write(n: int, marker: Path) -> None:
    write_table = pq.write_table
    calls = itertools.count(1)

    def half_then_stop(table: pa.Table, where: Any, **options: Any) -> None:
        if next(calls) != n:
            write_table(table, where, **options)
            return
        buffer = pa.BufferOutputStream()
        write_table(table, buffer, **options)
        data = buffer.getvalue().to_pybytes()
        with open(where, "wb") as out:
            out.write(data[: len(data) // 2])
            out.flush()
            os.fsync(out.fileno())
        wait_here(marker)

    pq.write_table = half_then_stop


def stop_in_folder_swap(name: str, marker: Path) -> None:
    replace = os.replace
    aside = f"{atomic.TEMP_PREFIX}{name}.old."

    def replace_then_stop(src: Any, dst: Any) -> None:
        replace(src, dst)
        if Path(src).name == name and Path(dst).parent.name.startswith(aside):
            wait_here(marker)

    os.replace = replace_then_stop


def stop_at_store_open(marker: Path) -> None:
    open_experiment = tracking.open_experiment

    def wait_then_open(experiment_name: str) -> str:
        wait_here(marker)  # later calls go straight on: the `.go` file is there
        return open_experiment(experiment_name)

    tracking.open_experiment = wait_then_open


def main() -> None:
    faulthandler.register(signal.SIGUSR1, all_threads=True)  # a hung script's stacks (Stopped)
    # Ctrl-C raises KeyboardInterrupt, as in a terminal, also where this process inherited
    # SIGINT ignored (a test run started as a background job: `pytest ... &` ignores it in
    # every process below), which would leave a test's SIGINT without effect.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    point, marker, script, *args = sys.argv[1:]
    kind, _, value = point.partition(":")
    marker_path = Path(marker)
    if kind == "optimizer-step":
        stop_after_optimizer_step(int(value), marker_path)
    elif kind == "parquet-write":
        stop_in_parquet_write(int(value), marker_path)
    elif kind == "folder-swap":
        stop_in_folder_swap(value, marker_path)
    elif kind == "store-open":
        stop_at_store_open(marker_path)
    else:
        sys.exit(f"unknown point {point!r}")
    sys.argv = [script, *args]
    runpy.run_path(script, run_name="__main__")


if __name__ == "__main__":
    main()
