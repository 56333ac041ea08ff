"""Temp entries beside outputs: a write removes only the temp folders of this project's
killed writes, never a user's `.tmp-*` entries nor those of a write still running."""

from __future__ import annotations

import signal
import subprocess
import sys
from pathlib import Path

from deepfm import atomic
from faults.processes import run_stage

KILLED_FILE_WRITE = """
import os, signal, sys
from pathlib import Path
from deepfm import atomic
with atomic.open_for_write(Path(sys.argv[1])) as part:
    part.write_bytes(b"half a model")
    os.kill(os.getpid(), signal.SIGKILL)
"""

SECOND_WRITER = """
import sys
from pathlib import Path
from deepfm import atomic
with atomic.replace_dir(Path(sys.argv[1])) as out:
    (out / "done").write_text("b")
"""


def test_prepare_keeps_the_users_tmp_entries_beside_its_output(project: Path) -> None:
    processed = project / "data/processed"
    (processed / ".tmp-notes").write_text("my notes")
    (processed / ".tmp-ml-100k.mine").mkdir()
    (processed / ".tmp-ml-100k.mine/draft.txt").write_text("a draft")

    result = run_stage(project, "prepare")

    assert result.returncode == 0, result.stderr
    assert (processed / ".tmp-notes").read_text() == "my notes"
    assert (processed / ".tmp-ml-100k.mine/draft.txt").read_text() == "a draft"
    assert sorted(path.name for path in processed.iterdir()) == [
        ".tmp-ml-100k.mine",
        ".tmp-notes",
        "ml-100k",
    ]


def test_a_write_in_progress_keeps_its_temp_while_another_process_writes_beside_it(
    tmp_path: Path,
) -> None:
    with atomic.replace_dir(tmp_path / "a") as out:
        (out / "done").write_text("a")
        other = subprocess.run([sys.executable, "-c", SECOND_WRITER, str(tmp_path / "b")])
        assert other.returncode == 0

    assert (tmp_path / "a/done").read_text() == "a"
    assert (tmp_path / "b/done").read_text() == "b"
    assert sorted(path.name for path in tmp_path.iterdir()) == ["a", "b"]


def test_the_temp_of_a_killed_file_write_is_removed_by_the_next_write_beside_it(
    tmp_path: Path,
) -> None:
    model = tmp_path / "models/deepfm/model.pt"
    killed = subprocess.run([sys.executable, "-c", KILLED_FILE_WRITE, str(model)])
    assert killed.returncode == -signal.SIGKILL
    [leftover] = model.parent.iterdir()
    assert leftover.name.startswith(".tmp-model.pt.")
    assert (leftover / "model.pt").read_bytes() == b"half a model"

    atomic.write_text(model.parent / "train.json", "{}\n")

    assert [path.name for path in model.parent.iterdir()] == ["train.json"]
