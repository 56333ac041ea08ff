"""DVC stage `tune@<model>`: `deepfm tune --model <model>` for each model in `tune.models`.

Runs the model's Optuna study to `tune.trials` finished trials (resuming `tuning/<model>.db`
if a run was stopped) and writes `reports/tuning/<model>.yaml`, the settings the
`train_tuned@<model>-<seed>` stages train, with the trials CSV and figures beside it.
See `deepfm.tuning`.
"""

from __future__ import annotations

import argparse

from deepfm.__main__ import run_tune
from deepfm.cli import matrix_item, run_stage
from deepfm.config import ExperimentConfig


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    model = matrix_item(args.dvc_stage, {"model": config.tune.models})["model"]
    run_tune(argparse.Namespace(model=model, trials=None, params=args.params))


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--dvc-stage", required=True, help="DVC's $DVC_STAGE (`tune@<model>`)")
    run_stage(main, parser)
