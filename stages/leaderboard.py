"""DVC stage `leaderboard`: every model in `train.models` side by side, best test AUC first.

Reads `reports/models/<model>/metrics.json` (evaluate) and `.../train.json` (train);
writes `reports/leaderboard.json` (a list of rows) and `reports/leaderboard.md` (a table).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from deepfm import atomic
from deepfm.config import ExperimentConfig
from deepfm.stage import run_stage

REPORTS = Path("reports")
MODEL_REPORTS = REPORTS / "models"
COLUMNS = {
    "model": "model",
    "test_auc": "test AUC",
    "test_logloss": "test logloss",
    "parameters": "parameters",
    "samples_per_second": "train samples/s",
    "epochs_run": "epochs",
}


def leaderboard_rows(models: list[str]) -> list[dict[str, Any]]:
    """One row per model, sorted by test AUC, highest first."""
    rows = []
    for name in models:
        test = json.loads((MODEL_REPORTS / name / "metrics.json").read_text())
        train = json.loads((MODEL_REPORTS / name / "train.json").read_text())
        rows.append(
            {
                "model": name,
                "test_auc": test["test_auc"],
                "test_logloss": test["test_logloss"],
                "parameters": test["parameters"],
                "samples_per_second": train["samples_per_second"],
                "epochs_run": train["epochs_run"],
            }
        )
    return sorted(rows, key=lambda row: row["test_auc"], reverse=True)


def markdown_table(rows: list[dict[str, Any]]) -> str:
    """A GitHub-flavoured Markdown table of `rows`, numbers right-aligned."""
    lines = [
        "| " + " | ".join(COLUMNS.values()) + " |",
        "|---|" + "---:|" * (len(COLUMNS) - 1),
    ]
    for row in rows:
        cells = [
            row["model"],
            f"{row['test_auc']:.4f}",
            f"{row['test_logloss']:.4f}",
            f"{row['parameters']:,}",
            f"{row['samples_per_second']:,.0f}",
            str(row["epochs_run"]),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    rows = leaderboard_rows(list(config.train.models))
    atomic.write_text(REPORTS / "leaderboard.json", json.dumps(rows, indent=2) + "\n")
    atomic.write_text(REPORTS / "leaderboard.md", "# Test leaderboard\n\n" + markdown_table(rows))


if __name__ == "__main__":
    run_stage(main, argparse.ArgumentParser(description=__doc__))
