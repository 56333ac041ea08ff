"""deepfm: reproducible CTR prediction on MovieLens with embedding-based models."""

__version__ = "0.1.0"
