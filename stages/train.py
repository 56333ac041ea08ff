"""DVC stage `train@<model>-<seed>`: fit one model with one training seed and record it.

Writes one consistent set in `models/<model>/seed-<seed>/`: `model.pt` (state dict, schema,
config, seed, prepared-data fingerprint), `run.json` (the MLflow run id), `history.csv` (one
row per epoch) and `train.json` (summary); the folder is replaced whole, so a failure leaves
the previous set. The checkpoint lives beside it (`models/<model>/seed-<seed>.checkpoint.pt`)
until training ends.

Everything the stage needs (tracking store and experiment, vocabularies, output folder) is
checked before training. The MLflow run opens when training starts, streams each epoch's
metrics, gets the datasets, artifacts and the servable model (registered; see
`deepfm.tracking`), and ends FINISHED, FAILED, or KILLED on Ctrl-C or SIGTERM (exit
status 128 + signal number). A resumed training continues its run.

With `train.nproc` > 1 the command runs itself again under `torchrun --standalone` with that
many processes; run under torchrun directly (`torchrun --nproc_per_node=N stages/train.py
--model deepfm --seed 42`, or on several nodes: docs/scaling.md) it trains with DDP on every
rank and rank 0 alone writes the outputs and the MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import signal
import sys
import tempfile
from dataclasses import asdict
from pathlib import Path
from types import FrameType

import numpy as np
import torch
from torch import nn

from deepfm import atomic, tracking
from deepfm.cli import check_model_name, matrix_item, run_stage
from deepfm.config import ConfigError, ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepare import raw_feature_frame
from deepfm.data.prepared import prepared_data_fingerprint
from deepfm.data.raw import FINGERPRINT_FILE, read_raw
from deepfm.data.schema import Schema
from deepfm.errors import UserError
from deepfm.models.registry import build_model, save_model
from deepfm.predict import resolve_device
from deepfm.training import distributed
from deepfm.training.trainer import (
    EpochRecord,
    Trainer,
    TrainResult,
    checkpointed_run_id,
)
from deepfm.tune_config import tuned_row

logger = logging.getLogger("deepfm.train")

SPLITS = {"train": "train.parquet", "validation": "val.parquet", "test": "test.parquet"}


class OutputError(UserError, OSError):
    """An output folder that cannot be written."""


class SignalStop(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the MLflow run ends KILLED."""

    def __init__(self, signum: int) -> None:
        super().__init__(f"stopped by signal {signum}")
        self.signum = signum


def stop_on_signal(signum: int, frame: FrameType | None) -> None:
    raise SignalStop(signum)


def seed_folder(name: str, seed: int) -> Path:
    """`models/<name>/seed-<seed>`: one trained (model, seed)."""
    return Path("models") / name / f"seed-{seed}"


def history_csv(result: TrainResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(result.history[0])), lineterminator="\n")
    writer.writeheader()
    for record in result.history:
        writer.writerow(asdict(record))
    return buffer.getvalue()


def check_seed(seed: int, config: ExperimentConfig) -> None:
    """A `ConfigError` unless `seed` is one of `train.seeds` (what evaluate reads)."""
    if seed not in config.train.seeds:
        raise ConfigError(f"--seed {seed} is not in train.seeds {list(config.train.seeds)}")


def check_writable(folder: Path) -> None:
    """Create `folder` if needed and write a temporary file in it, or raise `OutputError`."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as err:
        raise OutputError(f"{folder}: cannot write the model there ({err})") from None


def trainable_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def train(
    config: ExperimentConfig, name: str, seed: int, device: torch.device, row: str = ""
) -> TrainResult:
    """Fit model `name` with `seed` on `device` and record it as leaderboard row `row`
    (default: `name`; `deepfm_tuned` for a tuned configuration); in a process group every
    rank trains and rank 0 alone writes the outputs and talks to MLflow."""
    row = row or name
    writer = distributed.rank() == 0
    processed = config.data.processed_path
    schema = Schema.load(processed / "schema.json")
    data_fingerprint = prepared_data_fingerprint(processed, schema)  # vocabularies present
    train_ds = CTRDataset.from_parquet(processed / "train.parquet", schema)
    val_ds = CTRDataset.from_parquet(processed / "val.parquet", schema)
    raw_fingerprint = json.loads((config.data.raw_path / FINGERPRINT_FILE).read_text())
    folder = seed_folder(row, seed)
    checkpoint = folder.with_name(f"{folder.name}.checkpoint.pt")
    run_key = hashlib.sha256(
        json.dumps(
            [row, seed, config.to_dict(), raw_fingerprint["fingerprint"], data_fingerprint],
            sort_keys=True,
        ).encode()
    ).hexdigest()
    if writer:
        tracking.open_experiment(config.tracking.experiment_name)
        check_writable(folder.parent)

    torch.manual_seed(seed)
    model = build_model(name, schema, config).to(device)
    trainer = Trainer(model, config.train, device, seed)
    world = distributed.world_size()
    logger.info(
        "training %s (seed %d) on %s, %d process(es): %d train / %d val rows",
        *(name, seed, device, world, len(train_ds), len(val_ds)),
    )
    if not writer:
        return trainer.fit(train_ds, val_ds, checkpoint=checkpoint, run_key=run_key)

    raw = read_raw(config.data.raw_path)
    tags = tracking.default_tags(raw_fingerprint["fingerprint"], device=str(device))
    tags |= {"model": row, "architecture": name, "seed": str(seed), "world_size": str(world)}
    run_id = checkpointed_run_id(checkpoint, run_key)
    with open_run(config, row, seed, run_id, tags) as run:
        run.log_datasets({context: processed / file for context, file in SPLITS.items()})

        def log_epoch(record: EpochRecord) -> None:
            metrics = {k: v for k, v in asdict(record).items() if k not in ("epoch", "seconds")}
            run.log_epoch(metrics | {"epoch_seconds": record.seconds}, step=record.epoch)

        result = trainer.fit(
            train_ds, val_ds, checkpoint, run_key, on_epoch=log_epoch, run_id=run.run_id
        )
        summary = result.summary() | {"seed": seed, "parameters": trainable_parameters(model)}
        with atomic.replace_dir(folder) as new:
            save_model(new / "model.pt", name, model, schema, config, seed, data_fingerprint)
            atomic.write_text(new / "history.csv", history_csv(result))
            atomic.write_text(
                new / "train.json", json.dumps(summary, indent=2, allow_nan=False) + "\n"
            )
            atomic.write_text(new / "run.json", json.dumps({"run_id": run.run_id}) + "\n")
        # The set is on disk; what follows only adds to the run.
        run.log_metrics({k: v for k, v in summary.items() if k != "device"})
        run.log_artifact(processed / "schema.json")
        run.log_artifact(processed / "vocab", "vocab")
        run.log_artifact(folder / "history.csv")
        example = raw_feature_frame(raw, np.arange(5), list(schema.fields))
        model_uri = run.log_model(folder / "model.pt", processed / "vocab", input_example=example)
        run.register_model(
            model_uri,
            f"{row}-{config.data.dataset}",
            result.best_val_auc,
            tracking.file_digest(processed / SPLITS["validation"]),
        )
    logger.info(
        "%s seed %d: best val AUC %.4f at epoch %d",
        row,
        seed,
        result.best_val_auc,
        result.best_epoch,
    )
    return result


def open_run(
    config: ExperimentConfig, name: str, seed: int, run_id: str, tags: dict[str, str]
) -> tracking.RunTracker:
    """Run `run_id` of a checkpoint if the store has it (a resumed training), else a new
    one with params and `tags`."""
    if run_id and tracking.FinishedRuns().exists(run_id):
        return tracking.RunTracker.resume(run_id)
    if run_id:
        logger.warning("MLflow run %s of the checkpoint is not in the store; a new run", run_id)
    return tracking.RunTracker.start(
        config.tracking.experiment_name,
        run_name=f"{name}-seed-{seed}",
        # The search space is not a setting of this run (a tuned run's values are applied).
        params={k: v for k, v in config.flat().items() if not k.startswith("tune.")}
        | {"model": name, "seed": seed},
        tags=tags,
    )


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    if args.dvc_stage:
        # `train@<model>-<seed>` (train.models x train.seeds) or `train_tuned@<model>-<seed>`
        # (tune.models x train.seeds)
        args.tuned = args.dvc_stage.rsplit(":", 1)[-1].startswith("train_tuned@")
        models = config.tune.models if args.tuned else config.train.models
        item = matrix_item(args.dvc_stage, {"model": models, "seed": config.train.seeds})
        args.model, args.seed = item["model"], item["seed"]
    if args.seed is None:
        raise ConfigError(f"--model needs --seed, one of train.seeds {list(config.train.seeds)}")
    check_model_name(args.model)
    check_seed(args.seed, config)
    row = args.model
    if args.tuned:
        config, row = config.tuned(args.model), tuned_row(args.model)
    device, nproc = resolve_device(config.train.device), config.train.nproc
    if nproc > 1 and not distributed.under_torchrun():
        if device.type == "cuda" and nproc > torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"train.nproc is {nproc} but there are {count} CUDA devices")
        logger.info("running under torchrun with %d processes", nproc)
        argv = [__file__, "--model", args.model, "--seed", str(args.seed), "--params", args.params]
        sys.exit(distributed.launch(nproc, argv + ["--tuned"] * args.tuned))
    with distributed.process_group(device) as rank_device:
        train(config, args.model, args.seed, rank_device, row)


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, stop_on_signal)
    parser = argparse.ArgumentParser(description=__doc__)
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--model", help="a name under params.yaml `model:` (with --seed)")
    which.add_argument("--dvc-stage", help="DVC's $DVC_STAGE (`train@<model>-<seed>`)")
    parser.add_argument("--seed", type=int, help="one of params.yaml `train.seeds`")
    parser.add_argument(
        "--tuned",
        action="store_true",
        help="train the tuned configuration (reports/tuning/<model>.yaml) as <model>_tuned",
    )
    try:
        run_stage(main, parser)
    except KeyboardInterrupt as stop:
        signum = stop.signum if isinstance(stop, SignalStop) else signal.SIGINT
        logger.error(
            "train stopped by %s; its MLflow run ends KILLED; rerun to resume from the "
            "last checkpoint",
            signal.Signals(signum).name,
        )
        sys.exit(128 + signum)
