"""DVC stage `train@<model>`: fit one model on the prepared data and record it.

Writes `models/<model>/model.pt` (state dict, schema, config), `models/<model>/run.json`
(the MLflow run id), `reports/models/<model>/history.csv` and `.../train.json`, and logs
params, per-epoch metrics, artifacts and a servable model to MLflow.

With `train.nproc` > 1 the command runs itself again under `torchrun --standalone` with that
many processes; run under torchrun directly (`torchrun --nproc_per_node=N stages/train.py
--model deepfm`, or on several nodes: docs/scaling.md) it trains with DDP on every rank and
rank 0 alone writes the outputs and the MLflow run.
"""

from __future__ import annotations

import argparse
import csv
import hashlib
import io
import json
import logging
import sys
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch

from deepfm import atomic, tracking
from deepfm.config import ConfigError, ExperimentConfig, ModelConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepare import raw_feature_frame
from deepfm.data.raw import FINGERPRINT_FILE, read_raw
from deepfm.data.schema import Schema
from deepfm.models.registry import build_model, save_model
from deepfm.stage import run_stage
from deepfm.training import distributed
from deepfm.training.trainer import Trainer, TrainResult, resolve_device

logger = logging.getLogger("deepfm.train")


def history_csv(result: TrainResult) -> str:
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=list(asdict(result.history[0])), lineterminator="\n")
    writer.writeheader()
    for record in result.history:
        writer.writerow(asdict(record))
    return buffer.getvalue()


def check_model_name(name: str) -> None:
    """A `ConfigError` listing the models unless `name` is one."""
    if name not in ModelConfig.names():
        valid = list(ModelConfig.names())
        raise ConfigError(f"--model {name!r} is not a model; choose from {valid}")


def train(config: ExperimentConfig, name: str, device: torch.device) -> TrainResult:
    """Fit model `name` on `device` and record it; in a process group every rank trains and
    rank 0 alone writes the outputs and talks to MLflow."""
    writer = distributed.rank() == 0
    processed = config.data.processed_path
    schema = Schema.load(processed / "schema.json")
    train_ds = CTRDataset.from_parquet(processed / "train.parquet", schema)
    val_ds = CTRDataset.from_parquet(processed / "val.parquet", schema)
    raw = read_raw(config.data.raw_path) if writer else None
    fingerprint = json.loads((config.data.raw_path / FINGERPRINT_FILE).read_text())["fingerprint"]
    if writer:
        tracking.check_tracking_server(tracking.tracking_uri())

    torch.manual_seed(config.train.seeds[0])
    model = build_model(name, schema, config).to(device)
    run_key = hashlib.sha256(
        json.dumps([name, config.to_dict(), fingerprint], sort_keys=True).encode()
    ).hexdigest()
    model_dir, report_dir = Path("models") / name, Path("reports/models") / name
    if writer:
        model_dir.mkdir(parents=True, exist_ok=True)
    world = distributed.world_size()
    logger.info(
        "training %s on %s, %d process(es): %d train / %d val rows",
        *(name, device, world, len(train_ds), len(val_ds)),
    )
    result = Trainer(model, config.train, device).fit(
        train_ds, val_ds, checkpoint=model_dir / "checkpoint.pt", run_key=run_key
    )
    if not writer:
        return result

    model_pt = model_dir / "model.pt"
    save_model(model_pt, name, model, schema, config)
    atomic.write_text(report_dir / "history.csv", history_csv(result))
    atomic.write_text(report_dir / "train.json", json.dumps(result.summary(), indent=2) + "\n")

    tags = tracking.default_tags(data_fingerprint=fingerprint, device=str(device))
    tags["world_size"] = str(world)
    with tracking.RunTracker.start(
        config.tracking.experiment_name,
        run_name=name,
        params=config.flat() | {"model": name},
        tags=tags,
    ) as run:
        for record in result.history:
            metrics = {k: v for k, v in asdict(record).items() if k not in ("epoch", "seconds")}
            run.log_epoch(metrics, step=record.epoch)
        run.log_metrics({k: v for k, v in result.summary().items() if k != "device"})
        run.log_artifact(processed / "schema.json")
        run.log_artifact(processed / "vocab", "vocab")
        run.log_artifact(report_dir / "history.csv")
        example = raw_feature_frame(raw, np.arange(5), list(schema.fields))
        run.log_model(model_pt, processed / "vocab", input_example=example)
        atomic.write_text(model_dir / "run.json", json.dumps({"run_id": run.run_id}) + "\n")
    logger.info("%s: best val AUC %.4f at epoch %d", name, result.best_val_auc, result.best_epoch)
    return result


def main(config: ExperimentConfig, args: argparse.Namespace) -> None:
    check_model_name(args.model)
    device, nproc = resolve_device(config.train.device), config.train.nproc
    if nproc > 1 and not distributed.under_torchrun():
        if device.type == "cuda" and nproc > torch.cuda.device_count():
            count = torch.cuda.device_count()
            raise ConfigError(f"train.nproc is {nproc} but there are {count} CUDA devices")
        logger.info("running under torchrun with %d processes", nproc)
        argv = [__file__, "--model", args.model, "--params", args.params]
        sys.exit(distributed.launch(nproc, argv))
    with distributed.process_group(device) as rank_device:
        train(config, args.model, rank_device)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", required=True, help="a name under params.yaml `model:`")
    run_stage(main, parser)
