"""Plain deep network over the concatenated raw field embeddings."""

from __future__ import annotations

from deepfm.models.wide_deep import WideDeep


class DNN(WideDeep):
    """`MLP(flat_embeddings)`: Wide & Deep without its wide part (no bias or first-order term).

    It reads only the raw per-field vectors, so it owns no first-order tables or projections.

    Args:
        schema, config, fm_embed_dim: as in `WideDeep` (`config` is `model.dnn`).

    Example::

        model = DNN(schema, DNNConfig(hidden_units=(256, 128)))
        logits = model(batch)  # (B,)
    """

    linear = False
