"""Evaluation metrics against sklearn and hand cases; the real `evaluate` stage on small data."""

import csv
import json
import statistics
import subprocess
import sys
from pathlib import Path

import mlflow
import numpy as np
import pytest
import torch
import yaml
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_auc_score, roc_curve

from deepfm import metrics
from deepfm.data.dataset import CTRDataset
from deepfm.metrics import log_loss, roc_auc
from deepfm.models.registry import load_model

ROOT = Path(__file__).resolve().parents[1]


def random_case(rows: int = 500, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Labels and probabilities, rounded to two decimals so that many scores tie."""
    generator = torch.Generator().manual_seed(seed)
    probabilities = (
        torch.rand(rows, generator=generator, dtype=torch.float64).mul(100).round() / 100
    )
    labels = (torch.rand(rows, generator=generator, dtype=torch.float64) < probabilities).double()
    return labels, probabilities


def test_accuracy_hand_cases():
    labels = torch.tensor([1.0, 0.0, 1.0, 0.0])
    assert metrics.accuracy(labels, torch.tensor([0.9, 0.1, 0.5, 0.49])) == 1.0
    assert metrics.accuracy(labels, torch.tensor([0.1, 0.9, 0.4, 0.6])) == 0.0
    assert metrics.accuracy(labels, torch.tensor([0.9, 0.9, 0.1, 0.1])) == 0.5


def test_roc_points_match_sklearn():
    labels, scores = random_case()
    curve = metrics.roc_points(labels, scores, max_points=None)
    fpr, tpr, thresholds = roc_curve(labels.numpy(), scores.numpy(), drop_intermediate=False)
    np.testing.assert_allclose(curve["fpr"].numpy(), fpr)
    np.testing.assert_allclose(curve["tpr"].numpy(), tpr)
    np.testing.assert_allclose(curve["threshold"][1:].numpy(), thresholds[1:])
    assert np.trapezoid(curve["tpr"].numpy(), curve["fpr"].numpy()) == pytest.approx(
        roc_auc_score(labels.numpy(), scores.numpy())
    )


def test_pr_points_match_sklearn():
    labels, scores = random_case()
    curve = metrics.pr_points(labels, scores, max_points=None)
    precision, recall, thresholds = precision_recall_curve(
        labels.numpy(), scores.numpy(), drop_intermediate=False
    )
    # sklearn orders thresholds increasing and appends (recall 0, precision 1); compare
    # at every threshold it reports.
    by_threshold = {
        t: (p, r)
        for t, p, r in zip(
            curve["threshold"].tolist(),
            curve["precision"].tolist(),
            curve["recall"].tolist(),
            strict=True,
        )
    }
    for t, p, r in zip(thresholds, precision[:-1], recall[:-1], strict=True):
        assert by_threshold[t] == pytest.approx((p, r))


def test_curves_of_perfect_and_inverted_predictions():
    labels = torch.tensor([0.0, 0.0, 1.0, 1.0])
    perfect = torch.tensor([0.1, 0.2, 0.8, 0.9])
    roc = metrics.roc_points(labels, perfect)
    assert roc["fpr"].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]
    assert roc["tpr"].tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    pr = metrics.pr_points(labels, perfect)
    assert pr["precision"].tolist() == [1.0, 1.0, 2 / 3, 0.5]
    assert pr["recall"].tolist() == [0.5, 1.0, 1.0, 1.0]
    inverted = metrics.roc_points(labels, 1 - perfect)
    assert inverted["fpr"].tolist() == [0.0, 0.5, 1.0, 1.0, 1.0]
    assert inverted["tpr"].tolist() == [0.0, 0.0, 0.0, 0.5, 1.0]


def test_curves_are_downsampled_keeping_both_ends():
    labels, scores = random_case(rows=5000)
    scores = scores + torch.linspace(0, 1e-3, 5000, dtype=torch.float64)  # all distinct
    full = metrics.roc_points(labels, scores, max_points=None)
    small = metrics.roc_points(labels, scores, max_points=200)
    assert len(full["fpr"]) == 5001 and len(small["fpr"]) == 200
    assert (small["fpr"][0], small["tpr"][0]) == (0.0, 0.0)
    assert (small["fpr"][-1], small["tpr"][-1]) == (1.0, 1.0)
    assert bool((small["fpr"].diff() >= 0).all())
    assert len(metrics.pr_points(labels, scores, max_points=200)["recall"]) == 200


def test_calibration_bins_match_sklearn():
    labels, probabilities = random_case()
    table = metrics.calibration_bins(labels, probabilities, bins=10)
    fraction, mean = calibration_curve(labels.numpy(), probabilities.numpy(), n_bins=10)
    np.testing.assert_allclose(table["fraction_positive"].numpy(), fraction)
    np.testing.assert_allclose(table["mean_predicted"].numpy(), mean)
    assert table["count"].sum() == len(labels)


def test_ece_against_independent_computation():
    labels, probabilities = random_case()
    # Bin with numpy's right-closed edges, as calibration_curve does, then weight by rows.
    bin_ids = np.searchsorted(np.linspace(0, 1, 11)[1:-1], probabilities.numpy())
    expected = 0.0
    for b in np.unique(bin_ids):
        rows = bin_ids == b
        gap = labels.numpy()[rows].mean() - probabilities.numpy()[rows].mean()
        expected += rows.mean() * abs(gap)
    assert metrics.expected_calibration_error(labels, probabilities) == pytest.approx(expected)


def test_ece_hand_cases():
    # Two perfectly calibrated bins: 0.25 with 1 of 4 positive, 0.75 with 3 of 4.
    probabilities = torch.tensor([0.25] * 4 + [0.75] * 4)
    labels = torch.tensor([1.0, 0, 0, 0, 1, 1, 1, 0])
    assert metrics.expected_calibration_error(labels, probabilities) == 0.0
    # Confidently wrong everywhere: every gap is 0.95.
    inverted = torch.tensor([0.05, 0.05, 0.95, 0.95])
    wrong = torch.tensor([1.0, 1.0, 0.0, 0.0])
    assert metrics.expected_calibration_error(wrong, inverted) == pytest.approx(0.95)


def run_script(work: Path, script: str, *args: str) -> None:
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / script), "--model", "deepfm", *args],
        cwd=work,
        check=True,
        capture_output=True,
        text=True,
    )


@pytest.mark.slow
def test_evaluate_stage_writes_reports_of_every_seed_and_adds_to_their_runs(
    workspace, tmp_path, monkeypatch
):
    (tmp_path / "store").mkdir()
    uri = f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"]["seeds"] = [42, 43]
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    for seed in ("42", "43"):
        run_script(workspace, "train.py", "--seed", seed)
    client = mlflow.MlflowClient(tracking_uri=uri)
    run_ids = {
        seed: json.loads((workspace / f"models/deepfm/seed-{seed}/run.json").read_text())["run_id"]
        for seed in ("42", "43")
    }
    trained = {seed: client.get_run(run_id).info for seed, run_id in run_ids.items()}
    run_script(workspace, "evaluate.py")

    # metrics.json agrees with scores recomputed from each saved model.
    report = json.loads((workspace / "reports/models/deepfm/metrics.json").read_text())
    assert set(report) == {"seeds", "mean", "std", "parameters", "test_rows"}
    assert set(report["seeds"]) == {"42", "43"}
    for seed in ("42", "43"):
        saved = load_model(workspace / f"models/deepfm/seed-{seed}/model.pt")
        test = CTRDataset.from_parquet(
            workspace / "data/processed/ml-100k/test.parquet", saved.schema
        )
        with torch.no_grad():
            logits = saved.model(test.batch(torch.arange(len(test)))[0]).double()
        probabilities = torch.sigmoid(logits)
        summary = json.loads((workspace / f"models/deepfm/seed-{seed}/train.json").read_text())
        expected = {
            "test_auc": roc_auc(test.labels, logits),
            "test_logloss": log_loss(test.labels, logits),
            "test_accuracy": metrics.accuracy(test.labels, probabilities),
            "test_predicted_positive_rate": float(probabilities.mean()),
            "test_actual_positive_rate": float(test.labels.double().mean()),
            "test_ece": metrics.expected_calibration_error(test.labels, probabilities),
        } | {
            k: summary[k]
            for k in ("best_val_auc", "best_epoch", "epochs_run", "samples_per_second")
        }
        assert set(report["seeds"][seed]) == set(expected)
        for key, value in expected.items():
            assert report["seeds"][seed][key] == pytest.approx(value, abs=1e-6), key
    for key, value in report["mean"].items():
        assert value == pytest.approx(
            statistics.fmean(report["seeds"][s][key] for s in ("42", "43"))
        )
    assert set(report["std"]) == {"test_auc", "test_logloss", "best_val_auc"}
    for key, value in report["std"].items():
        assert value == pytest.approx(
            statistics.stdev(report["seeds"][s][key] for s in ("42", "43"))
        )
    assert report["std"]["test_auc"] > 0  # the seeds trained different models
    assert report["test_rows"] == len(test)
    assert report["parameters"] == summary["parameters"]

    headers = {
        "roc.csv": ["seed", "fpr", "tpr"],
        "pr.csv": ["seed", "recall", "precision"],
        "calibration.csv": ["seed", "mean_predicted", "fraction_positive", "count"],
        "val_auc.csv": ["seed", "epoch", "val_auc"],
    }
    for name, header in headers.items():
        with open(workspace / "reports/models/deepfm" / name) as handle:
            rows = list(csv.reader(handle))
        assert rows[0] == header, name
        assert {row[0] for row in rows[1:]} == {"42", "43"}, name
    with open(workspace / "reports/models/deepfm/val_auc.csv") as handle:
        val_auc = [row for row in csv.DictReader(handle) if row["seed"] == "43"]
    with open(workspace / "models/deepfm/seed-43/history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [(r["epoch"], r["val_auc"]) for r in val_auc] == [
        (r["epoch"], r["val_auc"]) for r in history
    ]
    for figure in ("roc.png", "pr.png", "calibration.png", "val_auc.png"):
        assert (workspace / "reports/models/deepfm" / figure).read_bytes()[:4] == b"\x89PNG"

    # Each training run, not a new one, got its test metrics and figures, and kept its
    # status and end time (the duration is the training's); a parent run groups them.
    parents = set()
    for seed, run_id in run_ids.items():
        run = client.get_run(run_id)
        assert (run.info.status, run.info.end_time) == ("FINISHED", trained[seed].end_time)
        assert run.data.metrics["test_auc"] == pytest.approx(report["seeds"][seed]["test_auc"])
        artifacts = {a.path for a in client.list_artifacts(run_id)}
        assert {"roc.png", "pr.png", "calibration.png", "history.csv"} <= artifacts
        parents.add(run.data.tags["mlflow.parentRunId"])
    (parent_id,) = parents
    parent = client.get_run(parent_id)
    assert parent.info.run_name == "deepfm" and parent.info.status == "FINISHED"
    assert parent.data.metrics["mean_test_auc"] == pytest.approx(report["mean"]["test_auc"])
    assert parent.data.metrics["std_test_auc"] == pytest.approx(report["std"]["test_auc"])
    assert "metrics.json" in {a.path for a in client.list_artifacts(parent_id)}
    assert len(client.search_runs([run.info.experiment_id])) == 3
