"""What PyTorch's and MKL's choice of CPU kernels does to the weights and to the speed.

PyTorch picks its vectorised kernels (AVX2 or AVX-512) and MKL its matrix-multiply kernels
by the CPU and the thread count, and each choice rounds differently. Two environment
variables pin them: `ATEN_CPU_CAPABILITY=avx2` (PyTorch's AVX2 kernels) and `MKL_CBWR`
(MKL's conditional numerical reproducibility: `AVX2,STRICT` the same matrix multiplies on
every Intel CPU with AVX2 whatever the thread count, `COMPATIBLE` its SSE2 branch, the same
on Intel and AMD). For each setting, this trains every `--models` model for one epoch on
synthetic ml-100k-shaped rows (seeded) in a fresh process with 1 and with 2 threads, and
prints the hash of the weights (do the thread counts agree?), then measures each setting's
training speed with 2 threads (`--rounds` rounds, settings in an order that reverses every
round; median samples/s over the rounds and its ratio to the default).

    python bench/cpu_kernels.py [--models deepfm attention_deepfm] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

SETTINGS = {
    "default (the pipeline's)": {},
    "ATEN_CPU_CAPABILITY=avx2": {"ATEN_CPU_CAPABILITY": "avx2"},
    "+ MKL_CBWR=AVX2,STRICT": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AVX2,STRICT"},
    "+ MKL_CBWR=COMPATIBLE": {"ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"},
}

CHILD = """
import hashlib, json, sys, time
import torch
sys.path.insert(0, "bench")
from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.models.registry import build_model
from deepfm.training.trainer import Trainer

rows, epochs, names = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3:]
config, schema = ExperimentConfig(), schema_like("ml-100k")
data = synthetic_dataset(schema, rows)
out = {"capability": torch.backends.cpu.get_cpu_capability()}
for name in names:
    torch.manual_seed(0)
    model = build_model(name, schema, config)
    trainer = Trainer(model, config.train, torch.device("cpu"), seed=42)
    trainer._train_epoch(data, 0)
    weights = b"".join(value.numpy().tobytes() for value in model.state_dict().values())
    rates = []
    for epoch in range(1, epochs + 1):
        start = time.perf_counter()
        trainer._train_epoch(data, epoch)
        rates.append(rows / (time.perf_counter() - start))
    out[name] = {"hash": hashlib.sha256(weights).hexdigest()[:12], "rate": max(rates, default=0)}
print(json.dumps(out))
"""


def run(setting: dict[str, str], threads: int, rows: int, epochs: int, models: list[str]) -> dict:
    """One fresh process with `setting`'s variables (and no others of the two) and `threads`."""
    env = {k: v for k, v in os.environ.items() if k not in ("ATEN_CPU_CAPABILITY", "MKL_CBWR")}
    env.update(setting, OMP_NUM_THREADS=str(threads))
    child = subprocess.run(
        [sys.executable, "-c", CHILD, str(rows), str(epochs), *models],
        capture_output=True,
        text=True,
        env=env,
    )
    if child.returncode != 0:
        sys.exit(f"{setting} failed:\n{child.stderr[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["deepfm", "attention_deepfm"])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rows", type=int, default=40_960)
    args = parser.parse_args()
    if args.rounds < 1 or args.rows < 1024:
        parser.error("--rounds must be at least 1 and --rows at least 1024")

    print("Weights after one epoch of 8,192 rows (sha256, first 12 hex digits):\n")
    print("| setting | PyTorch kernels | model | 1 thread | 2 threads | same |")
    print("|---|---|---|---|---|---|")
    for label, setting in SETTINGS.items():
        one, two = (run(setting, threads, 8192, 0, args.models) for threads in (1, 2))
        for name in args.models:
            a, b = one[name]["hash"], two[name]["hash"]
            print(f"| {label} | {two['capability']} | {name} | {a} | {b} | {a == b} |")

    print(f"\nTraining speed, 2 threads, {args.rows:,} rows, best of 2 epochs per round:\n")
    rates: dict[str, list[dict]] = {label: [] for label in SETTINGS}
    for round_index in range(args.rounds):
        order = list(SETTINGS) if round_index % 2 == 0 else list(SETTINGS)[::-1]
        for label in order:
            rates[label].append(run(SETTINGS[label], 2, args.rows, 2, args.models))
    print("| setting | model | samples/s per round | median | vs default |")
    print("|---|---|---|---|---|")
    default = next(iter(SETTINGS))
    for name in args.models:
        base = statistics.median(r[name]["rate"] for r in rates[default])
        for label in SETTINGS:
            values = [r[name]["rate"] for r in rates[label]]
            median = statistics.median(values)
            print(
                f"| {label} | {name} | {', '.join(f'{v / 1e3:.1f}k' for v in values)} "
                f"| {median / 1e3:.1f}k | {median / base:.2f} |",
                flush=True,
            )


if __name__ == "__main__":
    start = time.perf_counter()
    main()
    print(f"\nwall time {time.perf_counter() - start:.0f} s")
