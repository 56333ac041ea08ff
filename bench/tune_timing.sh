#!/usr/bin/env bash
# Wall time of one Optuna study from an empty study: `deepfm tune` in a scratch clone of
# HEAD (with this checkout's prepared data), so the repo's study and MLflow store stay
# untouched. Run it on a quiet machine: two trainings sharing the two cores slow each.
#
#   bash bench/tune_timing.sh [MODEL] [TRIALS] [WORKDIR]   (default deepfm 40 /tmp/deepfm-tune)
#
# Prints the study's wall time and peak RSS (GNU time), the trial counts and the best
# trial. The scratch MLflow store stays in WORKDIR/repo for `mlflow ui` or mlflow-ui-shot.
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
model=${1:-deepfm}
trials=${2:-40}
work=${3:-/tmp/deepfm-tune}
rm -rf "$work"
mkdir -p "$work"
git clone -q "$repo" "$work/repo"
cp -r "$repo/data/processed" "$work/repo/data/"
cd "$work/repo"
/usr/bin/time -v -o "$work/time.txt" deepfm tune --model "$model" --trials "$trials" 2>"$work/tune.log"
grep -E "Elapsed|Maximum resident" "$work/time.txt"
python - "reports/tuning/$model.trials.csv" <<'PY'
import csv
import sys

rows = list(csv.DictReader(open(sys.argv[1])))
states = [row["state"] for row in rows]
best = max((row for row in rows if row["state"] == "COMPLETE"), key=lambda r: float(r["value"]))
print(f"trials {len(rows)}: {states.count('COMPLETE')} complete, {states.count('PRUNED')} pruned")
print(f"trial seconds summed {sum(float(row['seconds']) for row in rows):.0f}")
print(f"best: trial {best['number']} validation AUC {float(best['value']):.4f}")
PY
