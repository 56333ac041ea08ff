#!/usr/bin/env bash
# MovieLens-25M end to end on this machine: a scratch clone of HEAD, a generated ml-25m
# release (25M ratings, python -m deepfm.data.synthetic) placed where `download` looks for
# a local archive, then one DVC experiment: download -> prepare -> train -> evaluate.
#
#   bash bench/ml25m_end_to_end.sh [WORKDIR]     (default /tmp/deepfm-ml25m)
#
# Prints each stage's start time (seconds since the experiment started), the whole
# experiment's wall time, and the peak RSS of its largest process (GNU time).
set -euo pipefail
repo=$(git rev-parse --show-toplevel)
work=${1:-/tmp/deepfm-ml25m}
zip=$work/release/ml-25m.zip
if [ ! -f "$zip" ]; then
  python -m deepfm.data.synthetic --release ml-25m --ratings 25000000 --out "$work/release"
fi
rm -rf "$work/repo"
git clone -q "$repo" "$work/repo"
mkdir -p "$work/repo/data/raw"
cp "$zip" "$work/repo/data/raw/ml-25m.zip"
cd "$work/repo"
start=$(date +%s.%N)
/usr/bin/time -v -o "$work/time.txt" \
  dvc exp run -S data.dataset=ml-25m -S 'train.models=[deepfm]' -S 'train.seeds=[42]' \
    -S train.max_epochs=3 -S 'tune.models=[]' 2>&1 |
  while IFS= read -r line; do
    case "$line" in
      *"Running stage"*|*"epoch "*|*"test AUC"*|*"rows"*) \
        printf '%7.1f s  %s\n' "$(echo "$(date +%s.%N) - $start" | bc)" "$line" ;;
    esac
  done
grep -E "Elapsed|Maximum resident" "$work/time.txt"
cat reports/models/deepfm/metrics.json
