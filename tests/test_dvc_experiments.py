"""The project's own dvc.yaml and params.yaml in a real Git + DVC repo on small data:
`dvc repro` over models x seeds, `dvc exp run -S`, `dvc exp show`, `dvc params diff`,
`dvc metrics diff`, the MLflow runs they leave in the project's store, `dvc status` after an
edit, and params that try to reach a shell."""

import json
import os
import shutil
import subprocess
from pathlib import Path

import mlflow
import pytest
import yaml

from deepfm.data.raw import write_raw
from deepfm.data.releases.ml100k import parse_ml100k
from movielens_fixtures import write_ml100k_folder

ROOT = Path(__file__).resolve().parents[1]
METRICS = "reports/models/deepfm/metrics.json"


def run(repo: Path, *command: str) -> str:
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(command, cwd=repo, env=env, capture_output=True, text=True)
    assert done.returncode == 0, f"{' '.join(command)} failed:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture
def repo(tmp_path) -> Path:
    """A Git + DVC repo with the project's pipeline, deepfm only, and a small raw ml-100k
    committed as the `download` stage's output (as if downloaded)."""
    repo = tmp_path / "repo"
    repo.mkdir()
    shutil.copy(ROOT / "dvc.yaml", repo)
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "stages", repo / "stages", ignore=ignore)
    shutil.copytree(ROOT / "src" / "deepfm", repo / "src" / "deepfm", ignore=ignore)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"].update(models=["deepfm"], seeds=[42, 43], max_epochs=2, batch_size=256)
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (repo / ".gitignore").write_text("mlflow.db\nmlartifacts/\n")
    tables = parse_ml100k(write_ml100k_folder(tmp_path / "release"))
    write_raw(tables, repo / "data" / "raw" / "ml-100k", "ml-100k")

    run(repo, "git", "init", "-q")
    run(repo, "git", "config", "user.email", "test@example.com")
    run(repo, "git", "config", "user.name", "test")
    run(repo, "dvc", "init", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", repo / ".dvc" / "plots")
    run(repo, "dvc", "commit", "-f", "download")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "pipeline and raw data")
    return repo


def finished_runs(repo: Path) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(tracking_uri=f"sqlite:///{repo / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("deepfm-movielens")
    return client.search_runs([experiment.experiment_id], order_by=["attributes.start_time"])


@pytest.mark.slow
def test_repro_then_an_experiment_with_a_param_override(repo):
    run(repo, "dvc", "repro")
    board = json.loads((repo / "reports/leaderboard.json").read_text())
    assert [row["model"] for row in board] == ["deepfm"]
    assert "up to date" in run(repo, "dvc", "status")
    run(repo, "git", "add", "-A")
    run(repo, "git", "commit", "-qm", "baseline")
    baseline = json.loads((repo / METRICS).read_text())

    run(repo, "dvc", "exp", "run", "-S", "train.lr=0.003", "-n", "faster-lr")

    # `dvc exp show --json`: the baseline commit, and under it the named experiment
    # with its overridden param and its own test metrics.
    shown = json.loads(run(repo, "dvc", "exp", "show", "--json"))
    head = next(rev for rev in shown if rev["rev"] != "workspace")
    [experiment] = [rev for group in head["experiments"] for rev in group["revs"]]
    assert experiment["name"] == "faster-lr"
    params = experiment["data"]["params"]["params.yaml"]["data"]
    assert params["train"]["lr"] == 0.003 and params["train"]["models"] == ["deepfm"]
    metrics = experiment["data"]["metrics"][METRICS]["data"]
    assert metrics["test_auc"] != baseline["test_auc"]
    assert head["data"]["metrics"][METRICS]["data"]["test_auc"] == baseline["test_auc"]

    # The workspace holds the experiment's results: diffs against the last commit.
    params_diff = json.loads(run(repo, "dvc", "params", "diff", "--json"))
    lr_diff = params_diff["params.yaml"]["train.lr"]
    assert (lr_diff["old"], lr_diff["new"]) == (0.001, 0.003)
    metrics_diff = json.loads(run(repo, "dvc", "metrics", "diff", "--json"))
    assert metrics_diff[METRICS]["test_auc"]["old"] == baseline["test_auc"]
    assert metrics_diff[METRICS]["test_auc"]["new"] == metrics["test_auc"]

    # Both trainings are in the project's MLflow store, once each, complete.
    runs = finished_runs(repo)
    assert [r.data.params["train.lr"] for r in runs] == ["0.001", "0.003"]
    for mlflow_run in runs:
        assert mlflow_run.info.status == "FINISHED"
        assert {"val_auc", "test_auc"} <= set(mlflow_run.data.metrics)
    assert runs[1].data.metrics["test_auc"] == pytest.approx(metrics["test_auc"])


def stages_to_run(repo: Path) -> set[str]:
    """The stages `dvc status` says changed."""
    return set(json.loads(run(repo, "dvc", "status", "--json")))


@pytest.mark.slow
def test_editing_a_source_file_reruns_exactly_the_stages_that_run_it(repo):
    run(repo, "dvc", "repro")
    assert stages_to_run(repo) == set()
    edits = {
        "src/deepfm/leaderboard.py": {"leaderboard"},
        "src/deepfm/evaluation.py": {"evaluate@deepfm"},
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


@pytest.mark.slow
def test_a_model_name_from_params_never_reaches_a_shell(repo):
    """DVC pastes `${...}` values into the command it gives a shell; the stages take their
    model and seed from `$DVC_STAGE` instead, so this name is an unknown model, not code."""
    name = "fm; touch pwned; echo"
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["train"]["models"] = [name]
    params["model"][name] = {}
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    env = {key: value for key, value in os.environ.items() if key != "MLFLOW_TRACKING_URI"}
    done = subprocess.run(
        ["dvc", "repro", f"train@{name}-42"], cwd=repo, env=env, capture_output=True, text=True
    )
    assert done.returncode != 0
    assert "unknown key 'model.fm; touch pwned; echo'" in done.stdout + done.stderr
    assert not (repo / "pwned").exists()
    assert not list(repo.rglob("pwned"))
