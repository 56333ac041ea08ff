"""Do two commits train bit-identical weights? Every model, both embedding optimizers.

Each side trains every registered model for two epochs on 20,000 synthetic
ml-100k-shaped rows (seeded), with `train.embedding_optimizer` `auto` and `lazy_adam`
and `embedding_l2` 1e-4, and hashes the state dict; `--base REV` is checked out in a
temporary git worktree and imported from there (`PYTHONPATH`), the other side is the
working tree. A change meant to be a pure speed-up must print "identical" for every row.

    python bench/same_weights.py --base REV [--models deepfm fm ...]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

from bench_levers import worktree

CHILD = """
import hashlib, json, sys
from dataclasses import replace
import torch
sys.path.insert(0, "bench")
from bench_models import schema_like, synthetic_dataset
from deepfm.config import ExperimentConfig
from deepfm.models.registry import build_model
from deepfm.training.trainer import Trainer

config = ExperimentConfig()
schema = schema_like("ml-100k")
data = synthetic_dataset(schema, 20_000)
hashes = {}
for optimizer in ("auto", "lazy_adam"):
    train = replace(config.train, embedding_optimizer=optimizer, embedding_l2=1e-4)
    for name in sys.argv[1:]:
        torch.manual_seed(0)
        model = build_model(name, schema, config)
        trainer = Trainer(model, train, torch.device("cpu"), seed=42)
        for epoch in (1, 2):
            trainer._train_epoch(data, epoch)
        weights = b"".join(value.numpy().tobytes() for value in model.state_dict().values())
        hashes[f"{name} {optimizer}"] = hashlib.sha256(weights).hexdigest()[:16]
print(json.dumps(hashes))
"""


def hashes(models: list[str], source: Path | None) -> dict[str, str]:
    env = dict(os.environ)
    if source is not None:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(source), env.get("PYTHONPATH")]))
    out = subprocess.run(
        [sys.executable, "-c", CHILD, *models], check=True, capture_output=True, text=True, env=env
    ).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--base", required=True, help="the git revision to compare with")
    parser.add_argument(
        "--models",
        nargs="+",
        default=[
            "fm", "dnn", "deepfm", "xdeepfm", "attention_deepfm",
            "wide_deep", "dcnv2", "finalmlp", "autoint",
        ],
    )  # fmt: skip
    args = parser.parse_args()
    with worktree(args.base) as source:
        before = hashes(args.models, source)
    after = hashes(args.models, None)
    print(f"| model, embedding_optimizer | {args.base} | working tree | |\n|---|---|---|---|")
    for key, value in before.items():
        verdict = "identical" if after[key] == value else "**differ**"
        print(f"| {key} | {value} | {after[key]} | {verdict} |")


if __name__ == "__main__":
    main()
