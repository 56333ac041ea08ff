"""`deepfm tune`: an Optuna study of one model's hyperparameters, judged on validation AUC.

    deepfm tune --model deepfm [--trials N] [--params params.yaml]

Each trial samples every key of `tune.space.<model>`, trains the model in this process on
the prepared train split with seed `tune.seed` (the `Trainer` of the pipeline, early
stopping included) and is worth its best validation AUC. Each epoch's validation AUC is
reported to Optuna, and a `MedianPruner` stops a trial once it has trained
`tune.warmup_epochs` epochs and its best AUC so far is below the median, at that epoch, of
the completed trials (from the `PRUNER_STARTUP_TRIALS`-th completed trial on). A trial whose
training diverges is stopped like a pruned one (state PRUNED, user attr `diverged`): the
sampler learns from it and it counts against the budget. The test split is never read.

The study (`<model>-<dataset>`) lives in the SQLite file `tuning/<model>.db`, so a run that
was killed resumes: the same command runs only the trials still missing to reach N finished
(COMPLETE or PRUNED) trials. A trial a killed command left RUNNING is marked FAIL and does
not count; one command at a time may use a study (a lock beside the file). A study keeps the
settings it was started with (every params key that changes a trial's result, and the
prepared data's fingerprint) and refuses to resume under others.

The first trial of a new study is the configuration `params.yaml` itself holds (each key's
value clipped into its range; user attr `params_yaml_default`), so the study's best is
never worse on validation than the untuned model.

Proposals do not depend on how often a study was interrupted: before each trial the sampler
is a fresh `TPESampler` seeded from `tune.sampler_seed` and the number of trials finished
so far (TPE keeps no other state; it reads the finished trials from the storage). So a
killed and resumed study proposes, trains and prunes exactly as an uninterrupted one does
(on the CPU, where training is deterministic); only FAIL trials are extra.

At the end `deepfm.tuning_reports` writes `reports/tuning/<model>.yaml` (the best trial's
settings, a params file the pipeline trains as `<model>_tuned`), the trials CSV and the
figures; `deepfm.tracking.StudyRun` records the study as one MLflow parent run with one
nested run per trial.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
from optuna.trial import FrozenTrial, TrialState
from tqdm import tqdm

from deepfm import tracking
from deepfm.cli import check_model_name
from deepfm.config import ConfigError, ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepared import prepared_data_fingerprint
from deepfm.data.schema import Schema
from deepfm.errors import UserError
from deepfm.models.registry import build_model
from deepfm.predict import resolve_device
from deepfm.training.trainer import DivergedError, EpochRecord, Trainer, TrainResult
from deepfm.tune_config import tuned_params_path
from deepfm.tuning_reports import write_reports
from deepfm.tuning_space import decode_params, default_params, search_distributions

logger = logging.getLogger(__name__)

STUDY_DIR = Path("tuning")
SPLITS = ("schema.json", "train.parquet", "val.parquet")  # all tuning reads; never test
PRUNER_STARTUP_TRIALS = 5  # completed trials before any trial may be pruned
FINISHED = (TrialState.COMPLETE, TrialState.PRUNED)
# Study and trial user attrs.
SETTINGS_ATTR, RUN_ATTR, EPOCHS_ATTR, DIVERGED_ATTR, DEFAULT_ATTR = (
    "settings",
    "mlflow_run_id",
    "epochs",
    "diverged",
    "params_yaml_default",
)


class TuningError(UserError, RuntimeError):
    """`deepfm tune` cannot start or go on; the message names the file, key or study.

    Example::

        raise TuningError("tuning/deepfm.db is in use by another deepfm tune")
    """


@dataclass(frozen=True)
class TuningData:
    """The prepared splits a study trains on, loaded once per command, on its device.

    Args:
        schema: the prepared data's schema.
        train, val: the train and validation splits.
        fingerprint: `prepared_data_fingerprint` of the schema and vocabularies.
        device: where every trial trains.

    Example::

        data = load_data(config)
        result = train_trial(config, "deepfm", data, on_epoch=print)
    """

    schema: Schema
    train: CTRDataset
    val: CTRDataset
    fingerprint: str
    device: torch.device


def study_db_path(model: str) -> Path:
    """`tuning/<model>.db`: the SQLite storage of the model's studies (one per dataset)."""
    return STUDY_DIR / f"{model}.db"


def tune(
    config: ExperimentConfig, model: str, trials: int | None = None, command: str = ""
) -> optuna.Study:
    """Run the study of `model` until it has `trials` (default `tune.trials`) finished
    trials, then write its reports and record it in MLflow; the study.

    `command` is the command line the tuned params file's header names. Every check comes
    before the first trial; a failure is a one-line `UserError`.
    """
    target = config.tune.trials if trials is None else trials
    check_ready(config, model, target)
    path = study_db_path(model)
    with _exclusive(path):
        data = load_data(config)
        study = open_study(config, model, data.fingerprint)
        stale = fail_stale_trials(study)
        tags = tracking.default_tags(data.fingerprint, str(data.device))
        tags["prepared_data_fingerprint"] = tags.pop("data_fingerprint")
        run_id = study.user_attrs.get(RUN_ATTR, "")
        with tracking.StudyRun.open(
            config.tracking.experiment_name, model, study.study_name, run_id, tags
        ) as parent:
            study.set_user_attr(RUN_ATTR, parent.run_id)
            for trial in stale:
                if RUN_ATTR in trial.user_attrs:
                    parent.end_stale_trial(trial.user_attrs[RUN_ATTR])
            run_trials(study, parent, config, model, data, target)
            files = write_reports(study, config, model, command or f"deepfm tune --model {model}")
            parent.log_summary(summary_metrics(study), files)
            if not any(trial.state == TrialState.COMPLETE for trial in study.trials):
                raise TuningError(
                    f"study {study.study_name}: no trial completed (every one was pruned or "
                    f"diverged), so {tuned_params_path(model)} has no best setting to hold; "
                    "run more trials (--trials) or narrow the space"
                )
    best = study.best_trial
    logger.info(
        "study %s: best trial %d, val AUC %.4f; settings in %s",
        *(study.study_name, best.number, best.value, tuned_params_path(model)),
    )
    return study


def check_ready(config: ExperimentConfig, model: str, trials: int) -> None:
    """Everything a study needs, checked before any trial; a one-line error otherwise."""
    if trials < 1:
        raise ConfigError(f"--trials must be at least 1, got {trials}")
    check_model_name(model)
    if not config.tune.space.get(model):
        raise ConfigError(
            f"tune.space has no keys for {model!r}; add tune.space.{model} (keys "
            f"model.{model}.* and train.lr, ...) to search its hyperparameters"
        )
    resolve_device(config.train.device)
    processed = config.data.processed_path
    for name in SPLITS:
        if not (processed / name).is_file():
            raise TuningError(
                f"{processed / name}: prepared data not found; run `dvc repro prepare` "
                f"(stages/prepare.py) for {config.data.dataset} first"
            )
    for folder in (STUDY_DIR, tuned_params_path(model).parent):
        try:
            folder.mkdir(parents=True, exist_ok=True)
            with tempfile.TemporaryFile(dir=folder):
                pass
        except OSError as err:
            raise TuningError(f"{folder}: cannot write there ({err})") from None
    tracking.open_experiment(config.tracking.experiment_name)


def load_data(config: ExperimentConfig) -> TuningData:
    """The schema and the train and validation splits, on `train.device`."""
    processed = config.data.processed_path
    schema = Schema.load(processed / "schema.json")
    device = resolve_device(config.train.device)
    if config.train.nproc > 1:
        logger.warning("tuning trains each trial in one process; train.nproc is not used")
    return TuningData(
        schema=schema,
        train=CTRDataset.from_parquet(processed / "train.parquet", schema).to(device),
        val=CTRDataset.from_parquet(processed / "val.parquet", schema).to(device),
        fingerprint=prepared_data_fingerprint(processed, schema),
        device=device,
    )


def open_study(config: ExperimentConfig, model: str, data_fingerprint: str) -> optuna.Study:
    """The study `<model>-<dataset>` in `tuning/<model>.db`, created if new; a stored study
    must have been started with the same settings (`study_settings`)."""
    path = study_db_path(model)
    name = f"{model}-{config.data.dataset}"
    study = optuna.create_study(
        storage=f"sqlite:///{path.resolve()}",
        study_name=name,
        direction="maximize",
        sampler=trial_sampler(config.tune.sampler_seed, 0),
        pruner=optuna.pruners.MedianPruner(
            n_startup_trials=PRUNER_STARTUP_TRIALS, n_warmup_steps=config.tune.warmup_epochs
        ),
        load_if_exists=True,
    )
    settings = study_settings(config, model, data_fingerprint)
    stored = study.user_attrs.get(SETTINGS_ATTR)
    if stored is None and study.trials:
        raise TuningError(f"{path}: study {name!r} was not made by deepfm tune; use another file")
    if stored is None:
        study.set_user_attr(SETTINGS_ATTR, settings)
    elif stored != settings:
        changed = sorted(
            key for key in stored.keys() | settings.keys() if stored.get(key) != settings.get(key)
        )
        shown = ", ".join(changed[:4]) + (
            f" and {len(changed) - 4} more" if len(changed) > 4 else ""
        )
        raise TuningError(
            f"{path}: study {name!r} was started with other settings ({shown} changed); "
            f"restore them to resume it, or delete {path} to start over"
        )
    return study


def study_settings(config: ExperimentConfig, model: str, data_fingerprint: str) -> dict[str, Any]:
    """What a trial's result depends on: the params keys (flat) of data (not its folders),
    feature, train (not `models`, `seeds`), `model.<model>`, tracking, and tune (not
    `models`, `trials`, other models' spaces), with the prepared data's fingerprint."""
    kept = ("data.", "feature.", "train.", f"model.{model}.", "tracking.", "tune.")
    dropped = (
        *("data.raw_dir", "data.processed_dir"),  # where, not what: `prepared_data` says what
        *("train.models", "train.seeds", "tune.models", "tune.trials", "tune.space"),
    )
    flat = {
        key: value
        for key, value in config.flat().items()
        if key.startswith(kept) and not key.startswith(dropped)
    }
    flat |= {
        f"tune.space.{model}.{key}": value
        for key, value in config.to_dict()["tune"]["space"][model].items()
    }
    flat["prepared_data"] = data_fingerprint
    return json.loads(json.dumps(flat))  # as the storage gives it back: lists, not tuples


def fail_stale_trials(study: optuna.Study) -> list[FrozenTrial]:
    """Mark FAIL the trials a killed command left RUNNING (no other command holds the
    study); they are not counted. The trials, as they were."""
    stale = study.get_trials(deepcopy=False, states=(TrialState.RUNNING,))
    for trial in stale:
        logger.warning("trial %d was left running by a stopped command: FAIL", trial.number)
        study.tell(trial.number, state=TrialState.FAIL)
    return stale


def trial_sampler(sampler_seed: int, finished: int) -> optuna.samplers.TPESampler:
    """The sampler of the trial that follows `finished` finished trials: TPE seeded from
    both, so a resumed study proposes what an uninterrupted one would."""
    return optuna.samplers.TPESampler(seed=(sampler_seed * 1_000_003 + finished) % 2**32)


def run_trials(
    study: optuna.Study,
    parent: tracking.StudyRun,
    config: ExperimentConfig,
    model: str,
    data: TuningData,
    target: int,
) -> None:
    """Run trials until the study has `target` finished (COMPLETE or PRUNED) trials."""
    space = config.tune.space[model]
    finished = len(study.get_trials(deepcopy=False, states=FINISHED))
    if finished >= target:
        logger.info("study %s has %d finished trials; none to run", study.study_name, finished)
        return
    logger.info(
        "study %s: %d finished trials, running %d more in %s",
        *(study.study_name, finished, target - finished, study_db_path(model)),
    )
    if not study.trials:
        # The first trial is params.yaml's own configuration: the tuned one can only beat it.
        study.enqueue_trial(default_params(space, config), user_attrs={DEFAULT_ATTR: True})
    bar = tqdm(total=target, initial=finished, desc=f"tune {model}", unit="trial", disable=None)
    with bar, _quiet_epochs():
        while finished < target:
            study.sampler = trial_sampler(config.tune.sampler_seed, finished)
            trial = study.ask(search_distributions(space))
            run_trial(study, trial, parent, config, model, data)
            finished += 1
            bar.update()
            if any(t.state == TrialState.COMPLETE for t in study.get_trials(deepcopy=False)):
                bar.set_postfix(best=f"{study.best_value:.4f}")


def run_trial(
    study: optuna.Study,
    trial: optuna.Trial,
    parent: tracking.StudyRun,
    config: ExperimentConfig,
    model: str,
    data: TuningData,
) -> TrialState:
    """Train one asked trial, report its epochs, tell Optuna how it ended; its state."""
    overrides = decode_params(config.tune.space[model], trial.params)
    try:
        trial_config = config.with_overrides(overrides)
    except ConfigError as err:
        study.tell(trial, state=TrialState.FAIL)
        raise TuningError(
            f"trial {trial.number}: tune.space.{model} gave {overrides}, which is not a valid "
            f"configuration ({err}); narrow tune.space.{model}"
        ) from None
    run = parent.start_trial(trial.number, overrides)
    trial.set_user_attr(RUN_ATTR, run.run_id)
    history: list[EpochRecord] = []

    def on_epoch(record: EpochRecord) -> None:
        history.append(record)
        run.log_epoch(record.epoch, record.val_auc, record.val_logloss)
        trial.report(record.val_auc, record.epoch)
        if trial.should_prune():
            raise optuna.TrialPruned(
                f"pruned after epoch {record.epoch}: below the median of the completed trials"
            )

    value, state, reason = None, TrialState.PRUNED, ""
    try:
        value = train_trial(trial_config, model, data, on_epoch).best_val_auc
        state = TrialState.COMPLETE
    except optuna.TrialPruned as err:
        reason = str(err)
    except DivergedError as err:
        reason = str(err)
        trial.set_user_attr(DIVERGED_ATTR, reason)
        logger.warning("trial %d: %s; stopped as pruned", trial.number, err)
    except BaseException as err:
        study.tell(trial, state=TrialState.FAIL)
        stopped = isinstance(err, KeyboardInterrupt)
        run.end("FAIL", _best(history), reason=repr(err)[:500], killed=stopped)
        raise
    trial.set_user_attr(EPOCHS_ATTR, len(history))
    study.tell(trial, value, state=state)
    run.end(state.name, _best(history), reason=reason)
    logger.info(
        "trial %d %s: val AUC %s after %d epochs; %s",
        trial.number,
        state.name,
        "-" if not history else f"{_best(history):.4f}",
        len(history),
        ", ".join(f"{key}={setting}" for key, setting in overrides.items()),
    )
    return state


def train_trial(
    config: ExperimentConfig,
    model: str,
    data: TuningData,
    on_epoch: Callable[[EpochRecord], None],
) -> TrainResult:
    """Build `model` with seed `tune.seed` and fit it as the train stage would (no
    checkpoint, nothing saved); `on_epoch` sees each epoch and may stop the training."""
    seed = config.tune.seed
    torch.manual_seed(seed)
    network = build_model(model, data.schema, config).to(data.device)
    trainer = Trainer(network, config.train, data.device, seed)
    return trainer.fit(data.train, data.val, on_epoch=on_epoch)


def summary_metrics(study: optuna.Study) -> dict[str, float]:
    """The parent run's metrics: the best trial and how many trials finished and pruned."""
    states = [trial.state for trial in study.get_trials(deepcopy=False)]
    metrics = {
        "finished_trials": float(sum(state in FINISHED for state in states)),
        "pruned_trials": float(states.count(TrialState.PRUNED)),
    }
    if TrialState.COMPLETE in states:
        metrics |= {"best_val_auc": study.best_value, "best_trial": float(study.best_trial.number)}
    return metrics


def _best(history: list[EpochRecord]) -> float | None:
    return max((record.val_auc for record in history), default=None)


@contextlib.contextmanager
def _exclusive(path: Path) -> Iterator[None]:
    """Hold `<path>.lock` for as long as this command uses the study in `path`."""
    lock_path = path.with_name(path.name + ".lock")
    with lock_path.open("w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TuningError(
                f"{path} is in use by another deepfm tune; wait for it to end"
            ) from None
        yield


@contextlib.contextmanager
def _quiet_epochs() -> Iterator[None]:
    """Leave out the trainer's line per epoch (MLflow has each trial's epochs): one line
    per trial instead."""
    trainer_logger = logging.getLogger("deepfm.training.trainer")
    level = trainer_logger.level
    trainer_logger.setLevel(logging.WARNING)
    optuna_level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        yield
    finally:
        trainer_logger.setLevel(level)
        optuna.logging.set_verbosity(optuna_level)
