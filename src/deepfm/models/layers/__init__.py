"""Building blocks: one interaction per file."""
