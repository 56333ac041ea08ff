"""DDP: two gloo processes over loopback train like one process with the same global batch.

The ranks are real processes (torch.multiprocessing spawn, or torchrun started by the train
stage for `train.nproc: 2`) talking over 127.0.0.1.
"""

import csv
import json
import os
import socket
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
import yaml

from deepfm.config import ConfigError, ExperimentConfig
from deepfm.data.movielens import MovieLensAdapter
from deepfm.models.layers.embedding import FeatureEmbedding
from deepfm.models.registry import build_model, load_model
from deepfm.training import distributed
from deepfm.training.trainer import Trainer

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")
WEIGHT_TOLERANCE = 1e-5
SEED = 42


@pytest.fixture
def loopback(monkeypatch):
    """Gloo on the loopback interface only (spawned ranks inherit the environment)."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", "lo")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.parametrize("world", [1, 2, 3, 4])
@pytest.mark.parametrize("size", [1, 2, 5, 8, 123])
def test_shards_cover_the_batch_once_with_mean_weights(world, size):
    batch = torch.arange(100, 100 + size)
    shards = [distributed.shard(batch, rank, world) for rank in range(world)]
    assert len({len(rows) for rows, _ in shards}) == 1  # same shape on every rank
    real_rows = torch.cat([rows[weights > 0] for rows, weights in shards])
    assert torch.equal(real_rows, batch)
    weights = torch.cat([weights for _, weights in shards])
    assert bool((weights[weights > 0] == world / size).all())
    # DDP's average over ranks of each rank's weighted sum is the mean over the batch.
    assert float(weights.sum()) / world == pytest.approx(1.0)


def test_nproc_must_be_positive():
    with pytest.raises(ConfigError, match=r"train\.nproc must be >= 1, got 0"):
        ExperimentConfig.from_dict({"train": {"nproc": 0}})


MODELS = ("deepfm", "dnn")  # DNN never uses its first-order tables: DDP must leave them be


def ddp_rank(rank, world, port, config, out):
    """One rank: each model trains, crashes after epoch 2 and resumes; rank 0 saves them."""
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world),
    )
    torch.set_num_threads(1)
    schema, train_ds, val_ds, _ = MovieLensAdapter(config.data).build()
    # Each rank has its own folder: only rank 0 may write a checkpoint, and rank 1 must
    # resume from what rank 0 sends it.
    checkpoint = out / f"rank{rank}" / "checkpoint.pt"
    checkpoint.parent.mkdir()

    def crash_after_epoch_2(record):
        if record.epoch == 2:
            raise KeyboardInterrupt

    trained = {}
    with distributed.process_group(CPU) as device:
        for name in MODELS:
            for on_epoch in (crash_after_epoch_2, None):
                torch.manual_seed(SEED)
                model = build_model(name, schema, config)
                trainer = Trainer(model, config.train, device, SEED)
                try:
                    result = trainer.fit(
                        train_ds, val_ds, checkpoint, run_key=name, on_epoch=on_epoch
                    )
                except KeyboardInterrupt:
                    assert checkpoint.exists() == (rank == 0)
            assert not checkpoint.exists()
            trained[name] = {
                "state": model.state_dict(),
                "result": result,
                "ddp_ignores": trainer.train_model.parameters_to_ignore,
            }
    if rank == 0:
        torch.save(trained, out / "ddp.pt")


def _member(param, params) -> bool:
    return any(param is other for other in params)


@pytest.mark.slow
@pytest.mark.parametrize("embedding_optimizer", ["adam", "lazy_adam"])
def test_two_ranks_match_one_process_through_a_resume(
    small_config, tmp_path, loopback, embedding_optimizer
):
    # An odd global batch (uneven shards) whose last batch has one row (rank 1 only pads);
    # both L2 groups on; early stopping ends every run.
    config = replace(
        small_config,
        train=replace(
            small_config.train,
            batch_size=123,
            max_epochs=12,
            patience=2,
            weight_decay=1e-5,
            embedding_l2=1e-4,
            embedding_optimizer=embedding_optimizer,
        ),
    )
    schema, train_ds, val_ds, _ = MovieLensAdapter(config.data).build()
    assert len(train_ds) % config.train.batch_size == 1

    mp.spawn(ddp_rank, args=(2, free_port(), config, tmp_path), nprocs=2)

    ddp = torch.load(tmp_path / "ddp.pt", weights_only=False)
    for name in MODELS:
        torch.manual_seed(SEED)
        model = build_model(name, schema, config)
        result = Trainer(model, config.train, CPU, SEED).fit(train_ds, val_ds)
        ddp_result = ddp[name]["result"]
        assert 2 < result.epochs_run < config.train.max_epochs  # resumed; stopped early
        assert ddp_result.best_epoch == result.best_epoch
        assert [r.epoch for r in ddp_result.history] == [r.epoch for r in result.history]
        for ddp_record, record in zip(ddp_result.history, result.history, strict=True):
            assert ddp_record.train_loss == pytest.approx(record.train_loss, abs=1e-6)
            assert ddp_record.val_auc == pytest.approx(record.val_auc, abs=1e-6)
            assert ddp_record.val_logloss == pytest.approx(record.val_logloss, abs=1e-6)
        for key, value in model.state_dict().items():
            torch.testing.assert_close(
                ddp[name]["state"][key], value, rtol=0, atol=WEIGHT_TOLERANCE, msg=key
            )
        # Sparse (row-wise) gradients bypass DDP's reducer, whose sparse all-reduce over
        # gloo aborted ranks; dense ones are DDP's to average.
        table_weights = [
            table.weight
            for module in model.modules()
            if isinstance(module, FeatureEmbedding)
            for _, table in module.named_tables()
        ]
        tables = {key for key, param in model.named_parameters() if _member(param, table_weights)}
        assert tables
        expected = tables if embedding_optimizer == "lazy_adam" else set()
        assert ddp[name]["ddp_ignores"] == expected
    assert not list((tmp_path / "rank1").iterdir())


@pytest.mark.slow
def test_train_stage_with_nproc_2_writes_what_one_process_would(workspace, monkeypatch, loopback):
    # An odd batch size: every global batch is split unevenly between the two ranks.
    params = yaml.safe_load((workspace / "params.yaml").read_text())
    params["train"].update(nproc=2, batch_size=255)
    (workspace / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{workspace / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--model", "deepfm", "--seed", "42"],
        cwd=workspace,
        check=True,
        capture_output=True,
        text=True,
    )  # relaunches itself under torchrun

    # One process with the same params: what the stage would have written.
    monkeypatch.chdir(workspace)
    config = ExperimentConfig.from_yaml("params.yaml")
    schema, train_ds, val_ds, _ = MovieLensAdapter(config.data).build()
    torch.manual_seed(SEED)
    model = build_model("deepfm", schema, config)
    result = Trainer(model, config.train, CPU, SEED).fit(train_ds, val_ds)

    folder = workspace / "models/deepfm/seed-42"
    summary = json.loads((folder / "train.json").read_text())
    expected = result.summary() | {"seed": SEED, "parameters": summary["parameters"]}
    assert summary.keys() == expected.keys()
    for key in ("best_val_auc", "best_val_logloss"):
        assert summary[key] == pytest.approx(expected[key], abs=1e-6)
    for key in ("best_epoch", "epochs_run", "device"):
        assert summary[key] == expected[key]
    with open(folder / "history.csv") as handle:
        history = list(csv.DictReader(handle))
    assert [int(row["epoch"]) for row in history] == [r.epoch for r in result.history]
    for row, record in zip(history, result.history, strict=True):
        for key in ("train_loss", "val_auc", "val_logloss"):
            assert float(row[key]) == pytest.approx(getattr(record, key), abs=1e-6)
    saved = load_model(folder / "model.pt")
    assert saved.config.train.nproc == 2
    for key, value in model.state_dict().items():
        torch.testing.assert_close(
            saved.model.state_dict()[key], value, rtol=0, atol=WEIGHT_TOLERANCE, msg=key
        )
    assert not (workspace / "models/deepfm/seed-42.checkpoint.pt").exists()

    # Rank 0 alone talked to MLflow: one run, which knows it had two processes.
    import mlflow  # here, not at the top: the spawned ranks import this module

    client = mlflow.MlflowClient(tracking_uri=uri)
    experiments = [e.experiment_id for e in client.search_experiments()]
    runs = client.search_runs(experiments, max_results=10)
    run_id = json.loads((folder / "run.json").read_text())["run_id"]
    assert [run.info.run_id for run in runs] == [run_id]
    assert runs[0].info.status == "FINISHED"
    assert runs[0].data.tags["world_size"] == "2"
    assert runs[0].data.params["train.nproc"] == "2"
