"""Binary classification metrics on whole score vectors (torch, any device).

AUC (tie-aware) and logloss, which training validates on; accuracy, calibration, ROC and PR
curves, which `evaluate` adds on the test split. Every function takes 0/1 `labels` (N,) and
scores, logits or probabilities (N,) as tensors and works on whole vectors (no per-row
Python). Curves come back as dicts of equal-length 1-D tensors, ready to write as CSV
columns.
"""

from __future__ import annotations

import torch

Curve = dict[str, torch.Tensor]


def accuracy(labels: torch.Tensor, probabilities: torch.Tensor, threshold: float = 0.5) -> float:
    """Share of rows where `probabilities >= threshold` equals the label."""
    predicted = (probabilities.flatten() >= threshold).double()
    return float((predicted == labels.double().flatten()).double().mean())


def calibration_bins(labels: torch.Tensor, probabilities: torch.Tensor, bins: int = 10) -> Curve:
    """Equal-width probability bins on [0, 1]; the non-empty ones, in order.

    Bin i holds (i/bins, (i+1)/bins], the first also 0 (as sklearn's `calibration_curve`).
    Returns `mean_predicted`, `fraction_positive` and `count` per bin.
    """
    labels = labels.double().flatten()
    probabilities = probabilities.double().flatten()
    inner_edges = torch.linspace(0, 1, bins + 1, dtype=torch.float64)[1:-1]
    bin_ids = torch.bucketize(probabilities, inner_edges)
    count = torch.bincount(bin_ids, minlength=bins)
    predicted_sum = torch.bincount(bin_ids, weights=probabilities, minlength=bins)
    positive_sum = torch.bincount(bin_ids, weights=labels, minlength=bins)
    filled = count > 0
    return {
        "mean_predicted": predicted_sum[filled] / count[filled].double(),
        "fraction_positive": positive_sum[filled] / count[filled].double(),
        "count": count[filled],
    }


def expected_calibration_error(
    labels: torch.Tensor, probabilities: torch.Tensor, bins: int = 10
) -> float:
    """Row-weighted mean |fraction positive - mean predicted| over equal-width bins."""
    table = calibration_bins(labels, probabilities, bins)
    gaps = (table["fraction_positive"] - table["mean_predicted"]).abs()
    weights = table["count"].double() / table["count"].sum()
    return float((gaps * weights).sum())


def _counts_by_threshold(labels: torch.Tensor, scores: torch.Tensor) -> Curve:
    """True and false positives when predicting positive for scores >= each distinct score.

    Thresholds are in decreasing order.
    """
    labels = labels.double().flatten()
    scores = scores.double().flatten()
    sorted_scores, order = torch.sort(scores, descending=True, stable=True)
    true_positives = torch.cumsum(labels[order], 0)
    # The last row of each run of tied scores closes that threshold.
    last_of_group = torch.ones_like(sorted_scores, dtype=torch.bool)
    last_of_group[:-1] = sorted_scores[1:] != sorted_scores[:-1]
    rows = torch.arange(1, len(scores) + 1, dtype=torch.float64)
    return {
        "threshold": sorted_scores[last_of_group],
        "tp": true_positives[last_of_group],
        "fp": rows[last_of_group] - true_positives[last_of_group],
    }


def _downsample(curve: Curve, max_points: int | None) -> Curve:
    """At most `max_points` evenly spaced points, the first and the last kept."""
    length = len(next(iter(curve.values())))
    if max_points is None or length <= max_points:
        return curve
    keep = torch.linspace(0, length - 1, max_points).round().long().unique()
    return {name: values[keep] for name, values in curve.items()}


def roc_points(labels: torch.Tensor, scores: torch.Tensor, max_points: int | None = 200) -> Curve:
    """ROC curve from (0, 0) at threshold +inf to (1, 1): `threshold`, `fpr`, `tpr`.

    With `max_points=None` it equals sklearn's `roc_curve(..., drop_intermediate=False)`.
    """
    counts = _counts_by_threshold(labels, scores)
    start = torch.zeros(1, dtype=torch.float64)
    curve = {
        "threshold": torch.cat(
            [torch.full((1,), torch.inf, dtype=torch.float64), counts["threshold"]]
        ),
        "fpr": torch.cat([start, counts["fp"] / counts["fp"][-1]]),
        "tpr": torch.cat([start, counts["tp"] / counts["tp"][-1]]),
    }
    return _downsample(curve, max_points)


def pr_points(labels: torch.Tensor, scores: torch.Tensor, max_points: int | None = 200) -> Curve:
    """Precision and recall at each distinct score as threshold: `threshold`, `recall`,
    `precision`, thresholds decreasing (recall increasing)."""
    counts = _counts_by_threshold(labels, scores)
    curve = {
        "threshold": counts["threshold"],
        "recall": counts["tp"] / counts["tp"][-1],
        "precision": counts["tp"] / (counts["tp"] + counts["fp"]),
    }
    return _downsample(curve, max_points)


def roc_auc(labels: torch.Tensor, scores: torch.Tensor) -> float:
    """Area under the ROC curve, ties counted half (the Mann-Whitney U statistic).

    Args:
        labels: (N,) 0/1 values.
        scores: (N,) any monotone score (logits or probabilities).
    """
    labels = labels.double().flatten()
    scores = scores.double().flatten()
    positives = labels.sum()
    negatives = labels.numel() - positives
    if positives == 0 or negatives == 0:
        raise ValueError("AUC needs both positive and negative labels")
    sorted_scores, order = torch.sort(scores)
    # Average rank (1-based) of each group of tied scores.
    _, inverse, counts = torch.unique_consecutive(
        sorted_scores, return_inverse=True, return_counts=True
    )
    group_end = torch.cumsum(counts, 0).double()
    group_rank = group_end - (counts.double() - 1) / 2
    ranks = group_rank[inverse]
    positive_rank_sum = (ranks * labels[order]).sum()
    return float((positive_rank_sum - positives * (positives + 1) / 2) / (positives * negatives))


def log_loss(labels: torch.Tensor, logits: torch.Tensor) -> float:
    """Mean binary cross-entropy of the sigmoid of `logits`, computed stably from logits."""
    return float(
        torch.nn.functional.binary_cross_entropy_with_logits(
            logits.double().flatten(), labels.double().flatten()
        )
    )
