"""Data: raw MovieLens sources, canonical tables, features, schema and datasets."""
