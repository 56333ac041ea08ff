"""The seed guide as a notebook: it runs top to bottom on a small prepared dataset."""

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "feature_embedding_guide.ipynb"


@pytest.mark.slow
def test_notebook_runs_on_small_prepared_data(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--model", "deepfm"],
        cwd=workspace,
        check=True,
        capture_output=True,
    )
    (workspace / "notebooks").mkdir()
    shutil.copy(NOTEBOOK, workspace / "notebooks")
    notebook = nbformat.read(workspace / "notebooks" / NOTEBOOK.name, as_version=4)

    # A failing cell raises CellExecutionError naming the cell and its traceback.
    NotebookClient(
        notebook,
        timeout=300,
        kernel_name="python3",
        resources={"metadata": {"path": str(workspace / "notebooks")}},
    ).execute()

    printed = "".join(
        output.get("text", "")
        for cell in notebook.cells
        if cell.cell_type == "code"
        for output in cell.outputs
        if output.output_type == "stream"
    )
    assert "Schema has 7 fields" in printed
    assert "first_order sum:      0.000000" in printed
    figures = [
        output for output in notebook.cells[-2].outputs if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 1
