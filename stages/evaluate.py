"""DVC stage `evaluate@<model>`: score the test split with the model of every `train.seeds`.

Reads `models/<model>/seed-<seed>/` (train) for each seed and writes the folder
`reports/models/<model>/` whole: `metrics.json` (per seed: test AUC, logloss, accuracy at 0.5,
predicted vs actual positive rate, ECE over 10 bins, and the training summary; their mean
over seeds; the sample std of test AUC, test logloss and best val AUC; parameter count and
test rows), the curves `roc.csv`, `pr.csv`, `calibration.csv` and `val_auc.csv` in long form
(a leading `seed` column) and `roc.png`, `pr.png`, `calibration.png`, `val_auc.png` with one
line per seed.

Before anything is written it refuses, in one line: an empty test split, a model trained on
other prepared data (schema or vocabularies), and a `run.json` naming a run the tracking
store does not have (a fresh clone: train again, or point MLFLOW_TRACKING_URI at the store
that has it). Each seed's finished training run then gets its test metrics and figures
(without being reopened), and a parent run per model groups the seed runs, with the mean
and std.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import statistics
import tempfile
from pathlib import Path

import pyarrow.parquet as pq
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepfm import atomic, metrics, tracking
from deepfm.cli import check_model_name, matrix_item, run_stage
from deepfm.config import ConfigError, ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepared import prepared_data_fingerprint
from deepfm.errors import UserError
from deepfm.models.registry import SavedModel, load_model
from deepfm.predict import dataset_logits, resolve_device
from deepfm.tune_config import tuned_row

logger = logging.getLogger("deepfm.evaluate")

CALIBRATION_BINS = 10
CURVE_POINTS = 200
TRAIN_KEYS = ("best_val_auc", "best_epoch", "epochs_run", "samples_per_second")
STD_KEYS = ("test_auc", "test_logloss", "best_val_auc")
# file stem -> (x column, y column, title, axis labels, diagonal)
FIGURES = {
    "roc": ("fpr", "tpr", "test ROC", ("false positive rate", "true positive rate"), True),
    "pr": ("recall", "precision", "test precision-recall", ("recall", "precision"), False),
    "calibration": (
        "mean_predicted",
        "fraction_positive",
        "test calibration (10 bins)",
        ("mean predicted probability", "fraction positive"),
        True,
    ),
    "val_auc": ("epoch", "val_auc", "validation AUC by epoch", ("epoch", "validation AUC"), False),
}


class EvaluateError(UserError, ValueError):
    """Inputs evaluate cannot score: the message names the file at fault."""


def long_csv(curves: dict[int, metrics.Curve], columns: tuple[str, ...]) -> str:
    """`columns` of each seed's curve as CSV rows after a leading `seed` column."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(("seed", *columns))
    for seed, curve in curves.items():
        for row in zip(*(curve[column].tolist() for column in columns), strict=True):
            writer.writerow((seed, *row))
    return buffer.getvalue()


def scalar_metrics(labels: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    """Every scalar test metric, keys prefixed `test_`."""
    probabilities = torch.sigmoid(logits.double())
    return {
        "test_auc": metrics.roc_auc(labels, logits),
        "test_logloss": metrics.log_loss(labels, logits),
        "test_accuracy": metrics.accuracy(labels, probabilities),
        "test_predicted_positive_rate": float(probabilities.mean()),
        "test_actual_positive_rate": float(labels.double().mean()),
        "test_ece": metrics.expected_calibration_error(labels, probabilities, CALIBRATION_BINS),
    }


def save_figure(path: Path, stem: str, title: str, curves: dict[int, metrics.Curve]) -> None:
    """Figure `stem` of `FIGURES` as a PNG (Agg backend): one line per seed."""
    x, y, what, (x_label, y_label), diagonal = FIGURES[stem]
    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    for seed, curve in curves.items():
        axes.plot(curve[x].tolist(), curve[y].tolist(), label=f"seed {seed}")
    axes.set(title=f"{title} {what}", xlabel=x_label, ylabel=y_label)
    if stem != "val_auc":
        axes.set(xlim=(0, 1), ylim=(0, 1.02))
    axes.legend(loc="best")
    figure.savefig(path, dpi=100, bbox_inches="tight")


def load_seed(
    config: ExperimentConfig, row: str, name: str, seed: int, data_fingerprint: str
) -> SavedModel:
    """The model of `models/<row>/seed-<seed>/`, refused unless it is model `name` and that
    seed, trained on the prepared data whose fingerprint is `data_fingerprint`."""
    model_pt = Path("models") / row / f"seed-{seed}" / "model.pt"
    saved = load_model(model_pt)
    if saved.name != name or saved.seed != seed:
        raise ConfigError(
            f"{model_pt} holds model {saved.name!r} seed {saved.seed}, not {name!r} seed {seed}"
        )
    if saved.data_fingerprint != data_fingerprint:
        raise EvaluateError(
            f"{config.data.processed_path} (schema.json and vocab/) is not the prepared data "
            f"{model_pt} was trained on; train it again on this data, or prepare the data "
            "it was trained on"
        )
    return saved


def history_curve(path: Path) -> metrics.Curve:
    """`epoch` and `val_auc` columns of a `history.csv`."""
    with path.open() as handle:
        rows = list(csv.DictReader(handle))
    return {
        "epoch": torch.tensor([int(row["epoch"]) for row in rows]),
        "val_auc": torch.tensor([float(row["val_auc"]) for row in rows], dtype=torch.float64),
    }


def evaluate(config: ExperimentConfig, name: str, row: str = "") -> dict:
    """Test metrics and curves of model `name` over every seed, as leaderboard row `row`
    (default: `name`; `deepfm_tuned` for a tuned configuration)."""
    row = row or name
    processed = config.data.processed_path
    test_path = processed / "test.parquet"
    if pq.read_metadata(test_path).num_rows == 0:
        raise EvaluateError(f"{test_path} has no rows: there is nothing to evaluate")
    seeds = config.train.seeds
    folders = {seed: Path("models") / row / f"seed-{seed}" for seed in seeds}
    # Everything is checked before a file is written or a run touched.
    runs = tracking.FinishedRuns()
    run_ids = {}
    for seed, folder in folders.items():
        run_ids[seed] = json.loads((folder / "run.json").read_text())["run_id"]
        runs.check(run_ids[seed], folder / "run.json")
    first = load_model(folders[seeds[0]] / "model.pt")
    data_fingerprint = prepared_data_fingerprint(processed, first.schema)
    saved = {seed: load_seed(config, row, name, seed, data_fingerprint) for seed in seeds}
    test_ds = CTRDataset.from_parquet(test_path, first.schema)
    device = resolve_device(config.train.device)

    per_seed: dict[int, dict[str, float]] = {}
    curves: dict[str, dict[int, metrics.Curve]] = {stem: {} for stem in FIGURES}
    for seed, model in saved.items():
        logits = dataset_logits(model.model.to(device), test_ds, device).cpu()
        labels = test_ds.labels
        summary = json.loads((folders[seed] / "train.json").read_text())
        per_seed[seed] = scalar_metrics(labels, logits) | {k: summary[k] for k in TRAIN_KEYS}
        probabilities = torch.sigmoid(logits.double())
        curves["roc"][seed] = metrics.roc_points(labels, probabilities, CURVE_POINTS)
        curves["pr"][seed] = metrics.pr_points(labels, probabilities, CURVE_POINTS)
        curves["calibration"][seed] = metrics.calibration_bins(
            labels, probabilities, CALIBRATION_BINS
        )
        curves["val_auc"][seed] = history_curve(folders[seed] / "history.csv")

    keys = list(per_seed[seeds[0]])
    mean = {key: statistics.fmean(per_seed[seed][key] for seed in seeds) for key in keys}
    std = {
        key: statistics.stdev([per_seed[seed][key] for seed in seeds]) if len(seeds) > 1 else 0.0
        for key in STD_KEYS
    }
    report = {
        "seeds": {str(seed): seed_metrics for seed, seed_metrics in per_seed.items()},
        "mean": mean,
        "std": std,
        "parameters": sum(p.numel() for p in first.model.parameters() if p.requires_grad),
        "test_rows": len(test_ds),
    }
    report_dir = Path("reports/models") / row
    with atomic.replace_dir(report_dir) as new:
        atomic.write_text(
            new / "metrics.json", json.dumps(report, indent=2, allow_nan=False) + "\n"
        )
        for stem, columns in {
            "roc": ("fpr", "tpr"),
            "pr": ("recall", "precision"),
            "calibration": ("mean_predicted", "fraction_positive", "count"),
            "val_auc": ("epoch", "val_auc"),
        }.items():
            atomic.write_text(new / f"{stem}.csv", long_csv(curves[stem], columns))
            save_figure(new / f"{stem}.png", stem, row, curves[stem])

    log_to_runs(runs, row, run_ids, per_seed, curves, report, report_dir)
    logger.info(
        "%s: test AUC %.4f ± %.4f over seeds %s",
        *(row, mean["test_auc"], std["test_auc"], list(seeds)),
    )
    return report


def log_to_runs(
    runs: tracking.FinishedRuns,
    name: str,
    run_ids: dict[int, str],
    per_seed: dict[int, dict[str, float]],
    curves: dict[str, dict[int, metrics.Curve]],
    report: dict,
    report_dir: Path,
) -> None:
    """Each seed's test metrics and figures to its training run; the mean and std, and
    the reports, to the model's parent run."""
    for seed, run_id in run_ids.items():
        with tempfile.TemporaryDirectory() as tmp:
            figures = [Path(tmp) / f"{stem}.png" for stem in ("roc", "pr", "calibration")]
            for figure in figures:
                one_seed = {seed: curves[figure.stem][seed]}
                save_figure(figure, figure.stem, f"{name} seed {seed}", one_seed)
            test_metrics = {k: v for k, v in per_seed[seed].items() if k.startswith("test_")}
            runs.add(run_id, test_metrics, figures)
    aggregate = {f"mean_{k}": v for k, v in report["mean"].items()} | {
        f"std_{k}": v for k, v in report["std"].items()
    }
    parent = runs.group(list(run_ids.values()), name, aggregate, sorted(report_dir.iterdir()))
    logger.info(
        "MLflow: test metrics added to %d seed runs, grouped under run %s", len(run_ids), parent
    )


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    if args.dvc_stage:  # `evaluate@<model>` (train.models) or `evaluate_tuned@<model>`
        args.tuned = args.dvc_stage.rsplit(":", 1)[-1].startswith("evaluate_tuned@")
        models = config.tune.models if args.tuned else config.train.models
        args.model = matrix_item(args.dvc_stage, {"model": models})["model"]
    check_model_name(args.model)
    if args.tuned:
        evaluate(config.tuned(args.model), args.model, tuned_row(args.model))
    else:
        evaluate(config, args.model)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a model trained by `train`")
    which.add_argument("--dvc-stage", help="DVC's $DVC_STAGE (`evaluate@<model>`)")
    parser.add_argument(
        "--tuned", action="store_true", help="evaluate <model>_tuned (trained with --tuned)"
    )
    run_stage(main, parser)
