"""`deepfm score` under faults: a model.pt carrying a pickle payload, a cut-off model.pt,
an empty input file, NaN, unseen or impossible values (OOV, index 0, as documented), an
input that was already scored, `genres` given as text, a bad `--batch-rows`, and an
`--output` that is a folder, read-only or on a full disk."""

from __future__ import annotations

import contextlib
import logging
import os
import resource
import shlex
import shutil
import subprocess
import sys
from collections.abc import Iterator
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from deepfm.__main__ import main
from deepfm.config import SEED_FIELDS, ExperimentConfig
from deepfm.data.prepare import raw_feature_frame
from deepfm.data.raw import read_raw
from deepfm.data.schema import Schema
from deepfm.models.registry import build_model, save_model
from deepfm.serving import CTRPredictor


class Payload:
    """Pickles as a call of os.system: unpickling it runs a shell command."""

    def __init__(self, command: str) -> None:
        self.command = command

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return os.system, (self.command,)


@pytest.fixture
def model_dir(project: Path) -> Path:
    """An untrained (seeded) DeepFM saved as `train` saves it, in the project folder."""
    config = ExperimentConfig.from_yaml(project / "params.yaml")
    schema = Schema.load(project / config.data.processed_path / "schema.json")
    torch.manual_seed(0)
    model = build_model("deepfm", schema, config)
    save_model(project / "models/deepfm/model.pt", "deepfm", model, schema, config)
    return project / "models/deepfm"


@pytest.fixture
def rows(project: Path) -> Path:
    """Ten raw feature rows as a Parquet file."""
    config = ExperimentConfig.from_yaml(project / "params.yaml")
    frame = raw_feature_frame(read_raw(project / config.data.raw_path), np.arange(10), SEED_FIELDS)
    frame.to_parquet(project / "rows.parquet")
    return project / "rows.parquet"


def score_command(model: Path, rows: Path, scores: Path) -> list[str]:
    return ["score", "--model", str(model), "--input", str(rows), "--output", str(scores)]


def one_line_error(args: list[str], caplog: pytest.LogCaptureFixture) -> str:
    """Run the CLI in this process; it must exit 1 with exactly one error line."""
    caplog.clear()
    with caplog.at_level(logging.ERROR), pytest.raises(SystemExit) as exit_info:
        main(args)
    assert exit_info.value.code == 1
    [error] = [record.getMessage() for record in caplog.records]
    assert "\n" not in error
    return error


@pytest.mark.slow
def test_model_pt_carrying_a_pickle_payload_is_refused_and_never_runs(model_dir, rows, tmp_path):
    marker = tmp_path / "payload-ran"
    tampered = tmp_path / "tampered"
    saved = torch.load(model_dir / "model.pt", weights_only=True)
    saved["config"]["note"] = Payload(f"touch {shlex.quote(str(marker))}")
    tampered.mkdir()
    torch.save(saved, tampered / "model.pt")

    result = subprocess.run(
        [sys.executable, "-m", "deepfm", *score_command(tampered, rows, tmp_path / "s.parquet")],
        cwd=model_dir.parents[1],
        capture_output=True,
        text=True,
    )

    assert result.returncode == 1
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert f"{tampered / 'model.pt'}: refused to load: its pickle holds a reference to " in error
    assert not marker.exists()
    assert not (tmp_path / "s.parquet").exists()
    # The payload is live: a load that trusts the pickle runs it.
    torch.load(tampered / "model.pt", weights_only=False)
    assert marker.exists()


def test_cut_off_model_pt_is_one_line_error(model_dir, rows, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(model_dir.parents[1])
    data = (model_dir / "model.pt").read_bytes()
    (tmp_path / "cut").mkdir()
    (tmp_path / "cut/model.pt").write_bytes(data[: len(data) // 2])

    error = one_line_error(score_command(tmp_path / "cut", rows, tmp_path / "s.parquet"), caplog)

    assert error.startswith(f"{tmp_path / 'cut/model.pt'}: not a complete model file (")
    assert not (tmp_path / "s.parquet").exists()


def test_empty_input_file_is_one_line_error(model_dir, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(model_dir.parents[1])
    (tmp_path / "empty.parquet").write_bytes(b"")

    error = one_line_error(
        score_command(model_dir, tmp_path / "empty.parquet", tmp_path / "s.parquet"), caplog
    )

    assert error.startswith(f"{tmp_path / 'empty.parquet'}: not a readable Parquet file")
    assert not (tmp_path / "s.parquet").exists()


def test_nan_and_unseen_values_encode_to_the_oov_index(model_dir, rows):
    predictor = CTRPredictor.from_files(
        model_dir / "model.pt", model_dir.parents[1] / "data/processed/ml-100k/vocab"
    )
    known = pd.read_parquet(rows).iloc[[0]]
    nan = known.assign(user_id=np.nan, movie_id=np.nan, age=np.nan, gender=np.nan)
    nan["occupation"], nan["zip_code"], nan["genres"] = None, None, [[]]
    # Every age falls in a bucket: only a missing age is OOV.
    unseen = known.assign(user_id=10**6, movie_id=10**6, age=np.nan, gender="X")
    unseen["occupation"], unseen["zip_code"], unseen["genres"] = "astronaut", "ZZZ99", [["Noir"]]
    frame = pd.concat([known, nan, unseen], ignore_index=True)

    batch = predictor.encoder.encode(frame)

    for field, indices in batch.items():
        assert bool((indices[0] != 0).any()), field  # the known row is not OOV
        assert not indices[1:].any(), field  # NaN, missing and unseen are index 0


def test_rescoring_a_scored_file_replaces_its_probability_column(
    model_dir, rows, tmp_path, caplog, monkeypatch
):
    monkeypatch.chdir(model_dir.parents[1])
    main(score_command(model_dir, rows, tmp_path / "scored.parquet"))
    caplog.clear()

    with caplog.at_level(logging.WARNING):
        main(score_command(model_dir, tmp_path / "scored.parquet", tmp_path / "again.parquet"))

    scored = pd.read_parquet(tmp_path / "scored.parquet")
    again = pd.read_parquet(tmp_path / "again.parquet")
    assert list(again.columns) == [*pd.read_parquet(rows).columns, "probability"]
    pd.testing.assert_frame_equal(again, scored)
    [warning] = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert warning.startswith(f"{tmp_path / 'scored.parquet'} already has a 'probability' column")


def test_genres_given_as_text_is_one_line_error(model_dir, rows, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(model_dir.parents[1])
    frame = pd.read_parquet(rows)
    frame["genres"] = frame["genres"].map("|".join)
    frame.to_parquet(tmp_path / "text.parquet")

    error = one_line_error(
        score_command(model_dir, tmp_path / "text.parquet", tmp_path / "s.parquet"), caplog
    )

    assert error.startswith(
        f"{tmp_path / 'text.parquet'} rows 0-9: column 'genres' must hold lists of genre names"
    )
    assert not (tmp_path / "s.parquet").exists()


@pytest.mark.parametrize("batch_rows", ["0", "-3"])
def test_batch_rows_below_one_is_refused(
    model_dir, rows, tmp_path, caplog, monkeypatch, batch_rows
):
    monkeypatch.chdir(model_dir.parents[1])
    args = [*score_command(model_dir, rows, tmp_path / "s.parquet"), "--batch-rows", batch_rows]

    error = one_line_error(args, caplog)

    assert error == f"--batch-rows must be a whole number of rows >= 1, got {batch_rows}"
    assert not (tmp_path / "s.parquet").exists()


def test_output_that_is_a_folder_is_refused(model_dir, rows, tmp_path, caplog, monkeypatch):
    monkeypatch.chdir(model_dir.parents[1])
    (tmp_path / "out").mkdir()

    error = one_line_error(score_command(model_dir, rows, tmp_path / "out"), caplog)

    assert error.startswith(f"{tmp_path / 'out'}: is a folder; --output takes")
    assert list((tmp_path / "out").iterdir()) == []


@contextlib.contextmanager
def tmpfs(folder: Path, options: str) -> Iterator[Path]:
    """A real tmpfs mounted at `folder` (needs root: skips without it)."""
    folder.mkdir()
    mount = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(folder)]
    if shutil.which("mount") is None or subprocess.run(mount, capture_output=True).returncode:
        pytest.skip("mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    try:
        yield folder
    finally:
        subprocess.run(["umount", str(folder)], check=True)


def test_output_in_a_read_only_folder_is_one_line_error(
    model_dir, rows, tmp_path, caplog, monkeypatch
):
    """Root writes through file modes, so as root the folder is a read-only mount."""
    monkeypatch.chdir(model_dir.parents[1])
    with contextlib.ExitStack() as stack:
        if os.geteuid() == 0:
            folder = stack.enter_context(tmpfs(tmp_path / "ro", "ro,size=64k"))
        else:
            folder = tmp_path / "ro"
            folder.mkdir(mode=0o555)

        error = one_line_error(score_command(model_dir, rows, folder / "s.parquet"), caplog)

        assert error in (
            f"{folder / 's.parquet'}: cannot write the output (Read-only file system)",
            f"{folder / 's.parquet'}: cannot write the output (Permission denied)",
        )
        assert list(folder.iterdir()) == []


def limit_file_size(limit: int) -> None:
    """In the child: writing past `limit` bytes of a file fails with EFBIG (Python ignores
    SIGXFSZ, so the write returns the error instead of the signal killing the process)."""
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))


@pytest.mark.parametrize("full", ["tmpfs of 16 KiB: ENOSPC", "RLIMIT_FSIZE 16 KiB: EFBIG"])
def test_output_on_a_full_disk_is_one_line_error_and_leaves_nothing(
    model_dir, project, tmp_path, full
):
    config = ExperimentConfig.from_yaml(project / "params.yaml")
    raw = read_raw(project / config.data.raw_path)
    frame = raw_feature_frame(raw, np.arange(raw.ratings.num_rows), SEED_FIELDS)
    frame.to_parquet(tmp_path / "rows.parquet")  # its scores need well over 16 KiB
    with contextlib.ExitStack() as stack:
        if full.startswith("tmpfs"):
            folder, limit = stack.enter_context(tmpfs(tmp_path / "full", "size=16k")), None
        else:
            folder, limit = tmp_path / "full", partial(limit_file_size, 16 * 1024)
            folder.mkdir()
        output = folder / "s.parquet"

        result = subprocess.run(
            [
                sys.executable,
                "-m",
                "deepfm",
                *score_command(model_dir, tmp_path / "rows.parquet", output),
            ],
            cwd=project,
            capture_output=True,
            text=True,
            preexec_fn=limit,
        )

        assert result.returncode == 1, result.stderr
        assert "Traceback" not in result.stderr
        [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
        reason = "No space left on device" if limit is None else "File too large"
        assert error.endswith(f": {output}: cannot write the output ({reason})")
        assert list(folder.iterdir()) == []


@pytest.mark.parametrize("age", [-5, np.inf, -np.inf, np.nan, 121])
def test_an_impossible_age_scores_as_oov(model_dir, rows, age):
    predictor = CTRPredictor.from_files(
        model_dir / "model.pt", model_dir.parents[1] / "data/processed/ml-100k/vocab"
    )
    frame = pd.read_parquet(rows).iloc[[0, 0]].reset_index(drop=True)
    frame["age"] = [30.0, age]

    ages = predictor.encoder.encode(frame)["age"]

    assert ages[0] != 0 and ages[1] == 0
