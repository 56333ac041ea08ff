"""Value types every `params.yaml` section shares: bounded numbers, names and `SECTION`."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, Field, StrictFloat, StrictInt, StrictStr

# Upper bounds catch typos (an extra zero or five) before anything is allocated.
# An embedding width of 1024 already makes the ml-25m user and movie tables ~0.9 GB.
MAX_EMBEDDING_DIM = 1024
# An MLP layer's input is at most 8 fields x 1024 wide; a wider layer only adds memory.
MAX_HIDDEN_UNITS = 8192
# 2**20 rows is a few steps per epoch on the largest release (ml-25m: ~20 M training rows).
MAX_BATCH_SIZE = 2**20
# Seeds go to numpy and to torch.Generator.manual_seed (as seed * 100_003 + epoch).
MAX_SEED = 2**32 - 1
# The MovieLens rating scale: ml-100k and ml-1m rate 1..5, the CSV releases 0.5..5.
MIN_RATING, MAX_RATING = 0.5, 5.0

# Every section: unknown keys are errors, numbers must be finite.
SECTION = ConfigDict(extra="forbid", allow_inf_nan=False)


def distinct(values: tuple[Any, ...]) -> tuple[Any, ...]:
    """`values` unchanged when no entry repeats; else a `ValueError` that lists them."""
    if len(set(values)) != len(values):
        raise ValueError(f"must name each entry once, got {list(values)}")
    return values


Count = Annotated[StrictInt, Field(ge=1)]
EmbeddingDim = Annotated[StrictInt, Field(ge=1, le=MAX_EMBEDDING_DIM)]
NonNegative = Annotated[StrictFloat, Field(ge=0)]
Seed = Annotated[StrictInt, Field(ge=0, le=MAX_SEED)]
NonEmptyText = Annotated[StrictStr, Field(min_length=1)]
Distinct = AfterValidator(distinct)
HiddenWidth = Annotated[StrictInt, Field(ge=1, le=MAX_HIDDEN_UNITS)]
Dropout = Annotated[StrictFloat, Field(ge=0, lt=1)]
