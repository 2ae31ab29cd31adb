"""The MLflow pyfunc face of a :class:`PriceModel`: what a plain MLflow user loads.

This module is shipped inside every registered model (``code/rayestate/``, with the modules it
imports, see :data:`MODEL_CODE`), so ``mlflow.pyfunc.load_model("models:/rayestate-price@champion")``
and ``mlflow models serve`` work where this project is not installed: they need only the
model's pinned requirements. Input rows are the API's listings (:class:`rayestate.schema.Listing`:
same fields, same bounds, same optional fields); the output is the price in dollars and its range
(``price_low``, ``price_high``), as the Serve API answers them for the same listings.
"""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import mlflow.pyfunc
import pandas as pd
from mlflow.models import ModelSignature
from mlflow.types.schema import ColSpec, ParamSchema, ParamSpec, Schema

from rayestate.model import PriceModel
from rayestate.schema import Listing

ARTIFACT_KEY = "price_model"
#: The rayestate modules a loaded pyfunc model imports (shipped as its code); a test loads the
#: model where the project is not importable, so a missing one fails there.
MODEL_CODE = (
    "pyfunc.py",
    "model.py",
    "features.py",
    "schema.py",
    "comparables.py",
    "interval.py",
    "dense_predict.py",
)
#: Third-party packages the shipped code imports, pinned to the versions it was logged with.
MODEL_REQUIREMENTS = ("xgboost", "treelite", "pandas", "numpy", "pyarrow", "pydantic")
_COLUMN_TYPES = {float: "double", str: "string"}
#: The range's coverage unless the caller passes ``params={"coverage": ...}`` (0.50-0.99).
DEFAULT_COVERAGE = 0.8


class PriceModelPyfunc(mlflow.pyfunc.PythonModel):
    """Listings in (one row each, the API's fields), price in dollars out."""

    def load_context(self, context):
        self._model = PriceModel.load(Path(context.artifacts[ARTIFACT_KEY]))

    def predict(self, context, model_input: pd.DataFrame, params=None) -> pd.DataFrame:
        records = model_input.astype("object").where(model_input.notna(), None).to_dict(orient="records")
        rows = [Listing.model_validate({k: v for k, v in r.items() if v is not None}).to_raw_row() for r in records]
        coverage = float((params or {}).get("coverage", DEFAULT_COVERAGE))
        priced = self._model.price_range(rows, coverage=coverage)
        return pd.DataFrame({"price": priced.price, "price_low": priced.low, "price_high": priced.high})


def _column_type(annotation) -> str:
    kinds = [kind for kind in (get_args(annotation) or (annotation,)) if kind is not type(None)]
    for kind in kinds:
        if kind in _COLUMN_TYPES:
            return _COLUMN_TYPES[kind]
    return "string"  # Literal[...] (status) and other text-like fields


def signature() -> ModelSignature:
    """The API's listing as an MLflow signature: the same fields, optional where the API's are."""
    inputs = Schema(
        [
            ColSpec(_column_type(f.annotation), name, required=f.is_required())
            for name, f in Listing.model_fields.items()
        ]
    )
    outputs = Schema([ColSpec("double", name) for name in ("price", "price_low", "price_high")])
    params = ParamSchema([ParamSpec("coverage", "double", DEFAULT_COVERAGE)])
    return ModelSignature(inputs=inputs, outputs=outputs, params=params)


def input_example() -> pd.DataFrame:
    """Two listings: one with every field, one with only the required ones."""
    full = {"bed": 3.0, "bath": 2.0, "acre_lot": 0.25, "house_size": 1800.0, "state": "Florida", "status": "for_sale",
            "city": "Tampa", "zip_code": "33602", "prev_sold_date": "2015-06-01", "brokered_by": None, "street": None}  # fmt: skip
    bare = {name: None for name in full} | {
        name: full[name] for name, f in Listing.model_fields.items() if f.is_required()
    }
    return pd.DataFrame([full, bare])
