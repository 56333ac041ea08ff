"""AUC and logloss against scikit-learn on random and tied scores."""

import numpy as np
import pytest
import torch
from sklearn.metrics import log_loss as sk_log_loss
from sklearn.metrics import roc_auc_score

from deepfm.metrics import log_loss, roc_auc


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_auc_matches_sklearn_with_ties(seed):
    rng = np.random.default_rng(seed)
    labels = rng.integers(0, 2, 5000)
    scores = np.round(rng.normal(size=5000) + labels * 0.5, 1)  # many ties
    assert roc_auc(torch.tensor(labels), torch.tensor(scores)) == pytest.approx(
        roc_auc_score(labels, scores), abs=1e-12
    )


def test_auc_extremes_and_single_class():
    labels = torch.tensor([0, 0, 1, 1])
    assert roc_auc(labels, torch.tensor([0.1, 0.2, 0.3, 0.4])) == 1.0
    assert roc_auc(labels, torch.tensor([0.4, 0.3, 0.2, 0.1])) == 0.0
    assert roc_auc(labels, torch.zeros(4)) == 0.5
    with pytest.raises(ValueError, match="both positive and negative"):
        roc_auc(torch.ones(3), torch.rand(3))


def test_logloss_matches_sklearn_from_logits():
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 2, 1000)
    logits = rng.normal(size=1000) * 3
    expected = sk_log_loss(labels, 1 / (1 + np.exp(-logits)))
    assert log_loss(torch.tensor(labels), torch.tensor(logits)) == pytest.approx(expected, 1e-9)
