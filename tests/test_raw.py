"""Canonical raw tables: parsing ml-100k, validation errors, writing and reading."""

from __future__ import annotations

import io
import json
import re
import zipfile
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from deepfm.data.raw import (
    ITEMS_SCHEMA,
    RATINGS_SCHEMA,
    USERS_SCHEMA,
    RawDataError,
    RawTables,
    read_raw,
    write_raw,
)
from deepfm.data.releases.mirror import ml100k_from_mirror
from deepfm.data.releases.ml100k import parse_ml100k
from movielens_fixtures import (
    FOREIGN_ZIP,
    GENRES,
    LATIN1_TITLE,
    LEADING_ZERO_ZIP,
    MIRROR_MEMBERS,
    QUOTED_TITLE,
    UNKNOWN_MOVIE_ID,
    build_mirror_wheel,
    make_ml100k,
    write_ml100k_folder,
)


@pytest.fixture
def folder(tmp_path: Path) -> Path:
    return write_ml100k_folder(tmp_path / "ml-100k")


def test_parse_types_counts_and_order(folder: Path) -> None:
    tables = parse_ml100k(folder)
    sample = make_ml100k()

    assert tables.ratings.schema == RATINGS_SCHEMA
    assert tables.users.schema == USERS_SCHEMA
    assert tables.items.schema == ITEMS_SCHEMA
    assert tables.rows() == {"ratings": 2000, "users": 50, "items": 60}
    for column in ("user_id", "movie_id", "rating", "timestamp"):
        np.testing.assert_array_equal(tables.ratings[column].to_numpy(), sample.ratings[column])
    assert tables.users["user_id"].to_pylist() == list(range(1, 51))
    assert tables.items["movie_id"].to_pylist() == list(range(1, 61))


def test_parse_values(folder: Path) -> None:
    tables = parse_ml100k(folder)
    sample = make_ml100k()
    titles = tables.items["title"].to_pylist()
    zips = tables.users["zip_code"].to_pylist()

    assert titles[0] == LATIN1_TITLE
    assert titles[2] == QUOTED_TITLE
    assert zips[1] == FOREIGN_ZIP
    assert zips[2] == LEADING_ZERO_ZIP
    assert tables.users["gender"].to_pylist() == sample.users["gender"].tolist()
    assert tables.users["age"].to_pylist() == sample.users["age"].tolist()
    expected_genres = [
        [name for name in GENRES if row[name] == 1] for _, row in sample.items.iterrows()
    ]
    assert tables.items["genres"].to_pylist() == expected_genres
    assert expected_genres[UNKNOWN_MOVIE_ID - 1] == ["unknown"]


def test_users_and_items_are_sorted_whatever_the_file_order(folder: Path) -> None:
    expected = parse_ml100k(folder)
    for name in ("u.user", "u.item"):
        lines = (folder / name).read_bytes().splitlines(keepends=True)
        (folder / name).write_bytes(b"".join(reversed(lines)))

    assert parse_ml100k(folder).fingerprint() == expected.fingerprint()


def _replace_line(path: Path, number: int, line: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines[number - 1] = line
    path.write_bytes(b"\n".join(lines))


def _insert_line(path: Path, number: int, line: bytes) -> None:
    lines = path.read_bytes().split(b"\n")
    lines.insert(number - 1, line)
    path.write_bytes(b"\n".join(lines))


@pytest.mark.parametrize(
    ("name", "number", "line", "message"),
    [
        ("u.data", 5, b"1\t2\t3", "u.data line 5: expected 4 fields, got 3"),
        ("u.user", 3, b"3|21|F|student|01002|x", "u.user line 3: expected 5 fields, got 6"),
        ("u.data", 7, b"abc\t2\t3\t880000000", "u.data line 7, column 1 (user_id): 'abc'"),
        ("u.data", 8, b"1\tx2\t3\t880000000", "u.data line 8, column 2 (movie_id): 'x2'"),
        ("u.item", 4, b"4x|T (1990)|||" + b"|0" * 19, "u.item line 4, column 1 (movie_id)"),
        ("u.user", 6, b"6|abc|M|other|12345", "u.user line 6, column 2 (age): 'abc'"),
        ("u.data", 9, b"1\t2\t6\t880000000", "u.data line 9: rating 6.0 is outside 1–5"),
        ("u.data", 10, b"1\t2\t0\t880000000", "u.data line 10: rating 0.0 is outside 1–5"),
        ("u.data", 11, b"999\t2\t3\t880000000", "u.data line 11: user_id 999 not in u.user"),
        ("u.data", 12, b"1\t999\t3\t880000000", "u.data line 12: movie_id 999 not in u.item"),
        ("u.user", 4, b"2|30|M|other|12345", "u.user line 4: user_id 2 repeats u.user line 2"),
        ("u.item", 5, b"5|T (1990)||||2" + b"|0" * 18, "u.item line 5: genre flag 'unknown'"),
        ("u.user", 6, b"6|30|M|oth\xe9r|12345", "u.user line 6: not valid UTF-8 (byte 0xe9"),
        ("u.genre", 2, b"Action", "u.genre line 2: expected 2 fields, got 1"),
    ],
)
def test_bad_line_is_named(folder: Path, name: str, number: int, line: bytes, message: str) -> None:
    _replace_line(folder / name, number, line)

    with pytest.raises(RawDataError, match=_starts(message)):
        parse_ml100k(folder)


def test_line_numbers_count_blank_lines(folder: Path) -> None:
    _insert_line(folder / "u.data", 3, b"")
    _replace_line(folder / "u.data", 10, b"1\t2\t7\t880000000")

    with pytest.raises(RawDataError, match=_starts("u.data line 10: rating 7.0")):
        parse_ml100k(folder)


@pytest.mark.parametrize("name", ["u.data", "u.user", "u.item", "u.genre"])
def test_missing_file_is_named(folder: Path, name: str) -> None:
    (folder / name).unlink()

    with pytest.raises(RawDataError, match=_starts(f"{name}: missing file")):
        parse_ml100k(folder)


def test_empty_ratings_file(folder: Path) -> None:
    (folder / "u.data").write_bytes(b"")

    with pytest.raises(RawDataError, match=_starts("u.data: file is empty")):
        parse_ml100k(folder)


def test_mirror_tables_give_the_same_canonical_tables(folder: Path, tmp_path: Path) -> None:
    wheel = build_mirror_wheel(tmp_path / "wheel")
    with zipfile.ZipFile(wheel) as archive:
        data, users, items = (
            pq.read_table(io.BytesIO(archive.read(MIRROR_MEMBERS[key])))
            for key in ("data", "users", "items")
        )

    mirrored = ml100k_from_mirror(data, users, items)

    parsed = parse_ml100k(folder)
    for key in ("ratings", "users", "items"):
        assert getattr(mirrored, key).equals(getattr(parsed, key), check_metadata=True)
    assert mirrored.fingerprint() == parsed.fingerprint()


def test_mirror_rating_out_of_range_is_named(tmp_path: Path) -> None:
    sample = make_ml100k()
    sample.ratings.loc[4, "rating"] = 9

    with pytest.raises(RawDataError, match=_starts("mirror ratings row 5: rating 9.0")):
        ml100k_from_mirror(
            pa.Table.from_pandas(sample.ratings),
            pa.Table.from_pandas(sample.users),
            pa.Table.from_pandas(sample.items),
        )


def test_write_then_read_round_trip(folder: Path, tmp_path: Path) -> None:
    tables = parse_ml100k(folder)
    out = tmp_path / "raw" / "ml-100k"

    write_raw(tables, out, "ml-100k")

    assert sorted(p.name for p in out.iterdir()) == [
        "fingerprint.json",
        "items.parquet",
        "ratings.parquet",
        "users.parquet",
    ]
    summary = json.loads((out / "fingerprint.json").read_text())
    assert summary == {
        "dataset": "ml-100k",
        "fingerprint": tables.fingerprint(),
        "rows": {"ratings": 2000, "users": 50, "items": 60},
    }
    for name in ("ratings.parquet", "users.parquet", "items.parquet"):
        assert b"pandas" not in pq.read_metadata(out / name).metadata
    again = read_raw(out)
    assert again.fingerprint() == tables.fingerprint()
    assert again.items.schema == ITEMS_SCHEMA


def test_writes_are_byte_identical(folder: Path, tmp_path: Path) -> None:
    tables = parse_ml100k(folder)
    write_raw(tables, tmp_path / "a", "ml-100k")
    write_raw(read_raw(tmp_path / "a"), tmp_path / "b", "ml-100k")

    for name in ("ratings.parquet", "users.parquet", "items.parquet", "fingerprint.json"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes()


def test_fingerprint_hashes_content_not_layout(folder: Path) -> None:
    tables = parse_ml100k(folder)
    ratings = tables.ratings
    rechunked = pa.concat_tables([ratings.slice(0, 700), ratings.slice(700)])
    first = ratings["rating"][0].as_py()
    changed = ratings.set_column(
        2,
        "rating",
        pa.concat_arrays(
            [
                pa.array([1.0 if first != 1 else 2.0], pa.float32()),
                ratings["rating"].combine_chunks()[1:],
            ]
        ),
    )

    assert RawTables(rechunked, tables.users, tables.items).fingerprint() == tables.fingerprint()
    assert RawTables(changed, tables.users, tables.items).fingerprint() != tables.fingerprint()


def test_read_raw_names_the_missing_file(folder: Path, tmp_path: Path) -> None:
    write_raw(parse_ml100k(folder), tmp_path / "raw", "ml-100k")
    (tmp_path / "raw" / "users.parquet").unlink()

    with pytest.raises(RawDataError, match=re.escape("users.parquet: missing")):
        read_raw(tmp_path / "raw")


def _starts(text: str) -> str:
    """A `match=` pattern for a message that starts with `text`."""
    return "^" + re.escape(text)
