"""Time and peak memory of `download` (parse) and `prepare` on generated ml-25m data.

For each rating count, a synthetic ml-25m zip (`deepfm.data.synthetic`, cached in
`--workdir`) is placed where `download` looks for a local archive; then `download`
and `prepare` each run in a fresh Python process, timed by the wall clock, with the
process's peak RSS from `wait4`. Prints a Markdown table for docs/benchmarks.md.

    python bench/bench_prepare.py                       # 1M, 10M and 25M ratings
    python bench/bench_prepare.py --ratings 1000000     # one size
"""

from __future__ import annotations

import argparse
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

RELEASE = "ml-25m"
DOWNLOAD = """
from pathlib import Path
from deepfm.data.sources import download
download({release!r}, Path({raw!r}))
"""
PREPARE = """
from deepfm.config import DataConfig, FeatureConfig
from deepfm.data.prepare import prepare
prepare(DataConfig(dataset={release!r}, raw_dir={raw!r}, processed_dir={processed!r}),
        FeatureConfig())
"""


def measured(code: str) -> tuple[float, float]:
    """Run `code` in a new Python process: (wall seconds, peak RSS in GiB)."""
    start = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-c", code], stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - start
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"failed: {code}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument(
        "--ratings", type=int, nargs="+", default=[1_000_000, 10_000_000, 25_000_000]
    )
    parser.add_argument("--workdir", type=Path, default=Path("/tmp/deepfm-bench-prepare"))
    args = parser.parse_args()

    print(
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"Python {platform.python_version()}\n"
    )
    print(
        "| ratings | download (parse) s | its peak RSS | prepare s | its peak RSS | prepare s/M |"
    )
    print("|---:|---:|---:|---:|---:|---:|")
    for ratings in args.ratings:
        folder = args.workdir / str(ratings)
        raw, processed = folder / "raw", folder / "processed"
        if not (raw / f"{RELEASE}.zip").exists():
            generate = ["-m", "deepfm.data.synthetic", "--release", RELEASE, "--out", str(raw)]
            subprocess.run([sys.executable, *generate, "--ratings", str(ratings)], check=True)
        values = {"release": RELEASE, "raw": str(raw), "processed": str(processed)}
        parse_s, parse_gib = measured(DOWNLOAD.format(**values))
        prepare_s, prepare_gib = measured(PREPARE.format(**values))
        print(
            f"| {ratings:,} | {parse_s:.1f} | {parse_gib:.2f} GiB | {prepare_s:.1f} | "
            f"{prepare_gib:.2f} GiB | {prepare_s / (ratings / 1e6):.2f} |",
            flush=True,
        )


if __name__ == "__main__":
    main()
