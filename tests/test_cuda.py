"""CUDA checks (run by bench/gpu_check.sh on a GPU machine; skipped without CUDA)."""

from dataclasses import replace

import pytest
import torch

from deepfm.data.movielens import MovieLensAdapter
from deepfm.models.registry import MODELS, build_model
from deepfm.predict import resolve_device
from deepfm.training.trainer import Trainer

pytestmark = pytest.mark.cuda


def test_auto_device_is_cuda():
    assert resolve_device("auto").type == "cuda"


@pytest.mark.parametrize("name", list(MODELS))
def test_cuda_training_matches_cpu_quality(small_config, name):
    """bf16 autocast on CUDA learns like float32 on the CPU (val AUC within 0.02)."""
    schema, train_ds, val_ds, _ = MovieLensAdapter(small_config.data).build()
    config = replace(small_config, train=replace(small_config.train, max_epochs=3, batch_size=128))
    aucs = {}
    for device in (torch.device("cpu"), torch.device("cuda")):
        torch.manual_seed(0)
        model = build_model(name, schema, config).to(device)
        aucs[device.type] = Trainer(model, config.train, device).fit(train_ds, val_ds).best_val_auc
    assert aucs["cuda"] == pytest.approx(aucs["cpu"], abs=0.02)


def test_batches_stay_on_the_device(small_config):
    _, train_ds, _, _ = MovieLensAdapter(small_config.data).build()
    on_gpu = train_ds.to("cuda")
    features, labels = on_gpu.batch(torch.arange(8, device="cuda"))
    assert all(tensor.is_cuda for tensor in features.values()) and labels.is_cuda
