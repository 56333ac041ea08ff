"""The seed guide (`feature_embedding_guide.md`), sections 1-8, as a script.

Run from the repo root after `dvc repro` (or with nothing prepared: the adapter
downloads and prepares ml-100k first):

    python docs/feature_embedding_guide.py
"""

# 1. Load MovieLens data & schema
from deepfm.config import ExperimentConfig
from deepfm.data.movielens import MovieLensAdapter

config = ExperimentConfig()
adapter = MovieLensAdapter(config.data)
schema, train_ds, val_ds, test_ds = adapter.build()

print(f"Schema has {schema.num_fields} fields, total_embedding_dim = {schema.total_embedding_dim}")

# 2. Per-field embedding dimensions
import pandas as pd  # noqa: E402

fm_embed_dim = config.feature.fm_embed_dim
print(f"fm_embed_dim = {fm_embed_dim} (common dimension for FM/CIN/Attention)\n")

rows = []
for name, field in schema.fields.items():
    rows.append(
        {
            "field": name,
            "type": field.feature_type.value,
            "vocab_size": field.vocabulary_size,
            "embed_dim": field.embedding_dim,
            "needs_projection": field.embedding_dim != fm_embed_dim,
        }
    )

print(pd.DataFrame(rows))

# 3. Create the FeatureEmbedding module
from deepfm.models.layers.embedding import FeatureEmbedding  # noqa: E402

emb = FeatureEmbedding(schema, fm_embed_dim=fm_embed_dim)
print(emb)

# 4. Forward pass on a real batch
import torch  # noqa: E402
from torch.utils.data import DataLoader  # noqa: E402

loader = DataLoader(train_ds, batch_size=4, shuffle=True)
batch_features, batch_labels = next(iter(loader))

print("Input batch:")
for name, tensor in batch_features.items():
    print(f"  {name:15s}  shape={tensor.shape!s:15s}  dtype={tensor.dtype}")
print(f"  {'labels':15s}  shape={batch_labels.shape!s:15s}")

emb.eval()
with torch.no_grad():
    first_order, field_embeddings, flat_embeddings = emb(batch_features)

print("Output tensors:")
print(f"  first_order:      {first_order.shape}      — linear term (summed across fields)")
print(f"  field_embeddings: {field_embeddings.shape}  — projected to common fm_dim, one per field")
print(f"  flat_embeddings:  {flat_embeddings.shape}   — raw concat of all field embeddings")

# 5a. First order
print("First order values (one scalar per sample):")
print(first_order)
print("\nThink of this as: bias + w_user_id + w_movie_id + w_gender + ... for each sample")

# 5b. Field embeddings
print(f"field_embeddings shape: {field_embeddings.shape}")
print(
    f"  B={field_embeddings.shape[0]}, F={field_embeddings.shape[1]}, D={field_embeddings.shape[2]}"
)
print()

field_names = list(schema.fields.keys())
print("Per-field projected embeddings for sample 0:")
for i, name in enumerate(field_names):
    vec = field_embeddings[0, i]
    print(f"  {name:15s}  [{vec[:4].tolist()} ...]  (dim={vec.shape[0]})")

# 5c. Flat embeddings
print(f"flat_embeddings shape: {flat_embeddings.shape}")
print(f"  total_dim = {flat_embeddings.shape[1]}")
print()

offset = 0
print("Composition:")
for name, field in schema.fields.items():
    end = offset + field.embedding_dim
    print(f"  {name:15s}  dim={field.embedding_dim:3d}  positions [{offset}:{end})")
    offset = end
print(f"  {'TOTAL':15s}  dim={offset}")

# 6. OOV / padding behaviour
oov_batch = {name: torch.zeros(1, dtype=torch.long) for name in field_names}
oov_batch["genres"] = torch.zeros(1, 6, dtype=torch.long)

with torch.no_grad():
    fo_oov, fe_oov, fl_oov = emb(oov_batch)

print("All-OOV input:")
print(f"  first_order sum:      {fo_oov.abs().sum().item():.6f}  (should be ~0)")
print(f"  field_embeddings sum: {fe_oov.abs().sum().item():.6f}  (should be ~0)")
print(f"  flat_embeddings sum:  {fl_oov.abs().sum().item():.6f}  (should be ~0)")

# 7. Projection layers
print(f"Projection layers (field_dim -> {fm_embed_dim}):")
for name, proj in emb.projections.items():
    field_dim = schema.fields[name].embedding_dim
    params = sum(p.numel() for p in proj.parameters())
    print(f"  {name:15s}  {field_dim} -> {fm_embed_dim}  ({params} params)")

if not emb.projections:
    print("  (none — all fields already match fm_embed_dim)")

# 8. Parameter count summary
total_params = sum(p.numel() for p in emb.parameters())
trainable_params = sum(p.numel() for p in emb.parameters() if p.requires_grad)

print(f"Total parameters:     {total_params:,}")
print(f"Trainable parameters: {trainable_params:,}")
print()

for component_name, module_dict in [
    ("second_order_embeddings", emb.second_order_embeddings),
    ("first_order_embeddings", emb.first_order_embeddings),
    ("projections", emb.projections),
]:
    params = sum(p.numel() for p in module_dict.parameters())
    print(f"  {component_name:30s}  {params:>8,} params")
