"""DVC stage `evaluate@<model>`: score the test split with the trained model.

Writes `reports/models/<model>/metrics.json` (test AUC, logloss, accuracy at 0.5,
predicted vs actual positive rate, ECE over 10 bins, parameter count) and the curves `roc.csv`,
`pr.csv`, `calibration.csv` beside it; adds the `test_*` metrics and `roc.png`, `pr.png`,
`calibration.png` to the model's MLflow run from `models/<model>/run.json`.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import logging
import tempfile
from pathlib import Path

import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from deepfm import atomic, evaluation, tracking
from deepfm.config import ConfigError, ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.models.registry import load_model
from deepfm.stage import run_stage
from deepfm.training.metrics import log_loss, roc_auc
from deepfm.training.trainer import Trainer, resolve_device

logger = logging.getLogger("deepfm.evaluate")

CALIBRATION_BINS = 10
CURVE_POINTS = 200


def curve_csv(curve: evaluation.Curve) -> str:
    """Columns of `curve` as CSV text, a header row first."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(curve)
    writer.writerows(zip(*(values.tolist() for values in curve.values()), strict=True))
    return buffer.getvalue()


def scalar_metrics(labels: torch.Tensor, logits: torch.Tensor) -> dict[str, float]:
    """Every scalar test metric, keys prefixed `test_`."""
    probabilities = torch.sigmoid(logits.double())
    return {
        "test_auc": roc_auc(labels, logits),
        "test_logloss": log_loss(labels, logits),
        "test_accuracy": evaluation.accuracy(labels, probabilities),
        "test_predicted_positive_rate": float(probabilities.mean()),
        "test_actual_positive_rate": float(labels.double().mean()),
        "test_ece": evaluation.expected_calibration_error(labels, probabilities, CALIBRATION_BINS),
    }


def save_figure(
    path: Path,
    x: torch.Tensor,
    y: torch.Tensor,
    title: str,
    axis_labels: tuple[str, str],
    diagonal: bool = True,
) -> None:
    """A line plot of `y` against `x` as a PNG (Agg backend), with the diagonal if asked."""
    figure = Figure(figsize=(5, 5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    if diagonal:
        axes.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=1)
    axes.plot(x.tolist(), y.tolist())
    axes.set(title=title, xlabel=axis_labels[0], ylabel=axis_labels[1], xlim=(0, 1), ylim=(0, 1.02))
    figure.savefig(path, dpi=100, bbox_inches="tight")


def evaluate(config: ExperimentConfig, name: str) -> dict[str, float]:
    model_dir, report_dir = Path("models") / name, Path("reports/models") / name
    saved = load_model(model_dir / "model.pt")
    if saved.name != name:
        raise ConfigError(f"{model_dir / 'model.pt'} holds model {saved.name!r}, not {name!r}")
    run_id = json.loads((model_dir / "run.json").read_text())["run_id"]
    test_ds = CTRDataset.from_parquet(config.data.processed_path / "test.parquet", saved.schema)
    device = resolve_device(config.train.device)
    with torch.no_grad():
        logits = Trainer(saved.model.to(device), saved.config.train, device).predict_logits(test_ds)
    logits, labels = logits.cpu(), test_ds.labels

    metrics = scalar_metrics(labels, logits)
    parameters = sum(p.numel() for p in saved.model.parameters())
    report = metrics | {"test_rows": len(test_ds), "parameters": parameters}
    atomic.write_text(report_dir / "metrics.json", json.dumps(report, indent=2) + "\n")
    probabilities = torch.sigmoid(logits.double())
    roc = evaluation.roc_points(labels, probabilities, CURVE_POINTS)
    pr = evaluation.pr_points(labels, probabilities, CURVE_POINTS)
    calibration = evaluation.calibration_bins(labels, probabilities, CALIBRATION_BINS)
    for file_name, curve in (("roc.csv", roc), ("pr.csv", pr), ("calibration.csv", calibration)):
        atomic.write_text(report_dir / file_name, curve_csv(curve))

    with tempfile.TemporaryDirectory() as tmp, tracking.RunTracker.resume(run_id) as run:
        figures = Path(tmp)
        auc, ece = metrics["test_auc"], metrics["test_ece"]
        save_figure(
            figures / "roc.png",
            roc["fpr"],
            roc["tpr"],
            f"{name} test ROC (AUC {auc:.4f})",
            ("false positive rate", "true positive rate"),
        )
        save_figure(
            figures / "pr.png",
            pr["recall"],
            pr["precision"],
            f"{name} test precision-recall",
            ("recall", "precision"),
            diagonal=False,
        )
        save_figure(
            figures / "calibration.png",
            calibration["mean_predicted"],
            calibration["fraction_positive"],
            f"{name} test calibration (ECE {ece:.4f})",
            ("mean predicted probability", "fraction positive"),
        )
        run.log_metrics(metrics)
        for figure in ("roc.png", "pr.png", "calibration.png"):
            run.log_artifact(figures / figure)
    logger.info("%s: test AUC %.4f, logloss %.4f", name, auc, metrics["test_logloss"])
    return report


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    evaluate(config, args.model)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a model trained by `train@<model>`")
    run_stage(main, parser)
