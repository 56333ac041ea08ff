#!/usr/bin/env bash
# Every GPU check in one call, for a session lent a CUDA machine (see docs/benchmarks.md):
#   1. the CUDA-marked tests (skipped everywhere else): every model with dense and with
#      row-wise embedding updates against the CPU, RowWiseAdam on CUDA against the CPU,
#   2. training samples/s of each model at batch 1024 and 65,536 on 10M synthetic rows with
#      ml-25m-like cardinalities, through the real Trainer (bf16 autocast, fused Adam for
#      dense parameters, sparse gradients and row-wise Adam for the large tables),
#   3. cost against table size on CUDA: ml-100k- vs ml-25m-sized tables, a 100,000-value
#      sequence field vs genres, dense vs row-wise updates (bench/bench_table_size.py),
#   4. run-to-run determinism: two identical short trainings of each model, and the largest
#      difference between their weights and val AUCs (0 on the CPU; see docs/reliability.md).
# torch.compile is not part of the pipeline (bench/bench_levers.py measures it on the CPU).
# Usage (repo root, venv installed from requirements.txt):  bash bench/gpu_check.sh
set -euo pipefail
export PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python -c "import torch; print('torch', torch.__version__, 'cuda', torch.version.cuda, torch.cuda.is_available())"

echo "--- CUDA tests"
python -m pytest -q -m cuda tests

echo "--- training throughput"
python bench/bench_models.py --device cuda --schema ml-25m --rows 10000000 \
  --batch-sizes 1024 65536 --epochs 1

echo "--- cost against table size"
python bench/bench_table_size.py --device cuda --rows 1000000 --rounds 3

echo "--- determinism: two identical trainings per model"
python bench/determinism.py --device cuda
