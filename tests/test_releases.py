"""Every MovieLens release parses from its real file layout (made by the generator),
and prepare and training work on ml-1m and a CSV release."""

from __future__ import annotations

import json
import re
from dataclasses import replace
from pathlib import Path

import mlflow
import numpy as np
import pyarrow.parquet as pq
import pytest
import torch
import yaml

from conftest import small_data_config
from deepfm.config import CSV_RELEASE_FIELDS, ConfigError, ExperimentConfig, FeatureConfig
from deepfm.data import synthetic
from deepfm.data.dataset import CTRDataset
from deepfm.data.prepare import prepare, raw_feature_frame
from deepfm.data.raw import (
    ITEMS_SCHEMA,
    RATINGS_SCHEMA,
    USERS_SCHEMA,
    RawDataError,
    read_raw,
    write_raw,
)
from deepfm.data.releases import parse_release
from deepfm.data.releases.ml1m import ML1M_OCCUPATIONS
from deepfm.data.synthetic.population import NON_LATIN1_WORD
from deepfm.models.registry import MODELS, build_model
from faults.processes import run_stage

ROOT = Path(__file__).resolve().parents[1]
CSV_RELEASES = ("ml-20m", "ml-25m", "ml-latest-small")


def generated(tmp_path: Path, release: str, ratings: int = 2000, seed: int = 0) -> Path:
    """The generated release folder `<tmp_path>/<release>/`, as the zip unpacks."""
    return synthetic.generate(release, ratings, tmp_path, seed, folder=True)


@pytest.mark.parametrize("release", list(synthetic.RELEASES))
def test_each_release_parses_to_canonical_tables(tmp_path: Path, release: str) -> None:
    tables = parse_release(release, generated(tmp_path, release))

    users, movies = synthetic.sizes(synthetic.RELEASES[release], 2000)
    assert tables.rows() == {"ratings": 2000, "users": users, "items": movies}
    assert tables.ratings.schema == RATINGS_SCHEMA
    assert tables.users.schema == USERS_SCHEMA
    assert tables.items.schema == ITEMS_SCHEMA
    ids = tables.items["movie_id"].to_numpy()
    assert (np.diff(ids) > 0).all()
    titles = tables.items["title"].to_pylist()
    assert titles[0].startswith("Misérables, Les (")  # Latin-1 (or UTF-8) and a comma
    assert titles[1].startswith('Kid\'s "Story", The (')  # quotes in the title
    stars = np.unique(tables.ratings["rating"].to_numpy())
    if release in CSV_RELEASES:
        assert set(stars) <= set(np.arange(1, 11) / 2)
        assert tables.users["gender"].null_count == users  # no demographics
    else:
        assert set(stars) <= {1.0, 2.0, 3.0, 4.0, 5.0}
        assert tables.users["gender"].null_count == 0


def test_ml1m_values(tmp_path: Path) -> None:
    folder = generated(tmp_path, "ml-1m", 20_000)
    tables = parse_release("ml-1m", folder)

    first = (folder / "users.dat").read_text("ascii").split("\n", 1)[0].split("::")
    user = tables.users.slice(0, 1).to_pylist()[0]
    assert user == {
        "user_id": int(first[0]),
        "gender": first[1],
        "age": int(first[2]),  # the group code: the group's lowest age in years
        "occupation": ML1M_OCCUPATIONS[int(first[3])],
        "zip_code": first[4],
    }
    assert set(tables.users["age"].to_pylist()) <= {1, 18, 25, 35, 45, 50, 56}
    assert any("-" in code for code in tables.users["zip_code"].to_pylist())  # ZIP+4 kept
    movie_line = (folder / "movies.dat").read_bytes().split(b"\n", 1)[0].decode("latin-1")
    _, title, genres = movie_line.split("::")
    assert tables.items["title"][0].as_py() == title
    assert tables.items["genres"][0].as_py() == genres.split("|")


def test_csv_release_edge_cases(tmp_path: Path) -> None:
    tables = parse_release("ml-25m", generated(tmp_path, "ml-25m", 20_000))
    titles = tables.items["title"].to_pylist()
    genres = tables.items["genres"].to_pylist()

    assert titles[2] == "Untitled Project"  # no year
    assert genres[3] == []  # "(no genres listed)"
    assert "(no genres listed)" not in {name for names in genres for name in names}
    assert any(NON_LATIN1_WORD in title for title in titles)  # UTF-8 beyond Latin-1
    assert any(", The (" in title for title in titles[2:])  # commas: quoted in the file


def test_crlf_line_endings_parse_the_same(tmp_path: Path) -> None:
    folder = generated(tmp_path, "ml-1m")
    expected = parse_release("ml-1m", folder)
    for path in folder.glob("*.dat"):
        path.write_bytes(path.read_bytes().replace(b"\n", b"\r\n"))

    assert parse_release("ml-1m", folder).fingerprint() == expected.fingerprint()


def _replace_line(path: Path, number: int, line: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = line
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("release", "name", "number", "line", "message"),
    [
        ("ml-1m", "ratings.dat", 3, b"1::2::3", "ratings.dat line 3: expected 4 fields, got 3"),
        (
            "ml-1m",
            "ratings.dat",
            5,
            b"1::x7::3::978300760",
            "ratings.dat line 5, column 2 (movie_id): 'x7' is not a valid int32",
        ),
        (
            "ml-1m",
            "users.dat",
            2,
            b"2::M::20::4::12345",
            "users.dat line 2, column 3 (age): 20 is not an ml-1m age group",
        ),
        (
            "ml-1m",
            "users.dat",
            4,
            b"4::F::25::21::12345",
            "users.dat line 4, column 4 (occupation): 21 is not an ml-1m occupation code",
        ),
        ("ml-1m", "ratings.dat", 6, b"1::1::6::978300760", "ratings.dat line 6: rating 6.0"),
        (
            "ml-1m",
            "ratings.dat",
            7,
            b"99999::1::3::978300760",
            "ratings.dat line 7: user_id 99999 not in users.dat",
        ),
        (
            "ml-latest-small",
            "ratings.csv",
            1,
            b"userId,movieId,stars,timestamp",
            "ratings.csv line 1: expected the header 'userId,movieId,rating,timestamp', "
            "got 'userId,movieId,stars,timestamp'",
        ),
        (
            "ml-latest-small",
            "ratings.csv",
            4,
            b"1,abc,3.5,964982703",
            "ratings.csv line 4, column 2 (movieId): 'abc' is not a valid int32",
        ),
        (
            "ml-latest-small",
            "ratings.csv",
            5,
            b"1,2,3.3,964982703",
            "ratings.csv line 5: rating 3.299999952316284 is not in steps of 0.5",
        ),
        (
            "ml-latest-small",
            "ratings.csv",
            6,
            b"1,2,0.0,964982703",
            "ratings.csv line 6: rating 0.0 is outside 0.5–5",
        ),
        (
            "ml-latest-small",
            "ratings.csv",
            7,
            b"1,999999999,4.0,964982703",
            "ratings.csv line 7: movie_id 999999999 not in movies.csv",
        ),
        (
            "ml-latest-small",
            "movies.csv",
            3,
            b'7,"Broken, The (1990)",Drama,Extra',
            "movies.csv line 3: expected 3 fields, got 4",
        ),
        (
            "ml-latest-small",
            "movies.csv",
            4,
            b"8,Caf\xe9 (1990),Drama",
            "movies.csv line 4: not valid UTF-8 (byte 0xe9",
        ),
    ],
)
def test_bad_line_is_named(
    tmp_path: Path, release: str, name: str, number: int, line: bytes, message: str
) -> None:
    folder = generated(tmp_path, release)
    _replace_line(folder / name, number, line)

    with pytest.raises(RawDataError, match="^" + re.escape(message)):
        parse_release(release, folder)


def test_repeated_movie_names_both_lines(tmp_path: Path) -> None:
    folder = generated(tmp_path, "ml-latest-small")
    lines = (folder / "movies.csv").read_bytes().split(b"\n")
    lines[5] = lines[4].split(b",")[0] + b",Copy (1999),Drama"

    (folder / "movies.csv").write_bytes(b"\n".join(lines))

    repeats = r"^movies\.csv line 6: movie_id \d+ repeats movies\.csv line 5$"
    with pytest.raises(RawDataError, match=repeats):
        parse_release("ml-latest-small", folder)


@pytest.mark.parametrize(
    ("release", "name", "content", "message"),
    [
        ("ml-1m", "movies.dat", None, "movies.dat: missing file"),
        ("ml-25m", "movies.csv", None, "movies.csv: missing file"),
        ("ml-25m", "ratings.csv", b"userId,movieId,rating,timestamp\n", "ratings.csv: no rows"),
        ("ml-1m", "ratings.dat", b"\n\n", "ratings.dat: file is empty"),
    ],
)
def test_missing_or_empty_file_is_named(
    tmp_path: Path, release: str, name: str, content: bytes | None, message: str
) -> None:
    folder = generated(tmp_path, release)
    if content is None:
        (folder / name).unlink()
    else:
        (folder / name).write_bytes(content)

    with pytest.raises(RawDataError, match="^" + re.escape(message)):
        parse_release(release, folder)


def test_each_release_has_its_default_fields_in_params_yaml() -> None:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    seed = ["user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres"]
    csv = ["user_id", "movie_id", "genres", "release_decade"]

    assert params["feature"]["fields"] == {
        "ml-100k": seed,
        "ml-1m": seed,
        "ml-20m": csv,
        "ml-25m": csv,
        "ml-latest-small": csv,
    }
    for release in synthetic.RELEASES:
        config = ExperimentConfig.from_dict({"data": {"dataset": release}})
        assert (
            list(config.feature.fields_for(config.data.dataset))
            == params["feature"]["fields"][release]
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"ml-5m": ["user_id"]}, "feature.fields: 'ml-5m' is not allowed; choose from"),
        ({"ml-1m": ["user_id", "rating"]}, "feature.fields.ml-1m[1]: 'rating' is not allowed"),
        ({"ml-1m": []}, "feature.fields.ml-1m must have at least 1 entry, got []"),
        ({"ml-1m": ["genres", "genres"]}, "feature.fields.ml-1m must name each entry once"),
        ({"ml-1m": "user_id"}, "feature.fields.ml-1m: expected a list, got 'user_id'"),
        ([], "feature.fields: expected a mapping, got []"),
    ],
)
def test_bad_fields_name_the_key(fields: object, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        ExperimentConfig.from_dict({"feature": {"fields": fields}})

    assert message in str(err.value)


def test_release_without_fields_is_named() -> None:
    feature = FeatureConfig(fields={"ml-1m": ("user_id", "movie_id")})

    with pytest.raises(ConfigError, match=r"feature\.fields has no entry for ml-25m"):
        feature.fields_for("ml-25m")


def test_fields_survive_the_model_file_round_trip() -> None:
    config = ExperimentConfig.from_dict({"feature": {"fields": {"ml-1m": ["movie_id"]}}})

    assert ExperimentConfig.from_dict(config.to_dict()) == config
    assert config.flat()["feature.fields.ml-1m"] == ["movie_id"]


def _raw_config(tmp_path: Path, release: str, ratings: int = 3000):
    data = small_data_config(tmp_path, dataset=release)
    write_raw(parse_release(release, generated(tmp_path, release, ratings)), data.raw_path, release)
    return data


@pytest.mark.parametrize(
    ("release", "fields"),
    [
        ("ml-1m", ["user_id", "movie_id", "gender", "age", "occupation", "zip_prefix", "genres"]),
        ("ml-latest-small", ["user_id", "movie_id", "genres", "release_decade"]),
    ],
)
def test_prepare_uses_the_release_fields_and_every_model_runs(
    tmp_path: Path, release: str, fields: list[str]
) -> None:
    data = _raw_config(tmp_path, release)

    schema = prepare(data, FeatureConfig())

    assert list(schema.fields) == fields
    train = CTRDataset.from_parquet(data.processed_path / "train.parquet", schema)
    features, labels = train.batch(torch.arange(64))
    assert labels.shape == (64,)
    config = ExperimentConfig()
    for name in MODELS:
        torch.manual_seed(0)
        logits = build_model(name, schema, config)(features)
        assert logits.shape == (64,) and torch.isfinite(logits).all(), name


def test_release_decade_comes_from_the_title(tmp_path: Path) -> None:
    data = _raw_config(tmp_path, "ml-25m")
    prepare(data, FeatureConfig())
    raw = read_raw(data.raw_path)

    vocab = pq.read_table(data.processed_path / "vocab" / "release_decade.parquet")
    decades = vocab["value"].to_pylist()
    assert decades[0] is None  # OOV, also for titles without a year
    assert all(re.fullmatch(r"1[89]\d0s|20[01]0s", decade) for decade in decades[1:])
    frame = raw_feature_frame(raw, np.arange(raw.ratings.num_rows), CSV_RELEASE_FIELDS)
    assert list(frame.columns) == ["user_id", "movie_id", "genres", "year"]
    assert raw.items["title"][2].as_py() == "Untitled Project"
    untitled = frame.movie_id == raw.items["movie_id"][2].as_py()
    assert frame.loc[untitled, "year"].isna().all()
    assert frame.loc[~untitled, "year"].between(1900, 2019).all()


def test_demographic_field_on_a_csv_release_is_a_clear_error(tmp_path: Path) -> None:
    data = _raw_config(tmp_path, "ml-latest-small")
    feature = replace(
        FeatureConfig(), fields={"ml-latest-small": ("user_id", "movie_id", "gender")}
    )

    message = r"feature\.fields\.ml-latest-small: 'gender' has no values in ml-latest-small"
    with pytest.raises(ConfigError, match=message):
        prepare(data, feature)


def _stage(work: Path, script: str, *args: str, env: dict | None = None) -> None:
    result = run_stage(work, script.removesuffix(".py"), *args, env=env)
    assert result.returncode == 0, result.stderr


@pytest.mark.slow
@pytest.mark.parametrize("release", ["ml-1m", "ml-latest-small"])
def test_stages_download_prepare_train_on_a_generated_release(
    tmp_path: Path, release: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stage commands, with the generated zip where download looks for it."""
    work = tmp_path / "work"
    synthetic.generate(release, 3000, work / "data" / "raw")
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["data"]["dataset"] = release
    params["train"].pop("seed", None)  # params.yaml before `train.seeds`
    params["train"].update(models=["deepfm"], seeds=[42], max_epochs=1, batch_size=256)
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)

    _stage(work, "download.py")
    _stage(work, "prepare.py")
    _stage(work, "train.py", "--model", "deepfm", "--seed", "42")

    summary = json.loads((work / "models/deepfm/seed-42/train.json").read_text())
    assert summary["epochs_run"] == 1 and 0.5 < summary["best_val_auc"] <= 1
    run_id = json.loads((work / "models/deepfm/seed-42/run.json").read_text())["run_id"]
    client = mlflow.MlflowClient(tracking_uri=uri)
    model = mlflow.pyfunc.load_model(client.download_artifacts(run_id, "model", str(tmp_path)))
    raw = read_raw(work / "data" / "raw" / release)
    probabilities = np.asarray(
        model.predict(raw_feature_frame(raw, np.arange(50), FeatureConfig().fields_for(release)))
    )
    assert probabilities.shape == (50,) and ((probabilities > 0) & (probabilities < 1)).all()
