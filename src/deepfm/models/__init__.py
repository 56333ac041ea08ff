"""CTR models built from a feature schema."""
