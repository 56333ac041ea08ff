#!/usr/bin/env bash
# Test AUC on ml-100k with row-wise (lazy) Adam on every embedding table against the
# committed results (dense Adam: ml-100k's tables are all below the row-wise threshold),
# seeds 42, 43, 44: a scratch clone of HEAD runs the DVC experiment, then both metrics
# files are printed side by side.
#
#   bash bench/lazy_adam_auc.sh [WORKDIR] [MODELS]   (default /tmp/deepfm-lazy-adam, "deepfm fm")
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
work=${1:-/tmp/deepfm-lazy-adam}
models=${2:-deepfm fm}
rm -rf "$work"
git clone -q "$repo" "$work"
cd "$work"
list=$(echo "$models" | tr ' ' ',')
dvc exp run -q -S train.embedding_optimizer=lazy_adam -S "train.models=[$list]" -S "tune.models=[]" >/dev/null
python - "$repo" $models <<'PY'
import json, sys
from pathlib import Path

repo, models = Path(sys.argv[1]), sys.argv[2:]
print("| model | dense Adam: mean test AUC (42, 43, 44) | row-wise Adam | difference |")
print("|---|---|---|---|")
for model in models:
    dense = json.loads((repo / f"reports/models/{model}/metrics.json").read_text())
    lazy = json.loads(Path(f"reports/models/{model}/metrics.json").read_text())
    def cell(m):
        seeds = ", ".join(f"{s['test_auc']:.4f}" for s in m["seeds"].values())
        return f"{m['mean']['test_auc']:.4f} ({seeds})"
    diff = lazy["mean"]["test_auc"] - dense["mean"]["test_auc"]
    print(f"| {model} | {cell(dense)} | {cell(lazy)} | {diff:+.4f} |")
PY
