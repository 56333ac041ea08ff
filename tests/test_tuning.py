"""`deepfm tune` on small prepared data: real Optuna SQLite studies, real MLflow SQLite
stores, real training; resumed, killed, pruned, repeated and refused."""

from __future__ import annotations

import csv
import fcntl
import logging
import math
import os
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pyarrow.parquet as pq
import pytest
import torch
import yaml
from optuna.trial import TrialState

from conftest import make_workspace, small_data_config
from deepfm.__main__ import main
from deepfm.config import ExperimentConfig
from deepfm.data.prepared import prepared_data_fingerprint
from deepfm.data.raw import write_raw
from deepfm.data.releases.ml100k import parse_ml100k
from deepfm.data.schema import Schema
from deepfm.tracking.studies import STALE_REASON
from deepfm.tune_config import read_tuned_params
from deepfm.tuning import open_study
from deepfm.tuning_reports import write_reports
from deepfm.tuning_space import decode_params, search_distributions
from faults.processes import Stopped
from movielens_fixtures import write_ml100k_folder

ROOT = Path(__file__).resolve().parents[1]
STUDY = "deepfm-ml-100k"
PNG = b"\x89PNG\r\n\x1a\n"
# A float on a log scale, a plain float, and list choices (which Optuna sees as JSON texts).
SPACE = {
    "train.lr": {"low": 1e-3, "high": 3e-2, "log": True},
    "model.deepfm.hidden_units": {"choices": [[16], [32, 16]]},
    "model.deepfm.dropout": {"low": 0.0, "high": 0.3},
}
REFERENCE_TRIALS = 3
REPORTS = ("deepfm.yaml", "deepfm.trials.csv", "deepfm.history.png", "deepfm.importance.png")


# --- project folders and how to look at what a study left ----------------------------------


@pytest.fixture(scope="module", autouse=True)
def one_thread() -> Iterator[None]:
    """Train on one CPU thread meanwhile. With other processes on the machine's cores, torch's
    two threads wait on each other (a trial here took 15 s instead of 1.3 s). Every study of
    this module (subprocesses too: `THREAD_ENV`) trains alike, so results compare bit for bit."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


THREAD_ENV = {"OMP_NUM_THREADS": "1"}


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A prepared project (2 epochs of batch 256 on the CPU, `SPACE`, warm-up 1 epoch) with
    an empty MLflow store `mlflow.db`, built once; tests copy it."""
    root = tmp_path_factory.mktemp("tuning-template")
    data = small_data_config(root)
    write_raw(parse_ml100k(write_ml100k_folder(root / "release")), data.raw_path, data.dataset)
    work = make_workspace(root / "work", Path(data.raw_dir))
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["train"]["device"] = "cpu"
    params["tune"].update(warmup_epochs=1, space={"deepfm": SPACE})
    (work / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    mlflow.MlflowClient(store_uri(work)).search_experiments()  # makes the store's tables
    return work


def store_uri(work: Path) -> str:
    return f"sqlite:///{work / 'mlflow.db'}"


def copy_project(template: Path, where: Path, patch: pytest.MonkeyPatch) -> Path:
    """A copy of `template` at `where`, made the working folder and MLflow store."""
    work = shutil.copytree(template, where)
    patch.chdir(work)
    patch.setenv("MLFLOW_TRACKING_URI", store_uri(work))
    return work


@pytest.fixture
def project(template: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh copy of `template` for one test, as its working folder and store."""
    return copy_project(template, tmp_path / "work", monkeypatch)


@pytest.fixture(scope="module")
def reference(template: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A copy of `template` after one uninterrupted `deepfm tune --trials 3`."""
    with pytest.MonkeyPatch.context() as patch:
        work = copy_project(template, tmp_path_factory.mktemp("reference") / "work", patch)
        tune("--trials", str(REFERENCE_TRIALS))
    yield work


def tune(*args: str) -> None:
    """`deepfm tune --model deepfm ARGS` in this process, in the working folder."""
    main(["tune", "--model", "deepfm", *args])


def load_study(work: Path) -> optuna.Study:
    return optuna.load_study(study_name=STUDY, storage=f"sqlite:///{work / 'tuning/deepfm.db'}")


def finished(work: Path) -> list[tuple[Any, ...]]:
    """What each finished trial was: its params, value and per-epoch values, in order."""
    return [
        (trial.params, trial.value, trial.intermediate_values, trial.state)
        for trial in load_study(work).trials
        if trial.state in (TrialState.COMPLETE, TrialState.PRUNED)
    ]


def runs(work: Path, kind: str) -> list[mlflow.entities.Run]:
    """The runs of kind `tuning-study` or `tuning-trial` in the project's store, oldest first."""
    client = mlflow.MlflowClient(store_uri(work))
    experiment = client.get_experiment_by_name("deepfm-movielens")
    if experiment is None:
        return []
    found = client.search_runs([experiment.experiment_id], f"tags.kind = '{kind}'")
    return sorted(found, key=lambda run: run.info.start_time)


def trial_runs(work: Path) -> dict[int, mlflow.entities.Run]:
    return {int(run.data.tags["trial"]): run for run in runs(work, "tuning-trial")}


def val_aucs(work: Path, run_id: str) -> dict[int, float]:
    client = mlflow.MlflowClient(store_uri(work))
    return {m.step: m.value for m in client.get_metric_history(run_id, "val_auc")}


def steps_per_epoch(work: Path) -> int:
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    rows = pq.read_metadata(config.data.processed_path / "train.parquet").num_rows
    return math.ceil(rows / config.train.batch_size)


# --- a study's outputs ---------------------------------------------------------------------


def test_a_study_writes_the_tuned_params_file_figures_and_trials_csv(reference):
    study = load_study(reference)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * REFERENCE_TRIALS
    best = study.best_trial
    assert best.value == max(t.value for t in study.trials)
    # Each trial is worth its best validation AUC over the epochs it trained.
    for trial in study.trials:
        assert trial.value == max(trial.intermediate_values.values())
        assert sorted(trial.intermediate_values) == [1, 2]

    folder = reference / "reports/tuning"
    assert sorted(p.name for p in folder.iterdir()) == sorted(REPORTS)
    text = (folder / "deepfm.yaml").read_text()
    assert text.splitlines()[:4] == [
        f"# Tuned by `deepfm tune --model deepfm --trials {REFERENCE_TRIALS} --params "
        "params.yaml`:",
        f"# Optuna study {STUDY}, {REFERENCE_TRIALS} finished trials (0 pruned);",
        f"# the best is trial {best.number}, validation AUC {best.value:.6f}.",
        "# A params file: the pipeline trains these settings over params.yaml as deepfm_tuned.",
    ]
    # The file holds the real values (a list, not its JSON text) and round-trips.
    tuned = read_tuned_params(folder / "deepfm.yaml")
    assert list(tuned) == list(SPACE)
    assert tuned["train.lr"] == best.params["train.lr"]
    assert tuned["model.deepfm.hidden_units"] in ([16], [32, 16])
    assert str(tuned["model.deepfm.hidden_units"]) == best.params["model.deepfm.hidden_units"]
    config = ExperimentConfig.from_yaml(reference / "params.yaml").with_overrides(tuned)
    assert config.train.lr == best.params["train.lr"]
    assert config.model.deepfm.dropout == best.params["model.deepfm.dropout"]
    assert list(config.model.deepfm.hidden_units) == tuned["model.deepfm.hidden_units"]

    with open(folder / "deepfm.trials.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["number", "state", "value", "epochs", "seconds", *SPACE]
    assert [int(row["number"]) for row in rows] == [t.number for t in study.trials]
    for row, trial in zip(rows, study.trials, strict=True):
        assert (row["state"], float(row["value"]), row["epochs"]) == ("COMPLETE", trial.value, "2")
        assert float(row["seconds"]) > 0
        assert float(row["train.lr"]) == trial.params["train.lr"]
        assert row["model.deepfm.hidden_units"] == trial.params["model.deepfm.hidden_units"]
    for figure in ("history", "importance"):
        assert (folder / f"deepfm.{figure}.png").read_bytes().startswith(PNG)


def test_trials_are_nested_runs_of_one_parent_with_params_metrics_and_states(reference):
    study = load_study(reference)
    (parent,) = runs(reference, "tuning-study")
    assert parent.info.run_name == "tune-deepfm"
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["model"] == "deepfm" and parent.data.tags["study"] == STUDY
    assert study.user_attrs["mlflow_run_id"] == parent.info.run_id
    assert parent.data.metrics == {
        "best_val_auc": study.best_value,
        "best_trial": study.best_trial.number,
        "finished_trials": REFERENCE_TRIALS,
        "pruned_trials": 0,
    }
    client = mlflow.MlflowClient(store_uri(reference))
    assert sorted(a.path for a in client.list_artifacts(parent.info.run_id)) == sorted(REPORTS)

    children = trial_runs(reference)
    assert sorted(children) == [t.number for t in study.trials]
    space = ExperimentConfig.from_yaml(reference / "params.yaml").tune.space["deepfm"]
    for trial in study.trials:
        run = children[trial.number]
        assert run.info.run_name == f"trial-{trial.number}"
        assert run.data.tags["mlflow.parentRunId"] == parent.info.run_id
        assert (run.data.tags["state"], run.info.status) == ("COMPLETE", "FINISHED")
        assert run.data.params == {
            key: str(value) for key, value in decode_params(space, trial.params).items()
        }
        assert val_aucs(reference, run.info.run_id) == trial.intermediate_values
        assert run.data.metrics["best_val_auc"] == trial.value
        assert "val_logloss" in run.data.metrics
        assert client.list_artifacts(run.info.run_id) == []  # no model per trial


# --- pruning -------------------------------------------------------------------------------


def seed_study(work: Path, value: float, count: int) -> None:
    """Start the project's study as `deepfm tune` would and add `count` completed trials
    whose validation AUC was `value` at every epoch."""
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    processed = config.data.processed_path
    fingerprint = prepared_data_fingerprint(processed, Schema.load(processed / "schema.json"))
    (work / "tuning").mkdir()
    study = open_study(config, "deepfm", fingerprint)
    distributions = search_distributions(config.tune.space["deepfm"])
    low_ends = {"train.lr": 1e-3, "model.deepfm.hidden_units": "[16]", "model.deepfm.dropout": 0.0}
    for _ in range(count):
        study.add_trial(
            optuna.trial.create_trial(
                params=low_ends,
                distributions=distributions,
                value=value,
                intermediate_values={1: value, 2: value},
            )
        )


@pytest.mark.parametrize(
    ("others", "state", "epochs"),
    [(0.99, "PRUNED", [1]), (0.01, "COMPLETE", [1, 2])],
    ids=["behind-the-median-pruned", "ahead-of-the-median-kept"],
)
def test_a_trial_behind_the_median_of_completed_trials_is_pruned_after_the_warmup(
    project, others, state, epochs
):
    # Five completed trials (the pruner's start-up) that reached `others` at every epoch;
    # a real trial on the small data reaches about 0.5.
    seed_study(project, others, count=5)

    tune("--trials", "6")

    trial = load_study(project).trials[5]
    assert trial.state.name == state
    assert sorted(trial.intermediate_values) == epochs  # warm-up: 1 epoch, then judged
    if state == "PRUNED":  # Optuna's value of a pruned trial: its last reported AUC
        assert trial.value == trial.intermediate_values[1]
    else:
        assert trial.value == max(trial.intermediate_values.values())
    run = trial_runs(project)[5]
    assert (run.data.tags["state"], run.info.status) == (state, "FINISHED")
    if state == "PRUNED":
        assert run.data.tags["reason"].startswith("pruned after epoch 1: below the median")
    assert sorted(val_aucs(project, run.info.run_id)) == epochs
    (parent,) = runs(project, "tuning-study")
    assert parent.data.metrics["pruned_trials"] == (1 if state == "PRUNED" else 0)
    assert parent.data.metrics["finished_trials"] == 6
    with open(project / "reports/tuning/deepfm.trials.csv") as handle:
        assert [row["state"] for row in csv.DictReader(handle)][5] == state


def test_a_diverging_trial_is_stopped_as_pruned_and_no_completed_trial_is_an_error(project, caplog):
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["tune"]["space"]["deepfm"] = {"train.lr": {"choices": [1.0e30]}}  # NaN in epoch 1
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    line = one_error(caplog, "--model", "deepfm", "--trials", "2")

    assert "no trial completed (every one was pruned or diverged)" in line
    trials = load_study(project).trials
    assert [t.state for t in trials] == [TrialState.PRUNED] * 2  # counted, seen by TPE
    assert all("training diverged" in t.user_attrs["diverged"] for t in trials)
    for run in trial_runs(project).values():
        assert (run.data.tags["state"], run.info.status) == ("PRUNED", "FINISHED")
        assert "training diverged" in run.data.tags["reason"]
    assert runs(project, "tuning-study")[0].info.status == "FAILED"
    assert not (project / "reports/tuning/deepfm.yaml").exists()
    with open(project / "reports/tuning/deepfm.trials.csv") as handle:
        assert [row["state"] for row in csv.DictReader(handle)] == ["PRUNED", "PRUNED"]


# --- resuming, killing, repeating ----------------------------------------------------------


def test_a_resumed_study_keeps_its_trials_runs_only_the_missing_ones_in_one_parent_run(
    project, reference
):
    tune("--trials", "2")
    first = load_study(project).trials
    (parent,) = runs(project, "tuning-study")

    tune("--trials", "4")

    study = load_study(project)
    assert [t.state for t in study.trials] == [TrialState.COMPLETE] * 4
    for before, after in zip(first, study.trials[:2], strict=True):  # not run again
        assert (after.params, after.value, after.datetime_start, after.datetime_complete) == (
            before.params,
            before.value,
            before.datetime_start,
            before.datetime_complete,
        )
    (resumed,) = runs(project, "tuning-study")
    assert resumed.info.run_id == parent.info.run_id
    assert resumed.info.status == "FINISHED"
    assert resumed.data.metrics["finished_trials"] == 4
    assert sorted(trial_runs(project)) == [0, 1, 2, 3]
    # The sampler is seeded per trial: a study resumed after 2 trials proposes (and scores)
    # what the uninterrupted 3-trial study did.
    assert finished(project)[:REFERENCE_TRIALS] == finished(reference)

    tune("--trials", "4")  # nothing missing: no trial runs, the reports are rewritten
    assert len(load_study(project).trials) == 4
    assert (project / "reports/tuning/deepfm.yaml").is_file()


@pytest.mark.slow
@pytest.mark.parametrize("stop", [signal.SIGKILL, signal.SIGINT], ids=["SIGKILL", "Ctrl-C"])
def test_a_study_stopped_mid_trial_resumes_to_the_uninterrupted_result(
    project, reference, tmp_path, stop
):
    # Trial 0 trains 2 epochs; stop in trial 1's first epoch.
    point = f"optimizer-step:{2 * steps_per_epoch(project) + 2}"
    script = str(ROOT / "src/deepfm/__main__.py")
    args = ("tune", "--model", "deepfm", "--trials", str(REFERENCE_TRIALS))
    env = os.environ | THREAD_ENV | {"MLFLOW_TRACKING_URI": store_uri(project)}
    stopped = Stopped(project, point, tmp_path / "stopped", script, *args, env=env)
    if stop == signal.SIGKILL:
        stopped.kill()
        left = "RUNNING"
    else:
        stopped.wait_until_stopped()
        os.kill(stopped.process.pid, stop)
        assert stopped.finish() == 128 + stop
        assert "Traceback" not in stopped.output
        assert "tune stopped by SIGINT" in stopped.output
        left = "KILLED"
    study = load_study(project)
    assert [t.state.name for t in study.trials] == [
        "COMPLETE",
        "RUNNING" if stop == signal.SIGKILL else "FAIL",
    ]
    assert trial_runs(project)[1].info.status == left
    assert runs(project, "tuning-study")[0].info.status == left

    tune("--trials", str(REFERENCE_TRIALS))

    study = load_study(project)
    assert [t.state.name for t in study.trials] == ["COMPLETE", "FAIL", "COMPLETE", "COMPLETE"]
    assert finished(project) == finished(reference)  # the stop changed nothing that counts
    killed = trial_runs(project)[1]
    assert (killed.data.tags["state"], killed.info.status) == ("FAIL", "KILLED")
    assert killed.data.tags["reason"] == (
        STALE_REASON if stop == signal.SIGKILL else "KeyboardInterrupt()"
    )
    (parent,) = runs(project, "tuning-study")
    assert parent.info.status == "FINISHED"
    assert parent.data.metrics["finished_trials"] == REFERENCE_TRIALS
    assert sorted(trial_runs(project)) == [0, 1, 2, 3]
    with open(project / "reports/tuning/deepfm.trials.csv") as handle:
        assert [row["state"] for row in csv.DictReader(handle)] == [
            "COMPLETE",
            "FAIL",
            "COMPLETE",
            "COMPLETE",
        ]


def test_the_same_seeds_in_fresh_folders_give_the_same_trials(project, reference):
    tune("--trials", "2")

    assert finished(project) == finished(reference)[:2]


def test_importance_is_the_same_for_the_same_trials(reference, tmp_path):
    """The fANOVA evaluator is seeded: the same study gives the same figure twice."""
    config = ExperimentConfig.from_yaml(reference / "params.yaml")
    first = (reference / "reports/tuning/deepfm.importance.png").read_bytes()
    with pytest.MonkeyPatch.context() as patch:
        copy = shutil.copytree(reference, tmp_path / "copy")
        patch.chdir(copy)
        (copy / "reports/tuning/deepfm.importance.png").unlink()
        write_reports(load_study(copy), config, "deepfm", "deepfm tune")
    assert (copy / "reports/tuning/deepfm.importance.png").read_bytes() == first


def test_tuning_never_reads_the_test_split(project):
    (project / "data/processed/ml-100k/test.parquet").unlink()

    tune("--trials", "1")

    assert [t.state for t in load_study(project).trials] == [TrialState.COMPLETE]
    assert (project / "reports/tuning/deepfm.yaml").is_file()


# --- refused before any trial --------------------------------------------------------------


def one_error(caplog: pytest.LogCaptureFixture, *args: str) -> str:
    """Run `deepfm tune ARGS`; it must exit 1 with exactly one ERROR line: that line."""
    caplog.clear()
    with caplog.at_level(logging.INFO), pytest.raises(SystemExit) as exit_info:
        main(["tune", *args])
    assert exit_info.value.code == 1
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, errors
    assert "\n" not in errors[0]
    return errors[0]


def remove_prepared(name: str) -> Any:
    return lambda work: (work / "data/processed/ml-100k" / name).unlink()


def file_in_place_of(folder: str) -> Any:
    def block(work: Path) -> None:
        (work / folder).parent.mkdir(parents=True, exist_ok=True)
        (work / folder).write_text("a file where a folder must be")

    return block


PREFLIGHT = {
    "no-trials": (None, ["--trials", "0"], "--trials must be at least 1, got 0"),
    "unknown-model": (None, ["--model", "deepffm"], "--model 'deepffm' is not a model"),
    "no-space": (None, ["--model", "fm"], "tune.space has no keys for 'fm'"),
    "no-train-split": (
        remove_prepared("train.parquet"),
        [],
        "data/processed/ml-100k/train.parquet: prepared data not found",
    ),
    "no-val-split": (
        remove_prepared("val.parquet"),
        [],
        "data/processed/ml-100k/val.parquet: prepared data not found",
    ),
    "no-schema": (
        remove_prepared("schema.json"),
        [],
        "data/processed/ml-100k/schema.json: prepared data not found",
    ),
    "tuning-not-writable": (file_in_place_of("tuning"), [], "tuning: cannot write there"),
    "reports-not-writable": (
        file_in_place_of("reports/tuning"),
        [],
        "reports/tuning: cannot write there",
    ),
}


@pytest.mark.parametrize(("setup", "args", "message"), PREFLIGHT.values(), ids=PREFLIGHT)
def test_each_missing_piece_is_one_line_before_any_trial(project, caplog, setup, args, message):
    if setup is not None:
        setup(project)
    args = ["--model", "deepfm", "--trials", "1", *args]  # a later option wins

    assert message in one_error(caplog, *args)
    assert not (project / "tuning/deepfm.db").exists()
    assert runs(project, "tuning-study") == []


def test_an_unreachable_tracking_store_is_one_line_before_any_trial(project, caplog, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")

    line = one_error(caplog, "--model", "deepfm", "--trials", "1")

    assert "MLflow tracking server http://127.0.0.1:9 does not answer" in line
    assert not (project / "tuning/deepfm.db").exists()


def test_a_study_in_use_by_another_command_is_refused(project, caplog):
    (project / "tuning").mkdir()
    with open(project / "tuning/deepfm.db.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # as a running `deepfm tune` holds it
        line = one_error(caplog, "--model", "deepfm", "--trials", "1")
    assert "tuning/deepfm.db is in use by another deepfm tune" in line
    assert not (project / "tuning/deepfm.db").exists()


def test_a_study_started_with_other_settings_is_not_resumed(project, caplog):
    seed_study(project, 0.5, count=1)
    params = yaml.safe_load((project / "params.yaml").read_text())
    params["train"]["max_epochs"] = 3
    params["tune"]["space"]["deepfm"]["train.lr"]["high"] = 0.1
    (project / "params.yaml").write_text(yaml.safe_dump(params))

    line = one_error(caplog, "--model", "deepfm", "--trials", "2")

    assert "tuning/deepfm.db: study 'deepfm-ml-100k' was started with other settings" in line
    assert "train.max_epochs" in line and "tune.space.deepfm.train.lr" in line
    assert len(load_study(project).trials) == 1


@pytest.mark.slow
def test_the_command_fails_in_one_line_without_a_traceback(project):
    result = subprocess.run(
        [sys.executable, "-m", "deepfm", "tune", "--model", "fm"],
        cwd=project,
        capture_output=True,
        text=True,
        env=os.environ | THREAD_ENV | {"MLFLOW_TRACKING_URI": store_uri(project)},
    )
    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    (line,) = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "tune.space has no keys for 'fm'" in line


def test_the_first_trial_is_the_configuration_params_yaml_holds(reference):
    """lr 0.001 and dropout 0.0 are params.yaml's values; its hidden units ([256, 128]) are
    not among this space's choices, so the sampler picks those."""
    first = load_study(reference).trials[0]
    assert first.user_attrs["params_yaml_default"] is True
    assert first.params["train.lr"] == 0.001
    assert first.params["model.deepfm.dropout"] == 0.0
    assert not any("params_yaml_default" in t.user_attrs for t in load_study(reference).trials[1:])
