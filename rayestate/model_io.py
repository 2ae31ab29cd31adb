"""A :class:`PriceModel` in and out of MLflow.

Training logs the model as a pyfunc (:mod:`rayestate.pyfunc`) whose one artifact, ``price_model``,
is the directory :meth:`PriceModel.save` writes, with its own code and pinned requirements, so
anyone can load it with plain MLflow. The Serve app and the pipeline load that directory
directly (:func:`load_model_version`) to run TreeSHAP on the boosters. Callers pass a
``MlflowClient``: nothing here connects at import time.
"""

from __future__ import annotations

import importlib.metadata
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import mlflow
from mlflow.tracking import MlflowClient

from rayestate import pyfunc
from rayestate.model import PriceModel

MODEL_NAME_IN_RUN = "model"
_PACKAGE_DIR = Path(__file__).parent


@dataclass(frozen=True)
class LoadedModel:
    model: PriceModel
    name: str
    version: str
    run_id: str | None
    alias: str | None


def _pinned_requirements() -> list[str]:
    return [f"{name}=={importlib.metadata.version(name)}" for name in pyfunc.MODEL_REQUIREMENTS]


def log_price_model(model: PriceModel, *, name: str = MODEL_NAME_IN_RUN):
    """Log the model inside the active MLflow run, self-contained; returns mlflow's ModelInfo."""
    with tempfile.TemporaryDirectory() as tmp:
        directory = model.save(Path(tmp) / pyfunc.ARTIFACT_KEY)
        code = Path(tmp) / "code" / "rayestate"
        code.mkdir(parents=True)
        for module in pyfunc.MODEL_CODE:
            shutil.copy2(_PACKAGE_DIR / module, code / module)
        (code / "__init__.py").write_text('"""Ray Estate model code, shipped with the MLflow model."""\n')
        return mlflow.pyfunc.log_model(
            name=name,
            python_model=str(_PACKAGE_DIR / "pyfunc_entry.py"),
            artifacts={pyfunc.ARTIFACT_KEY: str(directory)},
            code_paths=[str(code)],
            signature=pyfunc.signature(),
            input_example=pyfunc.input_example(),
            pip_requirements=_pinned_requirements(),
        )


def load_model_version(client: MlflowClient, name: str, version: str, *, alias: str | None = None) -> LoadedModel:
    """Download and load one registered model version (only its price_model directory)."""
    model_version = client.get_model_version(name, version)
    with tempfile.TemporaryDirectory() as tmp:
        model = PriceModel.load(download(client, name, version, pyfunc.ARTIFACT_KEY, tmp))
    return LoadedModel(model=model, name=name, version=str(version), run_id=model_version.run_id, alias=alias)


def download(client: MlflowClient, name: str, version: str, path: str, dst_path: str | None = None) -> Path:
    """One artifact of a registered version's model (``path`` under its ``artifacts/``), downloaded.

    Resolved through ``client`` itself: a ``models:/`` URI would be resolved against the
    process-global registry URI, not the client's server.
    """
    source = client.get_model_version_download_uri(name, version).rstrip("/")
    local = mlflow.artifacts.download_artifacts(
        artifact_uri=f"{source}/artifacts/{path}", dst_path=dst_path, tracking_uri=client.tracking_uri
    )
    return Path(local)


def load_model_by_alias(client: MlflowClient, name: str, alias: str) -> LoadedModel:
    """Load the version an alias (e.g. ``champion``) points to."""
    model_version = client.get_model_version_by_alias(name, alias)
    return load_model_version(client, name, model_version.version, alias=alias)
