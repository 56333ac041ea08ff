"""Where a model runs, and the one batched path from its inputs to logits.

Training's validation, `evaluate`, serving (`CTRPredictor`) and `deepfm score` all score
through `predict_logits`: `PREDICT_BATCH_SIZE` rows at a time, in eval mode, without
gradients, and in bf16 autocast on CUDA only (on the CPU the logits are plain float32, so
the same model and rows give bit-identical logits on every path).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import Tensor, nn

from deepfm.data.dataset import Batch, CTRDataset
from deepfm.errors import UserError

PREDICT_BATCH_SIZE = 65_536


class DeviceError(UserError, ValueError):
    """A `train.device` this machine does not have.

    Example::

        raise DeviceError("train.device is cuda but no CUDA device is available")
    """


def resolve_device(name: str) -> torch.device:
    """`auto` is CUDA when available, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise DeviceError(
            "train.device is 'cuda' but no CUDA device is available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def autocast(device: torch.device) -> torch.autocast:
    """bf16 autocast on CUDA; disabled on any other device."""
    return torch.autocast(
        device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"
    )


@torch.no_grad()
def predict_logits(
    model: nn.Module,
    rows: int,
    features_of: Callable[[slice], Batch],
    device: torch.device,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> Tensor:
    """float32 logits `(rows,)` on `device`, in row order, `batch_size` rows at a time.

    `features_of(slice(start, stop))` gives the model input of rows `start:stop` on `device`
    (only one batch of inputs exists at a time). The model is put in eval mode.
    """
    model.eval()
    outputs = []
    for start in range(0, rows, batch_size):
        with autocast(device):
            outputs.append(model(features_of(slice(start, min(start + batch_size, rows)))).float())
    return torch.cat(outputs) if outputs else torch.empty(0, device=device)


def dataset_logits(
    model: nn.Module,
    dataset: CTRDataset,
    device: torch.device,
    batch_size: int = PREDICT_BATCH_SIZE,
) -> Tensor:
    """`predict_logits` over every row of `dataset` (moved to `device` first), in order."""
    dataset = dataset.to(device)

    def features_of(rows: slice) -> Batch:
        return dataset.batch(torch.arange(rows.start, rows.stop, device=device))[0]

    return predict_logits(model, len(dataset), features_of, device, batch_size)
