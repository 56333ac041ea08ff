"""The multi-seed leaderboard: every model's test metrics per seed, mean ± std, paired
differences to the best model over the same seeds, and what tuning bought each tuned model.

Model differences on MovieLens are often a few thousandths of AUC, the size of the
spread between training seeds. So each model is compared with the best one (highest mean
test AUC) seed by seed: the paired difference `auc(model, seed) - auc(best, seed)`
removes what the seed does to both. When those differences change sign across seeds, the
gap is within seed noise and the table says so.

Example::

    rows = leaderboard_rows({"fm": fm_metrics, "deepfm": deepfm_metrics})
    text = markdown(rows)
"""

from __future__ import annotations

import statistics
from collections.abc import Mapping
from typing import Any

from deepfm.errors import UserError
from deepfm.tune_config import TUNED_SUFFIX

Metrics = Mapping[str, Any]  # a model's reports/models/<model>/metrics.json


class LeaderboardError(UserError, ValueError):
    """Model reports that cannot be compared (other seeds, missing keys); names the model.

    Example::

        raise LeaderboardError(f"{path}: missing metrics.json; run evaluate first")
    """


def _spread(values: list[float]) -> float:
    """Sample standard deviation; 0 for a single value."""
    return statistics.stdev(values) if len(values) > 1 else 0.0


def noise_note(differences: list[float]) -> str:
    """How to read a model's paired AUC differences to the best model, seed by seed."""
    if len(differences) < 2:
        return "one seed: spread unknown"
    if all(difference == 0 for difference in differences):
        return "same as best"
    if min(differences) < 0 < max(differences):
        return "within seed noise (sign changes across seeds)"
    return "below in every seed"


def leaderboard_rows(reports: Mapping[str, Metrics]) -> list[dict[str, Any]]:
    """One row per model, highest mean test AUC first; every model must have the same seeds."""
    if not reports:
        raise LeaderboardError("no model reports to compare")
    seed_lists = {name: sorted(report["seeds"], key=int) for name, report in reports.items()}
    seeds = next(iter(seed_lists.values()))
    for name, model_seeds in seed_lists.items():
        if model_seeds != seeds:
            raise LeaderboardError(
                f"reports/models/{name}/metrics.json has seeds {model_seeds}, "
                f"others have {seeds}: rerun evaluate@{name}"
            )
    rows = []
    for name, report in reports.items():
        per_seed = [report["seeds"][seed] for seed in seeds]
        aucs = [run["test_auc"] for run in per_seed]
        loglosses = [run["test_logloss"] for run in per_seed]
        rows.append(
            {
                "model": name,
                "seeds": [int(seed) for seed in seeds],
                "test_auc": aucs,
                "test_logloss": loglosses,
                "test_auc_mean": statistics.fmean(aucs),
                "test_auc_std": _spread(aucs),
                "test_logloss_mean": statistics.fmean(loglosses),
                "test_logloss_std": _spread(loglosses),
                "parameters": report["parameters"],
                "samples_per_second": statistics.fmean(r["samples_per_second"] for r in per_seed),
                "epochs_run": statistics.fmean(run["epochs_run"] for run in per_seed),
            }
        )
    rows.sort(key=lambda row: row["test_auc_mean"], reverse=True)
    best = rows[0]
    for row in rows:
        differences = [a - b for a, b in zip(row["test_auc"], best["test_auc"], strict=True)]
        row["best_model"] = best["model"]
        row["auc_difference_to_best"] = differences
        row["auc_difference_to_best_mean"] = statistics.fmean(differences)
        row["note"] = "best" if row is best else noise_note(differences)
    by_name = {row["model"]: row for row in rows}
    for row in rows:
        default = by_name.get(row["model"].removesuffix(TUNED_SUFFIX))
        if row["model"].endswith(TUNED_SUFFIX) and default is not None:
            gains = [a - b for a, b in zip(row["test_auc"], default["test_auc"], strict=True)]
            row["default_model"] = default["model"]
            row["auc_gain_over_default"] = gains
            row["auc_gain_over_default_mean"] = statistics.fmean(gains)
            row["gain_note"] = gain_note(gains)
    return rows


def gain_note(gains: list[float]) -> str:
    """How to read a tuned model's paired AUC gains over its defaults, seed by seed."""
    if len(gains) < 2:
        return "one seed: spread unknown"
    if min(gains) > 0:
        return "above in every seed"
    if max(gains) < 0:
        return "below in every seed"
    return "within seed noise (sign changes across seeds)"


def _signed(value: float) -> str:
    return f"{value:+.4f}"


def markdown(rows: list[dict[str, Any]]) -> str:
    """The summary table and the per-seed table, as GitHub-flavoured Markdown."""
    seeds = rows[0]["seeds"]
    lines = [
        f"# Test leaderboard ({len(seeds)} training seed{'s' * (len(seeds) > 1)}: "
        f"{', '.join(map(str, seeds))})",
        "",
        "Mean ± sample standard deviation over the seeds. Δ AUC is the paired difference to "
        f"the best model (`{rows[0]['model']}`), seed by seed; when it changes sign across "
        "seeds the gap is within seed noise.",
        "",
        "| model | test AUC | test logloss | Δ AUC vs best (per seed) | reading | parameters "
        "| train samples/s | epochs |",
        "|---|---:|---:|---:|---|---:|---:|---:|",
    ]
    for row in rows:
        per_seed = ", ".join(_signed(d) for d in row["auc_difference_to_best"])
        difference = f"{_signed(row['auc_difference_to_best_mean'])} ({per_seed})"
        cells = [
            row["model"],
            f"{row['test_auc_mean']:.4f} ± {row['test_auc_std']:.4f}",
            f"{row['test_logloss_mean']:.4f} ± {row['test_logloss_std']:.4f}",
            "—" if row["note"] == "best" else difference,
            row["note"],
            f"{row['parameters']:,}",
            f"{row['samples_per_second']:,.0f}",
            f"{row['epochs_run']:.1f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
    header = " | ".join(f"seed {seed}" for seed in seeds)
    lines += [
        "",
        "Per seed (test AUC / test logloss):",
        "",
        f"| model | {header} |",
        "|---|" + "---:|" * len(seeds),
    ]
    for row in rows:
        cells = [
            f"{auc:.4f} / {logloss:.4f}"
            for auc, logloss in zip(row["test_auc"], row["test_logloss"], strict=True)
        ]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    tuned = [row for row in rows if "default_model" in row]
    if tuned:
        lines += [
            "",
            "What tuning bought (Δ = tuned − default test AUC, seed by seed):",
            "",
            "| tuned model | default test AUC | tuned test AUC | Δ AUC (per seed) | reading |",
            "|---|---:|---:|---:|---|",
        ]
        by_name = {row["model"]: row for row in rows}
        for row in tuned:
            default = by_name[row["default_model"]]
            per_seed = ", ".join(_signed(gain) for gain in row["auc_gain_over_default"])
            cells = [
                row["model"],
                f"{default['test_auc_mean']:.4f}",
                f"{row['test_auc_mean']:.4f}",
                f"{_signed(row['auc_gain_over_default_mean'])} ({per_seed})",
                row["gain_note"],
            ]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
