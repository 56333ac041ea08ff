"""CI: compare the results of a fresh `dvc repro` with the committed ones.

Run after `dvc repro` in a clone: every test AUC and logloss of `dvc metrics diff HEAD` (per
seed, mean and std) must be within `TOLERANCE` of the committed value, and every committed
metric must have been reproduced. Prints whether the results are bit-identical: every metric
value equal and every trained `model.pt` the same bytes as the committed `dvc.lock` records.
Exit status 1 on drift.
"""

from __future__ import annotations

import json
import subprocess
import sys

import yaml

TOLERANCE = 1e-4
CHECKED = ("test_auc", "test_logloss")
TIMINGS = ("train_seconds", "samples_per_second")  # differ run to run by nature


def model_hashes(lock_text: str) -> dict[str, str]:
    """`model.pt` path -> md5 from a `dvc.lock`."""
    hashes = {}
    for stage in yaml.safe_load(lock_text)["stages"].values():
        for out in stage.get("outs", []):
            if out["path"].endswith("model.pt"):
                hashes[out["path"]] = out["md5"]
    return hashes


def main() -> int:
    diff = json.loads(
        subprocess.run(
            ["dvc", "metrics", "diff", "HEAD", "--all", "--json"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    drifted, compared, identical = [], 0, True
    for path, metrics in sorted(diff.items()):
        for key, change in sorted(metrics.items()):
            old, new = change.get("old"), change.get("new")
            name = key.rsplit(".", 1)[-1]
            if old != new and name not in TIMINGS:
                identical = False
            if name not in CHECKED:
                continue
            compared += 1
            if old is None or new is None or abs(new - old) > TOLERANCE:
                drifted.append(f"{path}: {key} committed {old}, reproduced {new}")
    if compared == 0:
        print("no test_auc/test_logloss metrics found to compare: failing")
        return 1

    committed_lock = subprocess.run(
        ["git", "show", "HEAD:dvc.lock"], capture_output=True, text=True, check=True
    ).stdout
    with open("dvc.lock", encoding="utf-8") as handle:
        fresh = model_hashes(handle.read())
    committed = model_hashes(committed_lock)
    same_weights = committed == fresh
    print(f"compared {compared} test AUC/logloss values with the committed ones")
    print(
        f"model.pt files: {len(fresh)}, "
        f"{'all the same bytes as committed' if same_weights else 'some differ from committed'}"
    )
    print(
        "results are BIT-IDENTICAL to the committed ones"
        if identical and same_weights
        else "results are NOT bit-identical to the committed ones"
    )
    if drifted:
        print(f"{len(drifted)} metric(s) drifted by more than {TOLERANCE}:")
        print("\n".join(f"  {line}" for line in drifted))
        return 1
    print(f"every test AUC and logloss is within {TOLERANCE} of the committed value")
    return 0


if __name__ == "__main__":
    sys.exit(main())
