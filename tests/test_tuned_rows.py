"""Tuned configurations in the pipeline: `tune.models` lists a model, its
`reports/tuning/<model>.yaml` (what `deepfm tune` writes) is trained on every training seed by
`train_tuned@<model>-<seed>`, evaluated by `evaluate_tuned@<model>`, and sits on the
leaderboard as `<model>_tuned` beside the default row."""

import json
import os
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from conftest import ROOT, run
from deepfm.models.registry import load_model
from deepfm.tune_config import write_tuned_params

TUNED = {"train.lr": 0.003, "model.deepfm.hidden_units": [32], "feature.fm_embed_dim": 8}


def pretend_a_study_ran(repo: Path) -> None:
    """`TUNED` as the output of `tune@deepfm`, recorded by DVC (a real study: test_tuning)."""
    write_tuned_params(repo / "reports/tuning/deepfm.yaml", TUNED, "by hand, for a test")
    (repo / "reports/tuning/deepfm.trials.csv").write_text("number,state,value\n")
    for figure in ("history", "importance"):
        (repo / f"reports/tuning/deepfm.{figure}.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    run(repo, "dvc", "commit", "-f", "tune@deepfm")


def list_tuned_models(repo: Path, models: list[str]) -> None:
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["tune"]["models"] = models
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


@pytest.mark.slow
def test_a_tuned_configuration_is_trained_evaluated_and_ranked_beside_the_default(
    reproduced_repo,
):
    repo = reproduced_repo  # `dvc repro` already trained the default row
    list_tuned_models(repo, ["deepfm"])
    pretend_a_study_ran(repo)
    run(repo, "dvc", "repro")

    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert sorted(row["model"] for row in board) == ["deepfm", "deepfm_tuned"]
    for seed in (42, 43):
        saved = load_model(repo / f"models/deepfm_tuned/seed-{seed}/model.pt")
        assert saved.name == "deepfm" and saved.seed == seed
        assert saved.config.train.lr == 0.003
        assert saved.config.model.deepfm.hidden_units == (32,)
        assert saved.config.feature.fm_embed_dim == 8
        default = load_model(repo / f"models/deepfm/seed-{seed}/model.pt")
        assert default.config.train.lr == 0.001  # the default row keeps params.yaml
    report = json.loads((repo / "reports/models/deepfm_tuned/metrics.json").read_text())
    assert sorted(report["seeds"]) == ["42", "43"]

    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfm-movielens")
    runs = client.search_runs([experiment.experiment_id], "tags.model = 'deepfm_tuned'")
    seed_runs = [r for r in runs if "seed" in r.data.tags]
    assert sorted(r.info.run_name for r in seed_runs) == [
        "deepfm_tuned-seed-42",
        "deepfm_tuned-seed-43",
    ]
    for seed_run in seed_runs:
        assert seed_run.data.params["train.lr"] == "0.003"
        assert seed_run.data.tags["architecture"] == "deepfm"
        assert not any(key.startswith("tune.") for key in seed_run.data.params)
    assert client.get_registered_model("deepfm_tuned-ml-100k").name

    # A code edit retrains the tuned rows with the new code but never reruns the study.
    assert json.loads(run(repo, "dvc", "status", "--json")) == {}
    trainer = repo / "src/deepfm/training/trainer.py"
    trainer.write_text(trainer.read_text() + "# an edit\n")
    changed = {name.split(":")[-1] for name in json.loads(run(repo, "dvc", "status", "--json"))}
    assert changed == {
        "train@deepfm-42",
        "train@deepfm-43",
        "train_tuned@deepfm-42",
        "train_tuned@deepfm-43",
    }

    # A new default for a searched setting retrains the rows but does not search again.
    params_path = repo / "params.yaml"
    params = yaml.safe_load(params_path.read_text())
    params["train"]["lr"] = 0.0005
    params_path.write_text(yaml.safe_dump(params, sort_keys=False))
    changed = {name.split(":")[-1] for name in json.loads(run(repo, "dvc", "status", "--json"))}
    assert "train@deepfm-42" in changed
    assert not any(name.startswith("tune@") for name in changed)


@pytest.mark.slow
def test_train_tuned_without_a_tuning_file_fails_in_one_line_naming_it(workspace):
    list_tuned_models(workspace, ["deepfm"])
    train_py = str(ROOT / "stages/train.py")
    done = subprocess.run(
        [sys.executable, train_py, "--tuned", "--model", "deepfm", "--seed", "42"],
        cwd=workspace,
        capture_output=True,
        text=True,
        env=os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{workspace / 'mlflow.db'}"},
    )
    assert done.returncode == 1
    assert "reports/tuning/deepfm.yaml not found" in done.stderr
    assert "deepfm tune --model deepfm" in done.stderr
    assert not (workspace / "models").exists()


def test_a_tuned_file_may_only_change_what_a_trial_may(tmp_path, monkeypatch):
    from deepfm.config import ConfigError, ExperimentConfig

    monkeypatch.chdir(tmp_path)
    write_tuned_params(tmp_path / "reports/tuning/deepfm.yaml", {"data.seed": 7}, "bad")
    with pytest.raises(ConfigError, match=r"reports/tuning/deepfm.yaml: .*'data.seed'"):
        ExperimentConfig().tuned("deepfm")
    write_tuned_params(tmp_path / "reports/tuning/deepfm.yaml", {"train.lr": -1.0}, "bad")
    with pytest.raises(ConfigError, match=r"reports/tuning/deepfm.yaml: train.lr must be > 0"):
        ExperimentConfig().tuned("deepfm")
