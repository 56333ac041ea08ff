"""The project's own dvc.yaml and params.yaml in a real Git + DVC repo on small data:
`dvc repro` over models x seeds, `dvc exp run -S`, `dvc exp show`, `dvc params diff`,
`dvc metrics diff`, the MLflow runs they leave in the project's store, `dvc status` after an
edit, and params that try to reach a shell."""

import json
from pathlib import Path

import mlflow
import pytest

from conftest import run

METRICS = "reports/models/deepfm/metrics.json"


def finished_runs(repo: Path) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfm-movielens")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


@pytest.mark.slow
def test_repro_then_an_experiment_with_a_param_override(reproduced_repo):
    repo = reproduced_repo  # after `dvc repro`, its results committed as "baseline"
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert [(row["model"], row["seeds"]) for row in board] == [("deepfm", [42, 43])]
    for seed in (42, 43):
        assert (repo / f"models/deepfm/seed-{seed}/model.pt").is_file()
    assert "up to date" in run(repo, "dvc", "status")
    assert run(repo, "git", "status", "--porcelain") == ""
    baseline = json.loads((repo / METRICS).read_text())
    assert set(baseline["seeds"]) == {"42", "43"}

    run(repo, "dvc", "exp", "run", "-S", "train.lr=0.003", "-n", "faster-lr")

    # `dvc exp show --json`: the baseline commit, and under it the named experiment
    # with its overridden param and its own test metrics (per seed and mean).
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    head = next(rev for rev in shown if rev["rev"] != "workspace")
    [experiment] = [rev for group in head["experiments"] for rev in group["revs"]]
    assert experiment["name"] == "faster-lr"
    params = experiment["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["lr"] == 0.003 and params["train"]["models"] == ["deepfm"]
    metrics = experiment["data"]["metrics"][METRICS]["data"]
    assert metrics["mean"]["test_auc"] != baseline["mean"]["test_auc"]
    assert head["data"]["metrics"][METRICS]["data"]["mean"] == baseline["mean"]

    # The workspace holds the experiment's results: diffs against the last commit.
    params_diff = json.loads(run(repo, "dvc", "params", "diff", "--json"))
    lr_diff = params_diff["params.yaml"]["train.lr"]
    assert (lr_diff["old"], lr_diff["new"]) == (0.001, 0.003)
    metrics_diff = json.loads(run(repo, "dvc", "metrics", "diff", "--json"))[METRICS]
    assert metrics_diff["mean.test_auc"]["old"] == baseline["mean"]["test_auc"]
    assert metrics_diff["mean.test_auc"]["new"] == metrics["mean"]["test_auc"]
    assert metrics_diff["seeds.43.test_auc"]["new"] == metrics["seeds"]["43"]["test_auc"]

    # Every training is in the project's MLflow store once, complete, nested under its
    # experiment's parent run for deepfm.
    runs = finished_runs(repo)
    seed_runs = [r for r in runs if "seed" in r.data.params]
    assert sorted((r.data.params["train.lr"], r.data.params["seed"]) for r in seed_runs) == [
        ("0.001", "42"),
        ("0.001", "43"),
        ("0.003", "42"),
        ("0.003", "43"),
    ]
    parents = {r.info.run_id: r for r in runs if "seed" not in r.data.params}
    assert len(parents) == 2
    for mlflow_run in seed_runs:
        assert mlflow_run.info.status == "FINISHED"
        assert {"val_auc", "test_auc"} <= set(mlflow_run.data.metrics)
        assert mlflow_run.data.tags["mlflow.parentRunId"] in parents
    newest = [r for r in seed_runs if r.data.params["train.lr"] == "0.003"]
    by_seed = {r.data.params["seed"]: r.data.metrics["test_auc"] for r in newest}
    assert by_seed["43"] == pytest.approx(metrics["seeds"]["43"]["test_auc"])


def stages_to_run(repo: Path) -> set[str]:
    """The stages `dvc status` says changed."""
    return set(json.loads(run(repo, "dvc", "status", "--json")))


@pytest.mark.slow
def test_editing_a_source_file_reruns_exactly_the_stages_that_run_it(reproduced_repo):
    repo = reproduced_repo  # after `dvc repro`
    assert stages_to_run(repo) == set()
    edits = {
        "src/deepfm/leaderboard.py": {"leaderboard"},
        "stages/evaluate.py": {"evaluate@deepfm"},
        "src/deepfm/training/trainer.py": {"train@deepfm-42", "train@deepfm-43"},
        "src/deepfm/data/dataset.py": {"train@deepfm-42", "train@deepfm-43", "evaluate@deepfm"},
        "src/deepfm/config.py": {
            "download",
            "prepare",
            "train@deepfm-42",
            "train@deepfm-43",
            "evaluate@deepfm",
            "leaderboard",
        },
    }
    for path, expected in edits.items():
        source = repo / path
        original = source.read_text()
        source.write_text(original + "# an edit\n")
        assert {name.split(":")[-1] for name in stages_to_run(repo)} == expected, path
        source.write_text(original)
