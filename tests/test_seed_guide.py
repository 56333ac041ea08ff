"""The seed guide, sections 1-8, runs as a script and prints the seed's shapes and counts."""

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import pytest

from deepfm.data.prepare import prepare
from deepfm.data.schema import Schema

GUIDE = Path(__file__).resolve().parents[1] / "docs" / "feature_embedding_guide.py"


@pytest.mark.slow
def test_guide_script_runs_on_prepared_data(small_config, tmp_path):
    # The guide uses ExperimentConfig(): relative data/ paths under the working directory.
    work = tmp_path / "work"
    (work / "data").mkdir(parents=True)
    Path(small_config.data.raw_dir).rename(work / "data" / "raw")
    data = replace(
        small_config.data,
        raw_dir=str(work / "data/raw"),
        processed_dir=str(work / "data/processed"),
    )
    schema = prepare(data, small_config.feature)
    Path(work / "data" / "raw").rename(work / "data" / "raw_unused")  # must read, not redo

    result = subprocess.run(
        [sys.executable, str(GUIDE)], cwd=work, capture_output=True, text=True, check=True
    )
    out = result.stdout
    assert f"Schema has 7 fields, total_embedding_dim = {schema.total_embedding_dim}" in out
    assert "fm_embed_dim = 16 (common dimension for FM/CIN/Attention)" in out
    assert "genres           shape=torch.Size([4, 6])  dtype=torch.int64" in out
    assert "first_order:      torch.Size([4, 1])" in out
    assert "field_embeddings: torch.Size([4, 7, 16])" in out
    assert f"flat_embeddings:  torch.Size([4, {schema.total_embedding_dim}])" in out
    for view in ("first_order sum:     ", "field_embeddings sum:", "flat_embeddings sum: "):
        assert f"  {view} 0.000000  (should be ~0)" in out, view  # all-OOV rows embed to 0
    assert "(genres): EmbeddingBag(" in out
    expected = expected_parameter_count(Schema.load(work / "data/processed/ml-100k/schema.json"))
    assert f"Total parameters:     {expected:,}" in out


def expected_parameter_count(schema: Schema, fm_embed_dim: int = 16) -> int:
    """Embedding tables (d + 1 per row) plus a d x fm_embed_dim projection where d differs."""
    return sum(
        spec.vocabulary_size * (spec.embedding_dim + 1)
        + (spec.embedding_dim * fm_embed_dim if spec.embedding_dim != fm_embed_dim else 0)
        for spec in schema.fields.values()
    )


def test_parameter_formula_gives_the_seed_count():
    """On the seed's own table (movie_id 1679) the formula gives 48,983."""
    from deepfm.data.schema import FeatureType, FieldSpec

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
