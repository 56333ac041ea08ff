"""The multi-seed leaderboard: mean ± std, paired differences, the seed-noise note, and
what tuning bought each tuned model."""

from __future__ import annotations

import statistics

import pytest

from deepfm.leaderboard import (
    LeaderboardError,
    gain_note,
    leaderboard_rows,
    markdown,
    noise_note,
)


def report(aucs: dict[str, float], parameters: int = 100) -> dict:
    """A metrics.json as evaluate writes it, with the given test AUC per seed."""
    seeds = {
        seed: {
            "test_auc": auc,
            "test_logloss": 1 - auc,
            "samples_per_second": 1000.0,
            "epochs_run": 5,
        }
        for seed, auc in aucs.items()
    }
    return {"seeds": seeds, "parameters": parameters}


REPORTS = {
    "fm": report({"42": 0.770, "43": 0.772, "44": 0.771}),
    "deepfm": report({"42": 0.786, "43": 0.783, "44": 0.784}),
    "dnn": report({"42": 0.787, "43": 0.780, "44": 0.782}),
}


def test_rows_are_sorted_by_mean_auc_with_sample_std():
    rows = leaderboard_rows(REPORTS)
    assert [row["model"] for row in rows] == ["deepfm", "dnn", "fm"]
    deepfm = rows[0]
    assert deepfm["test_auc_mean"] == pytest.approx(statistics.fmean([0.786, 0.783, 0.784]))
    assert deepfm["test_auc_std"] == pytest.approx(statistics.stdev([0.786, 0.783, 0.784]))
    assert deepfm["seeds"] == [42, 43, 44]


def test_paired_differences_are_taken_seed_by_seed():
    rows = {row["model"]: row for row in leaderboard_rows(REPORTS)}
    assert rows["dnn"]["auc_difference_to_best"] == pytest.approx([0.001, -0.003, -0.002])
    assert rows["fm"]["auc_difference_to_best"] == pytest.approx([-0.016, -0.011, -0.013])
    assert rows["deepfm"]["note"] == "best"
    assert rows["dnn"]["note"] == "within seed noise (sign changes across seeds)"
    assert rows["fm"]["note"] == "below in every seed"


def test_noise_note_with_one_seed_says_the_spread_is_unknown():
    assert noise_note([-0.01]) == "one seed: spread unknown"


def test_models_with_different_seeds_are_refused_naming_the_model():
    reports = dict(REPORTS, fm=report({"42": 0.77}))
    with pytest.raises(LeaderboardError, match=r"reports/models/\w+/metrics.json has seeds"):
        leaderboard_rows(reports)


def test_markdown_shows_mean_std_differences_and_every_seed():
    text = markdown(leaderboard_rows(REPORTS))
    assert "| deepfm | 0.7843 ± 0.0015 |" in text
    assert "-0.0013 (+0.0010, -0.0030, -0.0020) | within seed noise" in text
    assert "| fm | 0.7700 / 0.2300 | 0.7720 / 0.2280 | 0.7710 / 0.2290 |" in text


def test_tuned_rows_are_compared_with_their_defaults_seed_by_seed():
    reports = REPORTS | {
        "deepfm_tuned": report({"42": 0.790, "43": 0.785, "44": 0.786}),
        "fm_tuned": report({"42": 0.771, "43": 0.771, "44": 0.772}),
    }
    rows = {row["model"]: row for row in leaderboard_rows(reports)}
    deepfm = rows["deepfm_tuned"]
    assert deepfm["default_model"] == "deepfm"
    assert deepfm["auc_gain_over_default"] == pytest.approx([0.004, 0.002, 0.002])
    assert deepfm["gain_note"] == "above in every seed"
    assert rows["fm_tuned"]["gain_note"] == "within seed noise (sign changes across seeds)"
    assert "default_model" not in rows["deepfm"]
    text = markdown(list(rows.values()))
    assert "| deepfm_tuned | 0.7843 | 0.7870 | +0.0027 (+0.0040, +0.0020, +0.0020) | above" in text


def test_gain_note_reads_the_signs_of_the_paired_gains():
    assert gain_note([0.001, 0.002]) == "above in every seed"
    assert gain_note([-0.001, -0.002]) == "below in every seed"
    assert gain_note([0.001, -0.002]) == "within seed noise (sign changes across seeds)"
    assert gain_note([0.001]) == "one seed: spread unknown"
