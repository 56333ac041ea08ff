"""The model each training run logs: `CTRPyfunc`, a pyfunc around `CTRPredictor`."""

from __future__ import annotations

import importlib.metadata
import warnings
from pathlib import Path
from typing import Any

import mlflow
import numpy as np
import pandas as pd
from mlflow.models import infer_signature

import deepfm
from deepfm.serving import SERVING_PACKAGES, CTRPredictor


class CTRPyfunc(mlflow.pyfunc.PythonModel):
    """MLflow pyfunc model; artifacts `model` (model.pt) and `vocab` (the vocab folder).

    MLflow builds it without arguments and calls `load_context` with the logged artifacts.

    Example::

        model = mlflow.pyfunc.load_model("models:/deepfm-ml-100k@champion")
        probabilities = model.predict(frame)  # raw feature rows in
    """

    predictor: CTRPredictor

    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        self.predictor = CTRPredictor.from_files(
            Path(context.artifacts["model"]), Path(context.artifacts["vocab"])
        )

    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: pd.DataFrame,
        params: dict[str, Any] | None = None,
    ) -> np.ndarray:
        return self.predictor.predict(model_input)


def log_pyfunc(model_pt: Path, vocab_dir: Path, input_example: pd.DataFrame) -> str:
    """Log `CTRPyfunc` as the active run's model `model`; return its `models:/` URI.

    The signature is inferred from `input_example` (raw features) and the
    probabilities the model gives for it.
    """
    predictions = CTRPredictor.from_files(model_pt, vocab_dir).predict(input_example)
    with warnings.catch_warnings():
        # MLflow's hint that integer columns cannot hold nulls: known and documented in the
        # README (a null id is refused by the signature; `deepfm score` takes it as OOV).
        warnings.filterwarnings("ignore", "Hint: Inferred schema contains integer", UserWarning)
        info = mlflow.pyfunc.log_model(
            name="model",
            python_model=CTRPyfunc(),
            artifacts={"model": str(model_pt), "vocab": str(vocab_dir)},
            input_example=input_example,
            signature=infer_signature(input_example, predictions),
            # The package's code travels with the model; its dependencies are pinned here
            # rather than inferred (slow, and it misses torch and names the unpublished deepfm).
            code_paths=[str(Path(deepfm.__file__).parent)],
            pip_requirements=[pinned(package) for package in SERVING_PACKAGES],
        )
    return info.model_uri


def pinned(package: str) -> str:
    """`package==<installed version>`, without a local label such as torch's `+cpu`."""
    return f"{package}=={importlib.metadata.version(package).split('+')[0]}"
