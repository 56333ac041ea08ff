"""Stage commands as real processes: run one to the end, or stop one at a point and kill it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
STOP_AT = Path(__file__).with_name("stop_at.py")
GUARD_S = 600  # only against a hung child; no test depends on how long anything takes


def signal_masks(pid: int) -> str:
    """Each thread of process `pid` (Linux): its name and its pending, shared pending,
    blocked, ignored and caught signal masks, from /proc."""
    lines = []
    try:
        for task in sorted((Path("/proc") / str(pid) / "task").iterdir()):
            fields = dict(line.split(":", 1) for line in (task / "status").read_text().splitlines())
            masks = ("Name", "SigPnd", "ShdPnd", "SigBlk", "SigIgn", "SigCgt")
            lines.append(
                f"thread {task.name}: " + ", ".join(f"{k} {fields[k].strip()}" for k in masks)
            )
    except OSError as error:
        lines.append(f"no signal masks: {error}")
    return "\n".join(lines)


def stage(name: str) -> str:
    """The path of stage command `name` (`stages/<name>.py`)."""
    return str(ROOT / "stages" / f"{name}.py")


def store_env(store: Path) -> dict[str, str]:
    """This process's environment with MLflow pointed at the SQLite file `store`."""
    return os.environ | {"MLFLOW_TRACKING_URI": f"sqlite:///{store}"}


def run_stage(
    work: Path, name: str, *args: str, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    """Run a stage command to its end with `work` as the project folder."""
    return subprocess.run(
        [sys.executable, stage(name), *args],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        timeout=GUARD_S,
    )


class Stopped:
    """A script started under `stop_at.py`, which stops it at `point` (see there).

    Its output goes to `<marker>.log`, not a pipe, so it can never block on it.
    """

    def __init__(
        self,
        work: Path,
        point: str,
        marker: Path,
        script: str,
        *args: str,
        env: dict[str, str] | None = None,
    ) -> None:
        self.point, self.marker = point, marker
        self.log_path = marker.with_name(marker.name + ".log")
        with open(self.log_path, "w") as log:
            self.process = subprocess.Popen(
                [sys.executable, str(STOP_AT), point, str(marker), script, *args],
                cwd=work,
                env=env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    @property
    def output(self) -> str:
        return self.log_path.read_text()

    def wait_until_stopped(self) -> None:
        """Return once the process waits at its point; fail if it ended before."""
        deadline = time.monotonic() + GUARD_S
        while not self.marker.exists():
            if self.process.poll() is not None:
                pytest.fail(f"exit {self.process.returncode} before {self.point}:\n{self.output}")
            if time.monotonic() > deadline:
                self.process.kill()
                pytest.fail(f"never reached {self.point}:\n{self.output}")
            time.sleep(0.02)

    def kill(self) -> None:
        """SIGKILL it where it stands (it gets no chance to clean up)."""
        self.wait_until_stopped()
        os.kill(self.process.pid, signal.SIGKILL)
        assert self.process.wait(timeout=GUARD_S) == -signal.SIGKILL

    def release(self) -> None:
        """Let it go on from its point."""
        self.wait_until_stopped()
        self.marker.with_name(self.marker.name + ".go").touch()

    def finish(self) -> int:
        """Its exit status, once it ends; a hung one is killed and the test fails with each
        of its threads' signal masks and stacks (stop_at.py dumps them on SIGUSR1)."""
        try:
            return self.process.wait(timeout=GUARD_S)
        except subprocess.TimeoutExpired:
            threads = signal_masks(self.process.pid)
            os.kill(self.process.pid, signal.SIGUSR1)
            time.sleep(2)
            self.process.kill()
            self.process.wait()
            pytest.fail(f"still running {GUARD_S} s after {self.point}:\n{threads}\n{self.output}")
