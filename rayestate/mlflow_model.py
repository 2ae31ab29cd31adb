"""How a :class:`PriceModel` is stored in, and loaded from, MLflow.

The MLflow model is a pyfunc whose one artifact, ``price_model``, is the directory
:meth:`PriceModel.save` writes. ``mlflow.pyfunc.load_model`` works for anyone who wants it;
the Serve app and the pipeline load the directory directly so they can run TreeSHAP on
the booster. Callers pass a ``MlflowClient`` or set the tracking URI themselves: nothing
here connects at import time.
"""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
import pandas as pd
from mlflow.tracking import MlflowClient

from rayestate.model import PriceModel, listings_frame

ARTIFACT_KEY = "price_model"
MODEL_NAME_IN_RUN = "model"


class PriceModelPyfunc(mlflow.pyfunc.PythonModel):
    """pyfunc wrapper: raw listing columns in, price in dollars out."""

    def load_context(self, context):
        self._model = PriceModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input: pd.DataFrame, params=None):
        raw = listings_frame(model_input.to_dict(orient="records"))
        return pd.Series(self._model.predict(raw), name="price")


@dataclass(frozen=True)
class LoadedModel:
    model: PriceModel
    name: str
    version: str
    run_id: str | None
    alias: str | None


def log_price_model(model: PriceModel, input_example: pd.DataFrame, *, name: str = MODEL_NAME_IN_RUN):
    """Log the model inside the active MLflow run; returns mlflow's ModelInfo."""
    from mlflow.models import infer_signature

    example = input_example.head(5)
    signature = infer_signature(example, model.predict(example))
    with tempfile.TemporaryDirectory() as tmp:
        directory = model.save(Path(tmp) / ARTIFACT_KEY)
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=PriceModelPyfunc(),
            artifacts={ARTIFACT_KEY: str(directory)},
            signature=signature,
            input_example=example,
            pip_requirements=["xgboost", "pandas", "numpy"],
        )


def load_model_version(client: MlflowClient, name: str, version: str, *, alias: str | None = None) -> LoadedModel:
    """Download and load one registered model version (only its price_model directory).

    Resolves the version's artifact location through ``client`` itself: a ``models:/`` URI would be
    resolved against the process-global registry URI, not the client's server.
    """
    model_version = client.get_model_version(name, version)
    source = client.get_model_version_download_uri(name, version).rstrip("/")
    with tempfile.TemporaryDirectory() as tmp:
        local = mlflow.artifacts.download_artifacts(
            artifact_uri=f"{source}/artifacts/{ARTIFACT_KEY}", dst_path=tmp, tracking_uri=client.tracking_uri
        )
        model = PriceModel.load(Path(local))
    return LoadedModel(model=model, name=name, version=str(version), run_id=model_version.run_id, alias=alias)


def load_model_by_alias(client: MlflowClient, name: str, alias: str) -> LoadedModel:
    """Load the version an alias (e.g. ``champion``) points to."""
    model_version = client.get_model_version_by_alias(name, alias)
    return load_model_version(client, name, model_version.version, alias=alias)
