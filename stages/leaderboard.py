"""DVC stage `leaderboard`: every model in `train.models`, and the tuned configuration of
every model in `tune.models` (row `<model>_tuned`), over every seed in `train.seeds`.

Reads `reports/models/<row>/metrics.json` (evaluate@<model>, evaluate_tuned@<model>); writes
`reports/leaderboard.json` (a list of rows) and `reports/leaderboard.md` (mean ± std per
model, paired differences to the best model, every seed's numbers, and what tuning bought
each tuned row over its defaults).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from deepfm import atomic
from deepfm.cli import run_stage
from deepfm.config import ExperimentConfig
from deepfm.leaderboard import LeaderboardError, leaderboard_rows, markdown
from deepfm.tune_config import tuned_row

REPORTS = Path("reports")


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    stages = {name: f"evaluate@{name}" for name in config.train.models} | {
        tuned_row(name): f"evaluate_tuned@{name}" for name in config.tune.models
    }
    reports = {}
    for name, stage in stages.items():
        path = REPORTS / "models" / name / "metrics.json"
        if not path.is_file():
            raise LeaderboardError(f"{path}: missing; run `dvc repro {stage}`")
        reports[name] = json.loads(path.read_text(encoding="utf-8"))
    wanted = sorted(str(seed) for seed in config.train.seeds)
    for name, report in reports.items():
        if sorted(report["seeds"]) != wanted:
            raise LeaderboardError(
                f"{REPORTS / 'models' / name / 'metrics.json'} has seeds {sorted(report['seeds'])}"
                f", train.seeds is {list(config.train.seeds)}: rerun {stages[name]}"
            )
    rows = leaderboard_rows(reports)
    atomic.write_text(REPORTS / "leaderboard.json", json.dumps(rows, indent=2) + "\n")
    atomic.write_text(REPORTS / "leaderboard.md", markdown(rows))


if __name__ == "__main__":
    run_stage(main, argparse.ArgumentParser(description=__doc__))
