"""Binary classification metrics on whole score vectors (torch, any device)."""

from __future__ import annotations

import torch


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
