"""`dvc.yaml` declares, for every stage, exactly the project files the stage runs.

Each stage command is `python stages/<name>.py`; what it runs is that script and every
module of the `deepfm` package it imports, directly or through other modules (static
`import`/`from` statements anywhere in a file, followed transitively; importing
`deepfm.a.b` runs `deepfm/__init__.py` and `deepfm/a/__init__.py` too). If a file in
that closure is not a dependency, editing it leaves `dvc status` "up to date" while the
results are stale; if a dependency is outside it, editing it reruns a stage for nothing.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
SRC = ROOT / "src"
PACKAGE = "deepfm"


def module_file(module: str) -> Path | None:
    """The file that defines `module` (a package's `__init__.py`), if it is in `src/`."""
    path = SRC.joinpath(*module.split("."))
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def imported_modules(path: Path) -> set[str]:
    """Every `deepfm...` name a file imports; `from a import b` gives `a` and `a.b`
    (`b` may be a submodule)."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {name for name in names if name.split(".")[0] == PACKAGE}


def import_closure(script: Path) -> set[Path]:
    """`script` and every package file it runs through imports."""
    seen = {script}
    pending = [script]
    while pending:
        for name in imported_modules(pending.pop()):
            parts = name.split(".")
            for depth in range(1, len(parts) + 1):  # parent packages run first
                found = module_file(".".join(parts[:depth]))
                if found is not None and found not in seen:
                    seen.add(found)
                    pending.append(found)
    return seen


def declared_code(deps: list[str]) -> set[Path]:
    """The Python files under `src/` and `stages/` that `deps` name (folders expanded)."""
    files = set()
    for dep in deps:
        if not dep.startswith(("src/", "stages/")):
            continue
        path = ROOT / dep
        assert path.exists(), f"dvc.yaml names {dep}, which does not exist"
        files.update(path.rglob("*.py") if path.is_dir() else [path])
    return files


def stage_script(command: str) -> Path:
    """The `stages/<name>.py` a stage command runs."""
    scripts = [word for word in command.split() if word.startswith("stages/")]
    assert len(scripts) == 1, f"expected one stages/*.py in {command!r}"
    return ROOT / scripts[0]


STAGES = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
# A study is a one-off search whose result is a params file; the rows trained from it are
# retrained with the current code (train_tuned), so a code edit must not rerun a study.
WITHOUT_CODE_DEPS = {"tune"}


@pytest.mark.parametrize("name", sorted(set(STAGES) - WITHOUT_CODE_DEPS))
def test_stage_deps_are_exactly_the_code_it_runs(name):
    stage = STAGES[name]
    runs = import_closure(stage_script(stage["cmd"]))
    declared = declared_code(stage.get("deps", []))

    def listing(paths: set[Path]) -> list[str]:
        return sorted(str(path.relative_to(ROOT)) for path in paths)

    missing, extra = listing(runs - declared), listing(declared - runs)
    assert not missing, f"stage {name} runs files dvc.yaml does not list: {missing}"
    assert not extra, f"stage {name} lists files it never runs: {extra}"


def test_a_study_depends_on_its_script_only_among_the_code():
    for name in WITHOUT_CODE_DEPS:
        declared = declared_code(STAGES[name]["deps"])
        assert declared == {stage_script(STAGES[name]["cmd"])}, name


def test_closure_follows_imports_through_other_modules():
    """The closure is transitive: prepare.py reaches raw.py only through deepfm.data.prepare."""
    closure = import_closure(ROOT / "stages/prepare.py")
    assert SRC / "deepfm/data/raw.py" in closure
    assert SRC / "deepfm/data/__init__.py" in closure
    assert SRC / "deepfm/training/trainer.py" not in closure
