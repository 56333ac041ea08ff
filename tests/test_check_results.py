"""`.ci/check_results.py`: bit for bit on the machine kind that trained the committed results,
within seed noise on another (whose CPU kernels round differently)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
spec = importlib.util.spec_from_file_location("check_results", ROOT / ".ci" / "check_results.py")
check_results = importlib.util.module_from_spec(spec)
spec.loader.exec_module(check_results)


def diff(auc: tuple[float, float], logloss: tuple[float, float]) -> dict:
    """A `dvc metrics diff --json` of one train.json: committed and reproduced values."""
    return {
        "models/fm/seed-42/train.json": {
            "best_val_auc": {"old": auc[0], "new": auc[1]},
            "best_val_logloss": {"old": logloss[0], "new": logloss[1]},
            "train_seconds": {"old": 4.4, "new": 1.5},
        }
    }


def test_the_committed_kind_is_held_to_1e_4_and_to_the_bit():
    same = diff((0.7742, 0.7742), (0.5644, 0.5644))
    assert check_results.compare(same, same_kind=True) == ([], 2, True)  # timings aside
    drifted, compared, identical = check_results.compare(
        diff((0.7742, 0.7744), (0.5644, 0.5644)), same_kind=True
    )
    assert compared == 2 and not identical
    assert drifted == [
        "models/fm/seed-42/train.json: best_val_auc committed 0.7742, reproduced 0.7744"
    ]


def test_another_kind_passes_the_measured_differences_and_not_a_real_drop():
    """The largest differences measured between two kinds (0.0012 AUC, 0.0056 logloss) pass;
    an AUC 0.01 lower, a logloss 0.03 higher do not."""
    measured = diff((0.7864, 0.7852), (0.5627, 0.5571))
    assert check_results.compare(measured, same_kind=False)[0] == []
    assert check_results.compare(measured, same_kind=True)[0] != []
    worse = diff((0.7864, 0.7764), (0.5627, 0.5927))
    assert len(check_results.compare(worse, same_kind=False)[0]) == 2
