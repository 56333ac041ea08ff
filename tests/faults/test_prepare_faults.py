"""`prepare` SIGKILLed while it writes: no truncated Parquet is ever at the output path,
and the rerun completes with exactly what an uninterrupted run writes."""

from __future__ import annotations

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


def change_split_seed(work: Path, seed: int) -> None:
    """Edit params.yaml so that the next prepare writes other content than the last."""
    params = yaml.safe_load((work / "params.yaml").read_text())
    params["data"]["seed"] = seed
    (work / "params.yaml").write_text(yaml.safe_dump(params))


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
