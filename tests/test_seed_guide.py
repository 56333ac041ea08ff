"""The seed guide (`feature_embedding_guide.md`) lives in one place: the notebook
`notebooks/feature_embedding_guide.ipynb`. It runs top to bottom on small prepared data after
a real train stage and prints the seed's shapes, module, OOV zeros and parameter counts."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from deepfm.data.schema import FeatureType, FieldSpec, Schema

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK = ROOT / "notebooks" / "feature_embedding_guide.ipynb"


def expected_parameter_count(schema: Schema, fm_embed_dim: int = 16) -> int:
    """Embedding tables (d + 1 per row) plus a d x fm_embed_dim projection where d differs."""
    return sum(
        spec.vocabulary_size * (spec.embedding_dim + 1)
        + (spec.embedding_dim * fm_embed_dim if spec.embedding_dim != fm_embed_dim else 0)
        for spec in schema.fields.values()
    )


def test_parameter_formula_gives_the_seed_count():
    """On the seed's own table (movie_id 1679) the formula gives 48,983."""
    sparse = FeatureType.SPARSE
    schema = Schema.of(
        [
            FieldSpec("user_id", sparse, 944, 16),
            FieldSpec("movie_id", sparse, 1679, 16),
            FieldSpec("gender", sparse, 3, 4),
            FieldSpec("age", sparse, 8, 4),
            FieldSpec("occupation", sparse, 22, 8),
            FieldSpec("zip_prefix", sparse, 383, 8),
            FieldSpec("genres", FeatureType.SEQUENCE, 20, 8, max_len=6),
        ]
    )
    assert expected_parameter_count(schema) == 48_983


def executed_text(notebook: nbformat.NotebookNode) -> str:
    """Everything the code cells printed or displayed as text, in order."""
    texts = []
    for cell in notebook.cells:
        for output in cell.get("outputs", []):
            texts.append(output.get("text") or output.get("data", {}).get("text/plain", ""))
    return "\n".join(texts)


@pytest.mark.slow
def test_guide_notebook_runs_and_prints_the_seed_contract(workspace, tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'mlflow.db'}")
    subprocess.run(
        [sys.executable, str(ROOT / "stages" / "train.py"), "--model", "deepfm", "--seed", "42"],
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

    out = executed_text(notebook)
    schema = Schema.load(workspace / "data/processed/ml-100k/schema.json")
    assert f"Schema has 7 fields, total_embedding_dim = {schema.total_embedding_dim}" in out
    assert "fm_embed_dim = 16 (common dimension for FM/CIN/Attention)" in out
    assert "genres           shape=torch.Size([4, 6])  dtype=torch.int64" in out
    assert "first_order:      torch.Size([4, 1])" in out
    assert "field_embeddings: torch.Size([4, 7, 16])" in out
    assert f"flat_embeddings:  torch.Size([4, {schema.total_embedding_dim}])" in out
    assert "(genres): EmbeddingBag(" in out
    for view in ("first_order sum:     ", "field_embeddings sum:", "flat_embeddings sum: "):
        assert f"  {view} 0.000000" in out, view  # all-OOV rows embed to exactly 0
    assert f"Total parameters:     {expected_parameter_count(schema):,}" in out
    figures = [
        output for output in notebook.cells[-2].outputs if "image/png" in output.get("data", {})
    ]
    assert len(figures) == 1
    assert "correlation of component 1 with the click rate:" in out
