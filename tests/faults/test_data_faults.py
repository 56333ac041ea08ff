"""Broken prepared data under data/processed/: a 0-byte, cut-off or empty split file, a
schema.json that is not JSON or lacks a key, a schema whose vocabularies are smaller than
the data's indices. Each is one `PreparedDataError` line naming the file and what is wrong,
from the library calls the stages make and from a real `train` process."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from deepfm.data.dataset import CTRDataset
from deepfm.data.schema import PreparedDataError, Schema
from faults.processes import run_stage, store_env

PROCESSED = Path("data/processed/ml-100k")


def break_split(path: Path, fault: str) -> None:
    if fault == "0 bytes":
        path.write_bytes(b"")
    elif fault == "cut off":
        data = path.read_bytes()
        path.write_bytes(data[: len(data) // 2])
    else:
        assert fault == "0 rows"
        table = pq.read_table(path)
        pq.write_table(table.slice(0, 0), path)


def load_error(split: Path, schema_json: Path) -> str:
    with pytest.raises(PreparedDataError) as info:
        CTRDataset.from_parquet(split, Schema.load(schema_json))
    message = str(info.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(
    ("fault", "split", "expected"),
    [
        ("0 bytes", "train", "not a readable Parquet file (Parquet file size is 0 bytes)"),
        ("cut off", "val", "not a readable Parquet file (Parquet magic bytes not found"),
        ("0 rows", "train", "0 rows; the train split must not be empty"),
        ("0 rows", "val", "0 rows; the val split must not be empty"),
        ("0 rows", "test", "0 rows; the test split must not be empty"),
    ],
)
def test_broken_split_file_is_one_line_naming_it(
    project: Path, fault: str, split: str, expected: str
) -> None:
    path = project / PROCESSED / f"{split}.parquet"
    break_split(path, fault)

    message = load_error(path, project / PROCESSED / "schema.json")

    assert message.startswith(f"{path}: {expected}")


def edit_schema(path: Path, edit: str) -> None:
    if edit == "not JSON":
        path.write_text('{"label": "label", "fields": [')
        return
    schema = json.loads(path.read_text())
    if edit == "no label":
        del schema["label"]
    else:
        assert edit == "a field without vocabulary_size"
        del schema["fields"][1]["vocabulary_size"]
    path.write_text(json.dumps(schema))


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ("not JSON", "not valid JSON (Expecting value at line 1 column 31)"),
        ("no label", "missing key label"),
        ("a field without vocabulary_size", "missing key fields[1].vocabulary_size"),
    ],
)
def test_broken_schema_json_is_one_line_naming_the_file_and_key(
    project: Path, edit: str, expected: str
) -> None:
    path = project / PROCESSED / "schema.json"
    edit_schema(path, edit)

    with pytest.raises(PreparedDataError) as info:
        Schema.load(path)

    assert str(info.value) == f"{path}: {expected}"


def test_schema_vocabulary_smaller_than_the_data_indices_names_the_field(project: Path) -> None:
    schema_json = project / PROCESSED / "schema.json"
    schema = json.loads(schema_json.read_text())
    [movie] = [field for field in schema["fields"] if field["name"] == "movie_id"]
    movie["vocabulary_size"] = 10
    schema_json.write_text(json.dumps(schema))
    train = project / PROCESSED / "train.parquet"
    largest = pc.max(pq.read_table(train, columns=["movie_id"]).column("movie_id")).as_py()
    assert largest >= 10

    message = load_error(train, schema_json)

    assert message.startswith(
        f"{train}: column 'movie_id' holds index {largest} but the schema's vocabulary_size "
        "for 'movie_id' is 10 (indices 0-9)"
    )


@pytest.mark.parametrize(
    ("broken", "expected"),
    [
        ("train.parquet", "train.parquet: not a readable Parquet file (Parquet magic bytes"),
        ("schema.json", "schema.json: not valid JSON (Expecting value at line 1 column 31)"),
    ],
)
def test_train_stage_stops_with_one_line_on_broken_prepared_data(
    project: Path, broken: str, expected: str
) -> None:
    if broken == "schema.json":
        edit_schema(project / PROCESSED / broken, "not JSON")
    else:
        break_split(project / PROCESSED / broken, "cut off")

    result = run_stage(
        project, "train", "--model", "fm", "--seed", "42", env=store_env(project / "mlflow.db")
    )

    assert result.returncode == 1, result.stderr
    assert "Traceback" not in result.stderr
    [error] = [line for line in result.stderr.splitlines() if " ERROR " in line]
    assert f" ERROR deepfm: {PROCESSED / expected}" in error
    assert not (project / "models").exists()
