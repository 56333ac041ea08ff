"""DVC stage `leaderboard`: every model in `train.models` over every seed in `train.seeds`.

Reads `reports/models/<model>/metrics.json` (evaluate@<model>); writes
`reports/leaderboard.json` (a list of rows) and `reports/leaderboard.md` (mean ± std per
model, paired differences to the best model, and every seed's numbers).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfm import atomic
from deepfm.cli import run_stage
from deepfm.config import ExperimentConfig
from deepfm.leaderboard import LeaderboardError, leaderboard_rows, markdown

REPORTS = Path("reports")


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    reports = {}
    for name in config.train.models:
        path = REPORTS / "models" / name / "metrics.json"
        if not path.is_file():
            raise LeaderboardError(f"{path}: missing; run `dvc repro evaluate@{name}`")
        reports[name] = json.loads(path.read_text(encoding="utf-8"))
    wanted = sorted(str(seed) for seed in config.train.seeds)
    for name, report in reports.items():
        if sorted(report["seeds"]) != wanted:
            raise LeaderboardError(
                f"{REPORTS / 'models' / name / 'metrics.json'} has seeds {sorted(report['seeds'])}"
                f", train.seeds is {list(config.train.seeds)}: rerun evaluate@{name}"
            )
    rows = leaderboard_rows(reports)
    atomic.write_text(REPORTS / "leaderboard.json", json.dumps(rows, indent=2) + "\n")
    atomic.write_text(REPORTS / "leaderboard.md", markdown(rows))


if __name__ == "__main__":
    run_stage(main, argparse.ArgumentParser(description=__doc__))
