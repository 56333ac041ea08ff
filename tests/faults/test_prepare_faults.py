"""`prepare` SIGKILLed while it writes: no truncated Parquet is ever at the output path,
and the rerun completes with exactly what an uninterrupted run writes. Params that make
an impossible dataset stop it before it writes anything."""

from __future__ import annotations

import resource
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import yaml

from deepfm.config import ExperimentConfig
from deepfm.data.prepare import prepare
from faults.processes import run_stage, stage

OUTPUT = Path("data/processed/ml-100k")


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file under `folder` by relative path, with its bytes."""
    return {
        path.relative_to(folder).as_posix(): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file()
    }


def change_data_params(work: Path, **changes: object) -> None:
    """Edit the `data` section of `work`'s params.yaml."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"].update(changes)
    (work / "params.yaml").write_text(yaml.safe_dump(params))


def change_split_seed(work: Path, seed: int) -> None:
    """Edit params.yaml so that the next prepare writes other content than the last."""
    change_data_params(work, seed=seed)


def uninterrupted(work: Path, dest: Path) -> dict[str, bytes]:
    """What prepare writes for `work`'s params and raw data, run in this process."""
    config = ExperimentConfig.from_yaml(work / "params.yaml")
    data = replace(config.data, raw_dir=str(work / config.data.raw_dir), processed_dir=str(dest))
    prepare(data, config.feature)
    return snapshot(data.processed_path)


def unreadable(path: Path) -> bool:
    try:
        pq.read_table(path)
    except (pa.ArrowInvalid, OSError):
        return True
    return False


@pytest.mark.slow
def test_prepare_killed_mid_parquet_write_leaves_the_old_output_whole(project, tmp_path, stop_at):
    before = snapshot(project / OUTPUT)
    change_split_seed(project, 7)

    stop_at(project, "parquet-write:2", stage("prepare")).kill()

    # The output path holds the old output, whole; the half-written file is in a temp
    # folder beside it (so the fault really happened).
    assert snapshot(project / OUTPUT) == before
    [temp] = (project / OUTPUT.parent).glob(".tmp-ml-100k.*")
    assert [path.name for path in temp.rglob("*.parquet") if unreadable(path)] == ["val.parquet"]

    rerun = run_stage(project, "prepare")

    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(project / OUTPUT) == uninterrupted(project, tmp_path / "expected")
    assert [path.name for path in (project / OUTPUT.parent).iterdir()] == ["ml-100k"]


@pytest.mark.slow
def test_prepare_killed_between_the_swap_renames_leaves_no_partial_output(
    project, tmp_path, stop_at
):
    before = snapshot(project / OUTPUT)
    change_split_seed(project, 7)

    stop_at(project, "folder-swap:ml-100k", stage("prepare")).kill()

    # Nothing at the output path (never a part of one); the old output waits, whole,
    # in a temp folder beside it.
    assert not (project / OUTPUT).exists()
    [aside] = (project / OUTPUT.parent).glob(".tmp-ml-100k.old.*")
    assert snapshot(aside / "ml-100k") == before

    rerun = run_stage(project, "prepare")

    assert rerun.returncode == 0, rerun.stderr
    assert snapshot(project / OUTPUT) == uninterrupted(project, tmp_path / "expected")
    assert [path.name for path in (project / OUTPUT.parent).iterdir()] == ["ml-100k"]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("changes", "message"),
    [
        # above the rating scale: refused with the params, before prepare reads anything
        ({"label_threshold": 10}, "params.yaml: data.label_threshold must be <= 5.0, got 10"),
        # within the scale, but every rating of the data is >= 1
        (
            {"label_threshold": 1.0},
            "data.label_threshold 1.0 makes 100% of the 1600 train ratings of ml-100k positive; "
            "choose a threshold that leaves both labels",
        ),
        (
            {"split_ratios": [0.9996, 0.0002, 0.0002]},
            "data.split_ratios [0.9996, 0.0002, 0.0002] leave the val split of ml-100k empty "
            "(2000 ratings); give every split a larger share",
        ),
    ],
    ids=["threshold above the rating scale", "one label in train", "empty val split"],
)
def test_impossible_dataset_is_refused_before_prepare_writes(project, changes, message):
    before = snapshot(project / "data")
    change_data_params(project, **changes)

    result = run_stage(project, "prepare")

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert error.endswith(message)
    assert snapshot(project / "data") == before
    assert [path.name for path in (project / OUTPUT.parent).iterdir()] == ["ml-100k"]


def limit_file_size() -> None:
    """In the child: files may not grow past 4 KiB (EFBIG, as a full disk gives ENOSPC).
    Python ignores SIGXFSZ, so the write fails with an error instead of killing it."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, 4096))


@pytest.mark.slow
def test_prepare_on_a_full_disk_is_one_line_and_keeps_the_old_output(project):
    before = snapshot(project / "data")
    change_split_seed(project, 7)

    result = subprocess.run(
        [sys.executable, stage("prepare")],
        cwd=project,
        capture_output=True,
        text=True,
        preexec_fn=limit_file_size,
        timeout=120,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert "data/processed/ml-100k: cannot write the prepared data (" in error
    assert error.endswith("File too large); the previous output, if any, is unchanged")
    assert snapshot(project / "data") == before
    assert [path.name for path in (project / OUTPUT.parent).iterdir()] == ["ml-100k"]
