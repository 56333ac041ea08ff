"""What a finished `deepfm tune` study leaves in `reports/tuning/`.

- `<model>.yaml`: the best completed trial's settings (dotted keys of `tune.space.<model>`)
  as a params file, with a header saying where they come from; the pipeline trains them on
  top of `params.yaml` as `<model>_tuned` (`read_tuned_params` + `with_overrides`).
- `<model>.trials.csv`: one row per trial: number, state, value (the best validation AUC;
  for a pruned trial Optuna's value, the AUC of the last epoch it reported), epochs,
  seconds, then one column per searched key with the real values.
- `<model>.history.png`: each finished trial's value by trial number and the running best.
- `<model>.importance.png`: each key's importance (fANOVA, seeded with
  `tune.sampler_seed`, so the same trials give the same figure); only with at least two
  completed trials.

Every file is written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import Any

import optuna
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from optuna.trial import FrozenTrial, TrialState

from deepfm import atomic
from deepfm.config import ExperimentConfig
from deepfm.tune_config import tuned_params_path, write_tuned_params
from deepfm.tuning_space import decode_params


def report_paths(model: str) -> dict[str, Path]:
    """`yaml`, `trials`, `history` and `importance` -> their paths in `reports/tuning/`."""
    yaml_path = tuned_params_path(model)
    folder = yaml_path.parent
    return {
        "yaml": yaml_path,
        "trials": folder / f"{model}.trials.csv",
        "history": folder / f"{model}.history.png",
        "importance": folder / f"{model}.importance.png",
    }


def write_reports(
    study: optuna.Study, config: ExperimentConfig, model: str, command: str
) -> list[Path]:
    """Write the study's reports (see the module docstring); the files written. With no
    completed trial there is no best setting: only the CSV and the history are written."""
    paths = report_paths(model)
    space = config.tune.space[model]
    trials = study.get_trials(deepcopy=False)
    rows = [_csv_row(trial, decode_params(space, trial.params)) for trial in trials if trial.params]
    atomic.write_text(paths["trials"], _csv_text(rows, list(space)))
    _write_history(study, paths["history"])
    written = [paths["trials"], paths["history"]]
    complete = [trial for trial in trials if trial.state == TrialState.COMPLETE]
    if len(complete) >= 2:
        _write_importance(study, config.tune.sampler_seed, paths["importance"])
        written.append(paths["importance"])
    else:
        paths["importance"].unlink(missing_ok=True)  # an older study's figure would mislead
    if not complete:
        return written
    best = study.best_trial
    pruned = sum(trial.state == TrialState.PRUNED for trial in trials)
    finished = len(complete) + pruned
    header = "\n".join(
        [
            f"Tuned by `{command}`:",
            f"Optuna study {study.study_name}, {finished} finished trials ({pruned} pruned);",
            f"the best is trial {best.number}, validation AUC {best.value:.6f}.",
            f"A params file: the pipeline trains these settings over params.yaml as {model}_tuned.",
        ]
    )
    write_tuned_params(paths["yaml"], decode_params(space, best.params), header)
    return [paths["yaml"], *written]


def _csv_row(trial: FrozenTrial, values: dict[str, Any]) -> dict[str, Any]:
    seconds = ""
    if trial.datetime_start and trial.datetime_complete:
        seconds = round((trial.datetime_complete - trial.datetime_start).total_seconds(), 3)
    row = {
        "number": trial.number,
        "state": trial.state.name,
        "value": "" if trial.value is None else repr(trial.value),
        "epochs": trial.user_attrs.get("epochs", ""),
        "seconds": seconds,
    }
    return row | {
        key: json.dumps(value) if isinstance(value, list | tuple) else value
        for key, value in values.items()
    }


def _csv_text(rows: list[dict[str, Any]], keys: list[str]) -> str:
    buffer = io.StringIO()
    fields = ["number", "state", "value", "epochs", "seconds", *keys]
    writer = csv.DictWriter(buffer, fieldnames=fields, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return buffer.getvalue()


def _write_history(study: optuna.Study, path: Path) -> None:
    """Each finished trial's value (completed and pruned apart) and the running best."""
    figure = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for state, marker in ((TrialState.COMPLETE, "o"), (TrialState.PRUNED, "x")):
        trials = study.get_trials(deepcopy=False, states=(state,))
        points = [(trial.number, trial.value) for trial in trials if trial.value is not None]
        if points:
            axes.scatter(*zip(*points, strict=True), marker=marker, label=state.name.lower())
    numbers, bests = [], []
    for trial in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
        numbers.append(trial.number)
        bests.append(trial.value if not bests else max(bests[-1], trial.value))
    if numbers:
        axes.step(numbers, bests, where="post", color="black", label="best so far")
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set(
        title=f"{study.study_name}: optimization history",
        xlabel="trial",
        ylabel="validation AUC",
    )
    if axes.get_legend_handles_labels()[0]:  # no points when every trial diverged at once
        axes.legend(loc="best")
    _save(figure, path)


def _write_importance(study: optuna.Study, seed: int, path: Path) -> None:
    """fANOVA importance of each searched key over the completed trials, seeded."""
    # Imported here: the importance evaluators (scikit-learn) take seconds to load.
    from optuna.importance import FanovaImportanceEvaluator, get_param_importances

    importances = get_param_importances(study, evaluator=FanovaImportanceEvaluator(seed=seed))
    names = list(importances)[::-1]  # the most important on top
    figure = Figure(figsize=(7, 1.2 + 0.4 * len(names)))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    axes.barh(names, [importances[name] for name in names])
    axes.set(
        title=f"{study.study_name}: hyperparameter importance (fANOVA)",
        xlabel="share of the validation AUC's variance",
    )
    _save(figure, path)


def _save(figure: Figure, path: Path) -> None:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight")
    atomic.write_bytes(path, buffer.getvalue())
