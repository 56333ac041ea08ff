"""Run-to-run determinism: train every model twice, identically, and print how far apart
the two runs' weights and validation metrics end up.

Both runs use the same seed, data, batch order and device; on the CPU the difference is
exactly 0 (tests/faults/test_train_faults.py checks it through the `train` stage). On CUDA
the backward of embedding lookups accumulates with atomic adds (index_add / scatter-add),
whose order varies from run to run, so float rounding can differ and grow over the steps.

    python bench/determinism.py --device cuda     # what bench/gpu_check.sh runs
"""

from __future__ import annotations

import argparse
from dataclasses import replace

import torch

from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import Schema
from deepfm.models.registry import MODELS, build_model
from deepfm.training.trainer import Trainer


def train_once(
    name: str,
    data: tuple[Schema, CTRDataset, CTRDataset],
    config: ExperimentConfig,
    device: torch.device,
) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The final weights (on the CPU) and the per-epoch val AUCs of one seeded training."""
    schema, train_ds, val_ds = data
    torch.manual_seed(config.train.seeds[0])
    model = build_model(name, schema, config).to(device)
    result = Trainer(model, config.train, device, config.train.seeds[0]).fit(train_ds, val_ds)
    weights = {key: value.detach().float().cpu() for key, value in model.state_dict().items()}
    return weights, [record.val_auc for record in result.history]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--rows", type=int, default=200_000, help="training rows")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    device = torch.device(args.device)
    schema = schema_like("ml-100k")
    data = (schema, synthetic_dataset(schema, args.rows), synthetic_dataset(schema, 20_000, 1))
    config = ExperimentConfig()
    config = replace(
        config, train=replace(config.train, max_epochs=args.epochs, patience=args.epochs)
    )
    print(
        f"torch {torch.__version__}, {device}: two identical trainings per model, "
        f"{args.rows:,} rows, {args.epochs} epoch(s), batch {config.train.batch_size}"
    )
    print("| model | max abs weight difference | max abs val AUC difference |")
    print("|---|---:|---:|")
    for name in args.models:
        (weights_a, auc_a), (weights_b, auc_b) = (
            train_once(name, data, config, device) for _ in range(2)
        )
        weight_gap = max(float((weights_a[k] - weights_b[k]).abs().max()) for k in weights_a)
        auc_gap = max(abs(a - b) for a, b in zip(auc_a, auc_b, strict=True))
        print(f"| {name} | {weight_gap:.3g} | {auc_gap:.3g} |", flush=True)


if __name__ == "__main__":
    main()
