"""The training loop: index-sliced batches, Adam, early stopping on val AUC, resumable.

Batches are slices of a seeded per-epoch permutation over whole-column tensors
that live on the training device; there is no DataLoader and no per-row Python.
The same params and seed on the CPU give bitwise-equal weights, and a run
resumed from its last epoch checkpoint ends exactly like an uninterrupted one.

In a torchrun process group (`distributed.py`) the ranks split every global batch of
`batch_size` rows between them, DDP averages their gradients, rank 0 alone scores the
validation split (and sends the metrics to all, so all stop alike) and writes checkpoints.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn
from tqdm import tqdm

from deepfm import atomic
from deepfm.config import TrainConfig
from deepfm.data.dataset import CTRDataset
from deepfm.errors import UserError
from deepfm.metrics import log_loss, roc_auc
from deepfm.predict import autocast, dataset_logits
from deepfm.training import allocator, distributed
from deepfm.training.optimizers import CTROptimizer

logger = logging.getLogger(__name__)


class CheckpointError(UserError, ValueError):
    """A checkpoint of this run (same params, seed and data) that this code cannot resume.

    Example::

        raise CheckpointError(f"{path}: row-wise Adam state in an older layout ('moments')")
    """


class DivergedError(UserError, ArithmeticError):
    """Training reached a loss or validation metric that is not a finite number.

    Example::

        raise DivergedError(f"{name} seed {seed}: the loss became NaN at epoch {epoch}")
    """


@dataclass(frozen=True)
class EpochRecord:
    """One epoch of training, as `history.csv` holds it.

    Args:
        epoch: 1-based epoch number.
        train_loss: mean training loss over the epoch's rows.
        val_auc: validation AUC after the epoch.
        val_logloss: validation logloss after the epoch.
        seconds: wall time of the epoch, validation included.

    Example::

        record = EpochRecord(epoch=1, train_loss=0.58, val_auc=0.77, val_logloss=0.56, seconds=3.2)
    """

    epoch: int
    train_loss: float
    val_auc: float
    val_logloss: float
    seconds: float


@dataclass
class TrainResult:
    """What `fit` did: the history, the best epoch (whose weights the model now holds).

    Args:
        history: one record per epoch run.
        best_epoch, best_val_auc, best_val_logloss: the epoch of the best val AUC, its metrics.
        train_seconds, train_samples: time spent in and rows seen by training steps.
        device: where training ran.

    Example::

        result = trainer.fit(train_ds, val_ds)
        result.best_epoch, result.summary()["samples_per_second"]
    """

    history: list[EpochRecord] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float = -math.inf
    best_val_logloss: float = math.inf
    train_seconds: float = 0.0
    train_samples: int = 0
    device: str = "cpu"

    @property
    def epochs_run(self) -> int:
        return len(self.history)

    @property
    def samples_per_second(self) -> float:
        return self.train_samples / self.train_seconds if self.train_seconds else 0.0

    def summary(self) -> dict[str, Any]:
        """The numbers `reports/models/<model>/train.json` holds."""
        return {
            "best_val_auc": self.best_val_auc,
            "best_val_logloss": self.best_val_logloss,
            "best_epoch": self.best_epoch,
            "epochs_run": self.epochs_run,
            "train_seconds": round(self.train_seconds, 3),
            "samples_per_second": round(self.samples_per_second, 1),
            "device": self.device,
        }


class Trainer:
    """Fits a CTR model (`forward(batch) -> logits (B,)`) with BCE-with-logits.

    Args:
        model: the model, already on `device`.
        config: the `train` section of params.
        device: where the model and the data columns live.
        seed: the training seed, one of `train.seeds`; it orders every epoch's rows.

    Example::

        trainer = Trainer(model, config.train, torch.device("cpu"), seed=42)
        result = trainer.fit(train_ds, val_ds, checkpoint=Path("models/fm/seed-42.ckpt"))
    """

    def __init__(
        self, model: nn.Module, config: TrainConfig, device: torch.device, seed: int
    ) -> None:
        self.model = model
        self.config = config
        self.device = device
        self.seed = seed
        if distributed.world_size() == 1:
            # Not in a process group: mallopt while gloo's threads allocate has aborted
            # DDP ranks ("malloc(): unaligned tcache chunk detected"), see allocator.py.
            allocator.keep_freed_memory()
        self.optimizer = CTROptimizer(model, config)
        # What training steps call: DDP in a process group, else the model itself.
        self.train_model = distributed.wrap(model, device, self.optimizer.sparse_tables)
        self.autocast = autocast(device)

    def fit(
        self,
        train_ds: CTRDataset,
        val_ds: CTRDataset,
        checkpoint: Path | None = None,
        run_key: str = "",
        on_epoch: Callable[[EpochRecord], None] | None = None,
        run_id: str = "",
    ) -> TrainResult:
        """Train until `max_epochs` or `patience` epochs without a better val AUC.

        With `checkpoint`, state is saved after every epoch (after `on_epoch` saw it) and a
        checkpoint with the same `run_key` (what identifies the run: params, seed and data)
        is resumed from; it also keeps `run_id`, the tracking run this training logs to
        (`checkpointed_run_id` reads it back). The checkpoint is removed once training
        ends. In a process group, rank 0 reads, writes and removes it and sends what it
        read to every rank. A loss or val metric that is not finite raises `DivergedError`
        (the checkpoint of the last good epoch stays).
        """
        train_ds, val_ds = train_ds.to(self.device), val_ds.to(self.device)
        result = TrainResult(device=str(self.device))
        best_state = _copy_state(self.model)
        epochs_without_gain = 0
        start_epoch = 1
        state = None if checkpoint is None else self._load_checkpoint(checkpoint, run_key)
        if state is not None:
            try:
                start_epoch, best_state, epochs_without_gain = self._restore(state, result)
            except ValueError as error:
                raise CheckpointError(f"{checkpoint}: {error}") from error
            logger.info("resuming from %s after epoch %d", checkpoint, start_epoch - 1)

        for epoch in range(start_epoch, self.config.max_epochs + 1):
            if epochs_without_gain >= self.config.patience:
                break
            started = time.perf_counter()
            train_loss = self._train_epoch(train_ds, epoch)
            result.train_seconds += time.perf_counter() - started
            result.train_samples += len(train_ds)
            val_auc, val_logloss = self._validate(val_ds)
            if not (math.isfinite(val_auc) and math.isfinite(val_logloss)):
                raise DivergedError(
                    f"training diverged: val logloss is {val_logloss} after epoch {epoch}; "
                    f"lower train.lr (now {self.config.lr})"
                )
            record = EpochRecord(
                epoch=epoch,
                train_loss=train_loss,
                val_auc=val_auc,
                val_logloss=val_logloss,
                seconds=time.perf_counter() - started,
            )
            result.history.append(record)
            if record.val_auc > result.best_val_auc:
                result.best_epoch, result.best_val_auc = epoch, record.val_auc
                result.best_val_logloss = record.val_logloss
                best_state = _copy_state(self.model)
                epochs_without_gain = 0
            else:
                epochs_without_gain += 1
            logger.info(
                "epoch %d: train loss %.4f, val AUC %.4f, val logloss %.4f (%.1f s)",
                *(epoch, train_loss, record.val_auc, record.val_logloss, record.seconds),
            )
            # Reported before the checkpoint: a kill in between repeats the epoch (and its
            # report, with the same numbers) rather than losing its report.
            if on_epoch is not None:
                on_epoch(record)
            if checkpoint is not None and distributed.rank() == 0:
                state = (epoch, best_state, epochs_without_gain, result)
                self._save(checkpoint, run_key, run_id, *state)

        self.model.load_state_dict(best_state)
        if checkpoint is not None and distributed.rank() == 0:
            checkpoint.unlink(missing_ok=True)
        return result

    def _train_epoch(self, train_ds: CTRDataset, epoch: int) -> float:
        self.train_model.train()
        rows, world = len(train_ds), distributed.world_size()
        # The permutation depends only on (seed, epoch): a resumed run, and every rank, sees
        # the same order.
        generator = torch.Generator().manual_seed(self.seed * 100_003 + epoch)
        order = torch.randperm(rows, generator=generator).to(self.device)
        batch_size = self.config.batch_size
        loss_sum = torch.zeros((), device=self.device, dtype=torch.float64)
        batches = range(0, rows, batch_size)
        # Each step's loss stays on the device (no sync per step) until the epoch ends.
        step_losses = torch.zeros(len(batches), device=self.device)
        # disable=None: a bar on a terminal, silence in CI logs; no bar on ranks other than 0.
        quiet = None if distributed.rank() == 0 else True
        bar = tqdm(batches, desc=f"epoch {epoch}", unit="batch", leave=False, disable=quiet)
        for step, start in enumerate(bar):
            batch = order[start : start + batch_size]
            loss = self._batch_loss(train_ds, batch, world)
            self.optimizer.zero_grad()
            loss.backward()
            distributed.average_sparse_gradients(self.optimizer.sparse_tables)
            self.optimizer.step()
            step_losses[step] = loss.detach()
            loss_sum += loss.detach() * (len(batch) / world)  # this rank's sum of row losses
        self._check_finite(distributed.all_reduce_sum(step_losses), epoch)
        return float(distributed.all_reduce_sum(loss_sum)) / rows

    def _check_finite(self, step_losses: torch.Tensor, epoch: int) -> None:
        """`DivergedError` naming the first step of `epoch` whose loss is not finite."""
        bad = (~torch.isfinite(step_losses)).nonzero()
        if len(bad):
            step = int(bad[0]) + 1
            raise DivergedError(
                f"training diverged: the loss is {float(step_losses[step - 1])} at epoch "
                f"{epoch}, step {step} of {len(step_losses)}; lower train.lr (now "
                f"{self.config.lr})"
            )

    def _batch_loss(self, train_ds: CTRDataset, batch: torch.Tensor, world: int) -> torch.Tensor:
        """The loss of this rank's part of `batch` (row indices) whose gradient, averaged over
        the ranks, is the gradient of the mean loss over `batch`."""
        if world == 1:
            features, labels = train_ds.batch(batch)
            with self.autocast:
                logits = self.train_model(features)
            return nn.functional.binary_cross_entropy_with_logits(logits.float(), labels)
        rows, weights = distributed.shard(batch, distributed.rank(), world)
        features, labels = train_ds.batch(rows)
        with self.autocast:
            logits = self.train_model(features)
        return nn.functional.binary_cross_entropy_with_logits(
            logits.float(), labels, weight=weights, reduction="sum"
        )

    def _validate(self, val_ds: CTRDataset) -> tuple[float, float]:
        """Val AUC and logloss over the whole split: scored on rank 0 and sent to every rank,
        so that all ranks make the same early-stopping decision."""
        metrics: tuple[float, float] | None = None
        if distributed.rank() == 0:
            logits = dataset_logits(self.model, val_ds, self.device)
            metrics = roc_auc(val_ds.labels, logits), log_loss(val_ds.labels, logits)
        return distributed.broadcast(metrics)

    def _load_checkpoint(self, path: Path, run_key: str) -> dict[str, Any] | None:
        """The state saved at `path` if it is of run `run_key`, else None; rank 0 reads it
        and every rank gets a copy (no file system shared between nodes needed)."""
        state = None
        if distributed.rank() == 0 and path.is_file():
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state["run_key"] != run_key:
                logger.warning("ignoring %s: it belongs to other params or data", path)
                state = None
        return distributed.broadcast(state)

    def _save(
        self,
        path: Path,
        run_key: str,
        run_id: str,
        epoch: int,
        best_state: dict[str, torch.Tensor],
        epochs_without_gain: int,
        result: TrainResult,
    ) -> None:
        state = {
            "run_key": run_key,
            "run_id": run_id,
            "epoch": epoch,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "best_state": best_state,
            "epochs_without_gain": epochs_without_gain,
            "history": [asdict(record) for record in result.history],
            "best": [result.best_epoch, result.best_val_auc, result.best_val_logloss],
            "timing": [result.train_seconds, result.train_samples],
            "cpu_rng": torch.get_rng_state(),
        }
        with atomic.open_for_write(path) as tmp:
            torch.save(state, tmp)

    def _restore(
        self, state: dict[str, Any], result: TrainResult
    ) -> tuple[int, dict[str, torch.Tensor], int]:
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["cpu_rng"])
        result.history = [EpochRecord(**record) for record in state["history"]]
        result.best_epoch, result.best_val_auc, result.best_val_logloss = state["best"]
        result.train_seconds, result.train_samples = state["timing"]
        return state["epoch"] + 1, state["best_state"], state["epochs_without_gain"]


def checkpointed_run_id(path: Path, run_key: str) -> str:
    """The tracking run id saved in checkpoint `path` if it is of run `run_key`, else ""."""
    if not path.is_file():
        return ""
    state = torch.load(path, map_location="cpu", weights_only=True)
    return state["run_id"] if state["run_key"] == run_key else ""


def _copy_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: value.detach().clone() for name, value in model.state_dict().items()}
