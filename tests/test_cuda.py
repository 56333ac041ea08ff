"""CUDA checks (run by bench/gpu_check.sh on a GPU machine; skipped without CUDA)."""

from dataclasses import replace

import pytest
import torch

from deepfm.data.movielens import MovieLensAdapter
from deepfm.models.registry import MODELS, build_model
from deepfm.predict import resolve_device
from deepfm.training.optimizers import RowWiseAdam
from deepfm.training.trainer import Trainer

pytestmark = pytest.mark.cuda


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("embedding_optimizer", ["adam", "lazy_adam"])
@pytest.mark.parametrize("name", list(MODELS))
def test_cuda_training_matches_cpu_quality(small_config, name, embedding_optimizer):
    """bf16 autocast on CUDA learns like float32 on the CPU (val AUC within 0.02), with dense
    and with row-wise embedding updates."""
    schema, train_ds, val_ds, _ = MovieLensAdapter(small_config.data).build()
    train = replace(
        small_config.train, max_epochs=3, batch_size=128, embedding_optimizer=embedding_optimizer
    )
    config = replace(small_config, train=train)
    aucs = {}
    for device in (torch.device("cpu"), torch.device("cuda")):
        torch.manual_seed(0)
        model = build_model(name, schema, config).to(device)
        trainer = Trainer(model, config.train, device, seed=42)
        aucs[device.type] = trainer.fit(train_ds, val_ds).best_val_auc
    assert aucs["cuda"] == pytest.approx(aucs["cpu"], abs=0.02)


def test_batches_stay_on_the_device(small_config):
    _, train_ds, _, _ = MovieLensAdapter(small_config.data).build()
    on_gpu = train_ds.to("cuda")
    features, labels = on_gpu.batch(torch.arange(8, device="cuda"))
    assert all(tensor.is_cuda for tensor in features.values()) and labels.is_cuda


def test_row_wise_adam_on_cuda_matches_the_cpu():
    """Sparse gradients and RowWiseAdam give the CPU's update on CUDA (float32, 1e-6)."""
    torch.manual_seed(0)
    weights = torch.randn(1000, 8)
    index = torch.randint(0, 1000, (512,))
    grad_rows = torch.randn(512, 8)
    results = []
    for device in ("cpu", "cuda"):
        table = torch.nn.Parameter(weights.to(device))
        optimizer = RowWiseAdam([table], lr=0.01, weight_decay=1e-3)
        for _ in range(3):
            lookup = torch.nn.functional.embedding(index.to(device), table, sparse=True)
            (lookup * grad_rows.to(device)).sum().backward()
            optimizer.step()
            table.grad = None
        results.append(table.detach().cpu())
    torch.testing.assert_close(results[1], results[0], rtol=1e-5, atol=1e-6)
